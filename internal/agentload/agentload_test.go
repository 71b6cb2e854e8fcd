package agentload

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/integration/harness"
)

// socketPath returns a path for a Unix socket in a fresh temporary
// directory, falling back to a shorter directory when the test's name
// would push the path past the kernel's limit of about 108 bytes.
func socketPath(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.sock")
	if len(p) < 100 {
		return p
	}
	dir, err := os.MkdirTemp("", "agload")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "agent.sock")
}

// startOpenSSHAgent runs ssh-agent in the foreground on a fresh socket,
// loads a new ed25519 key into it with ssh-add, and returns the socket.
func startOpenSSHAgent(t *testing.T) string {
	t.Helper()
	for _, tool := range []string{"ssh-agent", "ssh-add"} {
		harness.Require(t, tool, "apt-get install -y openssh-client")
	}
	sock := socketPath(t)

	var out bytes.Buffer
	cmd := exec.Command("ssh-agent", "-D", "-a", sock)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		// SIGTERM lets ssh-agent remove its socket; Kill is the fallback.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("ssh-agent exited: %v\n%s", err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("ssh-agent did not listen on %s: %v\n%s", sock, err, out.String())
		}
	}

	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "agentload test key")
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "id_ed25519")
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	add := exec.Command("ssh-add", keyFile)
	add.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
	if b, err := add.CombinedOutput(); err != nil {
		t.Fatalf("ssh-add: %v\n%s", err, b)
	}
	return sock
}

func checkResult(t *testing.T, res Result, clients int, d time.Duration) {
	t.Helper()
	t.Log(res)
	if res.Clients != clients {
		t.Errorf("Clients = %d, want %d", res.Clients, clients)
	}
	if res.Ops <= 0 {
		t.Errorf("Ops = %d, want > 0", res.Ops)
	}
	if res.Duration < d {
		t.Errorf("Duration = %v, want at least %v", res.Duration, d)
	}
	if res.OpsPerSec <= 0 {
		t.Errorf("OpsPerSec = %v, want > 0", res.OpsPerSec)
	}
	if !(0 < res.P50 && res.P50 <= res.P99 && res.P99 <= res.Max) {
		t.Errorf("latencies p50 %v, p99 %v, max %v are not ordered", res.P50, res.P99, res.Max)
	}
}

func TestRunOpenSSHAgent(t *testing.T) {
	sock := startOpenSSHAgent(t)
	const clients, d = 2, 300 * time.Millisecond
	res, err := Run(context.Background(), sock, clients, d)
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, clients, d)
	if res.Errors != 0 {
		t.Errorf("Errors = %d, want 0", res.Errors)
	}
}

// serve serves a on a fresh Unix socket until the test ends.
func serve(t *testing.T, a sshagent.Agent) string {
	t.Helper()
	sock := socketPath(t)
	ln, err := net.Listen("unix", sock)
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
			t.Cleanup(func() { c.Close() })
			go sshagent.ServeAgent(a, c)
		}
	}()
	return sock
}

func keyring(t *testing.T) sshagent.Agent {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	kr := sshagent.NewKeyring()
	if err := kr.Add(sshagent.AddedKey{PrivateKey: priv}); err != nil {
		t.Fatal(err)
	}
	return kr
}

// flakyAgent fails every other signature.
type flakyAgent struct {
	sshagent.Agent
	n atomic.Int64
}

func (f *flakyAgent) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	if f.n.Add(1)%2 == 0 {
		return nil, errors.New("flaky")
	}
	return f.Agent.Sign(key, data)
}

