package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const valid = `version: v1
issuer:
  address: 127.0.0.1:7443
  ca_pins: ["sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
onboarding:
  join_method: token
  token:
    env: MWI_TOKEN
certificate_ttl: 10m
renewal_interval: 2m
sockets:
  agent:
    path: run/agent.sock
    mode: "0660"
  api:
    path: /run/mwi/api.sock
ssh:
  logins: [deploy, ops]
log:
  format: json
`

func TestParseValid(t *testing.T) {
	c, err := Parse("/etc/mwi/mwid.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if c.CertificateTTL != 10*time.Minute || c.RenewalInterval != 2*time.Minute || c.RenewMinInterval != DefaultRenewMinInterval {
		t.Errorf("durations = %v, %v, %v", c.CertificateTTL, c.RenewalInterval, c.RenewMinInterval)
	}
	if c.AgentSocket.Path != "/etc/mwi/run/agent.sock" || c.AgentSocket.Mode != 0o660 {
		t.Errorf("agent socket = %+v; want a path relative to the file and mode 0660", c.AgentSocket)
	}
	if c.APISocket.Mode != 0o600 {
		t.Errorf("api socket mode = %o, want the default 0600", c.APISocket.Mode)
	}
	if c.Onboarding.Token.Env != "MWI_TOKEN" || c.Log.Level != "info" || c.Log.Format != "json" {
		t.Errorf("config = %+v", c)
	}
}

