package server

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/resource"
)

func TestPublicRoutesChallenge(t *testing.T) {
	f := &fakeJoiner{}
	h := publicRoutes(f, nil, discardAudit(), discardLog())
	req := httptest.NewRequest(http.MethodPost, "/v1/join/challenge", strings.NewReader(`{"token_name":"build-01"}`))
	req.RemoteAddr = "192.0.2.9:1"
	res, body := serve(t, h, req)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, body %s", res.StatusCode, body)
	}
	var c api.ChallengeResponse
	if err := json.Unmarshal(body, &c); err != nil || c.Challenge != "c-build-01" || c.Expires.IsZero() {
		t.Errorf("body = %s, %v", body, err)
	}
	if len(f.challenges) != 1 || f.challenges[0].TokenName != "build-01" || f.remote != "192.0.2.9:1" {
		t.Errorf("authority got %+v from %s", f.challenges, f.remote)
	}

	res, body = serve(t, h, httptest.NewRequest(http.MethodPost, "/v1/join/challenge", strings.NewReader(`{"token":"x"}`)))
	errorBody(t, res, body, http.StatusBadRequest, api.CodeBadRequest)
	res, body = serve(t, h, httptest.NewRequest(http.MethodGet, "/v1/join/challenge", nil))
	errorBody(t, res, body, http.StatusMethodNotAllowed, api.CodeBadRequest)
}

// TestPublicRoutesJoinIdentity checks that a join passes the identity the
// caller presented over mutual TLS, and none without one.
func TestPublicRoutesJoinIdentity(t *testing.T) {
	a := testCA(t)
	f := &fakeJoiner{}
	srv := tlsServer(t, a, publicRoutes(f, nil, discardAudit(), discardLog()))
	id := ca.Identity{Bot: "ci", Instance: "i1", Generation: 3}
	req := api.JoinRequest{JoinMethod: api.JoinMethodGitHub, TokenName: "gh", IDToken: "x.y.z"}
	for _, c := range []*http.Client{tlsClient(t, a, identityCert(t, a, id)), tlsClient(t, a)} {
		res, body, err := post(t, c, srv.URL+"/v1/join", req)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("join: %v %s", err, body)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.clients) != 2 || f.clients[0] == nil || *f.clients[0] != id || f.clients[1] != nil {
		t.Errorf("identities passed: %v", f.clients)
	}
	if f.joins[0].TokenName != "gh" || f.joins[0].IDToken != "x.y.z" {
		t.Errorf("join request = %+v", f.joins[0])
	}

	// A verified chain whose leaf is no identity is refused before the
	// authority sees the join.
	serving, err := x509.ParseCertificate(a.ServingCertificate().Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/join", strings.NewReader(`{"join_method":"github"}`))
	r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{serving, a.TLSCA()}}}
	res, body := serve(t, publicRoutes(f, nil, discardAudit(), discardLog()), r)
	errorBody(t, res, body, http.StatusUnauthorized, api.CodeUnauthenticated)
}

// TestPublicRoutesChallengeIdentity checks that a challenge passes the
// identity the caller presented over mutual TLS, and none without one.
func TestPublicRoutesChallengeIdentity(t *testing.T) {
	a := testCA(t)
	f := &fakeJoiner{}
	srv := tlsServer(t, a, publicRoutes(f, nil, discardAudit(), discardLog()))
	id := ca.Identity{Bot: "ci", Instance: "i1", Generation: 3}
	for _, c := range []*http.Client{tlsClient(t, a, identityCert(t, a, id)), tlsClient(t, a)} {
		res, body, err := post(t, c, srv.URL+"/v1/join/challenge", api.ChallengeRequest{TokenName: "build-01"})
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("challenge: %v %s", err, body)
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.chClients) != 2 || f.chClients[0] == nil || *f.chClients[0] != id || f.chClients[1] != nil {
		t.Errorf("identities passed: %v", f.chClients)
	}

	// A verified chain whose leaf is no identity is refused before the
	// authority sees the request.
	serving, err := x509.ParseCertificate(a.ServingCertificate().Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodPost, "/v1/join/challenge", strings.NewReader(`{"token_name":"build-01"}`))
	r.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{serving, a.TLSCA()}}}
	res, body := serve(t, publicRoutes(&fakeJoiner{}, nil, discardAudit(), discardLog()), r)
	errorBody(t, res, body, http.StatusUnauthorized, api.CodeUnauthenticated)
}

