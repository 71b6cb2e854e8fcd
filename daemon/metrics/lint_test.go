package metrics_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/mwi-project/mwi/daemon/metrics"
)

// exercised returns Metrics with a series of every family made at least
// once, and the text they are served as.
func exercised(t *testing.T) (*metrics.Metrics, string) {
	t.Helper()
	m := metrics.New()
	m.Renewal(nil, 0)
	m.RenewalSucceeded(time.Unix(1700000000, 0))
	m.Renewal(errors.New("issuer unreachable"), 1)
	m.RenewalDuration(120*time.Millisecond, nil)
	m.RenewalDuration(3*time.Second, errors.New("issuer unreachable"))
	m.Loaded(time.Unix(1700000000, 0))
	m.Reload(errors.New("bad file"))
	m.OutputFailed("ssh_host")
	m.SetExpiries([]metrics.Expiry{{Kind: "identity", At: time.Unix(1700003600, 0)}, {Kind: "kubernetes", Name: "prod", At: time.Unix(1700003600, 0)}})
	h := m.Middleware(http.NotFoundHandler())
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/nowhere", nil))
	m.InstrumentAgent(nopAgent{}).List()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("metrics = %d", rec.Code)
	}
	return m, rec.Body.String()
}

// TestLint checks every metric mwid exports, the Go and process
// collectors' too, against Prometheus's naming conventions with the
// client library's linter.
func TestLint(t *testing.T) {
	_, text := exercised(t)
	problems, err := promlint.New(strings.NewReader(text)).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	for _, want := range []string{
		"mwid_build_info{", "mwid_renewal_duration_seconds_bucket{", "mwid_renewal_last_success_timestamp_seconds 1.7e+09",
		`mwid_config_reloads_total{result="failure"} 1`, `mwid_config_reloads_total{result="success"} 0`,
		"mwid_config_last_reload_successful 0", "mwid_config_last_reload_success_timestamp_seconds 1.7e+09",
		`mwid_output_write_failures_total{type="ssh_host"} 1`, `mwid_renewals_total{result="failure"} 1`,
		`mwid_agent_requests_total{result="success",type="list"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestResultLabels checks that every metric with a result label uses
// the same values, success and failure.
func TestResultLabels(t *testing.T) {
	_, text := exercised(t)
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.Index(line, `result="`); i >= 0 {
			v := line[i+len(`result="`):]
			v = v[:strings.IndexByte(v, '"')]
			if v != "success" && v != "failure" {
				t.Errorf("result %q in %s", v, line)
			}
		}
	}
}
