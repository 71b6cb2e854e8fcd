package server

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/unixsock"
	"github.com/mwi-project/mwi/issuer/audit"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/resource"
	"github.com/mwi-project/mwi/issuer/store"
)

// fakeJoiner records what the routes pass to the authority.
type fakeJoiner struct {
	mu         sync.Mutex
	joins      []api.JoinRequest
	clients    []*ca.Identity // the identity passed with each join
	renews     []ca.Identity
	challenges []api.ChallengeRequest
	chClients  []*ca.Identity // the identity passed with each challenge
	remote     string
	err        error
	storeErr   error // StoreHealth's answer
}

func (f *fakeJoiner) StoreHealth(ctx context.Context) error { return f.storeErr }

func (f *fakeJoiner) Join(ctx context.Context, req api.JoinRequest, client *ca.Identity, remote string) (api.Credentials, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.joins = append(f.joins, req)
	f.clients = append(f.clients, client)
	f.remote = remote
	if f.err != nil {
		return api.Credentials{}, f.err
	}
	return api.Credentials{Bot: "ci", Instance: "i1", Generation: 1}, nil
}

func (f *fakeJoiner) Renew(ctx context.Context, id ca.Identity, req api.RenewRequest, remote string) (api.Credentials, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.renews = append(f.renews, id)
	f.remote = remote
	if f.err != nil {
		return api.Credentials{}, f.err
	}
	return api.Credentials{Bot: id.Bot, Instance: id.Instance, Generation: id.Generation + 1}, nil
}

func (f *fakeJoiner) Challenge(ctx context.Context, req api.ChallengeRequest, client *ca.Identity, remote string) (api.ChallengeResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.challenges = append(f.challenges, req)
	f.chClients = append(f.chClients, client)
	f.remote = remote
	if f.err != nil {
		return api.ChallengeResponse{}, f.err
	}
	return api.ChallengeResponse{Challenge: "c-" + req.TokenName, Expires: time.Unix(1700000000, 0).UTC()}, nil
}

func (f *fakeJoiner) LockList(ctx context.Context) (api.LockList, string, error) {
	return api.LockList{Locks: []api.Lock{}}, `"tag"`, f.err
}

func (f *fakeJoiner) KRL(ctx context.Context) ([]byte, string, error) {
	return []byte("SSHKRL\n\x00"), `"krl"`, f.err
}

func (f *fakeJoiner) SSHRefusal(ctx context.Context, reporter ca.Identity, r api.SSHRefusal, remote string) error {
	return f.err
}

func (f *fakeJoiner) ReachableNodes(ctx context.Context, id ca.Identity, remote string) (api.ReachableNodes, error) {
	return api.ReachableNodes{Nodes: []api.ReachableNode{}}, f.err
}

func (f *fakeJoiner) calls() (joins, renews int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.joins), len(f.renews)
}

func discardLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func discardAudit() *audit.Log { return audit.New(io.Discard) }

