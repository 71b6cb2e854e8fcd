package tlspin_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/internal/tlspin"
)

type certKey struct {
	cert *x509.Certificate
	key  crypto.Signer
}

func newKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

var serial int64

// issue signs tmpl for key with parent, or self-signs it if parent is nil.
func issue(t *testing.T, tmpl *x509.Certificate, key crypto.Signer, parent *certKey) certKey {
	t.Helper()
	serial++
	tmpl.SerialNumber = big.NewInt(serial)
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(time.Hour)
	}
	parentCert, parentKey := tmpl, key
	if parent != nil {
		parentCert, parentKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, key.Public(), parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return certKey{cert: c, key: key}
}

func caTemplate(name string, maxPathLen int) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: name},
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}
}

func leafTemplate(usage x509.ExtKeyUsage) *x509.Certificate {
	return &x509.Certificate{
		Subject:     pkix.Name{CommonName: "mwi-issuer"},
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage},
		DNSNames:    []string{"issuer.example"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
	}
}

func pool(certs ...*x509.Certificate) *x509.CertPool {
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p
}

func TestOf(t *testing.T) {
	key := newKey(t)
	a := issue(t, caTemplate("A", 0), key, nil)
	reissued := issue(t, caTemplate("A, again", 0), key, nil)
	other := issue(t, caTemplate("A", 0), newKey(t), nil)

	pin := tlspin.Of(a.cert)
	sum := sha256.Sum256(a.cert.RawSubjectPublicKeyInfo)
	if want := "sha256:" + base64.StdEncoding.EncodeToString(sum[:]); pin != want {
		t.Errorf("Of = %q, want %q", pin, want)
	}
	if !strings.HasPrefix(pin, "sha256:") || len(pin) != len("sha256:")+44 {
		t.Errorf("pin %q has the wrong form", pin)
	}
	if tlspin.Of(reissued.cert) != pin {
		t.Error("re-issuing the authority with the same key changed its pin")
	}
	if tlspin.Of(other.cert) == pin {
		t.Error("two keys have the same pin")
	}
}

func TestVerify(t *testing.T) {
	root := issue(t, caTemplate("root", 1), newKey(t), nil)
	inter := issue(t, caTemplate("intermediate", 0), newKey(t), &root)
	leaf := issue(t, leafTemplate(x509.ExtKeyUsageServerAuth), newKey(t), &root)
	interLeaf := issue(t, leafTemplate(x509.ExtKeyUsageServerAuth), newKey(t), &inter)
	clientLeaf := issue(t, leafTemplate(x509.ExtKeyUsageClientAuth), newKey(t), &root)
	expiredTmpl := leafTemplate(x509.ExtKeyUsageServerAuth)
	expiredTmpl.NotBefore, expiredTmpl.NotAfter = time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour)
	expired := issue(t, expiredTmpl, newKey(t), &root)
	// An attacker's chain: its own leaf, followed by the genuine authority
	// certificate, which it can copy from any handshake.
	evil := issue(t, caTemplate("evil", 0), newKey(t), nil)
	evilLeaf := issue(t, leafTemplate(x509.ExtKeyUsageServerAuth), newKey(t), &evil)
	otherRoot := issue(t, caTemplate("other", 0), newKey(t), nil)

	rootPin, interPin, otherPin := tlspin.Of(root.cert), tlspin.Of(inter.cert), tlspin.Of(otherRoot.cert)

	for _, tc := range []struct {
		name      string
		presented []*x509.Certificate
		host      string
		roots     *x509.CertPool
		pins      []string
		wantErr   string // "" means success
	}{
		{"pinned authority in the chain", []*x509.Certificate{leaf.cert, root.cert}, "issuer.example", nil, []string{rootPin}, ""},
		{"pinned authority, IP address", []*x509.Certificate{leaf.cert, root.cert}, "127.0.0.1", nil, []string{rootPin}, ""},
		{"one of several pins", []*x509.Certificate{leaf.cert, root.cert}, "issuer.example", nil, []string{otherPin, rootPin}, ""},
		{"pinned intermediate", []*x509.Certificate{interLeaf.cert, inter.cert, root.cert}, "issuer.example", nil, []string{interPin}, ""},
		{"pinned root above an intermediate", []*x509.Certificate{interLeaf.cert, inter.cert, root.cert}, "issuer.example", nil, []string{rootPin}, ""},
		{"roots, no pins", []*x509.Certificate{leaf.cert}, "issuer.example", pool(root.cert), nil, ""},
		{"roots, no pins, chain with the root", []*x509.Certificate{leaf.cert, root.cert}, "127.0.0.1", pool(root.cert), nil, ""},
		{"roots and a matching pin", []*x509.Certificate{leaf.cert}, "issuer.example", pool(root.cert), []string{rootPin}, ""},

		{"wrong pin", []*x509.Certificate{leaf.cert, root.cert}, "issuer.example", nil, []string{otherPin}, "presented no pinned authority (pins " + otherPin + "): the pin must be the ca_pin that mwi-issuer ca prints"},
		{"pin, authority not presented", []*x509.Certificate{leaf.cert}, "issuer.example", nil, []string{rootPin}, "pinned authority"},
		{"wrong hostname", []*x509.Certificate{leaf.cert, root.cert}, "other.example", nil, []string{rootPin}, "other.example"},
		{"wrong IP address", []*x509.Certificate{leaf.cert, root.cert}, "127.0.0.2", nil, []string{rootPin}, "127.0.0.2"},
		{"wrong hostname with roots", []*x509.Certificate{leaf.cert}, "other.example", pool(root.cert), nil, "other.example"},
		{"roots do not hold the authority", []*x509.Certificate{leaf.cert, root.cert}, "issuer.example", pool(otherRoot.cert), nil, "unknown authority"},
		{"roots and a pin not in the chain", []*x509.Certificate{leaf.cert}, "issuer.example", pool(root.cert), []string{otherPin}, "no pinned key (pins " + otherPin + "): the pin must be the ca_pin that mwi-issuer ca prints"},
		{"no roots, no pins", []*x509.Certificate{leaf.cert, root.cert}, "issuer.example", nil, nil, "unknown authority"},
		{"nothing presented", nil, "issuer.example", nil, []string{rootPin}, "no certificate"},
		{"client certificate", []*x509.Certificate{clientLeaf.cert, root.cert}, "issuer.example", nil, []string{rootPin}, "usage"},
		{"expired", []*x509.Certificate{expired.cert, root.cert}, "issuer.example", nil, []string{rootPin}, "expired"},
		{"pinned certificate appended to a foreign chain", []*x509.Certificate{evilLeaf.cert, evil.cert, root.cert}, "issuer.example", nil, []string{rootPin}, "pinned authority"},
		{"foreign chain, roots and pin", []*x509.Certificate{evilLeaf.cert, evil.cert}, "issuer.example", pool(root.cert), []string{rootPin}, "unknown authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tlspin.Verify(tc.presented, tc.host, tc.roots, tc.pins)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("Verify: %v", err)
			case tc.wantErr != "" && err == nil:
				t.Errorf("Verify succeeded, want an error containing %q", tc.wantErr)
			case tc.wantErr != "" && !strings.Contains(err.Error(), tc.wantErr):
				t.Errorf("Verify: %v, want an error containing %q", err, tc.wantErr)
			}
		})
	}
}
