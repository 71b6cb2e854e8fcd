package resource

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/internal/sshaccess"
)

const sshRolesYAML = `kind: role
version: v1
metadata: {name: staging}
spec:
  allow:
    logins: [deploy, "{{internal.logins}}"]
    node_labels: {env: staging}
---
kind: role
version: v1
metadata: {name: every}
spec:
  allow:
    logins: [ops]
    node_labels: {'*': '*'}
  deny:
    logins: [deploy, "{{internal.denied}}"]
    node_labels:
      env: [prod, dr]
      team: '*'
  options:
    forward_agent: true
---
kind: role
version: v1
metadata: {name: no-root}
spec:
  deny:
    logins: [root]
    node_labels: {'*': '*'}
---
kind: role
version: v1
metadata: {name: host}
spec:
  allow:
    host_names: [h1]
    host_labels:
      env: [staging, prod]
      team: '*'
---
kind: role
version: v1
metadata: {name: legacy}
spec:
  allow:
    logins: [root, legacy]
---
kind: bot
version: v1
metadata: {name: ci}
spec:
  roles: [staging, every, no-root, legacy]
  traits:
    logins: [alice]
    denied: [mallory]
---
kind: bot
version: v1
metadata: {name: web}
spec:
  roles: [host]
`

func TestGrantSSHAccess(t *testing.T) {
	s, err := LoadDir(writeDir(t, map[string]string{"r.yaml": sshRolesYAML}))
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.Grant("ci")
	if err != nil {
		t.Fatal(err)
	}
	wantAllow := []sshaccess.Rule{
		{Role: "staging", Logins: []string{"alice", "deploy"}, NodeLabels: map[string][]string{"env": {"staging"}}},
		{Role: "every", Logins: []string{"ops"}, NodeLabels: map[string][]string{"*": {"*"}}},
		{Role: "no-root", Logins: []string{}},
		{Role: "legacy", Logins: []string{"legacy", "root"}},
	}
	if !reflect.DeepEqual(g.Allow, wantAllow) {
		t.Errorf("Allow = %+v\nwant %+v", g.Allow, wantAllow)
	}
	wantDeny := []sshaccess.Rule{
		{Role: "every", Logins: []string{"deploy", "mallory"}, NodeLabels: map[string][]string{"env": {"prod", "dr"}, "team": {"*"}}},
		{Role: "no-root", Logins: []string{"root"}, NodeLabels: map[string][]string{"*": {"*"}}},
	}
	if !reflect.DeepEqual(g.Deny, wantDeny) {
		t.Errorf("Deny = %+v\nwant %+v", g.Deny, wantDeny)
	}
	if !g.ForwardAgent {
		t.Error("ForwardAgent = false, want true: role every allows it")
	}
	// root is denied on every host, so it is no principal either; legacy
	// has no node_labels but stays a principal for unmanaged hosts.
	if want := []string{"alice", "deploy", "legacy", "ops"}; !slices.Equal(g.Logins, want) {
		t.Errorf("Logins = %q, want %q", g.Logins, want)
	}
	if len(g.HostLabels) != 0 || g.AllowsHostLabel("env", "staging") {
		t.Errorf("bot ci has no host_labels, got %v", g.HostLabels)
	}

	// The rules decide as a host would.
	a := sshaccess.Access{Bot: "ci", Instance: "i", Allow: g.Allow, Deny: g.Deny}
	for _, tt := range []struct {
		login  string
		labels map[string]string
		ok     bool
	}{
		{"deploy", map[string]string{"env": "staging"}, true},
		{"alice", map[string]string{"env": "staging"}, true},
		{"deploy", map[string]string{"env": "prod"}, false},
		{"deploy", map[string]string{"env": "prod", "team": "db"}, false},
		{"ops", map[string]string{"env": "prod", "team": "db"}, true},
		{"mallory", map[string]string{"env": "dr", "team": "x"}, false},
		{"legacy", map[string]string{"env": "staging"}, false},
	} {
		if err := a.Decide(tt.login, tt.labels); (err == nil) != tt.ok {
			t.Errorf("Decide(%s, %v) = %v, want allowed %v", tt.login, tt.labels, err, tt.ok)
		}
	}

	web, err := s.Grant("web")
	if err != nil {
		t.Fatal(err)
	}
	if web.ForwardAgent {
		t.Error("bot web: ForwardAgent = true, want false")
	}
	for _, tt := range []struct {
		k, v string
		ok   bool
	}{
		{"env", "staging", true},
		{"env", "prod", true},
		{"env", "dev", false},
		{"team", "anything", true},
		{"owner", "x", false},
	} {
		if got := web.AllowsHostLabel(tt.k, tt.v); got != tt.ok {
			t.Errorf("AllowsHostLabel(%s, %s) = %v, want %v", tt.k, tt.v, got, tt.ok)
		}
	}

	// Mutating the grant does not change the set.
	g.Allow[0].NodeLabels["env"][0] = "changed"
	if again, _ := s.Grant("ci"); again.Allow[0].NodeLabels["env"][0] != "staging" {
		t.Error("mutating a Grant changed the Set")
	}
	if r, _ := s.Role("every"); !r.ForwardAgent || r.DenyNodeLabels["env"][1] != "dr" {
		t.Errorf("Role(every) = %+v", r)
	}
}

