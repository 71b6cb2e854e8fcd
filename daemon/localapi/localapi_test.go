package localapi_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/daemon/localapi"
	"github.com/mwi-project/mwi/daemon/metrics"
	"github.com/mwi-project/mwi/internal/fault"
	"github.com/mwi-project/mwi/internal/httpjson"
)

// t0 is the fake daemon's clock. It has nanoseconds so that the tests see
// the time format Go really sends.
var t0 = time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.UTC)

func at(d time.Duration) *time.Time { t := t0.Add(d); return &t }

// fakeState is the state of the fake daemon.
type fakeState int

const (
	notJoined fakeState = iota
	ready
	// degraded is joined with every optional field set: a failed renewal,
	// a failed output write and a failed reload.
	degraded
	// refused is joined, with the issuer refusing renewals until an
	// operator lifts a lock.
	refused
)

// Realistic values, as mwid would send them.
const (
	testIssuer = "issuer.example.com:8443"
	testCert   = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIEv1J0uOQ0z9XbQ2Zb3o5m7j8v1lZ2Y1b0YyK3xq8s2nAAAAIFq3m6H9oZxWv7Tq0c3kJH2m4b8q5y7u1r3e6w9z0x1y2 web/7f3c9a12"
	testCAKey  = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHcP2T0rA0wP3mXhG0E8y1Vw4sQ5Qw8f6o1bYt1u8l2k"
	// testSerial is above 2^63, as half of the issuer's random serials are.
	testSerial = uint64(0xd3f1a2b4c5e6f708)
)

// fakeBackend is a localapi.Backend with canned answers.
type fakeBackend struct {
	state fakeState
	// renewErr and reloadErr, when set, are what Renew and Reload fail with.
	renewErr  error
	reloadErr error
	nodesErr  error // what SSHNodes fails with

	mu       sync.Mutex
	mwictl   []string                     // the arguments SSHConfig was called with
	refusals []api.SSHRefusal             // the refusals reported
	kubeReqs []localapi.KubeconfigRequest // the arguments Kubeconfig was called with
	calls    int                          // calls of any method
}

var _ localapi.Backend = (*fakeBackend)(nil)

func (f *fakeBackend) called() {
	f.mu.Lock()
	f.calls++
	f.mu.Unlock()
}

func (f *fakeBackend) configStatus() api.ConfigStatus {
	c := api.ConfigStatus{Path: "/etc/mwi/mwid.yaml", Revision: "3f9a2c1b", LoadedAt: t0.Add(-2 * time.Hour)}
	if f.state == degraded {
		c.LastReloadAt = at(-10 * time.Minute)
		c.LastReloadError = `/etc/mwi/mwid.yaml: line 4: unknown field "isuer"`
	}
	return c
}

