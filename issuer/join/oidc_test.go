package join_test

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/oidctest"
	"github.com/mwi-project/mwi/issuer/join"
	"github.com/mwi-project/mwi/issuer/resource"
)

const aud = "mwi-test"

func githubToken(rules ...resource.GitHubRule) resource.Token {
	return resource.Token{Name: "gh", JoinMethod: api.JoinMethodGitHub, BotName: "ci", Join: &resource.GitHubJoin{Allow: rules}}
}

// checkDenied checks that err is a *join.DeniedError for check.
func checkDenied(t *testing.T, err error, check string) {
	t.Helper()
	var d *join.DeniedError
	if !errors.As(err, &d) {
		t.Fatalf("error = %v (%T), want a denial %q", err, err, check)
	}
	if d.Check != check {
		t.Errorf("denied for %q (%s), want %q", d.Check, d.Detail, check)
	}
}

// TestGitHubRules checks each field of a GitHub allow rule, matching and
// not matching.
func TestGitHubRules(t *testing.T) {
	p := oidctest.New(t)
	v := &join.Verifier{GitHubIssuer: p.Issuer(), RootCAs: p.CertPool()}
	base := resource.GitHubRule{Repository: "org/repo"}
	for _, tc := range []struct {
		field string
		rule  resource.GitHubRule
		claim string // the claim the field compares with
		value string // its value in the token by default
	}{
		{"sub", resource.GitHubRule{Sub: "repo:org/repo:ref:refs/heads/main"}, "sub", "repo:org/repo:ref:refs/heads/main"},
		{"repository", resource.GitHubRule{Repository: "org/repo"}, "repository", "org/repo"},
		{"repository_owner", resource.GitHubRule{RepositoryOwner: "org"}, "repository_owner", "org"},
		{"repository_id", resource.GitHubRule{RepositoryID: "74215386"}, "repository_id", "74215386"},
		{"repository_owner_id", resource.GitHubRule{RepositoryOwnerID: "65120837"}, "repository_owner_id", "65120837"},
		{"repository and its id", resource.GitHubRule{Repository: "org/repo", RepositoryID: "74215386"}, "repository_id", "74215386"},
		{"workflow", resource.GitHubRule{Repository: base.Repository, Workflow: "deploy"}, "workflow", "deploy"},
		{"environment", resource.GitHubRule{Repository: base.Repository, Environment: "production"}, "environment", "production"},
		{"actor", resource.GitHubRule{Repository: base.Repository, Actor: "octocat"}, "actor", "octocat"},
		{"ref", resource.GitHubRule{Repository: base.Repository, Ref: "refs/heads/main"}, "ref", "refs/heads/main"},
		{"ref_type", resource.GitHubRule{Repository: base.Repository, RefType: "branch"}, "ref_type", "branch"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			tok := githubToken(tc.rule)
			claims := p.GitHubClaims(aud, "org/repo")
			if claims[tc.claim] != tc.value {
				t.Fatalf("default claim %s = %v, want %q", tc.claim, claims[tc.claim], tc.value)
			}
			att, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
			if err != nil {
				t.Fatalf("matching token refused: %v", err)
			}
			if att.Rule != 0 || att.Subject != "repo:org/repo:ref:refs/heads/main" || att.Issuer != p.Issuer() {
				t.Errorf("attestation = %+v", att)
			}

			claims = p.GitHubClaims(aud, "org/repo")
			claims[tc.claim] = tc.value + "x"
			_, err = v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
			checkDenied(t, err, join.CheckNoRule)

			// Case matters, and a missing claim matches nothing.
			if up := strings.ToUpper(tc.value); up != tc.value {
				claims[tc.claim] = up
				_, err = v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
				checkDenied(t, err, join.CheckNoRule)
			}
			delete(claims, tc.claim)
			_, err = v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
			checkDenied(t, err, join.CheckNoRule)
		})
	}

	t.Run("any rule admits", func(t *testing.T) {
		tok := githubToken(resource.GitHubRule{Repository: "org/other"}, resource.GitHubRule{RepositoryOwner: "org", Ref: "refs/heads/main"})
		att, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(p.GitHubClaims(aud, "org/repo")))
		if err != nil || att.Rule != 1 {
			t.Fatalf("VerifyIDToken = %+v, %v; want rule 1", att, err)
		}
	})
	t.Run("ids pin a re-registered name out", func(t *testing.T) {
		// The repository was deleted and its name registered again: the
		// name matches, the id does not.
		tok := githubToken(resource.GitHubRule{Repository: "org/repo", RepositoryID: "74215386", RepositoryOwnerID: "65120837"})
		claims := p.GitHubClaims(aud, "org/repo")
		claims["repository_id"] = "99999999"
		_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
		checkDenied(t, err, join.CheckNoRule)
		claims = p.GitHubClaims(aud, "org/repo")
		claims["repository_owner_id"] = "1"
		_, err = v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
		checkDenied(t, err, join.CheckNoRule)
		// A number claim compares as its decimal text.
		claims = p.GitHubClaims(aud, "org/repo")
		claims["repository_id"], claims["repository_owner_id"] = 74215386, 65120837
		if _, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims)); err != nil {
			t.Errorf("ids as numbers: %v", err)
		}
	})
	t.Run("every field must match", func(t *testing.T) {
		tok := githubToken(resource.GitHubRule{Repository: "org/repo", Ref: "refs/heads/main", Environment: "staging"})
		_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(p.GitHubClaims(aud, "org/repo")))
		checkDenied(t, err, join.CheckNoRule)
	})
}

