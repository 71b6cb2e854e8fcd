package resource

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeDir creates the named files in a new temporary directory and
// returns its path. File contents are written as given.
func writeDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range files {
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func symlink(t *testing.T, target, link string) {
	t.Helper()
	if err := os.Symlink(target, link); err != nil {
		t.Skipf("symlinks not supported: %v", err)
	}
}

const rolesYAML = `# Roles for the deploy pipeline.
kind: role
version: v1
metadata:
  name: deploy
  description: Deploy to production
spec:
  allow:
    logins: [deploy, "{{internal.logins}}"]
  options:
    max_ttl: 1h
---
kind: role
version: v1
metadata:
  name: read-only
spec:
  allow:
    logins:
      - viewer
      - deploy
---
`

const botsYAML = `---
kind: bot
version: v1
metadata:
  name: ci
spec:
  roles: [deploy, read-only]
  traits:
    logins: [alice, bob, viewer]
---
kind: bot
version: v1
metadata:
  name: web
spec:
  roles: [read-only]
`

const extraRoleYAML = `kind: role
version: v1
metadata:
  name: admin
spec:
  allow:
    logins: [root, "{{internal.admins}}"]
  options:
    max_ttl: 30m
`

// loadValid loads a valid multi-file directory.
func loadValid(t *testing.T) (*Set, string) {
	t.Helper()
	dir := writeDir(t, map[string]string{
		"10-roles.yaml": rolesYAML,
		"20-bots.yml":   botsYAML,
		"30-admin.yaml": extraRoleYAML,
		"README.md":     "not a resource\n",
	})
	s, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	return s, dir
}

func TestLoadDir(t *testing.T) {
	s, dir := loadValid(t)

	wantFiles := []string{
		filepath.Join(dir, "10-roles.yaml"),
		filepath.Join(dir, "20-bots.yml"),
		filepath.Join(dir, "30-admin.yaml"),
	}
	if got := s.Files(); !slices.Equal(got, wantFiles) {
		t.Errorf("Files() = %q, want %q", got, wantFiles)
	}

	var roleNames, botNames []string
	for _, r := range s.Roles() {
		roleNames = append(roleNames, r.Name)
	}
	for _, b := range s.Bots() {
		botNames = append(botNames, b.Name)
	}
	if want := []string{"admin", "deploy", "read-only"}; !slices.Equal(roleNames, want) {
		t.Errorf("Roles() names = %q, want %q", roleNames, want)
	}
	if want := []string{"ci", "web"}; !slices.Equal(botNames, want) {
		t.Errorf("Bots() names = %q, want %q", botNames, want)
	}

	deploy, ok := s.Role("deploy")
	if !ok {
		t.Fatal(`Role("deploy") not found`)
	}
	if deploy.Description != "Deploy to production" {
		t.Errorf("deploy.Description = %q", deploy.Description)
	}
	if want := []string{"deploy", "{{internal.logins}}"}; !slices.Equal(deploy.Logins, want) {
		t.Errorf("deploy.Logins = %q, want %q", deploy.Logins, want)
	}
	if deploy.MaxTTL != time.Hour {
		t.Errorf("deploy.MaxTTL = %v, want 1h", deploy.MaxTTL)
	}
	if want := (Location{filepath.Join(dir, "10-roles.yaml"), 2}); deploy.Source != want {
		t.Errorf("deploy.Source = %v, want %v", deploy.Source, want)
	}

	ro, _ := s.Role("read-only")
	if ro.MaxTTL != DefaultMaxTTL {
		t.Errorf("read-only.MaxTTL = %v, want default %v", ro.MaxTTL, DefaultMaxTTL)
	}
	if want := (Location{filepath.Join(dir, "10-roles.yaml"), 13}); ro.Source != want {
		t.Errorf("read-only.Source = %v, want %v", ro.Source, want)
	}

	ci, ok := s.Bot("ci")
	if !ok {
		t.Fatal(`Bot("ci") not found`)
	}
	if want := []string{"deploy", "read-only"}; !slices.Equal(ci.Roles, want) {
		t.Errorf("ci.Roles = %q, want %q", ci.Roles, want)
	}
	if want := []string{"alice", "bob", "viewer"}; !slices.Equal(ci.Traits["logins"], want) {
		t.Errorf("ci.Traits[logins] = %q, want %q", ci.Traits["logins"], want)
	}
	if want := (Location{filepath.Join(dir, "20-bots.yml"), 2}); ci.Source != want {
		t.Errorf("ci.Source = %v, want %v", ci.Source, want)
	}
	web, _ := s.Bot("web")
	if web.Traits != nil {
		t.Errorf("web.Traits = %v, want nil", web.Traits)
	}

	if _, ok := s.Role("nope"); ok {
		t.Error(`Role("nope") found`)
	}
	if _, ok := s.Bot("deploy"); ok {
		t.Error(`Bot("deploy") found; roles and bots must not mix`)
	}

	// Values returned by the Set must not alias its contents.
	ci.Roles[0] = "mutated"
	ci.Traits["logins"][0] = "mutated"
	deploy.Logins[0] = "mutated"
	if again, _ := s.Bot("ci"); again.Roles[0] != "deploy" || again.Traits["logins"][0] != "alice" {
		t.Error("mutating a returned Bot changed the Set")
	}
	if again, _ := s.Role("deploy"); again.Logins[0] != "deploy" {
		t.Error("mutating a returned Role changed the Set")
	}
}

func TestGrant(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"roles.yaml": rolesYAML + extraRoleYAML,
		"bots.yaml": botsYAML + `---
kind: bot
version: v1
metadata:
  name: ops
spec:
  roles: [admin, read-only]
  traits:
    admins: [carol, root]
    logins: [unused]
---
kind: bot
version: v1
metadata:
  name: lonely
spec:
  roles: [deploy]
`,
	})
	s, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}

	tests := []struct {
		bot    string
		roles  []string
		logins []string
		maxTTL time.Duration
	}{
		// Union of both roles, trait expanded, "deploy" and "viewer" once.
		{"ci", []string{"deploy", "read-only"}, []string{"alice", "bob", "deploy", "viewer"}, time.Hour},
		{"web", []string{"read-only"}, []string{"deploy", "viewer"}, DefaultMaxTTL},
		// Only the traits that the roles reference are used.
		{"ops", []string{"admin", "read-only"}, []string{"carol", "deploy", "root", "viewer"}, 30 * time.Minute},
		// A template naming a missing trait expands to nothing.
		{"lonely", []string{"deploy"}, []string{"deploy"}, time.Hour},
	}
	for _, tt := range tests {
		t.Run(tt.bot, func(t *testing.T) {
			g, err := s.Grant(tt.bot)
			if err != nil {
				t.Fatalf("Grant(%q): %v", tt.bot, err)
			}
			if g.Bot != tt.bot {
				t.Errorf("Bot = %q, want %q", g.Bot, tt.bot)
			}
			if !slices.Equal(g.Roles, tt.roles) {
				t.Errorf("Roles = %q, want %q", g.Roles, tt.roles)
			}
			if !slices.Equal(g.Logins, tt.logins) {
				t.Errorf("Logins = %q, want %q", g.Logins, tt.logins)
			}
			if g.MaxTTL != tt.maxTTL {
				t.Errorf("MaxTTL = %v, want %v", g.MaxTTL, tt.maxTTL)
			}
		})
	}

	t.Run("unknown", func(t *testing.T) {
		_, err := s.Grant("ghost")
		if !errors.Is(err, ErrUnknownBot) {
			t.Fatalf("Grant(ghost) error = %v, want ErrUnknownBot", err)
		}
		if !strings.Contains(err.Error(), `"ghost"`) {
			t.Errorf("error %q does not name the bot", err)
		}
		if _, err := s.Grant("deploy"); !errors.Is(err, ErrUnknownBot) {
			t.Errorf("Grant of a role name: error = %v, want ErrUnknownBot", err)
		}
	})
}