func (f *fakeBackend) Status() api.Status {
	f.called()
	if f.state == notJoined {
		return api.Status{
			State:       "joining",
			Issuer:      testIssuer,
			Credentials: []api.Credential{},
			Outputs:     []api.Output{},
			LastError:   "join: issuer.example.com:8443: connection refused",
			LastErrorAt: at(-time.Minute),
			Config:      f.configStatus(),
		}
	}
	st := api.Status{
		Joined:     true,
		State:      "ready",
		Bot:        "web",
		Instance:   "7f3c9a12",
		Generation: 42,
		Issuer:     testIssuer,
		Credentials: []api.Credential{
			{Kind: "identity", ValidAfter: t0.Add(-time.Hour), Expires: t0.Add(7 * time.Hour)},
			{Kind: "ssh", Principals: []string{"deploy", "ansible"}, ValidAfter: t0.Add(-time.Hour), Expires: t0.Add(7 * time.Hour)},
			{Kind: "ssh_host", Principals: []string{"web1.example.com"}, ValidAfter: t0.Add(-time.Hour), Expires: t0.Add(7 * time.Hour)},
		},
		Outputs: []api.Output{
			{Type: "ssh_host", Path: "/etc/ssh/ssh_host_ed25519_key-cert.pub", LastWrite: at(-time.Hour),
				AccessDir: &api.AccessDirStatus{Path: "/var/lib/mwi/ssh", LastWrite: at(-10 * time.Second), LocksUpdated: at(-2 * time.Second), Locks: 1}},
		},
		LastRenewal: at(-time.Hour),
		NextRenewal: at(3 * time.Hour),
		Config:      f.configStatus(),
	}
	if f.state == degraded {
		st.State = "degraded"
		st.NextRenewal = at(time.Minute)
		st.LastError = "renew: issuer.example.com:8443: i/o timeout"
		st.LastErrorAt = at(-time.Minute)
		st.Outputs[0].LastError = "write /etc/ssh/ssh_host_ed25519_key-cert.pub: read-only file system"
		st.Outputs[0].LastErrorAt = at(-time.Minute)
		st.Outputs[0].AccessDir.LastError = "write /var/lib/mwi/ssh/access.json: read-only file system"
		st.Outputs[0].AccessDir.PollError = "issuer.example.com:8443: connection refused"
	}
	if f.state == refused {
		st.State = "refused"
		st.NextRenewal = at(5 * time.Minute)
		st.LastError = "renew: issuer refused: bot web is locked: decommissioned (bot_locked)"
		st.LastErrorAt = at(-time.Minute)
		st.Refusal = &api.Refusal{
			Code:    api.CodeBotLocked,
			Message: "bot web is locked: decommissioned",
			Action:  "an operator must lift the bot's lock on the issuer, then run mwictl renew",
		}
	}
	return st
}

func (f *fakeBackend) Readiness() api.Readiness {
	f.called()
	if f.state == notJoined {
		return api.Readiness{State: "joining", Credentials: []api.CredentialRead{}}
	}
	state := "ready"
	if f.state == refused {
		state = "refused"
	}
	return api.Readiness{
		Ready: true,
		State: state,
		Credentials: []api.CredentialRead{
			{Kind: "identity", Valid: true, Expires: t0.Add(7 * time.Hour)},
			{Kind: "ssh", Valid: true, Expires: t0.Add(7 * time.Hour)},
		},
	}
}

func (f *fakeBackend) Identity() (api.Identity, error) {
	f.called()
	if f.state == notJoined {
		return api.Identity{}, localapi.NotJoined()
	}
	return api.Identity{
		Bot:         "web",
		Instance:    "7f3c9a12",
		Certificate: testCert,
		KeyID:       "web/7f3c9a12",
		Serial:      testSerial,
		Principals:  []string{"deploy", "ansible"},
		ValidAfter:  t0.Add(-time.Hour).Truncate(time.Second),
		ValidBefore: t0.Add(7 * time.Hour).Truncate(time.Second),
	}, nil
}

func (f *fakeBackend) KnownHosts(hosts []string) (string, error) {
	f.called()
	if f.state == notJoined {
		return "", localapi.NotJoined()
	}
	patterns := "*.example.com,[*.example.com]:*"
	if len(hosts) > 0 {
		var p []string
		for _, h := range hosts {
			p = append(p, h, "["+h+"]:*")
		}
		patterns = strings.Join(p, ",")
	}
	return "@cert-authority " + patterns + " " + testCAKey + "\n", nil
}

func (f *fakeBackend) SSHNodes(ctx context.Context) (api.SSHNodes, error) {
	f.called()
	switch {
	case f.state == notJoined:
		return api.SSHNodes{}, localapi.NotJoined()
	case f.nodesErr != nil:
		return api.SSHNodes{}, f.nodesErr
	}
	return api.SSHNodes{Bot: "web", Agent: "/run/mwi/agent.sock", Nodes: []api.ReachableNode{
		{Name: "web-01", Names: []string{"web-01", "web-01.example.com"}, Labels: map[string]string{"env": "prod"}, Logins: []string{"deploy"}},
	}}, nil
}

func (f *fakeBackend) SSHConfig(mwictl string) (string, error) {
	f.called()
	f.mu.Lock()
	f.mwictl = append(f.mwictl, mwictl)
	f.mu.Unlock()
	if f.state == notJoined {
		return "", localapi.NotJoined()
	}
	if mwictl == "" {
		mwictl = "mwictl"
	}
	return "Host *.example.com\n" +
		"    IdentityAgent /run/mwi/agent.sock\n" +
		"    KnownHostsCommand " + mwictl + " --socket /run/mwi/api.sock known-hosts\n", nil
}

