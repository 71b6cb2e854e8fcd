package harness

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"testing"
	"time"
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
	// Config is more sshd_config, such as AuthorizedPrincipalsCommand
	// and RevokedKeys lines.
	Config string
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
%s%s`, s.Port, hostKey, filepath.Join(dir, "sshd.pid"), ca, hostCert, o.Config))
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
