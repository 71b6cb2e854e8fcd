package sdnotify

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// listener is a stand-in for systemd's notify socket.
type listener struct {
	conn *net.UnixConn
	msgs chan string
}

// listen binds a datagram socket, at a path in a temporary directory or,
// if name starts with '@', in the abstract namespace, points
// $NOTIFY_SOCKET at it, and collects what arrives.
func listen(t *testing.T, name string) *listener {
	t.Helper()
	if name == "" {
		name = filepath.Join(t.TempDir(), "notify.sock")
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	l := &listener{conn: conn, msgs: make(chan string, 100)}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(l.msgs)
				return
			}
			l.msgs <- string(buf[:n])
		}
	}()
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", name)
	return l
}

// next returns the next datagram, failing if none arrives within a second.
func (l *listener) next(t *testing.T) string {
	t.Helper()
	select {
	case m := <-l.msgs:
		return m
	case <-time.After(time.Second):
		t.Fatal("no notification arrived")
		return ""
	}
}

// none fails if a datagram arrives within d.
func (l *listener) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-l.msgs:
		t.Fatalf("unexpected notification %q", m)
	case <-time.After(d):
	}
}

func TestMessages(t *testing.T) {
	tests := []struct {
		name string
		send func() error
		want string
	}{
		{"ready", Ready, "READY=1"},
		{"stopping", Stopping, "STOPPING=1"},
		{"status", func() error { return Status("ready: bot ci, 3 certificates") }, "STATUS=ready: bot ci, 3 certificates"},
		{"status is one line", func() error { return Status("renewal failed:\nissuer down\r\nretrying") }, "STATUS=renewal failed: issuer down retrying"},
		{"several assignments", func() error { return Send("READY=1", "STATUS=up") }, "READY=1\nSTATUS=up"},
	}
	for _, socket := range []string{"path", "abstract"} {
		t.Run(socket, func(t *testing.T) {
			name := ""
			if socket == "abstract" {
				name = fmt.Sprintf("@mwi-sdnotify-test-%d-%d", os.Getpid(), time.Now().UnixNano())
			}
			l := listen(t, name)
			for _, tt := range tests {
				if err := tt.send(); err != nil {
					t.Fatalf("%s: %v", tt.name, err)
				}
				if got := l.next(t); got != tt.want {
					t.Errorf("%s: sent %q, want %q", tt.name, got, tt.want)
				}
			}
		})
	}
}

func TestReloadingMonotonic(t *testing.T) {
	l := listen(t, "")
	before := clockMonotonic(t)
	if err := Reloading(); err != nil {
		t.Fatal(err)
	}
	after := clockMonotonic(t)
	got := l.next(t)
	lines := strings.Split(got, "\n")
	if len(lines) != 2 || lines[0] != "RELOADING=1" || !strings.HasPrefix(lines[1], "MONOTONIC_USEC=") {
		t.Fatalf("sent %q, want RELOADING=1 and MONOTONIC_USEC=<usec>", got)
	}
	usec, err := strconv.ParseInt(strings.TrimPrefix(lines[1], "MONOTONIC_USEC="), 10, 64)
	if err != nil {
		t.Fatalf("MONOTONIC_USEC: %v", err)
	}
	// CLOCK_MONOTONIC, in microseconds, read between the two readings
	// around the call: not wall-clock time, not nanoseconds.
	if usec < before || usec > after {
		t.Errorf("MONOTONIC_USEC=%d, want between %d and %d", usec, before, after)
	}
}

func clockMonotonic(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1e3
}

func TestNoSocketIsNoOp(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000")
	for _, f := range []func() error{Ready, Reloading, Stopping, func() error { return Status("x") }} {
		if err := f(); err != nil {
			t.Errorf("without NOTIFY_SOCKET: %v", err)
		}
	}
	done := make(chan struct{})
	go func() {
		Watchdog(context.Background(), func() bool { return true })
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Watchdog without NOTIFY_SOCKET did not return")
	}
}