func (f *fakeBackend) SSHHostOutputs() []api.SSHHostOutput {
	f.called()
	if f.state == notJoined {
		return []api.SSHHostOutput{}
	}
	return []api.SSHHostOutput{{HostKey: "/etc/ssh/ssh_host_ed25519_key.pub", Certificate: "/etc/ssh/ssh_host_ed25519_key-cert.pub",
		AccessDir: "/var/lib/mwi/ssh", Labels: map[string]string{"env": "prod"}}}
}

func (f *fakeBackend) ReportSSHRefusal(r api.SSHRefusal) {
	f.called()
	f.mu.Lock()
	f.refusals = append(f.refusals, r)
	f.mu.Unlock()
}

func (f *fakeBackend) Renew(ctx context.Context) (api.Status, error) {
	f.called()
	if f.state == notJoined {
		return api.Status{}, localapi.NotJoined()
	}
	if f.renewErr != nil {
		return api.Status{}, f.renewErr
	}
	st := f.Status()
	st.Renewal = &api.RenewOutcome{Shared: true, CompletedAt: time.Now(), Message: "answered by the renewal under way when the request arrived"}
	return st, nil
}

func (f *fakeBackend) Reload() (api.ReloadResult, error) {
	f.called()
	if f.reloadErr != nil {
		return api.ReloadResult{}, f.reloadErr
	}
	return api.ReloadResult{Changed: true, Revision: "4b1d9e77"}, nil
}

func (f *fakeBackend) sshConfigArgs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.mwictl)
}

func (f *fakeBackend) callCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// The failures the fakes return.
var (
	errRenew = fault.Upstream(api.CodeRenewFailed,
		"issuer %s: bot_locked: bot web is locked", testIssuer)
	errNodes = fault.Upstream(api.CodeIssuerFailed,
		"the issuer did not list the nodes: issuer %s: connection refused", testIssuer)
	errNoSSH  = fault.NotFound(api.CodeNotFound, "bot web has no SSH user certificate: its roles allow no logins")
	errReload = fault.FailedPrecondition(api.CodeReloadFailed,
		`/etc/mwi/mwid.yaml: line 4: unknown field "isuer"`)
	// errSecret is an error that is not a *fault.Error: its text must
	// not reach the caller.
	errSecret = errors.New("open /etc/mwi/secret.key: permission denied")
)

func newLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), nil))
}

// denyAll stands in for mwid's peer-credential check refusing the caller.
func denyAll(log *slog.Logger) func(http.Handler) http.Handler {
	return func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			httpjson.WriteError(w, log, fault.Denied(api.CodeAccessDenied,
				"uid 1001 gid 1001 may not use mwid's API"))
		})
	}
}

// serve sends one request to the real route table over b.
func serve(t *testing.T, b localapi.Backend, method, target string, mws ...func(http.Handler) http.Handler) *httptest.ResponseRecorder {
	t.Helper()
	h := localapi.Routes(b, metrics.New().Handler(), newLogger(t), mws...)
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, "http://mwid"+target, nil))
	return rec
}

// decodeStrict decodes body into v, refusing unknown fields and trailing data.
func decodeStrict(t *testing.T, body []byte, v any) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		t.Fatalf("decode %T: %v\nbody: %s", v, err, body)
	}
	if dec.More() {
		t.Fatalf("decode %T: data after the JSON value\nbody: %s", v, body)
	}
}

