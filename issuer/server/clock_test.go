package server

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/mwi-project/mwi/issuer/ca"
)

// TestClientCertificatesAtTheStoresClock checks that the HTTPS API
// verifies client certificates at the time that decides validity, the
// store's (on PostgreSQL, the database's), and not at the local clock:
// on a replica whose clock is behind the database's, an identity expired
// by the database's clock must not be taken, and one the issuers signed
// just now must be.
func TestClientCertificatesAtTheStoresClock(t *testing.T) {
	a := testCA(t)
	const skew = 2 * time.Hour // the store's clock is ahead of this replica's
	storeNow := func() time.Time { return time.Now().Add(skew) }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.VerifiedChains) == 0 {
			http.Error(w, "no identity", http.StatusUnauthorized)
		}
	})
	refused := make(chan error, 10)
	g := newGate(ln, tlsConfig(a, storeNow), Limits{}, func(_ string, err error) { refused <- err }, a.AdminName, discardLog())
	srv := newPublicServer(h, g, Limits{}, discardLog())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(g) }()
	t.Cleanup(func() {
		shutdown(time.Second, discardLog(), srv)
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})

	get := func(cert tls.Certificate) error {
		roots := x509.NewCertPool()
		roots.AddCert(a.TLSCA())
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12,
			// The serving certificate is checked at the test's clock.
			Time: storeNow,
		}}}
		defer c.CloseIdleConnections()
		res, err := c.Get("https://" + ln.Addr().String() + "/")
		if err != nil {
			return err
		}
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return errors.New(res.Status)
		}
		return nil
	}
	local := time.Now()
	// Valid at the local clock, expired at the store's.
	if err := get(identityCertFor(t, a, ca.Identity{Bot: "ci", Instance: "i1", Generation: 1}, local.Add(-time.Minute), local.Add(time.Hour))); err == nil {
		t.Error("an identity expired at the store's clock (valid at the local one) was taken")
	}
	// Signed just now by an issuer at the store's clock.
	if err := get(identityCertFor(t, a, ca.Identity{Bot: "ci", Instance: "i1", Generation: 1}, local.Add(skew-time.Minute), local.Add(skew+time.Hour))); err != nil {
		t.Errorf("an identity valid at the store's clock was refused: %v", err)
	}
}
