package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/output"
)

const testPin = "sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

// guideFile reads a file of testdata/tbot (Teleport's guide, verbatim) with
// its proxy address replaced by addr, as a test must point it at its own
// issuer.
func guideFile(t *testing.T, name, addr string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", "tbot", name))
	if err != nil {
		t.Fatal(err)
	}
	const guideProxy = "proxy_server: example.teleport.sh:443\n"
	if !strings.Contains(string(data), guideProxy) {
		t.Fatalf("%s no longer names the guide's proxy", name)
	}
	return []byte(strings.Replace(string(data), guideProxy, "proxy_server: "+addr+"\n", 1))
}

// TestTBotGuideFiles: the guide's server_bot.yaml and k8s_bot.yaml, as
// printed, become the runtime configuration that mwid's own format would
// give: the issuer's address, a github join with the token resource
// github-bot and an ID token from the Actions endpoint, 5m certificates,
// and an identity or kubeconfig written under the working directory.
func TestTBotGuideFiles(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	github := Onboarding{JoinMethod: api.JoinMethodGitHub, TokenName: "github-bot",
		IDToken: IDTokenSource{GitHubActions: true, Audience: DefaultAudience}}
	for _, tc := range []struct {
		file    string
		outputs []output.Output
	}{
		{"server_bot.yaml", []output.Output{output.Identity{Directory: filepath.Join(wd, "ssh_out")}}},
		{"k8s_bot.yaml", []output.Output{output.Kubernetes{Labels: []map[string]string{{"env": "my-env-label"}}, Directory: filepath.Join(wd, "k8s_out")}}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			// As the guide writes it: the file alone, trust from the
			// system's store.
			c, err := Parse("action_support/"+tc.file, guideFile(t, tc.file, "example.teleport.sh:443"))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Issuer, Issuer{Address: "example.teleport.sh:443"}) {
				t.Errorf("issuer = %+v", c.Issuer)
			}
			// As the test runs it: another address, and mwid --ca-pin.
			c, err = ParseFlags("action_support/"+tc.file, guideFile(t, tc.file, "127.0.0.1:7443"), Flags{CAPins: []string{testPin}})
			if err != nil {
				t.Fatal(err)
			}
			want := &Config{
				Path: c.Path, Revision: c.Revision,
				Issuer:           Issuer{Address: "127.0.0.1:7443", CAPins: []string{testPin}},
				Onboarding:       github,
				CertificateTTL:   5 * time.Minute,
				IdentityTTL:      DefaultIdentityTTL,
				RenewMinInterval: DefaultRenewMinInterval,
				AgentSocket:      Socket{Path: DefaultAgentSocket, Mode: 0o600, Group: -1},
				APISocket:        Socket{Path: DefaultAPISocket, Mode: 0o600, Group: -1},
				Outputs:          tc.outputs,
				Log:              Log{Level: "info", Format: "text"},
				Flags:            Flags{CAPins: []string{testPin}},
			}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("config =\n%#v\nwant\n%#v", c, want)
			}
		})
	}
}

// tbotBase is a v2 configuration that parses; tests add to it or replace
// in it.
const tbotBase = `version: v2
proxy_server: issuer.example.com:7443
onboarding:
  join_method: github
  token: github-bot
`

