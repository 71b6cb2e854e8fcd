package resource

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
)

// testJWKS is a key set with one P-256 public key.
var testJWKS = func() string {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	raw, _ := key.PublicKey.Bytes()
	b := base64.RawURLEncoding.EncodeToString
	data, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{
		"kty": "EC", "crv": "P-256", "kid": "k1", "alg": "ES256", "use": "sig", "x": b(raw[1:33]), "y": b(raw[33:]),
	}}})
	return string(data)
}()

var testSSHKey = func() string {
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	k, _ := ssh.NewPublicKey(pub)
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k)))
}()

const tokenBotsYAML = `kind: role
version: v1
metadata: {name: deploy}
spec:
  allow:
    logins: [deploy]
---
kind: bot
version: v1
metadata: {name: ci}
spec:
  roles: [deploy]
`

func tokensYAML() string {
	return `kind: token
version: v1
metadata:
  name: github-ci
  description: Deploys from main
  expires: 2027-01-01T00:00:00Z
spec:
  join_method: github
  bot_name: ci
  github:
    allow:
      - repository: org/repo
        ref: refs/heads/main
      - repository_owner: org
        environment: production
        ref_type: branch
        workflow: deploy
        actor: octocat
      - sub: repo:org/other:ref:refs/heads/main
      - repository_id: 74215386
        repository_owner_id: "65120837"
      - repository_owner_id: 65120837
        ref: refs/heads/main
---
kind: token
version: v1
metadata: {name: ghes}
spec:
  join_method: github
  bot_name: ci
  audience: custom-aud
  github:
    enterprise_server_host: github.example.com:8443
    static_jwks: '` + testJWKS + `'
    allow: [{repository: org/repo}]
---
kind: token
version: v1
metadata: {name: gitlab-ci}
spec:
  join_method: gitlab
  bot_name: ci
  gitlab:
    allow:
      - project_path: grp/proj
        ref_protected: true
        pipeline_source: push
        user_login: alice
---
kind: token
version: v1
metadata: {name: kube}
spec:
  join_method: kubernetes
  bot_name: ci
  kubernetes:
    issuer_url: https://127.0.0.1:6443
    ca_data: ` + testCAData + `
    allow:
      - service_account: default:builder
---
kind: token
version: v1
metadata: {name: any-oidc}
spec:
  join_method: oidc
  bot_name: ci
  oidc:
    issuer_url: https://issuer.example.com/tenant
    ca_data: |
` + indent(testCAPEM, "      ") + `
    allow:
      - claims:
          repository: [a, b]
          ref: refs/heads/main
          verified: true
---
kind: token
version: v1
metadata: {name: build-01}
spec:
  join_method: bound_keypair
  bot_name: ci
  bound_keypair:
    public_key: ` + testSSHKey + `
`
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = prefix + l
	}
	return strings.Join(lines, "\n")
}

