package metrics_test

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"golang.org/x/crypto/ssh"
	sshagent "golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/daemon/agent"
	"github.com/mwi-project/mwi/daemon/metrics"
)

// source is an agent.Source holding fixed identities.
type source struct{ ids []agent.Identity }

func (s *source) Identities() []agent.Identity { return s.ids }

func (s *source) HostCAs() []ssh.PublicKey { return nil }

// newIdentity returns an ed25519 identity whose certificate is valid for
// an hour around now.
func newIdentity(t testing.TB) agent.Identity {
	t.Helper()
	_, caKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := ssh.NewSignerFromKey(caKey)
	if err != nil {
		t.Fatal(err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	cert := &ssh.Certificate{
		Key:             signer.PublicKey(),
		Serial:          1,
		CertType:        ssh.UserCert,
		KeyId:           "bot-web/instance-1",
		ValidPrincipals: []string{"deploy"},
		ValidAfter:      uint64(now.Add(-time.Hour).Unix()),
		ValidBefore:     uint64(now.Add(time.Hour).Unix()),
	}
	if err := cert.SignCert(rand.Reader, ca); err != nil {
		t.Fatal(err)
	}
	return agent.Identity{Cert: cert, Signer: signer}
}

func newAgent(t testing.TB) (*agent.Agent, agent.Identity) {
	id := newIdentity(t)
	a := agent.New(&source{ids: []agent.Identity{id}}, nil)
	// These tests count requests; they sign without binding a session.
	a.SetAllowUnbound(true)
	return a, id
}

// scrape returns the exposition served by m's handler.
func scrape(t *testing.T, m *metrics.Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("scrape: status %d: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Fatalf("scrape: Content-Type %q, want text/plain", ct)
	}
	return rec.Body.String()
}

// wantSamples fails unless every line of want appears in the exposition.
func wantSamples(t *testing.T, exposition string, want ...string) {
	t.Helper()
	lines := make(map[string]bool)
	for l := range strings.Lines(exposition) {
		lines[strings.TrimSuffix(l, "\n")] = true
	}
	for _, w := range want {
		if !lines[w] {
			t.Errorf("exposition lacks %q", w)
		}
	}
	if t.Failed() {
		t.Logf("exposition:\n%s", exposition)
	}
}

func TestAgentRequests(t *testing.T) {
	m := metrics.New()
	a, id := newAgent(t)
	ia := m.InstrumentAgent(a)

	keys, err := ia.List()
	if err != nil || len(keys) != 1 {
		t.Fatalf("List = %d keys, %v", len(keys), err)
	}
	pub, err := ssh.ParsePublicKey(keys[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := ia.Sign(pub, []byte("data")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := ia.SignWithFlags(pub, []byte("data"), 0); err != nil {
		t.Fatal(err)
	}
	// A key the agent does not hold.
	if _, err := ia.Sign(id.Signer.PublicKey(), []byte("data")); err == nil {
		t.Fatal("Sign with an unknown key succeeded")
	}
	if _, err := ia.Signers(); err != nil {
		t.Fatal(err)
	}
	// The read-only agent refuses every change.
	if err := ia.Add(sshagent.AddedKey{}); err == nil {
		t.Fatal("Add succeeded")
	}
	if err := ia.Remove(pub); err == nil {
		t.Fatal("Remove succeeded")
	}
	if err := ia.RemoveAll(); err == nil {
		t.Fatal("RemoveAll succeeded")
	}
	if err := ia.Lock([]byte("x")); err == nil {
		t.Fatal("Lock succeeded")
	}
	if err := ia.Unlock([]byte("x")); err == nil {
		t.Fatal("Unlock succeeded")
	}
	if _, err := ia.Extension("query", nil); !errors.Is(err, sshagent.ErrExtensionUnsupported) {
		t.Fatalf("Extension(query) = %v, want ErrExtensionUnsupported", err)
	}

	wantSamples(t, scrape(t, m),
		`mwid_agent_requests_total{result="success",type="list"} 1`,
		`mwid_agent_requests_total{result="success",type="sign"} 4`,
		`mwid_agent_requests_total{result="failure",type="sign"} 1`,
		`mwid_agent_requests_total{result="success",type="signers"} 1`,
		`mwid_agent_requests_total{result="failure",type="add"} 1`,
		`mwid_agent_requests_total{result="failure",type="remove"} 1`,
		`mwid_agent_requests_total{result="failure",type="remove_all"} 1`,
		`mwid_agent_requests_total{result="failure",type="lock"} 1`,
		`mwid_agent_requests_total{result="failure",type="unlock"} 1`,
		`mwid_agent_requests_total{result="failure",type="extension"} 1`,
		// Every series exists from the start, so rate() works from the
		// first scrape.
		`mwid_agent_requests_total{result="success",type="extension"} 0`,
		`mwid_agent_requests_total{result="failure",type="list"} 0`,
	)
}

// TestAgentOverSocket checks that the wrapper is a complete ExtendedAgent:
// the x/crypto agent server and client drive it over a real connection.
func TestAgentOverSocket(t *testing.T) {
	m := metrics.New()
	a, _ := newAgent(t)
	ia := m.InstrumentAgent(a)

	c1, c2 := netPipe(t)
	go sshagent.ServeAgent(ia, c2)
	client := sshagent.NewClient(c1)
	keys, err := client.List()
	if err != nil || len(keys) != 1 {
		t.Fatalf("List = %d keys, %v", len(keys), err)
	}
	if _, err := client.SignWithFlags(keys[0], []byte("data"), 0); err != nil {
		t.Fatal(err)
	}
	if err := client.RemoveAll(); err == nil {
		t.Fatal("RemoveAll succeeded")
	}
	wantSamples(t, scrape(t, m),
		`mwid_agent_requests_total{result="success",type="list"} 1`,
		`mwid_agent_requests_total{result="success",type="sign"} 1`,
		`mwid_agent_requests_total{result="failure",type="remove_all"} 1`,
	)
}

func TestMiddleware(t *testing.T) {
	m := metrics.New()
	r := chi.NewRouter()
	r.Use(m.Middleware)
	r.Get("/v1/status", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	r.Get("/v1/things/{name}", func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	r.Post("/v1/renew", func(w http.ResponseWriter, r *http.Request) {})

	for _, req := range []struct{ method, path string }{
		{"GET", "/v1/status"},
		{"GET", "/v1/status"},
		{"GET", "/v1/things/a"},
		{"GET", "/v1/things/b"},
		{"POST", "/v1/renew"},
		{"GET", "/no/such/route"},
		{"GET", "/another/unknown"},
		{"DELETE", "/v1/status"},
	} {
		r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(req.method, req.path, nil))
	}
	wantSamples(t, scrape(t, m),
		`mwid_api_requests_total{code="200",route="/v1/status"} 2`,
		// Requests count by pattern, never by path.
		`mwid_api_requests_total{code="503",route="/v1/things/{name}"} 2`,
		// A handler that writes nothing answers 200.
		`mwid_api_requests_total{code="200",route="/v1/renew"} 1`,
		`mwid_api_requests_total{code="404",route="unmatched"} 2`,
		`mwid_api_requests_total{code="405",route="unmatched"} 1`,
	)
}

// TestMiddlewareBeforeRefusal checks that requests a later middleware
// answers without routing still count under their route pattern.
func TestMiddlewareBeforeRefusal(t *testing.T) {
	m := metrics.New()
	r := chi.NewRouter()
	r.Use(m.Middleware, func(http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusForbidden)
		})
	})
	r.Get("/v1/things/{name}", func(w http.ResponseWriter, r *http.Request) {})
	for _, path := range []string{"/v1/things/a", "/v1/things/b", "/nope"} {
		r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", path, nil))
	}
	r.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("POST", "/v1/things/a", nil))
	wantSamples(t, scrape(t, m),
		`mwid_api_requests_total{code="403",route="/v1/things/{name}"} 2`,
		`mwid_api_requests_total{code="403",route="unmatched"} 2`,
	)
}

// TestMiddlewareOutsideRouter checks that the middleware does not fail
// when no chi routing context exists.
func TestMiddlewareOutsideRouter(t *testing.T) {
	m := metrics.New()
	h := m.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusTeapot)
	}))
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil))
	wantSamples(t, scrape(t, m), `mwid_api_requests_total{code="418",route="unmatched"} 1`)
}

