package authority_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/oidctest"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/join"
	"github.com/mwi-project/mwi/issuer/store"
)

// attestEnv is an env whose resources hold token resources for every join
// method, with ID tokens from a local OIDC provider.
type attestEnv struct {
	*env
	p      *oidctest.Provider
	signer ssh.Signer // the bound key pair of token "build-01"
}

// tokensYAML defines, for the provider at issuer (host is its host:port):
//
//	gh        github, bot ci: repository org/repo on refs/heads/main
//	gh-web    github, bot web, audience "custom-aud": repository_owner org
//	gh-old    github, bot ci, expired in 2001
//	gl        gitlab, bot ci: project grp/proj, protected refs
//	kube      kubernetes, bot ci: service account ci:builder
//	any       oidc, bot ci: repository org/repo or org/other
//	build-01  bound_keypair, bot ci
//	build-02  bound_keypair, bot web
func tokensYAML(issuer, host, caPEM, boundKey, otherKey string) string {
	ca := base64.StdEncoding.EncodeToString([]byte(caPEM))
	return fmt.Sprintf(`
---
kind: token
version: v1
metadata: {name: gh}
spec:
  join_method: github
  bot_name: ci
  github:
    allow: [{repository: org/repo, ref: refs/heads/main}]
---
kind: token
version: v1
metadata: {name: gh-web}
spec:
  join_method: github
  bot_name: web
  audience: custom-aud
  github:
    allow: [{repository_owner: org}]
---
kind: token
version: v1
metadata: {name: gh-old, expires: 2001-01-01T00:00:00Z}
spec:
  join_method: github
  bot_name: ci
  github:
    allow: [{repository: org/repo}]
---
kind: token
version: v1
metadata: {name: gl}
spec:
  join_method: gitlab
  bot_name: ci
  gitlab:
    domain: %[2]s
    allow: [{project_path: grp/proj, ref_protected: "true"}]
---
kind: token
version: v1
metadata: {name: kube}
spec:
  join_method: kubernetes
  bot_name: ci
  kubernetes:
    issuer_url: %[1]s
    ca_data: %[3]s
    allow: [{service_account: "ci:builder"}]
---
kind: token
version: v1
metadata: {name: any}
spec:
  join_method: oidc
  bot_name: ci
  oidc:
    issuer_url: %[1]s
    ca_data: %[3]s
    allow:
      - claims: {repository: [org/repo, org/other], event_name: push}
---
kind: token
version: v1
metadata: {name: build-01}
spec:
  join_method: bound_keypair
  bot_name: ci
  bound_keypair: {public_key: %[4]s}
---
kind: token
version: v1
metadata: {name: build-02}
spec:
  join_method: bound_keypair
  bot_name: web
  bound_keypair: {public_key: %[5]s}
`, issuer, host, ca, boundKey, otherKey)
}

func newSigner(t *testing.T) ssh.Signer {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func authorizedKey(s ssh.Signer) string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(s.PublicKey())))
}

func newAttestEnv(t *testing.T) *attestEnv {
	t.Helper()
	e := &attestEnv{env: newEnv(t), p: oidctest.New(t), signer: newSigner(t)}
	e.auth.SetResources(loadResources(t, resourcesYAML+tokensYAML(e.p.Issuer(), e.p.Host(), string(e.p.CAPEM()),
		authorizedKey(e.signer), authorizedKey(newSigner(t)))))
	e.auth.IDTokens = &join.Verifier{GitHubIssuer: e.p.Issuer(), RootCAs: e.p.CertPool(), Now: func() time.Time { return e.now }}
	return e
}

// joinReq is a join request for the given method and token with fresh
// keys.
func joinReq(t *testing.T, method api.JoinMethod, tokenName, idToken string) api.JoinRequest {
	return api.JoinRequest{JoinMethod: method, TokenName: tokenName, IDToken: idToken, Keys: newKeys(t).pub, TTLSeconds: 600}
}

// expectJoinDenied checks a join_denied refusal whose message is check,
// and that its audit line names the token and the check.
func (e *attestEnv) expectJoinDenied(t *testing.T, err error, offset int, tokenName, check string) {
	t.Helper()
	e.expectDenied(t, err, offset, audit.EventJoin, api.CodeJoinDenied, http.StatusForbidden)
	var herr *fault.Error
	if errors.As(err, &herr) && herr.Message != check {
		t.Errorf("message = %q, want %q", herr.Message, check)
	}
	for _, l := range e.auditLines(t, offset) {
		if l["outcome"] == audit.Denied && (l["reason"] != check || l["token_name"] != tokenName) {
			t.Errorf("audit line = %v, want reason %q and token_name %q", l, check, tokenName)
		}
	}
}

