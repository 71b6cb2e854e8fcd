package server

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/logging"
	"github.com/mwi-project/mwi/internal/unixsock"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/ca"
)

// auditBuffer is an audit log in memory, whose writes can be made to fail.
type auditBuffer struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	fail bool
}

func (b *auditBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fail {
		return 0, syscall.ENOSPC
	}
	return b.buf.Write(p)
}

func (b *auditBuffer) setFail(fail bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.fail = fail
}

// records decodes the audit lines written so far.
func (b *auditBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("audit line is not JSON: %v: %.200q", err, l)
		}
		out = append(out, m)
	}
	return out
}

func (b *auditBuffer) len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Len()
}

func newAuditBuffer() (*audit.Log, *auditBuffer) {
	b := &auditBuffer{}
	l := audit.New(b)
	l.Logger = discardLog()
	return l, b
}

func jsonBody(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestPublicRoutesBounds sends each request field past its bound: the
// request must be refused with a 400 naming the field and its bound,
// before the authority is called, and audited in a bounded record.
func TestPublicRoutesBounds(t *testing.T) {
	a := testCA(t)
	identity := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{identityCert(t, a, ca.Identity{Bot: "ci", Instance: "i1", Generation: 1}).Leaf}}}
	long := func(n int) string { return strings.Repeat("x", n) }
	list := func(n int) []string {
		l := make([]string, n)
		for i := range l {
			l[i] = fmt.Sprint(i)
		}
		return l
	}
	for _, tc := range []struct {
		name, path string
		body       any
		want       string // part of the message
	}{
		{"900 KB token_name in a challenge", "/v1/join/challenge", api.ChallengeRequest{TokenName: long(900 << 10)}, "larger than 4096 bytes"},
		{"long token_name in a challenge", "/v1/join/challenge", api.ChallengeRequest{TokenName: long(254)}, "token_name is 254 bytes long; at most 253"},
		{"900 KB token_name in a join", "/v1/join", api.JoinRequest{JoinMethod: "github", TokenName: long(900 << 10)}, "larger than 65536 bytes"},
		{"token_name", "/v1/join", api.JoinRequest{JoinMethod: "github", TokenName: long(300)}, "token_name is 300 bytes long; at most 253"},
		{"join_method", "/v1/join", api.JoinRequest{JoinMethod: api.JoinMethod(long(254))}, "join_method is 254 bytes long; at most 253"},
		{"token", "/v1/join", api.JoinRequest{JoinMethod: "token", Token: long(1000)}, "token is 1000 bytes long; at most 253"},
		{"id_token", "/v1/join", api.JoinRequest{JoinMethod: "github", IDToken: long(16<<10 + 1)}, "id_token is 16385 bytes long; at most 16384"},
		{"challenge", "/v1/join", api.JoinRequest{JoinMethod: "bound_keypair", Challenge: long(254)}, "challenge is 254 bytes long; at most 253"},
		{"signature", "/v1/join", api.JoinRequest{JoinMethod: "bound_keypair", Signature: long(4<<10 + 1)}, "signature is 4097 bytes long; at most 4096"},
		{"identity_csr", "/v1/join", api.JoinRequest{Keys: api.PublicKeys{IdentityCSR: long(8<<10 + 1)}}, "keys.identity_csr is 8193 bytes long; at most 8192"},
		{"ssh key", "/v1/join", api.JoinRequest{Keys: api.PublicKeys{SSH: long(4<<10 + 1)}}, "keys.ssh is 4097 bytes long; at most 4096"},
		{"a login", "/v1/join", api.JoinRequest{SSHLogins: []string{"deploy", long(254)}}, "ssh_logins[1] is 254 bytes long; at most 253"},
		{"many logins", "/v1/join", api.JoinRequest{SSHLogins: list(65)}, "ssh_logins has 65 elements; at most 64"},
		{"many host keys", "/v1/join", api.JoinRequest{HostKeys: make([]api.HostKeyRequest, 9)}, "host_keys has 9 elements; at most 8"},
		{"host name", "/v1/join", api.JoinRequest{HostKeys: []api.HostKeyRequest{{Names: []string{long(254)}}}}, "host_keys[0].names[0] is 254 bytes long; at most 253"},
		{"kubernetes cluster", "/v1/join", api.JoinRequest{Kubernetes: &api.KubernetesRequest{Clusters: []string{long(254)}}}, "kubernetes.clusters[0] is 254 bytes long; at most 253"},
		{"kubernetes label", "/v1/join", api.JoinRequest{Kubernetes: &api.KubernetesRequest{Labels: []map[string]string{{long(254): "v"}}}}, "kubernetes.labels[0] key is 254 bytes long; at most 253"},
		{"kubernetes csr", "/v1/renew", api.RenewRequest{Kubernetes: &api.KubernetesRequest{CSR: long(8<<10 + 1)}}, "kubernetes.csr is 8193 bytes long; at most 8192"},
		{"renewal host key", "/v1/renew", api.RenewRequest{HostKeys: []api.HostKeyRequest{{PublicKey: long(4<<10 + 1)}}}, "host_keys[0].public_key is 4097 bytes long; at most 4096"},
		{"renewal body", "/v1/renew", api.RenewRequest{Keys: api.PublicKeys{IdentityCSR: long(70 << 10)}}, "larger than 65536 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeJoiner{}
			al, buf := newAuditBuffer()
			req := httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(jsonBody(t, tc.body)))
			req.RemoteAddr = "192.0.2.9:4444"
			req.TLS = identity
			res, body := serve(t, publicRoutes(f, nil, al, discardLog()), req)
			e := errorBody(t, res, body, http.StatusBadRequest, api.CodeBadRequest)
			if !strings.Contains(e.Message, tc.want) {
				t.Errorf("message %q does not contain %q", e.Message, tc.want)
			}
			if joins, renews := f.calls(); joins+renews+len(f.challenges) != 0 {
				t.Error("the authority was called with an oversized request")
			}
			if len(body) > 1024 {
				t.Errorf("the answer is %d bytes long", len(body))
			}
			recs := buf.records(t)
			if len(recs) != 1 || recs[0]["event"] != audit.EventRequest || recs[0]["outcome"] != audit.Denied ||
				recs[0]["path"] != tc.path || recs[0]["reason"] != e.Message || recs[0]["remote"] != "192.0.2.9:4444" {
				t.Errorf("audit = %v, want one request denial with the reason", recs)
			}
			if n := buf.len(); n > 2048 {
				t.Errorf("the audit record is %d bytes long", n)
			}
		})
	}
}

