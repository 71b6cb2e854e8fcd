package daemon

import (
	"context"
	"fmt"
	"net"
	"slices"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/daemon/output"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/sdnotify"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// Reload reads the configuration file again and, if it is valid and every
// change can apply while running, makes it the configuration in use. A bad
// file leaves the running configuration in place; the error is returned,
// logged, and shown in Status. SIGHUP and POST /v1/reload come here, and
// the file watcher to reload. The file may be read while it is being
// written, so the watcher then reads it again once it settles.
func (s *Server) Reload() (api.ReloadResult, error) {
	res, err := s.reload()
	s.recheckConfig()
	return res, err
}

// reload is Reload, for the file watcher.
func (s *Server) reload() (api.ReloadResult, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.notified.Load() {
		sdnotify.Reloading()
		defer func() {
			sdnotify.Ready()
			go s.notifyStatus()
		}()
	}
	old := s.config()
	res, err := s.apply(old)
	now := s.now()
	s.mu.Lock()
	s.status.lastReloadAt = &now
	s.status.lastReloadError = ""
	if err != nil {
		s.status.lastReloadError = err.Error()
	} else if res.Changed {
		s.status.loadedAt = now
	}
	s.mu.Unlock()
	s.metrics.Reload(err)
	if err == nil && res.Changed {
		s.metrics.Loaded(now)
		s.metrics.Outputs(outputTypes(s.config()))
	}
	if err != nil {
		s.log.Error("configuration reload refused; the running configuration stays", "config", old.Path, "err", err)
		return api.ReloadResult{}, fault.FailedPrecondition(api.CodeReloadFailed, "%v", err)
	}
	if res.Changed {
		s.log.Info("configuration reloaded", "config", old.Path, "revision", res.Revision)
	}
	return res, nil
}

// apply loads the configuration file and applies what changed since old.
// What can fail without side effects (reading, validating, building the
// issuer client) comes first; moving a socket is the only step that can
// fail after another has taken effect.
func (s *Server) apply(old *config.Config) (api.ReloadResult, error) {
	next, err := config.LoadFlags(old.Path, old.Flags)
	if err != nil {
		return api.ReloadResult{}, err
	}
	if err := liveChange(old, next); err != nil {
		return api.ReloadResult{}, err
	}
	renew := needsRenewal(old, next)
	if next.Revision == old.Revision {
		if s.issuerRefuses() {
			// A reload is how an operator says they acted, such as
			// writing a new token into the same file: try at once.
			s.renewSoon()
		}
		return api.ReloadResult{Changed: false, Revision: old.Revision}, nil
	}
	moved, rejoin := issuerChanged(old, next)
	var ic *issuerclient.Client
	if moved || rejoin {
		if ic, err = issuerclient.New(next.Issuer, s.log); err != nil {
			return api.ReloadResult{}, err
		}
	}
	if err := s.moveSockets(old, next); err != nil {
		return api.ReloadResult{}, err
	}
	s.logger.SetLevel(next.Log.Level)
	s.logger.SetFormat(next.Log.Format)
	s.conf.Store(next)
	if a := s.sshAgent.Load(); a != nil {
		a.SetAllowUnbound(next.Agent.AllowUnbound)
	}
	if moved || rejoin {
		// Make before break: the held credentials keep serving until the
		// renewal or join with the new issuer or onboarding succeeds.
		s.issuer.Store(ic)
		if rejoin {
			// Set, never cleared here: a later reload that only moves the
			// issuer must not cancel a re-join still pending.
			s.rejoin.Store(true)
		}
	}
	if moved || rejoin || renew || s.issuerRefuses() {
		// New logins, TTL, outputs or issuer take effect with fresh
		// certificates; the renewal reports its own failure. While the
		// issuer refuses mwid, any change may be the operator's fix.
		s.renewSoon()
	}
	return api.ReloadResult{Changed: true, Revision: next.Revision}, nil
}

// issuerRefuses reports whether the issuer's last answer was a refusal that
// retrying cannot overcome, which the loop retries only rarely.
func (s *Server) issuerRefuses() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status.refusal != nil
}

// renewSoon asks the loop for a renewal at once, without waiting for it.
func (s *Server) renewSoon() {
	ctx := s.runCtx
	if ctx == nil {
		ctx = context.Background()
	}
	go s.loop.RenewNow(ctx)
}

