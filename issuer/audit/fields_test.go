package audit

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestRecordFields checks what every record starts with: time in UTC,
// code, event, outcome, a unique id and the cluster, then the record's
// own attributes and the actor from the context.
func TestRecordFields(t *testing.T) {
	w := &callWriter{}
	a := New(w)
	a.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 6000, time.FixedZone("X", 3600)) }
	ctx := WithActor(context.Background(), slog.Uint64("uid", 0), slog.Int("pid", 42))
	if err := a.Record(ctx, EventTokenCreate, Allowed, slog.String("bot", "ci"),
		slog.Time("expires", time.Date(2026, 1, 2, 4, 0, 0, 0, time.FixedZone("X", 3600)))); err != nil {
		t.Fatal(err)
	}
	// An attribute of the record itself is not repeated from the actor.
	if err := a.Record(ctx, EventAdmin, Denied, slog.Uint64("uid", 65534), slog.String("reason", "not admin")); err != nil {
		t.Fatal(err)
	}
	a.Cluster = "prod"
	if err := a.Record(context.Background(), EventRenew, Allowed); err != nil {
		t.Fatal(err)
	}
	got := string(w.written())
	l := strings.Split(strings.TrimSuffix(got, "\n"), "\n")
	if len(l) != 3 {
		t.Fatalf("wrote %d lines, want 3:\n%s", len(l), got)
	}
	recs := lines(t, w.written())
	const head = `{"time":"2026-01-02T02:04:05.000006Z","code":"MWI2001I","event":"token.create","outcome":"allowed","id":"`
	if !strings.HasPrefix(l[0], head) {
		t.Errorf("first line\n%s\ndoes not start with\n%s", l[0], head)
	}
	if !strings.HasSuffix(l[0], `,"cluster":"mwi","bot":"ci","expires":"2026-01-02T03:00:00Z","uid":0,"pid":42}`) {
		t.Errorf("first line ends wrong: %s", l[0])
	}
	if strings.Contains(got, `"level"`) || strings.Contains(got, `"msg"`) {
		t.Errorf("records hold slog's level or message: %s", got)
	}
	if recs[1]["uid"] != float64(65534) || strings.Count(l[1], `"uid"`) != 1 || recs[1]["pid"] != float64(42) || recs[1]["code"] != "MWI3003W" {
		t.Errorf("denial = %s, want the record's own uid once, the actor's pid, code MWI3003W", l[1])
	}
	if recs[2]["cluster"] != "prod" || recs[2]["uid"] != nil {
		t.Errorf("third record = %s, want cluster prod and no actor", l[2])
	}
	ids := map[any]bool{}
	for _, r := range recs {
		if id, _ := r["id"].(string); len(id) != 16 || ids[id] {
			t.Errorf("id %q: want 16 characters, unique", id)
		}
		ids[r["id"]] = true
	}
}

// TestReopen renames the log's file as logrotate does and reopens it: every
// record is in one of the two files, and the ones after Reopen in the new.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "audit.log")
	a, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	a.Record(ctx, EventRenew, Allowed, slog.String("n", "1"))
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	// Until it is reopened, the log writes to the renamed file.
	a.Record(ctx, EventRenew, Allowed, slog.String("n", "2"))
	if err := a.Reopen(); err != nil {
		t.Fatal(err)
	}
	a.Record(ctx, EventRenew, Allowed, slog.String("n", "3"))
	old, err := os.ReadFile(path + ".1")
	if err != nil {
		t.Fatal(err)
	}
	cur, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if l := lines(t, old); len(l) != 2 || l[0]["n"] != "1" || l[1]["n"] != "2" {
		t.Errorf("rotated file = %s", old)
	}
	if l := lines(t, cur); len(l) != 1 || l[0]["n"] != "3" {
		t.Errorf("new file = %s", cur)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("new file: %v, mode %v; want 0600", err, fi.Mode())
	}

	// A file that cannot be made keeps the log on its file.
	if err := os.Rename(path, path+".2"); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(path, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := a.Reopen(); err == nil {
		t.Error("Reopen onto a directory succeeded")
	}
	if err := a.Record(ctx, EventRenew, Allowed, slog.String("n", "4")); err != nil {
		t.Fatalf("record after a failed Reopen: %v", err)
	}
	if data, _ := os.ReadFile(path + ".2"); !strings.Contains(string(data), `"n":"4"`) {
		t.Errorf("record after a failed Reopen is not in the file the log had: %s", data)
	}
}