// TestBoundKeypairOverHTTPS joins with a bound key pair through the real
// routes and authority: challenge, join, re-join over mutual TLS keeping
// the instance, and a renewal refused as not renewable.
func TestBoundKeypairOverHTTPS(t *testing.T) {
	auth, auditLog := testAuthority(t)
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	yaml := `kind: role
version: v1
metadata: {name: deploy}
spec:
  allow: {logins: [deploy]}
---
kind: bot
version: v1
metadata: {name: ci}
spec: {roles: [deploy]}
---
kind: token
version: v1
metadata: {name: build-01}
spec:
  join_method: bound_keypair
  bot_name: ci
  bound_keypair:
    public_key: ` + strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + "\n"
	if err := os.WriteFile(filepath.Join(dir, "r.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := resource.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	auth.SetResources(set)
	srv := tlsServer(t, auth.CA, publicRoutes(auth, nil, auth.Audit, discardLog()))

	keys := func() (api.PublicKeys, crypto.Signer) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		sshRaw, _, _ := ed25519.GenerateKey(rand.Reader)
		sshPub, _ := ssh.NewPublicKey(sshRaw)
		return api.PublicKeys{
			IdentityCSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
			SSH:         string(ssh.MarshalAuthorizedKey(sshPub)),
		}, key
	}
	join := func(c *http.Client) (api.Credentials, crypto.Signer) {
		t.Helper()
		res, body, err := post(t, c, srv.URL+"/v1/join/challenge", api.ChallengeRequest{TokenName: "build-01"})
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("challenge: %v %s", err, body)
		}
		var ch api.ChallengeResponse
		if err := json.Unmarshal(body, &ch); err != nil {
			t.Fatal(err)
		}
		sig, err := signer.Sign(rand.Reader, api.BoundKeypairSignedData(ch.Challenge))
		if err != nil {
			t.Fatal(err)
		}
		pub, key := keys()
		res, body, err = post(t, c, srv.URL+"/v1/join", api.JoinRequest{
			JoinMethod: api.JoinMethodBoundKeypair, TokenName: "build-01", Challenge: ch.Challenge,
			Signature: base64.StdEncoding.EncodeToString(ssh.Marshal(sig)), Keys: pub, TTLSeconds: 600,
		})
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("join: %v %s", err, body)
		}
		var creds api.Credentials
		if err := json.Unmarshal(body, &creds); err != nil {
			t.Fatal(err)
		}
		return creds, key
	}
	clientCert := func(creds api.Credentials, key crypto.Signer) tls.Certificate {
		block, _ := pem.Decode([]byte(creds.IdentityCertificate))
		return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
	}

	first, key := join(tlsClient(t, auth.CA))
	if first.Generation != 1 || first.Bot != "ci" {
		t.Fatalf("first join = %+v", first)
	}
	second, key2 := join(tlsClient(t, auth.CA, clientCert(first, key)))
	if second.Instance != first.Instance || second.Generation != 2 {
		t.Errorf("re-join over mutual TLS = %+v, want instance %s generation 2", second, first.Instance)
	}
	pub, _ := keys()
	res, body, err := post(t, tlsClient(t, auth.CA, clientCert(second, key2)), srv.URL+"/v1/renew", api.RenewRequest{Keys: pub, TTLSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	errorBody(t, res, body, http.StatusForbidden, api.CodeNotRenewable)
	if !strings.Contains(auditLog.String(), `"event":"join.challenge"`) || !strings.Contains(auditLog.String(), `"rejoin":true`) {
		t.Errorf("audit log:\n%s", auditLog.String())
	}
}