// role returns a role document with the given spec lines appended.
func role(name string, spec ...string) string {
	s := "kind: role\nversion: v1\nmetadata:\n  name: " + name + "\n"
	if len(spec) > 0 {
		s += "spec:\n" + strings.Join(spec, "\n") + "\n"
	}
	return s
}

func TestLoadDirErrors(t *testing.T) {
	const okRole = "kind: role\nversion: v1\nmetadata:\n  name: deploy\n"
	tests := []struct {
		name  string
		files map[string]string
		want  []string // substrings, each "file:LINE: phrase"
	}{
		{
			name:  "unknown top-level field",
			files: map[string]string{"a.yaml": okRole + "spce: {}\n"},
			want:  []string{`a.yaml:5: unknown field "spce"`},
		},
		{
			name: "unknown nested field",
			files: map[string]string{"a.yaml": role("deploy",
				"  allow:",
				"    logins: [deploy]",
				"    lgins: [x]")},
			want: []string{`a.yaml:8: unknown field "lgins" in spec.allow`},
		},
		{
			name: "unknown option",
			files: map[string]string{"a.yaml": role("deploy",
				"  options:",
				"    ttl: 1h")},
			want: []string{`a.yaml:7: unknown field "ttl" in spec.options`},
		},
		{
			name:  "description on a bot",
			files: map[string]string{"a.yaml": okRole + "---\nkind: bot\nversion: v1\nmetadata:\n  name: ci\n  description: x\nspec:\n  roles: [deploy]\n"},
			want:  []string{`a.yaml:10: unknown field "description" in metadata`},
		},
		{
			name:  "missing kind",
			files: map[string]string{"a.yaml": "version: v1\nmetadata:\n  name: x\n"},
			want:  []string{`a.yaml:1: missing kind`},
		},
		{
			name:  "unknown kind",
			files: map[string]string{"a.yaml": "\nkind: user\nversion: v1\nmetadata:\n  name: x\n"},
			want:  []string{`a.yaml:2: unknown kind "user" (want role, bot, kube_cluster or token)`},
		},
		{
			name:  "bad version",
			files: map[string]string{"a.yaml": "kind: role\nversion: v2\nmetadata:\n  name: x\n"},
			want:  []string{`a.yaml:2: unsupported version "v2" (want v1)`},
		},
		{
			name:  "missing version",
			files: map[string]string{"a.yaml": "kind: role\nmetadata:\n  name: x\n"},
			want:  []string{`a.yaml:1: missing version`},
		},
		{
			name:  "missing metadata",
			files: map[string]string{"a.yaml": "kind: role\nversion: v1\n"},
			want:  []string{`a.yaml:1: missing metadata.name`},
		},
		{
			name:  "missing name",
			files: map[string]string{"a.yaml": "kind: role\nversion: v1\nmetadata:\n  description: x\n"},
			want:  []string{`a.yaml:4: missing metadata.name`},
		},
		{
			name:  "invalid name",
			files: map[string]string{"a.yaml": role("Deploy")},
			want:  []string{`a.yaml:4: invalid metadata.name "Deploy"`},
		},
		{
			name:  "name too long",
			files: map[string]string{"a.yaml": role(strings.Repeat("a", 64))},
			want:  []string{`a.yaml:4: invalid metadata.name`},
		},
		{
			name: "duplicate role across files",
			files: map[string]string{
				"a.yaml": role("deploy"),
				"b.yaml": "\n" + role("deploy"),
			},
			want: []string{`b.yaml:5: duplicate role "deploy" (first defined at `, `a.yaml:4)`},
		},
		{
			name:  "duplicate bot in one file",
			files: map[string]string{"a.yaml": okRole + "---\nkind: bot\nversion: v1\nmetadata: {name: ci}\nspec: {roles: [deploy]}\n---\nkind: bot\nversion: v1\nmetadata: {name: ci}\nspec: {roles: [deploy]}\n"},
			want:  []string{`a.yaml:13: duplicate bot "ci" (first defined at `, `a.yaml:8)`},
		},
		{
			name: "bot with unknown role",
			files: map[string]string{
				"a.yaml": okRole,
				"b.yaml": "kind: bot\nversion: v1\nmetadata:\n  name: ci\nspec:\n  roles:\n    - deploy\n    - deplyo\n",
			},
			want: []string{`b.yaml:8: bot "ci" references unknown role "deplyo"`},
		},
		{
			name:  "bot with empty roles",
			files: map[string]string{"a.yaml": "kind: bot\nversion: v1\nmetadata:\n  name: ci\nspec:\n  roles: []\n"},
			want:  []string{`a.yaml:6: bot "ci" has no roles`},
		},
		{
			name:  "bot without spec",
			files: map[string]string{"a.yaml": "kind: bot\nversion: v1\nmetadata:\n  name: ci\n"},
			want:  []string{`a.yaml:1: bot "ci" has no roles`},
		},
		{
			name:  "bot role listed twice",
			files: map[string]string{"a.yaml": okRole + "---\nkind: bot\nversion: v1\nmetadata: {name: ci}\nspec:\n  roles: [deploy,\n    deploy]\n"},
			want:  []string{`a.yaml:11: role "deploy" listed twice`},
		},
		{
			name:  "empty login",
			files: map[string]string{"a.yaml": role("r", "  allow:", `    logins: [""]`)},
			want:  []string{`a.yaml:7: invalid login "" in spec.allow.logins: must not be empty`},
		},
		{
			name:  "null login",
			files: map[string]string{"a.yaml": role("r", "  allow:", "    logins:", "      -")},
			want:  []string{`a.yaml:8: invalid login "" in spec.allow.logins: must not be empty`},
		},
		{
			name:  "login with space",
			files: map[string]string{"a.yaml": role("r", "  allow:", `    logins: ["a b"]`)},
			want:  []string{`a.yaml:7: invalid login "a b" in spec.allow.logins: must not contain whitespace`},
		},
		{
			name:  "login with control character",
			files: map[string]string{"a.yaml": role("r", "  allow:", `    logins: ["a\u0007b"]`)},
			want:  []string{`a.yaml:7: invalid login "a\ab" in spec.allow.logins: must not contain whitespace or control`},
		},
		{
			name:  "login with comma",
			files: map[string]string{"a.yaml": role("r", "  allow:", `    logins: ["a,b"]`)},
			want:  []string{`a.yaml:7: invalid login "a,b" in spec.allow.logins: must not contain a comma`},
		},
		{
			name:  "external template",
			files: map[string]string{"a.yaml": role("r", "  allow:", `    logins: ["{{external.logins}}"]`)},
			want:  []string{`a.yaml:7: invalid login "{{external.logins}}" in spec.allow.logins: unsupported template`},
		},
		{
			name:  "template with spaces",
			files: map[string]string{"a.yaml": role("r", "  allow:", `    logins: ["{{ internal.logins }}"]`)},
			want:  []string{`a.yaml:7: invalid login "{{ internal.logins }}" in spec.allow.logins: unsupported template`},
		},
		{
			name:  "template with suffix",
			files: map[string]string{"a.yaml": role("r", "  allow:", `    logins: ["{{internal.logins}}-x"]`)},
			want:  []string{`a.yaml:7: invalid login "{{internal.logins}}-x" in spec.allow.logins: unsupported template`},
		},
		{
			name:  "logins not a list",
			files: map[string]string{"a.yaml": role("r", "  allow:", "    logins: deploy")},
			want:  []string{`a.yaml:7: spec.allow.logins must be a list`},
		},
		{
			name:  "max_ttl not a duration",
			files: map[string]string{"a.yaml": role("r", "  options:", "    max_ttl: forever")},
			want:  []string{`a.yaml:7: invalid spec.options.max_ttl "forever": not a duration`},
		},
		{
			name:  "max_ttl without unit",
			files: map[string]string{"a.yaml": role("r", "  options:", "    max_ttl: 3600")},
			want:  []string{`a.yaml:7: invalid spec.options.max_ttl "3600": not a duration`},
		},
		{
			name:  "max_ttl zero",
			files: map[string]string{"a.yaml": role("r", "  options:", "    max_ttl: 0s")},
			want:  []string{`a.yaml:7: invalid spec.options.max_ttl "0s": must be positive`},
		},
		{
			name:  "max_ttl negative",
			files: map[string]string{"a.yaml": role("r", "  options:", "    max_ttl: -1h")},
			want:  []string{`a.yaml:7: invalid spec.options.max_ttl "-1h": must be positive`},
		},
		{
			name:  "max_ttl too long",
			files: map[string]string{"a.yaml": role("r", "  options:", "    max_ttl: 721h")},
			want:  []string{`a.yaml:7: invalid spec.options.max_ttl "721h": must be at most 720h`},
		},
		{
			name:  "max_ttl empty",
			files: map[string]string{"a.yaml": role("r", "  options:", "    max_ttl:")},
			want:  []string{`a.yaml:7: invalid spec.options.max_ttl "": not a duration`},
		},
		{
			name:  "duplicate field",
			files: map[string]string{"a.yaml": role("r", "  allow:", "    logins: [a]", "  allow:", "    logins: [b]")},
			want:  []string{`a.yaml:8: duplicate field "allow" in spec (first at line 6)`},
		},
		{
			name:  "merge key",
			files: map[string]string{"a.yaml": role("r", "  allow: &a {logins: [x]}", "  options:", "    <<: *a")},
			want:  []string{`a.yaml:8: merge keys (<<) are not supported in spec.options`},
		},
		{
			name:  "unsupported tag",
			files: map[string]string{"a.yaml": role("r", "  allow:", "    logins: [!!binary ZGVwbG95]")},
			want:  []string{`a.yaml:7: spec.allow.logins entry has unsupported tag !!binary`},
		},
		{
			name: "invalid trait",
			files: map[string]string{"a.yaml": okRole + "---\nkind: bot\nversion: v1\nmetadata: {name: ci}\nspec:\n  roles: [deploy]\n  traits:\n" +
				"    logins: [\"a b\", \"{{internal.x}}\"]\n    bad-name: [x]\n    scalar: x\n"},
			want: []string{
				`a.yaml:12: invalid value "a b" for trait "logins": must not contain whitespace`,
				`a.yaml:12: invalid value "{{internal.x}}" for trait "logins": templates are not allowed`,
				`a.yaml:13: invalid trait name "bad-name"`,
				`a.yaml:14: spec.traits.scalar must be a list`,
			},
		},
		{
			name:  "document not a mapping",
			files: map[string]string{"a.yaml": "- kind: role\n"},
			want:  []string{`a.yaml:1: resource must be a mapping, not a list`},
		},
		{
			name:  "spec not a mapping",
			files: map[string]string{"a.yaml": role("r") + "spec: [allow]\n"},
			want:  []string{`a.yaml:5: spec must be a mapping, not a list`},
		},
		{
			name:  "syntax error",
			files: map[string]string{"a.yaml": "kind: role\nversion: v1\nmetadata: [\n"},
			want:  []string{`a.yaml:3: invalid YAML: did not find expected node content`},
		},
		{
			name:  "unclosed bracket",
			files: map[string]string{"a.yaml": "kind: role\nversion: v1\nmetadata: {name: r}\nspec:\n  allow:\n    logins: [a, b\n    host_names: [x]\n"},
			want:  []string{`a.yaml:6: invalid YAML: did not find expected ',' or ']'`},
		},
		{
			name:  "unclosed brace on the first line",
			files: map[string]string{"a.yaml": "{kind: role\nversion: v1\n"},
			want:  []string{`a.yaml:1: invalid YAML: did not find expected ',' or '}'`},
		},
		{
			name:  "syntax error on first line",
			files: map[string]string{"a.yaml": "kind: role: bot\n"},
			want:  []string{`a.yaml:1: invalid YAML: mapping values are not allowed`},
		},
		{
			name:  "control character in file",
			files: map[string]string{"a.yaml": "kind: role\nversion: v1\nmetadata:\n  name: \x01\n"},
			want:  []string{`a.yaml:4: invalid YAML: control characters are not allowed`},
		},
		{
			name:  "invalid UTF-8",
			files: map[string]string{"a.yaml": "kind: role\n\nversion: \xc3\x28\n"},
			want:  []string{`a.yaml:3: invalid YAML: invalid trailing UTF-8 octet`},
		},
		{
			name:  "unknown anchor",
			files: map[string]string{"a.yaml": "kind: role\nversion: *v\n"},
			want:  []string{`a.yaml:2: invalid YAML: unknown anchor 'v'`},
		},
		{
			name: "errors are collected across documents and files",
			files: map[string]string{
				"a.yaml": role("r", "  options:", "    max_ttl: 0s") + "---\n" + role("s", "  allow:", `    logins: ["a,b"]`),
				"b.yaml": "kind: bot\nversion: v2\nmetadata: {name: ci}\nspec: {roles: [nope]}\n",
				"c.yaml": "kind: role\nversion: v1\nmetadata: {name: ok}\nspec: {allow: {logins: [ok]}}\n---\nkind: role\n",
			},
			want: []string{
				`a.yaml:7: invalid spec.options.max_ttl "0s": must be positive`,
				`a.yaml:15: invalid login "a,b"`,
				`b.yaml:2: unsupported version "v2"`,
				`b.yaml:4: bot "ci" references unknown role "nope"`,
				`c.yaml:6: missing version`,
				`c.yaml:6: missing metadata.name`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeDir(t, tt.files)
			s, err := LoadDir(dir)
			if err == nil {
				t.Fatalf("LoadDir succeeded, want errors %q", tt.want)
			}
			if s != nil {
				t.Errorf("LoadDir returned a Set with an error")
			}
			msg := err.Error()
			last := -1
			for _, w := range tt.want {
				i := strings.Index(msg, w)
				if i < 0 {
					t.Errorf("error does not contain %q:\n%s", w, msg)
					continue
				}
				if i < last {
					t.Errorf("error %q is out of order:\n%s", w, msg)
				}
				last = i
			}
			checkErrorLines(t, msg, dir)
		})
	}
}

