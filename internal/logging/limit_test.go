package logging

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// TestLimitPerMessage checks that Warn bounds each message apart: a flood
// of one kind of line leaves room for the others, and the next line of a
// message says how many of it were left out.
func TestLimitPerMessage(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	var l Limit
	for range 1000 {
		l.Warn(log, "noisy")
	}
	l.Warn(log, "rare", "k", "v")
	out := buf.String()
	if n := strings.Count(out, "msg=noisy"); n != LimitBurst {
		t.Errorf("%d noisy lines, want %d", n, LimitBurst)
	}
	if !strings.Contains(out, "msg=rare k=v") {
		t.Errorf("the rare line was suppressed by the noisy ones:\n%s", out)
	}
}

// TestLimitAllow checks the single stream of Allow: LimitBurst lines a
// second, then the first line of the next second carries the count.
func TestLimitAllow(t *testing.T) {
	var l Limit
	t0 := time.Unix(1000, 0)
	allowed := 0
	for range 100 {
		if ok, _ := l.Allow(t0); ok {
			allowed++
		}
	}
	if allowed != LimitBurst {
		t.Errorf("%d lines allowed in a second, want %d", allowed, LimitBurst)
	}
	if ok, dropped := l.Allow(t0.Add(time.Second)); !ok || dropped != 100-LimitBurst {
		t.Errorf("next second: ok %v dropped %d, want true %d", ok, dropped, 100-LimitBurst)
	}
}