func TestRoutes(t *testing.T) {
	type check func(t *testing.T, rec *httptest.ResponseRecorder)

	jsonBody := func(v any, want func(t *testing.T, v any)) check {
		return func(t *testing.T, rec *httptest.ResponseRecorder) {
			decodeStrict(t, rec.Body.Bytes(), v)
			want(t, v)
		}
	}
	textContains := func(subs ...string) check {
		return func(t *testing.T, rec *httptest.ResponseRecorder) {
			for _, s := range subs {
				if !strings.Contains(rec.Body.String(), s) {
					t.Errorf("body lacks %q:\n%s", s, rec.Body)
				}
			}
		}
	}
	errorBody := func(code string, messageHas string) check {
		return func(t *testing.T, rec *httptest.ResponseRecorder) {
			var e api.ErrorBody
			decodeStrict(t, rec.Body.Bytes(), &e)
			if e.Error.Code != code {
				t.Errorf("error code %q, want %q", e.Error.Code, code)
			}
			if e.Error.Message == "" || !strings.Contains(e.Error.Message, messageHas) {
				t.Errorf("error message %q, want one containing %q", e.Error.Message, messageHas)
			}
		}
	}

	// allow checks the Allow header of a 405.
	allow := func(methods ...string) check {
		return func(t *testing.T, rec *httptest.ResponseRecorder) {
			if got := rec.Header().Values("Allow"); !slices.Equal(got, methods) {
				t.Errorf("Allow %q, want %q", got, methods)
			}
		}
	}
	both := func(checks ...check) check {
		return func(t *testing.T, rec *httptest.ResponseRecorder) {
			for _, c := range checks {
				c(t, rec)
			}
		}
	}

	const (
		ctJSON = "application/json"
		ctText = "text/plain; charset=utf-8"
	)

	tests := []struct {
		name    string
		backend *fakeBackend
		method  string
		target  string
		status  int
		ct      string // wanted Content-Type prefix
		check   check
	}{
		{
			name: "healthz", backend: &fakeBackend{state: notJoined},
			method: "GET", target: "/healthz", status: 200, ct: ctJSON,
			check: jsonBody(&map[string]string{}, func(t *testing.T, v any) {
				if got := *v.(*map[string]string); got["status"] != "ok" || len(got) != 1 {
					t.Errorf("body %v, want status ok", got)
				}
			}),
		},
		{
			name: "readyz ready", backend: &fakeBackend{state: ready},
			method: "GET", target: "/readyz", status: 200, ct: ctJSON,
			check: jsonBody(&api.Readiness{}, func(t *testing.T, v any) {
				if rd := v.(*api.Readiness); !rd.Ready || len(rd.Credentials) != 2 {
					t.Errorf("readiness %+v", rd)
				}
			}),
		},
		{
			name: "readyz not joined", backend: &fakeBackend{state: notJoined},
			method: "GET", target: "/readyz", status: 503, ct: ctJSON,
			check: jsonBody(&api.Readiness{}, func(t *testing.T, v any) {
				if rd := v.(*api.Readiness); rd.Ready || rd.State != "joining" {
					t.Errorf("readiness %+v", rd)
				}
			}),
		},
		{
			name: "metrics", backend: &fakeBackend{state: ready},
			method: "GET", target: "/metrics", status: 200, ct: "text/plain",
			check: textContains("# TYPE mwid_agent_requests_total counter", "go_goroutines"),
		},
		{
			name: "status ready", backend: &fakeBackend{state: ready},
			method: "GET", target: "/v1/status", status: 200, ct: ctJSON,
			check: jsonBody(&api.Status{}, func(t *testing.T, v any) {
				if st := v.(*api.Status); !st.Joined || st.Bot != "web" || len(st.Credentials) != 3 {
					t.Errorf("status %+v", st)
				}
			}),
		},
		{
			name: "status not joined", backend: &fakeBackend{state: notJoined},
			method: "GET", target: "/v1/status", status: 200, ct: ctJSON,
			check: jsonBody(&api.Status{}, func(t *testing.T, v any) {
				if st := v.(*api.Status); st.Joined || st.State != "joining" {
					t.Errorf("status %+v", st)
				}
			}),
		},
		{
			name: "identity", backend: &fakeBackend{state: ready},
			method: "GET", target: "/v1/identity", status: 200, ct: ctJSON,
			check: jsonBody(&api.Identity{}, func(t *testing.T, v any) {
				// The serial survives the round trip exactly, above 2^63.
				if id := v.(*api.Identity); id.Serial != testSerial || id.Certificate != testCert {
					t.Errorf("identity %+v", id)
				}
			}),
		},
		{
			name: "identity not joined", backend: &fakeBackend{state: notJoined},
			method: "GET", target: "/v1/identity", status: 503, ct: ctJSON,
			check: errorBody(api.CodeNotJoined, "not joined"),
		},
		{
			name: "known_hosts", backend: &fakeBackend{state: ready},
			method: "GET", target: "/v1/ssh/known_hosts", status: 200, ct: ctText,
			check: textContains("@cert-authority *.example.com,[*.example.com]:* " + testCAKey + "\n"),
		},
		{
			name: "known_hosts not joined", backend: &fakeBackend{state: notJoined},
			method: "GET", target: "/v1/ssh/known_hosts", status: 503, ct: ctJSON,
			check: errorBody(api.CodeNotJoined, "not joined"),
		},
		{
			name: "ssh config", backend: &fakeBackend{state: ready},
			method: "GET", target: "/v1/ssh/config?mwictl=/usr/local/bin/mwictl", status: 200, ct: ctText,
			check: textContains("KnownHostsCommand /usr/local/bin/mwictl --socket"),
		},
		{
			name: "ssh config not joined", backend: &fakeBackend{state: notJoined},
			method: "GET", target: "/v1/ssh/config", status: 503, ct: ctJSON,
			check: errorBody(api.CodeNotJoined, "not joined"),
		},
		{
			name: "renew", backend: &fakeBackend{state: ready},
			method: "POST", target: "/v1/renew", status: 200, ct: ctJSON,
			check: jsonBody(&api.Status{}, func(t *testing.T, v any) {
				if st := v.(*api.Status); !st.Joined || st.State != "ready" {
					t.Errorf("status %+v", st)
				}
			}),
		},
		{
			name: "renew failed", backend: &fakeBackend{state: degraded, renewErr: errRenew},
			method: "POST", target: "/v1/renew", status: 502, ct: ctJSON,
			check: errorBody(api.CodeRenewFailed, "bot web is locked"),
		},
		{
			name: "renew not joined", backend: &fakeBackend{state: notJoined},
			method: "POST", target: "/v1/renew", status: 503, ct: ctJSON,
			check: errorBody(api.CodeNotJoined, "not joined"),
		},
		{
			name: "reload", backend: &fakeBackend{state: ready},
			method: "POST", target: "/v1/reload", status: 200, ct: ctJSON,
			check: jsonBody(&api.ReloadResult{}, func(t *testing.T, v any) {
				if res := v.(*api.ReloadResult); !res.Changed || res.Revision != "4b1d9e77" {
					t.Errorf("reload result %+v", res)
				}
			}),
		},
		{
			name: "reload failed", backend: &fakeBackend{state: ready, reloadErr: errReload},
			method: "POST", target: "/v1/reload", status: 422, ct: ctJSON,
			check: errorBody(api.CodeReloadFailed, `unknown field "isuer"`),
		},
		{
			name: "internal error hides its text", backend: &fakeBackend{state: ready, reloadErr: errSecret},
			method: "POST", target: "/v1/reload", status: 500, ct: ctJSON,
			check: func(t *testing.T, rec *httptest.ResponseRecorder) {
				errorBody(api.CodeInternal, "internal error")(t, rec)
				if strings.Contains(rec.Body.String(), "secret") {
					t.Errorf("internal error leaked its text: %s", rec.Body)
				}
			},
		},
		{
			name: "unknown route", backend: &fakeBackend{state: ready},
			method: "GET", target: "/v1/nope", status: 404, ct: ctJSON,
			check: errorBody(api.CodeNotFound, "/v1/nope"),
		},
		{
			name: "unknown route with a known prefix", backend: &fakeBackend{state: ready},
			method: "GET", target: "/v1/status/extra", status: 404, ct: ctJSON,
			check: errorBody(api.CodeNotFound, "/v1/status/extra"),
		},
		{
			name: "GET on a POST route", backend: &fakeBackend{state: ready},
			method: "GET", target: "/v1/renew", status: 405, ct: ctJSON,
			check: both(errorBody(api.CodeBadRequest, "GET"), allow("POST")),
		},
		{
			name: "POST on a GET route", backend: &fakeBackend{state: ready},
			method: "POST", target: "/v1/status", status: 405, ct: ctJSON,
			check: both(errorBody(api.CodeBadRequest, "POST"), allow("GET")),
		},
		{
			name: "DELETE on metrics", backend: &fakeBackend{state: ready},
			method: "DELETE", target: "/metrics", status: 405, ct: ctJSON,
			check: both(errorBody(api.CodeBadRequest, "DELETE"), allow("GET")),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rec := serve(t, tc.backend, tc.method, tc.target)
			if rec.Code != tc.status {
				t.Fatalf("%s %s: status %d, want %d; body: %s", tc.method, tc.target, rec.Code, tc.status, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, tc.ct) {
				t.Errorf("Content-Type %q, want %q", ct, tc.ct)
			}
			tc.check(t, rec)
		})
	}
}

