package daemon

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/internal/httpjson"
)

// Identity returns the SSH user certificate the agent serves.
func (s *Server) Identity() (api.Identity, error) {
	c := s.creds.Current()
	if c == nil {
		return api.Identity{}, localapi.NotJoined()
	}
	if c.SSHCert == nil {
		return api.Identity{}, httpjson.Errorf(http.StatusNotFound, api.CodeNotFound, "bot %s has no SSH user certificate: its roles allow no logins", c.Bot)
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

// hostPatterns returns cfg's host patterns, or "*".
func hostPatterns(cfg *config.Config) []string {
	if h := cfg.SSHHosts; len(h) > 0 {
		return h
	}
	return []string{"*"}
}

// KnownHosts returns @cert-authority lines that trust the issuer's host CAs
// for the configured host patterns and nothing else.
func (s *Server) KnownHosts() (string, error) {
	c := s.creds.Current()
	if c == nil {
		return "", localapi.NotJoined()
	}
	return knownHosts(hostPatterns(s.config()), c.HostCAs), nil
}

// knownHosts returns known_hosts @cert-authority lines that trust cas for
// the host patterns and nothing else. The API and identity outputs both
// write them.
func knownHosts(patterns []string, cas []ssh.PublicKey) string {
	// known_hosts names a host on a port other than 22 as "[host]:port";
	// each pattern is given in both forms so that it matches either way.
	var names []string
	for _, p := range patterns {
		names = append(names, p)
		if p != "*" {
			names = append(names, "["+p+"]:*")
		}
	}
	var b strings.Builder
	for _, ca := range cas {
		fmt.Fprintf(&b, "@cert-authority %s %s", strings.Join(names, ","), ssh.MarshalAuthorizedKey(ca))
	}
	return b.String()
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
	var b strings.Builder
	fmt.Fprintf(&b, "# ssh_config from mwid for bot %s (configuration %s).\n", c.Bot, cfg.Revision)
	fmt.Fprintf(&b, "Host %s\n", strings.Join(hostPatterns(cfg), " "))
	fmt.Fprintf(&b, "    IdentityAgent %s\n", quote(cfg.AgentSocket.Path))
	fmt.Fprintf(&b, "    KnownHostsCommand %s --socket %s known-hosts\n", quote(mwictl), quote(cfg.APISocket.Path))
	b.WriteString("    UserKnownHostsFile /dev/null\n")
	b.WriteString("    GlobalKnownHostsFile /dev/null\n")
	b.WriteString("    StrictHostKeyChecking yes\n")
	b.WriteString("    UpdateHostKeys no\n")
	return b.String(), nil
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

// quote quotes a path for ssh_config when it needs it. A control character
// is escaped rather than written, so no value can start a new line of
// configuration, and "%" is doubled because ssh expands %-tokens in these
// directives.
func quote(s string) string {
	s = strings.ReplaceAll(s, "%", "%%")
	if strings.ContainsFunc(s, func(r rune) bool { return r < ' ' || r == 0x7f || strings.ContainsRune(" \"'\\#%", r) }) {
		return strconv.Quote(s)
	}
	return s
}
