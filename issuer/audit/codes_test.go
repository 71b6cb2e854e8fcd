package audit

import (
	"context"
	"go/ast"
	"go/parser"
	"go/token"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestEveryEventCode writes a record with every code of every event, as
// the event's callers do, and checks the code each line carries: every
// code the README lists is produced here.
func TestEveryEventCode(t *testing.T) {
	seen := map[string]string{} // code → event
	for _, e := range Events() {
		for _, code := range e.Codes() {
			if other, ok := seen[code]; ok {
				t.Errorf("code %s is both %s's and %s's", code, other, e.Name)
			}
			seen[code] = e.Name
		}
		t.Run(e.Name, func(t *testing.T) {
			w := &callWriter{}
			a := New(w)
			now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			a.now = func() time.Time { return now }
			a.burst = 1
			ctx := context.Background()
			var want []string
			if e.Allowed {
				if err := a.Record(ctx, e.Name, Allowed); err != nil {
					t.Fatal(err)
				}
				want = append(want, "MWI"+strconv.Itoa(e.Number)+"I")
			}
			if e.Denied {
				// The second denial is left out and counted by the
				// suppressed record that Flush writes.
				for range 2 {
					if err := a.Record(ctx, e.Name, Denied, slog.String("reason", "test")); err != nil {
						t.Fatal(err)
					}
				}
				if err := a.Flush(ctx); err != nil {
					t.Fatal(err)
				}
				want = append(want, "MWI"+strconv.Itoa(e.Number)+"W", "MWI"+strconv.Itoa(e.Number)+"S")
			}
			var got []string
			for _, l := range lines(t, w.written()) {
				if l["event"] != e.Name {
					t.Errorf("record of %s has event %v", e.Name, l["event"])
				}
				got = append(got, l["code"].(string))
			}
			if !slices.Equal(got, want) || !slices.Equal(got, e.Codes()) {
				t.Errorf("codes written = %v, want %v (Codes says %v)", got, want, e.Codes())
			}
		})
	}
}

// TestEveryEventHasACode reads the Event constants of this package and
// checks that each has a number: an event added without one would be
// written as MWI0000.
func TestEveryEventHasACode(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "audit.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	ast.Inspect(f, func(node ast.Node) bool {
		vs, ok := node.(*ast.ValueSpec)
		if !ok {
			return true
		}
		for i, name := range vs.Names {
			if !strings.HasPrefix(name.Name, "Event") || i >= len(vs.Values) {
				continue
			}
			lit, ok := vs.Values[i].(*ast.BasicLit)
			if !ok {
				continue
			}
			v, _ := strconv.Unquote(lit.Value)
			n++
			if numbers[v] == 0 {
				t.Errorf("%s (%q) has no number in the table of codes", name.Name, v)
			}
		}
		return true
	})
	if n == 0 {
		t.Fatal("found no Event constants in audit.go")
	}
	if Code("no.such.event", Allowed) != "MWI0000I" {
		t.Errorf("an unknown event's code = %s, want MWI0000I", Code("no.such.event", Allowed))
	}
}

// TestREADMEListsEveryCode checks that the README's table of audit codes
// has every code, and no other.
func TestREADMEListsEveryCode(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, c := range regexp.MustCompile(`\bMWI\d{4}[IWS]\b`).FindAllString(string(data), -1) {
		listed[c] = true
	}
	want := map[string]bool{}
	for _, e := range Events() {
		for _, c := range e.Codes() {
			want[c] = true
			if !listed[c] {
				t.Errorf("README.md does not list %s (%s)", c, e.Name)
			}
		}
	}
	for c := range listed {
		if !want[c] && c != "MWI0000I" && c != "MWI0000W" {
			t.Errorf("README.md lists %s, which no event has", c)
		}
	}
}

// TestEveryEventIsRecorded checks that the issuer's code records every
// event of the table, by its constant, so that no code is listed for an
// event nothing writes.
func TestEveryEventIsRecorded(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "audit.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	constant := map[string]string{} // value → name
	ast.Inspect(f, func(node ast.Node) bool {
		if vs, ok := node.(*ast.ValueSpec); ok {
			for i, name := range vs.Names {
				if i >= len(vs.Values) {
					break
				}
				if lit, ok := vs.Values[i].(*ast.BasicLit); ok && strings.HasPrefix(name.Name, "Event") {
					v, _ := strconv.Unquote(lit.Value)
					constant[v] = name.Name
				}
			}
		}
		return true
	})
	var src strings.Builder
	root := filepath.Join("..", "..")
	err = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && (d.Name() == ".git" || d.Name() == "audit" && filepath.Base(filepath.Dir(path)) == "issuer"):
			return filepath.SkipDir
		case !d.IsDir() && strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go"):
			data, err := os.ReadFile(path)
			src.Write(data)
			return err
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(src.String(), "audit.EventRenew") {
		t.Fatal("read no source that records a renewal")
	}
	for _, e := range Events() {
		name, ok := constant[e.Name]
		if !ok {
			t.Errorf("event %s has no constant", e.Name)
			continue
		}
		if !strings.Contains(src.String(), "audit."+name) {
			t.Errorf("nothing outside package audit records %s (audit.%s)", e.Name, name)
		}
	}
}
