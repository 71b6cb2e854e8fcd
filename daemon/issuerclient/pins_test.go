package issuerclient

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/config"
	"github.com/mwi-project/mwi/internal/tlspin"
)

// authorityAndServing makes a CA and a serving certificate from it for
// 127.0.0.1.
func authorityAndServing(t *testing.T, name string) (*x509.Certificate, tls.Certificate) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "issuer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		t.Fatal(err)
	}
	return caCert, tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key}
}

// TestLearnedPins checks that a client that pins the issuer follows the
// pins the issuer sends: it keeps talking to the issuer when its serving
// certificate moves to the next authority, and stops trusting the old one
// once the issuer no longer sends its pin.
func TestLearnedPins(t *testing.T) {
	oldCA, oldServing := authorityAndServing(t, "old")
	newCA, newServing := authorityAndServing(t, "new")
	var mu sync.Mutex
	serving, pins := oldServing, []string{tlspin.Of(oldCA)}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		json.NewEncoder(w).Encode(api.Credentials{Bot: "b", IssuerCAPins: pins})
	}))
	srv.TLS = &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		mu.Lock()
		defer mu.Unlock()
		return &tls.Config{Certificates: []tls.Certificate{serving}}, nil
	}}
	srv.StartTLS()
	defer srv.Close()
	c, err := New(config.Issuer{Address: strings.TrimPrefix(srv.URL, "https://"), CAPins: []string{tlspin.Of(oldCA)}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	set := func(s tls.Certificate, p ...string) {
		mu.Lock()
		defer mu.Unlock()
		serving, pins = s, p
	}
	renew := func() error {
		_, err := c.Renew(context.Background(), nil, api.RenewRequest{})
		return err
	}
	steps := []struct {
		name    string
		serving tls.Certificate
		pins    []string
		ok      bool
	}{
		{"before the rotation", oldServing, []string{tlspin.Of(oldCA)}, true},
		{"init publishes the next pin", oldServing, []string{tlspin.Of(oldCA), tlspin.Of(newCA)}, true},
		{"update_servers serves from the next", newServing, []string{tlspin.Of(oldCA), tlspin.Of(newCA)}, true},
		{"standby retires the old", newServing, []string{tlspin.Of(newCA)}, true},
		{"the old authority is trusted no more", oldServing, []string{tlspin.Of(oldCA)}, false},
	}
	for _, st := range steps {
		set(st.serving, st.pins...)
		if err := renew(); (err == nil) != st.ok {
			t.Fatalf("%s: renew: %v; want success %v", st.name, err, st.ok)
		}
	}
}

// TestPinsNotLearnedWithCAFile checks that a client that checks the
// issuer with a CA file takes no pins from it.
func TestPinsNotLearnedWithCAFile(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(api.Credentials{Bot: "b", IssuerCAPins: []string{"sha256:AAAA"}})
	}))
	defer srv.Close()
	c := newTestClient(t, srv)
	for range 2 {
		if _, err := c.Renew(context.Background(), nil, api.RenewRequest{}); err != nil {
			t.Fatal(err)
		}
	}
}

// TestLearnedPinsRefused checks that an answer cannot leave the client
// with pins that do not include the one it verified the issuer with, nor
// with malformed pins or more than an issuer sends: the pins held stay,
// and the issuer they verified is still reached.
func TestLearnedPinsRefused(t *testing.T) {
	oldCA, oldServing := authorityAndServing(t, "old")
	otherCA, _ := authorityAndServing(t, "other")
	many := []string{tlspin.Of(oldCA)}
	for i := range 4 {
		c, _ := authorityAndServing(t, fmt.Sprint("extra", i))
		many = append(many, tlspin.Of(c))
	}
	for _, tc := range []struct {
		name string
		pins []string
	}{
		{"none", nil},
		{"without the pin that verified the connection", []string{tlspin.Of(otherCA)}},
		{"malformed", []string{tlspin.Of(oldCA), "sha256:AAAA"}},
		{"not a pin", []string{tlspin.Of(oldCA), "md5:" + strings.Repeat("A", 44)}},
		{"empty pin", []string{tlspin.Of(oldCA), ""}},
		{"too many", many},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			pins := tc.pins
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				json.NewEncoder(w).Encode(api.Credentials{Bot: "b", IssuerCAPins: pins})
			}))
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{oldServing}}
			srv.StartTLS()
			defer srv.Close()
			c, err := New(config.Issuer{Address: strings.TrimPrefix(srv.URL, "https://"), CAPins: []string{tlspin.Of(oldCA)}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				if _, err := c.Renew(context.Background(), nil, api.RenewRequest{}); err != nil {
					t.Fatalf("renewal %d after the issuer sent %q: %v", i+1, tc.pins, err)
				}
			}
			if got := c.pins([]string{tlspin.Of(oldCA)}); !slices.Equal(got, []string{tlspin.Of(oldCA)}) {
				t.Errorf("pins held after the issuer sent %q: %q; want the configured pin only", tc.pins, got)
			}
		})
	}
}
