package daemon

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/internal/connlimit"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/logtest"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// connHelperEnv makes the test binary, run as another user, the client of
// TestAPIConnectionsOfOthers (see TestConnHelper).
const connHelperEnv = "MWI_TEST_CONN_HELPER"

// TestConnHelper is the client that TestConnectionsOfOthers runs as
// other users; it does nothing in a normal test run. Given "SOCKET PATH N"
// (SOCKET is api or agent), it opens N connections to the socket PATH and
// holds them, asks one request on each, prints "closed=C" with the number
// that the server closed instead of answering, and waits for stdin to
// close.
func TestConnHelper(t *testing.T) {
	args := strings.Fields(os.Getenv(connHelperEnv))
	if len(args) != 3 {
		return
	}
	n, _ := strconv.Atoi(args[2])
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("unix", args[1])
		if err != nil {
			fmt.Println("dial:", err)
			os.Exit(1)
		}
		conns = append(conns, c)
	}
	closed := 0
	for _, c := range conns {
		if askOnce(c, args[0]) != nil {
			closed++
		}
	}
	fmt.Printf("closed=%d\n", closed)
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}

// askOnce asks one request on a connection to the socket named, and
// returns an error if the server closed it instead of answering.
func askOnce(c net.Conn, socket string) error {
	c.SetDeadline(time.Now().Add(30 * time.Second)) // only against a hang
	defer c.SetDeadline(time.Time{})
	if socket == "agent" {
		// SSH_AGENTC_REQUEST_IDENTITIES, and the length of the answer.
		if _, err := c.Write([]byte{0, 0, 0, 1, 11}); err != nil {
			return err
		}
		var hdr [4]byte
		if _, err := io.ReadFull(c, hdr[:]); err != nil {
			return err
		}
		_, err := io.CopyN(io.Discard, c, int64(binary.BigEndian.Uint32(hdr[:])))
		return err
	}
	if _, err := io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: mwid\r\n\r\n"); err != nil {
		return err
	}
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return err
	}
	res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d", res.StatusCode)
	}
	return nil
}

