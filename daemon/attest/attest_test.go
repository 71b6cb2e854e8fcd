package attest

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
)

const (
	jwt    = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJyZXBvOm8vciJ9.c2ln"
	bearer = "runner-bearer-secret"
)

// actions serves a fake GitHub Actions token endpoint and points the
// environment at it with path (which may carry a query).
func actions(t *testing.T, path string, handler http.HandlerFunc) {
	t.Helper()
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)
	t.Setenv(GitHubRequestURLEnv, srv.URL+path)
	t.Setenv(GitHubRequestTokenEnv, bearer)
}

func TestGitHubActionsToken(t *testing.T) {
	for _, tc := range []struct{ path, wantQuery string }{
		{"/idtoken?api-version=2.0", "api-version=2.0&audience=mwi+prod"},
		{"/idtoken", "audience=mwi+prod"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			actions(t, tc.path, func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodGet || r.URL.Path != "/idtoken" || r.URL.RawQuery != tc.wantQuery {
					t.Errorf("request %s %s?%s, want GET /idtoken?%s", r.Method, r.URL.Path, r.URL.RawQuery, tc.wantQuery)
				}
				if got := r.Header.Get("Authorization"); got != "bearer "+bearer {
					t.Errorf("Authorization = %q", got)
				}
				json.NewEncoder(w).Encode(map[string]any{"count": 1, "value": jwt})
			})
			got, err := IDToken(context.Background(), config.IDTokenSource{GitHubActions: true, Audience: "mwi prod"})
			if err != nil || got != jwt {
				t.Fatalf("IDToken = %q, %v", got, err)
			}
		})
	}
}