func TestJoinGitHub(t *testing.T) {
	e := newAttestEnv(t)
	offset := e.audit.Len()
	raw := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
	creds, err := e.auth.Join(context.Background(), joinReq(t, api.JoinMethodGitHub, "gh", raw), nil, "192.0.2.1:1234")
	if err != nil {
		t.Fatalf("Join: %v", err)
	}
	if creds.Bot != "ci" || creds.Generation != 1 || creds.SSHCertificate == "" {
		t.Errorf("credentials = %+v", creds)
	}
	in, err := e.store.Instance(context.Background(), creds.Instance)
	if err != nil || in.JoinMethod != api.JoinMethodGitHub || in.TokenName != "gh" || in.Generation != 1 {
		t.Errorf("stored instance = %+v, %v", in, err)
	}
	var joins int
	for _, l := range e.auditLines(t, offset) {
		if l["event"] == audit.EventJoin {
			joins++
			if l["outcome"] != audit.Allowed || l["token_name"] != "gh" || l["bot"] != "ci" || l["join_method"] != "github" ||
				l["subject"] != "repo:org/repo:ref:refs/heads/main" || l["instance"] != creds.Instance || l["rejoin"] != false {
				t.Errorf("join audit line = %v", l)
			}
		}
	}
	if joins != 1 {
		t.Errorf("%d join audit lines, want 1", joins)
	}
	if strings.Contains(e.audit.String(), raw) || strings.Contains(e.audit.String(), strings.Split(raw, ".")[2]) {
		t.Error("the audit log holds the ID token")
	}
}

// TestJoinIDTokenRefusals is the table of the issue, through the
// authority: each refusal is join_denied with the check's name, audited
// with the token name and the reason, and names no rule.
func TestJoinIDTokenRefusals(t *testing.T) {
	e := newAttestEnv(t)
	now := time.Now()
	type edit func(map[string]any)
	set := func(k string, v any) edit { return func(c map[string]any) { c[k] = v } }
	for _, tc := range []struct {
		name  string
		edit  edit
		opts  []oidctest.MintOption
		check string
	}{
		{"repository differs", set("repository", "org/other"), nil, join.CheckNoRule},
		{"ref differs", set("ref", "refs/heads/dev"), nil, join.CheckNoRule},
		{"wrong audience", set("aud", "https://github.com/org"), nil, join.CheckAudience},
		{"another token's audience", set("aud", "custom-aud"), nil, join.CheckAudience},
		{"wrong issuer", set("iss", join.DefaultGitHubIssuer), nil, join.CheckIssuer},
		{"expired", set("exp", now.Add(-5*time.Minute).Unix()), nil, join.CheckExpired},
		{"not yet valid", set("nbf", now.Add(5*time.Minute).Unix()), nil, join.CheckNotYetValid},
		{"alg none", nil, []oidctest.MintOption{oidctest.WithAlgNone()}, "unsupported algorithm none"},
		{"HS256 with the public key as secret", nil, []oidctest.MintOption{oidctest.WithHS256PublicKey()}, "unsupported algorithm HS256"},
		{"bad signature", nil, []oidctest.MintOption{oidctest.WithWrongKey()}, join.CheckSignature},
		{"unknown kid", nil, []oidctest.MintOption{oidctest.WithUnknownKID()}, join.CheckUnknownKeyID},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claims := e.p.GitHubClaims("mwi", "org/repo")
			if tc.edit != nil {
				tc.edit(claims)
			}
			offset := e.audit.Len()
			_, err := e.auth.Join(context.Background(), joinReq(t, api.JoinMethodGitHub, "gh", e.p.Mint(claims, tc.opts...)), nil, "192.0.2.1:1234")
			e.expectJoinDenied(t, err, offset, "gh", tc.check)
			if strings.Contains(err.Error(), "org/repo") || strings.Contains(err.Error(), "refs/heads/main") {
				t.Errorf("the refusal names the rules: %v", err)
			}
		})
	}

	t.Run("token resource refusals", func(t *testing.T) {
		raw := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
		for _, tc := range []struct {
			method       api.JoinMethod
			token, check string
		}{
			{api.JoinMethodGitHub, "nope", join.CheckTokenUnknown},
			{api.JoinMethodGitLab, "gh", join.CheckMethodMismatch},
			{api.JoinMethodGitHub, "gh-old", join.CheckTokenExpired},
		} {
			offset := e.audit.Len()
			_, err := e.auth.Join(context.Background(), joinReq(t, tc.method, tc.token, raw), nil, "192.0.2.1:1234")
			e.expectJoinDenied(t, err, offset, tc.token, tc.check)
		}
	})

	t.Run("bad requests", func(t *testing.T) {
		raw := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
		for name, req := range map[string]api.JoinRequest{
			"no token name":         joinReq(t, api.JoinMethodGitHub, "", raw),
			"no ID token":           joinReq(t, api.JoinMethodGitHub, "gh", ""),
			"a one-time token, too": func() api.JoinRequest { r := joinReq(t, api.JoinMethodGitHub, "gh", raw); r.Token = "x"; return r }(),
			"a challenge, too":      func() api.JoinRequest { r := joinReq(t, api.JoinMethodGitHub, "gh", raw); r.Challenge = "x"; return r }(),
			"bad keys":              func() api.JoinRequest { r := joinReq(t, api.JoinMethodGitHub, "gh", raw); r.Keys.SSH = "x"; return r }(),
		} {
			offset := e.audit.Len()
			_, err := e.auth.Join(context.Background(), req, nil, "192.0.2.1:1234")
			if err == nil {
				t.Fatalf("%s: joined", name)
			}
			e.expectDenied(t, err, offset, audit.EventJoin, api.CodeBadRequest, http.StatusBadRequest)
		}
		// None of those used the ID token.
		if _, err := e.auth.Join(context.Background(), joinReq(t, api.JoinMethodGitHub, "gh", raw), nil, "192.0.2.1:1234"); err != nil {
			t.Errorf("the ID token was used up by refused requests: %v", err)
		}
	})
}

