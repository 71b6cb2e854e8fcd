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
// would otherwise be a line in the journal. Warn counts each message apart,
// so that a flood of one kind of line does not hide another. The zero
// value is ready to use.
type Limit struct {
	mu    sync.Mutex
	one   window             // for Allow
	byMsg map[string]*window // for Warn, by message (constants in the code)
}

// window counts the lines of one stream in the current second.
type window struct {
	start   time.Time // of the current second
	n       int       // lines allowed in it
	dropped int       // lines refused since the last allowed
}

func (w *window) allow(now time.Time) (ok bool, dropped int) {
	if now.Sub(w.start) >= time.Second {
		w.start, w.n = now, 0
	}
	if w.n >= LimitBurst {
		w.dropped++
		return false, 0
	}
	w.n++
	dropped, w.dropped = w.dropped, 0
	return true, dropped
}

// Allow reports whether a line at now may be logged, and how many were
// refused since the last one allowed, which that line should say.
func (l *Limit) Allow(now time.Time) (ok bool, dropped int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.one.allow(now)
}

// Warn logs msg at warning level to log if l allows another line of msg
// now; the line says how many of msg were suppressed before it.
func (l *Limit) Warn(log *slog.Logger, msg string, args ...any) {
	l.WarnAt(time.Now(), log, msg, args...)
}

// WarnAt is Warn for a line at now, for callers with their own clock.
func (l *Limit) WarnAt(now time.Time, log *slog.Logger, msg string, args ...any) {
	l.mu.Lock()
	if l.byMsg == nil {
		l.byMsg = make(map[string]*window)
	}
	w, found := l.byMsg[msg]
	if !found {
		w = new(window)
		l.byMsg[msg] = w
	}
	ok, dropped := w.allow(now)
	l.mu.Unlock()
	if !ok {
		return
	}
	if dropped > 0 {
		args = append(args, "suppressed", dropped)
	}
	log.Warn(msg, args...)
}
