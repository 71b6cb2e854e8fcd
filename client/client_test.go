package client

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
)

// serve serves h on a Unix socket in a temporary directory, as mwid does,
// and returns the socket's path.
func serve(t *testing.T, h http.Handler) string {
	t.Helper()
	sock := socketPath(t)
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return sock
}

// socketPath returns a path for a socket in a temporary directory, short
// enough for the limit on socket paths.
func socketPath(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 90 {
		var err error
		if dir, err = os.MkdirTemp("/tmp", "mwic"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
	}
	return filepath.Join(dir, "api.sock")
}

var (
	t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	t1 = t0.Add(8 * time.Hour)

	cannedStatus = api.Status{
		Joined: true, State: "ready", Bot: "web", Instance: "i-1", Generation: 3,
		Issuer:      "https://issuer.example:8443",
		Credentials: []api.Credential{{Kind: "ssh", Principals: []string{"deploy"}, ValidAfter: t0, Expires: t1}},
		Outputs:     []api.Output{{Type: "ssh_host", Path: "/etc/ssh/host-cert.pub", LastWrite: &t0}},
		Config:      api.ConfigStatus{Path: "/etc/mwi/mwid.yaml", Revision: "3f2a9c1", LoadedAt: t0},
	}
	cannedIdentity = api.Identity{
		Bot: "web", Instance: "i-1", Certificate: "ssh-ed25519-cert-v01@openssh.com AAAA web",
		KeyID: "web/i-1/3", Serial: 42, Principals: []string{"deploy"}, ValidAfter: t0, ValidBefore: t1,
	}
	cannedKnownHosts = "@cert-authority * ssh-ed25519 AAAAhostca\n"
	cannedReload     = api.ReloadResult{Changed: true, Revision: "77aa01b"}
	cannedReady      = api.Readiness{Ready: true, State: "ready", Credentials: []api.CredentialRead{{Kind: "ssh", Valid: true, Expires: t1}}}
)

// seen records the last request the fake mwid served.
type seen struct {
	method, path, rawQuery, accept string
}

// fakeMWID answers every route of the local API with canned answers.
func fakeMWID(last *seen) http.Handler {
	mux := http.NewServeMux()
	record := func(h http.HandlerFunc) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			*last = seen{r.Method, r.URL.Path, r.URL.RawQuery, r.Header.Get("Accept")}
			h(w, r)
		}
	}
	text := func(s string) http.HandlerFunc {
		return record(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			io.WriteString(w, s)
		})
	}
	js := func(v any) http.HandlerFunc {
		return record(func(w http.ResponseWriter, r *http.Request) { httpjson.Write(w, http.StatusOK, v) })
	}
	mux.Handle("GET /v1/status", js(cannedStatus))
	mux.Handle("GET /v1/identity", js(cannedIdentity))
	mux.Handle("GET /v1/ssh/known_hosts", text(cannedKnownHosts))
	mux.Handle("GET /v1/ssh/config", record(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "Host *.example\n  KnownHostsCommand "+r.URL.Query().Get("mwictl")+" known-hosts\n")
	}))
	mux.Handle("POST /v1/renew", js(cannedStatus))
	mux.Handle("POST /v1/reload", js(cannedReload))
	mux.Handle("GET /readyz", js(cannedReady))
	return mux
}

