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
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/agent"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/daemon/renewal"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// Server is a running mwid.
type Server struct {
	cfg    *config.Config
	log    *slog.Logger
	issuer *issuerclient.Client
	creds  identity.Holder
	loop   *renewal.Loop
	now    func() time.Time

	mu     sync.Mutex // guards the fields below
	status status
}

// status is what the renewal loop last reported.
type status struct {
	lastRenewal *time.Time
	nextRenewal *time.Time
	lastError   string
	lastErrorAt *time.Time
}

// New returns a Server for cfg.
func New(cfg *config.Config, log *slog.Logger) (*Server, error) {
	ic, err := issuerclient.New(cfg.Issuer)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, issuer: ic, now: time.Now}
	s.loop = renewal.NewLoop(renewal.Loop{
		Renew:    s.renew,
		Report:   s.report,
		Interval: cfg.RenewalInterval,
	})
	return s, nil
}

// Run serves until ctx is done, then closes and removes its sockets.
//
// The sockets are opened first, before joining, so that a client asks a
// daemon that says "joining" instead of finding no socket.
func (s *Server) Run(ctx context.Context) error {
	agentLn, err := unixsock.Listen(s.cfg.AgentSocket.Path, s.cfg.AgentSocket.Mode)
	if err != nil {
		return fmt.Errorf("agent socket: %w", err)
	}
	apiLn, err := unixsock.Listen(s.cfg.APISocket.Path, s.cfg.APISocket.Mode)
	if err != nil {
		agentLn.Close()
		return fmt.Errorf("api socket: %w", err)
	}
	s.log.Info("mwid listening", "agent_socket", s.cfg.AgentSocket.Path, "api_socket", s.cfg.APISocket.Path,
		"issuer", s.cfg.Issuer.Address)

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
	agentSrv := &agent.Server{Agent: agent.New(&s.creds, s.now), Log: s.log}
	task(func() error { return agentSrv.Serve(ctx, agentLn) })
	apiSrv := &http.Server{
		Handler:           localapi.Routes(s, s.log),
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

// renew joins the first time, and renews with the current identity after.
// It is the loop's only way to obtain credentials.
func (s *Server) renew(ctx context.Context) (renewal.Result, error) {
	keys, err := identity.NewKeys()
	if err != nil {
		return renewal.Result{}, err
	}
	pub, err := keys.Public()
	if err != nil {
		return renewal.Result{}, err
	}
	ttl := int64(s.cfg.CertificateTTL / time.Second)
	var resp api.Credentials
	cur := s.creds.Current()
	switch {
	case cur == nil:
		token, err := s.cfg.Onboarding.Token.Read()
		if err != nil {
			return renewal.Result{}, fmt.Errorf("join token: %w", err)
		}
		resp, err = s.issuer.Join(ctx, api.JoinRequest{
			JoinMethod: s.cfg.Onboarding.JoinMethod,
			Token:      token,
			Keys:       pub,
			SSHLogins:  s.cfg.SSHLogins,
			TTLSeconds: ttl,
		})
		if err != nil {
			return renewal.Result{}, fmt.Errorf("join: %w", err)
		}
	case !cur.ValidAt(s.now()):
		// The identity expired before a renewal got through; only a new
		// join can admit this daemon again.
		return renewal.Result{}, fmt.Errorf("bot identity expired at %s; restart mwid with a new join token", cur.Expires().Format(time.RFC3339))
	default:
		resp, err = s.issuer.Renew(ctx, cur.TLS, api.RenewRequest{Keys: pub, SSHLogins: s.cfg.SSHLogins, TTLSeconds: ttl})
		if err != nil {
			return renewal.Result{}, fmt.Errorf("renew: %w", err)
		}
	}
	creds, err := identity.Assemble(keys, resp, s.now())
	if err != nil {
		return renewal.Result{}, err
	}
	s.creds.Set(creds)
	s.log.Info("credentials obtained", "bot", creds.Bot, "instance", creds.Instance,
		"generation", creds.Generation, "principals", creds.SSHCert.ValidPrincipals, "expires", creds.Expires())
	return renewal.Result{Received: creds.Received, Expires: creds.Expires()}, nil
}

// report records a renewal attempt for Status.
func (s *Server) report(a renewal.Attempt) {
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
	s.mu.Lock()
	st := s.status
	s.mu.Unlock()
	out := api.Status{
		State:       "joining",
		Issuer:      s.cfg.Issuer.Address,
		Credentials: []api.Credential{},
		LastRenewal: st.lastRenewal,
		NextRenewal: st.nextRenewal,
		LastError:   st.lastError,
		LastErrorAt: st.lastErrorAt,
	}
	c := s.creds.Current()
	if c == nil {
		return out
	}
	out.Joined = true
	out.Bot, out.Instance, out.Generation = c.Bot, c.Instance, c.Generation
	out.Credentials = []api.Credential{
		{Kind: "identity", ValidAfter: c.Identity.NotBefore, Expires: c.Identity.NotAfter},
		{
			Kind:       "ssh",
			Principals: c.SSHCert.ValidPrincipals,
			ValidAfter: time.Unix(int64(c.SSHCert.ValidAfter), 0).UTC(),
			Expires:    time.Unix(int64(c.SSHCert.ValidBefore), 0).UTC(),
		},
	}
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
