package sshconfig

import "testing"

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
