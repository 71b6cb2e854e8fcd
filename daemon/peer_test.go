package daemon

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/unixsock"
)

func TestAllowed(t *testing.T) {
	self := uint32(os.Geteuid())
	tests := []struct {
		name string
		sock config.Socket
		peer unixsock.Peer
		ok   bool
	}{
		{"root", config.Socket{Group: -1}, unixsock.Peer{UID: 0, GID: 0}, true},
		{"mwid's own user", config.Socket{Group: -1}, unixsock.Peer{UID: self, GID: 12345}, true},
		{"a stranger", config.Socket{Group: -1}, unixsock.Peer{UID: 4242, GID: 4242}, false},
		{"the socket's group alone is not enough", config.Socket{Group: 4242}, unixsock.Peer{UID: 4242, GID: 4242}, false},
		{"allowed user", config.Socket{Group: -1, AllowUIDs: []uint32{4242}}, unixsock.Peer{UID: 4242, GID: 1}, true},
		{"allowed primary group", config.Socket{Group: -1, AllowGIDs: []uint32{777}}, unixsock.Peer{UID: 4242, GID: 777}, true},
		{"other group", config.Socket{Group: -1, AllowGIDs: []uint32{777}}, unixsock.Peer{UID: 4242, GID: 778}, false},
	}
	for _, tt := range tests {
		if tt.peer.UID == self && self == 0 && tt.name != "root" {
			continue // running as root, mwid's user is root
		}
		err := allowed(tt.sock, tt.peer)
		if (err == nil) != tt.ok {
			t.Errorf("%s: allowed = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

// writeConfig writes a configuration whose sockets are agent and api in
// dir, with the given allow section for both, and returns its path.
func writeConfig(t *testing.T, dir, allow string) string {
	t.Helper()
	path := filepath.Join(dir, "mwid.yaml")
	text := `version: v1
issuer:
  address: 127.0.0.1:1
  ca_pins: ["sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
onboarding:
  join_method: token
  token: {env: MWI_TOKEN}
sockets:
  agent:
    path: ` + filepath.Join(dir, "agent.sock") + `
` + allow + `  api:
    path: ` + filepath.Join(dir, "api.sock") + `
` + allow
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestRecheckFollowsConfig checks the agent's check of an open connection:
// it follows the configuration in use, and costs no allocation when the
// caller is allowed.
func TestRecheckFollowsConfig(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Load(writeConfig(t, dir, "    allow: {users: [nobody]}\n"))
	if err != nil {
		t.Skipf("no user nobody: %v", err)
	}
	narrowed, err := config.Load(writeConfig(t, dir, ""))
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{log: slog.New(slog.DiscardHandler)}
	s.conf.Store(cfg)
	check := s.checkPeer("agent", func(c *config.Config) config.Socket { return c.AgentSocket })
	nobody := unixsock.Peer{UID: cfg.AgentSocket.AllowUIDs[0], GID: 4242, PID: 1}
	recheck, err := check(nobody)
	if err != nil {
		t.Fatalf("nobody refused while allowed: %v", err)
	}
	if allocs := testing.AllocsPerRun(100, func() { recheck() }); allocs != 0 {
		t.Errorf("the check of an allowed request allocates %v times; want 0", allocs)
	}
	s.conf.Store(narrowed)
	if err := recheck(); err == nil {
		t.Error("the check of an open connection still allows nobody after the configuration dropped it")
	}
	if _, err := check(nobody); err == nil {
		t.Error("a new connection of nobody is allowed after the configuration dropped it")
	}
}

// peerHelperEnv makes the test binary, run as another user, the client of
// TestCallersRecheckedOnOpenConnections (see TestPeerHelper).
const peerHelperEnv = "MWI_TEST_PEER_HELPER"

// TestPeerHelper is the client that TestCallersRecheckedOnOpenConnections
// runs as nobody; it does nothing in a normal test run. It opens one agent
// connection and one HTTP connection to the API and keeps both: for each
// line on stdin it lists the agent's keys and asks GET /v1/status on them,
// and prints "agent=ok|refused api=STATUS reused=BOOL".
func TestPeerHelper(t *testing.T) {
	dir := os.Getenv(peerHelperEnv)
	if dir == "" {
		return
	}
	ac, err := net.Dial("unix", filepath.Join(dir, "agent.sock"))
	if err != nil {
		fmt.Println("dial agent:", err)
		os.Exit(1)
	}
	ag := sshagent.NewClient(ac)
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", filepath.Join(dir, "api.sock"))
	}}}
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		agentResult := "ok"
		if _, err := ag.List(); err != nil {
			agentResult = "refused"
		}
		var reused bool
		trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}
		req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, "http://mwid/v1/status", nil)
		status := 0
		if res, err := hc.Do(req); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			status = res.StatusCode
		}
		fmt.Printf("agent=%s api=%d reused=%v\n", agentResult, status, reused)
	}
	os.Exit(0)
}