// TestConnectionsOfOthers checks, with real sockets and clients running
// as other users, the bounds of the API and agent sockets against users
// their mode lets connect: a user the allow list refuses (nobody, 65534)
// opening 2000 connections holds none of them and takes nothing from an
// allowed user, and two allowed users at their bounds still leave room
// for root.
func TestConnectionsOfOthers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run clients as other users")
	}
	const (
		nobody = 65534
		alice  = 60001
		bob    = 60002
		carol  = 60003
	)
	dir, bin := helperDir(t, "mwiconn")
	cfg, err := config.Load(writeConfig(t, dir, ""))
	if err != nil {
		t.Fatal(err)
	}
	cfg.APISocket.AllowUIDs = []uint32{alice, bob, carol}
	cfg.AgentSocket.AllowUIDs = []uint32{alice, bob, carol}
	var logBuf logtest.Buffer
	log, err := logging.New(&logBuf, "text", "info")
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	s.apiLimits = &connlimit.Limits{Max: 40, PerUID: 16, Reserved: 8}
	s.agentLimits = &connlimit.Limits{Max: 40, PerUID: 16, Reserved: 8}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The servers as Run builds them, on sockets every user can reach.
	listen := func(path string) net.Listener {
		ln, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		os.Chmod(path, 0o666)
		return ln
	}
	apiSrv := &http.Server{
		Handler: localapi.Routes(backend{s, s.ssh}, s.metrics.Handler(), s.log,
			s.requirePeer(func(c *config.Config) config.Socket { return c.APISocket })),
		ConnContext: apiConnContext,
	}
	go apiSrv.Serve(s.apiListener(listen(cfg.APISocket.Path)))
	defer apiSrv.Close()
	go s.newAgentServer().Serve(ctx, listen(cfg.AgentSocket.Path))

	for _, tt := range []struct {
		socket string
		path   string
		limits *connlimit.Limits
	}{
		{"api", cfg.APISocket.Path, s.apiLimits},
		{"agent", cfg.AgentSocket.Path, s.agentLimits},
	} {
		t.Run(tt.socket, func(t *testing.T) {
			// connect runs the helper as uid, opening n connections that
			// it holds until the test ends, and returns how many the
			// server closed.
			connect := func(uid uint32, n int) int {
				t.Helper()
				cmd := exec.Command(bin, "-test.run=^TestConnHelper$")
				cmd.Env = []string{fmt.Sprintf("%s=%s %s %d", connHelperEnv, tt.socket, tt.path, n)}
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
				stdin, _ := cmd.StdinPipe()
				stdout, _ := cmd.StdoutPipe()
				var stderr bytes.Buffer
				cmd.Stderr = &stderr
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() {
					stdin.Close()
					cmd.Wait()
				})
				out := bufio.NewScanner(stdout)
				if !out.Scan() {
					t.Fatalf("the helper as uid %d said nothing; stderr:\n%s", uid, stderr.String())
				}
				closed, ok := strings.CutPrefix(out.Text(), "closed=")
				if !ok {
					t.Fatalf("the helper as uid %d: %s", uid, out.Text())
				}
				c, _ := strconv.Atoi(closed)
				return c
			}

			before := strings.Count(logBuf.String(), "caller refused")
			if closed := connect(nobody, 2000); closed != 2000 {
				t.Errorf("nobody, refused by the allow list: %d of 2000 connections closed; want all", closed)
			}
			if n := tt.limits.Open(); n != 0 {
				t.Errorf("after nobody's 2000 connections, %d counted; want 0", n)
			}
			// A few lines, or none if the other socket's refusals used
			// this second's lines (the limit counts by message): the
			// total is checked after both.
			if n := strings.Count(logBuf.String(), "caller refused") - before; n > 2*logging.LimitBurst {
				t.Errorf("2000 refusals logged %d lines; want a few", n)
			}
			// Allowed users get their whole bound, and the reserve is left.
			if closed := connect(alice, 20); closed != 20-16 {
				t.Errorf("alice: %d of 20 connections closed; want the 4 past her bound", closed)
			}
			if closed := connect(bob, 16); closed != 0 {
				t.Errorf("bob: %d of 16 connections closed; want none", closed)
			}
			if closed := connect(carol, 1); closed != 1 {
				t.Errorf("carol, with only the reserve left: %d of 1 connections closed; want it closed", closed)
			}
			// Root still gets in, and is served.
			c, err := net.Dial("unix", tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := askOnce(c, tt.socket); err != nil {
				t.Errorf("root, with two users at their bounds: %v", err)
			}
			if n := tt.limits.Open(); n != 16+16+1 {
				t.Errorf("%d connections counted; want alice's 16, bob's 16 and root's", n)
			}
		})
	}
	if n := strings.Count(logBuf.String(), "caller refused"); n == 0 || n > 4*logging.LimitBurst {
		t.Errorf("4000 refusals logged %d lines; want a few", n)
	}
}

// TestAnsweredConnectionRefused checks that an API connection refused when
// it connected, and kept only to be told why, gets 403 even if the
// configuration now allows its caller: it counts against no bound, and
// must not be served.
func TestAnsweredConnectionRefused(t *testing.T) {
	dir := t.TempDir()
	cfg, err := config.Load(writeConfig(t, dir, ""))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(cfg, mustLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", cfg.APISocket.Path)
	if err != nil {
		t.Fatal(err)
	}
	// This process's user is always allowed by the configuration: only
	// the listener refused it, as it would have refused another user
	// before a reload.
	limited := &connlimit.Listener{Listener: ln, Limits: s.apiLimits, Answer: 1,
		Check: func(p unixsock.Peer) error { return fmt.Errorf("uid %d is not allowed", p.UID) }}
	apiSrv := &http.Server{
		Handler: localapi.Routes(backend{s, s.ssh}, s.metrics.Handler(), s.log,
			s.requirePeer(func(c *config.Config) config.Socket { return c.APISocket })),
		ConnContext: apiConnContext,
	}
	go apiSrv.Serve(limited)
	defer apiSrv.Close()
	c, err := net.Dial("unix", cfg.APISocket.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := askOnce(c, "api"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("a connection refused when it connected: %v; want status 403", err)
	}
	if n := s.apiLimits.Open(); n != 0 {
		t.Errorf("%d connections counted; want 0", n)
	}
}
