package agent

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	stdlog "log"
	"log/slog"
	"net"
	"os"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/internal/connlimit"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/logtest"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// rawDial connects to the agent at path without a client, with a deadline
// that only keeps a broken test from hanging.
func rawDial(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c
}

// hungUp reports whether the server closed c: a read finds the end of the
// connection rather than waiting.
func hungUp(c net.Conn) error {
	var b [1]byte
	n, err := c.Read(b[:])
	switch {
	case n == 0 && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)):
		return nil
	case err != nil:
		return fmt.Errorf("read %d bytes, %v; want the server to hang up", n, err)
	}
	return fmt.Errorf("read %d bytes; want the server to hang up", n)
}

// unknownRequest is a request of size bytes in all that the agent answers
// with SSH_AGENT_FAILURE: an unknown message type, padded.
func unknownRequest(size int) []byte {
	msg := make([]byte, size)
	msg[0] = 200
	return frame(msg)
}

func newServerForTest(t *testing.T, srv *Server) (path string, log *logtest.Buffer) {
	t.Helper()
	ca := newCA(t)
	srv.Agent = New(newSource(newIdentity(t, ca, "held", t0-60, t0+3600)), newClock(t0).now)
	log = new(logtest.Buffer)
	srv.Log = slog.New(slog.NewTextHandler(log, nil))
	srv.init() // before Serve, so that tests may look at its counters
	return serve(t, srv), log
}

// TestRequestTooLarge checks that a length beyond MaxRequest ends the
// connection at once, before the server allocates it: eight connections
// announcing 16 MiB each (the most x/crypto's ServeAgent would read) cost
// the server next to nothing, and each is closed without its body sent.
func TestRequestTooLarge(t *testing.T) {
	path, log := newServerForTest(t, &Server{})
	listedIDs(t, dial(t, path)) // the server's own setup is done

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := range 8 {
		c := rawDial(t, path)
		if _, err := c.Write(binary.BigEndian.AppendUint32(nil, 16<<20)); err != nil {
			t.Fatal(err)
		}
		if err := hungUp(c); err != nil {
			t.Fatalf("connection %d, after a length of 16 MiB: %v", i, err)
		}
	}
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 1<<20 {
		t.Errorf("eight refused 16 MiB requests allocated %d bytes; want far less than one of them", grown)
	}
	want := fmt.Sprintf("request larger than %d bytes: %d bytes announced", MaxRequest, 16<<20)
	if !strings.Contains(log.String(), want) || !strings.Contains(log.String(), fmt.Sprintf("uid=%d", os.Geteuid())) {
		t.Errorf("log does not name the refusal (%q) and the caller:\n%s", want, log)
	}
}

// TestRequestSizes checks the bound itself: up to MaxRequest a request is
// read and answered on the same connection, past it the connection ends.
func TestRequestSizes(t *testing.T) {
	path, _ := newServerForTest(t, &Server{})
	failure := frame([]byte{5}) // SSH_AGENT_FAILURE
	for _, size := range []int{1, LargeRequest, LargeRequest + 1, MaxRequest} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			c := rawDial(t, path)
			if _, err := c.Write(unknownRequest(size)); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(failure))
			if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, failure) {
				t.Fatalf("reply to a request of %d bytes = %x, %v; want SSH_AGENT_FAILURE", size, got, err)
			}
			if got := listedIDs(t, sshagent.NewClient(c)); len(got) != 1 {
				t.Errorf("the same connection then listed %v; want one key", got)
			}
		})
	}
	t.Run(fmt.Sprint(MaxRequest+1), func(t *testing.T) {
		c := rawDial(t, path)
		c.Write(unknownRequest(MaxRequest + 1)[:4])
		if err := hungUp(c); err != nil {
			t.Fatal(err)
		}
	})
}

// eventually polls cond until it holds, for a state of the server that a
// client cannot see directly; the limit only keeps a broken test from
// hanging.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 10s", what)
		}
	}
}

