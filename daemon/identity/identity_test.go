package identity

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
)

// issue plays the issuer: it signs the public keys of k as a real issuer
// would, optionally for other keys to test Assemble's checks.
func issue(t *testing.T, pub api.PublicKeys, certType uint32, ttl time.Duration) api.Credentials {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	ca, _ := x509.ParseCertificate(caDER)
	block, _ := pem.Decode([]byte(pub.IdentityCSR))
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	idDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(ttl)}, ca, csr.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(pub.SSH))
	if err != nil {
		t.Fatal(err)
	}
	_, sshCAKey, _ := ed25519.GenerateKey(rand.Reader)
	sshCA, _ := ssh.NewSignerFromKey(sshCAKey)
	cert := &ssh.Certificate{Key: sshPub, CertType: certType, ValidPrincipals: []string{"deploy"},
		ValidAfter: uint64(now.Add(-time.Minute).Unix()), ValidBefore: uint64(now.Add(ttl).Unix())}
	if err := cert.SignCert(rand.Reader, sshCA); err != nil {
		t.Fatal(err)
	}
	return api.Credentials{
		Bot: "ci", Instance: "i1", Generation: 1,
		IdentityCertificate: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: idDER})),
		SSHCertificate:      string(ssh.MarshalAuthorizedKey(cert)),
	}
}

func newKeys(t *testing.T) (*Keys, api.PublicKeys) {
	t.Helper()
	k, err := NewKeys()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.Public()
	if err != nil {
		t.Fatal(err)
	}
	return k, pub
}

func TestAssemble(t *testing.T) {
	k, pub := newKeys(t)
	_, otherPub := newKeys(t)
	good := issue(t, pub, ssh.UserCert, time.Hour)
	forOther := issue(t, otherPub, ssh.UserCert, time.Hour)
	hostCert := issue(t, pub, ssh.HostCert, time.Hour)

	c, err := Assemble(k, good, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !c.ValidAt(time.Now()) || c.ValidAt(time.Now().Add(2*time.Hour)) {
		t.Error("ValidAt does not follow the certificates' validity")
	}
	if c.TLS.PrivateKey != k.identity || c.SSHSigner == nil {
		t.Error("credentials do not carry the keys they were made for")
	}

	tests := []struct {
		name string
		resp api.Credentials
		want string
	}{
		{"identity for another key", api.Credentials{IdentityCertificate: forOther.IdentityCertificate, SSHCertificate: good.SSHCertificate}, "identity certificate is not for our key"},
		{"ssh certificate for another key", api.Credentials{IdentityCertificate: good.IdentityCertificate, SSHCertificate: forOther.SSHCertificate}, "SSH certificate is not for our key"},
		{"host certificate", api.Credentials{IdentityCertificate: good.IdentityCertificate, SSHCertificate: hostCert.SSHCertificate}, "not an SSH user certificate"},
		{"no PEM", api.Credentials{IdentityCertificate: "junk", SSHCertificate: good.SSHCertificate}, "not a PEM certificate"},
		{"plain ssh key", api.Credentials{IdentityCertificate: good.IdentityCertificate, SSHCertificate: pub.SSH}, "not an SSH user certificate"},
	}
	for _, tt := range tests {
		if _, err := Assemble(k, tt.resp, time.Now()); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: Assemble error %v, want %q", tt.name, err, tt.want)
		}
	}
}

func TestHolderKeepsRecent(t *testing.T) {
	var h Holder
	if h.Current() != nil || h.Identities() != nil {
		t.Fatal("empty holder has credentials")
	}
	var creds []*Credentials
	for range maxHeld + 2 {
		k, pub := newKeys(t)
		c, err := Assemble(k, issue(t, pub, ssh.UserCert, time.Hour), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		creds = append(creds, c)
		h.Set(c)
	}
	ids := h.Identities()
	if h.Current() != creds[len(creds)-1] || len(ids) != maxHeld {
		t.Fatalf("holder has %d identities; want the %d newest", len(ids), maxHeld)
	}
	for i, id := range ids {
		if want := creds[len(creds)-1-i]; id.Cert != want.SSHCert {
			t.Errorf("identity %d is not the %d-th newest", i, i)
		}
	}
}

func TestSSHKeyPEM(t *testing.T) {
	k, pub := newKeys(t)
	c, err := Assemble(k, issue(t, pub, ssh.UserCert, time.Hour), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, err := c.SSHKeyPEM()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(data), "-----BEGIN OPENSSH PRIVATE KEY-----\n") {
		t.Errorf("key is not in OpenSSH's format:\n%.40s", data)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(signer.PublicKey().Marshal(), c.SSHCert.Key.Marshal()) {
		t.Error("the key is not the certificate's")
	}

	noLogins := issue(t, pub, ssh.UserCert, time.Hour)
	noLogins.SSHCertificate = ""
	c, err = Assemble(k, noLogins, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SSHKeyPEM(); err == nil || !strings.Contains(err.Error(), "no SSH user certificate") {
		t.Errorf("SSHKeyPEM without a certificate: %v", err)
	}
}
