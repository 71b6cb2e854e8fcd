package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/resource"
)

// TestAdminPathTricks asks for the admin API over HTTPS by paths that a
// router or a proxy might read as /admin/v1/...: without an admin identity,
// none of them is served.
func TestAdminPathTricks(t *testing.T) {
	s, _, _ := resourceServer(t)
	a := s.auth.CA
	remote := &remoteAdmin{routes: adminAPI(s.auth, s, s.auth.Audit, discardLog()), name: a.AdminName}
	addr, _ := gated(t, a, publicRoutes(s.auth, remote, s.auth.Audit, discardLog()), Limits{}, auditRefused(s.auth.Audit), discardLog())
	bot := identityCert(t, a, ca.Identity{Bot: "ci", Instance: "i1", Generation: 1})
	for _, who := range []struct {
		name  string
		certs []tls.Certificate
	}{{"no certificate", nil}, {"bot identity", []tls.Certificate{bot}}} {
		c := tlsClient(t, a, who.certs...)
		for _, p := range []string{
			"//admin/v1/resources",
			"/./admin/v1/resources",
			"/v1/../admin/v1/resources",
			"/%61dmin/v1/resources",
			"/admin%2Fv1%2Fresources",
			"/ADMIN/v1/resources",
			"/admin/v1/resources/",
			"/admin/v1//resources",
			"/admin/v1/tokens?x=/admin",
			"/v1/renew/../../admin/v1/tokens",
		} {
			u, err := url.Parse("https://" + addr + p)
			if err != nil {
				t.Fatal(err)
			}
			for _, method := range []string{http.MethodGet, http.MethodPost} {
				req := &http.Request{Method: method, URL: u, Header: http.Header{}, Host: addr}
				res, err := c.Do(req)
				if err != nil {
					t.Fatalf("%s %s: %v", method, p, err)
				}
				res.Body.Close()
				if res.StatusCode < 400 {
					t.Errorf("%s: %s %s = %s, want a refusal", who.name, method, p, res.Status)
				}
			}
		}
	}
}

// TestForeignClientCertificates presents certificates that look like an
// admin identity without the admin CA's signature, or from the issuer's
// other authorities: the handshake refuses each.
func TestForeignClientCertificates(t *testing.T) {
	s, _, _ := resourceServer(t)
	a := s.auth.CA
	remote := &remoteAdmin{routes: adminAPI(s.auth, s, s.auth.Audit, discardLog()), name: a.AdminName}
	addr, _ := gated(t, a, publicRoutes(s.auth, remote, s.auth.Audit, discardLog()), Limits{}, auditRefused(s.auth.Audit), discardLog())
	now := time.Now()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// A self-signed CA that copies the admin CA's subject, and a leaf
	// under it shaped as an admin identity.
	fakeCA := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: a.AdminCA().Subject, NotBefore: now.Add(-time.Hour),
		NotAfter: now.Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
		SubjectKeyId: a.AdminCA().SubjectKeyId}
	caDER, err := x509.CreateCertificate(rand.Reader, fakeCA, fakeCA, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	fakeCAcert, _ := x509.ParseCertificate(caDER)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "eve", Organization: []string{"mwi admin"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		KeyUsage: x509.KeyUsageDigitalSignature, URIs: []*url.URL{{Scheme: "mwi", Host: "admin", Path: "/eve"}},
		AuthorityKeyId: a.AdminCA().SubjectKeyId}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, fakeCAcert, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	selfSigned := leafTmpl
	selfSigned.Subject = a.AdminCA().Subject
	ssDER, err := x509.CreateCertificate(rand.Reader, selfSigned, selfSigned, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		cert tls.Certificate
	}{
		{"leaf under a CA copying the admin CA's subject", tls.Certificate{Certificate: [][]byte{leafDER, caDER}, PrivateKey: key}},
		{"self-signed with the admin CA's subject", tls.Certificate{Certificate: [][]byte{ssDER}, PrivateKey: key}},
		{"not yet valid admin identity", adminCert(t, a, "alice", now.Add(time.Hour), now.Add(2*time.Hour))},
	} {
		c := tlsClient(t, a, tc.cert)
		res, err := c.Get("https://" + addr + "/admin/v1/resources")
		if err == nil {
			res.Body.Close()
			t.Errorf("%s: %s, want the handshake refused", tc.name, res.Status)
		}
	}
}

