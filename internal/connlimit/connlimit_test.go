package connlimit

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mwi-project/mwi/internal/logtest"
	"github.com/mwi-project/mwi/internal/unixsock"
)

// Users for the tests: root and the process's own user, whom Limits keeps
// room for, and two others.
var (
	root  uint32 = 0
	owner        = self
	alice uint32 = 1000001
	bob   uint32 = 1000002
)

func TestLimits(t *testing.T) {
	type step struct {
		uid   uint32
		leave bool // give back a connection of uid instead
		ok    bool
	}
	tests := []struct {
		name   string
		limits *Limits
		steps  []step
	}{
		{"per user and in all", &Limits{Max: 3, PerUID: 2, Reserved: -1}, []step{
			{uid: alice, ok: true},
			{uid: alice, ok: true},
			{uid: alice, ok: false}, // alice at her bound
			{uid: bob, ok: true},
			{uid: 1000003, ok: false}, // three open in all
			{uid: alice, leave: true},
			{uid: 1000003, ok: true},
			{uid: alice, ok: false}, // in all again
			{uid: root, ok: false},  // nothing is kept for root
		}},
		{"others at their bounds leave the reserve to root and the owner", &Limits{Max: 6, PerUID: 2, Reserved: 2}, []step{
			{uid: alice, ok: true},
			{uid: alice, ok: true},
			{uid: bob, ok: true},
			{uid: bob, ok: true},
			{uid: 1000003, ok: false}, // only the reserve is left
			{uid: root, ok: true},
			{uid: owner, ok: true},
			{uid: root, ok: false}, // six open in all
			{uid: alice, leave: true},
			{uid: 1000003, ok: false}, // root and the owner count in all: five open
		}},
		{"root and the owner take the whole reserve and more", &Limits{Max: 4, PerUID: 4, Reserved: 2}, []step{
			{uid: root, ok: true},
			{uid: root, ok: true},
			{uid: root, ok: true},
			{uid: alice, ok: false}, // three open: the last place is kept
			{uid: owner, ok: true},
			{uid: owner, ok: false},
		}},
		{"a reserve of Max or more keeps every place", &Limits{Max: 2, Reserved: 5}, []step{
			{uid: alice, ok: false},
			{uid: root, ok: true},
			{uid: owner, ok: true},
			{uid: root, ok: false},
		}},
		{"the default reserve", &Limits{Max: DefaultReserved + 1}, []step{
			{uid: alice, ok: true},
			{uid: bob, ok: false},
			{uid: root, ok: true},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := tt.limits
			open := 0
			for i, s := range tt.steps {
				if s.leave {
					l.Leave(s.uid)
					open--
					continue
				}
				err := l.Admit(s.uid)
				if (err == nil) != s.ok {
					t.Fatalf("step %d: Admit(%d) = %v, want ok=%v", i, s.uid, err, s.ok)
				}
				if err == nil {
					open++
				}
			}
			if n := l.Open(); n != open {
				t.Errorf("Open = %d, want %d", n, open)
			}
		})
	}
}

func TestZeroLimitsUseDefaults(t *testing.T) {
	var l Limits
	for i := range DefaultPerUID {
		if err := l.Admit(alice); err != nil {
			t.Fatalf("connection %d of one user: %v", i, err)
		}
	}
	if err := l.Admit(alice); err == nil {
		t.Errorf("connection %d of one user admitted", DefaultPerUID+1)
	}
	for i := range DefaultMax - DefaultReserved - DefaultPerUID {
		if err := l.Admit(bob); err != nil {
			t.Fatalf("connection %d of another user: %v", i, err)
		}
	}
	if err := l.Admit(1000003); err == nil {
		t.Error("a third user was admitted into the reserve")
	}
	for i := range DefaultReserved {
		if err := l.Admit(root); err != nil {
			t.Fatalf("connection %d of root: %v", i, err)
		}
	}
	if err := l.Admit(root); err == nil {
		t.Errorf("connection %d in all admitted", DefaultMax+1)
	}
}

