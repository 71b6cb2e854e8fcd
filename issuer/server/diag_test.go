package server

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	neturl "net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/internal/pgtest"
	"github.com/mwi-project/mwi/issuer/ca"
)

// TestCheckDiagAddr checks what CheckDiagAddr adds to diag.CheckAddr,
// whose test covers the addresses: a refusal names the diagnostics
// address and the flag that allows another, and allowRemote is passed on.
func TestCheckDiagAddr(t *testing.T) {
	if err := CheckDiagAddr("127.0.0.1:9443", false); err != nil {
		t.Errorf("loopback refused: %v", err)
	}
	err := CheckDiagAddr("0.0.0.0:9443", false)
	if err == nil || !strings.HasPrefix(err.Error(), "diagnostics address") || !strings.Contains(err.Error(), "--diag-allow-remote") {
		t.Errorf("CheckDiagAddr(0.0.0.0:9443) = %v, want a refusal naming the diagnostics address and --diag-allow-remote", err)
	}
	if err := CheckDiagAddr("0.0.0.0:9443", true); err != nil {
		t.Errorf("allowRemote not passed on: %v", err)
	}
}

// newDiagServer starts no listener: it returns the issuer made by New on
// a new state directory with the store at location ("" for bbolt), and
// its diagnostics routes.
func newDiagIssuer(t *testing.T, location string) (*Server, http.Handler) {
	t.Helper()
	state := t.TempDir()
	if err := ca.Init(state, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig(state)
	if err := os.Mkdir(cfg.ResourcesDir, 0o700); err != nil {
		t.Fatal(err)
	}
	cfg.Store = location
	cfg.AuditLog = filepath.Join(state, "audit.log")
	cfg.DiagAddr = "127.0.0.1:0"
	s, err := New(cfg, discardLog())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, s.diagRoutes()
}

func getReadiness(t *testing.T, h http.Handler, path string) (int, readiness) {
	t.Helper()
	res, body := serve(t, h, httptest.NewRequest(http.MethodGet, path, nil))
	var r readiness
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatalf("%s: %d %s: %v", path, res.StatusCode, body, err)
	}
	return res.StatusCode, r
}