// errorBody decodes an error answer strictly and checks its shape.
func errorBody(t *testing.T, res *http.Response, body []byte, status int, code string) api.Error {
	t.Helper()
	if res.StatusCode != status {
		t.Errorf("status = %d, want %d; body %s", res.StatusCode, status, body)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var eb api.ErrorBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil {
		t.Fatalf("error body %q is not {\"error\":{\"code\",\"message\"}}: %v", body, err)
	}
	if code != "" && eb.Error.Code != code {
		t.Errorf("code = %q, want %q (message %q)", eb.Error.Code, code, eb.Error.Message)
	}
	if eb.Error.Code == "" || eb.Error.Message == "" {
		t.Errorf("error body %s lacks a code or a message", body)
	}
	return eb.Error
}

func serve(t *testing.T, h http.Handler, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	res := rec.Result()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

func TestPublicRoutesJoinDecoding(t *testing.T) {
	for _, tc := range []struct {
		name    string
		body    string
		message string // part of the error message
	}{
		{"empty body", "", "empty"},
		{"malformed JSON", `{"join_method":`, ""},
		{"syntax error", `{"join_method" "token"}`, "invalid JSON"},
		{"not an object", `"token"`, ""},
		{"unknown field", `{"join_method":"token","tokne":"x"}`, "tokne"},
		{"unknown nested field", `{"join_method":"token","keys":{"ssh":"x","tls":"y"}}`, "tls"},
		{"type mismatch", `{"join_method":"token","ttl_seconds":"600"}`, "ttl_seconds"},
		{"trailing data", `{"join_method":"token"} {}`, "after the JSON value"},
		{"trailing garbage", `{"join_method":"token"}x`, "after the JSON value"},
		{"too large", `{"join_method":"` + strings.Repeat("x", 2<<20) + `"}`, "larger than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeJoiner{}
			h := publicRoutes(f, nil, discardAudit(), discardLog())
			res, body := serve(t, h, httptest.NewRequest(http.MethodPost, "/v1/join", strings.NewReader(tc.body)))
			e := errorBody(t, res, body, http.StatusBadRequest, api.CodeBadRequest)
			if !strings.Contains(e.Message, tc.message) {
				t.Errorf("message %q does not mention %q", e.Message, tc.message)
			}
			if joins, _ := f.calls(); joins != 0 {
				t.Error("the authority was called with an invalid request")
			}
		})
	}
}

func TestPublicRoutesJoin(t *testing.T) {
	f := &fakeJoiner{}
	h := publicRoutes(f, nil, discardAudit(), discardLog())
	req := httptest.NewRequest(http.MethodPost, "/v1/join", strings.NewReader(`{"join_method":"token","token":"s3cret","keys":{"identity_csr":"c","ssh":"k"},"ssh_logins":["deploy"],"ttl_seconds":600}`+"\n"))
	req.RemoteAddr = "192.0.2.7:5555"
	res, body := serve(t, h, req)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status = %d, body %s", res.StatusCode, body)
	}
	var creds api.Credentials
	if err := json.Unmarshal(body, &creds); err != nil || creds.Bot != "ci" {
		t.Errorf("body = %s, %v", body, err)
	}
	want := api.JoinRequest{JoinMethod: "token", Token: "s3cret", Keys: api.PublicKeys{IdentityCSR: "c", SSH: "k"}, SSHLogins: []string{"deploy"}, TTLSeconds: 600}
	if len(f.joins) != 1 || f.joins[0].Token != want.Token || f.joins[0].Keys != want.Keys || f.joins[0].TTLSeconds != 600 || len(f.joins[0].SSHLogins) != 1 {
		t.Errorf("authority got %+v, want %+v", f.joins, want)
	}
	if f.remote != "192.0.2.7:5555" {
		t.Errorf("remote = %q", f.remote)
	}
}

func TestPublicRoutesAuthorityErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		err    error
		status int
		code   string
		hidden string // must not reach the caller
	}{
		{"refusal", fault.Denied(api.CodeTokenUsed, "join token was already used"), http.StatusForbidden, api.CodeTokenUsed, ""},
		{"wrapped refusal", errors.Join(errors.New("ctx"), fault.Denied(api.CodeBotLocked, "locked")), http.StatusForbidden, api.CodeBotLocked, ""},
		{"internal error", errors.New("store: open /var/lib/mwi/store.db: disk on fire"), http.StatusInternalServerError, api.CodeInternal, "/var/lib/mwi"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := publicRoutes(&fakeJoiner{err: tc.err}, nil, discardAudit(), discardLog())
			res, body := serve(t, h, httptest.NewRequest(http.MethodPost, "/v1/join", strings.NewReader(`{"join_method":"token"}`)))
			errorBody(t, res, body, tc.status, tc.code)
			if tc.hidden != "" && bytes.Contains(body, []byte(tc.hidden)) {
				t.Errorf("body %s leaks %q", body, tc.hidden)
			}
		})
	}
}