func TestRun(t *testing.T) {
	const clients, d = 4, 100 * time.Millisecond

	t.Run("keyring", func(t *testing.T) {
		res, err := Run(context.Background(), serve(t, keyring(t)), clients, d)
		if err != nil {
			t.Fatal(err)
		}
		checkResult(t, res, clients, d)
		if res.Errors != 0 {
			t.Errorf("Errors = %d, want 0", res.Errors)
		}
	})

	t.Run("errors counted", func(t *testing.T) {
		// x/crypto's agent server logs every failed request with the
		// standard logger; thousands of expected failures are noise.
		log.SetOutput(io.Discard)
		t.Cleanup(func() { log.SetOutput(os.Stderr) })
		res, err := Run(context.Background(), serve(t, &flakyAgent{Agent: keyring(t)}), clients, d)
		if err != nil {
			t.Fatal(err)
		}
		checkResult(t, res, clients, d)
		if res.Errors == 0 {
			t.Error("Errors = 0, want failures counted")
		}
	})
}

// recordingAgent records the payloads it signs.
type recordingAgent struct {
	sshagent.Agent
	mu   sync.Mutex
	seen map[string]int
}

func (r *recordingAgent) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	r.mu.Lock()
	r.seen[string(data)]++
	r.mu.Unlock()
	return r.Agent.Sign(key, data)
}

// TestRunWithPrepare checks that each client signs the payload its
// Prepare returned, and that a failing Prepare fails the run.
func TestRunWithPrepare(t *testing.T) {
	const clients, d = 3, 100 * time.Millisecond
	rec := &recordingAgent{Agent: keyring(t), seen: map[string]int{}}
	sock := serve(t, rec)
	var n atomic.Int32
	res, err := RunWith(context.Background(), sock, clients, d, Options{
		Prepare: func(c sshagent.ExtendedAgent, key *sshagent.Key) ([]byte, error) {
			if key == nil {
				return nil, errors.New("no key")
			}
			return []byte(fmt.Sprintf("payload %d", n.Add(1))), nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	checkResult(t, res, clients, d)
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.seen) != clients {
		t.Errorf("signed %d distinct payloads, want one per client (%d): %v", len(rec.seen), clients, rec.seen)
	}

	_, err = RunWith(context.Background(), sock, 1, d, Options{
		Prepare: func(sshagent.ExtendedAgent, *sshagent.Key) ([]byte, error) { return nil, errors.New("no bind") },
	})
	if err == nil || !strings.Contains(err.Error(), "no bind") {
		t.Errorf("RunWith with a failing Prepare = %v, want its error", err)
	}
}

func TestRunCancel(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), Warmup+50*time.Millisecond)
	defer cancel()
	started := time.Now()
	res, err := Run(ctx, serve(t, keyring(t)), 2, time.Hour)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Run error = %v, want context.DeadlineExceeded", err)
	}
	if elapsed := time.Since(started); elapsed > 10*time.Second {
		t.Errorf("Run took %v after cancellation", elapsed)
	}
	if res.Errors != 0 {
		t.Errorf("Errors = %d, want 0: requests cut by cancellation are not failures", res.Errors)
	}
}

func TestRunFails(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.sock")
	tests := []struct {
		name    string
		socket  string
		clients int
		d       time.Duration
		want    string
	}{
		{"no socket", missing, 2, time.Second, missing},
		{"no keys", serve(t, sshagent.NewKeyring()), 2, time.Second, "holds no keys"},
		{"no clients", missing, 0, time.Second, "at least one client"},
		{"no duration", missing, 1, 0, "duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(context.Background(), tt.socket, tt.clients, tt.d)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestPercentile(t *testing.T) {
	lat := make([]time.Duration, 100)
	for i := range lat {
		lat[i] = time.Duration(i + 1)
	}
	for _, tt := range []struct {
		lat  []time.Duration
		p    float64
		want time.Duration
	}{
		{lat, 0.50, 50},
		{lat, 0.99, 99},
		{lat, 1, 100},
		{lat[:1], 0.5, 1},
		{lat[:1], 0.99, 1},
		{lat[:3], 0.5, 2},
	} {
		if got := percentile(tt.lat, tt.p); got != tt.want {
			t.Errorf("percentile(%d samples, %v) = %v, want %v", len(tt.lat), tt.p, got, tt.want)
		}
	}
}
