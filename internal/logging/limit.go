package logging

import (
	"log/slog"
	"sync"
	"time"
)

// LimitBurst is how many lines a Limit allows in a second.
const LimitBurst = 10

// A Limit allows a few log lines a second, for events whose number someone
// else decides (a caller connecting, a client sending bad requests): each
// would otherwise be a line in the journal. The zero value is ready to use.
type Limit struct {
	mu      sync.Mutex
	start   time.Time // of the current second
	n       int       // lines allowed in it
	dropped int       // lines refused since the last allowed
}

// Allow reports whether a line at now may be logged, and how many were
// refused since the last one allowed, which that line should say.
func (l *Limit) Allow(now time.Time) (ok bool, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if now.Sub(l.start) >= time.Second {
		l.start, l.n = now, 0
	}
	if l.n >= LimitBurst {
		l.dropped++
		return false, 0
	}
	l.n++
	dropped, l.dropped = l.dropped, 0
	return true, dropped
}

// Warn logs msg at warning level to log if l allows a line now; the line
// says how many were suppressed before it.
func (l *Limit) Warn(log *slog.Logger, msg string, args ...any) {
	l.WarnAt(time.Now(), log, msg, args...)
}

// WarnAt is Warn for a line at now, for callers with their own clock.
func (l *Limit) WarnAt(now time.Time, log *slog.Logger, msg string, args ...any) {
	ok, dropped := l.Allow(now)
	if !ok {
		return
	}
	if dropped > 0 {
		args = append(args, "suppressed", dropped)
	}
	log.Warn(msg, args...)
}
