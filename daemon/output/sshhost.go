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
	"github.com/mwi-project/mwi/internal/hostaccess"
	"github.com/mwi-project/mwi/internal/safefs"
	"github.com/mwi-project/mwi/internal/sshaccess"
)

// SSHHost is an output of type ssh_host: a certificate for the host's SSH
// key, written beside it for sshd, which can only read one from a file.
type SSHHost struct {
	HostKey     string // the host's public key file
	Certificate string // where the certificate is written
	// Names are the host names wanted; none means all the issuer allows.
	Names []string
	// Labels are the labels wanted on the certificate, which the issuer
	// grants only as the host bot's roles allow (host_labels).
	Labels map[string]string
	// AccessDir, if set, is where mwid keeps the files with which sshd
	// and mwictl ssh authorized-principals decide logins: see
	// package hostaccess and package accessdir.
	AccessDir string
	// ReloadCommand, if set, runs after each write (argv, no shell).
	ReloadCommand []string
}

// sshHostBlock is the configuration block of an ssh_host output.
type sshHostBlock struct {
	HostKey       string            `yaml:"host_key"`
	Certificate   string            `yaml:"certificate"`
	Names         []string          `yaml:"names"`
	Labels        map[string]string `yaml:"labels"`
	AccessDir     string            `yaml:"access_dir"`
	ReloadCommand []string          `yaml:"reload_command"`
}

// parseSSHHost parses and validates the block of an ssh_host output. The
// certificate is by default beside the key, as sshd names it:
// KEY-cert.pub.
func parseSSHHost(b *Block) Output {
	var f sshHostBlock
	b.decode("ssh_host", &f, nil)
	o := SSHHost{HostKey: b.Abs(f.HostKey), Certificate: b.Abs(f.Certificate),
		Names: nilIfEmpty(f.Names), ReloadCommand: nilIfEmpty(f.ReloadCommand), AccessDir: b.Abs(f.AccessDir)}
	if len(f.Labels) > 0 {
		o.Labels = f.Labels
	}
	for k, v := range f.Labels {
		if k == "" || k == sshaccess.Wildcard || v == "" || v == sshaccess.Wildcard {
			b.Errorf(b.Path+".labels", "label %q=%q: a host's label needs a key and a value, neither empty nor %q", k, v, sshaccess.Wildcard)
		}
	}
	if f.HostKey == "" {
		b.Errorf(b.Path+".host_key", "required: the host's public key file, such as /etc/ssh/ssh_host_ed25519_key.pub")
	} else if o.Certificate == "" {
		o.Certificate = strings.TrimSuffix(o.HostKey, ".pub") + "-cert.pub"
	}
	if o.Certificate == o.HostKey && o.HostKey != "" {
		b.Errorf(b.Path+".certificate", "must differ from host_key")
	}
	for _, e := range b.Earlier {
		if h, ok := e.(SSHHost); ok && h.AccessDir != "" && h.AccessDir == o.AccessDir {
			b.Errorf(b.Path+".access_dir", "%s is also the access_dir of an earlier ssh_host output: each host certificate needs its own", o.AccessDir)
		}
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

// Check checks the certificate's directory and the access directory, and
// reads the host key: an output whose key cannot be read is left out of a
// renewal, and a one-shot would otherwise succeed without writing it.
func (o SSHHost) Check() error {
	_, err := o.readHostKey()
	var access error
	if o.AccessDir != "" {
		access = verify(o, o.accessDir())
	}
	return errors.Join(verify(o, o.destination()), access, err)
}

// Request asks for a certificate for the host key. The key is read at
// every renewal, so that a rotated host key is certified.
func (o SSHHost) Request(r *Request) (Write, error) {
	key, err := o.readHostKey()
	if err != nil {
		return nil, err
	}
	i := r.addHostKey(key, o.Names, o.Labels)
	return func(ctx context.Context, c *identity.Credentials, env Env) error {
		if i >= len(c.HostCerts) {
			return outputError(o, errors.New("the credentials hold no certificate for the host key"))
		}
		return o.write(ctx, c, c.HostCerts[i], env)
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

// write writes cert atomically, then the access directory, and runs the
// reload command: sshd reloaded finds the files of both in place.
func (o SSHHost) write(ctx context.Context, c *identity.Credentials, cert *ssh.Certificate, env Env) error {
	err := o.destination().Write(File{filepath.Base(o.Certificate), ssh.MarshalAuthorizedKey(cert), 0o644})
	if err == nil && o.AccessDir != "" {
		if env.Access == nil {
			err = errors.New("access_dir: mwid keeps no access directory here") // a caller's mistake
		} else {
			err = env.Access.Certified(o.AccessDir, cert, c.UserCAs)
		}
	}
	if err == nil && len(o.ReloadCommand) > 0 {
		err = runReload(ctx, o.ReloadCommand)
	}
	if err != nil {
		return outputError(o, err)
	}
	env.Log.Info("host certificate written", "path", o.Certificate, "names", cert.ValidPrincipals, "labels", o.Labels)
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

// accessDir is the access directory, made if missing: its files are for
// sshd and for the unprivileged user that runs mwictl ssh
// authorized-principals, who must read but not change them.
func (o SSHHost) accessDir() Directory { return AccessDirectory(o.AccessDir) }

// AccessDirectory is the destination of an access directory at path.
func AccessDirectory(path string) Directory { return Directory{Path: path, Create: true, Perm: 0o755} }

// WriteAccess writes the files of the access directory d (see package
// hostaccess): the KRL if krl is not nil, the user CAs for
// TrustedUserCAKeys, then f as AccessFile, each atomically. They are
// readable by all (0644), as sshd's own public files are: none holds a
// secret.
func WriteAccess(d Directory, f hostaccess.File, krl []byte) error {
	data, err := f.Marshal()
	if err != nil {
		return err
	}
	var cas strings.Builder
	for _, ca := range f.UserCAs {
		cas.WriteString(strings.TrimSpace(ca) + "\n")
	}
	var files []File
	if krl != nil {
		files = append(files, File{hostaccess.KRLFile, krl, 0o644})
	}
	files = append(files,
		File{hostaccess.UserCAFile, []byte(cas.String()), 0o644},
		File{hostaccess.AccessFile, data, 0o644})
	return d.Write(files...)
}