func TestJoinReplay(t *testing.T) {
	e := newAttestEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		claims func() map[string]any
	}{
		{"with jti", func() map[string]any { return e.p.GitHubClaims("mwi", "org/repo") }},
		{"without jti", func() map[string]any {
			c := e.p.GitHubClaims("mwi", "org/repo")
			delete(c, "jti")
			return c
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			claims := tc.claims()
			raw := e.p.Mint(claims)
			if _, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", raw), nil, "192.0.2.1:1234"); err != nil {
				t.Fatalf("first join: %v", err)
			}
			offset := e.audit.Len()
			_, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", raw), nil, "192.0.2.1:1234")
			e.expectJoinDenied(t, err, offset, "gh", join.CheckReplay)
			if _, ok := claims["jti"]; ok {
				// The same jti in another token is the same token.
				offset = e.audit.Len()
				_, err = e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", e.p.Mint(claims, oidctest.WithAlgorithm(oidctest.ES256))), nil, "192.0.2.1:1234")
				e.expectJoinDenied(t, err, offset, "gh", join.CheckReplay)
			} else {
				// Without a jti, another token with the same claims is
				// another token.
				if _, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", e.p.Mint(claims, oidctest.WithAlgorithm(oidctest.ES256))), nil, "192.0.2.1:1234"); err != nil {
					t.Errorf("another token without jti: %v", err)
				}
			}
		})
	}

	t.Run("a refused join does not use the token", func(t *testing.T) {
		raw := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
		req := joinReq(t, api.JoinMethodGitHub, "gh", raw)
		req.SSHLogins = []string{"root"}
		offset := e.audit.Len()
		_, err := e.auth.Join(ctx, req, nil, "192.0.2.1:1234")
		e.expectDenied(t, err, offset, audit.EventJoin, api.CodeLoginNotAllowed, http.StatusForbidden)
		if _, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", raw), nil, "192.0.2.1:1234"); err != nil {
			t.Errorf("join after a refusal: %v", err)
		}
	})

	t.Run("concurrent joins with one token", func(t *testing.T) {
		raw := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
		var wg sync.WaitGroup
		errs := make([]error, 6)
		for i := range errs {
			req := joinReq(t, api.JoinMethodGitHub, "gh", raw)
			wg.Go(func() { _, errs[i] = e.auth.Join(ctx, req, nil, "192.0.2.1:1234") })
		}
		wg.Wait()
		ok := 0
		for _, err := range errs {
			var herr *fault.Error
			switch {
			case err == nil:
				ok++
			case errors.As(err, &herr) && herr.Message == join.CheckReplay:
			default:
				t.Errorf("Join: %v", err)
			}
		}
		if ok != 1 {
			t.Errorf("%d joins succeeded with one ID token, want 1", ok)
		}
	})
}

func TestJoinAudience(t *testing.T) {
	e := newAttestEnv(t)
	ctx := context.Background()
	// The token's own audience wins.
	if _, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh-web", e.p.Mint(e.p.GitHubClaims("custom-aud", "org/any"))), nil, "r"); err != nil {
		t.Errorf("token audience: %v", err)
	}
	// The default is the cluster name, "mwi" unless set.
	e.auth.ClusterName = "prod-cluster"
	offset := e.audit.Len()
	_, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))), nil, "r")
	e.expectJoinDenied(t, err, offset, "gh", join.CheckAudience)
	if _, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", e.p.Mint(e.p.GitHubClaims("prod-cluster", "org/repo"))), nil, "r"); err != nil {
		t.Errorf("cluster name audience: %v", err)
	}
	if authority.DefaultClusterName != "mwi" {
		t.Errorf("DefaultClusterName = %q", authority.DefaultClusterName)
	}
}