func TestGitLabRules(t *testing.T) {
	p := oidctest.New(t)
	v := &join.Verifier{RootCAs: p.CertPool()}
	domain := strings.TrimPrefix(p.Issuer(), "https://")
	for _, tc := range []struct {
		field string
		rule  resource.GitLabRule
		claim string
		value string
	}{
		{"sub", resource.GitLabRule{Sub: "project_path:grp/proj:ref_type:branch:ref:main"}, "sub", "project_path:grp/proj:ref_type:branch:ref:main"},
		{"project_path", resource.GitLabRule{ProjectPath: "grp/proj"}, "project_path", "grp/proj"},
		{"namespace_path", resource.GitLabRule{NamespacePath: "grp"}, "namespace_path", "grp"},
		{"pipeline_source", resource.GitLabRule{ProjectPath: "grp/proj", PipelineSource: "push"}, "pipeline_source", "push"},
		{"environment", resource.GitLabRule{ProjectPath: "grp/proj", Environment: "production"}, "environment", "production"},
		{"ref", resource.GitLabRule{ProjectPath: "grp/proj", Ref: "main"}, "ref", "main"},
		{"ref_type", resource.GitLabRule{ProjectPath: "grp/proj", RefType: "branch"}, "ref_type", "branch"},
		{"user_login", resource.GitLabRule{ProjectPath: "grp/proj", UserLogin: "gitlab-user"}, "user_login", "gitlab-user"},
		{"ref_protected", resource.GitLabRule{ProjectPath: "grp/proj", RefProtected: "true"}, "ref_protected", "true"},
	} {
		t.Run(tc.field, func(t *testing.T) {
			tok := resource.Token{Name: "gl", JoinMethod: api.JoinMethodGitLab, BotName: "ci",
				Join: &resource.GitLabJoin{Domain: domain, Allow: []resource.GitLabRule{tc.rule}}}
			claims := p.GitLabClaims(aud, "grp/proj")
			if claims[tc.claim] != tc.value {
				t.Fatalf("default claim %s = %v, want %q", tc.claim, claims[tc.claim], tc.value)
			}
			if _, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims, oidctest.WithAlgorithm(oidctest.ES256))); err != nil {
				t.Fatalf("matching token refused: %v", err)
			}
			claims[tc.claim] = "other"
			_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
			checkDenied(t, err, join.CheckNoRule)
		})
	}
	// A protected-ref rule refuses an unprotected ref, whether the claim
	// is the string GitLab sends or a boolean.
	tok := resource.Token{Name: "gl", JoinMethod: api.JoinMethodGitLab, BotName: "ci",
		Join: &resource.GitLabJoin{Domain: domain, Allow: []resource.GitLabRule{{ProjectPath: "grp/proj", RefProtected: "true"}}}}
	for _, val := range []any{"false", false} {
		claims := p.GitLabClaims(aud, "grp/proj")
		claims["ref_protected"] = val
		_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
		checkDenied(t, err, join.CheckNoRule)
	}
	claims := p.GitLabClaims(aud, "grp/proj")
	claims["ref_protected"] = true
	if _, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims)); err != nil {
		t.Errorf("boolean ref_protected true refused: %v", err)
	}
}