func TestPublicRoutesNotFoundAndMethod(t *testing.T) {
	for _, tc := range []struct {
		method, path string
		status       int
		code         string
		allow        []string // the Allow header of a 405
	}{
		{http.MethodGet, "/nope", http.StatusNotFound, api.CodeNotFound, nil},
		{http.MethodPost, "/v1/joins", http.StatusNotFound, api.CodeNotFound, nil},
		{http.MethodGet, "/v1", http.StatusNotFound, api.CodeNotFound, nil},
		{http.MethodGet, "/v1/join", http.StatusMethodNotAllowed, api.CodeBadRequest, []string{"POST"}},
		{http.MethodPut, "/v1/renew", http.StatusMethodNotAllowed, api.CodeBadRequest, []string{"POST"}},
		{http.MethodPost, "/healthz", http.StatusMethodNotAllowed, api.CodeBadRequest, []string{"GET"}},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			f := &fakeJoiner{}
			res, body := serve(t, publicRoutes(f, nil, discardAudit(), discardLog()), httptest.NewRequest(tc.method, tc.path, nil))
			errorBody(t, res, body, tc.status, tc.code)
			if got := res.Header.Values("Allow"); !slices.Equal(got, tc.allow) {
				t.Errorf("Allow %q, want %q", got, tc.allow)
			}
			if j, r := f.calls(); j+r != 0 {
				t.Error("the authority was called")
			}
		})
	}
}

func TestPublicRoutesHealthz(t *testing.T) {
	res, body := serve(t, publicRoutes(&fakeJoiner{}, nil, discardAudit(), discardLog()), httptest.NewRequest(http.MethodGet, "/healthz", nil))
	if res.StatusCode != http.StatusOK || res.Header.Get("Content-Type") != "application/json" {
		t.Errorf("healthz = %d %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var m map[string]string
	if err := json.Unmarshal(body, &m); err != nil || m["status"] != "ok" {
		t.Errorf("healthz body = %s, %v", body, err)
	}
}

// testCA initialises an issuer state directory and loads it.
func testCA(t *testing.T) *ca.Authority {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	if err := ca.Init(dir, []string{"127.0.0.1", "::1", "localhost"}); err != nil {
		t.Fatal(err)
	}
	a, err := ca.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// identityCert signs a bot identity for a new key, valid for the next
// hour, and returns it as a TLS client certificate.
func identityCert(t *testing.T, a *ca.Authority, id ca.Identity) tls.Certificate {
	t.Helper()
	now := time.Now()
	return identityCertFor(t, a, id, now.Add(-time.Minute), now.Add(time.Hour))
}

// identityCertFor is identityCert for the validity notBefore to notAfter.
func identityCertFor(t *testing.T, a *ca.Authority, id ca.Identity, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
	if err != nil {
		t.Fatal(err)
	}
	req, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := ca.CheckCSR(req)
	if err != nil {
		t.Fatal(err)
	}
	c, err := a.SignIdentity(csr, id, notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key, Leaf: c}
}

func TestPublicRoutesRenewNeedsIdentity(t *testing.T) {
	a := testCA(t)
	idCert := identityCert(t, a, ca.Identity{Bot: "ci", Instance: "i1", Generation: 4})
	serving, err := x509.ParseCertificate(a.ServingCertificate().Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		state *tls.ConnectionState
	}{
		{"plain HTTP", nil},
		{"TLS without a client certificate", &tls.ConnectionState{}},
		{"verified chain of a non-identity certificate", &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{serving, a.TLSCA()}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeJoiner{}
			req := httptest.NewRequest(http.MethodPost, "/v1/renew", strings.NewReader(`{"ttl_seconds":600}`))
			req.TLS = tc.state
			res, body := serve(t, publicRoutes(f, nil, discardAudit(), discardLog()), req)
			errorBody(t, res, body, http.StatusUnauthorized, api.CodeUnauthenticated)
			if _, renews := f.calls(); renews != 0 {
				t.Error("the authority was called without an identity")
			}
		})
	}

	t.Run("verified identity", func(t *testing.T) {
		f := &fakeJoiner{}
		req := httptest.NewRequest(http.MethodPost, "/v1/renew", strings.NewReader(`{"ttl_seconds":600}`))
		req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{idCert.Leaf}}}
		res, body := serve(t, publicRoutes(f, nil, discardAudit(), discardLog()), req)
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status = %d, body %s", res.StatusCode, body)
		}
		if want := (ca.Identity{Bot: "ci", Instance: "i1", Generation: 4}); len(f.renews) != 1 || f.renews[0] != want {
			t.Errorf("authority got %+v, want %+v", f.renews, want)
		}
	})

	t.Run("verified identity, bad body", func(t *testing.T) {
		f := &fakeJoiner{}
		req := httptest.NewRequest(http.MethodPost, "/v1/renew", strings.NewReader(`{"ttl_seconds":600,"generation":9}`))
		req.TLS = &tls.ConnectionState{VerifiedChains: [][]*x509.Certificate{{idCert.Leaf}}}
		res, body := serve(t, publicRoutes(f, nil, discardAudit(), discardLog()), req)
		errorBody(t, res, body, http.StatusBadRequest, api.CodeBadRequest)
		if _, renews := f.calls(); renews != 0 {
			t.Error("the authority was called with an invalid request")
		}
	})
}