var errLineRE = regexp.MustCompile(`^(.+):([1-9][0-9]*): \S`)

// checkErrorLines checks that every line of msg starts with "FILE:LINE: ",
// where FILE is in dir.
func checkErrorLines(t *testing.T, msg, dir string) {
	t.Helper()
	for line := range strings.SplitSeq(msg, "\n") {
		m := errLineRE.FindStringSubmatch(line)
		if m == nil || filepath.Dir(m[1]) != dir {
			t.Errorf("error line %q does not start with %q", line, filepath.Join(dir, "FILE")+":LINE: ")
		}
	}
}

func TestLoadDirEmptyDocuments(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"a.yaml": "---\n" + role("a") + "---\n---\n# only a comment\n---\n",
		"b.yaml": "",
		"c.yml":  "# nothing here yet\n",
		"d.yaml": "---\n...\n",
	})
	s, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	if got := len(s.Roles()); got != 1 {
		t.Errorf("got %d roles, want 1", got)
	}
	if got := len(s.Files()); got != 4 {
		t.Errorf("got %d files, want 4", got)
	}
}

func TestLoadDirEmpty(t *testing.T) {
	s, err := LoadDir(t.TempDir())
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	if len(s.Roles()) != 0 || len(s.Bots()) != 0 || len(s.Files()) != 0 {
		t.Errorf("empty directory gave roles %v, bots %v, files %v", s.Roles(), s.Bots(), s.Files())
	}
	if _, err := s.Grant("ci"); !errors.Is(err, ErrUnknownBot) {
		t.Errorf("Grant on empty set: error = %v, want ErrUnknownBot", err)
	}
}