func TestKubernetesRules(t *testing.T) {
	p := oidctest.New(t)
	v := &join.Verifier{}
	tok := resource.Token{Name: "k", JoinMethod: api.JoinMethodKubernetes, BotName: "ci",
		Join: &resource.KubernetesJoin{IssuerURL: p.Issuer(), CAData: p.CAPEM(), Allow: []resource.KubernetesRule{
			{ServiceAccount: "ci:builder"}, {ServiceAccount: "default:deployer"},
		}}}
	att, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(p.KubernetesClaims(aud, "default", "deployer")))
	if err != nil || att.Rule != 1 {
		t.Fatalf("deployer: %+v, %v", att, err)
	}
	for _, sa := range [][2]string{{"default", "builder"}, {"ci", "deployer"}, {"ci", "builder2"}} {
		_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(p.KubernetesClaims(aud, sa[0], sa[1])))
		checkDenied(t, err, join.CheckNoRule)
	}
	// A token of another kind whose sub merely ends like one is refused.
	claims := p.KubernetesClaims(aud, "ci", "builder")
	claims["sub"] = "ci:builder"
	_, err = v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
	checkDenied(t, err, join.CheckNoRule)

	// Static keys work without discovery, and without ca_data.
	static := tok
	static.Join = &resource.KubernetesJoin{IssuerURL: "https://kubernetes.default.svc", StaticJWKS: p.JWKS(), Allow: tok.Kubernetes().Allow}
	claims = p.KubernetesClaims(aud, "ci", "builder")
	claims["iss"] = "https://kubernetes.default.svc"
	before := p.DiscoveryRequests()
	if _, err := v.VerifyIDToken(context.Background(), static, aud, p.Mint(claims, oidctest.WithAlgorithm(oidctest.ES256))); err != nil {
		t.Errorf("static key set: %v", err)
	}
	if p.DiscoveryRequests() != before {
		t.Error("a static key set made a discovery request")
	}
}

func TestOIDCRules(t *testing.T) {
	p := oidctest.New(t)
	v := &join.Verifier{RootCAs: p.CertPool()}
	tok := resource.Token{Name: "o", JoinMethod: api.JoinMethodOIDC, BotName: "ci",
		Join: &resource.OIDCJoin{IssuerURL: p.Issuer(), Allow: []resource.OIDCRule{
			{Claims: map[string][]string{"repository": {"org/a", "org/b"}, "ref": {"refs/heads/main"}}},
			{Claims: map[string][]string{"run_number": {"42"}, "admin": {"true"}}},
		}}}
	for _, tc := range []struct {
		name string
		set  map[string]any
		rule int // -1: refused
	}{
		{"first value", map[string]any{"repository": "org/a"}, 0},
		{"second value", map[string]any{"repository": "org/b"}, 0},
		{"value not listed", map[string]any{"repository": "org/c"}, -1},
		{"one claim of two", map[string]any{"repository": "org/a", "ref": "refs/heads/dev"}, -1},
		{"claim missing", map[string]any{"repository": "org/a", "ref": nil}, -1},
		{"a list never matches", map[string]any{"repository": []string{"org/a"}}, -1},
		{"number and boolean", map[string]any{"repository": "x", "run_number": 42, "admin": true}, 1},
		{"boolean false", map[string]any{"repository": "x", "run_number": 42, "admin": false}, -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claims := p.GitHubClaims(aud, "org/a")
			for k, val := range tc.set {
				if val == nil {
					delete(claims, k)
				} else {
					claims[k] = val
				}
			}
			att, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
			if tc.rule < 0 {
				checkDenied(t, err, join.CheckNoRule)
				return
			}
			if err != nil || att.Rule != tc.rule {
				t.Fatalf("VerifyIDToken = %+v, %v; want rule %d", att, err, tc.rule)
			}
		})
	}
}

