package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
)

// TestRemoteAdmin administers an issuer over the network with the real
// binaries: mwi-issuer admin issue on the issuer's machine writes an admin
// identity, with which create -f and get work through --issuer; a bot's
// identity, or no certificate, is refused and audited.
func TestRemoteAdmin(t *testing.T) {
	t.Parallel()
	iss := harness.StartIssuer(t, "")
	run := func(args ...string) (string, error) {
		return harness.Run(context.Background(), 30*time.Second, nil, append([]string{iss.Bins.Issuer}, args...)...)
	}
	id := filepath.Join(t.TempDir(), "admin")
	if out, err := run("admin", "issue", "--out", id, "--name", "ops", "--state", iss.State); err != nil {
		t.Fatalf("admin issue: %v\n%s", err, out)
	}
	if iss.FindAudit(t, map[string]any{"event": "admin.issue", "outcome": "allowed", "name": "ops"}) == nil {
		t.Error("admin issue was not audited")
	}
	role := filepath.Join(t.TempDir(), "role.yaml")
	if err := os.WriteFile(role, []byte("kind: role\nversion: v7\nmetadata:\n  name: remote-role\nspec:\n  allow:\n    logins: [deploy]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := run("--issuer", iss.Addr, "--identity", id, "create", "-f", role); err != nil {
		t.Fatalf("create -f over the network: %v\n%s", err, out)
	}
	out, err := run("--issuer", iss.Addr, "--identity", id, "get", "role/remote-role")
	if err != nil || !strings.Contains(out, "remote-role") {
		t.Fatalf("get over the network: %v\n%s", err, out)
	}
	if iss.FindAudit(t, map[string]any{"event": "resource.create", "outcome": "allowed", "admin": "ops", "name": "remote-role"}) == nil {
		t.Error("create over the network was not audited with the admin's name")
	}

	// A bot identity, signed by the bot identity CA as the issuer signs
	// one, is not an admin's.
	botID := botIdentityDir(t, iss.State, filepath.Join(id, "issuer_ca.crt"))
	out, err = run("--issuer", iss.Addr, "--identity", botID, "get", "role/remote-role")
	if err == nil || !strings.Contains(out, "admin identities only") {
		t.Errorf("get with a bot identity: %v\n%s", err, out)
	}
	if iss.FindAudit(t, map[string]any{"event": "admin", "outcome": "denied", "bot": "ci"}) == nil {
		t.Error("the bot identity's refusal was not audited")
	}

	// No certificate at all.
	caPEM, err := os.ReadFile(filepath.Join(id, "issuer_ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}}
	res, err := c.Get((&url.URL{Scheme: "https", Host: iss.Addr, Path: "/admin/v1/resources"}).String())
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("admin API without a certificate: %s, want 401", res.Status)
	}
	if iss.FindAudit(t, map[string]any{"event": "admin", "outcome": "denied", "path": "/admin/v1/resources", "bot": nil}) == nil {
		t.Error("the anonymous refusal was not audited")
	}
}

// botIdentityDir writes, in the layout of mwi-issuer admin issue, a bot
// identity of bot ci signed with the bot identity CA in state.
func botIdentityDir(t *testing.T, state, issuerCA string) string {
	t.Helper()
	read := func(name string) *pem.Block {
		data, err := os.ReadFile(filepath.Join(state, name))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(data)
		return b
	}
	caCert, err := x509.ParseCertificate(read("identity_ca.crt").Bytes)
	if err != nil {
		t.Fatal(err)
	}
	caKey, err := x509.ParsePKCS8PrivateKey(read("identity_ca.key").Bytes)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: "ci", Organization: []string{"mwi bot"}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{{Scheme: "mwi", Host: "bot", Path: "/ci/instance/i1/generation/1"}},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(issuerCA)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, data := range map[string][]byte{
		"identity.crt":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"identity.key":  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
		"issuer_ca.crt": caPEM,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}
