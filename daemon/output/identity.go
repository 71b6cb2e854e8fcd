package output

import (
	"context"
	"path/filepath"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/sshconfig"
)

// Identity is an output of type identity: the SSH user key and
// certificate, known_hosts and an ssh_config that uses them, for tools
// that cannot use the agent socket (and for mwid --oneshot, which serves
// none).
type Identity struct {
	Directory string
}

func newIdentity(o config.Output) Output { return Identity{Directory: o.Directory} }

// Type returns "identity".
func (Identity) Type() string { return "identity" }

// Path returns the directory.
func (o Identity) Path() string { return o.Directory }

// Check checks the directory.
func (o Identity) Check() error {
	return verify(o, o.destination())
}

// destination is the output's directory, which is made if need be.
func (o Identity) destination() Directory { return Directory{Path: o.Directory, Create: true} }

// Request asks for nothing beyond the bot's own SSH certificate, which
// every join and renewal carries.
func (o Identity) Request(*Request) (Write, error) { return o.write, nil }

// write writes the files into the output's directory. The private key
// comes first, so that no certificate is ever there without its key.
func (o Identity) write(_ context.Context, c *identity.Credentials, env Env) error {
	if err := o.writeFiles(c, env); err != nil {
		return outputError(o, err)
	}
	env.Log.Info("identity written", "path", o.Directory, "principals", c.Principals())
	return nil
}

func (o Identity) writeFiles(c *identity.Credentials, env Env) error {
	key, err := c.SSHKeyPEM()
	if err != nil {
		return err
	}
	sshConfig := sshconfig.Config{
		Bot:             c.Bot,
		Revision:        env.Revision,
		Patterns:        env.Patterns,
		IdentityFile:    o.file(config.IdentityKeyFile),
		CertificateFile: o.file(config.IdentityCertFile),
		KnownHostsFile:  o.file(config.IdentityKnownHostsFile),
	}
	return o.destination().Write(
		File{config.IdentityKeyFile, key, 0o600},
		File{config.IdentityPublicKeyFile, ssh.MarshalAuthorizedKey(c.SSHSigner.PublicKey()), 0o644},
		File{config.IdentityCertFile, ssh.MarshalAuthorizedKey(c.SSHCert), 0o644},
		File{config.IdentityKnownHostsFile, []byte(sshconfig.KnownHosts(env.Patterns, c.HostCAs)), 0o644},
		File{config.IdentitySSHConfigFile, []byte(sshConfig.String()), 0o644},
	)
}

// file returns the path of one of the output's files.
func (o Identity) file(name string) string {
	return filepath.Join(o.Directory, name)
}