// TestIDTokenChecks runs the table of refusals from the issue.
func TestIDTokenChecks(t *testing.T) {
	p := oidctest.New(t)
	v := &join.Verifier{GitHubIssuer: p.Issuer(), RootCAs: p.CertPool()}
	tok := githubToken(resource.GitHubRule{Repository: "org/repo"})
	now := time.Now()
	type edit func(map[string]any)
	set := func(k string, val any) edit { return func(c map[string]any) { c[k] = val } }
	for _, tc := range []struct {
		name  string
		edit  edit
		opts  []oidctest.MintOption
		check string // "" for accepted
	}{
		{"RS256", nil, nil, ""},
		{"ES256", nil, []oidctest.MintOption{oidctest.WithAlgorithm(oidctest.ES256)}, ""},
		{"no kid", nil, []oidctest.MintOption{oidctest.WithKeyID("")}, ""},
		{"audience in a list", set("aud", []string{"other", aud}), nil, ""},
		{"wrong audience", set("aud", "https://github.com/org"), nil, join.CheckAudience},
		{"audience list without ours", set("aud", []string{"a", "b"}), nil, join.CheckAudience},
		{"no audience", func(c map[string]any) { delete(c, "aud") }, nil, join.CheckAudience},
		{"wrong issuer", set("iss", "https://token.actions.githubusercontent.com"), nil, join.CheckIssuer},
		{"issuer with trailing slash", set("iss", p.Issuer()+"/"), nil, join.CheckIssuer},
		{"expired", set("exp", now.Add(-2*time.Minute).Unix()), nil, join.CheckExpired},
		{"expired within leeway", set("exp", now.Add(-30*time.Second).Unix()), nil, ""},
		{"no expiry", func(c map[string]any) { delete(c, "exp") }, nil, join.CheckMalformed},
		{"expiry not a number", set("exp", "tomorrow"), nil, join.CheckMalformed},
		{"not yet valid", set("nbf", now.Add(2*time.Minute).Unix()), nil, join.CheckNotYetValid},
		{"not yet valid within leeway", set("nbf", now.Add(30*time.Second).Unix()), nil, ""},
		{"issued in the future", set("iat", now.Add(5*time.Minute).Unix()), nil, join.CheckNotYetValid},
		{"alg none", nil, []oidctest.MintOption{oidctest.WithAlgNone()}, join.CheckAlgorithm + " none"},
		{"HS256 with the public key", nil, []oidctest.MintOption{oidctest.WithHS256PublicKey()}, join.CheckAlgorithm + " HS256"},
		{"bad signature RS256", nil, []oidctest.MintOption{oidctest.WithWrongKey()}, join.CheckSignature},
		{"bad signature ES256", nil, []oidctest.MintOption{oidctest.WithWrongKey(), oidctest.WithAlgorithm(oidctest.ES256)}, join.CheckSignature},
		{"unknown kid", nil, []oidctest.MintOption{oidctest.WithUnknownKID()}, join.CheckUnknownKeyID},
		{"RSA key under the EC key's id", nil, []oidctest.MintOption{oidctest.WithKeyID(p.KeyID(oidctest.ES256))}, join.CheckSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claims := p.GitHubClaims(aud, "org/repo")
			if tc.edit != nil {
				tc.edit(claims)
			}
			_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims, tc.opts...))
			if tc.check == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			checkDenied(t, err, tc.check)
			var d *join.DeniedError
			errors.As(err, &d)
			if strings.Contains(d.Check, "org/repo") {
				t.Errorf("the check %q names the rules", d.Check)
			}
		})
	}
	for _, raw := range []string{"", "a.b", "not.a.jwt", "{\"payload\":\"e30\",\"signatures\":[]}", strings.Repeat("a", 20000)} {
		_, err := v.VerifyIDToken(context.Background(), tok, aud, raw)
		checkDenied(t, err, join.CheckMalformed)
	}
}

