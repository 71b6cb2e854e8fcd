package audit

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
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

// TestSearchHostileFiles reads logs that someone who can write to the
// log's directory, or to the log through a bug, could shape: a symbolic
// link or a FIFO in place of the rotated file or the log, a directory, a
// line of 3 MiB, lines that are JSON but not objects, or objects whose
// fields have other types. Search neither hangs, nor panics, nor holds
// the long line; it reads the records around them and counts the rest.
func TestSearchHostileFiles(t *testing.T) {
	dir := t.TempDir()
	secret := filepath.Join(dir, "secret")
	os.WriteFile(secret, []byte(`{"time":"2026-01-01T00:00:00Z","event":"join","secret":"s3cret"}`+"\n"), 0o600)
	record := `{"time":"2026-01-02T00:00:00Z","code":"MWI1001W","event":"join","outcome":"denied","bot":"ci"}`

	// A link at FILE.1 is not a rotated file.
	path := filepath.Join(dir, "a.log")
	os.WriteFile(path, []byte(record+"\n"), 0o600)
	os.Symlink(secret, path+".1")
	if got := Files(path); !slices.Equal(got, []string{path}) {
		t.Errorf("Files with a link at FILE.1 = %v, want the log only", got)
	}
	if _, err := Search([]string{path + ".1", path}, Filter{}, func(Entry) error { return nil }); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("Search through a link at FILE.1 = %v, want an error naming the link", err)
	}
	// A FIFO or a directory at the log: an error, at once.
	fifo := filepath.Join(dir, "fifo.log")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Search([]string{dir}, Filter{}, func(Entry) error { return nil }); err == nil || !strings.Contains(err.Error(), "is a directory, not a regular file") {
		t.Errorf("Search of a directory = %v, want an error saying it is not a regular file", err)
	}
	// A FIFO named as the log is read, as /dev/stdin is; without a
	// writer, as empty. In place of the rotated file it is refused.
	if n, err := Search([]string{fifo}, Filter{}, func(Entry) error { return nil }); err != nil || n != 0 {
		t.Errorf("Search of a FIFO without a writer = %d, %v; want nothing", n, err)
	}
	if _, err := Search([]string{fifo, path}, Filter{}, func(Entry) error { return nil }); err == nil || !strings.Contains(err.Error(), "is a FIFO, not a regular file") {
		t.Errorf("Search of a FIFO as the rotated file = %v, want an error saying it is not a regular file", err)
	}
	if got := Files(fifo); len(got) != 1 {
		t.Errorf("Files = %v", got)
	}

	// Lines that are not records, or have fields of other types.
	odd := filepath.Join(dir, "odd.log")
	var b strings.Builder
	b.WriteString(record + "\n")
	b.WriteString(`{"bot":"` + strings.Repeat("x", 3<<20) + `"}` + "\n")
	b.WriteString(record + "\n")
	for _, l := range []string{
		`null`, `[]`, `"a string"`, `12`, `true`, strings.Repeat("[", 100_000) + strings.Repeat("]", 100_000),
		`{"time":5,"event":["join"],"outcome":{"denied":true},"bot":null,"code":1.5,"instance":false}`,
		`{"time":"not a time","event":"join"}`, "\x00\xff\xfe", `{"event":"join"`,
	} {
		b.WriteString(l + "\n")
	}
	b.WriteString(record) // no final newline
	os.WriteFile(odd, []byte(b.String()), 0o600)
	for _, f := range []Filter{{}, {Event: "join", Outcome: Denied, Bot: "ci", Code: "MWI1001W", Instance: "", Since: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}} {
		var got int
		skipped, err := Search([]string{odd}, f, func(e Entry) error {
			if len(e.Line) > 1000 {
				t.Errorf("a record of %d bytes", len(e.Line))
			}
			got++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if f.Event != "" && (got != 3 || skipped != 9) {
			t.Errorf("Search(%+v) = %d records, %d skipped; want 3 and 9", f, got, skipped)
		}
		if f.Event == "" && (got != 5 || skipped != 9) {
			t.Errorf("Search of everything = %d records, %d skipped; want 5 and 9", got, skipped)
		}
	}
}
