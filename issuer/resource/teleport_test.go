package resource

import (
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/internal/sshaccess"
)

// readTeleport returns the named files of testdata/teleport, which hold
// the guides' files as printed.
func readTeleport(t *testing.T, names ...string) map[string]string {
	t.Helper()
	out := make(map[string]string, len(names))
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join("testdata", "teleport", name))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = string(data)
	}
	return out
}

// parseOne parses data, which must hold one valid document.
func parseOne(t *testing.T, name, data string) Resource {
	t.Helper()
	res, err := Parse(name, []byte(data))
	if err != nil {
		t.Fatalf("Parse(%s): %v", name, err)
	}
	if len(res) != 1 {
		t.Fatalf("Parse(%s) = %d resources, want 1", name, len(res))
	}
	return res[0]
}

// TestTeleportGuideFiles loads the files of Teleport's Machine ID
// getting-started guide as printed, each with resource.Parse and each set
// (server and Kubernetes) as a directory, and checks what they mean.
func TestTeleportGuideFiles(t *testing.T) {
	server := readTeleport(t, "github_bot.yaml", "github_bot_join_token.yaml", "github_bot_server_role.yaml")
	k8s := readTeleport(t, "github_bot.yaml", "github_bot_join_token.yaml", "github_bot_k8s_role.yaml")

	checkBotAndToken := func(t *testing.T, bot Bot, tok Token) {
		t.Helper()
		if bot.Name != "github-bot" || !slices.Equal(bot.Roles, []string{"github-bot"}) || bot.Traits != nil {
			t.Errorf("bot = %+v, want github-bot with roles [github-bot]", bot)
		}
		gh := tok.GitHub()
		if tok.Name != "github-bot" || tok.BotName != "github-bot" || tok.JoinMethod != "github" || gh == nil {
			t.Fatalf("token = %+v, want github-bot joining bot github-bot with github", tok)
		}
		want := []GitHubRule{{Repository: "your-github-username/mwi-getting-started-guide"}}
		if !slices.Equal(gh.Allow, want) || gh.EnterpriseServerHost != "" || gh.EnterpriseSlug != "" {
			t.Errorf("github block = %+v, want allow %+v", gh, want)
		}
		claims := map[string]any{"repository": "your-github-username/mwi-getting-started-guide", "ref": "refs/heads/main"}
		if _, ok := gh.Match(claims); !ok {
			t.Errorf("the guide's token does not admit a job of its repository")
		}
		if _, ok := gh.Match(map[string]any{"repository": "someone/else"}); ok {
			t.Errorf("the guide's token admits a job of another repository")
		}
	}

	t.Run("server", func(t *testing.T) {
		for name, data := range server {
			parseOne(t, name, data)
		}
		r := parseOne(t, "github_bot_server_role.yaml", server["github_bot_server_role.yaml"]).(Role)
		if r.Name != "github-bot" || !slices.Equal(r.Logins, []string{"ubuntu"}) ||
			!slices.Equal(r.NodeLabels["env"], []string{"my-env-label"}) || len(r.NodeLabels) != 1 ||
			r.MaxTTL != TeleportDefaultMaxTTL || r.KubernetesLabels != nil {
			t.Errorf("role = %+v, want logins [ubuntu] on env=my-env-label for 30h", r)
		}

		s, err := LoadDir(writeDir(t, server))
		if err != nil {
			t.Fatal(err)
		}
		bot, _ := s.Bot("github-bot")
		tok, _ := s.Token("github-bot")
		checkBotAndToken(t, bot, tok)
		g, err := s.Grant("github-bot")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(g.Logins, []string{"ubuntu"}) || g.MaxTTL != 30*time.Hour || len(g.Deny) != 0 {
			t.Errorf("grant = %+v, want login ubuntu for 30h", g)
		}
		acc := sshaccess.Access{Bot: "github-bot", Allow: g.Allow, Deny: g.Deny}
		if err := acc.Decide("ubuntu", map[string]string{"env": "my-env-label"}); err != nil {
			t.Errorf("ubuntu on env=my-env-label: %v", err)
		}
		if err := acc.Decide("ubuntu", map[string]string{"env": "other"}); err == nil {
			t.Errorf("ubuntu on env=other is allowed")
		}
	})

	t.Run("kubernetes", func(t *testing.T) {
		for name, data := range k8s {
			parseOne(t, name, data)
		}
		s, err := LoadDir(writeDir(t, k8s))
		if err != nil {
			t.Fatal(err)
		}
		r, _ := s.Role("github-bot")
		want := []KubernetesResource{{Kind: "*", Namespace: "default", Name: "*", Verbs: []string{"*"}}}
		if !slices.Equal(r.KubernetesLabels["env"], []string{"my-env-label"}) ||
			!slices.Equal(r.KubernetesGroups, []string{"system:masters"}) || r.Logins != nil ||
			!slices.EqualFunc(r.KubernetesResources, want, equalKubeResource) {
			t.Errorf("role = %+v, want kubernetes_labels env=my-env-label, group system:masters, resources %+v", r, want)
		}
		bot, _ := s.Bot("github-bot")
		tok, _ := s.Token("github-bot")
		checkBotAndToken(t, bot, tok)
		acc, ok, err := s.KubeAccess("github-bot", KubeCluster{Name: "c", Labels: map[string]string{"env": "my-env-label"}})
		if err != nil || !ok || !slices.Equal(acc.Groups, []string{"system:masters"}) {
			t.Errorf("KubeAccess = %+v, %v, %v; want group system:masters", acc, ok, err)
		}
	})

	t.Run("deployment guide token", func(t *testing.T) {
		files := readTeleport(t, "bot-token.yaml")
		tok := parseOne(t, "bot-token.yaml", files["bot-token.yaml"]).(Token)
		if tok.Name != "example-bot" || tok.BotName != "example" || tok.GitHub() == nil ||
			!slices.Equal(tok.GitHub().Allow, []GitHubRule{{Repository: "gravitational/example"}}) {
			t.Errorf("token = %+v", tok)
		}
	})
}