func TestRenewalAndExpiry(t *testing.T) {
	m := metrics.New()
	m.Renewal(nil, 0)
	m.Renewal(errors.New("issuer unreachable"), 1)
	m.Renewal(errors.New("issuer unreachable"), 2)
	m.SetExpiries([]metrics.Expiry{
		{Kind: "identity", At: time.Unix(1_700_000_000, 0)},
		{Kind: "ssh", At: time.Unix(1_700_003_600, 500_000_000)},
		{Kind: "ssh_host", Name: "a.example,10.0.0.1", At: time.Unix(1_700_007_200, 0)},
		{Kind: "ssh_host", Name: "b.example", At: time.Unix(1_700_010_800, 0)},
		{Kind: "kubernetes", Name: "dev", At: time.Unix(1_700_014_400, 0)},
		{Kind: "kubernetes", Name: "prod", At: time.Unix(1_700_018_000, 0)},
	})
	out := scrape(t, m)
	wantSamples(t, out,
		`mwid_renewals_total{result="success"} 1`,
		`mwid_renewals_total{result="failure"} 2`,
		`mwid_renewal_failures_consecutive 2`,
		`mwid_credential_expiry_timestamp_seconds{kind="identity",name=""} 1.7e+09`,
		`mwid_credential_expiry_timestamp_seconds{kind="ssh",name=""} 1.7000036005e+09`,
		`mwid_credential_expiry_timestamp_seconds{kind="ssh_host",name="a.example,10.0.0.1"} 1.7000072e+09`,
		`mwid_credential_expiry_timestamp_seconds{kind="ssh_host",name="b.example"} 1.7000108e+09`,
		`mwid_credential_expiry_timestamp_seconds{kind="kubernetes",name="dev"} 1.7000144e+09`,
		`mwid_credential_expiry_timestamp_seconds{kind="kubernetes",name="prod"} 1.700018e+09`,
	)

	// A credential no longer held loses its series; the others stay.
	m.Renewal(nil, 0)
	m.SetExpiries([]metrics.Expiry{
		{Kind: "identity", At: time.Unix(1_700_000_000, 0)},
		{Kind: "ssh", At: time.Unix(1_700_003_600, 500_000_000)},
		{Kind: "kubernetes", Name: "dev", At: time.Unix(1_700_014_400, 0)},
	})
	out = scrape(t, m)
	wantSamples(t, out,
		`mwid_renewals_total{result="success"} 2`,
		`mwid_renewal_failures_consecutive 0`,
		`mwid_credential_expiry_timestamp_seconds{kind="kubernetes",name="dev"} 1.7000144e+09`,
	)
	if strings.Contains(out, `kind="ssh_host"`) || strings.Contains(out, `name="prod"`) {
		t.Errorf("credentials no longer held left their series in place:\n%s", out)
	}
}

