package resource

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestSplitDocuments(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []Document
	}{
		{"one", "kind: role\n", []Document{{1, "kind: role\n"}}},
		{"leading marker and comment", "# from the guide\n---\n\nkind: role\nspec: {}\n\n", []Document{{1, "# from the guide\n"}, {4, "kind: role\nspec: {}\n"}}},
		{"several", "kind: role\n---\nkind: bot\n--- # two\nkind: token\n...\n", []Document{{1, "kind: role\n"}, {3, "kind: bot\n"}, {5, "kind: token\n"}}},
		{"no final newline, CRLF", "kind: role\r\n---\r\nkind: bot", []Document{{1, "kind: role\n"}, {3, "kind: bot\n"}}},
		{"indented dashes are text", "a: |\n  ---\n", []Document{{1, "a: |\n  ---\n"}}},
		{"empty", "---\n\n---\n", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SplitDocuments([]byte(tc.in))
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("SplitDocuments = %+v, %v\nwant %+v", got, err, tc.want)
			}
			// Joined again, the texts split into themselves.
			var texts []string
			for _, d := range got {
				texts = append(texts, d.Text)
			}
			again, err := SplitDocuments([]byte(strings.Join(texts, "---\n")))
			if err != nil || len(again) != len(got) {
				t.Fatalf("split of the joined texts = %+v, %v", again, err)
			}
			for i := range again {
				if again[i].Text != got[i].Text {
					t.Errorf("document %d: %q after a round trip, was %q", i, again[i].Text, got[i].Text)
				}
			}
		})
	}
	if _, err := SplitDocuments([]byte("kind: role\n--- {kind: bot}\n")); err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Errorf("a document on its marker's line: err = %v; want one naming line 2", err)
	}
}

const (
	docRole = "kind: role\nversion: v1\nmetadata:\n  name: deploy\nspec:\n  allow:\n    logins: [deploy]\n"
	docBot  = "kind: bot\nversion: v1\nmetadata:\n  name: ci\nspec:\n  roles: [deploy]\n"
)

// TestLoadMerge loads a directory together with documents from elsewhere.
func TestLoadMerge(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "roles.yaml"), []byte("# roles\n---\n"+docRole), 0o600); err != nil {
		t.Fatal(err)
	}
	d, err := ReadDirStable(dir, 0)
	if err != nil {
		t.Fatal(err)
	}

	// A bot from elsewhere may name a role of the directory.
	set, err := Load(d, []Doc{{Name: "store:bot/ci", Data: []byte(docBot)}})
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	b, ok := set.Bot("ci")
	if !ok || b.Source != (Location{"store:bot/ci", 1}) {
		t.Fatalf("bot ci = %+v, %v", b, ok)
	}
	loc, ok := set.Source("role", "deploy")
	if !ok || loc.File != filepath.Join(dir, "roles.yaml") || loc.Line != 3 {
		t.Fatalf("Source(role, deploy) = %v, %v", loc, ok)
	}
	if text, ok := d.Document(loc); !ok || text != docRole {
		t.Fatalf("Document(%v) = %q, %v; want %q", loc, text, ok, docRole)
	}
	if got := len(set.All("")); got != 2 {
		t.Errorf("All() has %d resources; want 2", got)
	}

	errTests := []struct {
		name string
		docs []Doc
		want []string
	}{
		{"duplicate across sources", []Doc{{Name: "store:role/deploy", Data: []byte(docRole)}},
			[]string{"store:role/deploy:4: duplicate role \"deploy\" (first defined at " + filepath.Join(dir, "roles.yaml") + ":6)"}},
		{"unknown reference", []Doc{{Name: "store:bot/ci", Data: []byte(strings.Replace(docBot, "[deploy]", "[nope]", 1))}},
			[]string{"store:bot/ci:6: bot \"ci\" references unknown role \"nope\""}},
		{"every problem at once", []Doc{
			{Name: "a.yaml", Data: []byte("kind: nope\n")},
			{Name: "store:bot/ci", Data: []byte(strings.Replace(docBot, "[deploy]", "[nope]", 1))},
		}, []string{"a.yaml:1: unknown kind", "store:bot/ci:6:"}},
	}
	for _, tc := range errTests {
		t.Run(tc.name, func(t *testing.T) {
			set, err := Load(d, tc.docs)
			if set != nil || err == nil {
				t.Fatalf("Load = %v, %v; want no set and an error", set, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
	// Without a directory, documents load alone.
	if _, err := Load(nil, []Doc{{Name: "x", Data: []byte(docRole + "---\n" + docBot)}}); err != nil {
		t.Fatalf("Load(nil, docs): %v", err)
	}
}