func TestMethods(t *testing.T) {
	var last seen
	c := &Client{Socket: serve(t, fakeMWID(&last))}
	ctx := context.Background()

	tests := []struct {
		name string
		call func() (any, error)
		want any
		req  seen
	}{
		{"Status", func() (any, error) { return c.Status(ctx) }, cannedStatus,
			seen{"GET", "/v1/status", "", "application/json"}},
		{"Identity", func() (any, error) { return c.Identity(ctx) }, cannedIdentity,
			seen{"GET", "/v1/identity", "", "application/json"}},
		{"KnownHosts", func() (any, error) { return c.KnownHosts(ctx) }, cannedKnownHosts,
			seen{"GET", "/v1/ssh/known_hosts", "", "text/plain"}},
		{"SSHConfig", func() (any, error) { return c.SSHConfig(ctx, "/opt/my tools/mwictl") },
			"Host *.example\n  KnownHostsCommand /opt/my tools/mwictl known-hosts\n",
			seen{"GET", "/v1/ssh/config", "mwictl=%2Fopt%2Fmy+tools%2Fmwictl", "text/plain"}},
		{"SSHConfigEscapes", func() (any, error) { return c.SSHConfig(ctx, "/x&mwictl=/evil#y") },
			"Host *.example\n  KnownHostsCommand /x&mwictl=/evil#y known-hosts\n",
			seen{"GET", "/v1/ssh/config", "mwictl=%2Fx%26mwictl%3D%2Fevil%23y", "text/plain"}},
		{"SSHConfigNoPath", func() (any, error) { return c.SSHConfig(ctx, "") },
			"Host *.example\n  KnownHostsCommand  known-hosts\n",
			seen{"GET", "/v1/ssh/config", "", "text/plain"}},
		{"Renew", func() (any, error) { return c.Renew(ctx) }, cannedStatus,
			seen{"POST", "/v1/renew", "", "application/json"}},
		{"Reload", func() (any, error) { return c.Reload(ctx) }, cannedReload,
			seen{"POST", "/v1/reload", "", "application/json"}},
		{"Ready", func() (any, error) { return c.Ready(ctx) }, cannedReady,
			seen{"GET", "/readyz", "", "application/json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.call()
			if err != nil {
				t.Fatalf("err %v", err)
			}
			if !equalJSONish(got, tt.want) {
				t.Errorf("got %#v\nwant %#v", got, tt.want)
			}
			if last != tt.req {
				t.Errorf("request %+v, want %+v", last, tt.req)
			}
		})
	}
}

// equalJSONish compares values that went through JSON, where times lose
// their monotonic clock and location pointer.
func equalJSONish(a, b any) bool {
	if s, ok := a.(string); ok {
		return s == b
	}
	return reflect.DeepEqual(normalize(a), normalize(b))
}

func normalize(v any) any {
	switch v := v.(type) {
	case api.Status:
		for i := range v.Credentials {
			v.Credentials[i].ValidAfter = v.Credentials[i].ValidAfter.UTC()
			v.Credentials[i].Expires = v.Credentials[i].Expires.UTC()
		}
		for i := range v.Outputs {
			if w := v.Outputs[i].LastWrite; w != nil {
				u := w.UTC()
				v.Outputs[i].LastWrite = &u
			}
		}
		v.Config.LoadedAt = v.Config.LoadedAt.UTC()
		return v
	case api.Identity:
		v.ValidAfter, v.ValidBefore = v.ValidAfter.UTC(), v.ValidBefore.UTC()
		return v
	case api.Readiness:
		for i := range v.Credentials {
			v.Credentials[i].Expires = v.Credentials[i].Expires.UTC()
		}
		return v
	}
	return v
}

// apiError answers every request with mwid's error body.
func apiError(status int, code, msg string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, status, api.ErrorBody{Error: api.Error{Code: code, Message: msg}})
	})
}

// raw answers every request with status, content type and body as given.
func raw(status int, contentType, body string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if contentType != "" {
			w.Header().Set("Content-Type", contentType)
		}
		w.WriteHeader(status)
		io.WriteString(w, body)
	})
}