// TestLargeRequestSlots checks that requests above LargeRequest are read
// only a few at a time: with every slot held by a connection in the middle
// of one, another is refused, while small requests are still served.
func TestLargeRequestSlots(t *testing.T) {
	srv := &Server{}
	path, log := newServerForTest(t, srv)
	req := unknownRequest(LargeRequest + 1)
	holders := make([]net.Conn, largeSlots)
	for i := range holders {
		holders[i] = rawDial(t, path)
		holders[i].Write(req[:100]) // the length, and a little of the body
	}
	eventually(t, "every large slot taken", func() bool { return len(srv.large) == largeSlots })

	extra := rawDial(t, path)
	extra.Write(req[:100])
	if err := hungUp(extra); err != nil {
		t.Fatalf("a large request with every slot taken: %v", err)
	}
	if !strings.Contains(log.String(), "too many requests larger than") {
		t.Errorf("refusal not logged:\n%s", log)
	}
	if got := listedIDs(t, dial(t, path)); len(got) != 1 {
		t.Errorf("a small request meanwhile listed %v; want one key", got)
	}

	// A holder completes its request: its slot is free again once the
	// server waits for its next request.
	holders[0].Write(req[100:])
	reply := make([]byte, 5)
	if _, err := io.ReadFull(holders[0], reply); err != nil {
		t.Fatal(err)
	}
	eventually(t, "a slot freed", func() bool { return len(srv.large) == largeSlots-1 })
	again := rawDial(t, path)
	again.Write(req)
	if _, err := io.ReadFull(again, reply); err != nil {
		t.Fatalf("a large request once a slot is free: %v", err)
	}
}

// TestRequestTimeout checks that a connection is closed when a request it
// began does not arrive whole in time, and that an idle connection is not.
func TestRequestTimeout(t *testing.T) {
	path, log := newServerForTest(t, &Server{RequestTimeout: 100 * time.Millisecond})
	idle := dial(t, path)
	for _, tt := range []struct {
		name string
		send []byte
	}{
		{"part of the length", []byte{0, 0}},
		{"part of the body", unknownRequest(100)[:50]},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := rawDial(t, path)
			c.Write(tt.send)
			if err := hungUp(c); err != nil {
				t.Fatal(err)
			}
		})
	}
	if !strings.Contains(log.String(), "i/o timeout") {
		t.Errorf("the timeouts were not logged:\n%s", log)
	}
	// idle connected before either stalled request began, and said
	// nothing since: it is still served.
	if got := listedIDs(t, idle); len(got) != 1 {
		t.Errorf("the idle connection listed %v; want one key", got)
	}
}

// TestConnectionLimits checks the bounds on open connections, in all and
// per user (the tests' connections are all of one user).
func TestConnectionLimits(t *testing.T) {
	tests := []struct {
		name string
		srv  *Server
	}{
		{"per user", &Server{Limits: &connlimit.Limits{PerUID: 2}}},
		{"in all", &Server{Limits: &connlimit.Limits{Max: 2, PerUID: 100}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path, log := newServerForTest(t, tt.srv)
			first, second := rawDial(t, path), rawDial(t, path)
			for _, c := range []net.Conn{first, second} {
				if got := listedIDs(t, sshagent.NewClient(c)); len(got) != 1 {
					t.Fatalf("listed %v; want one key", got)
				}
			}
			if err := hungUp(rawDial(t, path)); err != nil {
				t.Fatalf("a connection beyond the bound: %v", err)
			}
			if want := fmt.Sprintf("uid=%d", os.Geteuid()); !strings.Contains(log.String(), "connection refused") || !strings.Contains(log.String(), want) {
				t.Errorf("refusal not logged with the caller (%s):\n%s", want, log)
			}
			// Once one closes, a new connection is served.
			first.Close()
			eventually(t, "a connection closed", func() bool { return tt.srv.Limits.Open() == 1 })
			if got := listedIDs(t, dial(t, path)); len(got) != 1 {
				t.Errorf("after a close, listed %v; want one key", got)
			}
		})
	}
}