// TestResourceNamesAttack gives names that would break a store key or a
// path: each is refused and nothing is stored.
func TestResourceNamesAttack(t *testing.T) {
	s, sock, _ := resourceServer(t)
	for _, name := range []string{"a/b", "..", "", strings.Repeat("a", 10<<10), "rôle", "a\x00b", "A", "a b", "-a", `"a"`, "a%2Fb"} {
		doc := "kind: role\nversion: v1\nmetadata: {name: " + yamlQuote(name) + "}\nspec:\n  allow: {logins: [x]}\n"
		if status, body := call(t, sock, http.MethodPost, "/admin/v1/resources", api.CreateResourcesRequest{File: "r.yaml", Data: doc}, nil); status != http.StatusBadRequest {
			t.Errorf("create role %q: %d %s, want 400", name, status, body)
		}
		p := "/admin/v1/resources/role/" + url.PathEscape(name)
		if status, body := call(t, sock, http.MethodDelete, p, nil, nil); status < 400 {
			t.Errorf("rm role %q: %d %s, want a refusal", name, status, body)
		}
	}
	stored, err := s.auth.Store.Resources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(stored) != 0 {
		t.Errorf("stored %v", stored)
	}
	// Two documents of one file with one name.
	two := "kind: role\nversion: v1\nmetadata: {name: dup}\nspec:\n  allow: {logins: [x]}\n---\nkind: role\nversion: v7\nmetadata: {name: dup}\nspec:\n  allow: {logins: [y]}\n"
	if status, body := call(t, sock, http.MethodPost, "/admin/v1/resources", api.CreateResourcesRequest{File: "r.yaml", Data: two}, nil); status != http.StatusBadRequest || !strings.Contains(body, "r.yaml:") {
		t.Errorf("create two documents of one name: %d %s, want 400 naming the file", status, body)
	}
	// A body over the bound, and a YAML alias bomb under it.
	big := "kind: role\nversion: v1\nmetadata: {name: big}\nspec:\n  allow: {logins: [x]}\n# " + strings.Repeat("x", 3<<20) + "\n"
	if status, body := call(t, sock, http.MethodPost, "/admin/v1/resources", api.CreateResourcesRequest{File: "r.yaml", Data: big}, nil); status < 400 {
		t.Errorf("create 3 MB: %d %.200s, want a refusal", status, body)
	}
	bomb := "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]\nkind: role\nversion: v1\nmetadata: {name: bomb}\nspec:\n  allow: {logins: [x]}\n"
	if status, body := call(t, sock, http.MethodPost, "/admin/v1/resources", api.CreateResourcesRequest{File: "r.yaml", Data: bomb}, nil); status != http.StatusBadRequest {
		t.Errorf("create a YAML bomb: %d %.300s, want 400", status, body)
	}
}