func TestErrorAnswers(t *testing.T) {
	type check struct {
		notRunning, accessDenied, notJoined, renewFailed, reloadFailed bool
	}
	tests := []struct {
		name    string
		h       http.Handler
		call    func(context.Context, *Client) error
		code    string
		status  int
		message string // substring of the error's text
		is      check
	}{
		{"AccessDenied", apiError(403, api.CodeAccessDenied, "uid 1000 may not use this socket"),
			statusCall, api.CodeAccessDenied, 403, "uid 1000 may not use this socket", check{accessDenied: true}},
		{"NotJoined", apiError(503, api.CodeNotJoined, "mwid has not joined the issuer yet"),
			identityCall, api.CodeNotJoined, 503, "not joined", check{notJoined: true}},
		{"RenewFailed", apiError(502, api.CodeRenewFailed, "renewal refused by the issuer: bot locked"),
			renewCall, api.CodeRenewFailed, 502, "bot locked", check{renewFailed: true}},
		{"ReloadFailed", apiError(400, api.CodeReloadFailed, "/etc/mwi/mwid.yaml:12: unknown field \"ttl\""),
			reloadCall, api.CodeReloadFailed, 400, "mwid.yaml:12", check{reloadFailed: true}},
		{"NotFound", apiError(404, api.CodeNotFound, "no route GET /v1/identity"),
			identityCall, api.CodeNotFound, 404, "no route", check{}},
		{"ReadyErrorBody", apiError(503, api.CodeNotJoined, "mwid has not joined the issuer yet"),
			readyCall, api.CodeNotJoined, 503, "not joined", check{notJoined: true}},

		// Answers that are not mwid's error body still make an *Error
		// that says what came back, and none of the typed helpers match.
		{"TextBody", raw(500, "text/plain", "panic: oops\ngoroutine 1"),
			statusCall, "", 500, `500 Internal Server Error to GET /v1/status without an error body ("panic: oops")`, check{}},
		{"EmptyBody", raw(502, "", ""),
			knownHostsCall, "", 502, "502 Bad Gateway to GET /v1/ssh/known_hosts without an error body", check{}},
		{"ErrorWithoutCode", raw(403, "application/json", `{"error":{"message":"no"}}`),
			statusCall, "", 403, "403 Forbidden", check{}},
		{"OtherJSON", raw(503, "application/json", `{"message":"busy"}`),
			identityCall, "", 503, `{\"message\":\"busy\"}`, check{}},
		{"Truncated", raw(500, "application/json", `{"error":{"code":"inter`),
			reloadCall, "", 500, "without an error body", check{}},
		{"LongBody", raw(500, "text/html", strings.Repeat("x", 5000)),
			statusCall, "", 500, strings.Repeat("x", 120) + "…", check{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &Client{Socket: serve(t, tt.h)}
			err := tt.call(context.Background(), c)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err %v (%T), want *Error", err, err)
			}
			if e.Code != tt.code || e.Status != tt.status {
				t.Errorf("code %q status %d, want %q %d", e.Code, e.Status, tt.code, tt.status)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error %q does not contain %q", err, tt.message)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error is %d bytes long", len(err.Error()))
			}
			got := check{IsNotRunning(err), IsAccessDenied(err), IsNotJoined(err), IsRenewFailed(err), IsReloadFailed(err)}
			if got != tt.is {
				t.Errorf("typed checks %+v, want %+v", got, tt.is)
			}
		})
	}
}

func statusCall(ctx context.Context, c *Client) error     { _, err := c.Status(ctx); return err }
func identityCall(ctx context.Context, c *Client) error   { _, err := c.Identity(ctx); return err }
func knownHostsCall(ctx context.Context, c *Client) error { _, err := c.KnownHosts(ctx); return err }
func renewCall(ctx context.Context, c *Client) error      { _, err := c.Renew(ctx); return err }
func reloadCall(ctx context.Context, c *Client) error     { _, err := c.Reload(ctx); return err }
func readyCall(ctx context.Context, c *Client) error      { _, err := c.Ready(ctx); return err }