func TestJoinGitLabKubernetesOIDC(t *testing.T) {
	e := newAttestEnv(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		method api.JoinMethod
		token  string
		claims map[string]any
		ok     bool
	}{
		{"gitlab project", api.JoinMethodGitLab, "gl", e.p.GitLabClaims("mwi", "grp/proj"), true},
		{"gitlab other project", api.JoinMethodGitLab, "gl", e.p.GitLabClaims("mwi", "grp/other"), false},
		{"gitlab unprotected ref", api.JoinMethodGitLab, "gl", func() map[string]any {
			c := e.p.GitLabClaims("mwi", "grp/proj")
			c["ref_protected"] = "false"
			return c
		}(), false},
		{"kubernetes service account", api.JoinMethodKubernetes, "kube", e.p.KubernetesClaims("mwi", "ci", "builder"), true},
		{"kubernetes other service account", api.JoinMethodKubernetes, "kube", e.p.KubernetesClaims("mwi", "ci", "default"), false},
		{"kubernetes other namespace", api.JoinMethodKubernetes, "kube", e.p.KubernetesClaims("mwi", "default", "builder"), false},
		{"oidc first value", api.JoinMethodOIDC, "any", e.p.GitHubClaims("mwi", "org/repo"), true},
		{"oidc second value", api.JoinMethodOIDC, "any", e.p.GitHubClaims("mwi", "org/other"), true},
		{"oidc value not listed", api.JoinMethodOIDC, "any", e.p.GitHubClaims("mwi", "org/third"), false},
		{"oidc one claim of two", api.JoinMethodOIDC, "any", func() map[string]any {
			c := e.p.GitHubClaims("mwi", "org/repo")
			c["event_name"] = "pull_request"
			return c
		}(), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			offset := e.audit.Len()
			creds, err := e.auth.Join(ctx, joinReq(t, tc.method, tc.token, e.p.Mint(tc.claims, oidctest.WithAlgorithm(oidctest.ES256))), nil, "r")
			if !tc.ok {
				e.expectJoinDenied(t, err, offset, tc.token, join.CheckNoRule)
				return
			}
			if err != nil {
				t.Fatalf("Join: %v", err)
			}
			in, _ := e.store.Instance(ctx, creds.Instance)
			if in.JoinMethod != tc.method || in.TokenName != tc.token {
				t.Errorf("instance = %+v", in)
			}
		})
	}
}

func TestJoinIssuerUnavailable(t *testing.T) {
	e := newAttestEnv(t)
	e.auth.IDTokens = &join.Verifier{GitHubIssuer: e.p.Issuer()} // does not trust the provider
	offset := e.audit.Len()
	_, err := e.auth.Join(context.Background(), joinReq(t, api.JoinMethodGitHub, "gh", e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))), nil, "r")
	e.expectDenied(t, err, offset, audit.EventJoin, api.CodeInternal, http.StatusServiceUnavailable)
}

// TestJoinIssuerUnavailableLogBounded sends many joins while the ID token
// issuer cannot be reached: a failed discovery is remembered, so each is
// refused at once, and anyone can send them; the warnings they cost must
// be a few lines a second, not one each.
func TestJoinIssuerUnavailableLogBounded(t *testing.T) {
	e := newAttestEnv(t)
	var log bytes.Buffer
	e.auth.Log = slog.New(slog.NewTextHandler(&log, nil))
	e.auth.IDTokens = &join.Verifier{GitHubIssuer: e.p.Issuer()} // does not trust the provider
	req := joinReq(t, api.JoinMethodGitHub, "gh", e.p.Mint(e.p.GitHubClaims("mwi", "org/repo")))
	for range 1000 {
		_, err := e.auth.Join(context.Background(), req, nil, "r")
		var herr *fault.Error
		if !errors.As(err, &herr) || httpjson.Status(herr.Kind) != http.StatusServiceUnavailable {
			t.Fatalf("Join = %v, want 503", err)
		}
	}
	// The authority's clock stands still: one second's worth.
	if n := strings.Count(log.String(), "ID token issuer unavailable"); n == 0 || n > logging.LimitBurst {
		t.Errorf("1000 joins against an unreachable issuer logged %d warnings; want a few", n)
	}
}

