package deploy_test

import (
	"bufio"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	daemonmetrics "github.com/mwi-project/mwi/daemon/metrics"
	"github.com/mwi-project/mwi/deploy"
	"github.com/mwi-project/mwi/internal/version"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
	issuermetrics "github.com/mwi-project/mwi/issuer/metrics"
	"github.com/mwi-project/mwi/issuer/store"
)

// exported returns the series names each program's metrics are served
// as, once every family has a series: name, and for a histogram
// name_bucket, name_sum and name_count.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	state := filepath.Join(dir, "state")
	if err := ca.Init(state, []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	authorities, err := ca.Load(state)
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	im := issuermetrics.New(version.Get())
	st = im.InstrumentStore(st)
	im.Watch(func() *ca.Authority { return authorities }, st, time.Now)
	ctx := context.Background()
	st.Changes(ctx)
	for _, d := range []authority.Decision{
		{Event: authority.DecisionJoin, Method: api.JoinMethodToken, Outcome: authority.OutcomeDenied, Reason: api.CodeTokenUsed},
		{Event: authority.DecisionRenew, Outcome: authority.OutcomeAllowed},
	} {
		im.Decision(d)
	}
	dm := daemonmetrics.New()
	dm.Renewal(errors.New("unreachable"), 1)
	dm.RenewalSucceeded(time.Now())
	dm.RenewalDuration(time.Second, nil)
	dm.Loaded(time.Now())
	dm.Reload(nil)
	dm.OutputFailed("ssh_host")
	dm.SetExpiries([]daemonmetrics.Expiry{{Kind: "ssh", At: time.Now().Add(time.Hour)}})

	names := map[string]bool{}
	for _, h := range []http.Handler{im.Handler(), dm.Handler()} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		sc := bufio.NewScanner(rec.Body)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) != 4 || f[0] != "#" || f[1] != "TYPE" {
				continue
			}
			names[f[2]] = true
			if f[3] == "histogram" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[f[2]+s] = true
				}
			}
		}
	}
	return names
}

// TestMetricsExported checks that every metric the alert rules and the
// dashboard use is one that mwid or mwi-issuer exports, so that neither
// waits forever on a name that a rename left behind.
func TestMetricsExported(t *testing.T) {
	exprs, err := deploy.Exprs()
	if err != nil {
		t.Fatal(err)
	}
	names := exported(t)
	used := map[string]bool{}
	for where, expr := range exprs {
		if strings.TrimSpace(expr) == "" {
			t.Errorf("%s: no expression", where)
		}
		got := deploy.MetricNames(expr)
		if len(got) == 0 {
			t.Errorf("%s: uses no MWI metric: %s", where, expr)
		}
		for _, n := range got {
			used[n] = true
			if !names[n] {
				t.Errorf("%s: %s is not exported by mwid or mwi-issuer", where, n)
			}
		}
	}
	// Each family an alert or a panel is about is watched somewhere.
	for _, want := range []string{
		"mwid_credential_expiry_timestamp_seconds", "mwid_renewal_failures_consecutive", "mwid_renewals_total",
		"mwi_issuer_denials_total", "mwi_issuer_ca_expiry_timestamp_seconds", "mwi_issuer_renewals_total",
		"mwi_issuer_joins_total", "mwi_issuer_decision_duration_seconds_bucket", "mwi_issuer_store_operation_duration_seconds_bucket",
	} {
		if !used[want] {
			t.Errorf("no alert or panel uses %s", want)
		}
	}
}

func TestMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (result) (rate(mwid_renewals_total{job=~"$mwid_job"}[5m]))`, []string{"mwid_renewals_total"}},
		{`histogram_quantile(0.99, rate(mwi_issuer_decision_duration_seconds_bucket[5m])) > 1`, []string{"mwi_issuer_decision_duration_seconds_bucket"}},
		{`a_mwid_x + mwi_issuer_locks / mwi_issuer_locks`, []string{"mwi_issuer_locks"}},
		{`up{job="mwid"}`, nil},
	} {
		if got := deploy.MetricNames(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("MetricNames(%q) = %q, want %q", tc.expr, got, tc.want)
		}
	}
}

// TestRules checks what every alert needs to be acted on: a severity, a
// summary and a description.
func TestRules(t *testing.T) {
	r, err := deploy.LoadRules()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range r.Groups {
		for _, rule := range g.Rules {
			n++
			switch rule.Labels["severity"] {
			case "warning", "critical":
			default:
				t.Errorf("alert %s: severity %q, want warning or critical", rule.Alert, rule.Labels["severity"])
			}
			if rule.Alert == "" || rule.Annotations["summary"] == "" || rule.Annotations["description"] == "" {
				t.Errorf("alert %q: needs a name, a summary and a description", rule.Alert)
			}
		}
	}
	if n == 0 {
		t.Fatal("no rules")
	}
}

// TestDashboard checks that the dashboard's panels have unique ids and
// that every graph has a query.
func TestDashboard(t *testing.T) {
	d, err := deploy.LoadDashboard()
	if err != nil {
		t.Fatal(err)
	}
	if d.UID == "" {
		t.Error("no uid: imports would duplicate it")
	}
	ids := map[int]bool{}
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
}

// TestPromtool runs promtool check rules and the rules' unit tests, when
// promtool is installed (CI installs it: see .ci/run); without it the
// test skips, or fails under MWI_REQUIRE_INTEGRATION=1.
func TestPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("MWI_REQUIRE_INTEGRATION") != "" {
			t.Fatal("promtool not found: apt-get install -y --no-install-recommends prometheus")
		}
		t.Skip("promtool not found: apt-get install -y --no-install-recommends prometheus")
	}
	for _, args := range [][]string{
		{"check", "rules", "mwi-alerts.yml"},
		{"test", "rules", "mwi-alerts.test.yml"},
	} {
		cmd := exec.Command(promtool, args...)
		cmd.Dir = "prometheus"
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}