// TestCheckBeforeCounting checks that Check decides before a connection
// counts against Limits: a refused caller never holds a place, so callers
// the policy refuses cannot take the places of those it allows.
func TestCheckBeforeCounting(t *testing.T) {
	var refuse atomic.Bool
	openAtCheck := make(chan int, 100)
	srv := &Server{Limits: &connlimit.Limits{Max: 2, PerUID: 2}}
	srv.Check = func(p unixsock.Peer) (func() error, error) {
		openAtCheck <- srv.Limits.Open()
		if refuse.Load() {
			return nil, fmt.Errorf("uid %d is not allowed", p.UID)
		}
		return nil, nil
	}
	path, log := newServerForTest(t, srv)
	held := dial(t, path)
	if got := listedIDs(t, held); len(got) != 1 {
		t.Fatalf("listed %v; want one key", got)
	}
	if n := <-openAtCheck; n != 0 {
		t.Errorf("the first connection was counted before its check: %d open", n)
	}
	refuse.Store(true)
	for range 10 {
		if err := hungUp(rawDial(t, path)); err != nil {
			t.Fatalf("a refused caller: %v", err)
		}
		if n := <-openAtCheck; n != 1 {
			t.Fatalf("a refused connection was counted before its check: %d open; want 1", n)
		}
	}
	if !strings.Contains(log.String(), "is not allowed") {
		t.Errorf("refusal not logged:\n%s", log)
	}
	refuse.Store(false)
	if got := listedIDs(t, dial(t, path)); len(got) != 1 {
		t.Errorf("an allowed caller after the refused ones listed %v; want one key", got)
	}
}

// TestRecheck checks that the check Check returns runs before every
// request, so that a caller refused after it connected (a reload that
// narrowed who is allowed) is refused on the connection it holds.
func TestRecheck(t *testing.T) {
	var allow atomic.Bool
	allow.Store(true)
	var seen atomic.Uint32
	srv := &Server{Check: func(p unixsock.Peer) (func() error, error) {
		seen.Store(p.UID)
		return func() error {
			if !allow.Load() {
				return fmt.Errorf("uid %d is no longer allowed", p.UID)
			}
			return nil
		}, nil
	}}
	path, log := newServerForTest(t, srv)
	c := rawDial(t, path)
	client := sshagent.NewClient(c)
	for range 3 {
		if got := listedIDs(t, client); len(got) != 1 {
			t.Fatalf("listed %v; want one key", got)
		}
	}
	if seen.Load() != uint32(os.Geteuid()) {
		t.Errorf("Check saw uid %d; want this process's, %d", seen.Load(), os.Geteuid())
	}

	allow.Store(false)
	if _, err := client.List(); err == nil {
		t.Fatal("List succeeded after the caller was refused")
	}
	if err := hungUp(c); err != nil {
		t.Error(err)
	}
	if !strings.Contains(log.String(), "is no longer allowed") {
		t.Errorf("refusal not logged:\n%s", log)
	}
}

// scriptConn is a connection that reads from r and has no deadlines.
type scriptConn struct {
	net.Conn
	r io.Reader
}

func (c *scriptConn) Read(p []byte) (int, error)      { return c.r.Read(p) }
func (c *scriptConn) SetDeadline(time.Time) error     { return nil }
func (c *scriptConn) SetReadDeadline(time.Time) error { return nil }

// TestFrameConnAllocs checks that bounding frames costs no allocation per
// request, the recheck included.
func TestFrameConnAllocs(t *testing.T) {
	msg := unknownRequest(64)
	r := bytes.NewReader(nil)
	fc := &frameConn{
		Conn:    &scriptConn{r: r},
		recheck: func() error { return nil },
		large:   make(chan struct{}, 1),
		timeout: time.Second,
	}
	var hdr [4]byte
	body := make([]byte, 64)
	allocs := testing.AllocsPerRun(100, func() {
		r.Reset(msg)
		if _, err := io.ReadFull(fc, hdr[:]); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(fc, body); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per request; want 0", allocs)
	}
}

// TestLogWriter checks that the lines x/crypto's agent server writes for
// failed requests, whose number a client decides, are bounded.
func TestLogWriter(t *testing.T) {
	var buf logtest.Buffer
	w := LogWriter(slog.New(slog.NewTextHandler(&buf, nil)))
	stdlog := stdlog.New(w, "", 0)
	for i := range 1000 {
		stdlog.Printf("agent 200: unknown opcode 200 (%d)", i)
	}
	lines := strings.Count(buf.String(), "\n")
	if lines == 0 || lines > 2*logging.LimitBurst {
		t.Errorf("1000 lines in a burst logged %d; want a few:\n%s", lines, buf.String())
	}
	if !strings.Contains(buf.String(), `msg="agent 200: unknown opcode 200 (0)"`) {
		t.Errorf("the first line is not logged as it was written:\n%s", buf.String())
	}
}