// challenge asks for a challenge for token and signs it with s.
func (e *attestEnv) keypairReq(t *testing.T, token string, s ssh.Signer) api.JoinRequest {
	t.Helper()
	ch, err := e.auth.Challenge(context.Background(), api.ChallengeRequest{TokenName: token}, nil, "r")
	if err != nil {
		t.Fatalf("Challenge(%s): %v", token, err)
	}
	return signedReq(t, token, ch.Challenge, s)
}

func signedReq(t *testing.T, token, challenge string, s ssh.Signer) api.JoinRequest {
	t.Helper()
	sig, err := s.Sign(rand.Reader, api.BoundKeypairSignedData(challenge))
	if err != nil {
		t.Fatal(err)
	}
	return api.JoinRequest{JoinMethod: api.JoinMethodBoundKeypair, TokenName: token, Challenge: challenge,
		Signature: base64.StdEncoding.EncodeToString(ssh.Marshal(sig)), Keys: newKeys(t).pub, TTLSeconds: 600}
}

func TestJoinBoundKeypair(t *testing.T) {
	e := newAttestEnv(t)
	ctx := context.Background()

	ch, err := e.auth.Challenge(ctx, api.ChallengeRequest{TokenName: "build-01"}, nil, "r")
	if err != nil {
		t.Fatal(err)
	}
	if raw, err := base64.StdEncoding.DecodeString(ch.Challenge); err != nil || len(raw) != 32 || !ch.Expires.Equal(e.now.Add(authority.ChallengeTTL)) {
		t.Errorf("challenge = %+v (%d bytes, %v)", ch, len(raw), err)
	}
	creds, err := e.auth.Join(ctx, signedReq(t, "build-01", ch.Challenge, e.signer), nil, "r")
	if err != nil {
		t.Fatalf("good signature: %v", err)
	}
	if creds.Bot != "ci" {
		t.Errorf("credentials = %+v", creds)
	}
	// The same key joins again after a restart, with a new challenge.
	if _, err := e.auth.Join(ctx, e.keypairReq(t, "build-01", e.signer), nil, "r"); err != nil {
		t.Errorf("second join: %v", err)
	}

	t.Run("reused challenge", func(t *testing.T) {
		offset := e.audit.Len()
		_, err := e.auth.Join(ctx, signedReq(t, "build-01", ch.Challenge, e.signer), nil, "r")
		e.expectJoinDenied(t, err, offset, "build-01", join.CheckChallenge)
	})
	t.Run("wrong key", func(t *testing.T) {
		req := e.keypairReq(t, "build-01", newSigner(t))
		offset := e.audit.Len()
		_, err := e.auth.Join(ctx, req, nil, "r")
		e.expectJoinDenied(t, err, offset, "build-01", join.CheckSignature)
		// The challenge is used up by the failed attempt.
		req2 := signedReq(t, "build-01", req.Challenge, e.signer)
		offset = e.audit.Len()
		_, err = e.auth.Join(ctx, req2, nil, "r")
		e.expectJoinDenied(t, err, offset, "build-01", join.CheckChallenge)
	})
	t.Run("expired challenge", func(t *testing.T) {
		req := e.keypairReq(t, "build-01", e.signer)
		e.now = e.now.Add(authority.ChallengeTTL)
		defer func() { e.now = e.now.Add(-authority.ChallengeTTL) }()
		offset := e.audit.Len()
		_, err := e.auth.Join(ctx, req, nil, "r")
		e.expectJoinDenied(t, err, offset, "build-01", join.CheckChallenge)
	})
	t.Run("made-up challenge", func(t *testing.T) {
		offset := e.audit.Len()
		_, err := e.auth.Join(ctx, signedReq(t, "build-01", "AAAA", e.signer), nil, "r")
		e.expectJoinDenied(t, err, offset, "build-01", join.CheckChallenge)
	})
	t.Run("challenge of another token", func(t *testing.T) {
		req := e.keypairReq(t, "build-02", e.signer)
		req.TokenName = "build-01"
		offset := e.audit.Len()
		_, err := e.auth.Join(ctx, req, nil, "r")
		e.expectJoinDenied(t, err, offset, "build-01", join.CheckChallenge)
	})
	t.Run("missing signature", func(t *testing.T) {
		req := e.keypairReq(t, "build-01", e.signer)
		req.Signature = ""
		offset := e.audit.Len()
		_, err := e.auth.Join(ctx, req, nil, "r")
		e.expectDenied(t, err, offset, audit.EventJoin, api.CodeBadRequest, http.StatusBadRequest)
	})
	t.Run("challenge refusals", func(t *testing.T) {
		for _, tc := range []struct{ token, check string }{
			{"nope", join.CheckTokenUnknown},
			{"gh", join.CheckMethodMismatch},
		} {
			offset := e.audit.Len()
			_, err := e.auth.Challenge(ctx, api.ChallengeRequest{TokenName: tc.token}, nil, "r")
			e.expectDenied(t, err, offset, audit.EventJoinChallenge, api.CodeJoinDenied, http.StatusForbidden)
			var herr *fault.Error
			if errors.As(err, &herr) && herr.Message != tc.check {
				t.Errorf("Challenge(%s) message = %q, want %q", tc.token, herr.Message, tc.check)
			}
		}
	})
	t.Run("challenges are limited by source", func(t *testing.T) {
		e.now = e.now.Add(time.Hour)
		var limited int
		for range 70 {
			if _, err := e.auth.Challenge(ctx, api.ChallengeRequest{TokenName: "build-02"}, nil, "192.0.2.50:1"); err != nil {
				var herr *fault.Error
				if !errors.As(err, &herr) || httpjson.Status(herr.Kind) != http.StatusTooManyRequests {
					t.Fatalf("Challenge: %v", err)
				}
				limited++
			}
		}
		if limited != 60 {
			t.Errorf("%d of 70 challenges at once from one address refused, want 60", limited)
		}
		// Another address is not affected, and a minute later neither is
		// this one.
		if _, err := e.auth.Challenge(ctx, api.ChallengeRequest{TokenName: "build-02"}, nil, "192.0.2.51:1"); err != nil {
			t.Errorf("other address: %v", err)
		}
		e.now = e.now.Add(time.Minute)
		if _, err := e.auth.Challenge(ctx, api.ChallengeRequest{TokenName: "build-02"}, nil, "192.0.2.50:1"); err != nil {
			t.Errorf("a minute later: %v", err)
		}
	})
}

