package server

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/sshaccess"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/store"
)

// get fetches url with an If-None-Match of etag, if not empty.
func get(t *testing.T, c *http.Client, url, etag string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if etag != "" {
		req.Header.Set("If-None-Match", etag)
	}
	res, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

// TestLockRoutes serves GET /v1/locks and GET /v1/ssh/krl over HTTPS from a
// real authority: the lock list needs a bot identity, the KRL does not;
// both answer 304 to their current ETag and change when a lock is added
// through the admin routes.
func TestLockRoutes(t *testing.T) {
	auth, _ := testAuthority(t)
	ctx := context.Background()
	srv := tlsServer(t, auth.CA, publicRoutes(auth, nil, auth.Audit, discardLog()))
	admin := unixServer(t, adminRoutes(auth, nil, auth.Audit, discardLog()))
	host := tlsClient(t, auth.CA, identityCert(t, auth.CA, ca.Identity{Bot: "ci", Instance: "host-1", Generation: 1}))
	anonymous := tlsClient(t, auth.CA)
	if err := auth.Store.CreateInstance(ctx, store.Instance{ID: "abc", Bot: "ci", Generation: 1, Created: time.Now()}); err != nil {
		t.Fatal(err)
	}

	res, body := get(t, anonymous, srv.URL+"/v1/locks", "")
	errorBody(t, res, body, http.StatusUnauthorized, api.CodeUnauthenticated)

	res, body = get(t, host, srv.URL+"/v1/locks", "")
	var list api.LockList
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &list) != nil || list.Locks == nil || len(list.Locks) != 0 || list.Now.IsZero() {
		t.Fatalf("GET /v1/locks = %d %s", res.StatusCode, body)
	}
	listTag := res.Header.Get("ETag")
	if res, body := get(t, host, srv.URL+"/v1/locks", listTag); res.StatusCode != http.StatusNotModified || len(body) != 0 {
		t.Errorf("GET /v1/locks with its ETag = %d %s, want 304", res.StatusCode, body)
	}

	res, krl0 := get(t, anonymous, srv.URL+"/v1/ssh/krl", "")
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/octet-stream" || !bytes.HasPrefix(krl0, []byte("SSHKRL\n\x00")) {
		t.Fatalf("GET /v1/ssh/krl = %d %q %q", res.StatusCode, res.Header.Get("Content-Type"), krl0)
	}
	krlTag := res.Header.Get("ETag")
	if res, _ := get(t, anonymous, srv.URL+"/v1/ssh/krl", krlTag); res.StatusCode != http.StatusNotModified {
		t.Errorf("GET /v1/ssh/krl with its ETag = %d, want 304", res.StatusCode)
	}

	// Lock the instance through the route of mwi-issuer lock add.
	res, body, err := post(t, admin, "http://mwi/admin/v1/locks", api.LockRequest{LockTarget: api.LockTarget{Instance: "abc"}, Reason: "stolen", TTLSeconds: 3600})
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("lock add: %v %d %s", err, res.StatusCode, body)
	}
	var added api.Lock
	if err := json.Unmarshal(body, &added); err != nil || added.Instance != "abc" || added.Bot != "ci" || added.Expires.IsZero() {
		t.Errorf("lock add answered %s", body)
	}

	res, body = get(t, host, srv.URL+"/v1/locks", listTag)
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &list) != nil || len(list.Locks) != 1 || list.Locks[0].Instance != "abc" {
		t.Errorf("GET /v1/locks after the lock = %d %s", res.StatusCode, body)
	}
	res, krl1 := get(t, anonymous, srv.URL+"/v1/ssh/krl", krlTag)
	if res.StatusCode != http.StatusOK || !bytes.Contains(krl1, []byte(sshaccess.KeyID("ci", "abc"))) {
		t.Errorf("GET /v1/ssh/krl after the lock = %d, without the instance's key ID", res.StatusCode)
	}
	checkKRL(t, auth.CA.SSHUserCA(), krl1, "bot=ci instance=abc")

	// Remove it through the route of mwi-issuer lock rm; again is not_found.
	res, body, err = post(t, admin, "http://mwi/admin/v1/locks/remove", api.LockTarget{Instance: "abc"})
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("lock rm: %v %d %s", err, res.StatusCode, body)
	}
	res, body, _ = post(t, admin, "http://mwi/admin/v1/locks/remove", api.LockTarget{Instance: "abc"})
	errorBody(t, res, body, http.StatusNotFound, api.CodeNotFound)
	for _, tc := range []struct {
		name, path string
		req        any
	}{
		{"two targets", "/admin/v1/locks", api.LockRequest{LockTarget: api.LockTarget{Bot: "ci", Token: "x"}, Reason: "r"}},
		{"negative ttl", "/admin/v1/locks", api.LockRequest{LockTarget: api.LockTarget{Bot: "ci"}, Reason: "r", TTLSeconds: -1}},
		{"path and body target", "/admin/v1/bots/ci/lock", api.LockRequest{LockTarget: api.LockTarget{Token: "x"}, Reason: "r"}},
		{"unknown field", "/admin/v1/locks/remove", map[string]string{"bot": "ci", "reason": "r"}},
	} {
		res, body, _ := post(t, admin, "http://mwi"+tc.path, tc.req)
		if res.StatusCode != http.StatusBadRequest {
			t.Errorf("%s: %d %s, want 400", tc.name, res.StatusCode, body)
		}
	}
}