func equalKubeResource(a, b KubernetesResource) bool {
	return a.Kind == b.Kind && a.Namespace == b.Namespace && a.Name == b.Name && slices.Equal(a.Verbs, b.Verbs)
}

// TestTeleportReferenceRoles loads the example roles of Teleport's own
// reference pages: the one MWI can honour, and the one it refuses.
func TestTeleportReferenceRoles(t *testing.T) {
	files := readTeleport(t, "example-role.yaml", "kube-access.yaml")

	// Allow env=stage, deny every login on workload=database or backup.
	r := parseOne(t, "example-role.yaml", files["example-role.yaml"]).(Role)
	if !slices.Equal(r.NodeLabels["env"], []string{"stage"}) ||
		!slices.Equal(r.DenyHosts["workload"], []string{"database", "backup"}) || r.DenyLogins != nil {
		t.Errorf("example-role = %+v", r)
	}

	_, err := Parse("kube-access.yaml", []byte(files["kube-access.yaml"]))
	want := `kube-access.yaml:13: invalid spec.allow.kubernetes_resources[0].name "^webapp-[a-z0-9-]+$": MWI turns kubernetes_resources into Kubernetes RBAC, which names objects exactly`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("kube-access.yaml: error %v, want %q", err, want)
	}
	if err != nil && strings.Count(err.Error(), "\n") != 0 {
		t.Errorf("kube-access.yaml: want one error, got:\n%v", err)
	}
}

// teleportRole returns a Teleport role document of the given version
// whose spec is the given lines.
func teleportRole(version string, spec ...string) string {
	return "kind: role\nversion: " + version + "\nmetadata:\n  name: r\nspec:\n" + strings.Join(spec, "\n") + "\n"
}