func yamlQuote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\x00", `\0`).Replace(s) + `"`
}

// TestTokenRemoveAuditsNoSecret removes one-time tokens by their secret,
// and by secrets and IDs that match none or several: the audit log never
// holds any part of a secret.
func TestTokenRemoveAuditsNoSecret(t *testing.T) {
	s, sock, auditLog := resourceServer(t)
	bot := s.auth.Resources().Bots()[0].Name
	var secrets []string
	for range 2 {
		var tok api.CreateTokenResponse
		if status, body := call(t, sock, http.MethodPost, "/admin/v1/tokens", api.CreateTokenRequest{Bot: bot, TTLSeconds: 600}, &tok); status >= 300 {
			t.Fatalf("create token: %d %s", status, body)
		}
		secrets = append(secrets, tok.Token)
	}
	gone := strings.Repeat("0123456789abcdef", 4)
	for _, tc := range []struct {
		id     string
		status int
	}{
		{secrets[0], http.StatusNoContent},
		{secrets[0], http.StatusNotFound}, // already removed
		{gone, http.StatusNotFound},
		{secrets[1][:20], http.StatusNotFound}, // the start of a secret is not an ID
	} {
		if status, body := call(t, sock, http.MethodDelete, "/admin/v1/tokens/"+tc.id, nil, nil); status != tc.status {
			t.Errorf("rm %.8s…: %d %s, want %d", tc.id, status, body, tc.status)
		}
	}
	for _, secret := range append(secrets, gone) {
		if log := auditLog.String(); strings.Contains(log, secret[:8]) {
			t.Errorf("the audit log holds the start of secret %.4s…:\n%s", secret, log)
		}
	}
}

// TestStoredDocumentBrokenByDirectory stores a bot that needs a role of
// the resource directory, then removes that role from the directory: the
// change is refused and the running set kept; a start with the two is
// refused with a message that says how to recover.
func TestStoredDocumentBrokenByDirectory(t *testing.T) {
	s, sock, _ := resourceServer(t)
	bot := "kind: bot\nversion: v1\nmetadata: {name: stored}\nspec: {roles: [deploy]}\n"
	if status, body := call(t, sock, http.MethodPost, "/admin/v1/resources", api.CreateResourcesRequest{File: "b.yaml", Data: bot}, nil); status != http.StatusOK {
		t.Fatalf("create: %d %s", status, body)
	}
	if err := os.WriteFile(filepath.Join(s.cfg.ResourcesDir, "base.yaml"), []byte("kind: role\nversion: v1\nmetadata: {name: other}\nspec: {}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.reload(0); err == nil {
		t.Fatal("the directory change was taken")
	}
	if _, ok := s.auth.Resources().Role("deploy"); !ok {
		t.Error("the running set lost role deploy")
	}
	dir, err := loadResources(s.cfg, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.loadAll(t.Context(), dir)
	t.Logf("start: %v", err)
	if err == nil || !strings.Contains(err.Error(), "store:bot/stored") {
		t.Errorf("start: %v, want the stored document named", err)
	}
}

// TestBotEditInjection gives bots add and bots update values that would
// add a document or a field if the bot's document were written by hand:
// each is refused or stored as one value of one document.
func TestBotEditInjection(t *testing.T) {
	s, sock, _ := resourceServer(t)
	inject := []string{"a\n---\nkind: role\nversion: v1\nmetadata: {name: evil}\nspec: {allow: {logins: [root]}}", "x\nspec: {roles: [deploy]}", "{{external.logins}}", "a: b", "- root", "*", "root\x00"}
	for _, v := range inject {
		call(t, sock, http.MethodPost, "/admin/v1/bots", api.AddBotRequest{Name: "b1", Roles: []string{"deploy"}, Logins: []string{v}}, nil)
		call(t, sock, http.MethodPost, "/admin/v1/bots", api.AddBotRequest{Name: "b2", Roles: []string{v}}, nil)
		call(t, sock, http.MethodPost, "/admin/v1/bots", api.AddBotRequest{Name: v, Roles: []string{"deploy"}}, nil)
	}
	if status, body := call(t, sock, http.MethodPost, "/admin/v1/bots", api.AddBotRequest{Name: "b3", Roles: []string{"deploy"}}, nil); status >= 300 {
		t.Fatalf("add b3: %d %s", status, body)
	}
	for _, v := range inject {
		call(t, sock, http.MethodPost, "/admin/v1/bots/b3/update", api.UpdateBotRequest{AddLogins: []string{v}}, nil)
		call(t, sock, http.MethodPost, "/admin/v1/bots/b3/update", api.UpdateBotRequest{AddRoles: []string{v}}, nil)
	}
	set := s.auth.Resources()
	if _, ok := set.Role("evil"); ok {
		t.Fatal("a role was injected")
	}
	stored, err := s.auth.Store.Resources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range stored {
		docs, err := resource.SplitDocuments([]byte(r.Source))
		if err != nil || len(docs) != 1 {
			t.Errorf("stored %s is %d documents (%v):\n%s", r.Key(), len(docs), err, r.Source)
		}
	}
	for _, b := range set.Bots() {
		for _, l := range b.Traits["logins"] {
			if l != "" && strings.ContainsAny(l, "\n\x00{") {
				t.Errorf("bot %s has login %q", b.Name, l)
			}
		}
	}
}