// TestDiagRoutes checks /livez, /readyz and /metrics of an issuer on its
// default bbolt store.
func TestDiagRoutes(t *testing.T) {
	_, h := newDiagIssuer(t, "")
	if code, r := getReadiness(t, h, "/livez"); code != http.StatusOK || r.Status != "ok" {
		t.Errorf("livez = %d %+v", code, r)
	}
	code, r := getReadiness(t, h, "/readyz")
	if code != http.StatusOK || r.Status != "ok" {
		t.Errorf("readyz = %d %+v", code, r)
	}
	var names []string
	for _, c := range r.Checks {
		names = append(names, c.Name)
	}
	if got, want := strings.Join(names, ","), "store,authorities,resources,audit"; got != want {
		t.Errorf("readyz checks %s, want %s", got, want)
	}
	res, body := serve(t, h, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if res.StatusCode != http.StatusOK {
		t.Fatalf("metrics = %d", res.StatusCode)
	}
	for _, want := range []string{
		"mwi_issuer_build_info{", `mwi_issuer_ca_expiry_timestamp_seconds{ca="identity"}`,
		"mwi_issuer_serving_certificate_expiry_timestamp_seconds ", `mwi_issuer_locks{kind="bot"} 0`,
		`mwi_issuer_store_operation_duration_seconds_count{operation="probe"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	res, _ = serve(t, h, httptest.NewRequest(http.MethodPost, "/readyz", nil))
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST /readyz = %d", res.StatusCode)
	}
}

// TestResourcesLoadMetric checks that a rejected resource set shows in
// mwi_issuer_resources_last_load_successful while the previous set
// serves, and that the next good load clears it.
func TestResourcesLoadMetric(t *testing.T) {
	s, h := newDiagIssuer(t, "")
	metric := func() string {
		t.Helper()
		_, body := serve(t, h, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		for _, line := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(line, "mwi_issuer_resources_last_load_successful ") {
				return line
			}
		}
		t.Fatal("no mwi_issuer_resources_last_load_successful")
		return ""
	}
	if got := metric(); got != "mwi_issuer_resources_last_load_successful 1" {
		t.Errorf("at start: %s", got)
	}
	bad := filepath.Join(s.cfg.ResourcesDir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("kind: bot\nversion: v1\nmetadata: {name: b}\nspec: {roles: [missing]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.reload(time.Millisecond); err == nil {
		t.Fatal("a bot with an unknown role loaded")
	}
	if got := metric(); got != "mwi_issuer_resources_last_load_successful 0" {
		t.Errorf("after a rejected set: %s", got)
	}
	if code, r := getReadiness(t, h, "/readyz"); code != http.StatusOK {
		t.Errorf("readyz = %d %+v: the previous set still serves", code, r)
	}
	if err := os.Remove(bad); err != nil {
		t.Fatal(err)
	}
	if err := s.reload(time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if got := metric(); got != "mwi_issuer_resources_last_load_successful 1" {
		t.Errorf("after a good set: %s", got)
	}
}

// TestReadyzStoreUnwritable checks that /readyz answers 503, naming the
// store and why, while the PostgreSQL database refuses writes although it
// still answers reads (as /healthz asks), that /livez stays 200, and that
// /readyz is 200 again once the database takes writes.
func TestReadyzStoreUnwritable(t *testing.T) {
	srv := pgtest.StartT(t)
	url, err := srv.CreateDatabase("ready", "")
	if err != nil {
		t.Fatal(err)
	}
	s, h := newDiagIssuer(t, url)
	if code, r := getReadiness(t, h, "/readyz"); code != http.StatusOK {
		t.Fatalf("readyz = %d %+v before any failure", code, r)
	}
	if err := pgtest.SetReadOnly(url, true); err != nil {
		t.Fatal(err)
	}
	// The pool's sessions were ended; the first request may see that
	// rather than the read-only database. Each request is one probe.
	var code int
	var r readiness
	for range 10 {
		if code, r = getReadiness(t, h, "/readyz"); code == http.StatusServiceUnavailable && strings.Contains(r.Checks[0].Reason, "read-only") {
			break
		}
	}
	if code != http.StatusServiceUnavailable || r.Status != "unavailable" || r.Checks[0].Name != "store" || r.Checks[0].OK ||
		!strings.Contains(r.Checks[0].Reason, "read-only") {
		t.Fatalf("readyz of a read-only store = %d %+v, want 503 naming the store as read-only", code, r)
	}
	for _, c := range r.Checks[1:] {
		if !c.OK {
			t.Errorf("check %s failed with the store: %s", c.Name, c.Reason)
		}
	}
	if err := s.auth.StoreHealth(t.Context()); err != nil {
		t.Errorf("the read-only store does not answer reads (%v): the test checks writes", err)
	}
	if code, _ := getReadiness(t, h, "/livez"); code != http.StatusOK {
		t.Errorf("livez = %d while the store is read-only", code)
	}
	if err := pgtest.SetReadOnly(url, false); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if code, r = getReadiness(t, h, "/readyz"); code == http.StatusOK {
			break
		}
	}
	if code != http.StatusOK || r.Status != "ok" {
		t.Fatalf("readyz once the store takes writes again = %d %+v", code, r)
	}
	_, body := serve(t, h, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if !strings.Contains(string(body), `mwi_issuer_store_errors_total{operation="probe"}`) {
		t.Errorf("metrics do not count the failed probes:\n%s", body)
	}
}

// TestReadyzStoreDownTellsNoAddress checks that /readyz, which anyone on
// the machine may read (and anyone at all with --diag-allow-remote), says
// that the database cannot be reached and why, as the API's refusals do,
// without its address, user or database name.
func TestReadyzStoreDownTellsNoAddress(t *testing.T) {
	srv := pgtest.StartT(t)
	url, err := srv.CreateDatabase("secretdb", "")
	if err != nil {
		t.Fatal(err)
	}
	_, h := newDiagIssuer(t, url)
	if code, r := getReadiness(t, h, "/readyz"); code != http.StatusOK {
		t.Fatalf("readyz = %d %+v before any failure", code, r)
	}
	srv.Stop()
	u, err := neturl.Parse(url)
	if err != nil {
		t.Fatal(err)
	}
	// The first probes may meet the sessions the server ended; the next
	// ones fail to connect. Every reason is checked.
	var reason string
	for range 5 {
		code, r := getReadiness(t, h, "/readyz")
		if code != http.StatusServiceUnavailable || r.Checks[0].Name != "store" || r.Checks[0].OK {
			t.Fatalf("readyz with the database down = %d %+v, want 503 naming the store", code, r)
		}
		reason = r.Checks[0].Reason
		for _, secret := range []string{u.Host, u.Hostname(), u.Port(), u.User.Username(), "secretdb"} {
			if secret != "" && strings.Contains(reason, secret) {
				t.Errorf("readyz's reason %q shows %q of the store's URL", reason, secret)
			}
		}
	}
	if !strings.Contains(reason, "cannot reach") {
		t.Errorf("readyz's reason %q does not say the database cannot be reached", reason)
	}
}
