package agent

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/logtest"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// bindCounter counts the session-bind requests the agent's sessions
// accept.
type bindCounter struct {
	*Agent
	binds atomic.Int32
}

func (b *bindCounter) ForConn(p unixsock.Peer) sshagent.Agent {
	return &countingSession{ExtendedAgent: b.Agent.ForConn(p).(sshagent.ExtendedAgent), binds: &b.binds}
}

type countingSession struct {
	sshagent.ExtendedAgent
	binds *atomic.Int32
}

func (c *countingSession) Extension(typ string, contents []byte) ([]byte, error) {
	res, err := c.ExtendedAgent.Extension(typ, contents)
	if typ == SessionBindExtension && err == nil {
		c.binds.Add(1)
	}
	return res, err
}

// sshServer runs an SSH server on loopback with the host key hostKey (a
// certificate signer or a plain one) that trusts user certificates signed
// by ca and answers every exec request with exit status 0. It returns the
// server's port and a function reporting the KeyId of the last
// certificate that authenticated.
func sshServer(t *testing.T, ca ssh.PublicKey, hostKey ssh.Signer) (port int, lastKeyID func() string) {
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
	config.AddHostKey(hostKey)

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
// the signature accepted by the server, when the server's host
// certificate comes from the issuer's host CA and carries labels the
// bot's roles select. A server whose host key the host CA did not
// certify, or whose labels no role selects, gets no signature.
func TestOpenSSHClient(t *testing.T) {
	sshPath := harness.Require(t, "ssh", "apt-get install -y openssh-client")
	ca, hostCA := newCA(t), newCA(t)
	now := uint64(time.Now().Unix())
	newest := withAccess(t, ca, newIdentity(t, ca, "mwid-newest", now-60, now+3600), stagingAccess(false))
	previous := withAccess(t, ca, newIdentity(t, ca, "mwid-previous", now-3600, now+60), stagingAccess(false))

	tests := []struct {
		name    string
		hostKey ssh.Signer
		want    string // KeyId the server authenticates; "" for a refusal
		reason  string // in the agent's log, for a refusal
	}{
		{"certified staging host", newHost(t, hostCA, map[string]string{"env": "staging"}, now-60, now+3600), "mwid-newest", ""},
		{"host without certificate", newCA(t), "", "not a host certificate"},
		{"certified prod host", newHost(t, hostCA, map[string]string{"env": "prod"}, now-60, now+3600), "", "selects a host labelled env=prod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newSource(newest, previous)
			src.setHostCAs(hostCA.PublicKey())
			a := &bindCounter{Agent: New(src, nil)}
			var log logtest.Buffer
			a.Log = slog.New(slog.NewTextHandler(&log, nil))
			sock := serveAgent(t, a)
			port, lastKeyID := sshServer(t, ca.PublicKey(), tt.hostKey)

			// Host certificates are trusted as ssh users of mwid trust
			// them, through @cert-authority; a plain host key is taken
			// on first use.
			knownHosts := filepath.Join(t.TempDir(), "known_hosts")
			line := fmt.Sprintf("@cert-authority [127.0.0.1]:%d %s", port, ssh.MarshalAuthorizedKey(hostCA.PublicKey()))
			if err := os.WriteFile(knownHosts, []byte(line), 0o600); err != nil {
				t.Fatal(err)
			}
			strict := "yes"
			if _, ok := tt.hostKey.PublicKey().(*ssh.Certificate); !ok {
				strict = "no"
			}

			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, sshPath,
				"-F", "/dev/null",
				"-p", strconv.Itoa(port),
				"-o", "BatchMode=yes",
				"-o", "StrictHostKeyChecking="+strict,
				"-o", "UserKnownHostsFile="+knownHosts,
				"-o", "GlobalKnownHostsFile=/dev/null",
				"-o", "PreferredAuthentications=publickey",
				// Keep ssh away from the user's own key files.
				"-o", "IdentityFile=/nonexistent/mwi-test-key",
				"-o", "IdentityAgent="+sock,
				"-o", "LogLevel=ERROR",
				"deploy@127.0.0.1", "true")
			out, err := cmd.CombinedOutput()
			if a.binds.Load() == 0 {
				t.Error("ssh sent no session-bind@openssh.com the agent accepted")
			}
			if tt.want == "" {
				if err == nil {
					t.Fatalf("ssh succeeded, want a refusal; agent log:\n%s", log.String())
				}
				if !strings.Contains(log.String(), tt.reason) {
					t.Errorf("agent log does not say %q:\n%s", tt.reason, log.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("ssh: %v\n%s\nagent log:\n%s", err, out, log.String())
			}
			if got := lastKeyID(); got != tt.want {
				t.Errorf("server authenticated %q, want %q", got, tt.want)
			}
		})
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

// TestOpenSSHServer logs in with the real ssh client through the agent to
// a real sshd, which uses OpenSSH's publickey-hostbound userauth: the
// agent signs for an sshd whose host certificate comes from the host CA
// with labels the bot's roles select, and for no other.
func TestOpenSSHServer(t *testing.T) {
	harness.Require(t, "sshd", "apt-get install -y --no-install-recommends openssh-server")
	login := harness.CurrentUser(t)
	userCA := newCA(t)
	_, hostCAKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	hostCA, err := ssh.NewSignerFromKey(hostCAKey)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(hostCAKey, "")
	if err != nil {
		t.Fatal(err)
	}
	hostCAFile := filepath.Join(t.TempDir(), "host_ca")
	if err := os.WriteFile(hostCAFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}

	access := stagingAccess(false)
	access.Allow[0].Logins = []string{login}
	now := uint64(time.Now().Unix())
	id := newIdentity(t, userCA, "bot=ci instance=i-1", now-60, now+3600)
	id.Cert.ValidPrincipals = []string{login}
	id = withAccess(t, userCA, id, access)
	userCAText := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(userCA.PublicKey())))

	tests := []struct {
		name   string
		opts   harness.SSHDOptions
		reason string // in the agent's log; "" for a login
	}{
		{"certified staging host", harness.SSHDOptions{HostCAKey: hostCAFile, Labels: map[string]string{"env": "staging"}}, ""},
		{"host without certificate", harness.SSHDOptions{}, "not a host certificate"},
		{"certified prod host", harness.SSHDOptions{HostCAKey: hostCAFile, Labels: map[string]string{"env": "prod"}}, "selects a host labelled env=prod"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := newSource(id)
			src.setHostCAs(hostCA.PublicKey())
			a := New(src, nil)
			var log logtest.Buffer
			a.Log = slog.New(slog.NewTextHandler(&log, nil))
			sock := serveAgent(t, a)
			tt.opts.UserCA, tt.opts.HostKey = userCAText, harness.NewHostKey(t)
			sshd := harness.StartSSHDWith(t, tt.opts)

			out, err := sshd.SSH(t, sock, login, "echo", "in")
			if tt.reason == "" {
				if err != nil || out != "in" {
					t.Fatalf("ssh: %v\n%s\nagent log:\n%s", err, out, log.String())
				}
				return
			}
			if err == nil {
				t.Fatalf("ssh succeeded, want a refusal; agent log:\n%s", log.String())
			}
			if !strings.Contains(log.String(), tt.reason) || !strings.Contains(log.String(), "login="+login) {
				t.Errorf("agent log does not say %q for login %s:\n%s", tt.reason, login, log.String())
			}
		})
	}
}