func TestLoadDirMissing(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "no-such-dir")
	s, err := LoadDir(dir)
	if err == nil {
		t.Fatalf("LoadDir(%q) succeeded with %v", dir, s)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v is not fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the directory", err)
	}
}

// TestLoadDirSkips checks that hidden files, other extensions, directories
// and the "..data" layout of a Kubernetes ConfigMap volume are handled.
func TestLoadDirSkips(t *testing.T) {
	const broken = "this: is: not valid yaml\n"
	dir := writeDir(t, map[string]string{
		".hidden.yaml":                       broken,
		".roles.yaml.swp":                    broken,
		"roles.yaml~":                        broken,
		"notes.txt":                          broken,
		"subdir.yaml/inner.yaml":             broken,
		"..2024_01_01_00_00_00.1/roles.yaml": role("deploy"),
		"..2024_01_01_00_00_00.1/bad.yaml":   broken,
		"real/bots.yaml":                     "kind: bot\nversion: v1\nmetadata: {name: ci}\nspec: {roles: [deploy]}\n",
	})
	// What the kubelet creates: ..data points at the current timestamped
	// directory, and each key is a symlink through ..data.
	symlink(t, "..2024_01_01_00_00_00.1", filepath.Join(dir, "..data"))
	symlink(t, filepath.Join("..data", "roles.yaml"), filepath.Join(dir, "roles.yaml"))
	// A symlink to a file elsewhere is followed; one to a directory is not.
	symlink(t, filepath.Join(dir, "real", "bots.yaml"), filepath.Join(dir, "bots.yml"))
	symlink(t, "real", filepath.Join(dir, "linkdir.yaml"))

	s, err := LoadDir(dir)
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	want := []string{filepath.Join(dir, "bots.yml"), filepath.Join(dir, "roles.yaml")}
	if got := s.Files(); !slices.Equal(got, want) {
		t.Errorf("Files() = %q, want %q", got, want)
	}
	if _, ok := s.Role("deploy"); !ok {
		t.Error("role from ..data symlink not loaded")
	}
	if _, err := s.Grant("ci"); err != nil {
		t.Errorf("Grant(ci): %v", err)
	}
}

