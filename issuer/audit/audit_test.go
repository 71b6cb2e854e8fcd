package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// callWriter records each Write call separately, to show that a record is
// one Write of one whole line.
type callWriter struct {
	mu    sync.Mutex
	calls [][]byte
	// fail, if set, decides what each Write does with p.
	fail func(p []byte) (int, error)
}

func (w *callWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := len(p), error(nil)
	if w.fail != nil {
		n, err = w.fail(p)
	}
	w.calls = append(w.calls, bytes.Clone(p[:n]))
	return n, err
}

func (w *callWriter) written() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return bytes.Join(w.calls, nil)
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// lines decodes every line of b, failing on one that is not JSON.
func lines(t *testing.T, b []byte) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("audit line is not JSON: %v: %.200q", err, l)
		}
		out = append(out, m)
	}
	return out
}

type value struct{ S string }

func TestRecordBoundsValues(t *testing.T) {
	big := strings.Repeat("x", 900<<10)
	for _, tc := range []struct {
		name string
		attr slog.Attr
		want string // the value written, for a string
	}{
		{"short string", slog.String("token_name", "gh"), "gh"},
		{"string at the bound", slog.String("token_name", strings.Repeat("a", MaxValue)), strings.Repeat("a", MaxValue)},
		{"string past the bound", slog.String("token_name", strings.Repeat("a", MaxValue+1)), strings.Repeat("a", MaxValue) + fmt.Sprintf("…[truncated: %d bytes]", MaxValue+1)},
		{"900 KB string", slog.String("token_name", big), strings.Repeat("x", MaxValue) + fmt.Sprintf("…[truncated: %d bytes]", len(big))},
		// A multi-byte character across the bound is left out whole.
		{"cut at a character", slog.String("s", strings.Repeat("a", MaxValue-1)+"é"), strings.Repeat("a", MaxValue-1) + fmt.Sprintf("…[truncated: %d bytes]", MaxValue+1)},
		{"error", slog.Any("err", errors.New(big)), strings.Repeat("x", MaxValue) + fmt.Sprintf("…[truncated: %d bytes]", len(big))},
		{"struct", slog.Any("s", value{big}), `{"S":"` + strings.Repeat("x", MaxValue-6) + fmt.Sprintf("…[truncated: %d bytes]", len(big)+8)},
		{"long list", slog.Any("principals", []string{big, big}), ""},
		{"short list", slog.Any("principals", []string{"a", "b"}), ""},
		{"group", slog.Group("g", slog.String("inner", big)), ""},
		// Eight certificates of 600 bytes each stay a list.
		{"list of records", slog.Any("host_certs", slices.Repeat([]value{{strings.Repeat("n", 600)}}, 8)), ""},
		{"long key", slog.String(big, "v"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &callWriter{}
			a := New(w)
			if err := a.Record(context.Background(), EventJoinChallenge, Denied, tc.attr, slog.String("reason", "test")); err != nil {
				t.Fatal(err)
			}
			out := w.written()
			if len(out) > 4*MaxValue && tc.name != "list of records" {
				t.Errorf("record is %d bytes long", len(out))
			}
			l := lines(t, out)[0]
			if tc.want != "" && l[tc.attr.Key] != tc.want {
				t.Errorf("%s = %.100q…, want %.100q…", tc.attr.Key, l[tc.attr.Key], tc.want)
			}
			if list, ok := l["host_certs"].([]any); tc.name == "list of records" && (!ok || len(list) != 8) {
				t.Errorf("host_certs = %.100v…, want the list of 8", l["host_certs"])
			}
			if tc.name == "short list" && fmt.Sprint(l["principals"]) != "[a b]" {
				t.Errorf("principals = %v, want the list as it was", l["principals"])
			}
		})
	}
}