// TestRejoin checks the renewal of non-renewable identities: a re-join with
// a fresh attestation and the current identity keeps the instance and
// advances its generation; a stale identity locks the instance.
func TestRejoin(t *testing.T) {
	e := newAttestEnv(t)
	ctx := context.Background()
	gh := func() api.JoinRequest {
		return joinReq(t, api.JoinMethodGitHub, "gh", e.p.Mint(e.p.GitHubClaims("mwi", "org/repo")))
	}
	first, err := e.auth.Join(ctx, gh(), nil, "r")
	if err != nil {
		t.Fatal(err)
	}
	id1 := ca.Identity{Bot: "ci", Instance: first.Instance, Generation: first.Generation}

	t.Run("renewal is refused", func(t *testing.T) {
		offset := e.audit.Len()
		_, err := e.renew(t, id1)
		e.expectDenied(t, err, offset, audit.EventRenew, api.CodeNotRenewable, http.StatusForbidden)
		if !strings.Contains(err.Error(), "re-join with a fresh attestation") {
			t.Errorf("error = %v", err)
		}
		if in, _ := e.store.Instance(ctx, first.Instance); in.Generation != 1 {
			t.Errorf("a refused renewal moved the generation to %d", in.Generation)
		}
	})

	offset := e.audit.Len()
	second, err := e.auth.Join(ctx, gh(), &id1, "r")
	if err != nil {
		t.Fatalf("re-join: %v", err)
	}
	if second.Instance != first.Instance || second.Generation != 2 {
		t.Errorf("re-join = instance %s generation %d; want %s and 2", second.Instance, second.Generation, first.Instance)
	}
	for _, l := range e.auditLines(t, offset) {
		if l["event"] == audit.EventJoin && (l["rejoin"] != true || l["instance"] != first.Instance || l["generation"] != float64(2)) {
			t.Errorf("re-join audit line = %v", l)
		}
	}
	_, id2, _ := parseCreds(t, e.env, second)
	if id2 != (ca.Identity{Bot: "ci", Instance: first.Instance, Generation: 2}) {
		t.Errorf("identity after re-join = %+v", id2)
	}

	t.Run("identity of another token's instance makes a new instance", func(t *testing.T) {
		creds, err := e.auth.Join(ctx, e.keypairReq(t, "build-01", e.signer), &id2, "r")
		if err != nil {
			t.Fatal(err)
		}
		if creds.Instance == first.Instance || creds.Generation != 1 {
			t.Errorf("credentials = %+v", creds)
		}
		if in, _ := e.store.Instance(ctx, first.Instance); in.Generation != 2 {
			t.Errorf("the other instance moved to generation %d", in.Generation)
		}
	})
	t.Run("identity unknown to the store makes a new instance", func(t *testing.T) {
		ghost := ca.Identity{Bot: "ci", Instance: "0123456789abcdef0123456789abcdef", Generation: 7}
		creds, err := e.auth.Join(ctx, gh(), &ghost, "r")
		if err != nil || creds.Instance == ghost.Instance || creds.Generation != 1 {
			t.Errorf("Join = %+v, %v", creds, err)
		}
	})
	t.Run("identity of another bot", func(t *testing.T) {
		web := ca.Identity{Bot: "web", Instance: first.Instance, Generation: 2}
		offset := e.audit.Len()
		_, err := e.auth.Join(ctx, gh(), &web, "r")
		e.expectJoinDenied(t, err, offset, "gh", join.CheckWrongBot)
	})

	t.Run("stale identity locks the instance", func(t *testing.T) {
		offset := e.audit.Len()
		_, err := e.auth.Join(ctx, gh(), &id1, "r")
		e.expectDenied(t, err, offset, audit.EventJoin, api.CodeGenerationMismatch, http.StatusForbidden)
		lock, locked, _ := e.store.InstanceLock(ctx, first.Instance, e.now)
		if !locked || !strings.Contains(lock.Reason, "generation mismatch") {
			t.Fatalf("instance lock = %+v, %v", lock, locked)
		}
		if _, locked, _ := e.store.BotLock(ctx, "ci", e.now); locked {
			t.Error("the bot is locked")
		}
		var lockLines int
		for _, l := range e.auditLines(t, offset) {
			if l["event"] == audit.EventInstanceLock && l["instance"] == first.Instance {
				lockLines++
			}
		}
		if lockLines != 1 {
			t.Errorf("%d instance.lock audit lines, want 1", lockLines)
		}
		// Locked: even the current identity is refused, before its ID
		// token is spent, which a fresh join then uses for a new
		// instance.
		raw := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
		offset = e.audit.Len()
		_, err = e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", raw), &id2, "r")
		e.expectDenied(t, err, offset, audit.EventJoin, api.CodeInstanceLocked, http.StatusForbidden)
		fresh, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", raw), nil, "r")
		if err != nil {
			t.Fatalf("fresh join with the token the locked identity presented: %v", err)
		}
		if fresh.Instance == first.Instance || fresh.Generation != 1 {
			t.Errorf("fresh join = instance %s generation %d; want a new instance", fresh.Instance, fresh.Generation)
		}
	})
}