func TestNotReadyIsAnAnswer(t *testing.T) {
	want := api.Readiness{Ready: false, State: "expired", Credentials: []api.CredentialRead{{Kind: "ssh", Expires: t0}}}
	c := &Client{Socket: serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusServiceUnavailable, want)
	}))}
	got, err := c.Ready(context.Background())
	if err != nil {
		t.Fatalf("err %v", err)
	}
	if !equalJSONish(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestUnreadableSuccess(t *testing.T) {
	c := &Client{Socket: serve(t, raw(200, "text/html", "<html>hello</html>"))}
	_, err := c.Status(context.Background())
	if err == nil || !strings.Contains(err.Error(), "GET /v1/status is not the JSON expected") {
		t.Errorf("err %v, want one saying the answer is not JSON", err)
	}
	var e *Error
	if errors.As(err, &e) {
		t.Errorf("err is an *Error (%+v); want a decoding error", e)
	}
}

func TestNotRunning(t *testing.T) {
	refused := func(t *testing.T) string {
		// A socket file that nothing listens on any more, as mwid leaves
		// behind when it is killed.
		sock := socketPath(t)
		l, err := net.Listen("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		return sock
	}
	tests := []struct {
		name   string
		socket func(t *testing.T) string
	}{
		{"Missing", func(t *testing.T) string { return filepath.Join(t.TempDir(), "api.sock") }},
		{"Refused", refused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sock := tt.socket(t)
			c := &Client{Socket: sock}
			_, err := c.Status(context.Background())
			if !IsNotRunning(err) {
				t.Fatalf("err %v, want IsNotRunning", err)
			}
			if IsAccessDenied(err) {
				t.Errorf("IsAccessDenied(%v) is true", err)
			}
			var e *NotRunningError
			errors.As(err, &e)
			if e.Socket != sock || !strings.Contains(err.Error(), sock) || !strings.Contains(err.Error(), "is mwid running?") {
				t.Errorf("err %q (socket %q), want one naming %s and asking whether mwid runs", err, e.Socket, sock)
			}
		})
	}
}

func TestZeroClientUsesDefaultSocket(t *testing.T) {
	if _, err := os.Stat(DefaultSocket); err == nil {
		t.Skipf("%s exists on this machine", DefaultSocket)
	}
	var c Client
	_, err := c.Status(context.Background())
	var e *NotRunningError
	if !errors.As(err, &e) || e.Socket != DefaultSocket {
		t.Errorf("err %v, want a NotRunningError for %s", err, DefaultSocket)
	}
}

func TestSocketModeDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root is not bound by the socket's mode")
	}
	sock := serve(t, fakeMWID(new(seen)))
	if err := os.Chmod(sock, 0); err != nil {
		t.Fatal(err)
	}
	_, err := (&Client{Socket: sock}).Status(context.Background())
	if !IsAccessDenied(err) || IsNotRunning(err) {
		t.Fatalf("err %v, want IsAccessDenied and not IsNotRunning", err)
	}
	if !strings.Contains(err.Error(), sock) {
		t.Errorf("err %q does not name the socket", err)
	}
}

func TestContextCanceled(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	c := &Client{Socket: serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-block:
		case <-r.Context().Done():
		}
	}))}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, err := c.Renew(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want context.DeadlineExceeded", err)
	}
	if IsNotRunning(err) {
		t.Errorf("a slow mwid is reported as not running: %v", err)
	}
}

// fakeBackend is a localapi.Backend with canned answers.
type fakeBackend struct {
	mwictl   string
	hosts    []string
	refusals []api.SSHRefusal
}

var cannedNodes = api.SSHNodes{Bot: "web", Agent: "/run/mwi/agent.sock", Nodes: []api.ReachableNode{
	{Name: "web-01", Names: []string{"web-01"}, Labels: map[string]string{"env": "prod"}, Logins: []string{"deploy"}}}}

var cannedHostOutputs = []api.SSHHostOutput{{HostKey: "/etc/ssh/k.pub", Certificate: "/etc/ssh/k-cert.pub", AccessDir: "/var/lib/mwi/ssh", Labels: map[string]string{"env": "prod"}}}

func (b *fakeBackend) SSHHostOutputs() []api.SSHHostOutput { return cannedHostOutputs }
func (b *fakeBackend) ReportSSHRefusal(r api.SSHRefusal)   { b.refusals = append(b.refusals, r) }

func (b *fakeBackend) Status() api.Status              { return cannedStatus }
func (b *fakeBackend) Readiness() api.Readiness        { return cannedReady }
func (b *fakeBackend) Identity() (api.Identity, error) { return cannedIdentity, nil }
func (b *fakeBackend) KnownHosts(hosts []string) (string, error) {
	b.hosts = hosts
	return cannedKnownHosts, nil
}
func (b *fakeBackend) SSHNodes(ctx context.Context) (api.SSHNodes, error) { return cannedNodes, nil }
func (b *fakeBackend) Reload() (api.ReloadResult, error)                  { return cannedReload, nil }
func (b *fakeBackend) SSHConfig(mwictl string) (string, error) {
	b.mwictl = mwictl
	return "Host *\n", nil
}
func (b *fakeBackend) Renew(ctx context.Context) (api.Status, error) {
	return api.Status{}, fault.Upstream(api.CodeRenewFailed, "issuer unreachable")
}

