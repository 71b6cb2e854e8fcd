package connlimit

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestLimits(t *testing.T) {
	l := &Limits{Max: 3, PerUID: 2}
	steps := []struct {
		admit, leave uint32
		isLeave      bool
		ok           bool
	}{
		{admit: 1, ok: true},
		{admit: 1, ok: true},
		{admit: 1, ok: false}, // uid 1 at its bound
		{admit: 2, ok: true},
		{admit: 3, ok: false}, // three open in all
		{isLeave: true, leave: 1},
		{admit: 3, ok: true},
		{admit: 1, ok: false}, // in all again
	}
	for i, s := range steps {
		if s.isLeave {
			l.Leave(s.leave)
			continue
		}
		if err := l.Admit(s.admit); (err == nil) != s.ok {
			t.Errorf("step %d: Admit(%d) = %v, want ok=%v", i, s.admit, err, s.ok)
		}
	}
	if n := l.Open(); n != 3 {
		t.Errorf("Open = %d, want 3", n)
	}
}

func TestZeroLimitsUseDefaults(t *testing.T) {
	var l Limits
	for i := range DefaultPerUID {
		if err := l.Admit(7); err != nil {
			t.Fatalf("connection %d of one user: %v", i, err)
		}
	}
	if err := l.Admit(7); err == nil {
		t.Errorf("connection %d of one user admitted", DefaultPerUID+1)
	}
	if err := l.Admit(8); err != nil {
		t.Errorf("another user refused: %v", err)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// TestListener checks the bound on a real socket: a connection beyond it
// is closed and logged with its caller, and closing an admitted one (even
// twice) gives back its place once.
func TestListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var log syncBuffer
	limits := &Limits{PerUID: 1}
	l := &Listener{Listener: ln, Limits: limits, Log: slog.New(slog.NewTextHandler(&log, nil)), Name: "test"}
	accepted := make(chan net.Conn)
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
