package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/issuerclient"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/sdnotify"
)

// Reload reads the configuration file again and, if it is valid and every
// change can apply while running, makes it the configuration in use. A bad
// file leaves the running configuration in place; the error is returned,
// logged, and shown in Status. SIGHUP, the file watcher and POST /v1/reload
// all come here.
func (s *Server) Reload() (api.ReloadResult, error) {
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
	if err != nil {
		s.log.Error("configuration reload refused; the running configuration stays", "config", old.Path, "err", err)
		return api.ReloadResult{}, httpjson.Errorf(http.StatusUnprocessableEntity, api.CodeReloadFailed, "%v", err)
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
	next, err := config.Load(old.Path)
	if err != nil {
		return api.ReloadResult{}, err
	}
	if err := liveChange(old, next); err != nil {
		return api.ReloadResult{}, err
	}
	if next.Revision == old.Revision {
		return api.ReloadResult{Changed: false, Revision: old.Revision}, nil
	}
	moved, rejoin := issuerChanged(old, next)
	var ic *issuerclient.Client
	if moved || rejoin {
		if ic, err = issuerclient.New(next.Issuer); err != nil {
			return api.ReloadResult{}, err
		}
	}
	for _, sock := range []struct {
		name      string
		old, next config.Socket
	}{{"agent", old.AgentSocket, next.AgentSocket}, {"api", old.APISocket, next.APISocket}} {
		if err := s.moveSocket(sock.name, sock.old, sock.next); err != nil {
			return api.ReloadResult{}, fmt.Errorf("sockets.%s: %w", sock.name, err)
		}
	}
	s.logger.SetLevel(next.Log.Level)
	s.logger.SetFormat(next.Log.Format)
	s.conf.Store(next)
	if moved || rejoin {
		// Make before break: the held credentials keep serving until the
		// renewal or join with the new issuer or onboarding succeeds.
		s.issuer.Store(ic)
		s.rejoin.Store(rejoin)
	}
	if moved || rejoin || needsRenewal(old, next) {
		// New logins, TTL, outputs or issuer take effect with fresh
		// certificates; the renewal reports its own failure.
		ctx := s.runCtx
		if ctx == nil {
			ctx = context.Background()
		}
		go s.loop.RenewNow(ctx)
	}
	return api.ReloadResult{Changed: true, Revision: next.Revision}, nil
}

// liveChange refuses the changes that cannot apply to a running daemon,
// naming them. Today every setting applies live; two sockets on one path
// is the one arrangement a move cannot reach in steps.
func liveChange(old, next *config.Config) error {
	if next.AgentSocket.Path == old.APISocket.Path || next.APISocket.Path == old.AgentSocket.Path {
		return fmt.Errorf("%s: sockets: the agent and api sockets cannot swap paths while mwid runs; move one at a time", next.Path)
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
	return old.Issuer.Address != next.Issuer.Address && !rejoin, rejoin
}

// needsRenewal reports whether next asks for different certificates.
func needsRenewal(old, next *config.Config) bool {
	return old.CertificateTTL != next.CertificateTTL ||
		!slices.Equal(old.SSHLogins, next.SSHLogins) ||
		!slices.EqualFunc(old.Outputs, next.Outputs, func(a, b config.Output) bool {
			return a.HostKey == b.HostKey && a.Certificate == b.Certificate &&
				slices.Equal(a.Names, b.Names) && slices.Equal(a.ReloadCommand, b.ReloadCommand) &&
				kubeOutputsEqual(a, b)
		})
}

// moveSocket applies a socket's new path, mode and group. A new path is
// listening before the old one closes. Callers are checked against the
// configuration in use on each connection, so allow lists need nothing
// here.
func (s *Server) moveSocket(name string, old, next config.Socket) error {
	if s.sockets == nil {
		return nil // not running: Run opens the sockets of the new config
	}
	if old.Path != next.Path {
		s.log.Info("moving socket", "socket", name, "from", old.Path, "to", next.Path)
		return s.serve(name, next, func(err error) { s.log.Error("socket failed", "socket", name, "err", err) })
	}
	if old.Mode != next.Mode {
		if err := os.Chmod(next.Path, next.Mode); err != nil {
			return err
		}
	}
	if old.Group != next.Group && next.Group >= 0 {
		if err := os.Chown(next.Path, -1, next.Group); err != nil {
			return err
		}
	}
	return nil
}
