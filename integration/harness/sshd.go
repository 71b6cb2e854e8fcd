package harness

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/internal/sshaccess"
)

const installOpenSSHServer = "apt-get install -y --no-install-recommends openssh-server"

// SSHD is a running OpenSSH server on 127.0.0.1.
type SSHD struct {
	Port       int
	Dir        string
	KnownHosts string // a known_hosts file that trusts this server's host key
	Proc       *Proc
}

// StartSSHD starts sshd on a free port of 127.0.0.1 that trusts userCA
// (authorized_keys form) for user certificates and nothing else: no
// passwords, no authorized_keys files. Its host key is made for it.
func StartSSHD(t testing.TB, userCA string) *SSHD {
	t.Helper()
	return StartSSHDWith(t, SSHDOptions{UserCA: userCA, HostKey: NewHostKey(t)})
}

// SSHDOptions configure StartSSHDWith.
type SSHDOptions struct {
	UserCA string
	// UserCAFile, if set, is the TrustedUserCAKeys file, such as the one
	// an mwid ssh_host output keeps; UserCA is then unused.
	UserCAFile string
	HostKey    string // private host key file
	HostCert   string // optional host certificate file
	Port       int    // optional; a free port by default
	// Extra are more lines of sshd_config, such as an
	// AuthorizedPrincipalsCommand.
	Extra string

	// HostCAKey, if set and HostCert is not, is a host CA's private key
	// file: the server gets a host certificate for 127.0.0.1 from it,
	// with Labels in sshaccess.LabelsExtension, as a host's mwid
	// ssh_host output would write.
	HostCAKey string
	Labels    map[string]string
}

// StartSSHD starts sshd as the package's StartSSHD does, trusting iss's
// user CA, with a host certificate from iss's host CA carrying labels:
// a host that mwid's agent signs for when the bot's roles select it.
func (iss *Issuer) StartSSHD(t testing.TB, labels map[string]string) *SSHD {
	t.Helper()
	return StartSSHDWith(t, SSHDOptions{UserCA: iss.UserCA, HostKey: NewHostKey(t),
		HostCAKey: filepath.Join(iss.State, "ssh_host_ca"), Labels: labels})
}

// certifyHost writes a host certificate for hostKey (a private key file,
// its public key beside it) signed by the CA in caKey, valid for an hour,
// and returns its path.
func certifyHost(t testing.TB, hostKey, caKey string, labels map[string]string) string {
	t.Helper()
	caPEM, err := os.ReadFile(caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ssh.ParsePrivateKey(caPEM)
	if err != nil {
		t.Fatalf("%s: %v", caKey, err)
	}
	pubText, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(pubText)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert := &ssh.Certificate{
		Key:             pub,
		CertType:        ssh.HostCert,
		KeyId:           "harness host " + sshaccess.FormatLabels(labels),
		ValidPrincipals: []string{"127.0.0.1"},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(time.Hour).Unix()),
		Permissions: ssh.Permissions{Extensions: map[string]string{
			sshaccess.LabelsExtension: sshaccess.MarshalLabels(labels),
		}},
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	path := hostKey + "-cert.pub"
	write(t, path, string(ssh.MarshalAuthorizedKey(cert)))
	return path
}

// NewHostKey makes an ed25519 host key in a new temporary directory and
// returns the private key's path; the public key is beside it, ".pub".
func NewHostKey(t testing.TB) string {
	t.Helper()
	keygen := Require(t, "ssh-keygen", "apt-get install -y openssh-client")
	hostKey := filepath.Join(t.TempDir(), "ssh_host_ed25519_key")
	if out, err := Run(context.Background(), 30*time.Second, nil, keygen, "-q", "-t", "ed25519", "-N", "", "-f", hostKey); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	return hostKey
}

// StartSSHDWith starts sshd as StartSSHD does, with the given host key and
// optional host certificate.
func StartSSHDWith(t testing.TB, o SSHDOptions) *SSHD {
	t.Helper()
	sshd := Require(t, "sshd", installOpenSSHServer)
	// sshd refuses to start without its privilege separation directory.
	os.MkdirAll("/run/sshd", 0o755)
	dir := t.TempDir()
	s := &SSHD{Port: o.Port, Dir: dir}
	if s.Port == 0 {
		s.Port = FreePort(t)
	}
	userCA, hostKey := o.UserCA, o.HostKey
	if o.HostCert == "" && o.HostCAKey != "" {
		o.HostCert = certifyHost(t, hostKey, o.HostCAKey, o.Labels)
	}
	var hostCert string
	if o.HostCert != "" {
		hostCert = "HostCertificate " + o.HostCert + "\n"
	}
	ca := o.UserCAFile
	if ca == "" {
		ca = filepath.Join(dir, "user_ca.pub")
		write(t, ca, userCA+"\n")
	}
	pub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	s.KnownHosts = filepath.Join(dir, "known_hosts")
	write(t, s.KnownHosts, fmt.Sprintf("[127.0.0.1]:%d %s", s.Port, pub))
	conf := filepath.Join(dir, "sshd_config")
	write(t, conf, fmt.Sprintf(`ListenAddress 127.0.0.1
Port %d
HostKey %s
PidFile %s
TrustedUserCAKeys %s
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
LogLevel VERBOSE
%s%s`, s.Port, hostKey, filepath.Join(dir, "sshd.pid"), ca, hostCert, o.Extra))
	s.Proc = Start(t, dir, "sshd", nil, sshd, "-D", "-e", "-f", conf)
	Eventually(t, 10*time.Second, "sshd listening", func() error {
		if s.Proc.Exited() {
			t.Fatalf("sshd exited:\n%s", s.Proc.Output())
		}
		c, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port))
		if err != nil {
			return err
		}
		return c.Close()
	})
	return s
}

// SSH runs ssh through the agent at agentSock as login, with strict host
// key checking against the server's own host key and no configuration from
// the machine, and returns the combined output.
func (s *SSHD) SSH(t testing.TB, agentSock, login string, command ...string) (string, error) {
	t.Helper()
	ssh := Require(t, "ssh", "apt-get install -y openssh-client")
	args := []string{ssh, "-F", "/dev/null",
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "UserKnownHostsFile=" + s.KnownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "IdentityFile=none",
		"-o", "IdentityAgent=" + agentSock,
		"-o", "ConnectTimeout=10",
		"-p", fmt.Sprint(s.Port),
		"-l", login, "127.0.0.1"}
	return Run(context.Background(), 30*time.Second, []string{"SSH_AUTH_SOCK=" + agentSock}, append(args, command...)...)
}

// SafeExecutable copies the executable at src into a new directory that
// sshd accepts a command in, and returns the copy's path. sshd runs an
// AuthorizedPrincipalsCommand only if the file and every directory above
// it are owned by root and writable by no one else; the system's
// temporary directory is world-writable, so the copy goes under /run.
func SafeExecutable(t testing.TB, src string) string {
	t.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("/run", "mwi-test-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, filepath.Base(src))
	if err := os.WriteFile(dst, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return dst
}

// SharedDir returns a new directory that every user can enter and list,
// owned by root, for files that a command sshd runs as another user reads.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mwi-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// CurrentUser returns the login name the tests run as, the one sshd lets a
// certificate log in as.
func CurrentUser(t testing.TB) string {
	t.Helper()
	u, err := user.Current()
	if err != nil {
		t.Fatal(err)
	}
	return u.Username
}

func write(t testing.TB, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