// TestRuntimeCollectors checks that the Go and process collectors are
// registered, and that each Metrics has its own registry.
func TestRuntimeCollectors(t *testing.T) {
	m1, m2 := metrics.New(), metrics.New()
	m1.Renewal(nil, 0)
	out := scrape(t, m1)
	for _, name := range []string{"go_goroutines", "go_memstats_alloc_bytes", "process_resident_memory_bytes"} {
		if !strings.Contains(out, "\n"+name+" ") {
			t.Errorf("exposition lacks %s", name)
		}
	}
	wantSamples(t, scrape(t, m2), `mwid_renewals_total{result="success"} 0`)
}

// TestAgentAllocs checks that the wrapper adds no allocation to a
// signature: counting is one atomic add on a counter resolved in New.
func TestAgentAllocs(t *testing.T) {
	if testing.CoverMode() != "" || raceEnabled {
		t.Skip("allocation counts are not meaningful under -cover or -race")
	}
	a, _ := newAgent(t)
	ia := metrics.New().InstrumentAgent(a)
	keys, err := a.List()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := ssh.ParsePublicKey(keys[0].Blob)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte("session data to sign")
	measure := func(ag sshagent.ExtendedAgent) float64 {
		return testing.AllocsPerRun(200, func() {
			if _, err := ag.SignWithFlags(pub, data, 0); err != nil {
				t.Fatal(err)
			}
		})
	}
	raw, wrapped := measure(a), measure(ia)
	if wrapped > raw {
		t.Errorf("SignWithFlags: %v allocs through the wrapper, %v without", wrapped, raw)
	}
	raw, wrapped = testing.AllocsPerRun(200, func() { a.Lock(nil) }), testing.AllocsPerRun(200, func() { ia.Lock(nil) })
	if wrapped > raw {
		t.Errorf("Lock: %v allocs through the wrapper, %v without", wrapped, raw)
	}
}