func TestEnterpriseIssuers(t *testing.T) {
	t.Run("enterprise slug", func(t *testing.T) {
		p := oidctest.New(t, oidctest.WithPathPrefix("/acme"))
		v := &join.Verifier{GitHubIssuer: p.URL(), RootCAs: p.CertPool()}
		tok := githubToken(resource.GitHubRule{Repository: "org/repo"})
		tok.GitHub().EnterpriseSlug = "acme"
		if iss, _ := v.Issuer(tok); iss != p.Issuer() {
			t.Fatalf("Issuer = %q, want %q", iss, p.Issuer())
		}
		if _, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(p.GitHubClaims(aud, "org/repo"))); err != nil {
			t.Fatalf("slug issuer: %v", err)
		}
		// A token from github.com's issuer is not one of the enterprise's.
		claims := p.GitHubClaims(aud, "org/repo")
		claims["iss"] = p.URL()
		_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
		checkDenied(t, err, join.CheckIssuer)
		// Nor the other way round.
		plain := githubToken(resource.GitHubRule{Repository: "org/repo"})
		plain.GitHub().StaticJWKS = p.JWKS()
		_, err = v.VerifyIDToken(context.Background(), plain, aud, p.Mint(p.GitHubClaims(aud, "org/repo")))
		checkDenied(t, err, join.CheckIssuer)
	})
	t.Run("enterprise server host", func(t *testing.T) {
		p := oidctest.New(t, oidctest.WithPathPrefix("/_services/token"))
		v := &join.Verifier{RootCAs: p.CertPool()}
		tok := githubToken(resource.GitHubRule{RepositoryOwner: "org"})
		tok.GitHub().EnterpriseServerHost = p.Host()
		if iss, _ := v.Issuer(tok); iss != "https://"+p.Host()+"/_services/token" || iss != p.Issuer() {
			t.Fatalf("Issuer = %q, want %q", iss, p.Issuer())
		}
		if _, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(p.GitHubClaims(aud, "org/repo"))); err != nil {
			t.Fatalf("server host issuer: %v", err)
		}
		claims := p.GitHubClaims(aud, "org/repo")
		claims["iss"] = join.DefaultGitHubIssuer
		_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
		checkDenied(t, err, join.CheckIssuer)
	})
	t.Run("default issuer with static keys", func(t *testing.T) {
		p := oidctest.New(t)
		v := &join.Verifier{}
		tok := githubToken(resource.GitHubRule{Repository: "org/repo"})
		tok.GitHub().StaticJWKS = p.JWKS()
		claims := oidctest.GitHubClaims(join.DefaultGitHubIssuer, aud, "org/repo")
		if _, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims)); err != nil {
			t.Fatalf("static JWKS: %v", err)
		}
		_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims, oidctest.WithUnknownKID()))
		checkDenied(t, err, join.CheckUnknownKeyID)
		if p.DiscoveryRequests() != 0 || p.JWKSRequests() != 0 {
			t.Error("static keys fetched something")
		}
	})
	t.Run("gitlab domain", func(t *testing.T) {
		v := &join.Verifier{}
		iss, err := v.Issuer(resource.Token{JoinMethod: api.JoinMethodGitLab, Join: &resource.GitLabJoin{Domain: "gitlab.example.com:8443"}})
		if err != nil || iss != "https://gitlab.example.com:8443" {
			t.Errorf("Issuer = %q, %v", iss, err)
		}
		if iss, _ := v.Issuer(resource.Token{JoinMethod: api.JoinMethodGitHub, Join: &resource.GitHubJoin{}}); iss != join.DefaultGitHubIssuer {
			t.Errorf("github.com issuer = %q", iss)
		}
	})
}

func TestReplayKey(t *testing.T) {
	p := oidctest.New(t)
	v := &join.Verifier{GitHubIssuer: p.Issuer(), RootCAs: p.CertPool()}
	tok := githubToken(resource.GitHubRule{Repository: "org/repo"})
	claims := p.GitHubClaims(aud, "org/repo")
	a1, err1 := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
	a2, err2 := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims, oidctest.WithAlgorithm(oidctest.ES256)))
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	// The same jti is the same key, however the token was signed.
	if a1.ReplayKey != a2.ReplayKey || !strings.HasPrefix(a1.ReplayKey, "jti:") || strings.Contains(a1.ReplayKey, claims["jti"].(string)) {
		t.Errorf("replay keys %q, %q", a1.ReplayKey, a2.ReplayKey)
	}
	// Without a jti, the key is the token's hash.
	delete(claims, "jti")
	raw := p.Mint(claims)
	a3, _ := v.VerifyIDToken(context.Background(), tok, aud, raw)
	a4, _ := v.VerifyIDToken(context.Background(), tok, aud, raw)
	a5, _ := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims, oidctest.WithAlgorithm(oidctest.ES256)))
	if a3 == nil || a5 == nil || a3.ReplayKey != a4.ReplayKey || a3.ReplayKey == a5.ReplayKey || !strings.HasPrefix(a3.ReplayKey, "token:") {
		t.Errorf("replay keys without jti: %v %v %v", a3, a4, a5)
	}
}