// TestRecordOneWritePerLine writes records from many goroutines to a
// writer that keeps each Write apart: each must be one whole line.
func TestRecordOneWritePerLine(t *testing.T) {
	w := &callWriter{}
	a := New(w)
	const goroutines, each = 8, 50
	var wg sync.WaitGroup
	for g := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := a.Record(context.Background(), EventRenew, Allowed,
					slog.Int("g", g), slog.Int("i", i), slog.String("pad", strings.Repeat("p", 100*i))); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if len(w.calls) != goroutines*each {
		t.Fatalf("%d Write calls for %d records", len(w.calls), goroutines*each)
	}
	seen := make(map[string]bool)
	for _, c := range w.calls {
		if bytes.Count(c, []byte("\n")) != 1 || c[len(c)-1] != '\n' {
			t.Fatalf("a Write call is not one line: %.200q", c)
		}
		l := lines(t, c)[0]
		seen[fmt.Sprint(l["g"], "/", l["i"])] = true
	}
	if len(seen) != goroutines*each {
		t.Errorf("%d distinct records, want %d", len(seen), goroutines*each)
	}
}

func TestRecordFailsClosed(t *testing.T) {
	enospc := &os.PathError{Op: "write", Path: "audit.log", Err: syscall.ENOSPC}
	for _, tc := range []struct {
		name string
		fail func(p []byte) (int, error)
	}{
		{"write error", func(p []byte) (int, error) { return 0, enospc }},
		{"short write with an error", func(p []byte) (int, error) { return len(p) / 2, enospc }},
		{"short write without an error", func(p []byte) (int, error) { return len(p) - 1, nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logged bytes.Buffer
			w := &callWriter{fail: tc.fail}
			a := New(w)
			a.Logger = slog.New(slog.NewTextHandler(&logged, nil))
			ctx := context.Background()
			if err := a.Err(); err != nil {
				t.Fatalf("Err before any write = %v", err)
			}
			// Both an issuance and a denial report the failure.
			for _, outcome := range []string{Allowed, Denied} {
				err := a.Record(ctx, EventRenew, outcome, slog.String("bot", "ci"), slog.String("reason", "r"))
				if err == nil {
					t.Fatalf("Record(%s) = nil with a failing writer", outcome)
				}
				if a.Err() == nil {
					t.Errorf("Err() = nil after a failed %s record", outcome)
				}
			}
			if !strings.Contains(logged.String(), "level=ERROR") || !strings.Contains(logged.String(), "audit record not written") {
				t.Errorf("the failure was not logged as an error: %s", logged.String())
			}

			// The writer recovers: the next record is written whole, on a
			// line of its own, and health recovers.
			w.mu.Lock()
			w.fail = nil
			w.mu.Unlock()
			if err := a.Record(ctx, EventRenew, Allowed, slog.String("bot", "ci")); err != nil {
				t.Fatalf("Record after recovery: %v", err)
			}
			if err := a.Err(); err != nil {
				t.Errorf("Err() = %v after a good write", err)
			}
			out := w.written()
			last := out[bytes.LastIndexByte(out[:len(out)-1], '\n')+1:]
			if l := lines(t, last)[0]; l["event"] != EventRenew || l["bot"] != "ci" {
				t.Errorf("last line = %s, want the record after recovery", last)
			}
		})
	}
}

// TestRecordDevFull writes to a device where every write fails, as a full
// disk does.
func TestRecordDevFull(t *testing.T) {
	f, err := os.OpenFile("/dev/full", os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Skipf("no /dev/full: %v", err)
	}
	defer f.Close()
	a := New(f)
	a.Logger = quietLog()
	err = a.Record(context.Background(), EventJoin, Allowed, slog.String("bot", "ci"))
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Record = %v, want ENOSPC", err)
	}
	if !errors.Is(a.Err(), syscall.ENOSPC) {
		t.Errorf("Err() = %v, want ENOSPC", a.Err())
	}
}

