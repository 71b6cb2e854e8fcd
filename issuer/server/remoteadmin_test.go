package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/logtest"
	"github.com/mwi-project/mwi/issuer/ca"
)

// adminCert signs an admin identity named name, valid from notBefore to
// notAfter, for a new key, as a TLS client certificate.
func adminCert(t *testing.T, a *ca.Authority, name string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.SignAdmin(csr, name, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
}

// TestRemoteAdmin serves the admin API over HTTPS as Run does: an admin
// identity issued over the admin socket administers the issuer; a bot
// identity, no certificate and an expired admin identity are refused and
// audited.
func TestRemoteAdmin(t *testing.T) {
	s, sock, auditLog := resourceServer(t)
	a := s.auth.CA

	// Issue an admin identity over the socket, as mwi-issuer admin issue
	// does: the key stays here.
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	csrPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}))
	var issued api.IssueAdminResponse
	if status, body := call(t, sock, http.MethodPost, "/admin/v1/admins", api.IssueAdminRequest{Name: "alice", CSR: csrPEM}, &issued); status != http.StatusCreated {
		t.Fatalf("issue: %d %s", status, body)
	}
	block, _ := pem.Decode([]byte(issued.Certificate))
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > DefaultAdminTTL+2*time.Minute {
		t.Errorf("admin identity lives %s, want the default %s", life, DefaultAdminTTL)
	}
	if !strings.Contains(issued.IssuerCA, "BEGIN CERTIFICATE") {
		t.Errorf("issuer CA = %q", issued.IssuerCA)
	}
	if log := auditLog.String(); !strings.Contains(log, `"event":"admin.issue"`) || !strings.Contains(log, `"name":"alice"`) || !strings.Contains(log, `"uid":`) {
		t.Errorf("issuance not audited with name and uid:\n%s", log)
	}
	for _, bad := range []api.IssueAdminRequest{
		{Name: "", CSR: csrPEM},
		{Name: "bob smith", CSR: csrPEM},
		{Name: "bob", CSR: "nonsense"},
		{Name: "bob", CSR: csrPEM, TTLSeconds: int64(ca.MaxAdminLifetime/time.Second) + 1},
		{Name: "bob", CSR: csrPEM, TTLSeconds: 1 << 62}, // overflows as a time.Duration
		{Name: "bob", CSR: csrPEM, TTLSeconds: -1},
	} {
		if status, body := call(t, sock, http.MethodPost, "/admin/v1/admins", bad, nil); status != http.StatusBadRequest {
			t.Errorf("issue %+v: %d %s, want 400", bad, status, body)
		}
	}
	admin := tls.Certificate{Certificate: [][]byte{leaf.Raw}, PrivateKey: key, Leaf: leaf}

	remote := &remoteAdmin{routes: adminAPI(s.auth, s, s.auth.Audit, discardLog()), name: a.AdminName}
	addr, _ := gated(t, a, publicRoutes(s.auth, remote, s.auth.Audit, discardLog()), Limits{}, auditRefused(s.auth.Audit), discardLog())
	base := "https://" + addr

	role := "kind: role\nversion: v1\nmetadata: {name: remote}\nspec:\n  allow: {logins: [remote]}\n"
	t.Run("admin identity", func(t *testing.T) {
		c := tlsClient(t, a, admin)
		if status, body := call(t, c, http.MethodPost, base+"/admin/v1/resources", api.CreateResourcesRequest{File: "r.yaml", Data: role}, nil); status != http.StatusOK {
			t.Fatalf("create over HTTPS: %d %s", status, body)
		}
		var got api.Resources
		if status, body := call(t, c, http.MethodGet, base+"/admin/v1/resources?kind=role&name=remote", nil, &got); status != http.StatusOK {
			t.Fatalf("get over HTTPS: %d %s", status, body)
		}
		if log := auditLog.String(); !strings.Contains(log, `"event":"resource.create"`) || !strings.Contains(log, `"admin":"alice"`) {
			t.Errorf("create over HTTPS not audited with the admin's name:\n%s", log)
		}
		// An admin identity is not a bot's.
		if status, body := call(t, c, http.MethodPost, base+"/v1/renew", api.RenewRequest{}, nil); status != http.StatusUnauthorized {
			t.Errorf("renew with an admin identity: %d %s, want 401", status, body)
		}
		// Nor can it make more admin identities.
		if status, body := call(t, c, http.MethodPost, base+"/admin/v1/admins", api.IssueAdminRequest{Name: "mallory", CSR: csrPEM}, nil); status != http.StatusForbidden {
			t.Errorf("issue over HTTPS: %d %s, want 403", status, body)
		}
	})

	for _, tc := range []struct {
		name   string
		certs  []tls.Certificate
		status int
	}{
		{"bot identity", []tls.Certificate{identityCert(t, a, ca.Identity{Bot: "ci", Instance: "i1", Generation: 1})}, http.StatusForbidden},
		{"no certificate", nil, http.StatusUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := tlsClient(t, a, tc.certs...)
			before := strings.Count(auditLog.String(), `"event":"admin","outcome":"denied"`)
			for _, r := range []struct{ method, path string }{
				{http.MethodGet, "/admin/v1/resources"},
				{http.MethodPost, "/admin/v1/tokens"},
				{http.MethodGet, "/admin/v1/no-such-route"},
			} {
				if status, body := call(t, c, r.method, base+r.path, struct{}{}, nil); status != tc.status {
					t.Errorf("%s %s: %d %s, want %d", r.method, r.path, status, body, tc.status)
				}
			}
			if after := strings.Count(auditLog.String(), `"event":"admin","outcome":"denied"`); after != before+3 {
				t.Errorf("%d refusals audited, want 3:\n%s", after-before, auditLog)
			}
		})
	}

	t.Run("expired admin identity", func(t *testing.T) {
		now := time.Now()
		c := tlsClient(t, a, adminCert(t, a, "alice", now.Add(-2*time.Hour), now.Add(-time.Hour)))
		res, err := c.Get(base + "/admin/v1/resources")
		if err == nil {
			res.Body.Close()
			t.Fatalf("expired admin identity: %s, want the handshake refused", res.Status)
		}
		eventually(t, "the refusal audited", func() bool {
			return strings.Contains(auditLog.String(), `"event":"tls","outcome":"denied"`)
		})
	})
}

