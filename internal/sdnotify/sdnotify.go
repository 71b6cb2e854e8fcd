// Package sdnotify tells systemd about a service's state over the notify
// protocol of sd_notify(3): ready, reloading, stopping, a status line, and
// watchdog keep-alives.
//
// Every function is a no-op when $NOTIFY_SOCKET is not set, that is, when
// the program does not run as a Type=notify systemd service, so callers
// notify unconditionally.
//
// The protocol is a single datagram of "KEY=VALUE" lines sent to the Unix
// socket named by $NOTIFY_SOCKET. Sending it takes a few lines, so it is
// written here rather than taken from github.com/coreos/go-systemd's
// daemon package; what mwid needs beyond sending, the MONOTONIC_USEC that
// Type=notify-reload wants with RELOADING=1 and the watchdog loop, is this
// package's either way.
package sdnotify

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Ready tells systemd that start-up, or a reload begun with Reloading, is
// complete.
func Ready() error { return Send("READY=1") }

// Reloading tells systemd that the service is reloading its configuration;
// call Ready when the reload is done, whether or not it succeeded. It sends
// the CLOCK_MONOTONIC time of the call in MONOTONIC_USEC, which systemd
// 253 and later require for Type=notify-reload to match the reload with
// the signal that asked for it.
func Reloading() error {
	return Send("RELOADING=1", "MONOTONIC_USEC="+strconv.FormatInt(monotonicUsec(), 10))
}

// Stopping tells systemd that the service is shutting down.
func Stopping() error { return Send("STOPPING=1") }

// Status sets the one-line status that systemctl status shows. Line breaks
// in s are replaced by spaces, since each line of a notification is a
// separate assignment.
func Status(s string) error {
	return Send("STATUS=" + strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s))
}

// Watchdog sends WATCHDOG=1 at half the interval systemd asks for in
// $WATCHDOG_USEC, each time only if alive returns true, until ctx is done.
// Pass a check that the program's main loop still answers: a hung program
// then stops sending, and systemd kills and restarts it (WatchdogSec= with
// Restart=). A call of alive that blocks delays the next keep-alive, which
// is what a hung main loop should do.
//
// Watchdog returns at once when the watchdog is not enabled: no
// $NOTIFY_SOCKET, no valid $WATCHDOG_USEC, or a $WATCHDOG_PID that is not
// this process (the variables were inherited from a parent service). It is
// meant to run in its own goroutine: go sdnotify.Watchdog(ctx, alive).
func Watchdog(ctx context.Context, alive func() bool) {
	interval, ok := WatchdogInterval()
	if !ok {
		return
	}
	ticks, stop := newTicker(interval / 2)
	defer stop()
	for {
		if alive() && ctx.Err() == nil {
			Send("WATCHDOG=1")
		}
		select {
		case <-ctx.Done():
			return
		case <-ticks:
		}
	}
}

// newTicker returns the ticks of Watchdog's keep-alives, every d, and the
// function that stops them; tests replace it to drive the ticks.
var newTicker = func(d time.Duration) (<-chan time.Time, func()) {
	t := time.NewTicker(d)
	return t.C, t.Stop
}

// WatchdogInterval returns the watchdog timeout systemd set for this
// process, and whether the watchdog is enabled for it.
func WatchdogInterval() (time.Duration, bool) {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return 0, false
	}
	usec, err := strconv.ParseInt(os.Getenv("WATCHDOG_USEC"), 10, 64)
	if err != nil || usec <= 0 {
		return 0, false
	}
	if p := os.Getenv("WATCHDOG_PID"); p != "" {
		if pid, err := strconv.Atoi(p); err != nil || pid != os.Getpid() {
			return 0, false
		}
	}
	return time.Duration(usec) * time.Microsecond, true
}

// Send sends the given assignments, such as "READY=1", as one
// notification. It returns nil without sending when $NOTIFY_SOCKET is not
// set.
func Send(assignments ...string) error {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return nil
	}
	// A path names a socket in the file system; a leading '@' names one in
	// Linux's abstract namespace, which Go's net package translates to the
	// leading NUL byte the kernel expects. Newer systemd can also name a
	// vsock address, which a service on this host is never given.
	if name[0] != '/' && name[0] != '@' {
		return fmt.Errorf("sdnotify: unsupported NOTIFY_SOCKET %q", name)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	defer c.Close()
	msg := strings.Join(assignments, "\n")
	n, err := c.Write([]byte(msg))
	if err == nil && n != len(msg) {
		err = errors.New("short write")
	}
	if err != nil {
		return fmt.Errorf("sdnotify: %w", err)
	}
	return nil
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, the clock systemd
// compares MONOTONIC_USEC with. Go's time package keeps a monotonic
// reading but does not expose its value.
func monotonicUsec() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0
	}
	return ts.Nano() / 1e3
}