// TestRenewTokenInstances checks that instances of one-time tokens, old
// records without a join method included, still renew.
func TestRenewTokenInstances(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	creds := e.join(t, e.token(t, "ci"))
	if in, _ := e.store.Instance(ctx, creds.Instance); in.JoinMethod != api.JoinMethodToken {
		t.Errorf("token join stored method %q", in.JoinMethod)
	}
	if _, err := e.renew(t, ca.Identity{Bot: "ci", Instance: creds.Instance, Generation: 1}); err != nil {
		t.Errorf("renew: %v", err)
	}
	old := store.Instance{ID: "legacy", Bot: "ci", Generation: 4, Created: e.now}
	if err := e.store.CreateInstance(ctx, old); err != nil {
		t.Fatal(err)
	}
	if _, err := e.renew(t, ca.Identity{Bot: "ci", Instance: "legacy", Generation: 4}); err != nil {
		t.Errorf("renew of a record without join method: %v", err)
	}
}

// TestRejoinWithTheSameToken re-joins with an ID token the instance has
// already presented, as a pod does until kubelet rotates its projected
// token: the same instance, over mutual TLS at its current generation, is
// admitted; any other use of the token is a replay.
func TestRejoinWithTheSameToken(t *testing.T) {
	e := newAttestEnv(t)
	ctx := context.Background()
	raw := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
	first, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", raw), nil, "r")
	if err != nil {
		t.Fatal(err)
	}
	id := ca.Identity{Bot: "ci", Instance: first.Instance, Generation: first.Generation}
	second, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", raw), &id, "r")
	if err != nil {
		t.Fatalf("re-join by the same instance with the same token: %v", err)
	}
	if second.Instance != first.Instance || second.Generation != first.Generation+1 {
		t.Errorf("re-join = instance %s generation %d", second.Instance, second.Generation)
	}
	// Without the identity, the token is a replay.
	offset := e.audit.Len()
	_, err = e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", raw), nil, "r")
	e.expectJoinDenied(t, err, offset, "gh", join.CheckReplay)
	// With the now stale identity, the generation check locks the instance.
	if _, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", raw), &id, "r"); err == nil {
		t.Fatal("a stale identity re-joined with the same token")
	}
	if _, locked, _ := e.store.InstanceLock(ctx, id.Instance, e.now); !locked {
		t.Error("the stale identity did not lock the instance")
	}
}

