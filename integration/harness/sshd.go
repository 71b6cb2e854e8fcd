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
// passwords, no authorized_keys files.
func StartSSHD(t testing.TB, userCA string) *SSHD {
	t.Helper()
	sshd := Require(t, "sshd", installOpenSSHServer)
	keygen := Require(t, "ssh-keygen", "apt-get install -y openssh-client")
	// sshd refuses to start without its privilege separation directory.
	os.MkdirAll("/run/sshd", 0o755)
	dir := t.TempDir()
	s := &SSHD{Port: FreePort(t), Dir: dir}
	hostKey := filepath.Join(dir, "host_ed25519")
	if out, err := Run(context.Background(), 30*time.Second, nil, keygen, "-q", "-t", "ed25519", "-N", "", "-f", hostKey); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	ca := filepath.Join(dir, "user_ca.pub")
	write(t, ca, userCA+"\n")
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
`, s.Port, hostKey, filepath.Join(dir, "sshd.pid"), ca))
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
