package server

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
)

// TestNodesInventory joins a host over HTTPS, as mwid does, and finds it
// in the inventory of the admin socket with its names, labels, address
// and the version its User-Agent names.
func TestNodesInventory(t *testing.T) {
	auth, _ := testAuthority(t)
	admin := unixServer(t, adminRoutes(auth, nil, auth.Audit, discardLog()))
	srv := tlsServer(t, auth.CA, publicRoutes(auth, nil, auth.Audit, discardLog()))

	nodes := func() []api.Node {
		t.Helper()
		res, err := admin.Get("http://mwi/admin/v1/nodes")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		var n api.Nodes
		if res.StatusCode != http.StatusOK || json.Unmarshal(body, &n) != nil || n.Nodes == nil {
			t.Fatalf("GET /admin/v1/nodes: %d %s", res.StatusCode, body)
		}
		return n.Nodes
	}
	if n := nodes(); len(n) != 0 {
		t.Fatalf("nodes before any join = %+v", n)
	}

	res, body, err := post(t, admin, "http://mwi/admin/v1/tokens", api.CreateTokenRequest{Bot: "web", TTLSeconds: 600})
	if err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("create token: %v %s", err, body)
	}
	var tok api.CreateTokenResponse
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	newSSHKey := func() string {
		raw, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := ssh.NewPublicKey(raw)
		if err != nil {
			t.Fatal(err)
		}
		return string(ssh.MarshalAuthorizedKey(pub))
	}
	req, _ := json.Marshal(api.JoinRequest{
		JoinMethod: api.JoinMethodToken, Token: tok.Token, TTLSeconds: 600,
		Keys:     api.PublicKeys{IdentityCSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), SSH: newSSHKey()},
		HostKeys: []api.HostKeyRequest{{PublicKey: newSSHKey(), Labels: map[string]string{"env": "prod"}}},
	})
	hr, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/join", bytes.NewReader(req))
	hr.Header.Set("Content-Type", "application/json")
	hr.Header.Set("User-Agent", "mwid/v1.2.3 (test)")
	hres, err := tlsClient(t, auth.CA).Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(hres.Body)
	hres.Body.Close()
	var creds api.Credentials
	if hres.StatusCode != http.StatusOK || json.Unmarshal(body, &creds) != nil {
		t.Fatalf("join: %d %s", hres.StatusCode, body)
	}

	got := nodes()
	if len(got) != 1 {
		t.Fatalf("nodes = %+v, want the host", got)
	}
	n := got[0]
	want := api.Node{Names: []string{"web-01"}, Instance: creds.Instance, Bot: "web", Labels: map[string]string{"env": "prod"},
		Address: "127.0.0.1", Version: "v1.2.3", Renewed: n.Renewed}
	if !reflect.DeepEqual(n, want) || n.Renewed.IsZero() {
		t.Errorf("node = %+v\nwant %+v", n, want)
	}
}

// TestReachableNodesRoute serves GET /v1/nodes over HTTPS: a caller
// without a bot identity is refused and audited; a bot gets the nodes its
// roles select, with the logins they allow there; a locked bot is refused
// and audited.
func TestReachableNodesRoute(t *testing.T) {
	auth, auditLog := testAuthority(t)
	ctx := context.Background()
	dir := t.TempDir()
	const yaml = `kind: role
version: v1
metadata: {name: deploy}
spec:
  allow: {logins: [deploy], node_labels: {env: prod}}
---
kind: bot
version: v1
metadata: {name: ci}
spec: {roles: [deploy]}
---
kind: role
version: v1
metadata: {name: host}
spec:
  allow: {host_names: [web-01, web-02], host_labels: {env: '*'}}
---
kind: bot
version: v1
metadata: {name: web}
spec: {roles: [host]}
`
	if err := os.WriteFile(filepath.Join(dir, "r.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := resource.LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	auth.SetResources(set)
	now := time.Now()
	if err := auth.Store.CreateInstance(ctx, store.Instance{ID: "abc", Bot: "ci", Generation: 1, Created: now}); err != nil {
		t.Fatal(err)
	}
	for _, n := range []store.Node{
		{Instance: "h1", Bot: "web", Names: []string{"web-01"}, Labels: map[string]string{"env": "prod"}, Renewed: now},
		{Instance: "h2", Bot: "web", Names: []string{"web-02"}, Labels: map[string]string{"env": "staging"}, Renewed: now},
	} {
		if err := auth.Store.PutNode(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	srv := tlsServer(t, auth.CA, publicRoutes(auth, nil, auth.Audit, discardLog()))
	bot := tlsClient(t, auth.CA, identityCert(t, auth.CA, ca.Identity{Bot: "ci", Instance: "abc", Generation: 1}))

	before := strings.Count(auditLog.String(), `"outcome":"denied"`)
	res, body := get(t, tlsClient(t, auth.CA), srv.URL+"/v1/nodes", "")
	errorBody(t, res, body, http.StatusUnauthorized, api.CodeUnauthenticated)
	if n := strings.Count(auditLog.String(), `"outcome":"denied"`); n != before+1 {
		t.Errorf("%d denials audited, want 1", n-before)
	}

	res, body = get(t, bot, srv.URL+"/v1/nodes", "")
	var got api.ReachableNodes
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &got) != nil {
		t.Fatalf("GET /v1/nodes = %d %s", res.StatusCode, body)
	}
	want := api.ReachableNodes{Nodes: []api.ReachableNode{{Name: "web-01", Names: []string{"web-01"},
		Labels: map[string]string{"env": "prod"}, Logins: []string{"deploy"}}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("GET /v1/nodes = %+v, want %+v", got, want)
	}

	if err := auth.Store.LockBot(ctx, store.Lock{Bot: "ci", Reason: "test", At: now}); err != nil {
		t.Fatal(err)
	}
	before = strings.Count(auditLog.String(), `"event":"nodes"`)
	res, body = get(t, bot, srv.URL+"/v1/nodes", "")
	errorBody(t, res, body, http.StatusForbidden, api.CodeBotLocked)
	if n := strings.Count(auditLog.String(), `"event":"nodes"`); n != before+1 {
		t.Errorf("%d nodes refusals audited, want 1", n-before)
	}
}
