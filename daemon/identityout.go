package daemon

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/internal/safefs"
)

// writeIdentityOutputs writes the files of each identity output: the SSH
// user key and certificate, known_hosts and an ssh_config that uses them,
// for tools that cannot use the agent socket (and for mwid --oneshot,
// which serves none). It returns the first failure.
func (s *Server) writeIdentityOutputs(cfg *config.Config, c *identity.Credentials) error {
	var first error
	for _, o := range cfg.Outputs {
		if !o.Identity() {
			continue
		}
		err := writeIdentity(o, cfg, c)
		if err != nil {
			err = fmt.Errorf("identity output %s: %w", o.Directory, err)
		}
		s.recordOutput(o.Directory, err)
		if err != nil {
			if first == nil {
				first = err
			}
			continue
		}
		s.log.Info("identity written", "path", o.Directory, "principals", c.Principals())
	}
	return first
}

// writeIdentity writes the files of the identity output o, each
// atomically, into the directory that safefs opened (or made, 0700): never
// through a symbolic link, nor into a directory that another user could
// change. The private key comes first, so that no certificate is ever there
// without its key.
func writeIdentity(o config.Output, cfg *config.Config, c *identity.Credentials) error {
	key, err := c.SSHKeyPEM()
	if err != nil {
		return err
	}
	patterns := hostPatterns(cfg)
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{config.IdentityKeyFile, key, 0o600},
		{config.IdentityPublicKeyFile, ssh.MarshalAuthorizedKey(c.SSHSigner.PublicKey()), 0o644},
		{config.IdentityCertFile, ssh.MarshalAuthorizedKey(c.SSHCert), 0o644},
		{config.IdentityKnownHostsFile, []byte(knownHosts(patterns, c.HostCAs)), 0o644},
		{config.IdentitySSHConfigFile, []byte(identitySSHConfig(o, patterns, c.Bot, cfg.Revision)), 0o644},
	}
	dir, err := safefs.MkdirAll(o.Directory, 0o700)
	if err != nil {
		return err
	}
	defer dir.Close()
	for _, f := range files {
		if err := dir.WriteFile(f.name, f.data, f.mode); err != nil {
			return err
		}
	}
	return nil
}

// identitySSHConfig returns an ssh_config block for the host patterns that
// authenticates with the identity output's key and certificate only, and
// checks host keys strictly against its known_hosts: the issuer's host CAs,
// with no trust on first use. Paths are absolute, so that ssh -F finds the
// files from any directory.
func identitySSHConfig(o config.Output, patterns []string, bot, revision string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# ssh_config from mwid for bot %s (configuration %s).\n", bot, revision)
	fmt.Fprintf(&b, "Host %s\n", strings.Join(patterns, " "))
	fmt.Fprintf(&b, "    IdentityFile %s\n", quote(o.IdentityPath(config.IdentityKeyFile)))
	fmt.Fprintf(&b, "    CertificateFile %s\n", quote(o.IdentityPath(config.IdentityCertFile)))
	b.WriteString("    IdentitiesOnly yes\n")
	b.WriteString("    IdentityAgent none\n")
	fmt.Fprintf(&b, "    UserKnownHostsFile %s\n", quote(o.IdentityPath(config.IdentityKnownHostsFile)))
	b.WriteString("    GlobalKnownHostsFile /dev/null\n")
	b.WriteString("    StrictHostKeyChecking yes\n")
	b.WriteString("    UpdateHostKeys no\n")
	return b.String()
}
