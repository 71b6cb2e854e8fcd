package metrics_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/version"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/metrics"
	"github.com/mwi-project/mwi/issuer/store"
)

// exercised returns Metrics with every series made at least once: a
// decision of each outcome, store calls that succeed and fail, the
// authorities and a lock.
func exercised(t *testing.T) *metrics.Metrics {
	t.Helper()
	dir := t.TempDir()
	if err := ca.Init(filepath.Join(dir, "state"), []string{"127.0.0.1"}); err != nil {
		t.Fatal(err)
	}
	authorities, err := ca.Load(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(filepath.Join(dir, "store.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	m := metrics.New(version.Info{Version: "v1.2.3", Commit: "abcdef0"})
	st = m.InstrumentStore(st)
	m.Watch(func() *ca.Authority { return authorities }, st, time.Now)
	ctx := context.Background()
	if err := st.LockBot(ctx, store.Lock{Bot: "ci", Reason: "test", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	st.Token(ctx, "nope", time.Now()) // an answer, not a failure
	if err := store.Probe(ctx, st); err != nil {
		t.Fatal(err)
	}
	for _, d := range []authority.Decision{
		{Event: authority.DecisionJoin, Method: api.JoinMethodGitHub, Outcome: authority.OutcomeAllowed, Duration: time.Millisecond},
		{Event: authority.DecisionJoin, Method: api.JoinMethodToken, Outcome: authority.OutcomeDenied, Reason: api.CodeTokenUsed, Duration: time.Millisecond},
		{Event: authority.DecisionRenew, Outcome: authority.OutcomeAllowed, Duration: time.Millisecond},
		{Event: authority.DecisionRenew, Outcome: authority.OutcomeError, Reason: api.CodeStoreUnavailable, Duration: time.Second},
	} {
		m.Decision(d)
	}
	return m
}

// TestLint checks every metric the issuer exports, the Go and process
// collectors' too, against Prometheus's naming conventions with the
// client library's linter.
func TestLint(t *testing.T) {
	m := exercised(t)
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
	if len(mfs) < 10 {
		t.Errorf("linted only %d metric families", len(mfs))
	}
}

// TestCounts checks what a few decisions and store calls count.
func TestCounts(t *testing.T) {
	m := exercised(t)
	want := `
# HELP mwi_issuer_denials_total Joins and renewals refused or failed, by event and the refusal's stable code.
# TYPE mwi_issuer_denials_total counter
mwi_issuer_denials_total{event="join",reason="token_used"} 1
mwi_issuer_denials_total{event="renew",reason="store_unavailable"} 1
# HELP mwi_issuer_locks Locks in force, by what they lock (bot, instance, token).
# TYPE mwi_issuer_locks gauge
mwi_issuer_locks{kind="bot"} 1
mwi_issuer_locks{kind="instance"} 0
mwi_issuer_locks{kind="token"} 0
# HELP mwi_issuer_build_info Always 1, with the version and commit mwi-issuer was built from and its Go version.
# TYPE mwi_issuer_build_info gauge
`
	// build_info's goversion differs by toolchain: compare the others.
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(strings.SplitN(want, "# HELP mwi_issuer_build_info", 2)[0]),
		"mwi_issuer_denials_total", "mwi_issuer_locks"); err != nil {
		t.Error(err)
	}
	for _, tc := range []struct {
		name string
		want float64
	}{
		{`mwi_issuer_joins_total{method="github",outcome="allowed"}`, 1},
		{`mwi_issuer_joins_total{method="token",outcome="denied"}`, 1},
		{`mwi_issuer_joins_total{method="oidc",outcome="error"}`, 0},
		{`mwi_issuer_renewals_total{outcome="error"}`, 1},
	} {
		if got := counterValue(t, m, tc.name); got != tc.want {
			t.Errorf("%s = %v, want %v", tc.name, got, tc.want)
		}
	}
	if got := counterValue(t, m, `mwi_issuer_store_errors_total{operation="token"}`); got != 0 {
		t.Errorf("store errors of token = %v, want 0: an unknown token is an answer", got)
	}
	// Every operation's error counter exists from the start.
	if n, err := testutil.GatherAndCount(m.Registry(), "mwi_issuer_store_errors_total"); err != nil || n < 30 {
		t.Errorf("store errors: %d series, %v; want one per operation", n, err)
	}
	if n, err := testutil.GatherAndCount(m.Registry(), "mwi_issuer_ca_expiry_timestamp_seconds"); err != nil || n != 4 {
		t.Errorf("CA expiry: %d series, %v; want tls, identity, kube and admin", n, err)
	}
}

// counterValue returns the value of the one series name{labels} in m.
func counterValue(t *testing.T, m *metrics.Metrics, series string) float64 {
	t.Helper()
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	name, labels, _ := strings.Cut(strings.TrimSuffix(series, "}"), "{")
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metric:
		for _, x := range mf.GetMetric() {
			for _, lp := range x.GetLabel() {
				if !strings.Contains(labels, lp.GetName()+`="`+lp.GetValue()+`"`) {
					continue metric
				}
			}
			return x.GetCounter().GetValue()
		}
	}
	t.Fatalf("no series %s", series)
	return 0
}
