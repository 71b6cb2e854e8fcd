package integration

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/loadgen"
	"github.com/mwi-project/mwi/internal/pgtest"
)

// TestLoadgen runs the load generator (make loadtest) with a small fleet,
// so that it keeps working: against bbolt with one issuer, and against
// PostgreSQL with two replicas. With MWI_STEPCA_DIR naming a directory
// holding step-ca and step, the comparison with step-ca runs too. It
// asserts what was done, never how fast.
func TestLoadgen(t *testing.T) {
	bins := harness.Build(t)
	for _, tc := range []struct {
		store    string
		replicas int
	}{
		{"bolt", 1},
		{"postgres", 2},
	} {
		t.Run(tc.store, func(t *testing.T) {
			c := loadgen.Config{
				Issuer: bins.Issuer, Store: tc.store, Replicas: tc.replicas,
				Instances: 300, Joins: 12, Renewals: 40, Concurrency: 4,
				Sizes: []int{100, 200}, StepCA: os.Getenv("MWI_STEPCA_DIR"),
			}
			self, err := os.Executable()
			if err != nil {
				t.Fatal(err)
			}
			c.Self = self
			r, err := loadgen.Run(context.Background(), c)
			if tc.store == "postgres" {
				pgtest.Skip(t, err)
			}
			if err != nil {
				t.Fatal(err)
			}
			if r.Join.OK != 12 || r.Join.Failed != 0 {
				t.Errorf("joins: %d ok, %d failed (%s); want 12 ok", r.Join.OK, r.Join.Failed, r.Join.FirstError)
			}
			if r.Renew == nil {
				t.Fatal("no renewals measured")
			}
			if r.Renew.OK != 40 || r.Renew.Failed != 0 {
				t.Errorf("renewals: %d ok, %d failed (%s); want 40 ok", r.Renew.OK, r.Renew.Failed, r.Renew.FirstError)
			}
			if r.Renew.AuditBytes <= 0 {
				t.Errorf("the audit logs did not grow during the renewals")
			}
			if len(r.Sizes) != 2 || r.Sizes[1].Bytes <= 0 || r.Fleet.PerInstance() <= 0 {
				t.Errorf("store sizes: fleet %+v, series %+v; want sizes measured", r.Fleet, r.Sizes)
			}
			if c.StepCA != "" && (r.StepCA == nil || r.StepCA.OK != 40) {
				t.Errorf("step-ca: %+v, %s; want 40 signatures", r.StepCA, r.StepCAMsg)
			}
			if f := r.Floor; f == nil {
				t.Errorf("no floor measured: %s", r.FloorMsg)
			} else {
				phases := []loadgen.Phase{f.MTLS, f.KeptAlive}
				for _, r := range f.Resumed {
					phases = append(phases, r.Phase)
					// Each connection after the first left a ticket resumes
					// a session: otherwise the floor would measure full
					// handshakes.
					if r.Count != 40 {
						t.Errorf("%s: %d of 40 sessions resumed; want all", r.Name, r.Count)
					}
				}
				if len(f.Resumed) != 4 {
					t.Errorf("%d kinds of resumed session measured; want 4", len(f.Resumed))
				}
				for _, p := range phases {
					if p.OK != 40 || p.Failed != 0 {
						t.Errorf("%s: %d ok, %d failed (%s); want 40 ok", p.Name, p.OK, p.Failed, p.FirstError)
					}
				}
				if f.Work.Caller <= 0 || f.Work.CSR <= 0 || f.Work.Identity <= 0 || f.Work.SSH <= 0 {
					t.Errorf("public-key work %+v: want every part measured", f.Work)
				}
				if f.Answer < 1000 {
					t.Errorf("floor answers of %d bytes; want a renewal answer's size", f.Answer)
				}
			}
			var out bytes.Buffer
			r.Print(&out)
			for _, want := range []string{"renewals/s", "renew issuer CPU/op (ms)", "store bytes/instance at 200",
				"floor CPU/request, resumed, no client certificate, TLS 1.2", "renewal lower bound, resumed, X25519 only (ms)"} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("report lacks %q:\n%s", want, out.String())
				}
			}
			t.Logf("report:\n%s", out.String())
		})
	}
}