// liveChange refuses the changes that cannot apply to a running daemon,
// naming them. Today every setting applies live; two sockets on one path
// is the one arrangement a move cannot reach in steps.
func liveChange(old, next *config.Config) error {
	if next.AgentSocket.Path == old.APISocket.Path || next.APISocket.Path == old.AgentSocket.Path {
		return fmt.Errorf("%s: sockets: the agent and api sockets cannot swap paths while mwid runs; move one at a time", next.Path)
	}
	if next.Diag != old.Diag {
		return fmt.Errorf("%s: diag_addr: the diagnostics listener changes only when mwid restarts; restart it, or put back %q", next.Path, old.Diag.Addr)
	}
	return nil
}

// issuerChanged reports whether only the issuer's address changed, which a
// renewal at the new address handles (the same authority answers there),
// and whether the authority trusted or the way to join changed, which takes
// a new join.
func issuerChanged(old, next *config.Config) (moved, rejoin bool) {
	rejoin = !slices.Equal(old.Issuer.CAPins, next.Issuer.CAPins) || old.Issuer.CAFile != next.Issuer.CAFile ||
		old.Onboarding != next.Onboarding
	return !slices.Equal(old.Issuer.AddressList(), next.Issuer.AddressList()) && !rejoin, rejoin
}

// needsRenewal reports whether next asks for different certificates, or
// has outputs that write them otherwise: output.NeedsRenewal compares the
// outputs whole, so that no field of theirs can be left out.
func needsRenewal(old, next *config.Config) bool {
	return old.CertificateTTL != next.CertificateTTL ||
		!slices.Equal(old.SSHLogins, next.SSHLogins) ||
		output.NeedsRenewal(old.Outputs, next.Outputs)
}

// moveSockets applies the sockets' new paths, modes and groups. Every new
// path listens before any old one closes, and if one cannot be opened none
// moves, so a failed reload leaves the sockets as they were. A socket that
// keeps its path but changes mode or group is made again, with them, and
// put in place of the old one in one step (unixsock.Replace): mode and
// group are never changed on a path, which could have been swapped for a
// link. That comes last, and only a failure there can leave a change
// applied to one socket and not the other. Callers are checked against
// the configuration in use on each connection, so allow lists need
// nothing here.
func (s *Server) moveSockets(old, next *config.Config) error {
	if s.sockets == nil {
		return nil // not running: Run opens the sockets of the new config
	}
	type move struct {
		name      string
		old, next config.Socket
		ln        net.Listener
	}
	moves := []*move{{name: "agent", old: old.AgentSocket, next: next.AgentSocket}, {name: "api", old: old.APISocket, next: next.APISocket}}
	for i, m := range moves {
		if m.old.Path == m.next.Path {
			continue
		}
		ln, err := listen(m.next)
		if err != nil {
			for _, opened := range moves[:i] {
				if opened.ln != nil {
					opened.ln.Close()
				}
			}
			return fmt.Errorf("sockets.%s: %w", m.name, err)
		}
		m.ln = ln
	}
	for _, m := range moves {
		if m.ln != nil {
			s.log.Info("moving socket", "socket", m.name, "from", m.old.Path, "to", m.next.Path)
			s.serveSocket(m.name, m.ln)
		}
	}
	for _, m := range moves {
		if m.old.Path != m.next.Path || (m.old.Mode == m.next.Mode && m.old.Group == m.next.Group) {
			continue
		}
		ln, err := unixsock.Replace(m.next.Path, m.next.Mode, m.next.Group)
		if err != nil {
			return fmt.Errorf("sockets.%s: %w", m.name, err)
		}
		s.log.Info("socket made again with a new mode or group", "socket", m.name, "path", m.next.Path, "mode", fmt.Sprintf("%04o", m.next.Mode.Perm()), "group", m.next.Group)
		s.serveSocket(m.name, ln)
	}
	return nil
}

// serveSocket serves the agent or the API on ln in place of the socket of
// that name, which stops; a failure to serve is logged.
func (s *Server) serveSocket(name string, ln net.Listener) {
	s.serveOn(name, ln, func(err error) { s.log.Error("socket failed", "socket", name, "err", err) })
}