// TestTeleportRefusedFields checks that fields Teleport defines and MWI
// cannot honour are refused at their line with what MWI does instead.
func TestTeleportRefusedFields(t *testing.T) {
	tests := []struct {
		name, doc string
		want      string // the error, after "t.yaml:"
	}{
		{"app labels", teleportRole("v7", "  allow:", "    app_labels: {'*': '*'}"),
			"7: spec.allow.app_labels: MWI issues no application access"},
		{"db labels in deny", teleportRole("v7", "  deny:", "    db_labels: {'*': '*'}"),
			"7: spec.deny.db_labels: MWI issues no database access"},
		{"rules", teleportRole("v7", "  allow:", "    rules: []"),
			"7: spec.allow.rules: MWI bots have no access to the issuer's API"},
		{"label expression", teleportRole("v7", "  allow:", "    node_labels_expression: 'true'"),
			"7: spec.allow.node_labels_expression: MWI selects by label maps only"},
		{"windows logins", teleportRole("v6", "  allow:", "    windows_desktop_logins: [a]"),
			"7: spec.allow.windows_desktop_logins: MWI issues no Windows desktop access"},
		{"request", teleportRole("v5", "  allow:", "    request: {roles: [a]}"),
			"7: spec.allow.request: MWI has no access requests"},
		{"host sudoers", teleportRole("v7", "  allow:", "    host_sudoers: [a]"),
			"7: spec.allow.host_sudoers: MWI does not create users on hosts"},
		{"deny kubernetes groups", teleportRole("v7", "  deny:", "    kubernetes_groups: [a]"),
			"7: spec.deny.kubernetes_groups: MWI cannot take a group back"},
		{"deny kubernetes users", teleportRole("v7", "  deny:", "    kubernetes_users: [a]"),
			"7: spec.deny.kubernetes_users: MWI cannot take a user back"},
		{"deny kubernetes resources", teleportRole("v7", "  deny:", "    kubernetes_resources: []"),
			"7: spec.deny.kubernetes_resources: MWI turns kubernetes_resources into Kubernetes RBAC, which only grants"},
		{"MWI's host_names", teleportRole("v7", "  allow:", "    host_names: [a]"),
			"7: spec.allow.host_names: an MWI field: write the role in MWI's version v1"},
		{"MWI's max_ttl", teleportRole("v7", "  options:", "    max_ttl: 1h"),
			"7: spec.options.max_ttl: the MWI name of the option"},
		{"port forwarding", teleportRole("v7", "  options:", "    port_forwarding: false"),
			"7: spec.options.port_forwarding: MWI certificates always permit port forwarding"},
		{"x11", teleportRole("v7", "  options:", "    permit_x11_forwarding: true"),
			"7: spec.options.permit_x11_forwarding: MWI certificates never permit X11 forwarding"},
		{"record session", teleportRole("v7", "  options:", "    record_session: {default: best_effort}"),
			"7: spec.options.record_session: MWI has no proxy and records no sessions"},
		{"session mfa", teleportRole("v7", "  options:", "    require_session_mfa: true"),
			"7: spec.options.require_session_mfa: bots have no second factor"},
		{"role expires", "kind: role\nversion: v7\nmetadata:\n  name: r\n  expires: 2030-01-01T00:00:00Z\n",
			"5: metadata.expires: MWI roles do not expire"},
		{"cert format", teleportRole("v7", "  options:", "    cert_format: oldssh"),
			"7: spec.options.cert_format: MWI issues standard OpenSSH certificates only (want standard, or leave it out)"},
		{"max_session_ttl above the limit", teleportRole("v7", "  options:", "    max_session_ttl: 1000h"),
			`7: spec.options.max_session_ttl: "1000h" is above MWI's limit on certificate lifetimes, 720h`},
		{"kubernetes_resources in v5", teleportRole("v5", "  allow:", "    kubernetes_resources: []"),
			"7: spec.allow.kubernetes_resources: Teleport's roles of version v5 have none"},
		{"v6 verbs", teleportRole("v6", "  allow:", "    kubernetes_resources:", "    - {kind: pod, name: '*', namespace: '*',", "       verbs: [get]}"),
			`9: spec.allow.kubernetes_resources[0].verbs: Teleport's roles of version v6 allow every verb ("*") only`},
		{"v6 deployment", teleportRole("v6", "  allow:", "    kubernetes_resources:", "    - {kind: deployment, name: '*', namespace: '*'}"),
			`8: invalid spec.allow.kubernetes_resources[0].kind "deployment": Teleport's roles of version v6 take pods only`},
		{"v8 api_group", teleportRole("v7", "  allow:", "    kubernetes_resources:", "    - kind: pod", "      api_group: ''"),
			"9: spec.allow.kubernetes_resources[0].api_group: a field of Teleport's roles of version v8"},
		{"glob in node_labels", teleportRole("v7", "  allow:", "    node_labels: {env: 'prod-*'}"),
			`7: invalid value "prod-*" in spec.allow.node_labels.env: Teleport reads it as a pattern`},
		{"regex in kubernetes_labels", teleportRole("v7", "  allow:", "    kubernetes_labels:", "      env: '^prod$'"),
			`8: invalid value "^prod$" in spec.allow.kubernetes_labels.env: Teleport reads it as a pattern`},
		{"external trait", teleportRole("v7", "  allow:", "    logins: ['{{external.logins}}']"),
			`7: invalid login "{{external.logins}}" in spec.allow.logins: unsupported template`},
		{"bot max_session_ttl", "kind: bot\nversion: v1\nmetadata: {name: b}\nspec:\n  roles: [r]\n  max_session_ttl: 1h\n",
			"6: spec.max_session_ttl: MWI bounds a bot's certificates by its roles"},
		{"token for nodes", teleportToken("roles: [Node]", "join_method: github", "bot_name: b", "github: {allow: [{repository: o/r}]}"),
			`6: spec.roles: "Node" is not a role MWI tokens can join as; MWI tokens join bots only`},
		{"token for a bot and nodes", teleportToken("roles: [Bot, Node]", "join_method: github", "bot_name: b", "github: {allow: [{repository: o/r}]}"),
			"6: spec.roles must be [Bot]: MWI tokens join bots only"},
		{"token without roles", teleportToken("join_method: github", "bot_name: b", "github: {allow: [{repository: o/r}]}"),
			"6: missing spec.roles (want [Bot]"},
		{"token join method", teleportToken("roles: [Bot]", "join_method: token", "bot_name: b"),
			"7: spec.join_method token is for one-time secrets made with mwi-issuer token create"},
		{"iam", teleportToken("roles: [Bot]", "join_method: iam", "bot_name: b", "allow: [{aws_account: '1'}]"),
			"9: spec.allow: rules of Teleport's AWS join methods; MWI has no AWS join method"},
		{"circleci", teleportToken("roles: [Bot]", "bot_name: b", "circleci: {}"),
			"8: spec.circleci: MWI has no circleci join method"},
		{"kubernetes in_cluster", teleportToken("roles: [Bot]", "join_method: kubernetes", "bot_name: b",
			"kubernetes: {type: in_cluster, allow: [{service_account: 'ns:sa'}]}"),
			"9: spec.kubernetes.type in_cluster: MWI's issuer runs outside the cluster"},
		{"kubernetes default type", teleportToken("roles: [Bot]", "join_method: kubernetes", "bot_name: b",
			"kubernetes: {allow: [{service_account: 'ns:sa'}]}"),
			"9: spec.kubernetes.type in_cluster (the default): MWI's issuer runs outside the cluster"},
		{"kubernetes static_jwks", teleportToken("roles: [Bot]", "join_method: kubernetes", "bot_name: b",
			"kubernetes:", "    type: static_jwks", "    static_jwks: {jwks: '{}'}", "    allow: [{service_account: 'ns:sa'}]"),
			"10: spec.kubernetes.type static_jwks: MWI checks the issuer of every token"},
		{"kubernetes http issuer", teleportToken("roles: [Bot]", "join_method: kubernetes", "bot_name: b",
			"kubernetes:", "    type: oidc", "    oidc: {issuer: 'https://k.example', insecure_allow_http_issuer: true}", "    allow: [{service_account: 'ns:sa'}]"),
			"11: spec.kubernetes.oidc.insecure_allow_http_issuer: MWI fetches an issuer's keys over https only"},
		{"bound keypair secret", teleportToken("roles: [Bot]", "join_method: bound_keypair", "bot_name: b",
			"bound_keypair:", "    onboarding:", "      registration_secret: s"),
			"11: spec.bound_keypair.onboarding.registration_secret: MWI binds the key registered ahead"},
		{"bound keypair recovery", teleportToken("roles: [Bot]", "join_method: bound_keypair", "bot_name: b",
			"bound_keypair:", "    onboarding: {initial_public_key: '"+testEd25519+"'}", "    recovery: {limit: 1, mode: standard}"),
			"11: spec.bound_keypair.recovery: MWI counts no recoveries"},
		{"MWI's audience in v2", teleportToken("roles: [Bot]", "audience: x"),
			"7: spec.audience: an MWI field: write the token in MWI's version v1"},
		{"unknown field", teleportRole("v7", "  allow:", "    logins: [a]", "    colour: blue"),
			`8: unknown field "colour" in spec.allow (want logins, node_labels, kubernetes_labels, kubernetes_groups, kubernetes_users, kubernetes_resources)`},
		{"role v2", "kind: role\nversion: v2\nmetadata: {name: r}\n",
			`2: unsupported version "v2" (want v1); Teleport's roles of version v5, v6 and v7 are read too`},
		{"bot v2", "kind: bot\nversion: v2\nmetadata: {name: r}\n",
			`2: unsupported version "v2" (want v1)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("t.yaml", []byte(tt.doc))
			if err == nil {
				t.Fatalf("Parse succeeded, want %q", tt.want)
			}
			if !strings.Contains(err.Error(), "t.yaml:"+tt.want) {
				t.Errorf("error:\n%v\nwant it to contain t.yaml:%s", err, tt.want)
			}
		})
	}
}

const testEd25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDO8tbuTMtXa5zo1GVkz7Kgh4rMOGkgOqBmvcOvvV1tC"

// teleportToken returns a Teleport token document whose spec is the given
// lines, each indented by two spaces.
func teleportToken(spec ...string) string {
	return "kind: token\nversion: v2\nmetadata:\n  name: t\nspec:\n  " + strings.Join(spec, "\n  ") + "\n"
}

// TestTeleportRefusedTable checks every entry of teleportRefused: a
// document with that field alone is refused at the field's line with the
// entry's reason.
func TestTeleportRefusedTable(t *testing.T) {
	headers := map[string]string{
		"role":    "kind: role\nversion: v7\n",
		"bot":     "kind: bot\nversion: v1\n",
		kindToken: "kind: token\nversion: v2\n",
	}
	for _, f := range teleportRefused {
		kinds := []string{f.Kind}
		if f.Kind == "" {
			kinds = []string{"role", "bot", kindToken}
		}
		for _, kind := range kinds {
			t.Run(kind+":"+f.Path, func(t *testing.T) {
				doc, line := nest(f.Path, "x")
				if !strings.HasPrefix(f.Path, "metadata.") {
					doc = "metadata:\n  name: n\n" + doc
					line += 2
				}
				doc = headers[kind] + doc
				line += 2
				_, err := Parse("t.yaml", []byte(doc))
				want := fmt.Sprintf("t.yaml:%d: %s: %s", line, f.Path, f.Why)
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("document:\n%s\nerror: %v\nwant %q", doc, err, want)
				}
			})
		}
	}
}

// nest returns a YAML document that sets the dotted path to value, and the
// line of the path's last key.
func nest(path, value string) (string, int) {
	keys := strings.Split(path, ".")
	var b strings.Builder
	for i, k := range keys {
		b.WriteString(strings.Repeat("  ", i) + k + ":")
		if i == len(keys)-1 {
			b.WriteString(" " + value)
		}
		b.WriteString("\n")
	}
	return b.String(), len(keys)
}

// TestTeleportIgnoredFields checks that the fields of teleportIgnored are
// accepted, and refused with another value than the one they allow.
func TestTeleportIgnoredFields(t *testing.T) {
	doc := `kind: role
version: v7
metadata:
  name: r
  revision: 4d3a1b2c
  id: 1700000000000000000
  namespace: default
  labels: {team: a}
spec:
  allow:
    logins: [a]
  options:
    cert_format: standard
    create_db_user: false
    create_desktop_user: false
    create_host_user: false
    desktop_clipboard: true
    desktop_directory_sharing: true
    disconnect_expired_cert: false
    forward_agent: true
    max_session_ttl: 8h0m0s
    permit_x11_forwarding: false
    pin_source_ip: false
    port_forwarding: true
    require_session_mfa: false
    ssh_file_copy: true
`
	r := parseOne(t, "t.yaml", doc).(Role)
	if !r.ForwardAgent || r.MaxTTL != 8*time.Hour || !slices.Equal(r.Logins, []string{"a"}) {
		t.Errorf("role = %+v", r)
	}
	for _, doc := range []string{
		"kind: bot\nversion: v1\nmetadata:\n  name: b\n  revision: x\n  labels: {a: b}\nspec: {roles: [r]}\n",
		"kind: token\nversion: v2\nmetadata:\n  name: t\n  revision: x\n  labels: {a: b}\n" +
			"spec: {roles: [Bot], join_method: github, bot_name: b, github: {allow: [{repository: o/r}]}}\n",
	} {
		parseOne(t, "t.yaml", doc)
	}
	_, err := Parse("t.yaml", []byte("kind: role\nversion: v7\nmetadata:\n  name: r\n  namespace: other\n"))
	if want := "t.yaml:5: metadata.namespace: Teleport has the one namespace default (want default, or leave it out)"; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
	for _, f := range teleportIgnored {
		if f.Why == "" {
			t.Errorf("teleportIgnored: %s has no reason", f.Path)
		}
	}
}

// TestTeleportDeny checks that Teleport's greedy deny rules mean in MWI
// what they mean in Teleport: deny.logins denies those logins on every
// host, deny.node_labels every login on the hosts it selects, and
// deny.kubernetes_labels the clusters it selects; deny wins over allow.
func TestTeleportDeny(t *testing.T) {
	dir := writeDir(t, map[string]string{"r.yaml": `kind: role
version: v7
metadata: {name: ops}
spec:
  allow:
    logins: [root, deploy, app]
    node_labels: {'*': '*'}
    kubernetes_labels: {'*': '*'}
    kubernetes_groups: [ops]
---
kind: role
version: v6
metadata: {name: no-root}
spec:
  deny:
    logins: [root]
---
kind: role
version: v5
metadata: {name: no-db}
spec:
  deny:
    node_labels: {workload: [database, backup]}
    kubernetes_labels: {env: prod}
---
kind: role
version: v7
metadata: {name: nowhere}
spec:
  deny:
    node_labels: {'*': '*'}
---
kind: bot
version: v1
metadata: {name: ops}
spec:
  roles: [ops, no-root, no-db]
  traits:
  - name: logins
    values: [alice]
---
kind: bot
version: v1
metadata: {name: locked}
spec:
  roles: [ops, nowhere]
`})
	s, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	g, err := s.Grant("ops")
	if err != nil {
		t.Fatal(err)
	}
	// root is denied on every host, so it is no principal at all.
	if !slices.Equal(g.Logins, []string{"app", "deploy"}) {
		t.Errorf("logins = %v, want [app deploy]", g.Logins)
	}
	acc := sshaccess.Access{Bot: "ops", Allow: g.Allow, Deny: g.Deny}
	for _, c := range []struct {
		login  string
		labels map[string]string
		ok     bool
	}{
		{"deploy", map[string]string{"workload": "web"}, true},
		{"app", nil, true},
		{"root", map[string]string{"workload": "web"}, false},
		{"deploy", map[string]string{"workload": "database"}, false},
		{"app", map[string]string{"workload": "backup"}, false},
	} {
		if err := acc.Decide(c.login, c.labels); (err == nil) != c.ok {
			t.Errorf("Decide(%s, %v) = %v, want allowed %v", c.login, c.labels, err, c.ok)
		}
	}
	if b, _ := s.Bot("ops"); !slices.Equal(b.Traits["logins"], []string{"alice"}) {
		t.Errorf("traits = %v, want logins [alice]", b.Traits)
	}

	if _, ok, _ := s.KubeAccess("ops", KubeCluster{Labels: map[string]string{"env": "prod"}}); ok {
		t.Errorf("KubeAccess on env=prod allowed, want denied by no-db")
	}
	if acc, ok, _ := s.KubeAccess("ops", KubeCluster{Labels: map[string]string{"env": "dev"}}); !ok || !slices.Equal(acc.Groups, []string{"ops"}) {
		t.Errorf("KubeAccess on env=dev = %+v, %v; want group ops", acc, ok)
	}

	if g, _ := s.Grant("locked"); len(g.Logins) != 0 {
		t.Errorf("a bot denied every host has logins %v", g.Logins)
	}
}

// TestTeleportToken checks the mapping of Teleport's token blocks onto
// MWI's join specs.
func TestTeleportToken(t *testing.T) {
	gl := parseOne(t, "t.yaml", teleportToken("roles: [Bot]", "join_method: gitlab", "bot_name: b",
		"gitlab: {domain: gitlab.example.com, allow: [{project_path: grp/proj, ref_type: branch}]}")).(Token)
	if g := gl.GitLab(); g == nil || g.Domain != "gitlab.example.com" || !slices.Equal(g.Allow, []GitLabRule{{ProjectPath: "grp/proj", RefType: "branch"}}) {
		t.Errorf("gitlab token = %+v", gl)
	}
	gh := parseOne(t, "t.yaml", teleportToken("roles: [Bot]", "join_method: github", "bot_name: b",
		"github: {enterprise_slug: my-company, allow: [{repository: o/r, environment: prod}]}")).(Token)
	if g := gh.GitHub(); g == nil || g.EnterpriseSlug != "my-company" ||
		g.Issuer("https://token.actions.githubusercontent.com").URL != "https://token.actions.githubusercontent.com/my-company" {
		t.Errorf("github token = %+v", gh)
	}
	ghes := parseOne(t, "t.yaml", teleportToken("roles: [Bot]", "join_method: github", "bot_name: b",
		"github: {enterprise_server_host: github.my-company.com, allow: [{repository: o/r}]}")).(Token)
	if g := ghes.GitHub(); g == nil || g.Issuer("").URL != "https://github.my-company.com/_services/token" {
		t.Errorf("github enterprise server token = %+v", ghes)
	}
	k := parseOne(t, "t.yaml", teleportToken("roles: [Bot]", "join_method: kubernetes", "bot_name: b",
		"kubernetes: {type: oidc, oidc: {issuer: 'https://k8s.example.com'}, allow: [{service_account: 'ns:sa'}]}")).(Token)
	if kj := k.Kubernetes(); kj == nil || kj.IssuerURL != "https://k8s.example.com" || !slices.Equal(kj.Allow, []KubernetesRule{{ServiceAccount: "ns:sa"}}) {
		t.Errorf("kubernetes token = %+v", k)
	}
	bk := parseOne(t, "t.yaml", teleportToken("roles: [Bot]", "join_method: bound_keypair", "bot_name: b",
		"bound_keypair: {onboarding: {initial_public_key: '"+testEd25519+"'}}")).(Token)
	if b := bk.BoundKeypair(); b == nil || b.PublicKey != testEd25519 || b.Key == nil {
		t.Errorf("bound_keypair token = %+v", bk)
	}
}

// TestKubernetesResources checks kubernetes_resources in MWI's version v1
// and Teleport's v6 and v7, and what is refused in them.
func TestKubernetesResources(t *testing.T) {
	v1 := "kind: role\nversion: v1\nmetadata: {name: r}\nspec:\n  allow:\n    kubernetes_labels: {'*': '*'}\n    kubernetes_resources:\n"
	r := parseOne(t, "t.yaml", v1+
		"    - {kind: pod, namespace: default, name: '*', verbs: [get, list]}\n"+
		"    - {kind: namespace, name: team-a}\n").(Role)
	want := []KubernetesResource{
		{Kind: "pod", Namespace: "default", Name: "*", Verbs: []string{"get", "list"}},
		{Kind: "namespace", Name: "team-a", Verbs: []string{"*"}}, // no verbs: every verb, as in Teleport
	}
	if !slices.EqualFunc(r.KubernetesResources, want, equalKubeResource) {
		t.Errorf("v1 resources = %+v, want %+v", r.KubernetesResources, want)
	}
	if r.MaxTTL != DefaultMaxTTL {
		t.Errorf("v1 MaxTTL = %v, want %v", r.MaxTTL, DefaultMaxTTL)
	}

	r = parseOne(t, "t.yaml", teleportRole("v6", "  allow:", "    kubernetes_labels: {'*': '*'}",
		"    kubernetes_resources:", "    - kind: pod", "      namespace: \"*\"", "      name: \"*\"")).(Role)
	// Teleport's v6 restricts pods only: objects of every other kind are
	// allowed, but for namespaces, which would allow every pod in them.
	got := r.KubernetesResources
	if len(got) == 0 || !equalKubeResource(got[0], KubernetesResource{Kind: "pod", Namespace: "*", Name: "*", Verbs: []string{"*"}}) {
		t.Errorf("v6 resources = %+v, want the pods first", got)
	}
	for _, kind := range []string{"deployment", "secret", "kube_node"} {
		if !slices.ContainsFunc(got, func(k KubernetesResource) bool {
			return k.Kind == kind && k.Name == "*" && slices.Equal(k.Verbs, []string{"*"})
		}) {
			t.Errorf("v6 resources lack every %s: %+v", kind, got)
		}
	}
	if slices.ContainsFunc(got, func(k KubernetesResource) bool { return k.Kind == "namespace" || k.Kind == "*" }) {
		t.Errorf("v6 resources allow every namespace or kind: %+v", got)
	}
	if n := len(got); n != len(kubeResourceKinds)-2 {
		t.Errorf("v6 resources: %d entries, want the pods and %d other kinds", n, len(kubeResourceKinds)-3)
	}
	// Without kubernetes_resources, a v6 role allows no pods, and the rest.
	r = parseOne(t, "t.yaml", teleportRole("v6", "  allow:", "    kubernetes_labels: {'*': '*'}")).(Role)
	if slices.ContainsFunc(r.KubernetesResources, func(k KubernetesResource) bool { return k.Kind == "pod" }) || len(r.KubernetesResources) == 0 {
		t.Errorf("v6 without kubernetes_resources = %+v, want every kind but pods", r.KubernetesResources)
	}
	// Without kubernetes_resources, v7 restricts nothing, as Teleport's
	// default of every kind, name and verb.
	r = parseOne(t, "t.yaml", teleportRole("v7", "  allow:", "    kubernetes_labels: {'*': '*'}")).(Role)
	if r.KubernetesResources != nil {
		t.Errorf("v7 without kubernetes_resources = %+v, want none", r.KubernetesResources)
	}

	for _, tt := range []struct{ entry, want string }{
		{"- {kind: pods, name: '*', verbs: [get]}", `t.yaml:8: invalid spec.allow.kubernetes_resources[0].kind "pods" (want one of *, pod,`},
		{"- {name: '*', verbs: [get]}", `t.yaml:8: missing spec.allow.kubernetes_resources[0].kind`},
		{"- {kind: pod, verbs: [get]}", `t.yaml:8: missing spec.allow.kubernetes_resources[0].name ("*" for any name)`},
		{"- {kind: pod, name: '*'}", `t.yaml:8: missing spec.allow.kubernetes_resources[0].namespace: objects of kind pod are in namespaces ("*" for all)`},
		{"- {kind: pod, namespace: a, name: '*', verbs: []}", `t.yaml:8: spec.allow.kubernetes_resources[0].verbs lists no verbs`},
		{"- {kind: pod, namespace: a, name: '*', verbs: [get, '*']}", `t.yaml:8: spec.allow.kubernetes_resources[0].verbs: "*" is every verb; list it alone`},
		{"- {kind: pod, namespace: a, name: '*', verbs: [read]}", `t.yaml:8: invalid verb "read" in spec.allow.kubernetes_resources[0].verbs`},
		{"- {kind: pod, namespace: a, name: 'web-*', verbs: [get]}", `t.yaml:8: invalid spec.allow.kubernetes_resources[0].name "web-*": MWI turns kubernetes_resources into Kubernetes RBAC`},
		{"- {kind: pod, name: a, namespace: 'team-?', verbs: [get]}", `t.yaml:8: invalid spec.allow.kubernetes_resources[0].namespace "team-?"`},
		{"- {kind: pod, name: a, colour: red, verbs: [get]}", `t.yaml:8: unknown field "colour" in spec.allow.kubernetes_resources[0] (want kind, namespace, name, verbs)`},
	} {
		_, err := Parse("t.yaml", []byte(v1+"    "+tt.entry+"\n"))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v, want %q", tt.entry, err, tt.want)
		}
	}
}

// TestTeleportMaxSessionTTL checks Teleport's default lifetime and the
// option that sets it.
func TestTeleportMaxSessionTTL(t *testing.T) {
	for _, tt := range []struct {
		options string
		want    time.Duration
	}{
		{"", 30 * time.Hour},
		{"  options:\n    max_session_ttl: 1h30m", 90 * time.Minute},
		{"  options:\n    max_session_ttl: 720h", MaxTTLLimit},
	} {
		r := parseOne(t, "t.yaml", teleportRole("v7", "  allow:", "    logins: [a]", tt.options)).(Role)
		if r.MaxTTL != tt.want {
			t.Errorf("%q: MaxTTL = %v, want %v", tt.options, r.MaxTTL, tt.want)
		}
	}
	_, err := Parse("t.yaml", []byte(teleportRole("v7", "  options:", "    max_session_ttl: 3 hours")))
	if want := `t.yaml:7: invalid spec.options.max_session_ttl "3 hours"`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
}

// TestTeleportGitLabRules checks the claims of Teleport's gitlab rules,
// which MWI compares too, and that patterns are refused.
func TestTeleportGitLabRules(t *testing.T) {
	tok := parseOne(t, "t.yaml", teleportToken("roles: [Bot]", "join_method: gitlab", "bot_name: b", "gitlab:", "    allow:",
		"    - {project_path: grp/proj, user_id: '7', user_email: a@example.com, environment_protected: 'true',",
		"       ci_config_sha: abc, ci_config_ref_uri: 'gitlab.com/grp/proj//.gitlab-ci.yml@refs/heads/main',",
		"       deployment_tier: production, project_visibility: private}")).(Token)
	g := tok.GitLab()
	if g == nil || len(g.Allow) != 1 {
		t.Fatalf("token = %+v", tok)
	}
	claims := map[string]any{
		"project_path": "grp/proj", "user_id": "7", "user_email": "a@example.com", "environment_protected": "true",
		"ci_config_sha": "abc", "ci_config_ref_uri": "gitlab.com/grp/proj//.gitlab-ci.yml@refs/heads/main",
		"deployment_tier": "production", "project_visibility": "private",
	}
	if _, ok := g.Match(claims); !ok {
		t.Errorf("rule does not match its own claims")
	}
	for k := range claims {
		if k == "project_path" {
			continue
		}
		c := maps.Clone(claims)
		c[k] = "other"
		if _, ok := g.Match(c); ok {
			t.Errorf("rule matches with %s = other", k)
		}
	}
	_, err := Parse("t.yaml", []byte(teleportToken("roles: [Bot]", "join_method: gitlab", "bot_name: b",
		"gitlab: {allow: [{project_path: 'grp/*'}]}")))
	if want := `t.yaml:9: invalid spec.gitlab.allow[0].project_path "grp/*": MWI compares claims exactly`; err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("error %v, want %q", err, want)
	}
}
