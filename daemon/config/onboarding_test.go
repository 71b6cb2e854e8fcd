package config

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/daemon/output"
)

// head is a configuration up to its onboarding section (lines 1-4).
const head = `version: v1
issuer:
  address: 127.0.0.1:7443
  ca_pins: ["sha256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]
`

func TestParseOnboarding(t *testing.T) {
	for _, tc := range []struct {
		name, onboarding string
		want             Onboarding
	}{
		{"token", "join_method: token\n  token: {credential: join-token}",
			Onboarding{JoinMethod: "token", Token: SecretSource{Credential: "join-token"}}},
		{"github", "join_method: github\n  token_name: github-ci\n  id_token:\n    github_actions: {audience: mwi}",
			Onboarding{JoinMethod: "github", TokenName: "github-ci", IDToken: IDTokenSource{GitHubActions: true, Audience: "mwi"}}},
		{"github from env", "join_method: github\n  token_name: gh\n  id_token: {env: GH_TOKEN}",
			Onboarding{JoinMethod: "github", TokenName: "gh", IDToken: IDTokenSource{Env: "GH_TOKEN"}}},
		{"gitlab", "join_method: gitlab\n  token_name: gitlab-ci\n  id_token: {env: GITLAB_MWI_TOKEN}",
			Onboarding{JoinMethod: "gitlab", TokenName: "gitlab-ci", IDToken: IDTokenSource{Env: "GITLAB_MWI_TOKEN"}}},
		{"kubernetes, relative file", "join_method: kubernetes\n  token_name: pods\n  id_token: {file: tokens/mwi}",
			Onboarding{JoinMethod: "kubernetes", TokenName: "pods", IDToken: IDTokenSource{File: "/etc/mwi/tokens/mwi"}}},
		{"oidc", "join_method: oidc\n  token_name: any\n  id_token: {file: /var/run/secrets/tokens/mwi}",
			Onboarding{JoinMethod: "oidc", TokenName: "any", IDToken: IDTokenSource{File: "/var/run/secrets/tokens/mwi"}}},
		{"oidc with a GitHub token", "join_method: oidc\n  token_name: any\n  id_token: {github_actions: {audience: x}}",
			Onboarding{JoinMethod: "oidc", TokenName: "any", IDToken: IDTokenSource{GitHubActions: true, Audience: "x"}}},
		{"bound keypair, credential", "join_method: bound_keypair\n  token_name: build-01\n  key: {credential: mwi-key}",
			Onboarding{JoinMethod: "bound_keypair", TokenName: "build-01", Key: SecretSource{Credential: "mwi-key"}}},
		{"bound keypair, file", "join_method: bound_keypair\n  token_name: build-01\n  key: {file: key}",
			Onboarding{JoinMethod: "bound_keypair", TokenName: "build-01", Key: SecretSource{File: "/etc/mwi/key"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := Parse("/etc/mwi/mwid.yaml", []byte(head+"onboarding:\n  "+tc.onboarding+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			if c.Onboarding != tc.want {
				t.Errorf("onboarding = %+v\nwant %+v", c.Onboarding, tc.want)
			}
		})
	}
}

func TestParseOnboardingErrors(t *testing.T) {
	for _, tc := range []struct {
		name, onboarding, want string
	}{
		{"no method", "token_name: x", `mwid.yaml:6: onboarding.join_method: required (token, github, gitlab, kubernetes, oidc or bound_keypair)`},
		{"unknown method", "join_method: azure", `mwid.yaml:6: onboarding.join_method: unknown join method "azure"`},
		{"token without a source", "join_method: token", "mwid.yaml:6: onboarding.token: required"},
		{"token with a name", "join_method: token\n  token_name: x\n  token: {env: T}", "mwid.yaml:7: onboarding.token_name: is for the other join methods"},
		{"token with an id token", "join_method: token\n  token: {env: T}\n  id_token: {env: X}", "mwid.yaml:8: onboarding.id_token: is for join methods github"},
		{"no token name", "join_method: github\n  id_token: {env: X}", "mwid.yaml:6: onboarding.token_name: required"},
		{"bad token name", "join_method: github\n  token_name: Git Hub\n  id_token: {env: X}", `mwid.yaml:7: onboarding.token_name: "Git Hub" is not a resource name`},
		{"github with a token", "join_method: github\n  token_name: gh\n  token: {env: T}\n  id_token: {env: X}", "mwid.yaml:8: onboarding.token: is for join method token"},
		{"no id token", "join_method: gitlab\n  token_name: gl", "mwid.yaml:6: onboarding.id_token: required for join method gitlab"},
		{"two id token sources", "join_method: oidc\n  token_name: o\n  id_token: {env: X, file: /t}", "mwid.yaml:8: onboarding.id_token: set exactly one of github_actions, env or file"},
		{"empty id token", "join_method: oidc\n  token_name: o\n  id_token: {}", "onboarding.id_token: set exactly one"},
		{"no audience", "join_method: github\n  token_name: gh\n  id_token:\n    github_actions: {}", "mwid.yaml:9: onboarding.id_token.github_actions.audience: required"},
		{"github actions for gitlab", "join_method: gitlab\n  token_name: gl\n  id_token: {github_actions: {audience: x}}", "onboarding.id_token.github_actions: a GitHub Actions token cannot join with join method gitlab"},
		{"bad env name", "join_method: gitlab\n  token_name: gl\n  id_token: {env: 'A-B'}", `onboarding.id_token.env: "A-B" is not an environment variable name`},
		{"unknown id token field", "join_method: gitlab\n  token_name: gl\n  id_token: {url: x}", `mwid.yaml:8: unknown field "url"`},
		{"no key", "join_method: bound_keypair\n  token_name: b", "mwid.yaml:6: onboarding.key: required"},
		{"key from env", "join_method: bound_keypair\n  token_name: b\n  key: {env: K}", `mwid.yaml:8: unknown field "env"`},
		{"two keys", "join_method: bound_keypair\n  token_name: b\n  key: {file: /k, credential: k}", "onboarding.key: set exactly one of file or credential"},
		{"bad credential", "join_method: bound_keypair\n  token_name: b\n  key: {credential: ../k}", `onboarding.key.credential: "../k" is not a systemd credential name`},
		{"key for github", "join_method: github\n  token_name: gh\n  id_token: {env: X}\n  key: {file: /k}", "mwid.yaml:9: onboarding.key: is for join method bound_keypair"},
		{"id token for bound keypair", "join_method: bound_keypair\n  token_name: b\n  key: {file: /k}\n  id_token: {env: X}", "onboarding.id_token: is for join methods github, gitlab, kubernetes and oidc, not bound_keypair"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("/etc/mwi/mwid.yaml", []byte(head+"onboarding:\n  "+tc.onboarding+"\n"))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Parse error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestParseIdentityOutputs(t *testing.T) {
	c, err := Parse("/etc/mwi/mwid.yaml", []byte(valid+`outputs:
  - type: identity
    directory: out
  - type: kubernetes
    clusters: [prod]
    directory: out
`))
	if err != nil {
		t.Fatal(err)
	}
	o, ok := c.Outputs[0].(output.Identity)
	if !ok || o.Directory != "/etc/mwi/out" || filepath.Join(o.Directory, output.IdentityKeyFile) != "/etc/mwi/out/key" {
		t.Errorf("identity output = %+v", o)
	}
	if c.Outputs[1].Type() != "kubernetes" || c.Outputs[1].Path() != "/etc/mwi/out/kubeconfig.yaml" {
		t.Errorf("kubernetes output = %+v", c.Outputs[1])
	}

	for _, tc := range []struct{ outputs, want string }{
		{"  - type: identity\n", "mwid.yaml:22: outputs.0.directory: required: where to write key, key.pub, key-cert.pub, known_hosts and ssh_config"},
		{"  - type: identity\n    directory: out\n    clusters: [prod]\n", "mwid.yaml:24: outputs.0.clusters: is not a field of outputs of type identity"},
		{"  - type: identity\n    directory: out\n    host_key: /k.pub\n", "outputs.0.host_key: is not a field of outputs of type identity"},
		{"  - type: identity\n    directory: out\n  - type: identity\n    directory: ./out/\n", "mwid.yaml:25: outputs.1.directory: another identity output writes to /etc/mwi/out already"},
	} {
		_, err := Parse("/etc/mwi/mwid.yaml", []byte(valid+"outputs:\n"+tc.outputs))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("outputs\n%s: Parse error = %v, want it to contain %q", tc.outputs, err, tc.want)
		}
	}
}
