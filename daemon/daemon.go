// Package daemon runs mwid: it joins the issuer, keeps its credentials in
// memory, renews them, and serves them on the agent and API sockets.
//
// Server's lifecycle is in daemon.go; renewal in renew.go, with the writing
// of outputs (whose kinds are in package output) in outputs.go, and the
// access directories of ssh_host outputs kept by package accessdir;
// reloading the configuration in reload.go and watch.go; the local API's
// Backend in status.go and kube.go, with its SSH routes in package sshapi;
// the check of callers in peer.go; the diagnostics listener (diag_addr)
// in diag.go; and mwid --oneshot in oneshot.go.
package daemon

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/accessdir"
	"github.com/mwi-project/mwi/daemon/agent"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/daemon/metrics"
	"github.com/mwi-project/mwi/daemon/renewal"
	"github.com/mwi-project/mwi/daemon/sshapi"
	"github.com/mwi-project/mwi/internal/connlimit"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/sdnotify"
)

// Server is a running mwid.
type Server struct {
	log    *slog.Logger
	logger *logging.Logger // log's level and format, which a reload changes
	issuer atomic.Pointer[issuerclient.Client]
	rejoin atomic.Bool // join again at the next renewal: the issuer or onboarding changed
	// pending holds the keys proposed by the renewal attempt under way;
	// see renew. Only the renewal loop touches it.
	pending *identity.Keys
	// notified is set once systemd was told READY=1; reloads report
	// RELOADING=1 only after that.
	notified atomic.Bool
	creds    identity.Holder
	loop     *renewal.Loop
	access   *accessdir.Keeper // the access directories of ssh_host outputs
	ssh      *sshapi.Service   // the local API's SSH routes
	metrics  *metrics.Metrics
	now      func() time.Time

	conf     atomic.Pointer[config.Config]
	reloadMu sync.Mutex // serialises Reload
	// refusals bounds the log lines of refused callers.
	refusals logging.Limit
	// recheck tells the file watcher that the configuration was loaded
	// without it: at start, by SIGHUP or by the API. See
	// watch.Watcher.Recheck.
	recheck chan struct{}

	// Set by Run for Reload, which moves sockets while running.
	runCtx   context.Context
	tasks    sync.WaitGroup
	sockets  map[string]*served // "agent", "api"
	apiSrv   *http.Server
	agentSrv *agent.Server
	// sshAgent is the agent agentSrv serves, for reloads to reach.
	sshAgent atomic.Pointer[agent.Agent]
	// apiLimits and agentLimits bound the connections across the api
	// and agent sockets, old and new.
	apiLimits, agentLimits *connlimit.Limits

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
	refusal         *api.Refusal // set while the issuer refuses permanently
	loadedAt        time.Time
	lastReloadError string
	lastReloadAt    *time.Time
}

// New returns a Server for cfg, logging to log, whose level and format a
// reload changes.
func New(cfg *config.Config, log *logging.Logger) (*Server, error) {
	ic, err := issuerclient.New(cfg.Issuer, log.Logger)
	if err != nil {
		return nil, err
	}
	s := &Server{
		log:     log.Logger,
		logger:  log,
		metrics: metrics.New(),
		now:     time.Now,
		outputs: map[string]*outputState{},
		recheck: make(chan struct{}, 1),
		// connlimit's default bounds.
		apiLimits:   new(connlimit.Limits),
		agentLimits: new(connlimit.Limits),
	}
	s.access = accessdir.New(accessdir.Config{
		Log:    s.log,
		Now:    func() time.Time { return s.now() },
		Dirs:   func() []string { return accessdir.Dirs(s.config().Outputs) },
		Issuer: func() accessdir.Issuer { return s.issuer.Load() },
		Identity: func() *tls.Certificate {
			if c := s.creds.Current(); c != nil {
				return c.TLS
			}
			return nil
		},
	})
	s.ssh = sshapi.New(sshapi.Deps{
		Log:         s.log,
		Credentials: s.creds.Current,
		Config:      s.config,
		Issuer:      func() sshapi.Issuer { return s.issuer.Load() },
		Mwictl:      defaultMwictl,
		Context:     func() context.Context { return s.runCtx },
	})
	s.conf.Store(cfg)
	// The watcher starts later, and must not take what it first sees for
	// what was loaded.
	s.recheckConfig()
	s.issuer.Store(ic)
	s.status.loadedAt = s.now()
	s.metrics.Loaded(s.status.loadedAt)
	s.metrics.Outputs(outputTypes(cfg))
	s.loop = renewal.NewLoop(renewal.Loop{
		Renew:           s.renewForLoop,
		Report:          s.report,
		Classify:        classify,
		Interval:        func() time.Duration { return s.config().RenewalInterval },
		RequestInterval: func() time.Duration { return s.config().RenewMinInterval },
	})
	return s, nil
}

