package integration

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/deploy"
	"github.com/mwi-project/mwi/integration/harness"
)

// diagGet fetches path from a diagnostics listener at addr.
func diagGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	res, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatalf("GET %s%s: %v", addr, path, err)
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(body)
}

// TestDiagListeners runs mwi-issuer serve --diag-addr and mwid with
// diag_addr, and checks their /livez, /readyz and /metrics: both are
// ready once mwid has joined, and between them they export every metric
// that the alert rules and the dashboard in deploy/ use. A reload that
// moves mwid's listener is refused.
func TestDiagListeners(t *testing.T) {
	t.Parallel()
	issuerDiag := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	mwidDiag := fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	iss := harness.StartIssuerWith(t, resources(harness.CurrentUser(t)), harness.IssuerOptions{Args: []string{"--diag-addr", issuerDiag}})
	out := filepath.Join(t.TempDir(), "identity")
	d := harness.StartDaemon(t, iss, harness.DaemonOptions{
		Token: iss.CreateToken(t, "ci", time.Hour),
		Extra: fmt.Sprintf("diag_addr: %s\noutputs:\n  - type: identity\n    directory: %s\n", mwidDiag, out),
	})
	d.WaitState(t, "ready", 20*time.Second)
	// A refused join, for the issuer's denials.
	// Which issuer answers does not matter here: the test only needs
	// the refusal counted.
	insecure := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	res, err := insecure.Post("https://"+iss.Addr+"/v1/join", "application/json",
		strings.NewReader(`{"join_method":"token","token":"not-a-token","keys":{}}`))
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusBadRequest {
		t.Fatalf("a join without keys = %d, want 400", res.StatusCode)
	}

	for _, addr := range []string{issuerDiag, mwidDiag} {
		for _, path := range []string{"/livez", "/readyz"} {
			if code, body := diagGet(t, addr, path); code != http.StatusOK {
				t.Errorf("%s%s = %d %s", addr, path, code, body)
			}
		}
	}
	_, issuerMetrics := diagGet(t, issuerDiag, "/metrics")
	_, mwidMetrics := diagGet(t, mwidDiag, "/metrics")
	for _, want := range []string{
		`mwi_issuer_joins_total{method="token",outcome="allowed"} 1`,
		`mwi_issuer_denials_total{event="join",reason="bad_request"} 1`,
		"mwi_issuer_build_info{",
	} {
		if !strings.Contains(issuerMetrics, want) {
			t.Errorf("the issuer's metrics lack %s", want)
		}
	}
	for _, want := range []string{"mwid_build_info{", `mwid_renewals_total{result="success"} 1`, `mwid_output_write_failures_total{type="identity"} 0`} {
		if !strings.Contains(mwidMetrics, want) {
			t.Errorf("mwid's metrics lack %s", want)
		}
	}
	exprs, err := deploy.Exprs()
	if err != nil {
		t.Fatal(err)
	}
	for where, expr := range exprs {
		for _, name := range deploy.MetricNames(expr) {
			if !strings.Contains(issuerMetrics, "\n"+name) && !strings.Contains(mwidMetrics, "\n"+name) {
				t.Errorf("%s: %s is in no scrape of the running programs", where, name)
			}
		}
	}

	// The listener does not move on a reload: the reload is refused.
	cfg, err := os.ReadFile(d.Config)
	if err != nil {
		t.Fatal(err)
	}
	moved := strings.Replace(string(cfg), mwidDiag, fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t)), 1)
	if err := os.WriteFile(d.Config, []byte(moved), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := d.Ctl("reload"); err == nil || !strings.Contains(out, "diag_addr") {
		t.Errorf("mwictl reload of a moved diag_addr: %v\n%s; want it refused, naming diag_addr", err, out)
	}
	if code, body := diagGet(t, mwidDiag, "/metrics"); code != http.StatusOK || !strings.Contains(body, `mwid_config_last_reload_successful 0`) {
		t.Errorf("after a refused reload, /metrics = %d, want mwid_config_last_reload_successful 0", code)
	}
}
