package oidctest_test

import (
	"context"
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/mwi-project/mwi/internal/oidctest"
)

var algs = []string{oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512, oidc.PS256}

func verifier(t *testing.T, p *oidctest.Provider, aud string) *oidc.IDTokenVerifier {
	t.Helper()
	ctx := oidc.ClientContext(context.Background(), p.Client())
	prov, err := oidc.NewProvider(ctx, p.Issuer())
	if err != nil {
		t.Fatalf("discovery of %s: %v", p.Issuer(), err)
	}
	return prov.VerifierContext(ctx, &oidc.Config{ClientID: aud, SupportedSigningAlgs: algs})
}

func TestMintVerifies(t *testing.T) {
	for _, prefix := range []string{"", "/_services/token", "/my-enterprise"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			p := oidctest.New(t, oidctest.WithPathPrefix(prefix))
			if !strings.HasSuffix(p.Issuer(), prefix) || !strings.HasPrefix(p.Issuer(), "https://127.0.0.1:") {
				t.Errorf("Issuer() = %q", p.Issuer())
			}
			v := verifier(t, p, "mwi")
			for _, alg := range []string{oidctest.RS256, oidctest.ES256} {
				tok := p.Mint(p.GitHubClaims("mwi", "org/repo"), oidctest.WithAlgorithm(alg))
				idt, err := v.Verify(context.Background(), tok)
				if err != nil {
					t.Fatalf("%s: Verify: %v", alg, err)
				}
				var c map[string]any
				if err := idt.Claims(&c); err != nil {
					t.Fatal(err)
				}
				if c["repository"] != "org/repo" || c["repository_owner"] != "org" || idt.Subject != "repo:org/repo:ref:refs/heads/main" {
					t.Errorf("claims = %v", c)
				}
			}
		})
	}
}

func TestMintRefused(t *testing.T) {
	p := oidctest.New(t)
	v := verifier(t, p, "mwi")
	for name, opts := range map[string][]oidctest.MintOption{
		"alg none":           {oidctest.WithAlgNone()},
		"HS256 with pub key": {oidctest.WithHS256PublicKey()},
		"wrong key RS256":    {oidctest.WithWrongKey()},
		"wrong key ES256":    {oidctest.WithWrongKey(), oidctest.WithAlgorithm(oidctest.ES256)},
		"unknown kid":        {oidctest.WithUnknownKID()},
	} {
		if _, err := v.Verify(context.Background(), p.Mint(p.GitLabClaims("mwi", "grp/proj"), opts...)); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
	if _, err := v.Verify(context.Background(), p.Mint(p.GitLabClaims("other", "grp/proj"))); err == nil {
		t.Error("wrong audience verified")
	}
}

func TestJWKS(t *testing.T) {
	p := oidctest.New(t)
	var set struct {
		Keys []struct {
			Kid string `json:"kid"`
			Alg string `json:"alg"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(p.JWKS(), &set); err != nil {
		t.Fatal(err)
	}
	if len(set.Keys) != 2 || set.Keys[0].Kid != p.KeyID(oidctest.RS256) || set.Keys[1].Kid != p.KeyID(oidctest.ES256) {
		t.Errorf("JWKS = %s", p.JWKS())
	}
	ks := oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), p.Client()), p.Issuer()+"/.well-known/jwks")
	tok := p.Mint(p.KubernetesClaims("mwi", "ns", "sa"), oidctest.WithAlgorithm(oidctest.ES256))
	if _, err := oidc.NewVerifier(p.Issuer(), ks, &oidc.Config{ClientID: "mwi", SupportedSigningAlgs: algs}).Verify(context.Background(), tok); err != nil {
		t.Errorf("Kubernetes token: %v", err)
	}
	if p.JWKSRequests() == 0 {
		t.Error("JWKSRequests() = 0")
	}
	ca, err := os.ReadFile(p.CAFile())
	if err != nil || string(ca) != string(p.CAPEM()) {
		t.Errorf("CAFile holds %q, %v", ca, err)
	}
}

func TestActionsTokenEndpoint(t *testing.T) {
	p := oidctest.New(t)
	u, reqTok := p.ActionsTokenEndpoint(p.GitHubClaims("ignored", "org/repo"))
	get := func(auth string) (*http.Response, map[string]any) {
		req, err := http.NewRequest(http.MethodGet, u+"&audience=mwi-test", nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := p.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		json.NewDecoder(resp.Body).Decode(&body)
		return resp, body
	}
	if resp, _ := get("bearer wrong"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong request token: %s", resp.Status)
	}
	if resp, _ := get(""); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no request token: %s", resp.Status)
	}
	resp, body := get("bearer " + reqTok)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("token request: %s", resp.Status)
	}
	jwt, _ := body["value"].(string)
	idt, err := verifier(t, p, "mwi-test").Verify(context.Background(), jwt)
	if err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if time.Until(idt.Expiry) < 4*time.Minute {
		t.Errorf("expiry %v", idt.Expiry)
	}
	_, body2 := get("Bearer " + reqTok)
	if body2["value"] == jwt {
		t.Error("two requests got the same token")
	}
	env := p.ActionsEnv(p.GitHubClaims("", "org/repo"))
	if len(env) != 3 || !strings.HasPrefix(env[0], "ACTIONS_ID_TOKEN_REQUEST_URL=https://127.0.0.1:") {
		t.Errorf("ActionsEnv = %q", env)
	}
	if p.ActionsTokenRequests() != 4 {
		t.Errorf("ActionsTokenRequests() = %d, want 4", p.ActionsTokenRequests())
	}
}