// checkKRL writes data and has ssh-keygen -Q -l list it: it must parse,
// and revoke the key ID under the CA's key. It checks nothing without
// ssh-keygen (the KRL format itself is tested in internal/krl).
func checkKRL(t *testing.T, caKey ssh.PublicKey, data []byte, revoked string) {
	t.Helper()
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		return
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "krl")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ssh-keygen", "-Q", "-l", "-f", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), revoked) || !strings.Contains(string(out), ssh.FingerprintSHA256(caKey)) {
		t.Errorf("ssh-keygen -Q -l: %v\n%s", err, out)
	}
}

// TestSSHRefusalRoute checks that a refusal report needs a bot identity,
// is bounded like other bodies, and reaches the audit log.
func TestSSHRefusalRoute(t *testing.T) {
	auth, auditLog := testAuthority(t)
	srv := tlsServer(t, auth.CA, publicRoutes(auth, nil, auth.Audit, discardLog()))
	host := tlsClient(t, auth.CA, identityCert(t, auth.CA, ca.Identity{Bot: "ci", Instance: "host-1", Generation: 1}))
	r := api.SSHRefusal{Login: "root", Bot: "ci", Instance: "abc", Serial: "7", Reason: "bot ci is locked", Host: "db-1"}

	res, body, err := post(t, tlsClient(t, auth.CA), srv.URL+"/v1/audit/ssh-refusal", r)
	if err != nil {
		t.Fatal(err)
	}
	errorBody(t, res, body, http.StatusUnauthorized, api.CodeUnauthenticated)

	res, body, err = post(t, host, srv.URL+"/v1/audit/ssh-refusal", r)
	if err != nil || res.StatusCode != http.StatusNoContent {
		t.Fatalf("report: %v %d %s", err, res.StatusCode, body)
	}
	if !strings.Contains(auditLog.String(), `"event":"ssh_refused","outcome":"denied"`) || !strings.Contains(auditLog.String(), `"reporter_instance":"host-1"`) {
		t.Errorf("audit log:\n%s", auditLog.String())
	}

	long := r
	long.Reason = strings.Repeat("x", 2000)
	res, body, _ = post(t, host, srv.URL+"/v1/audit/ssh-refusal", long)
	errorBody(t, res, body, http.StatusBadRequest, api.CodeBadRequest)
}

// TestAnonymousKRLFetchesLimited checks that KRL fetches, which need no
// identity, count as the gate's anonymous connections: one source holds
// no more of them than MaxAnonymousPerSource, however many it opens.
func TestAnonymousKRLFetchesLimited(t *testing.T) {
	a := testCA(t)
	lim := Limits{MaxConns: 16, MaxAnonymous: 8, MaxAnonymousPerSource: 2}
	addr, g := gated(t, a, publicRoutes(&fakeJoiner{}, nil, discardAudit(), discardLog()), lim, nil, discardLog())
	roots := x509.NewCertPool()
	roots.AddCert(a.TLSCA())
	fetch := func() {
		c, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: roots, NextProtos: []string{"http/1.1"}})
		if err != nil {
			return // closed while full: also a refusal
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(20 * time.Second))
		io.WriteString(c, "GET /v1/ssh/krl HTTP/1.1\r\nHost: mwi\r\n\r\n")
		if res, err := http.ReadResponse(bufio.NewReader(c), nil); err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
		}
		c.SetDeadline(time.Time{})
	}
	for range 5 {
		fetch()
	}
	eventually(t, "at most two anonymous connections from one source", func() bool {
		_, _, anon := g.counts()
		return anon <= 2
	})
}
