package server

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"reflect"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
)

// TestNodesInventory joins a host over HTTPS, as mwid does, and finds it
// in the inventory of the admin socket with its names, labels, address
// and the version its User-Agent names.
func TestNodesInventory(t *testing.T) {
	auth, _ := testAuthority(t)
	admin := unixServer(t, adminRoutes(auth, auth.Audit, discardLog()))
	srv := tlsServer(t, auth.CA, publicRoutes(auth, auth.Audit, discardLog()))

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
