package metrics_test

import (
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/version"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/metrics"
)

// BenchmarkDecision measures what counting one decision costs the
// request that made it.
func BenchmarkDecision(b *testing.B) {
	m := metrics.New(version.Info{Version: "v", Commit: "c"})
	d := authority.Decision{Event: authority.DecisionJoin, Method: api.JoinMethodToken, Outcome: authority.OutcomeDenied, Reason: api.CodeTokenUsed, Duration: time.Millisecond}
	b.ReportAllocs()
	for b.Loop() {
		m.Decision(d)
	}
}