func TestSendErrors(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "vsock:2:1234")
	if err := Ready(); err == nil {
		t.Error("Ready with a vsock NOTIFY_SOCKET: no error")
	}
	t.Setenv("NOTIFY_SOCKET", filepath.Join(t.TempDir(), "absent.sock"))
	if err := Ready(); err == nil {
		t.Error("Ready with no socket listening: no error")
	}
}

// TestWatchdogCadence checks that Watchdog ticks at half of systemd's
// interval, so that one late keep-alive is not yet a missed deadline, and
// sends WATCHDOG=1 at each tick only while alive. The ticks are driven by
// the test, so that no timing of this machine is asserted.
func TestWatchdogCadence(t *testing.T) {
	l := listen(t, "")
	const interval = 100 * time.Millisecond
	t.Setenv("WATCHDOG_USEC", strconv.Itoa(int(interval/time.Microsecond)))
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	if d, ok := WatchdogInterval(); !ok || d != interval {
		t.Fatalf("WatchdogInterval() = %s, %v; want %s, true", d, ok, interval)
	}
	ticks := make(chan time.Time)
	period := make(chan time.Duration, 1)
	stopped := make(chan struct{})
	defer func(orig func(time.Duration) (<-chan time.Time, func())) { newTicker = orig }(newTicker)
	newTicker = func(d time.Duration) (<-chan time.Time, func()) {
		period <- d
		return ticks, func() { close(stopped) }
	}
	var alive atomic.Bool
	alive.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		Watchdog(ctx, alive.Load)
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()

	if d := <-period; d != interval/2 {
		t.Errorf("keep-alives every %s, want %s", d, interval/2)
	}
	// While alive: one WATCHDOG=1 at the start and one at each tick.
	for i := range 5 {
		if m := l.next(t); m != "WATCHDOG=1" {
			t.Fatalf("keep-alive %d: sent %q, want WATCHDOG=1", i, m)
		}
		ticks <- time.Now()
	}
	if m := l.next(t); m != "WATCHDOG=1" {
		t.Fatalf("last keep-alive: sent %q, want WATCHDOG=1", m)
	}

	// Not alive: ticks send nothing.
	alive.Store(false)
	for range 3 {
		ticks <- time.Now()
	}
	l.none(t, 100*time.Millisecond)

	// Alive again: they resume.
	alive.Store(true)
	ticks <- time.Now()
	if m := l.next(t); m != "WATCHDOG=1" {
		t.Fatalf("after alive again: sent %q, want WATCHDOG=1", m)
	}

	// A cancelled context stops the loop and its ticker.
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Watchdog did not return after its context was cancelled")
	}
	<-stopped
	drain(l)
	l.none(t, 100*time.Millisecond)
}

func TestWatchdogNotForThisProcess(t *testing.T) {
	tests := map[string]struct{ usec, pid string }{
		"other pid":     {"100000", strconv.Itoa(os.Getpid() + 1)},
		"bad pid":       {"100000", "x"},
		"no usec":       {"", ""},
		"bad usec":      {"soon", ""},
		"zero usec":     {"0", ""},
		"negative usec": {"-5", ""},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			l := listen(t, "")
			t.Setenv("WATCHDOG_USEC", tt.usec)
			t.Setenv("WATCHDOG_PID", tt.pid)
			if _, ok := WatchdogInterval(); ok {
				t.Fatal("WatchdogInterval says enabled")
			}
			done := make(chan struct{})
			go func() {
				Watchdog(context.Background(), func() bool { return true })
				close(done)
			}()
			select {
			case <-done:
			case <-time.After(time.Second):
				t.Fatal("Watchdog did not return")
			}
			l.none(t, 100*time.Millisecond)
		})
	}
}

func drain(l *listener) {
	for {
		select {
		case <-l.msgs:
		default:
			return
		}
	}
}
