// Package logging builds the slog loggers of MWI's programs.
//
// A Logger's level and format can change while the program runs, so a
// configuration reload applies them without a restart.
package logging

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync/atomic"
)

// Logger is a *slog.Logger whose level and format can be changed.
type Logger struct {
	*slog.Logger
	w     io.Writer
	level slog.LevelVar
	inner atomic.Pointer[slog.Handler]
}

// New returns a logger writing to w in format "text" or "json" at level
// "debug", "info", "warn" or "error".
func New(w io.Writer, format, level string) (*Logger, error) {
	l := &Logger{w: w}
	if err := l.SetLevel(level); err != nil {
		return nil, err
	}
	if err := l.SetFormat(format); err != nil {
		return nil, err
	}
	l.Logger = slog.New(&switchHandler{l: l})
	return l, nil
}

// SetLevel changes the level.
func (l *Logger) SetLevel(level string) error {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	l.level.Set(lv)
	return nil
}

// SetFormat changes the format, "text" or "json".
func (l *Logger) SetFormat(format string) error {
	opts := &slog.HandlerOptions{Level: &l.level}
	var h slog.Handler
	switch format {
	case "text", "":
		h = slog.NewTextHandler(l.w, opts)
	case "json":
		h = slog.NewJSONHandler(l.w, opts)
	default:
		return fmt.Errorf("log format %q: want text or json", format)
	}
	l.inner.Store(&h)
	return nil
}

// switchHandler passes records to the Logger's current handler. Attributes
// and groups added with With are kept as a list and applied per record, so
// that loggers made before a format change follow it too.
type switchHandler struct {
	l     *Logger
	steps []func(slog.Handler) slog.Handler
}

func (h *switchHandler) current() slog.Handler {
	inner := *h.l.inner.Load()
	for _, step := range h.steps {
		inner = step(inner)
	}
	return inner
}

func (h *switchHandler) Enabled(ctx context.Context, lv slog.Level) bool {
	return lv >= h.l.level.Level()
}

func (h *switchHandler) Handle(ctx context.Context, r slog.Record) error {
	return h.current().Handle(ctx, r)
}

func (h *switchHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &switchHandler{l: h.l, steps: append(h.steps[:len(h.steps):len(h.steps)], func(in slog.Handler) slog.Handler { return in.WithAttrs(attrs) })}
}

func (h *switchHandler) WithGroup(name string) slog.Handler {
	return &switchHandler{l: h.l, steps: append(h.steps[:len(h.steps):len(h.steps)], func(in slog.Handler) slog.Handler { return in.WithGroup(name) })}
}
