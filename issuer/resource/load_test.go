package resource

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// githubTokenYAML is a github token resource for bot ci whose one rule,
// complete, pins a branch; its last line is the ref.
const githubTokenYAML = `kind: token
version: v1
metadata: {name: gh}
spec:
  join_method: github
  bot_name: ci
  github:
    allow:
      - repository: org/repo
        ref: refs/heads/main
`

// TestLoadDirStable reads a directory while its files change between the
// two reads, as a rewrite in place does: the set is refused, never loaded
// half-written.
func TestLoadDirStable(t *testing.T) {
	// The part of the token file before its last line: valid YAML with a
	// rule that admits every branch.
	half := strings.TrimSuffix(githubTokenYAML, "        ref: refs/heads/main\n")
	for _, tc := range []struct {
		name    string
		between func(t *testing.T, dir string)
		changed []string // files named in the error; nil for a set
	}{
		{"no change", func(*testing.T, string) {}, nil},
		{"touch with the same bytes", func(t *testing.T, dir string) { write(t, dir, "token.yaml", githubTokenYAML) }, nil},
		{"rewrite in place, half done", func(t *testing.T, dir string) {
			// The first read saw the old file; the second sees the
			// truncated file with its first write only.
			write(t, dir, "token.yaml", half)
		}, []string{"token.yaml"}},
		{"new file", func(t *testing.T, dir string) { write(t, dir, "more.yaml", "") }, []string{"more.yaml"}},
		{"file removed", func(t *testing.T, dir string) {
			if err := os.Remove(filepath.Join(dir, "token.yaml")); err != nil {
				t.Fatal(err)
			}
		}, []string{"token.yaml"}},
		{"other files change", func(t *testing.T, dir string) { write(t, dir, ".token.yaml.swp", "x"); write(t, dir, "notes.txt", "x") }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			write(t, dir, "bots.yaml", tokenBotsYAML)
			write(t, dir, "token.yaml", githubTokenYAML)
			set, err := loadDirStable(dir, func() { tc.between(t, dir) })
			if tc.changed == nil {
				if err != nil {
					t.Fatalf("loadDirStable: %v", err)
				}
				tok, ok := set.Token("gh")
				if !ok || len(tok.GitHub().Allow) != 1 || tok.GitHub().Allow[0].Ref != "refs/heads/main" {
					t.Errorf("token = %+v, %v; want the rule pinning refs/heads/main", tok.GitHub(), ok)
				}
				return
			}
			if set != nil || !errors.Is(err, ErrChanging) {
				t.Fatalf("loadDirStable = %v, %v; want no set and ErrChanging", set, err)
			}
			for _, name := range tc.changed {
				if !strings.Contains(err.Error(), filepath.Join(dir, name)) {
					t.Errorf("error %q does not name %s", err, name)
				}
			}
		})
	}

	// The half-written file is itself a valid, wider set: only the second
	// read tells it apart.
	dir := t.TempDir()
	write(t, dir, "bots.yaml", tokenBotsYAML)
	write(t, dir, "token.yaml", half)
	set, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("the half-written file does not load: %v", err)
	}
	if tok, _ := set.Token("gh"); tok.GitHub().Allow[0].Ref != "" {
		t.Fatalf("the half-written rule pins ref %q", tok.GitHub().Allow[0].Ref)
	}
}

func write(t *testing.T, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