// config returns the configuration in use.
func (s *Server) config() *config.Config { return s.conf.Load() }

// backend is the local API's Backend: the SSH routes are answered by
// package sshapi, the others by the Server.
type backend struct {
	*Server
	*sshapi.Service
}

// served is a socket being served, with what stops serving it.
type served struct {
	ln   net.Listener
	stop func() // closes ln and ends its serving
}

// Run serves until ctx is done, then closes and removes its sockets.
//
// The sockets are opened first, before joining, so that a client asks a
// daemon that says "joining" instead of finding no socket.
func (s *Server) Run(ctx context.Context) error {
	// A reload (SIGHUP may come at any time) waits until the sockets are
	// set up, and then sees them.
	s.reloadMu.Lock()
	locked := true
	defer func() {
		if locked {
			s.reloadMu.Unlock()
		}
	}()
	cfg := s.config()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.runCtx = ctx
	s.sockets = map[string]*served{}
	s.agentSrv = s.newAgentServer()
	s.apiSrv = &http.Server{
		Handler: localapi.Routes(backend{s, s.ssh}, s.metrics.Handler(), s.log,
			s.metrics.Middleware,
			s.requirePeer(func(c *config.Config) config.Socket { return c.APISocket })),
		ConnContext: apiConnContext,
		// A local caller must not hold mwid's (locked) memory: requests
		// have short headers, which must come whole in time, and idle
		// connections end; connections are bounded by apiLimits. There is
		// no ReadTimeout: it would cancel a renewal that waits longer for
		// the issuer.
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	errc := make(chan error, 4)
	fail := func(err error) {
		select {
		case errc <- err:
		default:
		}
		cancel()
	}
	if err := s.serve("agent", cfg.AgentSocket, fail); err != nil {
		return fmt.Errorf("agent socket: %w", err)
	}
	if err := s.serve("api", cfg.APISocket, fail); err != nil {
		s.sockets["agent"].stop()
		s.tasks.Wait()
		return fmt.Errorf("api socket: %w", err)
	}
	var diag *http.Server
	if cfg.Diag.Addr != "" {
		var err error
		if diag, err = s.listenDiag(cfg.Diag.Addr, cfg.Diag.AllowRemote); err != nil {
			for _, sv := range s.sockets {
				sv.stop()
			}
			s.tasks.Wait()
			return fmt.Errorf("diagnostics listener (diag_addr): %w", err)
		}
	}
	s.reloadMu.Unlock()
	locked = false
	s.log.Info("mwid listening", "agent_socket", cfg.AgentSocket.Path, "api_socket", cfg.APISocket.Path,
		"issuer", strings.Join(cfg.Issuer.AddressList(), ","), "config", cfg.Path, "revision", cfg.Revision)
	s.tasks.Add(3)
	go func() {
		defer s.tasks.Done()
		if err := s.loop.Run(ctx); err != nil {
			fail(err)
		}
	}()
	go func() {
		defer s.tasks.Done()
		s.watchConfig(ctx)
	}()
	go func() {
		defer s.tasks.Done()
		s.access.Run(ctx)
	}()
	sdnotify.Ready()
	s.notified.Store(true)
	go sdnotify.Watchdog(ctx, s.alive)

	<-ctx.Done()
	sdnotify.Stopping()
	s.reloadMu.Lock() // no socket moves from here on
	defer s.reloadMu.Unlock()
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	s.apiSrv.Shutdown(shutdownCtx)
	if diag != nil {
		diag.Shutdown(shutdownCtx)
	}
	for _, sv := range s.sockets {
		sv.stop()
	}
	s.tasks.Wait()
	s.log.Info("mwid stopped")
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// serve opens the socket sc and serves the agent or the API on it,
// replacing the socket of that name. fail is called if serving fails.
func (s *Server) serve(name string, sc config.Socket, fail func(error)) error {
	ln, err := listen(sc)
	if err != nil {
		return err
	}
	s.serveOn(name, ln, fail)
	return nil
}

// serveOn serves the agent or the API on ln, which replaces the socket of
// that name; the old socket closes only once ln serves: make before break.
func (s *Server) serveOn(name string, ln net.Listener, fail func(error)) {
	sv := &served{ln: ln}
	s.tasks.Add(1)
	switch name {
	case "agent":
		ctx, cancel := context.WithCancel(s.runCtx)
		sv.stop = cancel
		go func() {
			defer s.tasks.Done()
			if err := s.agentSrv.Serve(ctx, ln); err != nil {
				fail(err)
			}
		}()
	case "api":
		sv.stop = func() { ln.Close() }
		limited := s.apiListener(ln)
		go func() {
			defer s.tasks.Done()
			err := s.apiSrv.Serve(limited)
			if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
				fail(err)
			}
		}()
	}
	if old := s.sockets[name]; old != nil {
		old.stop()
	}
	s.sockets[name] = sv
}

// alive reports whether the daemon's shared state can still be taken, for
// systemd's watchdog. It does not depend on the issuer, so an issuer outage
// does not get mwid restarted; a deadlock does.
func (s *Server) alive() bool {
	done := make(chan struct{})
	go func() {
		s.mu.Lock()
		s.mu.Unlock()
		close(done)
	}()
	select {
	case <-done:
		return s.config() != nil
	case <-time.After(5 * time.Second):
		return false
	}
}

// report records a renewal attempt for Status and metrics.
func (s *Server) report(a renewal.Attempt) {
	s.metrics.Renewal(a.Err, a.Failures)
	if a.Err == nil {
		s.metrics.RenewalSucceeded(a.At)
	}
	if c := s.creds.Current(); c != nil {
		var held []metrics.Expiry
		for _, cred := range credentials(c) {
			held = append(held, metrics.Expiry{Kind: cred.Kind, Name: expiryName(cred), At: cred.Expires})
		}
		s.metrics.SetExpiries(held)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	at, next := a.At, a.Next
	s.status.nextRenewal = &next
	if a.Err != nil {
		s.status.lastError = a.Err.Error()
		s.status.lastErrorAt = &at
		s.status.refusal = nil
		if e, ok := issuerclient.Refused(a.Err); ok {
			s.status.refusal = &api.Refusal{Code: e.Code, Message: e.Message, Action: issuerclient.Action(e)}
		}
		// Until mwid holds credentials, every attempt is a join.
		msg := "renewal failed"
		if s.creds.Current() == nil {
			msg = "join failed"
		}
		if r := s.status.refusal; r != nil {
			s.log.Error(msg+"; the issuer refuses until an operator acts", "err", a.Err, "code", r.Code,
				"action", r.Action, "failures", a.Failures, "retry_at", a.Next)
		} else {
			s.log.Error(msg, "err", a.Err, "failures", a.Failures, "retry_at", a.Next)
		}
	} else {
		s.status.lastRenewal = &at
		s.status.lastError = ""
		s.status.lastErrorAt = nil
		s.status.refusal = nil
	}
	go s.notifyStatus()
}

// notifyStatus tells systemd the daemon's state in one line.
func (s *Server) notifyStatus() {
	st := s.Status()
	line := st.State
	if st.Joined {
		line += fmt.Sprintf(": bot %s, generation %d", st.Bot, st.Generation)
	}
	if st.NextRenewal != nil {
		line += ", next renewal " + st.NextRenewal.Format(time.RFC3339)
	}
	if st.LastError != "" {
		line += "; " + st.LastError
	}
	if st.Refusal != nil {
		line += "; " + st.Refusal.Action
	}
	sdnotify.Status(line)
}
