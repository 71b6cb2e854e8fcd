package audit

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestFilterMatch(t *testing.T) {
	rec := map[string]any{"time": "2026-01-02T03:04:05.000006Z", "code": "MWI1001W", "event": "join", "outcome": "denied",
		"bot": "ci", "instance": "abc"}
	at := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)
	for _, tc := range []struct {
		name string
		f    Filter
		want bool
	}{
		{"everything", Filter{}, true},
		{"event", Filter{Event: "join"}, true},
		{"another event", Filter{Event: "join.challenge"}, false},
		{"a name is not a prefix", Filter{Event: "jo"}, false},
		{"prefix", Filter{Event: "token."}, false},
		{"outcome", Filter{Event: "join", Outcome: Denied}, true},
		{"other outcome", Filter{Outcome: Allowed}, false},
		{"code", Filter{Code: "MWI1001W"}, true},
		{"other code", Filter{Code: "MWI1001I"}, false},
		{"bot", Filter{Bot: "ci"}, true},
		{"other bot", Filter{Bot: "cd"}, false},
		{"instance", Filter{Instance: "abc"}, true},
		{"other instance", Filter{Instance: "abd"}, false},
		{"since, at the record", Filter{Since: at}, true},
		{"since, after it", Filter{Since: at.Add(time.Microsecond)}, false},
	} {
		if got := tc.f.Match(rec); got != tc.want {
			t.Errorf("%s: Match = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !(Filter{Event: "token."}).Match(map[string]any{"event": "token.create"}) {
		t.Error("prefix token. does not match token.create")
	}
	if (Filter{Since: at}).Match(map[string]any{"event": "join"}) {
		t.Error("a record without a time matches --since")
	}
}

// TestSearchRotated reads a log that was rotated: the rotated file first,
// lines that are not records skipped and counted.
func TestSearchRotated(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	a.Record(ctx, EventJoin, Denied, slog.String("n", "1"), slog.String("reason", "r"))
	a.Record(ctx, EventRenew, Allowed, slog.String("n", "2"))
	os.Rename(path, path+".1")
	a.Reopen()
	a.Record(ctx, EventJoin, Denied, slog.String("n", "3"), slog.String("reason", "r"))
	f, _ := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"time":"torn` + "\n")
	f.Close()
	a.Record(ctx, EventJoin, Allowed, slog.String("n", "4"))

	if got := Files(path); !slices.Equal(got, []string{path + ".1", path}) {
		t.Errorf("Files = %v", got)
	}
	var got []string
	skipped, err := Search(Files(path), Filter{Event: EventJoin}, func(e Entry) error {
		got = append(got, e.Fields["n"].(string))
		return nil
	})
	if err != nil || skipped != 1 || !slices.Equal(got, []string{"1", "3", "4"}) {
		t.Errorf("Search = %v, skipped %d, %v; want 1 3 4, 1 skipped", got, skipped, err)
	}
	// Without a rotated file, only the log; a missing log is an error.
	if got := Files(filepath.Join(t.TempDir(), "x.log")); len(got) != 1 {
		t.Errorf("Files without a rotated file = %v", got)
	}
	if _, err := Search([]string{filepath.Join(t.TempDir(), "missing.log")}, Filter{}, func(Entry) error { return nil }); err == nil {
		t.Error("Search of a missing log succeeded")
	}
}