func TestTokens(t *testing.T) {
	s, err := LoadDir(writeDir(t, map[string]string{"a.yaml": tokenBotsYAML, "b.yaml": tokensYAML()}))
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	var names []string
	for _, tok := range s.Tokens() {
		names = append(names, tok.Name)
	}
	if want := []string{"any-oidc", "build-01", "ghes", "github-ci", "gitlab-ci", "kube"}; !slices.Equal(names, want) {
		t.Errorf("tokens = %v, want %v", names, want)
	}

	gh, ok := s.Token("github-ci")
	if !ok {
		t.Fatal("no token github-ci")
	}
	if gh.JoinMethod != api.JoinMethodGitHub || gh.BotName != "ci" || gh.Audience != "" || gh.Description != "Deploys from main" ||
		!gh.Expires.Equal(time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC)) || gh.GitHub() == nil || gh.GitLab() != nil || gh.Source.Line != 1 {
		t.Errorf("github-ci = %+v", gh)
	}
	wantRules := []GitHubRule{
		{Repository: "org/repo", Ref: "refs/heads/main"},
		{RepositoryOwner: "org", Environment: "production", RefType: "branch", Workflow: "deploy", Actor: "octocat"},
		{Sub: "repo:org/other:ref:refs/heads/main"},
		{RepositoryID: "74215386", RepositoryOwnerID: "65120837"},
		{RepositoryOwnerID: "65120837", Ref: "refs/heads/main"},
	}
	if !slices.Equal(gh.GitHub().Allow, wantRules) {
		t.Errorf("github rules = %+v, want %+v", gh.GitHub().Allow, wantRules)
	}
	if gh.Expired(time.Date(2026, 12, 31, 23, 59, 59, 0, time.UTC)) || !gh.Expired(gh.Expires) {
		t.Error("Expired is wrong around metadata.expires")
	}

	ghes, _ := s.Token("ghes")
	if ghes.Audience != "custom-aud" || ghes.GitHub().EnterpriseServerHost != "github.example.com:8443" || string(ghes.GitHub().StaticJWKS) != testJWKS {
		t.Errorf("ghes = %+v", ghes.GitHub())
	}
	if ghes.Expired(time.Now().Add(100 * 365 * 24 * time.Hour)) {
		t.Error("a token without metadata.expires expired")
	}

	gl, _ := s.Token("gitlab-ci")
	if gl.GitLab().Domain != "gitlab.com" || !slices.Equal(gl.GitLab().Allow, []GitLabRule{{ProjectPath: "grp/proj", RefProtected: "true", PipelineSource: "push", UserLogin: "alice"}}) {
		t.Errorf("gitlab-ci = %+v", gl.GitLab())
	}

	k, _ := s.Token("kube")
	if k.Kubernetes().IssuerURL != "https://127.0.0.1:6443" || string(k.Kubernetes().CAData) != testCAPEM ||
		!slices.Equal(k.Kubernetes().Allow, []KubernetesRule{{ServiceAccount: "default:builder"}}) {
		t.Errorf("kube = %+v", k.Kubernetes())
	}

	o, _ := s.Token("any-oidc")
	if o.OIDC().IssuerURL != "https://issuer.example.com/tenant" || strings.TrimSpace(string(o.OIDC().CAData)) != strings.TrimSpace(testCAPEM) || len(o.OIDC().Allow) != 1 {
		t.Fatalf("any-oidc = %+v", o.OIDC())
	}
	c := o.OIDC().Allow[0].Claims
	if !slices.Equal(c["repository"], []string{"a", "b"}) || !slices.Equal(c["ref"], []string{"refs/heads/main"}) || !slices.Equal(c["verified"], []string{"true"}) || len(c) != 3 {
		t.Errorf("oidc claims = %v", c)
	}
	// The set hands out copies.
	c["repository"][0] = "changed"
	if again, _ := s.Token("any-oidc"); again.OIDC().Allow[0].Claims["repository"][0] != "a" {
		t.Error("changing a returned token changed the set")
	}

	b, _ := s.Token("build-01")
	if b.BoundKeypair().PublicKey != testSSHKey || b.BoundKeypair().Key == nil || b.BoundKeypair().Key.Type() != ssh.KeyAlgoED25519 {
		t.Errorf("build-01 = %+v", b.BoundKeypair())
	}
	if _, ok := s.Token("nope"); ok {
		t.Error("Token(nope) found something")
	}
}

// TestTokenExpiredLoads checks that a token past its expiry still loads:
// a resource set must not become invalid with time.
func TestTokenExpiredLoads(t *testing.T) {
	s, err := LoadDir(writeDir(t, map[string]string{"a.yaml": tokenBotsYAML + "---\n" +
		"kind: token\nversion: v1\nmetadata: {name: old, expires: 2001-01-01T00:00:00Z}\nspec:\n  join_method: bound_keypair\n  bot_name: ci\n  bound_keypair: {public_key: " + testSSHKey + "}\n"}))
	if err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	tok, _ := s.Token("old")
	if !tok.Expired(time.Now()) {
		t.Errorf("token old is not expired: %v", tok.Expires)
	}
}

