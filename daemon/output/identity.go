package output

import (
	"context"
	"path/filepath"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/daemon/sshconfig"
)

// Identity is an output of type identity: the SSH user key and
// certificate, known_hosts and an ssh_config that uses them, for tools
// that cannot use the agent socket (and for mwid --oneshot, which serves
// none).
type Identity struct {
	Directory string
	// NoSSHConfig leaves out the ssh_config file, as tbot's identity
	// output does with ssh_config: off.
	NoSSHConfig bool
}

// The files an identity output writes in its directory, and their modes.
const (
	IdentityKeyFile        = "key"          // the SSH private key, OpenSSH format, 0600
	IdentityPublicKeyFile  = "key.pub"      // its public key, 0644
	IdentityCertFile       = "key-cert.pub" // the SSH user certificate, 0644
	IdentityKnownHostsFile = "known_hosts"  // @cert-authority lines for ssh.hosts, 0644
	IdentitySSHConfigFile  = "ssh_config"   // for ssh -F, 0644
)

// identityBlock is the configuration block of an identity output.
type identityBlock struct {
	Directory string `yaml:"directory"`
}

// parseIdentity parses and validates the block of an identity output.
func parseIdentity(b *Block) Output {
	var f identityBlock
	b.decode("identity", &f, func(field string, _ []string) {
		b.Errorf(b.Path+"."+field, "is not a field of outputs of type identity (which take only directory)")
	})
	o := Identity{Directory: b.Abs(f.Directory)}
	if f.Directory == "" {
		b.Errorf(b.Path+".directory", "required: where to write %s, %s, %s, %s and %s",
			IdentityKeyFile, IdentityPublicKeyFile, IdentityCertFile, IdentityKnownHostsFile, IdentitySSHConfigFile)
		return o
	}
	for _, e := range b.Earlier {
		if e, ok := e.(Identity); ok && e.Directory == o.Directory {
			b.Errorf(b.Path+".directory", "another identity output writes to %s already", o.Directory)
			break
		}
	}
	return o
}

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
		IdentityFile:    o.file(IdentityKeyFile),
		CertificateFile: o.file(IdentityCertFile),
		KnownHostsFile:  o.file(IdentityKnownHostsFile),
	}
	files := []File{
		{IdentityKeyFile, key, 0o600},
		{IdentityPublicKeyFile, ssh.MarshalAuthorizedKey(c.SSHSigner.PublicKey()), 0o644},
		{IdentityCertFile, ssh.MarshalAuthorizedKey(c.SSHCert), 0o644},
		{IdentityKnownHostsFile, []byte(sshconfig.KnownHosts(env.Patterns, c.HostCAs)), 0o644},
	}
	if !o.NoSSHConfig {
		files = append(files, File{IdentitySSHConfigFile, []byte(sshConfig.String()), 0o644})
	}
	return o.destination().Write(files...)
}

// file returns the path of one of the output's files.
func (o Identity) file(name string) string {
	return filepath.Join(o.Directory, name)
}