// TestSSHConfigQuery checks that the mwictl query parameter reaches
// Backend.SSHConfig, decoded, and that its absence passes "".
func TestSSHConfigQuery(t *testing.T) {
	tests := []struct {
		target string
		want   string
	}{
		{"/v1/ssh/config?mwictl=/usr/local/bin/mwictl", "/usr/local/bin/mwictl"},
		{"/v1/ssh/config?mwictl=%2Fopt%2Fmy%20tools%2Fmwictl", "/opt/my tools/mwictl"},
		{"/v1/ssh/config?mwictl=", ""},
		{"/v1/ssh/config", ""},
		{"/v1/ssh/config?other=x", ""},
	}
	for _, tc := range tests {
		b := &fakeBackend{state: ready}
		rec := serve(t, b, "GET", tc.target)
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: status %d: %s", tc.target, rec.Code, rec.Body)
		}
		if got := b.sshConfigArgs(); len(got) != 1 || got[0] != tc.want {
			t.Errorf("GET %s: SSHConfig called with %q, want [%q]", tc.target, got, tc.want)
		}
	}
}

// TestMiddlewaresRunFirst checks that Routes' middlewares see every
// request, known route or not, before any handler or the backend does.
func TestMiddlewaresRunFirst(t *testing.T) {
	for _, req := range []struct{ method, target string }{
		{"GET", "/healthz"},
		{"GET", "/v1/status"},
		{"POST", "/v1/renew"},
		{"GET", "/v1/nope"},
		{"DELETE", "/v1/status"},
	} {
		b := &fakeBackend{state: ready}
		rec := serve(t, b, req.method, req.target, denyAll(newLogger(t)))
		if rec.Code != http.StatusForbidden {
			t.Errorf("%s %s: status %d, want 403", req.method, req.target, rec.Code)
			continue
		}
		var e api.ErrorBody
		decodeStrict(t, rec.Body.Bytes(), &e)
		if e.Error.Code != api.CodeAccessDenied {
			t.Errorf("%s %s: code %q, want %q", req.method, req.target, e.Error.Code, api.CodeAccessDenied)
		}
		if n := b.callCount(); n != 0 {
			t.Errorf("%s %s: backend called %d times behind a refusing middleware", req.method, req.target, n)
		}
	}
}

// TestMetricsMiddleware checks the metrics middleware inside the real route
// table: requests count by route pattern, unknown routes as "unmatched".
func TestMetricsMiddleware(t *testing.T) {
	m := metrics.New()
	h := localapi.Routes(&fakeBackend{state: notJoined}, m.Handler(), newLogger(t), m.Middleware)
	for _, target := range []string{"/v1/status", "/v1/status", "/v1/identity", "/v1/nope"} {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "http://mwid"+target, nil))
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "http://mwid/metrics", nil))
	for _, want := range []string{
		`mwid_api_requests_total{code="200",route="/v1/status"} 2`,
		`mwid_api_requests_total{code="503",route="/v1/identity"} 1`,
		`mwid_api_requests_total{code="404",route="unmatched"} 1`,
	} {
		if !strings.Contains(rec.Body.String(), want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}