// BenchmarkAgentSign compares a signature through the real agent with and
// without the wrapper. Both must report the same allocs/op.
func BenchmarkAgentSign(b *testing.B) {
	a, _ := newAgent(b)
	keys, err := a.List()
	if err != nil {
		b.Fatal(err)
	}
	pub, err := ssh.ParsePublicKey(keys[0].Blob)
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 64)
	for _, bc := range []struct {
		name string
		ag   sshagent.ExtendedAgent
	}{
		{"raw", a},
		{"instrumented", metrics.New().InstrumentAgent(a)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := bc.ag.SignWithFlags(pub, data, 0); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkAgentOverhead measures the wrapper alone, around an agent that
// does nothing: the cost of counting one request.
func BenchmarkAgentOverhead(b *testing.B) {
	ia := metrics.New().InstrumentAgent(nopAgent{})
	b.ReportAllocs()
	for b.Loop() {
		ia.SignWithFlags(nil, nil, 0)
	}
}

// nopAgent answers every request at once, without allocating.
type nopAgent struct{}

var nopSig = &ssh.Signature{Format: "ssh-ed25519"}

func (nopAgent) List() ([]*sshagent.Key, error)                     { return nil, nil }
func (nopAgent) Sign(ssh.PublicKey, []byte) (*ssh.Signature, error) { return nopSig, nil }
func (nopAgent) SignWithFlags(ssh.PublicKey, []byte, sshagent.SignatureFlags) (*ssh.Signature, error) {
	return nopSig, nil
}
func (nopAgent) Add(sshagent.AddedKey) error              { return nil }
func (nopAgent) Remove(ssh.PublicKey) error               { return nil }
func (nopAgent) RemoveAll() error                         { return nil }
func (nopAgent) Lock([]byte) error                        { return nil }
func (nopAgent) Unlock([]byte) error                      { return nil }
func (nopAgent) Signers() ([]ssh.Signer, error)           { return nil, nil }
func (nopAgent) Extension(string, []byte) ([]byte, error) { return nil, nil }

func TestNopAgentOverheadAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are not meaningful under -race")
	}
	ia := metrics.New().InstrumentAgent(nopAgent{})
	if allocs := testing.AllocsPerRun(1000, func() {
		ia.SignWithFlags(nil, nil, 0)
		ia.List()
		ia.Extension("x", nil)
	}); allocs != 0 {
		t.Errorf("wrapper allocates %v times per request", allocs)
	}
}

// netPipe returns the two ends of a Unix socket connection, as the agent
// socket would give.
func netPipe(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c1, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c1.Close(); c2.Close() })
	return c1, c2
}