// TestRecordShortWriteToFile shows that a record cut short in a file is
// taken out again, so the file holds whole lines only.
func TestRecordShortWriteToFile(t *testing.T) {
	path := t.TempDir() + "/audit.log"
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := New(f)
	a.Logger = quietLog()
	ctx := context.Background()
	if err := a.Record(ctx, EventJoin, Allowed, slog.String("n", "1")); err != nil {
		t.Fatal(err)
	}
	// What a full disk does to a write that crosses into a new block.
	if _, err := f.Write([]byte(`{"time":"2026-01-01T00:00:00Z","le`)); err != nil {
		t.Fatal(err)
	}
	if !a.undo(len(`{"time":"2026-01-01T00:00:00Z","le`)) {
		t.Fatal("undo did not take the piece out")
	}
	if err := a.Record(ctx, EventJoin, Allowed, slog.String("n", "2")); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if l := lines(t, data); len(l) != 2 || l[0]["n"] != "1" || l[1]["n"] != "2" {
		t.Errorf("file = %s", data)
	}
}

func TestRecordRateLimitsDenials(t *testing.T) {
	w := &callWriter{}
	a := New(w)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	a.now = func() time.Time { return now }
	ctx := context.Background()
	deny := func(event string, n int) {
		for i := range n {
			if err := a.Record(ctx, event, Denied, slog.Int("i", i), slog.String("reason", "bad body")); err != nil {
				t.Fatal(err)
			}
		}
	}
	count := func(event, outcome string) int {
		n := 0
		for _, l := range lines(t, w.written()) {
			if l["event"] == event && l["outcome"] == outcome {
				n++
			}
		}
		return n
	}

	deny(EventRequest, DenialBurst+50)
	if got := count(EventRequest, Denied); got != DenialBurst {
		t.Errorf("%d denials written at once, want the burst, %d", got, DenialBurst)
	}
	// Other events have their own limit, and allowed decisions have none.
	deny(EventJoin, 3)
	if got := count(EventJoin, Denied); got != 3 {
		t.Errorf("%d join denials written, want 3", got)
	}
	for range DenialBurst + 10 {
		if err := a.Record(ctx, EventRenew, Allowed); err != nil {
			t.Fatal(err)
		}
	}
	if got := count(EventRenew, Allowed); got != DenialBurst+10 {
		t.Errorf("%d allowed records written, want all %d", got, DenialBurst+10)
	}

	// A second later, the next record of any event first says how many
	// denials were left out.
	now = now.Add(time.Second)
	deny(EventRequest, 1)
	var sum map[string]any
	for _, l := range lines(t, w.written()) {
		if l["outcome"] == Suppressed {
			sum = l
		}
	}
	if sum == nil || sum["event"] != EventRequest || sum["count"] != float64(50) || sum["reason"] == "" {
		t.Fatalf("summary = %v, want 50 %s denials counted", sum, EventRequest)
	}
	if got := count(EventRequest, Denied); got != DenialBurst+1 {
		t.Errorf("%d denials written, want %d", got, DenialBurst+1)
	}

	// Flush reports what is left out when the issuer stops.
	deny(EventRequest, DenialsPerSecond+5)
	if err := a.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	if got := count(EventRequest, Suppressed); got != 2 {
		t.Errorf("%d summaries after Flush, want 2", got)
	}
}

// TestRecordEscapesControls records values holding DEL and C1 control
// characters, which the JSON encoder writes as they are, such as U+009B,
// a terminal's CSI: the line holds none of them raw, and reads back the
// same values.
func TestRecordEscapesControls(t *testing.T) {
	w := &callWriter{}
	a := New(w)
	values := []string{"a\u009b31mb", "\x7f", "\u0080\u0085\u009f", "é\u00a0ok", "\u009b" + strings.Repeat("x", MaxValue)}
	for _, v := range values {
		if err := a.Record(context.Background(), EventJoin, Denied, slog.String("reason", v)); err != nil {
			t.Fatal(err)
		}
	}
	data := w.written()
	for _, r := range string(data) {
		if r == 0x7f || r >= 0x80 && r <= 0x9f {
			t.Fatalf("the log holds %U raw: %q", r, data)
		}
	}
	for i, rec := range lines(t, data) {
		want := values[i]
		if len(want) > MaxValue {
			want = truncate(want)
		}
		if rec["reason"] != want {
			t.Errorf("record %d reads back %q, want %q", i, rec["reason"], want)
		}
	}
}