func TestParseAddresses(t *testing.T) {
	c, err := Parse("/etc/mwi/mwid.yaml", []byte(strings.Replace(valid, "  address: 127.0.0.1:7443", "  addresses: [a.example:7443, 127.0.0.1:7443]", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Issuer.AddressList(); len(got) != 2 || got[0] != "a.example:7443" || got[1] != "127.0.0.1:7443" || c.Issuer.Address != "" {
		t.Errorf("issuer = %+v, AddressList = %v", c.Issuer, got)
	}
	c, err = Parse("/etc/mwi/mwid.yaml", []byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.Issuer.AddressList(); len(got) != 1 || got[0] != "127.0.0.1:7443" {
		t.Errorf("AddressList = %v", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name    string
		replace [2]string // in valid
		want    string
	}{
		{"unknown field", [2]string{"ssh:\n", "ssh:\n  user: x\n"}, `mwid.yaml:18: unknown field "user"`},
		{"duplicate key", [2]string{"  format: json", "  format: json\n  format: text"}, `mwid.yaml:21: duplicate field "format" in log (first at line 20)`},
		{"mapping for a string", [2]string{"certificate_ttl: 10m", "certificate_ttl: {m: 10}"}, "mwid.yaml:9: certificate_ttl must be a string, not a mapping"},
		{"string for a list", [2]string{"logins: [deploy, ops]", "logins: deploy"}, `mwid.yaml:18: ssh.logins must be a list, not the value "deploy"`},
		{"nested unknown field", [2]string{"    env: MWI_TOKEN", "    env: MWI_TOKEN\n    environment: X"}, `mwid.yaml:9: unknown field "environment" in onboarding.token (want env, file, credential)`},
		{"second document", [2]string{"  format: json\n", "  format: json\n---\nversion: v1\n"}, "mwid.yaml:22: a second YAML document"},
		// v2 is tbot's format now (tbot_test.go): another version is refused.
		{"bad version", [2]string{"version: v1", "version: v3"}, `mwid.yaml:1: version: got "v3", want v1 (mwid's format) or v2 (tbot's)`},
		{"v1 fields in v2", [2]string{"version: v1", "version: v2"}, `mwid.yaml:2: issuer: is a field of mwid's own format (version: v1); tbot's format (version: v2) names the issuer in proxy_server`},
		{"syntax", [2]string{"log:\n", "log: [\n"}, "mwid.yaml:"},
		{"unclosed bracket", [2]string{"logins: [deploy, ops]", "logins: [deploy, ops"}, `mwid.yaml:18: invalid YAML: did not find expected ',' or ']'`},
		{"unclosed brace", [2]string{"  agent:\n", "  agent: {\n"}, `mwid.yaml:12: invalid YAML: did not find expected ',' or '}'`},
		{"bad duration", [2]string{"certificate_ttl: 10m", "certificate_ttl: ten"}, `mwid.yaml:9: certificate_ttl: "ten" is not a duration`},
		{"ttl too short", [2]string{"certificate_ttl: 10m", "certificate_ttl: 1s"}, "shorter than the minimum"},
		{"interval too long", [2]string{"renewal_interval: 2m", "renewal_interval: 20m"}, "mwid.yaml:10: renewal_interval"},
		{"negative renew interval", [2]string{"renewal_interval: 2m", "renewal_interval: 2m\nrenew_min_interval: -1s"}, "mwid.yaml:11: renew_min_interval: -1s is negative"},
		{"no trust", [2]string{`  ca_pins: ["sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]`, ""}, "set ca_pins or ca_file"},
		{"bad pin", [2]string{"sha256:AAAA", "md5:AAAA"}, "mwid.yaml:4: issuer.ca_pins"},
		{"no port", [2]string{"127.0.0.1:7443", "127.0.0.1"}, `mwid.yaml:3: issuer.address: "127.0.0.1" is not host:port`},
		{"address and addresses", [2]string{"  address: 127.0.0.1:7443", "  address: 127.0.0.1:7443\n  addresses: [127.0.0.1:7444]"}, "mwid.yaml:4: issuer.addresses: set address or addresses, not both"},
		{"no address", [2]string{"  address: 127.0.0.1:7443\n", ""}, "issuer.address: required"},
		{"empty addresses", [2]string{"  address: 127.0.0.1:7443", "  addresses: []"}, "mwid.yaml:3: issuer.addresses: empty"},
		{"addresses no port", [2]string{"  address: 127.0.0.1:7443", "  addresses:\n  - 127.0.0.1:7443\n  - b.example"}, `mwid.yaml:5: issuer.addresses.1: "b.example" is not host:port`},
		{"addresses twice", [2]string{"  address: 127.0.0.1:7443", "  addresses: [a:1, b:2, a:1]"}, `issuer.addresses.2: "a:1" is listed twice`},
		{"two secrets", [2]string{"    env: MWI_TOKEN", "    env: MWI_TOKEN\n    file: /x"}, "set exactly one of env, file or credential"},
		{"unknown method", [2]string{"join_method: token", "join_method: magic"}, `unknown join method "magic"`},
		{"world mode", [2]string{`mode: "0660"`, `mode: "0666"`}, "mwid.yaml:14: sockets.agent.mode: 0666 gives access to every user"},
		{"bad mode", [2]string{`mode: "0660"`, `mode: "rw"`}, "not an octal permission mode"},
		{"bad login", [2]string{"[deploy, ops]", `["a b"]`}, `ssh.logins: "a b" is not a valid login`},
		{"bad log level", [2]string{"format: json", "level: loud"}, `log.level: "loud"`},
		{"bad agent unbound", [2]string{"log:\n", "agent:\n  unbound: sometimes\nlog:\n"}, `mwid.yaml:20: agent.unbound: "sometimes": want refuse or allow`},
		{"same socket", [2]string{"/run/mwi/api.sock", "/etc/mwi/run/agent.sock"}, "agent and api use the same path"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data := strings.Replace(valid, tt.replace[0], tt.replace[1], 1)
			if data == valid {
				t.Fatalf("replacement %q not found", tt.replace[0])
			}
			_, err := Parse("/etc/mwi/mwid.yaml", []byte(data))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// TestParseEveryError: every problem of the file is reported, each at its
// line, not only the first.
func TestParseEveryError(t *testing.T) {
	data := strings.NewReplacer(
		"ssh:\n", "ssh:\n  user: x\n",
		"  format: json", "  format: json\n  format: text",
		"  api:\n", "  api:\n    mode: [x]\n",
	).Replace(valid)
	_, err := Parse("/etc/mwi/mwid.yaml", []byte(data))
	want := []string{
		`mwid.yaml:16: sockets.api.mode must be a string, not a list`,
		`mwid.yaml:19: unknown field "user" in ssh`,
		`mwid.yaml:23: duplicate field "format" in log (first at line 22)`,
	}
	for _, w := range want {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("Parse error = %v, want it to contain %q", err, w)
		}
	}
}

// TestAgentUnbound checks agent.unbound: refuse unless set to allow.
func TestAgentUnbound(t *testing.T) {
	for _, tt := range []struct {
		yaml string
		want bool
	}{
		{"", false},
		{"agent:\n  unbound: refuse\n", false},
		{"agent:\n  unbound: allow\n", true},
		{"agent: {}\n", false},
	} {
		c, err := Parse("/etc/mwi/mwid.yaml", []byte(valid+tt.yaml))
		if err != nil {
			t.Fatalf("%q: %v", tt.yaml, err)
		}
		if c.Agent.AllowUnbound != tt.want {
			t.Errorf("%q: AllowUnbound = %v, want %v", tt.yaml, c.Agent.AllowUnbound, tt.want)
		}
	}
}

// TestParseMergeKeys: a merge key shares settings between blocks, as
// yaml.v3 resolves it; the block's own fields win.
func TestParseMergeKeys(t *testing.T) {
	data := strings.Replace(valid, "  agent:\n", "  agent: &socket\n", 1)
	data = strings.Replace(data, "  api:\n    path: /run/mwi/api.sock\n", "  api:\n    <<: *socket\n    path: /run/mwi/api.sock\n", 1)
	c, err := Parse("/etc/mwi/mwid.yaml", []byte(data))
	if err != nil {
		t.Fatal(err)
	}
	if c.APISocket.Path != "/run/mwi/api.sock" || c.APISocket.Mode != 0o660 {
		t.Errorf("api socket = %+v; want its own path and the agent's mode", c.APISocket)
	}
}

// TestLoadMissing checks that a missing file, most often mwid's default
// path, is named with a hint on how to name another.
func TestLoadMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "mwid.yaml")
	_, err := Load(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "mwid -c FILE") {
		t.Errorf("Load(%s) = %v; want the missing file named, with a hint to use mwid -c FILE", path, err)
	}
}

func TestParseEmpty(t *testing.T) {
	for _, data := range []string{"", "# just a comment\n"} {
		if _, err := Parse("x.yaml", []byte(data)); err == nil || !strings.Contains(err.Error(), "x.yaml: the file is empty") {
			t.Errorf("Parse(%q) error = %v", data, err)
		}
	}
}

func TestSecretSource(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "tok"), []byte("  s3cret\n"), 0o600)
	t.Setenv("MWI_TEST_TOKEN", "from-env")
	t.Setenv("MWI_TEST_EMPTY", " \n")
	os.WriteFile(filepath.Join(dir, "empty"), []byte("\n"), 0o600)
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	os.Unsetenv("MWI_TEST_UNSET")
	tests := []struct {
		src     SecretSource
		want    string
		wantErr string
	}{
		{SecretSource{Env: "MWI_TEST_TOKEN"}, "from-env", ""},
		{SecretSource{File: filepath.Join(dir, "tok")}, "s3cret", ""},
		{SecretSource{Credential: "tok"}, "s3cret", ""},
		{SecretSource{Env: "MWI_TEST_UNSET"}, "", "MWI_TEST_UNSET is not set"},
		{SecretSource{File: filepath.Join(dir, "missing")}, "", "no such file"},
		{SecretSource{Env: "MWI_TEST_EMPTY"}, "", "environment variable MWI_TEST_EMPTY is empty"},
		{SecretSource{File: filepath.Join(dir, "empty")}, "", "file " + filepath.Join(dir, "empty") + " is empty"},
		{SecretSource{Credential: "empty"}, "", "credential empty is empty"},
	}
	for _, tt := range tests {
		got, err := tt.src.Read()
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%+v: error %v, want %q", tt.src, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%+v: Read() = %q, %v; want %q", tt.src, got, err, tt.want)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte("version: v1\nissuer: {address: 'a:1'}\n"))
	f.Add([]byte("- [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.yaml", data)
		if err == nil && c == nil {
			t.Fatal("nil config without error")
		}
	})
}