// TestCallersRecheckedOnOpenConnections checks, with real sockets and a
// client running as nobody, that a reload that removes nobody from the
// allow lists refuses its next request on the agent connection and on the
// HTTP keep-alive connection it already holds.
func TestCallersRecheckedOnOpenConnections(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run a client as another user")
	}
	nobody, err := user.Lookup("nobody")
	if err != nil {
		t.Skip("no user nobody")
	}
	uid, _ := strconv.ParseUint(nobody.Uid, 10, 32)
	gid, _ := strconv.ParseUint(nobody.Gid, 10, 32)
	dir, bin := helperDir(t, "mwipeer")

	cfgPath := writeConfig(t, dir, "    allow: {users: [nobody]}\n")
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, mustLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The servers as Run builds them, on sockets that nobody can reach.
	listen := func(path string) net.Listener {
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, 0o666)
		return ln
	}
	agentLn := listen(cfg.AgentSocket.Path)
	go s.newAgentServer().Serve(ctx, agentLn)
	apiSrv := &http.Server{
		Handler: localapi.Routes(backend{s, s.ssh}, s.metrics.Handler(), s.log,
			s.requirePeer(func(c *config.Config) config.Socket { return c.APISocket })),
		ConnContext: apiConnContext,
	}
	go apiSrv.Serve(s.apiListener(listen(cfg.APISocket.Path)))
	defer apiSrv.Close()

	cmd := exec.Command(bin, "-test.run=^TestPeerHelper$")
	cmd.Env = []string{peerHelperEnv + "=" + dir}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	out := bufio.NewScanner(stdout)
	ask := func() string {
		fmt.Fprintln(stdin, "go")
		if !out.Scan() {
			t.Fatalf("the helper said nothing; stderr:\n%s", stderr.String())
		}
		return out.Text()
	}

	if got, want := ask(), "agent=ok api=200 reused=false"; got != want {
		t.Fatalf("nobody, allowed: %q; want %q", got, want)
	}
	if got, want := ask(), "agent=ok api=200 reused=true"; got != want {
		t.Fatalf("nobody, allowed, again: %q; want %q", got, want)
	}
	writeConfig(t, dir, "")
	if _, err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if got, want := ask(), "agent=refused api=403 reused=true"; got != want {
		t.Errorf("nobody on its open connections after the reload: %q; want %q", got, want)
	}
}

func mustLogger(t *testing.T) *logging.Logger {
	t.Helper()
	log, err := logging.New(io.Discard, "text", "debug")
	if err != nil {
		t.Fatal(err)
	}
	return log
}

// TestRefusalsLogBounded checks that refused callers, whose number the
// caller decides, cost a few log lines a second, not one each.
func TestRefusalsLogBounded(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Load(writeConfig(t, dir, ""))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	s := &Server{log: slog.New(slog.NewTextHandler(&buf, nil))}
	s.conf.Store(cfg)
	check := s.checkPeer("agent", func(c *config.Config) config.Socket { return c.AgentSocket })
	for range 1000 {
		if _, err := check(unixsock.Peer{UID: 4242, GID: 4242}); err == nil {
			t.Fatal("a stranger was allowed")
		}
	}
	if n := bytes.Count(buf.Bytes(), []byte("\n")); n == 0 || n > 2*logging.LimitBurst {
		t.Errorf("1000 refusals logged %d lines; want a few", n)
	}
}

// helperDir makes a directory that other users can enter, removed when the
// test ends, holding a copy of this test binary (the build directory
// admits only root), for tests that run it as another user; it returns
// the directory and the copy's path.
func helperDir(t *testing.T, prefix string) (dir, bin string) {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin = filepath.Join(dir, "helper.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir, bin
}