func TestTokenErrors(t *testing.T) {
	// token returns a token document at line 12 of a.yaml, after the bot
	// (lines 1-11); its spec starts at line 16.
	token := func(meta, spec string) string {
		return tokenBotsYAML + "---\nkind: token\nversion: v1\nmetadata:\n  name: t\n" + meta + "spec:\n" + spec
	}
	gh := func(block string) string {
		return token("", "  join_method: github\n  bot_name: ci\n  github:\n"+block)
	}
	allow := "    allow: [{repository: org/repo}]\n"
	rsaSmall := func() string {
		k, _ := rsa.GenerateKey(rand.Reader, 1024)
		b := base64.RawURLEncoding.EncodeToString
		data, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{"kty": "RSA", "n": b(k.N.Bytes()), "e": b(big.NewInt(int64(k.E)).Bytes())}}})
		return string(data)
	}()
	privateJWKS := func() string {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		raw, _ := k.PublicKey.Bytes()
		b := base64.RawURLEncoding.EncodeToString
		data, _ := json.Marshal(map[string]any{"keys": []any{map[string]any{"kty": "EC", "crv": "P-256", "kid": "p",
			"x": b(raw[1:33]), "y": b(raw[33:]), "d": b(k.D.FillBytes(make([]byte, 32)))}}})
		return string(data)
	}()
	tests := []struct {
		name string
		data string
		want []string
	}{
		{"unknown bot", token("", "  join_method: github\n  bot_name: ghost\n  github:\n"+allow),
			[]string{`a.yaml:20: token "t" names unknown bot "ghost" in spec.bot_name`}},
		{"missing bot", token("", "  join_method: github\n  github:\n"+allow),
			[]string{`a.yaml:19: missing spec.bot_name`}},
		{"missing join method", token("", "  bot_name: ci\n"),
			[]string{`a.yaml:19: missing spec.join_method (want github, gitlab, kubernetes, oidc or bound_keypair)`}},
		{"join method token", token("", "  join_method: token\n  bot_name: ci\n"),
			[]string{`a.yaml:19: spec.join_method token is for one-time secrets`}},
		{"unknown join method", token("", "  join_method: azure\n  bot_name: ci\n"),
			[]string{`a.yaml:19: unknown spec.join_method "azure"`}},
		{"missing spec", tokenBotsYAML + "---\nkind: token\nversion: v1\nmetadata: {name: t}\n",
			[]string{`a.yaml:14: missing spec.join_method`, `a.yaml:14: missing spec.bot_name`}},
		{"missing block", token("", "  join_method: gitlab\n  bot_name: ci\n"),
			[]string{`a.yaml:19: missing spec.gitlab (join_method is gitlab)`}},
		{"other block", token("", "  join_method: github\n  bot_name: ci\n  github:\n"+allow+"  gitlab:\n    allow: [{project_path: a/b}]\n"),
			[]string{`a.yaml:23: spec.gitlab is set but spec.join_method is github`}},
		{"unknown spec field", token("", "  join_method: github\n  bot_name: ci\n  ttl: 1h\n  github:\n"+allow),
			[]string{`a.yaml:21: unknown field "ttl" in spec (want join_method, bot_name, audience, github, gitlab, kubernetes, oidc, bound_keypair)`}},
		{"unknown metadata field", token("  labels: {a: b}\n", "  join_method: github\n  bot_name: ci\n  github:\n"+allow),
			[]string{`a.yaml:18: unknown field "labels" in metadata (want name, description, expires)`}},
		{"bad expires", token("  expires: next year\n", "  join_method: github\n  bot_name: ci\n  github:\n"+allow),
			[]string{`a.yaml:18: invalid metadata.expires "next year": want an RFC 3339 time`}},
		{"unknown github field", gh(allow + "    allowed_repos: [x]\n"),
			[]string{`a.yaml:23: unknown field "allowed_repos" in spec.github`}},
		{"unknown rule field", gh("    allow:\n      - repository: org/repo\n        branch: main\n"),
			[]string{`a.yaml:24: unknown field "branch" in spec.github.allow[0] (want sub, repository, repository_owner, repository_id, repository_owner_id, workflow, environment, actor, ref, ref_type)`}},
		{"github rule without repository, owner or sub", gh("    allow:\n      - repository: org/repo\n      - ref: refs/heads/main\n        workflow: deploy\n"),
			[]string{`a.yaml:24: spec.github.allow[1] must set at least one of repository, repository_owner, repository_id, repository_owner_id, sub: a rule on the other fields alone would admit the workflows of any repository on GitHub`}},
		{"github repository_id a name", gh("    allow:\n      - repository_id: org/repo\n"),
			[]string{`a.yaml:23: invalid spec.github.allow[0].repository_id "org/repo": want GitHub's numeric id, in decimal (such as 74)`}},
		{"github repository_id hexadecimal", gh("    allow:\n      - repository: org/repo\n        repository_id: 0x4A\n"),
			[]string{`a.yaml:24: invalid spec.github.allow[0].repository_id "0x4A"`}},
		{"github repository_owner_id with a leading zero", gh("    allow:\n      - repository_owner_id: 074\n"),
			[]string{`a.yaml:23: invalid spec.github.allow[0].repository_owner_id "074"`}},
		{"github repository_owner_id negative", gh("    allow:\n      - repository_owner_id: -74\n"),
			[]string{`a.yaml:23: invalid spec.github.allow[0].repository_owner_id "-74"`}},
		{"github repository_id float", gh("    allow:\n      - repository_id: 7.4e1\n"),
			[]string{`a.yaml:23: invalid spec.github.allow[0].repository_id "7.4e1"`}},
		{"github repository_id a list", gh("    allow:\n      - repository_id: [74]\n"),
			[]string{`a.yaml:23: spec.github.allow[0].repository_id must be a string, not a list`}},
		{"github rule of empty strings", gh("    allow:\n      - repository: ''\n        ref: main\n"),
			[]string{`a.yaml:23: spec.github.allow[0] must set at least one of repository`}},
		{"no rules", gh("    allow: []\n"),
			[]string{`a.yaml:22: spec.github.allow lists no rules`}},
		{"missing allow", gh("    enterprise_slug: acme\n"),
			[]string{`a.yaml:22: missing spec.github.allow`}},
		{"rule not a mapping", gh("    allow: [org/repo]\n"),
			[]string{`a.yaml:22: spec.github.allow[0] must be a mapping, not the value "org/repo"`}},
		{"rule value a list", gh("    allow: [{repository: [a, b]}]\n"),
			[]string{`a.yaml:22: spec.github.allow[0].repository must be a string, not a list`}},
		{"slug and host", gh("    enterprise_server_host: ghe.example.com\n    enterprise_slug: acme\n" + allow),
			[]string{`a.yaml:23: set one of spec.github.enterprise_server_host and spec.github.enterprise_slug, not both`}},
		{"host with scheme", gh("    enterprise_server_host: https://ghe.example.com\n" + allow),
			[]string{`a.yaml:22: invalid spec.github.enterprise_server_host "https://ghe.example.com": want a host name with an optional port`}},
		{"host bad port", gh("    enterprise_server_host: ghe.example.com:99999\n" + allow),
			[]string{`a.yaml:22: invalid spec.github.enterprise_server_host "ghe.example.com:99999": invalid port`}},
		{"bad slug", gh("    enterprise_slug: 'a/b'\n" + allow),
			[]string{`a.yaml:22: invalid spec.github.enterprise_slug "a/b"`}},
		{"JWKS not JSON", gh("    static_jwks: '{keys: ['\n" + allow),
			[]string{`a.yaml:22: invalid spec.github.static_jwks: not JSON`}},
		{"JWKS without keys", gh("    static_jwks: '{\"keys\": []}'\n" + allow),
			[]string{`a.yaml:22: invalid spec.github.static_jwks: holds no RSA or ECDSA signing key`}},
		{"JWKS bad key", gh("    static_jwks: '{\"keys\": [{\"kty\": \"EC\", \"crv\": \"P-256\", \"x\": \"AA\", \"y\": \"AA\"}]}'\n" + allow),
			[]string{`a.yaml:22: invalid spec.github.static_jwks: key 0:`}},
		{"JWKS small RSA", gh("    static_jwks: '" + rsaSmall + "'\n" + allow),
			[]string{`a.yaml:22: invalid spec.github.static_jwks: key 0 (kid ""): RSA keys must have at least 2048 bits`}},
		{"JWKS private key", gh("    static_jwks: '" + privateJWKS + "'\n" + allow),
			[]string{`a.yaml:22: invalid spec.github.static_jwks: key 0 (kid "p") is a private key`}},
		{"gitlab rule without project, namespace or sub", token("", "  join_method: gitlab\n  bot_name: ci\n  gitlab:\n    allow:\n      - ref: main\n        user_login: alice\n"),
			[]string{`a.yaml:23: spec.gitlab.allow[0] must set at least one of project_path, namespace_path, sub: a rule on the other fields alone would admit the pipelines of any project on the GitLab instance`}},
		{"gitlab bad ref_protected", token("", "  join_method: gitlab\n  bot_name: ci\n  gitlab:\n    allow:\n      - project_path: a/b\n        ref_protected: yes-ish\n"),
			[]string{`a.yaml:24: invalid spec.gitlab.allow[0].ref_protected "yes-ish": want true or false`}},
		{"gitlab bad domain", token("", "  join_method: gitlab\n  bot_name: ci\n  gitlab:\n    domain: gitlab.example.com/path\n    allow: [{project_path: a/b}]\n"),
			[]string{`a.yaml:22: invalid spec.gitlab.domain "gitlab.example.com/path"`}},
		{"kubernetes without issuer", token("", "  join_method: kubernetes\n  bot_name: ci\n  kubernetes:\n    allow: [{service_account: a:b}]\n"),
			[]string{`a.yaml:22: missing spec.kubernetes.issuer_url`}},
		{"kubernetes http issuer", token("", "  join_method: kubernetes\n  bot_name: ci\n  kubernetes:\n    issuer_url: http://k\n    allow: [{service_account: a:b}]\n"),
			[]string{`a.yaml:22: invalid spec.kubernetes.issuer_url "http://k": want an https:// URL`}},
		{"kubernetes bad service account", token("", "  join_method: kubernetes\n  bot_name: ci\n  kubernetes:\n    issuer_url: https://k\n    allow: [{service_account: builder}]\n"),
			[]string{`a.yaml:23: invalid spec.kubernetes.allow[0].service_account "builder": want NAMESPACE:NAME`}},
		{"kubernetes rule without service account", token("", "  join_method: kubernetes\n  bot_name: ci\n  kubernetes:\n    issuer_url: https://k\n    allow: [{}]\n"),
			[]string{`a.yaml:23: spec.kubernetes.allow[0] must set service_account`}},
		{"kubernetes bad CA", token("", "  join_method: kubernetes\n  bot_name: ci\n  kubernetes:\n    issuer_url: https://k\n    ca_data: '%%%'\n    allow: [{service_account: a:b}]\n"),
			[]string{`a.yaml:23: invalid spec.kubernetes.ca_data: neither PEM nor base64 of PEM`}},
		{"kubernetes CA and JWKS", token("", "  join_method: kubernetes\n  bot_name: ci\n  kubernetes:\n    issuer_url: https://k\n    ca_data: "+testCAData+"\n    static_jwks: '"+testJWKS+"'\n    allow: [{service_account: a:b}]\n"),
			[]string{`a.yaml:23: spec.kubernetes.ca_data is for the discovery endpoint, which static_jwks replaces`}},
		{"oidc rule without claims", token("", "  join_method: oidc\n  bot_name: ci\n  oidc:\n    issuer_url: https://i\n    allow: [{claims: {}}]\n"),
			[]string{`a.yaml:23: spec.oidc.allow[0].claims names no claims`}},
		{"oidc claim without values", token("", "  join_method: oidc\n  bot_name: ci\n  oidc:\n    issuer_url: https://i\n    allow:\n      - claims: {sub: []}\n"),
			[]string{`a.yaml:24: spec.oidc.allow[0].claims.sub lists no values`}},
		{"oidc empty claim value", token("", "  join_method: oidc\n  bot_name: ci\n  oidc:\n    issuer_url: https://i\n    allow:\n      - claims: {sub: ['']}\n"),
			[]string{`a.yaml:24: spec.oidc.allow[0].claims.sub: empty value`}},
		{"bound keypair bad key", token("", "  join_method: bound_keypair\n  bot_name: ci\n  bound_keypair:\n    public_key: ssh-ed25519 notbase64\n"),
			[]string{`a.yaml:22: invalid spec.bound_keypair.public_key: not a public key in authorized_keys form`}},
		{"bound keypair missing key", token("", "  join_method: bound_keypair\n  bot_name: ci\n  bound_keypair: {}\n"),
			[]string{`a.yaml:21: missing spec.bound_keypair.public_key`}},
		{"bound keypair with audience", token("", "  join_method: bound_keypair\n  bot_name: ci\n  audience: x\n  bound_keypair: {public_key: "+testSSHKey+"}\n"),
			[]string{`a.yaml:21: spec.audience applies to ID tokens, not to join_method bound_keypair`}},
		{"duplicate token", token("", "  join_method: github\n  bot_name: ci\n  github:\n"+allow) + "---\nkind: token\nversion: v1\nmetadata: {name: t}\nspec:\n  join_method: github\n  bot_name: ci\n  github:\n" + allow,
			[]string{`a.yaml:26: duplicate token "t" (first defined at `}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := writeDir(t, map[string]string{"a.yaml": tt.data})
			_, err := LoadDir(dir)
			if err == nil {
				t.Fatalf("LoadDir succeeded, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not contain %q:\n%v", w, err)
				}
			}
			checkErrorLines(t, err.Error(), dir)
		})
	}
}