// TestTBotFields: each field of tbot's that mwid honours lands in the
// runtime configuration.
func TestTBotFields(t *testing.T) {
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	tests := []struct {
		name  string
		file  string
		check func(*Config) bool
	}{
		{"proxy_server URL", strings.Replace(tbotBase, "issuer.example.com:7443", "https://issuer.example.com/", 1),
			func(c *Config) bool { return c.Issuer.Address == "issuer.example.com:443" }},
		{"proxy_server URL with port", strings.Replace(tbotBase, "issuer.example.com:7443", "https://issuer.example.com:8443", 1),
			func(c *Config) bool { return c.Issuer.Address == "issuer.example.com:8443" }},
		{"proxy_server host only", strings.Replace(tbotBase, "issuer.example.com:7443", "issuer.example.com", 1),
			func(c *Config) bool { return c.Issuer.Address == "issuer.example.com:443" }},
		{"auth_server", strings.Replace(tbotBase, "proxy_server", "auth_server", 1),
			func(c *Config) bool { return c.Issuer.Address == "issuer.example.com:7443" }},
		{"ca_pins", tbotBase + "ca_pins: [" + testPin + "]\n",
			func(c *Config) bool { return reflect.DeepEqual(c.Issuer.CAPins, []string{testPin}) }},
		{"onboarding.ca_pins", tbotBase + "  ca_pins: [" + testPin + "]\n",
			func(c *Config) bool { return reflect.DeepEqual(c.Issuer.CAPins, []string{testPin}) }},
		{"onboarding.ca_path", tbotBase + "  ca_path: ca.pem\n",
			func(c *Config) bool { return c.Issuer.CAFile == abs("ca.pem") }},
		{"onboarding.audience", tbotBase + "  audience: teleport.example.com\n",
			func(c *Config) bool { return c.Onboarding.IDToken.Audience == "teleport.example.com" }},
		{"token join, inline secret", strings.Replace(strings.Replace(tbotBase, "github", "token", 1), "github-bot", "0123abcd", 1),
			func(c *Config) bool {
				return c.Onboarding.Token == SecretSource{Value: "0123abcd"} && c.Onboarding.TokenName == ""
			}},
		{"token join, path", strings.Replace(strings.Replace(tbotBase, "github", "token", 1), "github-bot", "/var/lib/teleport/tokenjoin", 1),
			func(c *Config) bool { return c.Onboarding.Token == SecretSource{File: "/var/lib/teleport/tokenjoin"} }},
		{"gitlab", strings.Replace(tbotBase, "join_method: github", "join_method: gitlab", 1),
			func(c *Config) bool { return c.Onboarding.IDToken == IDTokenSource{Env: DefaultGitLabTokenEnv} }},
		{"gitlab token_env_var_name", strings.Replace(tbotBase, "join_method: github", "join_method: gitlab", 1) + "  gitlab: {token_env_var_name: MY_JWT}\n",
			func(c *Config) bool { return c.Onboarding.IDToken == IDTokenSource{Env: "MY_JWT"} }},
		{"kubernetes", strings.Replace(tbotBase, "join_method: github", "join_method: kubernetes", 1),
			func(c *Config) bool { return c.Onboarding.IDToken == IDTokenSource{File: DefaultKubernetesTokenPath} }},
		{"kubernetes token_path", strings.Replace(tbotBase, "join_method: github", "join_method: kubernetes", 1) + "  kubernetes: {token_path: /t}\n",
			func(c *Config) bool { return c.Onboarding.IDToken == IDTokenSource{File: "/t"} }},
		{"bound_keypair", strings.Replace(tbotBase, "join_method: github", "join_method: bound_keypair", 1) + "  bound_keypair: {static_key_path: /k}\n",
			func(c *Config) bool {
				return c.Onboarding.Key == SecretSource{File: "/k"} && c.Onboarding.TokenName == "github-bot"
			}},
		{"certificate_ttl", tbotBase + "certificate_ttl: 30m\n",
			func(c *Config) bool { return c.CertificateTTL == 30*time.Minute && c.IdentityTTL == time.Hour }},
		{"certificate_ttl over an hour", tbotBase + "certificate_ttl: 2h\n",
			func(c *Config) bool { return c.IdentityTTL == 2*time.Hour }},
		{"credential_ttl", tbotBase + "credential_ttl: 30m\n",
			func(c *Config) bool { return c.CertificateTTL == 30*time.Minute }},
		{"renewal_interval", tbotBase + "renewal_interval: 20m\n",
			func(c *Config) bool { return c.RenewalInterval == 20*time.Minute }},
		{"oneshot", tbotBase + "oneshot: true\n", func(c *Config) bool { return c.Oneshot }},
		{"no oneshot", tbotBase + "oneshot: false\n", func(c *Config) bool { return !c.Oneshot }},
		{"debug", tbotBase + "debug: true\n", func(c *Config) bool { return c.Log.Level == "debug" }},
		{"diag_addr", tbotBase + "diag_addr: 127.0.0.1:3001\n", func(c *Config) bool { return c.Diag == Diag{Addr: "127.0.0.1:3001"} }},
		{"no diag_addr", tbotBase, func(c *Config) bool { return c.Diag == Diag{} }},
		{"storage memory", tbotBase + "storage: {type: memory}\n", func(c *Config) bool { return true }},
		{"identity in a directory", tbotBase + "services:\n  - type: identity\n    destination: {type: directory, path: out, symlinks: secure}\n",
			func(c *Config) bool {
				return reflect.DeepEqual(c.Outputs, []output.Output{output.Identity{Directory: abs("out")}})
			}},
		{"identity ssh_config off", tbotBase + "outputs:\n  - type: identity\n    ssh_config: off\n    allow_reissue: false\n    destination: {type: directory, path: /out}\n",
			func(c *Config) bool {
				return reflect.DeepEqual(c.Outputs, []output.Output{output.Identity{Directory: "/out", NoSSHConfig: true}})
			}},
		{"identity in memory: the agent", tbotBase + "outputs:\n  - type: identity\n    destination: {type: memory}\n",
			func(c *Config) bool { return len(c.Outputs) == 0 }},
		{"kubernetes/v2 by name", tbotBase + "outputs:\n  - type: kubernetes/v2\n    disable_exec_plugin: true\n    selectors: [{name: prod}, {labels: {env: dev}}]\n    destination: {type: directory, path: /k}\n",
			func(c *Config) bool {
				return reflect.DeepEqual(c.Outputs, []output.Output{output.Kubernetes{Clusters: []string{"prod"}, Labels: []map[string]string{{"env": "dev"}}, Directory: "/k"}})
			}},
		{"kubernetes/v2 in memory: the API", tbotBase + "outputs:\n  - type: kubernetes/v2\n    selectors: [{name: prod}]\n    destination: {type: memory}\n",
			func(c *Config) bool {
				return reflect.DeepEqual(c.Outputs, []output.Output{output.Kubernetes{Clusters: []string{"prod"}}})
			}},
		{"kubernetes", tbotBase + "outputs:\n  - type: kubernetes\n    kubernetes_cluster: prod\n    destination: {type: directory, path: /k}\n",
			func(c *Config) bool {
				return reflect.DeepEqual(c.Outputs, []output.Output{output.Kubernetes{Clusters: []string{"prod"}, Directory: "/k"}})
			}},
		{"ssh_host", tbotBase + "outputs:\n  - type: ssh_host\n    principals: [web-01.example.com]\n    ca_type: user\n    destination: {type: directory, path: /etc/ssh/mwi}\n",
			func(c *Config) bool {
				return reflect.DeepEqual(c.Outputs, []output.Output{output.SSHHost{HostKey: "/etc/ssh/mwi/ssh_host.pub",
					Certificate: "/etc/ssh/mwi/ssh_host-cert.pub", Names: []string{"web-01.example.com"}}})
			}},
		{"outputs then services", tbotBase + "outputs:\n  - type: identity\n    destination: {type: directory, path: /a}\nservices:\n  - type: identity\n    destination: {type: directory, path: /b}\n",
			func(c *Config) bool {
				return reflect.DeepEqual(c.Outputs, []output.Output{output.Identity{Directory: "/a"}, output.Identity{Directory: "/b"}})
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("tbot.yaml", []byte(tc.file))
			if err != nil {
				t.Fatalf("Parse:\n%s\n%v", tc.file, err)
			}
			if !tc.check(c) {
				t.Errorf("Parse:\n%s\ngave %+v", tc.file, c)
			}
		})
	}
}

