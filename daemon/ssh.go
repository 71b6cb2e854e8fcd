package daemon

import (
	"os"
	"path/filepath"
	"strings"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/daemon/sshconfig"
	"github.com/mwi-project/mwi/internal/fault"
)

// Identity returns the SSH user certificate the agent serves.
func (s *Server) Identity() (api.Identity, error) {
	c := s.creds.Current()
	if c == nil {
		return api.Identity{}, localapi.NotJoined()
	}
	if c.SSHCert == nil {
		return api.Identity{}, fault.NotFound(api.CodeNotFound, "bot %s has no SSH user certificate: its roles allow no logins", c.Bot)
	}
	return api.Identity{
		Bot:         c.Bot,
		Instance:    c.Instance,
		Certificate: strings.TrimSpace(c.SSHCertText),
		KeyID:       c.SSHCert.KeyId,
		Serial:      c.SSHCert.Serial,
		Principals:  c.SSHCert.ValidPrincipals,
		ValidAfter:  certTime(c.SSHCert.ValidAfter),
		ValidBefore: certTime(c.SSHCert.ValidBefore),
	}, nil
}

// KnownHosts returns @cert-authority lines that trust the issuer's host CAs
// for the configured host patterns and nothing else.
func (s *Server) KnownHosts() (string, error) {
	c := s.creds.Current()
	if c == nil {
		return "", localapi.NotJoined()
	}
	return sshconfig.KnownHosts(sshconfig.Patterns(s.config().SSHHosts), c.HostCAs), nil
}

// SSHConfig returns an ssh_config block for the configured host patterns:
// the agent socket for authentication, and host keys checked strictly
// against the issuer's host CAs through mwictl, with no known_hosts file
// that trust-on-first-use could add to.
func (s *Server) SSHConfig(mwictl string) (string, error) {
	c := s.creds.Current()
	if c == nil {
		return "", localapi.NotJoined()
	}
	if mwictl == "" {
		mwictl = defaultMwictl()
	}
	cfg := s.config()
	return sshconfig.Config{
		Bot:       c.Bot,
		Revision:  cfg.Revision,
		Patterns:  sshconfig.Patterns(cfg.SSHHosts),
		Agent:     cfg.AgentSocket.Path,
		Mwictl:    mwictl,
		APISocket: cfg.APISocket.Path,
	}.String(), nil
}

// defaultMwictl is the mwictl installed beside mwid, or "mwictl" from PATH.
func defaultMwictl() string {
	exe, err := os.Executable()
	if err == nil {
		p := filepath.Join(filepath.Dir(exe), "mwictl")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "mwictl"
}