// TestEdgeDenialsAudited shows that requests refused before the
// authority decides are audited with their reason.
func TestEdgeDenialsAudited(t *testing.T) {
	a := testCA(t)
	identity := &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{identityCert(t, a, ca.Identity{Bot: "ci", Instance: "i1", Generation: 1}).Leaf}}}
	serving, err := x509.ParseCertificate(a.ServingCertificate().Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, path, body string
		state            *tls.ConnectionState
		status           int
		reason           string // part of the audited reason
	}{
		{"malformed join", "/v1/join", `{"join_method":`, nil, http.StatusBadRequest, "request body"},
		{"unknown field in a join", "/v1/join", `{"join_method":"token","tokne":"x"}`, nil, http.StatusBadRequest, `unknown field "tokne"`},
		{"unknown field in a renewal", "/v1/renew", `{"ttl_seconds":600,"generation":9}`, identity, http.StatusBadRequest, `unknown field "generation"`},
		{"malformed challenge", "/v1/join/challenge", `[]`, nil, http.StatusBadRequest, "request body"},
		{"renewal without an identity", "/v1/renew", `{"ttl_seconds":600}`, nil, http.StatusUnauthorized, "renewal needs a bot identity certificate"},
		{"renewal with a non-identity certificate", "/v1/renew", `{"ttl_seconds":600}`, &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{serving}}}, http.StatusUnauthorized, "client certificate"},
		{"join with a non-identity certificate", "/v1/join", `{"join_method":"token"}`, &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{serving}}}, http.StatusUnauthorized, "client certificate"},
		{"challenge with a non-identity certificate", "/v1/join/challenge", `{"token_name":"t"}`, &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{serving}}}, http.StatusUnauthorized, "client certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			al, buf := newAuditBuffer()
			req := httptest.NewRequest(http.MethodPost, tc.path, strings.NewReader(tc.body))
			req.TLS = tc.state
			res, body := serve(t, publicRoutes(&fakeJoiner{}, nil, al, discardLog()), req)
			errorBody(t, res, body, tc.status, "")
			recs := buf.records(t)
			if len(recs) != 1 || recs[0]["event"] != audit.EventRequest || recs[0]["outcome"] != audit.Denied || recs[0]["path"] != tc.path {
				t.Fatalf("audit = %v, want one request denial", recs)
			}
			if r, _ := recs[0]["reason"].(string); !strings.Contains(r, tc.reason) {
				t.Errorf("reason %q does not contain %q", r, tc.reason)
			}
		})
	}

	t.Run("admin caller without a peer", func(t *testing.T) {
		al, buf := newAuditBuffer()
		res, body := serve(t, adminRoutes(&fakeAdmin{}, nil, al, discardLog()), httptest.NewRequest(http.MethodPost, "/admin/v1/tokens", strings.NewReader(`{"bot":"ci","ttl_seconds":60}`)))
		errorBody(t, res, body, http.StatusForbidden, api.CodeAccessDenied)
		recs := buf.records(t)
		if len(recs) != 1 || recs[0]["event"] != audit.EventAdmin || recs[0]["outcome"] != audit.Denied || recs[0]["reason"] == "" || recs[0]["path"] != "/admin/v1/tokens" {
			t.Errorf("audit = %v, want one admin denial", recs)
		}
	})
	t.Run("admin caller of another user", func(t *testing.T) {
		curl, err := exec.LookPath("curl")
		if err != nil || os.Geteuid() != 0 {
			t.Skip("needs root and curl, to call the admin socket as another user")
		}
		al, buf := newAuditBuffer()
		// A socket made reachable by mistake: the peer check still refuses,
		// when the caller connects, before it holds one of the places.
		dir := t.TempDir()
		for _, d := range []string{dir, filepath.Dir(dir)} {
			if err := os.Chmod(d, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		path := filepath.Join(dir, "admin.sock")
		ln, err := unixsock.Listen(path, 0o666)
		if err != nil {
			t.Fatal(err)
		}
		f := &fakeAdmin{}
		srv := newAdminServer(adminRoutes(f, nil, al, discardLog()), Limits{})
		capped := adminListener(ln, Limits{MaxAdminConns: 4}, al, discardLog())
		go srv.Serve(capped)
		t.Cleanup(func() { srv.Close() })
		const tries = 3
		for range tries {
			cmd := exec.Command(curl, "-sS", "--unix-socket", path, "-X", "POST", "http://mwi/admin/v1/bots/ci/unlock")
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
			if out, err := cmd.CombinedOutput(); err == nil {
				t.Fatalf("curl as uid 65534 was answered: %s", out)
			}
		}
		if f.calls != 0 {
			t.Error("the authority was called for another user")
		}
		if n := capped.Limits.Open(); n != 0 {
			t.Errorf("%d connections of the refused user counted; want 0", n)
		}
		recs := buf.records(t)
		if len(recs) != tries {
			t.Fatalf("audit = %v, want %d admin denials", recs, tries)
		}
		for _, r := range recs {
			if r["event"] != audit.EventAdmin || r["outcome"] != audit.Denied || r["uid"] != float64(65534) || r["reason"] == "" {
				t.Errorf("audit record %v, want an admin denial naming uid 65534", r)
			}
		}
	})
	t.Run("admin request past its bounds", func(t *testing.T) {
		al, buf := newAuditBuffer()
		f := &fakeAdmin{}
		c := unixServer(t, adminRoutes(f, nil, al, discardLog()))
		for _, tc := range []struct{ path, body, want string }{
			{"/admin/v1/tokens", jsonBody(t, api.CreateTokenRequest{Bot: strings.Repeat("b", 254), TTLSeconds: 60}), "bot is 254 bytes long; at most 253"},
			{"/admin/v1/bots/" + strings.Repeat("b", 254) + "/unlock", "", "bot name is 254 bytes long; at most 253"},
		} {
			res, err := c.Post("http://mwi"+tc.path, "application/json", strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if e := errorBody(t, res, body, http.StatusBadRequest, api.CodeBadRequest); !strings.Contains(e.Message, tc.want) {
				t.Errorf("message %q does not contain %q", e.Message, tc.want)
			}
		}
		if f.calls != 0 {
			t.Error("the authority was called")
		}
		recs := buf.records(t)
		if len(recs) != 2 || recs[0]["event"] != audit.EventRequest || recs[0]["uid"] == nil {
			t.Errorf("audit = %v, want two request denials naming the caller", recs)
		}
	})
}

func TestHealthzShowsAuditFailure(t *testing.T) {
	al, buf := newAuditBuffer()
	h := publicRoutes(&fakeJoiner{}, nil, al, discardLog())
	get := func() (*http.Response, []byte) {
		return serve(t, h, httptest.NewRequest(http.MethodGet, "/healthz", nil))
	}
	if res, body := get(); res.StatusCode != http.StatusOK {
		t.Fatalf("healthz = %d %s before any failure", res.StatusCode, body)
	}
	buf.setFail(true)
	if err := al.Record(context.Background(), audit.EventRenew, audit.Allowed); err == nil {
		t.Fatal("Record succeeded on a failing writer")
	}
	res, body := get()
	e := errorBody(t, res, body, http.StatusServiceUnavailable, api.CodeAuditUnavailable)
	if !strings.Contains(e.Message, "no space left on device") {
		t.Errorf("message %q does not say why", e.Message)
	}
	// It recovers with the next good write.
	buf.setFail(false)
	if err := al.Record(context.Background(), audit.EventRenew, audit.Allowed); err != nil {
		t.Fatal(err)
	}
	if res, body := get(); res.StatusCode != http.StatusOK {
		t.Errorf("healthz = %d %s after recovery", res.StatusCode, body)
	}
}

// TestAdminRefusalsLogBounded checks that callers the admin socket
// refuses, whose number they decide, cost a few log lines a second, not
// one each.
func TestAdminRefusalsLogBounded(t *testing.T) {
	var buf bytes.Buffer
	h := adminRoutes(&fakeAdmin{}, nil, discardAudit(), slog.New(slog.NewTextHandler(&buf, nil)))
	for range 1000 {
		res, body := serve(t, h, httptest.NewRequest(http.MethodPost, "/admin/v1/tokens", strings.NewReader(`{"bot":"ci","ttl_seconds":60}`)))
		errorBody(t, res, body, http.StatusForbidden, api.CodeAccessDenied)
	}
	if n := bytes.Count(buf.Bytes(), []byte("\n")); n == 0 || n > 2*logging.LimitBurst {
		t.Errorf("1000 refusals logged %d lines; want a few", n)
	}
}

// TestAdminListenerBounds checks the admin socket's bounds between the
// two users it serves, root and the issuer's own: each may hold half the
// places, or one user all of them when the issuer runs as root; nobody
// else is ever counted.
func TestAdminListenerBounds(t *testing.T) {
	l := adminListener(nil, Limits{MaxAdminConns: 4}, discardAudit(), discardLog()).Limits
	if err := l.Admit(4242); err == nil {
		t.Error("another user was counted")
	}
	want := map[uint32]int{0: 2, adminSelf: 2}
	if adminSelf == 0 {
		want = map[uint32]int{0: 4}
	}
	for uid, n := range want {
		for i := range n {
			if err := l.Admit(uid); err != nil {
				t.Fatalf("connection %d of uid %d: %v", i+1, uid, err)
			}
		}
		if err := l.Admit(uid); err == nil {
			t.Errorf("connection %d of uid %d admitted; want %d at most", n+1, uid, n)
		}
	}
}