// TestListener checks the bound on a real socket: a connection beyond it
// is closed and logged with its caller, and closing an admitted one (even
// twice) gives back its place once.
func TestListener(t *testing.T) {
	ln, path := unixListener(t)
	var log logtest.Buffer
	limits := &Limits{PerUID: 1}
	l := &Listener{Listener: ln, Limits: limits, Log: slog.New(slog.NewTextHandler(&log, nil)), Name: "test"}
	accepted, dial := serve(t, l, path, 0)

	dial()
	first := <-accepted
	refused := dial()
	if n, err := refused.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
		t.Fatalf("a connection beyond the bound: read %d, %v; want it closed", n, err)
	}
	if want := "uid=" + strconv.Itoa(os.Geteuid()); !strings.Contains(log.String(), "connection refused") || !strings.Contains(log.String(), want) {
		t.Errorf("refusal not logged with %s:\n%s", want, log.String())
	}
	first.Close()
	first.Close()
	if n := limits.Open(); n != 0 {
		t.Fatalf("after closing the admitted connection twice, %d counted; want 0", n)
	}
	dial()
	(<-accepted).Close()
}

// TestListenerCheck checks that a caller Check refuses is closed before it
// is counted: however many times it connects, it never holds a place.
func TestListenerCheck(t *testing.T) {
	ln, path := unixListener(t)
	var log logtest.Buffer
	var refuse atomic.Bool
	limits := &Limits{Max: 2, PerUID: 2}
	l := &Listener{Listener: ln, Limits: limits, Log: slog.New(slog.NewTextHandler(&log, nil)), Name: "test",
		Check: func(p unixsock.Peer) error {
			if refuse.Load() {
				return fmt.Errorf("uid %d is not on the allow list", p.UID)
			}
			return nil
		}}
	accepted, dial := serve(t, l, path, 1)

	refuse.Store(true)
	for range 10 {
		c := dial()
		if n, err := c.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("a refused caller: read %d, %v; want it closed", n, err)
		}
		if n := limits.Open(); n != 0 {
			t.Fatalf("a refused caller is counted: %d open", n)
		}
	}
	if strings.Contains(log.String(), "not on the allow list") {
		t.Errorf("Check's refusal logged by the Listener too (Check reports its own):\n%s", log.String())
	}
	refuse.Store(false)
	for range 2 {
		dial()
		c := <-accepted
		if p := c.(*Conn).Peer(); p.UID != self {
			t.Errorf("Peer().UID = %d, want %d", p.UID, self)
		}
	}
	if n := limits.Open(); n != 2 {
		t.Errorf("%d open after two allowed callers; want 2", n)
	}
}

// TestListenerAnswer checks the connections a Listener returns to be told
// why they were refused: at most Answer at once, never counted against
// Limits, and the rest closed at once.
func TestListenerAnswer(t *testing.T) {
	ln, path := unixListener(t)
	limits := &Limits{Max: 1}
	l := &Listener{Listener: ln, Limits: limits, Answer: 1,
		Check: func(p unixsock.Peer) error { return errors.New("not on the allow list") }}
	accepted, dial := serve(t, l, path, 1)

	dial()
	answered := <-accepted
	if err := answered.(*Conn).Refused(); err == nil || !strings.Contains(err.Error(), "allow list") {
		t.Errorf("Refused() = %v; want Check's error", err)
	}
	if n := limits.Open(); n != 0 {
		t.Errorf("a refused connection to be answered is counted: %d open", n)
	}
	for range 3 {
		c := dial()
		if n, err := c.Read(make([]byte, 1)); n != 0 || !(errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET)) {
			t.Fatalf("a refused caller beyond Answer: read %d, %v; want it closed", n, err)
		}
	}
	answered.Close()
	dial()
	if c := <-accepted; c.(*Conn).Refused() == nil {
		t.Error("after the answered connection closed, the next refused one was not returned to be answered")
	}
}

// unixListener listens on a Unix socket in a temporary directory, closed
// when the test ends, and returns it with its path.
func unixListener(t *testing.T) (net.Listener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, path
}

// serve accepts l's connections into a channel of the given capacity,
// closed when Accept fails, and returns it with a function that dials
// path: each connection dialled is closed when the test ends.
func serve(t *testing.T, l *Listener, path string, capacity int) (<-chan net.Conn, func() net.Conn) {
	accepted := make(chan net.Conn, capacity)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second)) // only against a hang
		return c
	}
	return accepted, dial
}