func TestLoadDirBrokenSymlink(t *testing.T) {
	dir := t.TempDir()
	symlink(t, "missing.yaml", filepath.Join(dir, "a.yaml"))
	if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), filepath.Join(dir, "a.yaml")) {
		t.Errorf("LoadDir with a dangling symlink: error = %v, want one naming a.yaml", err)
	}
}

func TestParse(t *testing.T) {
	data := rolesYAML + "---\n" + "kind: bot\nversion: v1\nmetadata: {name: ci}\nspec: {roles: [elsewhere]}\n"
	res, err := Parse("in.yaml", []byte(data))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if len(res) != 3 {
		t.Fatalf("Parse returned %d resources, want 3", len(res))
	}
	if r, ok := res[0].(Role); !ok || r.Name != "deploy" || r.Source != (Location{"in.yaml", 2}) {
		t.Errorf("res[0] = %#v, want role deploy at in.yaml:2", res[0])
	}
	if r, ok := res[1].(Role); !ok || r.Name != "read-only" {
		t.Errorf("res[1] = %#v, want role read-only", res[1])
	}
	if b, ok := res[2].(Bot); !ok || b.Name != "ci" || !slices.Equal(b.Roles, []string{"elsewhere"}) {
		t.Errorf("res[2] = %#v, want bot ci", res[2])
	}

	res, err = Parse("in.yaml", []byte(role("a")+"---\n"+role("a")))
	if err == nil || res != nil {
		t.Fatalf("Parse of duplicate roles = %v, %v; want nil and an error", res, err)
	}
	if !strings.Contains(err.Error(), `in.yaml:9: duplicate role "a" (first defined at in.yaml:4)`) {
		t.Errorf("error = %v", err)
	}
}