func TestDiscoveryCache(t *testing.T) {
	p := oidctest.New(t)
	now := time.Now()
	v := &join.Verifier{GitHubIssuer: p.Issuer(), RootCAs: p.CertPool(), CacheTTL: time.Hour, Now: func() time.Time { return now }}
	tok := githubToken(resource.GitHubRule{Repository: "org/repo"})
	verify := func(opts ...oidctest.MintOption) error {
		claims := p.GitHubClaims(aud, "org/repo")
		claims["exp"], claims["iat"], claims["nbf"] = now.Add(5*time.Minute).Unix(), now.Unix(), now.Unix()
		_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims, opts...))
		return err
	}
	for range 3 {
		if err := verify(); err != nil {
			t.Fatal(err)
		}
	}
	if p.DiscoveryRequests() != 1 || p.JWKSRequests() != 1 {
		t.Errorf("after 3 tokens: %d discovery and %d key set requests, want 1 and 1", p.DiscoveryRequests(), p.JWKSRequests())
	}
	// An unknown kid refetches the keys, but not more than every few
	// seconds.
	checkDenied(t, verify(oidctest.WithUnknownKID()), join.CheckUnknownKeyID)
	checkDenied(t, verify(oidctest.WithUnknownKID()), join.CheckUnknownKeyID)
	if p.JWKSRequests() != 1 {
		t.Errorf("unknown kid right after a fetch: %d key set requests, want 1", p.JWKSRequests())
	}
	now = now.Add(time.Minute)
	checkDenied(t, verify(oidctest.WithUnknownKID()), join.CheckUnknownKeyID)
	if p.JWKSRequests() != 2 {
		t.Errorf("unknown kid a minute later: %d key set requests, want 2", p.JWKSRequests())
	}
	// After the TTL, discovery runs again.
	now = now.Add(time.Hour)
	if err := verify(); err != nil {
		t.Fatal(err)
	}
	if p.DiscoveryRequests() != 2 {
		t.Errorf("after the TTL: %d discovery requests, want 2", p.DiscoveryRequests())
	}
}

func TestDiscoveryFailure(t *testing.T) {
	p := oidctest.New(t)
	tok := githubToken(resource.GitHubRule{Repository: "org/repo"})
	// Without trusting the provider's CA, discovery fails: unavailable,
	// not denied.
	v := &join.Verifier{GitHubIssuer: p.Issuer()}
	_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(p.GitHubClaims(aud, "org/repo")))
	if !errors.Is(err, join.ErrUnavailable) {
		t.Errorf("untrusted provider: error = %v, want ErrUnavailable", err)
	}
	// A discovery document naming another issuer is refused.
	v = &join.Verifier{GitHubIssuer: p.Issuer() + "/other", RootCAs: p.CertPool()}
	_, err = v.VerifyIDToken(context.Background(), tok, aud, p.Mint(p.GitHubClaims(aud, "org/repo")))
	if !errors.Is(err, join.ErrUnavailable) {
		t.Errorf("no discovery document: error = %v, want ErrUnavailable", err)
	}
}

func asDenied(err error, d **join.DeniedError) bool { return errors.As(err, d) }

// TestKubeAPIServerShapedIssuer checks discovery against an issuer that
// behaves as kube-apiserver does: the key set's media type is
// application/jwk-set+json, and an Accept header without it gets 406.
func TestKubeAPIServerShapedIssuer(t *testing.T) {
	p := oidctest.New(t)
	var srv *httptest.Server
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q,"response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}`,
			srv.URL, srv.URL+"/openid/v1/jwks")
	})
	mux.HandleFunc("GET /openid/v1/jwks", func(w http.ResponseWriter, r *http.Request) {
		if a := r.Header.Get("Accept"); a != "" && !strings.Contains(a, "application/jwk-set+json") && !strings.Contains(a, "*/*") {
			http.Error(w, "not acceptable", http.StatusNotAcceptable)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(p.JWKS())
	})
	srv = httptest.NewTLSServer(mux)
	defer srv.Close()
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})

	tok := resource.Token{Name: "k", JoinMethod: api.JoinMethodKubernetes, BotName: "ci",
		Join: &resource.KubernetesJoin{IssuerURL: srv.URL, CAData: caPEM, Allow: []resource.KubernetesRule{{ServiceAccount: "default:mwi-bot"}}}}
	claims := p.KubernetesClaims(aud, "default", "mwi-bot")
	claims["iss"] = srv.URL
	if _, err := (&join.Verifier{}).VerifyIDToken(context.Background(), tok, aud, p.Mint(claims)); err != nil {
		t.Fatalf("VerifyIDToken: %v", err)
	}
}