// TestJoinIdentityChecksBeforeReplay checks that an identity refused with
// a join leaves the ID token usable, and that an identity that does not
// keep its instance does not own the ID token: presenting it again is a
// replay, not another new instance.
func TestJoinIdentityChecksBeforeReplay(t *testing.T) {
	e := newAttestEnv(t)
	ctx := context.Background()
	gh := func(raw string) api.JoinRequest { return joinReq(t, api.JoinMethodGitHub, "gh", raw) }
	web, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh-web", e.p.Mint(e.p.GitHubClaims("custom-aud", "org/any"))), nil, "r")
	if err != nil {
		t.Fatal(err)
	}
	other, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodOIDC, "any", e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))), nil, "r")
	if err != nil {
		t.Fatal(err)
	}

	for _, tc := range []struct {
		name   string
		client ca.Identity
		check  string // the refusal's message
	}{
		{"identity of another bot", ca.Identity{Bot: "web", Instance: web.Instance, Generation: web.Generation}, join.CheckWrongBot},
		{"identity naming another bot's instance", ca.Identity{Bot: "ci", Instance: web.Instance, Generation: web.Generation},
			"instance " + web.Instance + " does not belong to bot ci"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
			offset := e.audit.Len()
			_, err := e.auth.Join(ctx, gh(raw), &tc.client, "r")
			var herr *fault.Error
			if !errors.As(err, &herr) || herr.Message != tc.check {
				t.Fatalf("Join = %v, want the refusal %q", err, tc.check)
			}
			if n := len(e.auditLines(t, offset)); n != 1 {
				t.Errorf("%d audit lines, want 1", n)
			}
			if _, err := e.auth.Join(ctx, gh(raw), nil, "r"); err != nil {
				t.Errorf("the ID token was used up by the refused join: %v", err)
			}
		})
	}

	for _, tc := range []struct {
		name   string
		client ca.Identity
	}{
		{"identity of another token's instance", ca.Identity{Bot: "ci", Instance: other.Instance, Generation: other.Generation}},
		{"identity unknown to the store", ca.Identity{Bot: "ci", Instance: "0123456789abcdef0123456789abcdef", Generation: 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := e.p.Mint(e.p.GitHubClaims("mwi", "org/repo"))
			first, err := e.auth.Join(ctx, gh(raw), &tc.client, "r")
			if err != nil {
				t.Fatal(err)
			}
			if first.Instance == tc.client.Instance {
				t.Fatalf("the instance was kept: %+v", first)
			}
			offset := e.audit.Len()
			_, err = e.auth.Join(ctx, gh(raw), &tc.client, "r")
			e.expectJoinDenied(t, err, offset, "gh", join.CheckReplay)
			// The instance that joined with it may present it again.
			id := ca.Identity{Bot: "ci", Instance: first.Instance, Generation: first.Generation}
			if again, err := e.auth.Join(ctx, gh(raw), &id, "r"); err != nil || again.Instance != first.Instance {
				t.Errorf("re-join by the instance the token made = %+v, %v", again, err)
			}
		})
	}
}

// TestJoinReplaySpellings replays ID tokens without a jti, spelt otherwise
// (a newline in the signature, a CR in the payload, stray bits in a last
// character, padding, the standard alphabet...) or signed again with
// ECDSA's (r, n-s): none makes a second instance.
func TestJoinReplaySpellings(t *testing.T) {
	e := newAttestEnv(t)
	ctx := context.Background()
	for _, alg := range []string{oidctest.RS256, oidctest.ES256} {
		claims := e.p.GitHubClaims("mwi", "org/repo")
		delete(claims, "jti")
		raw := e.p.Mint(claims, oidctest.WithAlgorithm(alg))
		offset := e.audit.Len()
		if _, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", raw), nil, "r"); err != nil {
			t.Fatalf("%s: first join: %v", alg, err)
		}
		replays := oidctest.Respell(raw)
		if alg == oidctest.ES256 {
			replays["(r, n-s) signature"] = oidctest.MalleateES256(raw)
		}
		for name, other := range replays {
			_, err := e.auth.Join(ctx, joinReq(t, api.JoinMethodGitHub, "gh", other), nil, "r")
			var herr *fault.Error
			if !errors.As(err, &herr) || herr.Code != api.CodeJoinDenied || (herr.Message != join.CheckMalformed && herr.Message != join.CheckReplay) {
				t.Errorf("%s, %s: %v; want %q or %q", alg, name, err, join.CheckMalformed, join.CheckReplay)
			}
		}
		allowed := 0
		for _, l := range e.auditLines(t, offset) {
			if l["event"] == audit.EventJoin && l["outcome"] == audit.Allowed {
				allowed++
			}
		}
		if allowed != 1 {
			t.Errorf("%s: one token made %d instances", alg, allowed)
		}
	}
}