func TestLocationString(t *testing.T) {
	if got := (Location{"dir/a.yaml", 12}).String(); got != "dir/a.yaml:12" {
		t.Errorf("String() = %q", got)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(rolesYAML + botsYAML))
	f.Add([]byte(extraRoleYAML))
	f.Add([]byte("kind: bot\nversion: v1\nmetadata: {name: ci}\nspec: {roles: [a], traits: {x: [y]}}\n"))
	f.Add([]byte("a: &x [*x]\nkind: *x\n"))
	f.Add([]byte("---\n---\nkind: role\nversion: v1\nmetadata: [\n"))
	f.Add([]byte("kind: role\nspec: {options: {max_ttl: 1h}, allow: {logins: [\"{{internal.a}}\", 'x']}}\n"))
	f.Add([]byte(kubeYAML))
	f.Add([]byte(tokensYAML()))
	// Teleport's formats: the guides' files, and greedy deny rules.
	if files, err := filepath.Glob(filepath.Join("testdata", "teleport", "*.yaml")); err == nil {
		for _, name := range files {
			if data, err := os.ReadFile(name); err == nil {
				f.Add(data)
			}
		}
	}
	f.Add([]byte("kind: role\nversion: v6\nmetadata: {name: r}\nspec:\n  allow: {kubernetes_labels: {a: b}, kubernetes_resources: [{kind: pod, namespace: a, name: b}]}\n" +
		"  deny: {logins: [root], node_labels: {a: ['b', c]}, kubernetes_labels: {'*': '*'}}\n  options: {max_session_ttl: 2h, forward_agent: true}\n"))
	f.Add([]byte("kind: bot\nversion: v1\nmetadata: {name: b, revision: x}\nspec: {roles: [r], traits: [{name: logins, values: [a]}]}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		res, err := Parse("fuzz.yaml", data)
		if err != nil {
			if res != nil {
				t.Errorf("Parse returned resources and an error")
			}
			for line := range strings.SplitSeq(err.Error(), "\n") {
				if m := errLineRE.FindStringSubmatch(line); m == nil || m[1] != "fuzz.yaml" {
					t.Errorf("error line %q does not start with fuzz.yaml:LINE: ", line)
				}
			}
			return
		}
		for _, r := range res {
			switch r := r.(type) {
			case Role:
				if !nameRE.MatchString(r.Name) || r.MaxTTL <= 0 || r.MaxTTL > MaxTTLLimit {
					t.Errorf("invalid role accepted: %#v", r)
				}
				if (len(r.DenyLogins) == 0) != (len(r.DenyNodeLabels) == 0) {
					t.Errorf("role with deny logins and deny node labels apart accepted: %#v", r)
				}
				for _, k := range r.KubernetesResources {
					if len(k.Verbs) == 0 || k.Name == "" || !slices.Contains(kubeResourceKinds, k.Kind) {
						t.Errorf("invalid kubernetes_resources entry accepted: %#v", k)
					}
				}
				for _, l := range r.Logins {
					if checkLogin(l, true) != nil {
						t.Errorf("invalid login accepted: %q", l)
					}
				}
			case Bot:
				if !nameRE.MatchString(r.Name) || len(r.Roles) == 0 {
					t.Errorf("invalid bot accepted: %#v", r)
				}
			case KubeCluster:
				if !nameRE.MatchString(r.Name) || checkServer(r.Server) != nil || checkCAPEM(r.CAData) != nil {
					t.Errorf("invalid kube_cluster accepted: %#v", r)
				}
			case Token:
				checkFuzzedToken(t, r)
			default:
				t.Errorf("unexpected resource type %T", r)
			}
		}
	})
}

func TestHostNames(t *testing.T) {
	dir := writeDir(t, map[string]string{"r.yaml": `kind: role
version: v1
metadata: {name: a}
spec:
  allow:
    host_names: [build-01, build-01.example.com]
---
kind: role
version: v1
metadata: {name: b}
spec:
  allow:
    host_names: [build-01, 10.0.0.5]
---
kind: bot
version: v1
metadata: {name: host}
spec:
  roles: [a, b]
`})
	s, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.Grant("host")
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"10.0.0.5", "build-01", "build-01.example.com"}; !slices.Equal(g.HostNames, want) {
		t.Errorf("HostNames = %q, want the sorted union %q", g.HostNames, want)
	}

	for _, bad := range []string{`"*.example.com"`, `"a b"`, `"{{internal.x}}"`} {
		dir := writeDir(t, map[string]string{"r.yaml": "kind: role\nversion: v1\nmetadata: {name: a}\nspec:\n  allow:\n    host_names: [" + bad + "]\n"})
		if _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), "r.yaml:6: invalid host name") {
			t.Errorf("host name %s: error %v, want r.yaml:6: invalid host name", bad, err)
		}
	}
}
