package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
)

// kubeCert signs a Kubernetes client certificate for the key of csrPEM.
func kubeCert(t *testing.T, csrPEM, user string, groups ...string) string {
	t.Helper()
	block, _ := pem.Decode([]byte(csrPEM))
	if block == nil {
		t.Fatalf("CSR is not PEM: %q", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := csr.CheckSignature(); err != nil {
		t.Fatal(err)
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: user, Organization: groups},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, csr.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestAssembleKubernetes(t *testing.T) {
	k, pub := newKeys(t)
	csr, err := k.KubernetesCSR()
	if err != nil {
		t.Fatal(err)
	}
	// A second request is for the same key.
	csr2, err := k.KubernetesCSR()
	if err != nil {
		t.Fatal(err)
	}
	caPEM := []byte(kubeCert(t, csr, "ca-stand-in"))
	resp := issue(t, pub, ssh.UserCert, time.Hour)
	resp.Kubernetes = []api.KubernetesCredential{
		{Cluster: "staging", Server: "https://staging:6443", CertificateAuthorityData: caPEM, ClientCertificate: kubeCert(t, csr2, "bot:ci", "dev")},
		{Cluster: "prod", Server: "https://prod:6443", Labels: map[string]string{"env": "prod"}, CertificateAuthorityData: caPEM,
			ClientCertificate: kubeCert(t, csr, "alice", "system:masters", "b")},
	}
	c, err := Assemble(k, resp, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Kubernetes) != 2 || c.Kubernetes[0].Cluster != "prod" || c.Kubernetes[1].Cluster != "staging" {
		t.Fatalf("Kubernetes = %+v, want prod then staging", c.Kubernetes)
	}
	prod, ok := c.Kube("prod")
	if !ok || prod.User() != "alice" || !slices.Equal(prod.Groups(), []string{"b", "system:masters"}) || prod.Server != "https://prod:6443" || prod.Labels["env"] != "prod" {
		t.Errorf("prod = %+v", prod)
	}
	if _, ok := c.Kube("nope"); ok {
		t.Error("Kube(nope) found a credential")
	}
	// The key and certificate in PEM make a TLS key pair, as kubectl loads them.
	pair, err := tls.X509KeyPair(prod.CertPEM, prod.KeyPEM())
	if err != nil {
		t.Fatalf("the PEM certificate and key are no TLS pair: %v", err)
	}
	if pair.PrivateKey.(*ecdsa.PrivateKey).Equal(k.identity) {
		t.Error("the Kubernetes key is the identity key")
	}
	if staging, _ := c.Kube("staging"); string(staging.KeyPEM()) != string(prod.KeyPEM()) {
		t.Error("the clusters' certificates are for different keys")
	}

	// Checks on the answer.
	otherKeys, _ := newKeys(t)
	otherCSR, _ := otherKeys.KubernetesCSR()
	for _, tc := range []struct {
		name string
		kc   api.KubernetesCredential
		want string
	}{
		{"another key", api.KubernetesCredential{Cluster: "x", Server: "https://x", ClientCertificate: kubeCert(t, otherCSR, "u")}, "is not for our key"},
		{"not PEM", api.KubernetesCredential{Cluster: "x", Server: "https://x", ClientCertificate: "junk"}, "client_certificate is not a PEM certificate"},
		{"http server", api.KubernetesCredential{Cluster: "x", Server: "http://x", ClientCertificate: kubeCert(t, csr, "u")}, "is not an https URL"},
		{"bad CA", api.KubernetesCredential{Cluster: "x", Server: "https://x", CertificateAuthorityData: []byte("junk"), ClientCertificate: kubeCert(t, csr, "u")}, "certificate_authority_data is not PEM"},
		{"no name", api.KubernetesCredential{Server: "https://x", ClientCertificate: kubeCert(t, csr, "u")}, "cluster name"},
	} {
		bad := issue(t, pub, ssh.UserCert, time.Hour)
		bad.Kubernetes = []api.KubernetesCredential{tc.kc}
		if _, err := Assemble(k, bad, time.Now()); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Assemble error %v, want %q", tc.name, err, tc.want)
		}
	}
	dup := issue(t, pub, ssh.UserCert, time.Hour)
	dup.Kubernetes = []api.KubernetesCredential{resp.Kubernetes[0], resp.Kubernetes[0]}
	if _, err := Assemble(k, dup, time.Now()); err == nil || !strings.Contains(err.Error(), "two certificates for Kubernetes cluster staging") {
		t.Errorf("duplicate cluster: Assemble error %v", err)
	}
	// Certificates nobody asked for are refused.
	k2, pub2 := newKeys(t)
	unasked := issue(t, pub2, ssh.UserCert, time.Hour)
	unasked.Kubernetes = resp.Kubernetes
	if _, err := Assemble(k2, unasked, time.Now()); err == nil || !strings.Contains(err.Error(), "not asked for") {
		t.Errorf("unasked Kubernetes certificates: Assemble error %v", err)
	}
}
