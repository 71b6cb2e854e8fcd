// Package daemon runs mwid: it joins the issuer, keeps its credentials in
// memory, renews them, and serves them on the agent and API sockets.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/agent"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/daemon/metrics"
	"github.com/mwi-project/mwi/daemon/renewal"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// Server is a running mwid.
type Server struct {
	log      *slog.Logger
	logLevel *slog.LevelVar
	issuer   *issuerclient.Client
	creds    identity.Holder
	loop     *renewal.Loop
	metrics  *metrics.Metrics
	now      func() time.Time

	conf     atomic.Pointer[config.Config]
	reloadMu sync.Mutex // serialises Reload

	mu      sync.Mutex // guards the fields below
	status  status
	outputs map[string]*outputState // by certificate path
}

// status is what the renewal loop and reloads last reported.
type status struct {
	lastRenewal     *time.Time
	nextRenewal     *time.Time
	lastError       string
	lastErrorAt     *time.Time
	loadedAt        time.Time
	lastReloadError string
	lastReloadAt    *time.Time
}

// New returns a Server for cfg. logLevel is the level of log, which a
// reload changes.
func New(cfg *config.Config, log *slog.Logger, logLevel *slog.LevelVar) (*Server, error) {
	ic, err := issuerclient.New(cfg.Issuer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		log:      log,
		logLevel: logLevel,
		issuer:   ic,
		metrics:  metrics.New(),
		now:      time.Now,
		outputs:  map[string]*outputState{},
	}
	s.conf.Store(cfg)
	s.status.loadedAt = s.now()
	s.loop = renewal.NewLoop(renewal.Loop{
		Renew:    s.renew,
		Report:   s.report,
		Interval: func() time.Duration { return s.config().RenewalInterval },
	})
	return s, nil
}

// config returns the configuration in use.
func (s *Server) config() *config.Config { return s.conf.Load() }