// TestTokenSpellings checks that a token has one spelling: other base64url
// spellings of the same bytes, which go-jose accepts, are refused as
// malformed, and a second signature of the same bytes (ECDSA's (r, n-s))
// has the same replay key.
func TestTokenSpellings(t *testing.T) {
	p := oidctest.New(t)
	v := &join.Verifier{GitHubIssuer: p.Issuer(), RootCAs: p.CertPool()}
	tok := githubToken(resource.GitHubRule{Repository: "org/repo"})
	for _, alg := range []string{oidctest.RS256, oidctest.ES256} {
		for _, jti := range []bool{true, false} {
			claims := p.GitHubClaims(aud, "org/repo")
			if !jti {
				delete(claims, "jti")
			}
			raw := p.Mint(claims, oidctest.WithAlgorithm(alg))
			att, err := v.VerifyIDToken(context.Background(), tok, aud, raw)
			if err != nil {
				t.Fatalf("%s: the token as minted: %v", alg, err)
			}
			variants := oidctest.Respell(raw)
			for _, name := range []string{"newline in the signature", "CR in the payload", "padding on the signature", "stray bits in the last character of the signature"} {
				// Signatures of both algorithms leave 4 spare bits.
				if _, ok := variants[name]; !ok {
					t.Errorf("%s: no variant %q", alg, name)
				}
			}
			for name, other := range variants {
				_, err := v.VerifyIDToken(context.Background(), tok, aud, other)
				var d *join.DeniedError
				if !errors.As(err, &d) || d.Check != join.CheckMalformed {
					t.Errorf("%s, jti %v, %s: %v; want %q", alg, jti, name, err, join.CheckMalformed)
				}
			}
			if alg == oidctest.ES256 {
				twin, err := v.VerifyIDToken(context.Background(), tok, aud, oidctest.MalleateES256(raw))
				if err != nil {
					t.Fatalf("the (r, n-s) signature: %v", err)
				}
				if twin.ReplayKey != att.ReplayKey {
					t.Errorf("jti %v: the (r, n-s) signature has replay key %s, the token %s", jti, twin.ReplayKey, att.ReplayKey)
				}
			}
		}
	}
}

// flakyProvider serves discovery and keys for the tokens of p under its
// own URL, counting requests; it can fail, or hold discovery answers until
// released.
type flakyProvider struct {
	srv       *httptest.Server
	discovery atomic.Int64
	jwks      atomic.Int64
	failing   atomic.Bool
	hold      chan struct{} // discovery waits for it to close, if not nil
}

func newFlakyProvider(t *testing.T, p *oidctest.Provider, hold chan struct{}) *flakyProvider {
	f := &flakyProvider{hold: hold}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		f.discovery.Add(1)
		if f.hold != nil {
			<-f.hold
		}
		if f.failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"issuer":%q,"jwks_uri":%q,"response_types_supported":["id_token"],"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["RS256"]}`,
			f.srv.URL, f.srv.URL+"/jwks")
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		f.jwks.Add(1)
		if f.failing.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(p.JWKS())
	})
	f.srv = httptest.NewTLSServer(mux)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *flakyProvider) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(f.srv.Certificate())
	return pool
}

// TestDiscoveryShared checks that joins arriving while an issuer is being
// discovered wait for that one discovery rather than each making their
// own.
func TestDiscoveryShared(t *testing.T) {
	p := oidctest.New(t)
	hold := make(chan struct{})
	f := newFlakyProvider(t, p, hold)
	v := &join.Verifier{GitHubIssuer: f.srv.URL, RootCAs: f.pool()}
	tok := githubToken(resource.GitHubRule{Repository: "org/repo"})

	const joins = 50
	var wg sync.WaitGroup
	errs := make([]error, joins)
	for i := range joins {
		raw := p.Mint(oidctest.GitHubClaims(f.srv.URL, aud, "org/repo"))
		wg.Go(func() { _, errs[i] = v.VerifyIDToken(context.Background(), tok, aud, raw) })
	}
	// Let the first discovery arrive, and the other joins catch up with
	// it, before it is answered.
	for f.discovery.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	close(hold)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("join %d: %v", i, err)
		}
	}
	if d, k := f.discovery.Load(), f.jwks.Load(); d != 1 || k != 1 {
		t.Errorf("%d concurrent joins made %d discovery and %d key set requests, want 1 and 1", joins, d, k)
	}
}