func TestTokenBotInOtherFile(t *testing.T) {
	dir := writeDir(t, map[string]string{
		"bots.yaml":   tokenBotsYAML,
		"tokens.yaml": "kind: token\nversion: v1\nmetadata: {name: t}\nspec:\n  join_method: bound_keypair\n  bot_name: ci\n  bound_keypair: {public_key: " + testSSHKey + "}\n",
	})
	if _, err := LoadDir(dir); err != nil {
		t.Fatalf("LoadDir: %v", err)
	}
	// Parse checks each file alone, so the bot need not be in it.
	res, err := Parse("tokens.yaml", []byte("kind: token\nversion: v1\nmetadata: {name: t}\nspec:\n  join_method: bound_keypair\n  bot_name: elsewhere\n  bound_keypair: {public_key: "+testSSHKey+"}\n"))
	if err != nil || len(res) != 1 {
		t.Fatalf("Parse = %v, %v", res, err)
	}
	if tok, ok := res[0].(Token); !ok || tok.BotName != "elsewhere" {
		t.Errorf("Parse returned %#v", res[0])
	}
}

// checkFuzzedToken checks the invariants of a token that Parse accepted.
func checkFuzzedToken(t *testing.T, tok Token) {
	t.Helper()
	blocks := 0
	for _, set := range []bool{tok.GitHub() != nil, tok.GitLab() != nil, tok.Kubernetes() != nil, tok.OIDC() != nil, tok.BoundKeypair() != nil} {
		if set {
			blocks++
		}
	}
	bad := !nameRE.MatchString(tok.Name) || tok.BotName == "" || blocks != 1 || tok.Join == nil || tok.Join.Method() != tok.JoinMethod
	switch tok.JoinMethod {
	case api.JoinMethodGitHub:
		bad = bad || tok.GitHub() == nil || len(tok.GitHub().Allow) == 0
		for _, r := range tok.GitHub().Allow {
			bad = bad || r.Repository == "" && r.RepositoryOwner == "" && r.RepositoryID == "" && r.RepositoryOwnerID == "" && r.Sub == ""
			for _, id := range []string{r.RepositoryID, r.RepositoryOwnerID} {
				bad = bad || id != "" && !githubIDRE.MatchString(id)
			}
		}
	case api.JoinMethodGitLab:
		bad = bad || tok.GitLab() == nil || len(tok.GitLab().Allow) == 0 || tok.GitLab().Domain == ""
		for _, r := range tok.GitLab().Allow {
			bad = bad || r.ProjectPath == "" && r.NamespacePath == "" && r.Sub == ""
		}
	case api.JoinMethodKubernetes:
		bad = bad || tok.Kubernetes() == nil || len(tok.Kubernetes().Allow) == 0 || checkIssuerURL(tok.Kubernetes().IssuerURL) != nil
		for _, r := range tok.Kubernetes().Allow {
			bad = bad || !serviceAccountRE.MatchString(r.ServiceAccount)
		}
	case api.JoinMethodOIDC:
		bad = bad || tok.OIDC() == nil || len(tok.OIDC().Allow) == 0 || checkIssuerURL(tok.OIDC().IssuerURL) != nil
		for _, r := range tok.OIDC().Allow {
			bad = bad || len(r.Claims) == 0
		}
	case api.JoinMethodBoundKeypair:
		bad = bad || tok.BoundKeypair() == nil || tok.BoundKeypair().Key == nil
	default:
		bad = true
	}
	if bad {
		t.Errorf("invalid token accepted: %#v", tok)
	}
}