func TestHostLabelsWildcard(t *testing.T) {
	s, err := LoadDir(writeDir(t, map[string]string{"r.yaml": role("all", "  allow:", "    host_labels: {'*': '*'}") +
		"---\nkind: bot\nversion: v1\nmetadata: {name: b}\nspec:\n  roles: [all]\n"}))
	if err != nil {
		t.Fatal(err)
	}
	g, _ := s.Grant("b")
	if !g.AllowsHostLabel("anything", "at-all") {
		t.Error("host_labels {'*': '*'} does not allow a label")
	}
}

func TestSSHAccessErrors(t *testing.T) {
	tests := []struct {
		name string
		data string
		want string
	}{
		{"node_labels wildcard key with a value", role("r", "  allow:", "    node_labels: {'*': prod}"),
			`a.yaml:7: the key "*" in spec.allow.node_labels takes only the value "*" (every host)`},
		{"host_labels wildcard key with a list", role("r", "  allow:", "    host_labels:", "      '*': ['*', x]"),
			`a.yaml:8: the key "*" in spec.allow.host_labels takes only the value "*"`},
		{"node_labels bad key", role("r", "  allow:", "    node_labels: {'a b': x}"),
			`a.yaml:7: invalid label key "a b" in spec.allow.node_labels`},
		{"node_labels empty list", role("r", "  allow:", "    node_labels:", "      env: []"),
			`a.yaml:8: spec.allow.node_labels.env lists no values`},
		{"node_labels not a mapping", role("r", "  allow:", "    node_labels: [env]"),
			`a.yaml:7: spec.allow.node_labels must be a mapping, not a list`},
		{"node_labels nested value", role("r", "  allow:", "    node_labels:", "      env: {a: b}"),
			`a.yaml:8: spec.allow.node_labels.env must be a string, not a mapping`},
		{"host_labels bad value", role("r", "  allow:", "    host_labels: {env: \"a\\x01\"}"),
			`a.yaml:7: invalid value "a\x01" in spec.allow.host_labels.env: must not contain control characters`},
		{"deny unknown field", role("r", "  deny:", "    host_names: [x]"),
			`a.yaml:7: unknown field "host_names" in spec.deny (want logins, node_labels)`},
		{"deny logins without node_labels", role("r", "  deny:", "    logins: [root]"),
			`a.yaml:7: spec.deny.logins denies nothing without spec.deny.node_labels`},
		{"deny node_labels without logins", role("r", "  deny:", "    node_labels: {env: prod}"),
			`a.yaml:7: spec.deny.node_labels denies nothing without spec.deny.logins`},
		{"deny bad login", role("r", "  deny:", "    logins: ['a b']", "    node_labels: {'*': '*'}"),
			`a.yaml:7: invalid login "a b" in spec.deny.logins: must not contain whitespace`},
		{"deny node_labels wildcard", role("r", "  deny:", "    logins: [root]", "    node_labels: {'*': x}"),
			`a.yaml:8: the key "*" in spec.deny.node_labels takes only the value "*"`},
		{"deny not a mapping", role("r", "  deny: [root]"),
			`a.yaml:6: spec.deny must be a mapping, not a list`},
		{"forward_agent not a bool", role("r", "  options:", "    forward_agent: yes-please"),
			`a.yaml:7: spec.options.forward_agent must be true or false, not the value "yes-please"`},
		{"forward_agent quoted", role("r", "  options:", "    forward_agent: 'true'"),
			`a.yaml:7: spec.options.forward_agent must be true or false, not the value "true"`},
		{"forward_agent a list", role("r", "  options:", "    forward_agent: [true]"),
			`a.yaml:7: spec.options.forward_agent must be true or false, not a list`},
		{"duplicate node_labels", role("r", "  allow:", "    node_labels: {env: a}", "    node_labels: {env: b}"),
			`a.yaml:8: duplicate field "node_labels" in spec.allow`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeDir(t, map[string]string{"a.yaml": tt.data})
			_, err := LoadDir(dir)
			if err == nil {
				t.Fatalf("LoadDir succeeded, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error does not contain %q:\n%v", tt.want, err)
			}
			checkErrorLines(t, err.Error(), dir)
		})
	}
}