// TestDiscoveryFailureCached checks that a failed discovery is
// remembered for FailureTTL: joins meanwhile fail as unavailable without a
// request, and the provider is asked again once the time has passed.
func TestDiscoveryFailureCached(t *testing.T) {
	p := oidctest.New(t)
	f := newFlakyProvider(t, p, nil)
	f.failing.Store(true)
	now := time.Now()
	v := &join.Verifier{GitHubIssuer: f.srv.URL, RootCAs: f.pool(), FailureTTL: 10 * time.Second, Now: func() time.Time { return now }}
	tok := githubToken(resource.GitHubRule{Repository: "org/repo"})
	verify := func() error {
		claims := oidctest.GitHubClaims(f.srv.URL, aud, "org/repo")
		claims["iat"], claims["nbf"], claims["exp"] = now.Unix(), now.Unix(), now.Add(5*time.Minute).Unix()
		_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims))
		return err
	}
	joins := func(n int) {
		t.Helper()
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				if err := verify(); !errors.Is(err, join.ErrUnavailable) {
					t.Errorf("join against a failing provider: %v, want ErrUnavailable", err)
				}
			})
		}
		wg.Wait()
	}

	joins(50)
	if d := f.discovery.Load(); d != 1 {
		t.Errorf("50 joins against a failing provider made %d discovery requests, want 1", d)
	}
	now = now.Add(9 * time.Second)
	joins(50)
	if d := f.discovery.Load(); d != 1 {
		t.Errorf("joins within FailureTTL made %d discovery requests in all, want 1", d)
	}
	now = now.Add(time.Second)
	joins(50)
	if d := f.discovery.Load(); d != 2 {
		t.Errorf("joins after FailureTTL made %d discovery requests in all, want 2", d)
	}

	// Back up: the next discovery, after FailureTTL, succeeds.
	f.failing.Store(false)
	now = now.Add(10 * time.Second)
	if err := verify(); err != nil {
		t.Fatalf("join after the provider is back: %v", err)
	}

	// Keys discovered before are used while rediscovery fails, and the
	// failure is remembered as well.
	f.failing.Store(true)
	now = now.Add(join.DefaultCacheTTL)
	before := f.discovery.Load()
	for range 20 {
		if err := verify(); err != nil {
			t.Fatalf("join with the keys discovered before: %v", err)
		}
	}
	if d := f.discovery.Load() - before; d != 1 {
		t.Errorf("20 joins with a stale provider that fails made %d discovery requests, want 1", d)
	}
}

// TestKeyRefreshFailureCached checks that fetching the key set again for
// unknown key IDs happens once for concurrent tokens, and that a failure
// is answered from memory until minKeyRefresh has passed.
func TestKeyRefreshFailureCached(t *testing.T) {
	p := oidctest.New(t)
	f := newFlakyProvider(t, p, nil)
	now := time.Now()
	v := &join.Verifier{GitHubIssuer: f.srv.URL, RootCAs: f.pool(), Now: func() time.Time { return now }}
	tok := githubToken(resource.GitHubRule{Repository: "org/repo"})
	verify := func(opts ...oidctest.MintOption) error {
		claims := oidctest.GitHubClaims(f.srv.URL, aud, "org/repo")
		claims["iat"], claims["nbf"], claims["exp"] = now.Unix(), now.Unix(), now.Add(5*time.Minute).Unix()
		_, err := v.VerifyIDToken(context.Background(), tok, aud, p.Mint(claims, opts...))
		return err
	}
	if err := verify(); err != nil {
		t.Fatal(err)
	}
	f.failing.Store(true)
	now = now.Add(time.Minute)
	var wg sync.WaitGroup
	for range 30 {
		wg.Go(func() {
			if err := verify(oidctest.WithUnknownKID()); !errors.Is(err, join.ErrUnavailable) {
				t.Errorf("unknown kid while the key set cannot be fetched: %v, want ErrUnavailable", err)
			}
		})
	}
	wg.Wait()
	if k := f.jwks.Load(); k != 2 {
		t.Errorf("30 tokens with unknown kids made %d key set requests in all, want 2", k)
	}
	// Known keys still verify meanwhile.
	if err := verify(); err != nil {
		t.Errorf("known kid while the key set cannot be fetched: %v", err)
	}
}