// Run serves until ctx is done, then closes and removes its sockets.
//
// The sockets are opened first, before joining, so that a client asks a
// daemon that says "joining" instead of finding no socket.
func (s *Server) Run(ctx context.Context) error {
	cfg := s.config()
	agentLn, err := listen(cfg.AgentSocket)
	if err != nil {
		return fmt.Errorf("agent socket: %w", err)
	}
	apiLn, err := listen(cfg.APISocket)
	if err != nil {
		agentLn.Close()
		return fmt.Errorf("api socket: %w", err)
	}
	s.log.Info("mwid listening", "agent_socket", cfg.AgentSocket.Path, "api_socket", cfg.APISocket.Path,
		"issuer", cfg.Issuer.Address, "config", cfg.Path, "revision", cfg.Revision)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	task := func(f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				errc <- err
				cancel()
			}
		}()
	}
	agentSrv := &agent.Server{
		Agent: s.metrics.InstrumentAgent(agent.New(&s.creds, s.now)),
		Check: s.checkPeer("agent", func(c *config.Config) config.Socket { return c.AgentSocket }),
		Log:   s.log,
	}
	task(func() error { return agentSrv.Serve(ctx, agentLn) })
	apiSrv := &http.Server{
		Handler: localapi.Routes(s, s.metrics.Handler(), s.log,
			s.metrics.Middleware,
			s.requirePeer(func(c *config.Config) config.Socket { return c.APISocket })),
		ConnContext:       unixsock.ConnContext,
		ReadHeaderTimeout: 10 * time.Second,
	}
	task(func() error {
		err := apiSrv.Serve(apiLn)
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	})
	task(func() error { return s.loop.Run(ctx) })

	<-ctx.Done()
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	apiSrv.Shutdown(shutdownCtx)
	wg.Wait()
	s.log.Info("mwid stopped")
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// report records a renewal attempt for Status and metrics.
func (s *Server) report(a renewal.Attempt) {
	s.metrics.Renewal(a.Err, a.Failures)
	if c := s.creds.Current(); c != nil {
		for _, cred := range credentials(c) {
			s.metrics.SetExpiry(cred.Kind, cred.Expires)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	at, next := a.At, a.Next
	s.status.nextRenewal = &next
	if a.Err != nil {
		s.status.lastError = a.Err.Error()
		s.status.lastErrorAt = &at
		s.log.Error("renewal failed", "err", a.Err, "failures", a.Failures, "retry_at", a.Next)
		return
	}
	s.status.lastRenewal = &at
	s.status.lastError = ""
	s.status.lastErrorAt = nil
}

// Status returns the daemon's state for the local API.
func (s *Server) Status() api.Status {
	cfg := s.config()
	s.mu.Lock()
	st := s.status
	outputs := make([]api.Output, 0, len(cfg.Outputs))
	for _, o := range cfg.Outputs {
		out := api.Output{Type: o.Type, Path: o.Certificate}
		if os := s.outputs[o.Certificate]; os != nil {
			out.LastWrite, out.LastError, out.LastErrorAt = os.lastWrite, os.lastError, os.lastErrorAt
		}
		outputs = append(outputs, out)
	}
	s.mu.Unlock()
	out := api.Status{
		State:       "joining",
		Issuer:      cfg.Issuer.Address,
		Credentials: []api.Credential{},
		Outputs:     outputs,
		LastRenewal: st.lastRenewal,
		NextRenewal: st.nextRenewal,
		LastError:   st.lastError,
		LastErrorAt: st.lastErrorAt,
		Config: api.ConfigStatus{
			Path:            cfg.Path,
			Revision:        cfg.Revision,
			LoadedAt:        st.loadedAt,
			LastReloadError: st.lastReloadError,
			LastReloadAt:    st.lastReloadAt,
		},
	}
	c := s.creds.Current()
	if c == nil {
		return out
	}
	out.Joined = true
	out.Bot, out.Instance, out.Generation = c.Bot, c.Instance, c.Generation
	out.Credentials = credentials(c)
	switch {
	case !c.ValidAt(s.now()):
		out.State = "expired"
	case st.lastError != "":
		out.State = "degraded"
	default:
		out.State = "ready"
	}
	return out
}

// credentials describes c's certificates, without their keys.
func credentials(c *identity.Credentials) []api.Credential {
	out := []api.Credential{{Kind: "identity", ValidAfter: c.Identity.NotBefore, Expires: c.Identity.NotAfter}}
	if c.SSHCert != nil {
		out = append(out, api.Credential{
			Kind:       "ssh",
			Principals: c.SSHCert.ValidPrincipals,
			ValidAfter: certTime(c.SSHCert.ValidAfter),
			Expires:    certTime(c.SSHCert.ValidBefore),
		})
	}
	for _, hc := range c.HostCerts {
		out = append(out, api.Credential{
			Kind:       "ssh_host",
			Principals: hc.ValidPrincipals,
			ValidAfter: certTime(hc.ValidAfter),
			Expires:    certTime(hc.ValidBefore),
		})
	}
	return out
}

func certTime(t uint64) time.Time { return time.Unix(int64(t), 0).UTC() }

// Readiness says whether mwid holds valid credentials.
func (s *Server) Readiness() api.Readiness {
	st := s.Status()
	r := api.Readiness{State: st.State, Credentials: []api.CredentialRead{}}
	now := s.now()
	for _, c := range st.Credentials {
		r.Credentials = append(r.Credentials, api.CredentialRead{
			Kind:    c.Kind,
			Valid:   !now.Before(c.ValidAfter) && now.Before(c.Expires),
			Expires: c.Expires,
		})
	}
	r.Ready = st.Joined && st.State != "expired"
	for _, c := range r.Credentials {
		r.Ready = r.Ready && c.Valid
	}
	return r
}

// Renew renews at once, for the API, and returns the status after it.
func (s *Server) Renew(ctx context.Context) (api.Status, error) {
	if err := s.loop.RenewNow(ctx); err != nil {
		return api.Status{}, renewFailed(err)
	}
	return s.Status(), nil
}