// TestTBotRefused: what mwid cannot honour is refused at its line, with
// the reason, never ignored.
func TestTBotRefused(t *testing.T) {
	out := func(block string) string { return tbotBase + "outputs:\n  - " + block + "\n" }
	dir := "destination: {type: directory, path: /o}"
	tests := []struct {
		name, file, want string
	}{
		{"storage directory", tbotBase + "storage:\n  type: directory\n  path: /var/lib/teleport/bot\n",
			`tbot.yaml:7: storage.type: "directory": mwid keeps its identity only in memory; set storage: {type: memory}`},
		{"storage kubernetes_secret", tbotBase + "storage: {type: kubernetes_secret, name: x}\n", `tbot.yaml:6: unknown field "name"`},
		{"diag_addr not loopback", tbotBase + "diag_addr: 0.0.0.0:3001\n", `tbot.yaml:6: diag_addr: "0.0.0.0:3001" is not a loopback address`},
		{"diag_addr no port", tbotBase + "diag_addr: 127.0.0.1\n", `tbot.yaml:6: diag_addr: "127.0.0.1": want HOST:PORT`},
		{"fips", tbotBase + "fips: true\n", "tbot.yaml:6: fips: mwid has no FIPS mode"},
		{"unknown", tbotBase + "colour: blue\n", `tbot.yaml:6: unknown field "colour"`},
		{"v1 field", tbotBase + "ssh: {logins: [x]}\n", "tbot.yaml:6: ssh: is a field of mwid's own format (version: v1), not of tbot's (version: v2)"},
		{"both addresses", tbotBase + "auth_server: a:1\n", "tbot.yaml:6: auth_server: set one of proxy_server and auth_server"},
		{"several addresses", strings.Replace(tbotBase, "proxy_server: issuer.example.com:7443", "proxy_server: [a:1, b:2]", 1),
			"tbot.yaml:2: proxy_server: tbot's format (version: v2) takes one address here, as tbot does; for several issuer replicas give one host name"},
		{"several auth servers", strings.Replace(tbotBase, "proxy_server: issuer.example.com:7443", "auth_server:\n  - a:1\n  - b:2", 1),
			"tbot.yaml:2: auth_server: tbot's format (version: v2) takes one address here"},
		{"no address", strings.Replace(tbotBase, "proxy_server: issuer.example.com:7443\n", "", 1), "tbot.yaml:1: proxy_server: required"},
		{"http", strings.Replace(tbotBase, "issuer.example.com:7443", "http://i:1", 1), `tbot.yaml:2: proxy_server: "http://i:1": mwi-issuer is reached over HTTPS`},
		{"bad pin", tbotBase + "ca_pins: [sha256:x]\n", `tbot.yaml:6: ca_pins: "sha256:x" is not a pin`},
		{"pins twice", tbotBase + "  ca_pins: [" + testPin + "]\nca_pins: [" + testPin + "]\n", "tbot.yaml:7: ca_pins: set ca_pins once"},
		{"azure join", strings.Replace(tbotBase, "join_method: github", "join_method: azure", 1), `tbot.yaml:4: onboarding.join_method: "azure": MWI joins with token, github, gitlab, kubernetes, oidc or bound_keypair`},
		{"azure block", tbotBase + "  azure: {client_id: x}\n", "tbot.yaml:6: onboarding.azure: MWI joins with"},
		{"no token", strings.Replace(tbotBase, "  token: github-bot\n", "", 1), "tbot.yaml:4: onboarding.token: required"},
		{"token name", strings.Replace(tbotBase, "github-bot", "Not A Name", 1), `tbot.yaml:5: onboarding.token: not the name of a token resource`},
		{"oidc", strings.Replace(tbotBase, "join_method: github", "join_method: oidc", 1), "tbot.yaml:4: onboarding.join_method: oidc: tbot's format cannot say where the ID token comes from"},
		{"bound_keypair without key", strings.Replace(tbotBase, "join_method: github", "join_method: bound_keypair", 1), "onboarding.bound_keypair.static_key_path: required"},
		{"registration_secret", strings.Replace(tbotBase, "join_method: github", "join_method: bound_keypair", 1) + "  bound_keypair: {registration_secret: s}\n",
			"tbot.yaml:6: onboarding.bound_keypair.registration_secret: MWI's bound_keypair token registers the public key"},
		{"gitlab block for github", tbotBase + "  gitlab: {token_env_var_name: X}\n", "tbot.yaml:6: onboarding.gitlab: is for join method gitlab, not github"},
		{"both ttls", tbotBase + "certificate_ttl: 1h\ncredential_ttl: 1h\n", "tbot.yaml:7: credential_ttl: set one of certificate_ttl and credential_ttl"},
		{"renewal too long", tbotBase + "certificate_ttl: 10m\nrenewal_interval: 20m\n", "tbot.yaml:7: renewal_interval: 20m0s must be positive and shorter than certificate_ttl"},
		{"output type", out("type: application\n    app_name: grafana\n    " + dir), `tbot.yaml:7: outputs.0.type: "application": MWI issues SSH and Kubernetes credentials only`},
		{"no output type", out(dir), "outputs.0.type: required"},
		{"output roles", out("type: identity\n    roles: [a]\n    " + dir), "tbot.yaml:8: outputs.0.roles: MWI issues every output with all of the bot's roles"},
		{"output ttl", out("type: identity\n    credential_ttl: 5m\n    " + dir), "tbot.yaml:8: outputs.0.credential_ttl: mwid issues and renews every output together"},
		{"output name", out("type: identity\n    name: x\n    " + dir), "tbot.yaml:8: outputs.0.name: mwid names outputs by type and path"},
		{"field of another type", out("type: identity\n    selectors: []\n    " + dir), "tbot.yaml:8: outputs.0.selectors: unknown field of outputs of type identity"},
		{"no destination", out("type: identity"), "tbot.yaml:7: outputs.0.destination: required"},
		{"no destination path", out("type: identity\n    destination: {type: directory}"), "outputs.0.destination.path: required"},
		{"kubernetes_secret", out("type: identity\n    destination: {type: kubernetes_secret}"), "tbot.yaml:8: outputs.0.destination.type: kubernetes_secret: mwid writes no Kubernetes secrets"},
		{"insecure symlinks", out("type: identity\n    destination: {type: directory, path: /o, symlinks: insecure}"), `outputs.0.destination.symlinks: "insecure": mwid never writes through a symbolic link`},
		{"destination acls", out("type: identity\n    destination: {type: directory, path: /o, acls: required}"), "tbot.yaml:8: outputs.0.destination.acls: mwid writes each file with a fixed mode"},
		{"allow_reissue", out("type: identity\n    allow_reissue: true\n    " + dir), "tbot.yaml:8: outputs.0.allow_reissue: MWI certificates are not reissued"},
		{"ssh_config value", out("type: identity\n    ssh_config: maybe\n    " + dir), `tbot.yaml:8: outputs.0.ssh_config: "maybe": want on or off`},
		{"same directory", out("type: identity\n    "+dir) + "  - type: identity\n    " + dir + "\n", "tbot.yaml:10: outputs.1.destination.path: another identity output writes to /o already"},
		{"no selectors", out("type: kubernetes/v2\n    " + dir), "tbot.yaml:7: outputs.0.selectors: required"},
		{"selector with both", out("type: kubernetes/v2\n    selectors: [{name: a, labels: {x: y}}]\n    " + dir), "tbot.yaml:8: outputs.0.selectors.0: set one of name and labels"},
		{"selector of the wrong shape", out("type: kubernetes/v2\n    selectors:\n      - env: prod\n    " + dir), `tbot.yaml:9: unknown field "env"`},
		{"default_namespace", out("type: kubernetes/v2\n    selectors: [{name: a, default_namespace: ns}]\n    " + dir), "tbot.yaml:8: outputs.0.selectors.0.default_namespace: mwid's kubeconfig sets no namespace"},
		{"context_name_template", out("type: kubernetes/v2\n    selectors: [{name: a}]\n    context_name_template: x\n    " + dir), "tbot.yaml:9: outputs.0.context_name_template: unknown field"},
		{"exec plugin", out("type: kubernetes/v2\n    selectors: [{name: a}]\n    disable_exec_plugin: false\n    " + dir), "tbot.yaml:9: outputs.0.disable_exec_plugin: mwid's kubeconfig.yaml holds the credentials inline"},
		{"ssh_host ca_type", out("type: ssh_host\n    ca_type: openssh\n    " + dir), `tbot.yaml:8: outputs.0.ca_type: "openssh": MWI exports its SSH user CA only`},
		{"ssh_host in memory", out("type: ssh_host\n    destination: {type: memory}"), "tbot.yaml:8: outputs.0.destination: sshd reads its host certificate from a file"},
		{"services too", tbotBase + "services:\n  - type: spiffe-svid\n    " + dir + "\n", `tbot.yaml:7: services.0.type: "spiffe-svid": MWI issues SSH and Kubernetes credentials only`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("/w/tbot.yaml", []byte(tc.file))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Parse:\n%s\nerror = %v\nwant it to contain %q", tc.file, err, tc.want)
			}
		})
	}
}

// TestCAPinFlag: mwid --ca-pin adds to a file's pins, satisfies mwid's own
// format's need for trust, and is checked like a pin of the file.
func TestCAPinFlag(t *testing.T) {
	v1 := strings.Replace(valid, `  ca_pins: ["sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]`+"\n", "", 1)
	if _, err := Parse("mwid.yaml", []byte(v1)); err == nil || !strings.Contains(err.Error(), "mwid --ca-pin PIN") {
		t.Errorf("v1 without pins: %v; want the error to name --ca-pin", err)
	}
	c, err := ParseFlags("mwid.yaml", []byte(v1), Flags{CAPins: []string{testPin}})
	if err != nil || !reflect.DeepEqual(c.Issuer.CAPins, []string{testPin}) {
		t.Errorf("v1 with --ca-pin: %v, pins %v", err, c)
	}
	if _, err := ParseFlags("mwid.yaml", []byte(valid), Flags{CAPins: []string{"sha256:x"}}); err == nil || !strings.Contains(err.Error(), `--ca-pin "sha256:x" is not a pin`) {
		t.Errorf("a bad --ca-pin: %v", err)
	}
}
