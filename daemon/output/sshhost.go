package output

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/daemon/identity"
	"github.com/mwi-project/mwi/internal/safefs"
)

// SSHHost is an output of type ssh_host: a certificate for the host's SSH
// key, written beside it for sshd, which can only read one from a file.
type SSHHost struct {
	HostKey     string // the host's public key file
	Certificate string // where the certificate is written
	// Names are the host names wanted; none means all the issuer allows.
	Names []string
	// ReloadCommand, if set, runs after each write (argv, no shell).
	ReloadCommand []string
}

// sshHostBlock is the configuration block of an ssh_host output.
type sshHostBlock struct {
	HostKey       string   `yaml:"host_key"`
	Certificate   string   `yaml:"certificate"`
	Names         []string `yaml:"names"`
	ReloadCommand []string `yaml:"reload_command"`
}

// parseSSHHost parses and validates the block of an ssh_host output. The
// certificate is by default beside the key, as sshd names it:
// KEY-cert.pub.
func parseSSHHost(b *Block) Output {
	var f sshHostBlock
	b.decode("ssh_host", &f, nil)
	o := SSHHost{HostKey: b.Abs(f.HostKey), Certificate: b.Abs(f.Certificate),
		Names: nilIfEmpty(f.Names), ReloadCommand: nilIfEmpty(f.ReloadCommand)}
	if f.HostKey == "" {
		b.Errorf(b.Path+".host_key", "required: the host's public key file, such as /etc/ssh/ssh_host_ed25519_key.pub")
	} else if o.Certificate == "" {
		o.Certificate = strings.TrimSuffix(o.HostKey, ".pub") + "-cert.pub"
	}
	if o.Certificate == o.HostKey && o.HostKey != "" {
		b.Errorf(b.Path+".certificate", "must differ from host_key")
	}
	return o
}

// nilIfEmpty makes "names: []" and no names the same configuration.
func nilIfEmpty[S ~[]E, E any](s S) S {
	if len(s) == 0 {
		return nil
	}
	return s
}

// Type returns "ssh_host".
func (SSHHost) Type() string { return "ssh_host" }

// Path returns the certificate's path.
func (o SSHHost) Path() string { return o.Certificate }

// Check checks the certificate's directory and reads the host key: an
// output whose key cannot be read is left out of a renewal, and a one-shot
// would otherwise succeed without writing it.
func (o SSHHost) Check() error {
	_, err := o.readHostKey()
	return errors.Join(verify(o, o.destination()), err)
}

// Request asks for a certificate for the host key. The key is read at
// every renewal, so that a rotated host key is certified.
func (o SSHHost) Request(r *Request) (Write, error) {
	key, err := o.readHostKey()
	if err != nil {
		return nil, err
	}
	i := r.addHostKey(key, o.Names)
	return func(ctx context.Context, c *identity.Credentials, env Env) error {
		if i >= len(c.HostCerts) {
			return outputError(o, errors.New("the credentials hold no certificate for the host key"))
		}
		return o.write(ctx, c.HostCerts[i], env)
	}, nil
}

// readHostKey reads the host public key. The issuer certifies it with the
// host's names, so it is read only if no one but root or mwid's user could
// have put it there.
func (o SSHHost) readHostKey() (ssh.PublicKey, error) {
	data, err := safefs.ReadFile(o.HostKey, maxHostKeyFile)
	var key ssh.PublicKey
	if err == nil {
		key, _, _, _, err = ssh.ParseAuthorizedKey(data)
	}
	if err != nil {
		return nil, outputError(o, fmt.Errorf("host key %s: %w", o.HostKey, err))
	}
	return key, nil
}

// destination is the directory of the certificate, which must exist: it is
// sshd's (and the host key's), not mwid's to make.
func (o SSHHost) destination() Directory { return Directory{Path: filepath.Dir(o.Certificate)} }

// maxHostKeyFile bounds a host's public key file; an RSA 16384 key is
// under 3 KiB.
const maxHostKeyFile = 16 << 10

// write writes cert atomically and runs the reload command.
func (o SSHHost) write(ctx context.Context, cert *ssh.Certificate, env Env) error {
	err := o.destination().Write(File{filepath.Base(o.Certificate), ssh.MarshalAuthorizedKey(cert), 0o644})
	if err == nil && len(o.ReloadCommand) > 0 {
		err = runReload(ctx, o.ReloadCommand)
	}
	if err != nil {
		return outputError(o, err)
	}
	env.Log.Info("host certificate written", "path", o.Certificate, "names", cert.ValidPrincipals)
	return nil
}

// reloadCommandTimeout bounds an output's reload command, so a hung
// command cannot stall renewals.
const reloadCommandTimeout = 30 * time.Second

func runReload(ctx context.Context, argv []string) error {
	ctx, cancel := context.WithTimeout(ctx, reloadCommandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	// Only PATH: mwid's environment may hold its join token, credentials
	// directory and systemd's sockets, none of which a reload command needs.
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("reload command %q: %v: %s", argv, err, out)
	}
	return nil
}
