package daemon

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"slices"
	"strings"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/logging"
)

// Reload reads the configuration file again and, if it is valid and every
// change can apply while running, makes it the configuration in use. A bad
// file leaves the running configuration in place; the error is returned,
// logged, and shown in Status. SIGHUP and POST /v1/reload both come here.
func (s *Server) Reload() (api.ReloadResult, error) {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	old := s.config()
	next, err := config.Load(old.Path)
	if err == nil {
		err = liveChange(old, next)
	}
	now := s.now()
	s.mu.Lock()
	s.status.lastReloadAt = &now
	if err != nil {
		s.status.lastReloadError = err.Error()
	} else {
		s.status.lastReloadError = ""
	}
	s.mu.Unlock()
	if err != nil {
		s.log.Error("configuration reload refused; the running configuration stays", "config", old.Path, "err", err)
		return api.ReloadResult{}, httpjson.Errorf(http.StatusUnprocessableEntity, api.CodeReloadFailed, "%v", err)
	}
	if next.Revision == old.Revision {
		return api.ReloadResult{Changed: false, Revision: old.Revision}, nil
	}
	if err := applySocket(old.AgentSocket, next.AgentSocket); err != nil {
		return api.ReloadResult{}, err
	}
	if err := applySocket(old.APISocket, next.APISocket); err != nil {
		return api.ReloadResult{}, err
	}
	logging.SetLevel(s.logLevel, next.Log.Level)
	s.conf.Store(next)
	s.mu.Lock()
	s.status.loadedAt = now
	s.mu.Unlock()
	s.log.Info("configuration reloaded", "config", next.Path, "revision", next.Revision)
	if needsRenewal(old, next) {
		// New logins, TTL or outputs take effect with fresh certificates.
		go func() {
			if err := s.loop.RenewNow(context.Background()); err != nil {
				s.log.Error("renewal after reload failed", "err", err)
			}
		}()
	}
	return api.ReloadResult{Changed: true, Revision: next.Revision}, nil
}

// liveChange refuses the changes that cannot apply to a running daemon,
// naming them.
func liveChange(old, next *config.Config) error {
	var fixed []string
	if !slices.Equal(old.Issuer.CAPins, next.Issuer.CAPins) || old.Issuer.Address != next.Issuer.Address || old.Issuer.CAFile != next.Issuer.CAFile {
		fixed = append(fixed, "issuer")
	}
	if old.Onboarding != next.Onboarding {
		fixed = append(fixed, "onboarding")
	}
	if old.AgentSocket.Path != next.AgentSocket.Path {
		fixed = append(fixed, "sockets.agent.path")
	}
	if old.APISocket.Path != next.APISocket.Path {
		fixed = append(fixed, "sockets.api.path")
	}
	if old.Log.Format != next.Log.Format {
		fixed = append(fixed, "log.format")
	}
	if len(fixed) > 0 {
		return fmt.Errorf("%s: %s cannot change while mwid runs; restart mwid to apply", next.Path, strings.Join(fixed, ", "))
	}
	return nil
}

// needsRenewal reports whether next asks for different certificates.
func needsRenewal(old, next *config.Config) bool {
	return old.CertificateTTL != next.CertificateTTL ||
		!slices.Equal(old.SSHLogins, next.SSHLogins) ||
		!slices.EqualFunc(old.Outputs, next.Outputs, func(a, b config.Output) bool {
			return a.HostKey == b.HostKey && a.Certificate == b.Certificate &&
				slices.Equal(a.Names, b.Names) && slices.Equal(a.ReloadCommand, b.ReloadCommand)
		})
}

// applySocket applies a socket's new mode and group to its file. Callers
// are checked against the configuration in use on each connection, so
// allow lists need nothing here.
func applySocket(old, next config.Socket) error {
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