// TestBotIdentityIsNeverAdmin checks the line between the two authorities:
// a bot identity, whatever it names, is not an admin identity, and an
// admin identity is not a bot's.
func TestBotIdentityIsNeverAdmin(t *testing.T) {
	a := testCA(t)
	for _, id := range []ca.Identity{{Bot: "ci", Instance: "i", Generation: 1}, {Bot: "admin", Instance: "admin", Generation: 1}} {
		bot := identityCert(t, a, id)
		chains, err := bot.Leaf.Verify(x509.VerifyOptions{Roots: a.ClientPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		if err != nil {
			t.Fatal(err)
		}
		if name, err := a.AdminName(chains[0]); !errors.Is(err, ca.ErrNotAdmin) {
			t.Errorf("AdminName(bot %s) = %q, %v; want ErrNotAdmin", id.Bot, name, err)
		}
	}
	now := time.Now()
	admin := adminCert(t, a, "alice", now.Add(-time.Minute), now.Add(time.Hour))
	if _, err := admin.Leaf.Verify(x509.VerifyOptions{Roots: a.IdentityPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err == nil {
		t.Error("an admin identity verifies against the bot identity CA")
	}
	if id, err := ca.ParseIdentity(admin.Leaf); err == nil {
		t.Errorf("ParseIdentity(admin) = %+v, want an error", id)
	}
}

// TestAdminConnectionCaps holds connections with admin identities: they
// are held to the per-identity limits as a bot is, under their own name,
// so that an admin neither takes every connection nor counts against a
// bot, nor against the other admins.
func TestAdminConnectionCaps(t *testing.T) {
	a := testCA(t)
	lim := Limits{MaxConns: 16, MaxAnonymous: 4, MaxPerInstance: 2, MaxPerBot: 3}
	var logged logtest.Buffer
	addr, g := gated(t, a, publicRoutes(&fakeJoiner{}, nil, discardAudit(), discardLog()), lim, nil, slog.New(slog.NewTextHandler(&logged, nil)))
	now := time.Now()
	alice, bob := adminCert(t, a, "alice", now.Add(-time.Minute), now.Add(time.Hour)), adminCert(t, a, "bob", now.Add(-time.Minute), now.Add(time.Hour))
	bot := identityCert(t, a, ca.Identity{Bot: "ci", Instance: "i1", Generation: 1})
	held := func(n int, c tls.Certificate) {
		t.Helper()
		total, _, _ := g.counts()
		for range n {
			dialTLS(t, a, addr, c)
		}
		eventually(t, "the connections counted", func() bool {
			now, hs, _ := g.counts()
			return now == total+n && hs == 0
		})
	}
	held(2, alice)
	closedByServer(t, dialTLS(t, a, addr, alice)) // a third of alice's
	held(2, bob)                                  // another admin is not held back
	held(2, bot)                                  // nor is a bot
	if !strings.Contains(logged.String(), `bot="admin alice"`) {
		t.Errorf("the log does not name the admin:\n%s", logged.String())
	}
}