// TestLocalAPIRoutes runs the client against mwid's real route table, so
// that paths, methods and bodies cannot drift apart.
func TestLocalAPIRoutes(t *testing.T) {
	b := &fakeBackend{}
	denyUID := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("deny") != "" {
				httpjson.WriteError(w, slog.New(slog.DiscardHandler), fault.Denied(api.CodeAccessDenied, "denied"))
				return
			}
			next.ServeHTTP(w, r)
		})
	}
	c := &Client{Socket: serve(t, localapi.Routes(b, http.NotFoundHandler(), slog.New(slog.DiscardHandler), denyUID))}
	ctx := context.Background()

	if s, err := c.Status(ctx); err != nil || !equalJSONish(s, cannedStatus) {
		t.Errorf("Status: %+v, %v", s, err)
	}
	if id, err := c.Identity(ctx); err != nil || !equalJSONish(id, cannedIdentity) {
		t.Errorf("Identity: %+v, %v", id, err)
	}
	if kh, err := c.KnownHosts(ctx); err != nil || kh != cannedKnownHosts || b.hosts != nil {
		t.Errorf("KnownHosts: %q, %v; mwid saw hosts %q", kh, err, b.hosts)
	}
	if _, err := c.KnownHosts(ctx, "web-01", "web-01.example.com"); err != nil || !slices.Equal(b.hosts, []string{"web-01", "web-01.example.com"}) {
		t.Errorf("KnownHosts for hosts: %v; mwid saw hosts %q", err, b.hosts)
	}
	if _, err := c.KnownHosts(ctx, "*"); !hasCode(err, api.CodeBadRequest) {
		t.Errorf("KnownHosts for a pattern: %v, want bad_request", err)
	}
	if n, err := c.SSHNodes(ctx); err != nil || !equalJSONish(n, cannedNodes) {
		t.Errorf("SSHNodes: %+v, %v", n, err)
	}
	if outs, err := c.SSHHostOutputs(ctx); err != nil || !equalJSONish(outs, cannedHostOutputs) {
		t.Errorf("SSHHostOutputs: %+v, %v", outs, err)
	}
	ref := api.SSHRefusal{Login: "root", Bot: "ci", Reason: "locked", Host: "forged"}
	if err := c.ReportSSHRefusal(ctx, ref); err != nil || len(b.refusals) != 1 || b.refusals[0].Login != "root" || b.refusals[0].Host != "" {
		t.Errorf("ReportSSHRefusal: %v; mwid got %+v (a host named by the caller is dropped)", err, b.refusals)
	}
	if _, err := c.SSHConfig(ctx, "/usr/bin/mwi ctl"); err != nil || b.mwictl != "/usr/bin/mwi ctl" {
		t.Errorf("SSHConfig: mwid saw mwictl=%q, err %v", b.mwictl, err)
	}
	if _, err := c.Renew(ctx); !IsRenewFailed(err) || err.Error() != "issuer unreachable" {
		t.Errorf("Renew: %v, want renew_failed", err)
	}
	if r, err := c.Reload(ctx); err != nil || r != cannedReload {
		t.Errorf("Reload: %+v, %v", r, err)
	}
	if r, err := c.Ready(ctx); err != nil || !equalJSONish(r, cannedReady) {
		t.Errorf("Ready: %+v, %v", r, err)
	}
	// The SSHConfig path is escaped, so a crafted mwictl path cannot add
	// query parameters of its own.
	if _, err := c.SSHConfig(ctx, "x&deny=1"); err != nil || b.mwictl != "x&deny=1" {
		t.Errorf("SSHConfig(x&deny=1): mwid saw mwictl=%q, err %v", b.mwictl, err)
	}
}
