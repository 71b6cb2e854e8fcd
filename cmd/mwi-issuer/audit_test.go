package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/issuer/audit"
)

func TestAuditSearch(t *testing.T) {
	state := t.TempDir()
	path := filepath.Join(state, "audit.log")
	a, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ctx := context.Background()
	a.Record(ctx, audit.EventJoin, audit.Denied, slog.String("bot", "ci"), slog.String("reason", "join token was already used"))
	os.Rename(path, path+".1")
	a.Reopen()
	a.Record(ctx, audit.EventJoin, audit.Allowed, slog.String("bot", "ci"), slog.String("instance", "abc"))
	a.Record(ctx, audit.EventJoin, audit.Denied, slog.String("bot", "cd"), slog.String("reason", "join token is unknown"))
	a.Record(audit.WithActor(ctx, slog.Uint64("uid", 0)), audit.EventTokenCreate, audit.Allowed, slog.String("bot", "ci"))

	for _, tc := range []struct {
		name string
		args []string
		want []string // lines of standard output, each holding these
	}{
		{"denied joins, rotated file first", []string{"--since", "1h", "--event", "join", "--outcome", "denied"},
			[]string{`MWI1001W join denied bot=ci reason="join token was already used"`, `MWI1001W join denied bot=cd reason="join token is unknown"`}},
		{"a bot", []string{"--event", "join", "--outcome", "denied", "--bot", "cd"}, []string{`bot=cd`}},
		{"a code", []string{"--code", "MWI1001I"}, []string{`MWI1001I join allowed bot=ci instance=abc`}},
		{"a prefix, with the admin", []string{"--event", "token."}, []string{`MWI2001I token.create allowed bot=ci uid=0`}},
		{"nothing since a time to come", []string{"--since", time.Now().Add(time.Hour).Format(time.RFC3339)}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errs := mwiIssuer(append([]string{"audit", "search", "--state", state}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, errs)
			}
			lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
			if out == "" {
				lines = nil
			}
			if len(lines) != len(tc.want) {
				t.Fatalf("output:\n%s\nwant %d lines", out, len(tc.want))
			}
			for i, w := range tc.want {
				if !strings.Contains(lines[i], w) {
					t.Errorf("line %d = %q, want it to hold %q", i, lines[i], w)
				}
			}
		})
	}

	// JSON: the records as written, one a line.
	code, out, errs := mwiIssuer("audit", "search", "--audit-log", path, "--outcome", "denied", "--format", "json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec["outcome"] != "denied" || rec["id"] == nil {
			t.Errorf("json line %q: %v", l, err)
		}
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "name the audit log with --audit-log FILE or --state DIR"},
		{[]string{"--state", state, "--audit-log", path}, "not both"},
		{[]string{"--state", state, "--format", "yaml"}, "--format must be text or json"},
		{[]string{"--state", state, "--outcome", "refused"}, "--outcome must be allowed, denied or suppressed"},
		{[]string{"--state", state, "--since", "yesterday"}, "--since: want a duration"},
		{[]string{"--state", state, "--since", "-1h"}, "--since: want a positive duration"},
	} {
		if code, _, errs := mwiIssuer(append([]string{"audit", "search"}, tc.args...)...); code != 2 || !strings.Contains(errs, tc.want) {
			t.Errorf("audit search %v: exit %d, %q; want 2 and %q", tc.args, code, errs, tc.want)
		}
	}
	if code, _, errs := mwiIssuer("audit", "search", "--audit-log", filepath.Join(state, "nope.log")); code != 1 || !strings.Contains(errs, "nope.log") {
		t.Errorf("a missing log: exit %d, %q; want 1 naming the file", code, errs)
	}
}

// TestAuditSearchTextHostileValues writes records whose values, as a
// request can set them (a refused join's join_method, the bot a host's
// report names), hold newlines, a terminal's control sequences, invalid
// UTF-8 and text that reads as a record: the text format still prints one
// line per record, each value one word or quoted, and no control
// character.
func TestAuditSearchTextHostileValues(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.log")
	a, err := audit.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	forged := "2026-01-01T00:00:00.000000Z MWI1001I join allowed bot=admin"
	hostile := []string{
		"x\n" + forged,
		"x\r" + forged,
		"x\x1b[2K\x1b[1G" + forged,
		"x\u2028" + forged,
		"\u202enimda",
		"x\x00y\x7f\u0085\u009b31m",
		"bad\xff\xfeutf8",
		"a b=c",
		`q"uote\`,
		"",
	}
	ctx := context.Background()
	for _, h := range hostile {
		var attrs []slog.Attr
		for _, k := range auditActorKeys {
			attrs = append(attrs, slog.String(k, h))
		}
		attrs = append(attrs, slog.String("reason", h))
		if err := a.Record(ctx, audit.EventJoin, audit.Denied, attrs...); err != nil {
			t.Fatal(err)
		}
	}
	a.Record(ctx, audit.EventJoin, audit.Denied, slog.Any("bot", map[string]string{"k": "v\nw"}), slog.Any("instance", []string{"a b"}), slog.String("reason", "r"))
	code, out, errs := mwiIssuer("audit", "search", "--audit-log", path)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
	if len(lines) != len(hostile)+1 {
		t.Fatalf("%d lines for %d records:\n%s", len(lines), len(hostile)+1, out)
	}
	for i, l := range lines {
		if !strings.HasPrefix(l, time.Now().UTC().Format("2006-01-02T")) || !strings.Contains(l, " MWI1001W join denied ") {
			t.Errorf("line %d does not start as its record: %q", i, l)
		}
		for _, r := range l {
			if !strconv.IsPrint(r) && r != ' ' {
				t.Errorf("line %d holds %U: %q", i, r, l)
				break
			}
		}
		if strings.Count(l, "MWI1001") != 1 && !strings.Contains(l, `"`) {
			t.Errorf("line %d has a second code outside quotes: %q", i, l)
		}
	}
	// Each value reads back as written: a word, or a Go string.
	for i, h := range hostile[:len(hostile)-1] {
		f := fieldValue(t, lines[i], "join_method=")
		if got, err := strconv.Unquote(f); err == nil {
			f = got
		}
		// The log holds U+FFFD for each byte that is not UTF-8.
		want := []rune(h)
		if f != string(want) {
			t.Errorf("record %d: join_method reads back %q, want %q", i, f, want)
		}
	}
}

// fieldValue returns the value after key in a line of audit search's text:
// a word, or a quoted string.
func fieldValue(t *testing.T, line, key string) string {
	t.Helper()
	_, rest, ok := strings.Cut(line, " "+key)
	if !ok {
		t.Fatalf("no %s in %q", key, line)
	}
	if strings.HasPrefix(rest, `"`) {
		q, err := strconv.QuotedPrefix(rest)
		if err != nil {
			t.Fatalf("%s in %q: %v", key, line, err)
		}
		return q
	}
	w, _, _ := strings.Cut(rest, " ")
	return w
}