func TestGitHubActionsTokenErrors(t *testing.T) {
	src := config.IDTokenSource{GitHubActions: true, Audience: "mwi"}
	t.Run("not in actions", func(t *testing.T) {
		t.Setenv(GitHubRequestURLEnv, "")
		t.Setenv(GitHubRequestTokenEnv, "")
		_, err := IDToken(context.Background(), src)
		want := "ID token from GitHub Actions: $ACTIONS_ID_TOKEN_REQUEST_URL and $ACTIONS_ID_TOKEN_REQUEST_TOKEN not set: not running in GitHub Actions with id-token: write permission?"
		if err == nil || err.Error() != want {
			t.Fatalf("error = %v\nwant %s", err, want)
		}
	})
	t.Run("no request token", func(t *testing.T) {
		t.Setenv(GitHubRequestURLEnv, "https://example.com/x")
		t.Setenv(GitHubRequestTokenEnv, "")
		_, err := IDToken(context.Background(), src)
		if err == nil || !strings.Contains(err.Error(), "$ACTIONS_ID_TOKEN_REQUEST_TOKEN not set: not running in GitHub Actions") {
			t.Fatalf("error = %v", err)
		}
	})
	t.Run("plain http to another host", func(t *testing.T) {
		t.Setenv(GitHubRequestURLEnv, "http://example.com/x?a=b")
		t.Setenv(GitHubRequestTokenEnv, bearer)
		_, err := IDToken(context.Background(), src)
		if err == nil || !strings.Contains(err.Error(), "is not an https URL") {
			t.Fatalf("error = %v", err)
		}
	})
	for _, tc := range []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"refused", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", http.StatusForbidden) }, "answered 403 Forbidden"},
		{"not json", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("<html>")) }, "not JSON with a value"},
		{"no value", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"count": 0}`)) }, "no token in value"},
		{"not a jwt", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(`{"value": "abc"}`)) }, "not a JWT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			actions(t, "/idtoken?api-version=2.0", tc.handler)
			_, err := IDToken(context.Background(), src)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), bearer) || strings.Contains(err.Error(), "idtoken") {
				t.Errorf("error %q shows the bearer token or the endpoint's path", err)
			}
		})
	}
}

func TestIDTokenEnvAndFile(t *testing.T) {
	t.Setenv("MWI_TEST_ID_TOKEN", jwt+"\n")
	if got, err := IDToken(context.Background(), config.IDTokenSource{Env: "MWI_TEST_ID_TOKEN"}); err != nil || got != jwt {
		t.Errorf("env: %q, %v", got, err)
	}
	os.Unsetenv("MWI_TEST_UNSET")
	if _, err := IDToken(context.Background(), config.IDTokenSource{Env: "MWI_TEST_UNSET"}); err == nil ||
		!strings.Contains(err.Error(), "ID token from $MWI_TEST_UNSET: environment variable MWI_TEST_UNSET is not set") {
		t.Errorf("unset env: %v", err)
	}
	t.Setenv("MWI_TEST_ID_TOKEN", "not a token")
	if _, err := IDToken(context.Background(), config.IDTokenSource{Env: "MWI_TEST_ID_TOKEN"}); err == nil ||
		strings.Contains(err.Error(), "not a token") || !strings.Contains(err.Error(), "is not a JWT") {
		t.Errorf("bad env: %v", err)
	}

	// A file is read at every call: a projected token rotates under mwid.
	path := filepath.Join(t.TempDir(), "token")
	src := config.IDTokenSource{File: path}
	for _, tok := range []string{jwt, jwt + "x"} {
		os.WriteFile(path, []byte(tok+"\n"), 0o600)
		if got, err := IDToken(context.Background(), src); err != nil || got != tok {
			t.Errorf("file: %q, %v; want %q", got, err, tok)
		}
	}
	os.WriteFile(path, nil, 0o600)
	if _, err := IDToken(context.Background(), src); err == nil || !strings.Contains(err.Error(), "ID token from "+path+": it is empty") {
		t.Errorf("empty file: %v", err)
	}
	os.Remove(path)
	if _, err := IDToken(context.Background(), src); err == nil || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("missing file: %v", err)
	}
}

// challenger plays the issuer's challenge endpoint.
type challenger struct {
	challenge  string
	err        error
	asked      []string
	identities []*tls.Certificate
}

func (c *challenger) Challenge(_ context.Context, identity *tls.Certificate, tokenName string) (api.ChallengeResponse, error) {
	c.asked = append(c.asked, tokenName)
	c.identities = append(c.identities, identity)
	return api.ChallengeResponse{Challenge: c.challenge}, c.err
}

func writeKey(t *testing.T, dir, name string, key any, passphrase string) ssh.PublicKey {
	t.Helper()
	var block *pem.Block
	var err error
	if passphrase != "" {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(key, "", []byte(passphrase))
	} else {
		block, err = ssh.MarshalPrivateKey(key, "")
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return signer.PublicKey()
}

func TestBoundKeypair(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("CREDENTIALS_DIRECTORY", dir)
	_, edKey, _ := ed25519.GenerateKey(rand.Reader)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, tc := range []struct {
		name string
		key  any
		src  config.SecretSource
	}{
		{"ed25519 credential", edKey, config.SecretSource{Credential: "mwi-key"}},
		{"ecdsa file", ecKey, config.SecretSource{File: filepath.Join(dir, "mwi-key")}},
		{"rsa file", rsaKey, config.SecretSource{File: filepath.Join(dir, "mwi-key")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pub := writeKey(t, dir, "mwi-key", tc.key, "")
			challenge := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
			ch := &challenger{challenge: challenge}
			ident := &tls.Certificate{Certificate: [][]byte{[]byte("identity")}}
			req, err := Attest(context.Background(), config.Onboarding{JoinMethod: "bound_keypair", TokenName: "build-01", Key: tc.src}, ch, ident)
			if err != nil {
				t.Fatal(err)
			}
			if len(ch.asked) != 1 || ch.asked[0] != "build-01" {
				t.Errorf("challenges asked for %q", ch.asked)
			}
			// The challenge is asked for with the identity held.
			if len(ch.identities) != 1 || ch.identities[0] != ident {
				t.Errorf("challenge asked with identities %v, want the one held", ch.identities)
			}
			if req.JoinMethod != "bound_keypair" || req.TokenName != "build-01" || req.Challenge != challenge || req.Token != "" || req.IDToken != "" {
				t.Errorf("request = %+v", req)
			}
			// As the issuer checks it: the signature is over the fixed
			// context and the challenge string's bytes, as sent, and not
			// over the bare challenge.
			wire, err := base64.StdEncoding.DecodeString(req.Signature)
			if err != nil {
				t.Fatal(err)
			}
			var sig ssh.Signature
			if err := ssh.Unmarshal(wire, &sig); err != nil {
				t.Fatal(err)
			}
			if err := pub.Verify([]byte("mwi bound_keypair join v1\x00"+challenge), &sig); err != nil {
				t.Errorf("signature does not verify: %v", err)
			}
			if err := pub.Verify([]byte(challenge), &sig); err == nil {
				t.Error("the signature is over the bare challenge")
			}
			if tc.name == "rsa file" && sig.Format != ssh.KeyAlgoRSASHA512 {
				t.Errorf("RSA signature format %s, want %s", sig.Format, ssh.KeyAlgoRSASHA512)
			}
		})
	}
}

func TestBoundKeypairErrors(t *testing.T) {
	dir := t.TempDir()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	writeKey(t, dir, "plain", key, "")
	writeKey(t, dir, "encrypted", key, "hunter2")
	os.WriteFile(filepath.Join(dir, "garbage"), []byte("not a key"), 0o600)
	ob := func(src config.SecretSource) config.Onboarding {
		return config.Onboarding{JoinMethod: "bound_keypair", TokenName: "b", Key: src}
	}
	for _, tc := range []struct {
		name string
		ob   config.Onboarding
		ch   *challenger
		cred string // $CREDENTIALS_DIRECTORY
		want string
	}{
		{"no credentials directory", ob(config.SecretSource{Credential: "plain"}), &challenger{challenge: "c"}, "",
			"bound key pair: private key: credential plain: $CREDENTIALS_DIRECTORY is not set"},
		{"missing file", ob(config.SecretSource{File: filepath.Join(dir, "none")}), &challenger{challenge: "c"}, dir, "no such file"},
		{"encrypted", ob(config.SecretSource{File: filepath.Join(dir, "encrypted")}), &challenger{challenge: "c"}, dir, "is encrypted with a passphrase"},
		{"garbage", ob(config.SecretSource{Credential: "garbage"}), &challenger{challenge: "c"}, dir, "bound key pair: private key credential garbage:"},
		{"issuer refuses", ob(config.SecretSource{Credential: "plain"}), &challenger{err: errors.New("issuer refused: unknown token (token_unknown)")}, dir,
			"bound key pair: challenge: issuer refused"},
		{"empty challenge", ob(config.SecretSource{Credential: "plain"}), &challenger{}, dir, "no challenge"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("CREDENTIALS_DIRECTORY", tc.cred)
			_, err := Attest(context.Background(), tc.ob, tc.ch, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), "PRIVATE KEY") {
				t.Errorf("error %q shows the key", err)
			}
		})
	}
}

func TestAttestToken(t *testing.T) {
	t.Setenv("MWI_TEST_JOIN", "s3cret")
	req, err := Attest(context.Background(), config.Onboarding{JoinMethod: "token", Token: config.SecretSource{Env: "MWI_TEST_JOIN"}}, nil, nil)
	if err != nil || req.Token != "s3cret" || req.JoinMethod != "token" || req.TokenName != "" {
		t.Errorf("Attest = %+v, %v", req, err)
	}
	os.Unsetenv("MWI_TEST_UNSET")
	if _, err := Attest(context.Background(), config.Onboarding{JoinMethod: "token", Token: config.SecretSource{Env: "MWI_TEST_UNSET"}}, nil, nil); err == nil ||
		!strings.HasPrefix(err.Error(), "join token: ") {
		t.Errorf("unset token: %v", err)
	}
	t.Setenv("MWI_TEST_ID_TOKEN", jwt)
	req, err = Attest(context.Background(), config.Onboarding{JoinMethod: "gitlab", TokenName: "gl", IDToken: config.IDTokenSource{Env: "MWI_TEST_ID_TOKEN"}}, nil, nil)
	if err != nil || req.IDToken != jwt || req.TokenName != "gl" || req.JoinMethod != "gitlab" {
		t.Errorf("Attest = %+v, %v", req, err)
	}
}

// TestSources checks that every join method has a Source, of the kind its
// onboarding block configures.
func TestSources(t *testing.T) {
	for _, m := range api.JoinMethods {
		newSource, ok := sources[m]
		if !ok {
			t.Errorf("join method %q has no Source", m)
			continue
		}
		src := newSource(config.Onboarding{JoinMethod: m})
		if _, isID := src.(IDTokenSource); isID != m.UsesIDToken() {
			t.Errorf("%q: Source %T, but UsesIDToken is %v", m, src, m.UsesIDToken())
		}
	}
	if len(sources) != len(api.JoinMethods) {
		t.Errorf("%d sources for %d join methods", len(sources), len(api.JoinMethods))
	}
	if _, err := Attest(context.Background(), config.Onboarding{JoinMethod: "tpm"}, nil, nil); err == nil || err.Error() != `unknown join method "tpm"` {
		t.Errorf("Attest(tpm) = %v", err)
	}
}