// tlsServer serves h over HTTPS as Run does, with the authorities of a.
func tlsServer(t *testing.T, a *ca.Authority, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.TLS = &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{*a.ServingCertificate()},
		ClientAuth:   tls.VerifyClientCertIfGiven,
		ClientCAs:    a.IdentityPool(),
	}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// tlsClient trusts a's TLS authority and presents certs.
func tlsClient(t *testing.T, a *ca.Authority, certs ...tls.Certificate) *http.Client {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(a.TLSCA())
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func post(t *testing.T, c *http.Client, url string, v any) (*http.Response, []byte, error) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Post(url, "application/json", bytes.NewReader(data))
	if err != nil {
		return nil, nil, err
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	return res, body, err
}

func TestPublicRoutesRenewOverMutualTLS(t *testing.T) {
	a := testCA(t)
	other := testCA(t)
	f := &fakeJoiner{}
	srv := tlsServer(t, a, publicRoutes(f, nil, discardAudit(), discardLog()))
	id := ca.Identity{Bot: "ci", Instance: "i1", Generation: 2}

	t.Run("identity certificate", func(t *testing.T) {
		res, body, err := post(t, tlsClient(t, a, identityCert(t, a, id)), srv.URL+"/v1/renew", api.RenewRequest{TTLSeconds: 600})
		if err != nil {
			t.Fatal(err)
		}
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status = %d, body %s", res.StatusCode, body)
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.renews) != 1 || f.renews[0] != id {
			t.Errorf("authority got %+v, want %+v", f.renews, id)
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		res, body, err := post(t, tlsClient(t, a), srv.URL+"/v1/renew", api.RenewRequest{TTLSeconds: 600})
		if err != nil {
			t.Fatal(err)
		}
		errorBody(t, res, body, http.StatusUnauthorized, api.CodeUnauthenticated)
	})
	t.Run("identity of another issuer", func(t *testing.T) {
		_, _, err := post(t, tlsClient(t, a, identityCert(t, other, id)), srv.URL+"/v1/renew", api.RenewRequest{TTLSeconds: 600})
		if err == nil {
			t.Error("the handshake accepted a client certificate of another issuer")
		}
	})
	if _, renews := f.calls(); renews != 1 {
		t.Errorf("authority renewed %d times, want 1", renews)
	}
}

// testAuthority is a real authority over a fresh CA, store and resources.
func testAuthority(t *testing.T) (*authority.Authority, *lockedWriter) {
	t.Helper()
	a := testCA(t)
	dir := t.TempDir()
	st, err := store.Open(filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	resDir := filepath.Join(dir, "resources")
	if err := os.Mkdir(resDir, 0o700); err != nil {
		t.Fatal(err)
	}
	const yaml = `kind: role
version: v1
metadata: {name: deploy}
spec:
  allow: {logins: [deploy]}
---
kind: bot
version: v1
metadata: {name: ci}
spec: {roles: [deploy]}
---
kind: role
version: v1
metadata: {name: host}
spec:
  allow: {host_names: [web-01], host_labels: {env: '*'}}
---
kind: bot
version: v1
metadata: {name: web}
spec: {roles: [host]}
`
	if err := os.WriteFile(filepath.Join(resDir, "r.yaml"), []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	set, err := resource.LoadDir(resDir)
	if err != nil {
		t.Fatal(err)
	}
	auditLog := &lockedWriter{}
	auth := &authority.Authority{CA: a, Store: st, Audit: audit.New(auditLog)}
	auth.SetResources(set)
	return auth, auditLog
}

// lockedWriter lets the test read the audit buffer while servers write it.
type lockedWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// fakeAdmin records calls to the admin API.
type fakeAdmin struct {
	mu    sync.Mutex
	calls int
}

func (f *fakeAdmin) CreateToken(ctx context.Context, bot string, ttl time.Duration) (api.CreateTokenResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return api.CreateTokenResponse{Token: "t", Bot: bot}, nil
}

func (f *fakeAdmin) AddLock(ctx context.Context, t api.LockTarget, reason string, ttl time.Duration) (api.Lock, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return api.Lock{Bot: t.Bot, Instance: t.Instance, Token: t.Token, Reason: reason}, nil
}

func (f *fakeAdmin) RemoveLock(ctx context.Context, t api.LockTarget) (api.Lock, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return api.Lock{Bot: t.Bot, Instance: t.Instance, Token: t.Token}, nil
}

func (f *fakeAdmin) Nodes(ctx context.Context) ([]api.Node, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return nil, nil
}

func (f *fakeAdmin) KubeRBAC(ctx context.Context, cluster string) (api.KubeRBAC, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return api.KubeRBAC{Cluster: cluster}, nil
}

func (f *fakeAdmin) Locks(ctx context.Context) ([]api.Lock, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	return nil, nil
}

func TestAdminRoutesWithoutPeer(t *testing.T) {
	// Without unixsock.ConnContext there is no peer, and no peer is no access.
	for _, tc := range []struct{ method, path, body string }{
		{http.MethodPost, "/admin/v1/tokens", `{"bot":"ci","ttl_seconds":60}`},
		{http.MethodPost, "/admin/v1/bots/ci/unlock", ""},
		{http.MethodPost, "/admin/v1/bots/ci/lock", `{"reason":"r"}`},
		{http.MethodPost, "/admin/v1/instances/abc/lock", `{"reason":"r"}`},
		{http.MethodPost, "/admin/v1/instances/abc/unlock", ""},
		{http.MethodGet, "/admin/v1/locks", ""},
		{http.MethodPost, "/admin/v1/locks", `{"token":"gh","reason":"r"}`},
		{http.MethodPost, "/admin/v1/locks/remove", `{"token":"gh"}`},
		{http.MethodGet, "/admin/v1/nodes", ""},
		{http.MethodGet, "/admin/v1/kube/rbac?cluster=prod", ""},
		{http.MethodGet, "/admin/v1/tokens", ""},
		{http.MethodGet, "/nope", ""},
	} {
		t.Run(tc.method+" "+tc.path, func(t *testing.T) {
			f := &fakeAdmin{}
			res, body := serve(t, adminRoutes(f, nil, discardAudit(), discardLog()), httptest.NewRequest(tc.method, tc.path, strings.NewReader(tc.body)))
			errorBody(t, res, body, http.StatusForbidden, api.CodeAccessDenied)
			if f.calls != 0 {
				t.Error("the authority was called for a caller without a peer")
			}
		})
	}
}

// unixServer serves h on a Unix socket as Run does, and returns a client for it.
func unixServer(t *testing.T, h http.Handler) *http.Client {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.sock")
	ln, err := unixsock.Listen(path, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ConnContext: unixsock.ConnContext, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("Serve: %v", err)
		}
	})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode = %o, want 600", fi.Mode().Perm())
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestAdminRoutesOverUnixSocket(t *testing.T) {
	auth, auditLog := testAuthority(t)
	c := unixServer(t, adminRoutes(auth, nil, auth.Audit, discardLog()))
	ctx := context.Background()

	// Create a token.
	res, body, err := post(t, c, "http://mwi/admin/v1/tokens", api.CreateTokenRequest{Bot: "ci", TTLSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != http.StatusCreated {
		t.Fatalf("create token: status %d, body %s", res.StatusCode, body)
	}
	var tok api.CreateTokenResponse
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatal(err)
	}
	if tok.Bot != "ci" || tok.Token == "" || time.Until(tok.Expires) <= 9*time.Minute {
		t.Errorf("token response = %+v", tok)
	}
	if _, err := auth.Store.Token(ctx, authority.HashToken(tok.Token), time.Now()); err != nil {
		t.Errorf("the created token is not in the store: %v", err)
	}

	for _, tc := range []struct {
		name   string
		req    any
		status int
		code   string
	}{
		{"unknown bot", api.CreateTokenRequest{Bot: "ghost", TTLSeconds: 600}, http.StatusNotFound, api.CodeBotUnknown},
		{"zero lifetime", api.CreateTokenRequest{Bot: "ci"}, http.StatusBadRequest, api.CodeBadRequest},
		// 2^64 ns and a little more: as a time.Duration it wraps to under a second.
		{"lifetime past a time.Duration", api.CreateTokenRequest{Bot: "ci", TTLSeconds: 18446744074}, http.StatusBadRequest, api.CodeBadRequest},
		{"unknown field", map[string]any{"bot": "ci", "ttl_seconds": 600, "uses": 2}, http.StatusBadRequest, api.CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body, err := post(t, c, "http://mwi/admin/v1/tokens", tc.req)
			if err != nil {
				t.Fatal(err)
			}
			errorBody(t, res, body, tc.status, tc.code)
		})
	}

	// Unlock a locked bot.
	if err := auth.Store.LockBot(ctx, store.Lock{Bot: "ci", Reason: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	res, err = c.Post("http://mwi/admin/v1/bots/ci/unlock", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusNoContent {
		t.Errorf("unlock: status %d, want 204", res.StatusCode)
	}
	if _, locked, err := auth.Store.BotLock(ctx, "ci", time.Now()); err != nil || locked {
		t.Errorf("bot still locked after unlock: %v, %v", locked, err)
	}

	// Lock a bot, list the locks, and refuse what makes no lock.
	res, body, err = post(t, c, "http://mwi/admin/v1/bots/ci/lock", api.LockRequest{Reason: "stop"})
	if err != nil || res.StatusCode != http.StatusOK {
		t.Fatalf("lock bot: %v, status %d, body %s", err, res.StatusCode, body)
	}
	var locks api.Locks
	res, err = c.Get("http://mwi/admin/v1/locks")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	if err := json.Unmarshal(body, &locks); err != nil || len(locks.Locks) != 1 || locks.Locks[0].Bot != "ci" || locks.Locks[0].Reason != "stop" {
		t.Errorf("locks = %s, %v", body, err)
	}
	for _, tc := range []struct {
		name, path string
		req        any
		status     int
		code       string
	}{
		{"bot lock without a reason", "/admin/v1/bots/ci/lock", api.LockRequest{}, http.StatusBadRequest, api.CodeBadRequest},
		{"bot lock with an unknown field", "/admin/v1/bots/ci/lock", map[string]any{"reason": "r", "until": 1}, http.StatusBadRequest, api.CodeBadRequest},
		{"lock of an unknown instance", "/admin/v1/instances/feedface/lock", api.LockRequest{Reason: "r"}, http.StatusNotFound, api.CodeNotFound},
		{"unlock of an instance that is not locked", "/admin/v1/instances/feedface/unlock", struct{}{}, http.StatusNotFound, api.CodeNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, body, err := post(t, c, "http://mwi"+tc.path, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			errorBody(t, res, body, tc.status, tc.code)
		})
	}

	// Unknown admin routes answer JSON too.
	res, err = c.Get("http://mwi/admin/v1/nope")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	errorBody(t, res, body, http.StatusNotFound, api.CodeNotFound)

	if log := auditLog.String(); !strings.Contains(log, `"event":"token.create"`) || !strings.Contains(log, `"event":"bot.unlock"`) {
		t.Errorf("audit log = %s", log)
	}
}

// TestJoinAndRenewOverHTTPS runs a token from the admin socket through a
// join and renewals on the HTTPS API, with the real authority.
func TestJoinAndRenewOverHTTPS(t *testing.T) {
	auth, _ := testAuthority(t)
	admin := unixServer(t, adminRoutes(auth, nil, auth.Audit, discardLog()))
	srv := tlsServer(t, auth.CA, publicRoutes(auth, nil, auth.Audit, discardLog()))

	res, body, err := post(t, admin, "http://mwi/admin/v1/tokens", api.CreateTokenRequest{Bot: "ci", TTLSeconds: 600})
	if err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("create token: %v %s", err, body)
	}
	var tok api.CreateTokenResponse
	if err := json.Unmarshal(body, &tok); err != nil {
		t.Fatal(err)
	}

	keys := func() (api.PublicKeys, crypto.Signer) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{}, key)
		if err != nil {
			t.Fatal(err)
		}
		sshRaw, _, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		sshPub, err := ssh.NewPublicKey(sshRaw)
		if err != nil {
			t.Fatal(err)
		}
		return api.PublicKeys{
			IdentityCSR: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
			SSH:         string(ssh.MarshalAuthorizedKey(sshPub)),
		}, key
	}
	clientCert := func(creds api.Credentials, key crypto.Signer) tls.Certificate {
		block, _ := pem.Decode([]byte(creds.IdentityCertificate))
		if block == nil {
			t.Fatalf("identity certificate is not PEM: %q", creds.IdentityCertificate)
		}
		return tls.Certificate{Certificate: [][]byte{block.Bytes}, PrivateKey: key}
	}
	decodeCreds := func(res *http.Response, body []byte) api.Credentials {
		t.Helper()
		if res.StatusCode != http.StatusOK {
			t.Fatalf("status %d, body %s", res.StatusCode, body)
		}
		var creds api.Credentials
		if err := json.Unmarshal(body, &creds); err != nil {
			t.Fatal(err)
		}
		return creds
	}

	pub, key := keys()
	res, body, err = post(t, tlsClient(t, auth.CA), srv.URL+"/v1/join", api.JoinRequest{JoinMethod: api.JoinMethodToken, Token: tok.Token, Keys: pub, TTLSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	first := decodeCreds(res, body)
	if first.Generation != 1 || first.Bot != "ci" {
		t.Errorf("join = %+v", first)
	}

	pub2, key2 := keys()
	res, body, err = post(t, tlsClient(t, auth.CA, clientCert(first, key)), srv.URL+"/v1/renew", api.RenewRequest{Keys: pub2, TTLSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	second := decodeCreds(res, body)
	if second.Generation != 2 || second.Instance != first.Instance {
		t.Errorf("renew = %+v", second)
	}

	// Replaying the first identity is a copy: refused, and the instance is
	// locked.
	pub3, _ := keys()
	res, body, err = post(t, tlsClient(t, auth.CA, clientCert(first, key)), srv.URL+"/v1/renew", api.RenewRequest{Keys: pub3, TTLSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	errorBody(t, res, body, http.StatusForbidden, api.CodeGenerationMismatch)
	res, body, err = post(t, tlsClient(t, auth.CA, clientCert(second, key2)), srv.URL+"/v1/renew", api.RenewRequest{Keys: pub3, TTLSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	errorBody(t, res, body, http.StatusForbidden, api.CodeInstanceLocked)

	// The operator sees the lock and lifts it over the admin socket; the
	// current identity renews.
	res, err = admin.Get("http://mwi/admin/v1/locks")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(res.Body)
	res.Body.Close()
	var locks api.Locks
	if err := json.Unmarshal(body, &locks); err != nil || len(locks.Locks) != 1 || locks.Locks[0].Instance != first.Instance || locks.Locks[0].Bot != "ci" {
		t.Fatalf("locks = %s, %v; want the instance's lock", body, err)
	}
	res, body, err = post(t, admin, "http://mwi/admin/v1/instances/"+first.Instance+"/unlock", struct{}{})
	if err != nil {
		t.Fatal(err)
	}
	var lifted api.Lock
	if res.StatusCode != http.StatusOK || json.Unmarshal(body, &lifted) != nil || lifted.Instance != first.Instance {
		t.Fatalf("unlock: status %d, body %s", res.StatusCode, body)
	}
	res, body, err = post(t, tlsClient(t, auth.CA, clientCert(second, key2)), srv.URL+"/v1/renew", api.RenewRequest{Keys: pub3, TTLSeconds: 600})
	if err != nil {
		t.Fatal(err)
	}
	if third := decodeCreds(res, body); third.Generation != 3 {
		t.Errorf("renew after unlock = %+v", third)
	}
}
