package agent

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/integration/harness"
)

// bindCounter counts the session-bind requests the agent accepts.
type bindCounter struct {
	*Agent
	binds atomic.Int32
}

func (b *bindCounter) Extension(typ string, contents []byte) ([]byte, error) {
	res, err := b.Agent.Extension(typ, contents)
	if typ == SessionBindExtension && err == nil {
		b.binds.Add(1)
	}
	return res, err
}

// sshServer runs an SSH server on loopback that trusts user certificates
// signed by ca and answers every exec request with exit status 0. It
// returns the server's port and a function reporting the KeyId of the
// last certificate that authenticated.
func sshServer(t *testing.T, ca ssh.PublicKey) (port int, lastKeyID func() string) {
	t.Helper()
	var keyID atomic.Value
	keyID.Store("")
	checker := &ssh.CertChecker{
		IsUserAuthority: func(auth ssh.PublicKey) bool {
			return bytes.Equal(auth.Marshal(), ca.Marshal())
		},
	}
	config := &ssh.ServerConfig{
		PublicKeyCallback: func(c ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			perms, err := checker.Authenticate(c, key)
			if err == nil {
				keyID.Store(key.(*ssh.Certificate).KeyId)
			}
			return perms, err
		},
	}
	config.AddHostKey(newCA(t)) // any ed25519 signer serves as host key

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go serveSSH(c, config)
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port, func() string { return keyID.Load().(string) }
}

func serveSSH(c net.Conn, config *ssh.ServerConfig) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	_, chans, reqs, err := ssh.NewServerConn(c, config)
	if err != nil {
		return
	}
	go ssh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			nc.Reject(ssh.UnknownChannelType, "only sessions")
			continue
		}
		ch, reqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer ch.Close()
			for req := range reqs {
				if req.Type != "exec" {
					req.Reply(false, nil)
					continue
				}
				req.Reply(true, nil)
				ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{0}))
				return
			}
		}()
	}
}

// TestOpenSSHClient logs in with the real ssh client through the agent:
// OpenSSH must accept the listed certificate, bind the session, and have
// the signature accepted by the server.
func TestOpenSSHClient(t *testing.T) {
	sshPath := harness.Require(t, "ssh", "apt-get install -y openssh-client")
	ca := newCA(t)
	now := uint64(time.Now().Unix())
	a := &bindCounter{Agent: New(newSource(
		newIdentity(t, ca, "mwid-newest", now-60, now+3600),
		newIdentity(t, ca, "mwid-previous", now-3600, now+60),
	), nil)}
	sock := serveAgent(t, a)
	port, lastKeyID := sshServer(t, ca.PublicKey())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, sshPath,
		"-F", "/dev/null",
		"-p", strconv.Itoa(port),
		"-o", "BatchMode=yes",
		"-o", "StrictHostKeyChecking=no",
		"-o", "UserKnownHostsFile=/dev/null",
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "PreferredAuthentications=publickey",
		// Keep ssh away from the user's own key files.
		"-o", "IdentityFile=/nonexistent/mwi-test-key",
		"-o", "IdentityAgent="+sock,
		"-o", "LogLevel=ERROR",
		"deploy@127.0.0.1", "true")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("ssh: %v\n%s", err, out)
	}
	if got := lastKeyID(); got != "mwid-newest" {
		t.Errorf("server authenticated %q, want mwid-newest", got)
	}
	if a.binds.Load() == 0 {
		t.Error("ssh sent no session-bind@openssh.com the agent accepted")
	}
}

// TestOpenSSHAdd checks ssh-add's view of the agent: the one valid
// certificate is listed, and deleting all keys is refused.
func TestOpenSSHAdd(t *testing.T) {
	sshAdd := harness.Require(t, "ssh-add", "apt-get install -y openssh-client")
	ca := newCA(t)
	id := newIdentity(t, ca, "mwid-listed", t0-60, t0+3600)
	sock := serveAgent(t, New(newSource(id), newClock(t0).now))

	run := func(args ...string) (string, error) {
		cmd := exec.Command(sshAdd, args...)
		cmd.Env = []string{"SSH_AUTH_SOCK=" + sock}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run("-L")
	if err != nil {
		t.Fatalf("ssh-add -L: %v\n%s", err, out)
	}
	want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(id.Cert))) + " mwid-listed"
	if strings.TrimSpace(out) != want {
		t.Errorf("ssh-add -L = %q, want %q", out, want)
	}
	if out, err := run("-D"); err == nil {
		t.Errorf("ssh-add -D succeeded: %s", out)
	}
	// Still there.
	if keys, err := dial(t, sock).List(); err != nil || len(keys) != 1 {
		t.Errorf("after ssh-add -D: List = %v, %v", keys, err)
	}
}
