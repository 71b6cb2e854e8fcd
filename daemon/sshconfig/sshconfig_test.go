package sshconfig

import (
	"reflect"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/api"
)

func TestQuote(t *testing.T) {
	tests := []struct{ in, want string }{
		{"/run/mwi/agent.sock", "/run/mwi/agent.sock"},
		{"/run/mwi 1/agent.sock", `"/run/mwi 1/agent.sock"`},
		{"/run/100%d/agent.sock", `"/run/100%%d/agent.sock"`}, // not ssh's %d token
		{"/x\nHost *", `"/x\nHost *"`},                        // no new line of config
	}
	for _, tt := range tests {
		if got := Quote(tt.in); got != tt.want {
			t.Errorf("Quote(%q) = %s, want %s", tt.in, got, tt.want)
		}
	}
}

// TestConfig renders the two blocks mwid hands out: through the agent and
// mwictl (the local API), and with an identity output's files.
func TestConfig(t *testing.T) {
	tests := []struct {
		name string
		c    Config
		want string
	}{
		{"agent", Config{Bot: "ci", Revision: "r1", Patterns: []string{"*.example.com", "10.0.0.*"},
			Agent: "/run/mwi/agent.sock", Mwictl: "/usr/bin/mwictl", APISocket: "/run/mwi 1/api.sock"},
			`# ssh_config from mwid for bot ci (configuration r1).
Host *.example.com 10.0.0.*
    IdentityAgent /run/mwi/agent.sock
    KnownHostsCommand /usr/bin/mwictl --socket "/run/mwi 1/api.sock" known-hosts
    UserKnownHostsFile /dev/null
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
`},
		{"files", Config{Bot: "ci", Revision: "r2", Patterns: []string{"*"},
			IdentityFile: "/out/key", CertificateFile: "/out/key-cert.pub", KnownHostsFile: "/out/known_hosts"},
			`# ssh_config from mwid for bot ci (configuration r2).
Host *
    IdentityFile /out/key
    CertificateFile /out/key-cert.pub
    IdentitiesOnly yes
    IdentityAgent none
    UserKnownHostsFile /out/known_hosts
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
`},
	}
	for _, tt := range tests {
		if got := tt.c.String(); got != tt.want {
			t.Errorf("%s:\n%s\nwant\n%s", tt.name, got, tt.want)
		}
	}
}