// TestRecordKeysWrittenOnce gives a record attributes, and an actor, whose
// keys are those every record starts with, or each other's, or come
// through a group without a key: each key is on the line once, the
// record's own fields keep their values, and the others are kept under
// another key.
func TestRecordKeysWrittenOnce(t *testing.T) {
	w := &callWriter{}
	a := New(w)
	a.now = func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }
	var attrs []slog.Attr
	for _, k := range []string{"time", "code", "event", "outcome", "id", "cluster", "level", "msg", "reason", "reason"} {
		attrs = append(attrs, slog.String(k, "forged"))
	}
	attrs = append(attrs, slog.String("outcome_", "taken too"),
		slog.Group("", slog.String("outcome", "grouped"), slog.Group("", slog.String("code", "deeper"))),
		slog.Any("event", slog.GroupValue(slog.String("x", "y"))))
	ctx := WithActor(context.Background(), slog.String("outcome", "actor"), slog.String("admin", "a"), slog.String("admin", "b"))
	if err := a.Record(ctx, EventJoin, Denied, attrs...); err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(string(w.written()))
	seen := map[string]bool{}
	dec := json.NewDecoder(strings.NewReader(line))
	dec.Token() // {
	for dec.More() {
		k, _ := dec.Token()
		var v any
		dec.Decode(&v)
		if seen[k.(string)] {
			t.Errorf("key %q twice in %s", k, line)
		}
		seen[k.(string)] = true
	}
	rec := lines(t, w.written())[0]
	want := map[string]any{"time": "2026-01-02T03:04:05.000000Z", "code": "MWI1001W", "event": "join", "outcome": "denied",
		"cluster": "mwi", "reason": "forged", "time_": "forged", "level_": "forged", "msg_": "forged", "outcome_": "forged",
		"outcome__": "taken too", "outcome___": "grouped", "code__": "deeper", "admin": "a", "admin_": "b"}
	for k, v := range want {
		if rec[k] != v {
			t.Errorf("%s = %v, want %v; line %s", k, rec[k], v, line)
		}
	}
	// The actor's outcome is left out, as any actor key the record has.
	if strings.Contains(line, `"actor"`) {
		t.Errorf("the actor's outcome is on the line: %s", line)
	}
	if id, _ := rec["id"].(string); len(id) != 16 || rec["id_"] != "forged" {
		t.Errorf("id %v, id_ %v", rec["id"], rec["id_"])
	}
}

// TestReopenPlantedPath puts at the log's path, after logrotate's rename,
// what someone who can write to its directory could: a symbolic link (to
// a file or to nothing), a FIFO with and without a reader, a file of
// another user. Reopen refuses each, at once, naming why; the log writes
// on to the file it had, and the thing planted is not written to.
func TestReopenPlantedPath(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a file to another user")
	}
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, path, target string)
		want  string
	}{
		{"link to a file", func(t *testing.T, path, target string) {
			os.WriteFile(target, nil, 0o644)
			must(t, os.Symlink(target, path))
		}, "is a symbolic link now"},
		{"dangling link", func(t *testing.T, path, target string) { must(t, os.Symlink(target, path)) }, "is a symbolic link now"},
		{"fifo", func(t *testing.T, path, _ string) { must(t, syscall.Mkfifo(path, 0o666)) }, "is a FIFO without a reader"},
		{"fifo with a reader", func(t *testing.T, path, _ string) {
			must(t, syscall.Mkfifo(path, 0o666))
			r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
			must(t, err)
			t.Cleanup(func() { r.Close() })
		}, "is a FIFO now, not a regular file"},
		{"another user's file", func(t *testing.T, path, _ string) {
			must(t, os.WriteFile(path, nil, 0o666))
			must(t, os.Chown(path, 65534, 65534))
		}, "is owned by uid 65534 now, not by uid 0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path, target := filepath.Join(dir, "audit.log"), filepath.Join(dir, "elsewhere")
			a, err := Open(path)
			must(t, err)
			defer a.Close()
			ctx := context.Background()
			must(t, a.Record(ctx, EventRenew, Allowed, slog.String("n", "1")))
			must(t, os.Rename(path, path+".1"))
			tc.plant(t, path, target)
			if err := a.Reopen(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Reopen = %v, want an error saying %q", err, tc.want)
			}
			must(t, a.Record(ctx, EventRenew, Allowed, slog.String("n", "2")))
			if l := lines(t, readFile(t, path+".1")); len(l) != 2 || l[1]["n"] != "2" {
				t.Errorf("the file the log had holds %d records, want both", len(l))
			}
			if data, _ := os.ReadFile(target); len(data) > 0 {
				t.Errorf("the link's target was written: %s", data)
			}
			if fi, err := os.Lstat(path); err == nil && fi.Mode().IsRegular() && fi.Size() > 0 {
				t.Errorf("the planted file was written")
			}
		})
	}
}

// TestReopenKeepsWhatOpenFound reopens logs that an operator pointed at a
// device or through a symbolic link: Reopen takes again what Open found.
func TestReopenKeepsWhatOpenFound(t *testing.T) {
	dir := t.TempDir()
	target, link := filepath.Join(dir, "real.log"), filepath.Join(dir, "audit.log")
	must(t, os.Symlink(target, link))
	for _, path := range []string{os.DevNull, link} {
		a, err := Open(path)
		must(t, err)
		must(t, a.Record(context.Background(), EventRenew, Allowed))
		if err := a.Reopen(); err != nil {
			t.Errorf("Reopen of %s: %v", path, err)
		}
		must(t, a.Record(context.Background(), EventRenew, Allowed))
		a.Close()
	}
	if l := lines(t, readFile(t, target)); len(l) != 2 {
		t.Errorf("%d records through the link, want 2", len(l))
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	must(t, err)
	return data
}