// TestCheckName refuses every name that ssh_config or known_hosts would
// read as more than one name, a pattern, syntax or an option.
func TestCheckName(t *testing.T) {
	for _, name := range []string{"web-01", "web-01.example.com", "10.0.0.7", "fe80::1", "db_2"} {
		if err := CheckName(name); err != nil {
			t.Errorf("CheckName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{
		"", "web 01", "web\t01", `web"01`, "web'01", "web*", "web?", "!web", "web,db",
		"web\n    ProxyCommand sh", "web\x00", "web\x7f", "-oProxyCommand=sh", "web#1", "web%h",
		`web\01`, "wéb", "web/01", "[web]:22", "web=1", strings.Repeat("a", 254),
	} {
		if err := CheckName(name); err == nil {
			t.Errorf("CheckName(%q) = nil, want an error", name)
		}
	}
	for _, login := range []string{"deploy", "alice@example.com", "svc_ci-2"} {
		if err := CheckLogin(login); err != nil {
			t.Errorf("CheckLogin(%q) = %v, want nil", login, err)
		}
	}
	for _, login := range []string{"", "-l", "root deploy", "a:b", "x\nHost *", "%u"} {
		if err := CheckLogin(login); err == nil {
			t.Errorf("CheckLogin(%q) = nil, want an error", login)
		}
	}
}

// TestHosts picks each node's names and User, and skips, with a warning,
// what ssh_config could not carry as it is.
func TestHosts(t *testing.T) {
	nodes := []api.ReachableNode{
		{Name: "web-01", Names: []string{"web-01", "web-01.example.com"}, Logins: []string{"deploy", "ops"}},
		{Name: "web-02", Names: []string{"web-02"}, Logins: []string{"alice", "deploy"}},
		{Name: "db 01", Names: []string{"db 01", "db-01"}, Logins: []string{"deploy"}},
		{Name: "*", Names: []string{"*", "!x", "-oProxyCommand=sh"}, Logins: []string{"deploy"}},
		{Name: "evil\nHost *\n    ProxyCommand sh", Names: []string{"evil\nHost *\n    ProxyCommand sh"}, Logins: []string{"deploy"}},
		{Name: "db-02", Names: []string{"db-02", "web-01"}, Logins: []string{"x y", "deploy"}},
		{Name: "db-03", Names: []string{"db-03"}, Logins: []string{"-oProxyCommand=sh"}},
	}
	hosts, warnings := Hosts(nodes, "alice")
	want := []Host{
		{Names: []string{"web-01", "web-01.example.com"}, User: "deploy"},
		{Names: []string{"web-02"}}, // alice may log in: ssh's default
		{Names: []string{"db-01"}, User: "deploy"},
		{Names: []string{"db-02"}, User: "deploy"},
	}
	if !reflect.DeepEqual(hosts, want) {
		t.Errorf("hosts = %+v\nwant %+v", hosts, want)
	}
	wantWarnings := []string{
		`node "db 01": name skipped: host name "db 01" has the character ' ', which ssh_config would not read as part of it`,
		`node "*": name skipped`,
		`node "*": name skipped`,
		`node "*": name skipped: host name "-oProxyCommand=sh" starts with '-'`,
		`node "*" skipped: no name left`,
		`node "evil\nHost *\n    ProxyCommand sh": name skipped`,
		`node "evil\nHost *\n    ProxyCommand sh" skipped`,
		`node "db-02": name web-01 skipped: node "web-01" has it`,
		`node "db-02": login skipped: login "x y"`,
		`node "db-03": login skipped`,
		`node "db-03" skipped: no login left`,
	}
	if len(warnings) != len(wantWarnings) {
		t.Fatalf("warnings:\n%s\nwant %d", strings.Join(warnings, "\n"), len(wantWarnings))
	}
	for i, w := range warnings {
		if !strings.HasPrefix(w, wantWarnings[i]) {
			t.Errorf("warning %d = %s, want it to start %s", i, w, wantWarnings[i])
		}
		if strings.ContainsAny(w, "\n\r") {
			t.Errorf("warning %d has a line break: %q", i, w)
		}
	}

	// Rendered, nothing but the checked names, logins and settings.
	c := Config{Bot: "ci", Agent: "/run/mwi/agent.sock", Mwictl: "/usr/bin/mwictl", APISocket: "/run/mwi/api.sock"}
	got := c.HostBlocks(hosts)
	wantText := `
# Hosts the roles of bot ci let it log in to, from the issuer's node inventory.
Host web-01 web-01.example.com
    User deploy
    IdentityAgent /run/mwi/agent.sock
    KnownHostsCommand /usr/bin/mwictl --socket /run/mwi/api.sock known-hosts --host web-01 --host web-01.example.com
    UserKnownHostsFile /dev/null
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
Host web-02
    IdentityAgent /run/mwi/agent.sock
    KnownHostsCommand /usr/bin/mwictl --socket /run/mwi/api.sock known-hosts --host web-02
    UserKnownHostsFile /dev/null
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
Host db-01
    User deploy
    IdentityAgent /run/mwi/agent.sock
    KnownHostsCommand /usr/bin/mwictl --socket /run/mwi/api.sock known-hosts --host db-01
    UserKnownHostsFile /dev/null
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
Host db-02
    User deploy
    IdentityAgent /run/mwi/agent.sock
    KnownHostsCommand /usr/bin/mwictl --socket /run/mwi/api.sock known-hosts --host db-02
    UserKnownHostsFile /dev/null
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
`
	if got != wantText {
		t.Errorf("HostBlocks:\n%s\nwant\n%s", got, wantText)
	}
	if c.HostBlocks(nil) != "" {
		t.Error("HostBlocks of no hosts is not empty")
	}
}
