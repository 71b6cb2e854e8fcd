package loadgen

import (
	"fmt"
	"io"
	"runtime"
	"strings"
	"text/tabwriter"
	"time"
)

// The targets of issue 13: a fleet of 1,000,000 bots renewing every 20
// minutes is about 830 renewals a second.
const (
	targetRenewRate   = 830.0
	targetRenewP99    = 50 * time.Millisecond
	targetRenewCPU    = 900 * time.Microsecond
	targetAuditBytes  = 400.0
	targetStepCARatio = 3.0
)

// Print writes the report, each figure beside its target and the ratio of
// the two.
func (r *Report) Print(w io.Writer) {
	c := r.Config
	pin := "not pinned (the generator and the issuers share every core)"
	if c.Pin {
		pin = "issuers on CPU 0, generator on CPU 1"
	}
	fmt.Fprintf(w, "mwi-loadgen: %d cores, load average %s at the start; %s\n", runtime.NumCPU(), r.Load, pin)
	if len(c.Addrs) > 0 {
		fmt.Fprintf(w, "issuers at %s, running already (their store not seeded here), %d bots joined, %d concurrent clients,\n",
			strings.Join(c.Addrs, ", "), c.Joins, c.Concurrency)
	} else {
		fmt.Fprintf(w, "store %s, %d issuer(s), %d instances in the store (%d joined, the rest seeded in %s), %d concurrent clients,\n",
			r.StoreKind, c.Replicas, c.Instances, c.Joins, r.Fleet.Seed.Round(time.Millisecond), c.Concurrency)
	}
	fmt.Fprintf(w, "each request on a new TLS connection with a fresh P-256 key and CSR (made beforehand) and an SSH key; CPU from /proc/PID/stat\n")
	if r.StepCA != nil {
		fmt.Fprintf(w, "step-ca runs beside the issuers; the renewals alternate between the two in %d rounds\n", compareRounds)
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\tmeasured\ttarget\tratio\t")
	verdictRow := func(name, measured, target string, ratio float64, verdict string) {
		rs := ""
		if ratio > 0 {
			rs = fmt.Sprintf("%.2f", ratio)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", name, measured, target, rs, verdict)
	}
	row := func(name, measured, target string, ratio float64, met bool) {
		verdict := ""
		if target != "" {
			verdict = "met"
			if !met {
				verdict = "NOT met"
			}
		}
		verdictRow(name, measured, target, ratio, verdict)
	}
	phase := func(p Phase, cpu bool) {
		row(p.Name+" ok / failed", fmt.Sprintf("%d / %d", p.OK, p.Failed), "", 0, true)
		row(p.Name+" p50 (ms)", ms(p.P50), "", 0, true)
		if cpu {
			row(p.Name+" p99 (ms)", ms(p.P99), "", 0, true)
			row(p.Name+" issuer CPU/op (ms)", ms(p.CPUPerOp()), "", 0, true)
		}
		row(p.Name+" issuer minor faults/op", fmt.Sprintf("%.1f", perOpF(float64(p.Issuer.minorFaults), p.OK)), "", 0, true)
		if r.StoreKind == "postgres" && p.Database.cpu > 0 {
			row(p.Name+" PostgreSQL CPU/op (ms)", ms(perOp(p.Database.cpu, p.OK)), "", 0, true)
		}
	}
	j := r.Join
	row("joins/s", fmt.Sprintf("%.0f", j.Rate()), "", 0, true)
	phase(j, true)
	if p := r.Renew; p != nil && p.OK+p.Failed > 0 {
		row("renewals/s", fmt.Sprintf("%.0f", p.Rate()), fmt.Sprintf(">= %.0f", targetRenewRate), p.Rate()/targetRenewRate, p.Rate() >= targetRenewRate)
		row("renew p99 (ms)", ms(p.P99), "< "+ms(targetRenewP99), float64(p.P99)/float64(targetRenewP99), p.P99 < targetRenewP99)
		row("renew issuer CPU/op (ms)", ms(p.CPUPerOp()), "<= "+ms(targetRenewCPU), float64(p.CPUPerOp())/float64(targetRenewCPU), p.CPUPerOp() <= targetRenewCPU)
		phase(*p, false)
		if len(c.Addrs) == 0 {
			ab := perOpF(float64(p.AuditBytes), p.OK)
			row("audit bytes/renewal", fmt.Sprintf("%.0f", ab), fmt.Sprintf("<= %.0f", targetAuditBytes), ab/targetAuditBytes, ab <= targetAuditBytes)
		}
		if s := r.StepCA; s != nil && s.OK > 0 {
			ratio := p.Rate() / s.Rate()
			row("step-ca ssh+x509 signs/s", fmt.Sprintf("%.0f", s.Rate()), "", 0, true)
			row("step-ca p50 / p99 (ms)", ms(s.P50)+" / "+ms(s.P99), "", 0, true)
			row("step-ca CPU/op (ms)", ms(s.CPUPerOp()), "", 0, true)
			row("step-ca ok / failed", fmt.Sprintf("%d / %d", s.OK, s.Failed), "", 0, true)
			row("renewals/s ÷ step-ca's", fmt.Sprintf("%.2f", ratio), fmt.Sprintf(">= %.0f", targetStepCARatio), ratio/targetStepCARatio, ratio >= targetStepCARatio)
			if s.CPUPerOp() > 0 {
				row("step-ca CPU/op ÷ issuer's", fmt.Sprintf("%.2f", float64(s.CPUPerOp())/float64(p.CPUPerOp())), "", 0, true)
			}
		}
	}
	if f, p := r.Floor, r.Renew; f != nil && p != nil {
		fmt.Fprintf(tw, "reference, same run: a bare TLS server on the issuers' CPU, %d-byte answers\t\t\t\t\n", f.Answer)
		floorRow := func(what string, q Phase, resumed int) {
			m := ms(q.CPUPerOp())
			if resumed >= 0 {
				m += fmt.Sprintf(" (%d of %d resumed)", resumed, q.OK)
			}
			row("  floor CPU/request, "+what+" (ms)", m, "", 0, true)
			if q.Failed > 0 {
				row("  floor "+what+" ok / failed", fmt.Sprintf("%d / %d", q.OK, q.Failed), "", 0, true)
			}
		}
		floorRow("new connection, client certificate (as renewals)", f.MTLS, -1)
		for _, r := range f.Resumed {
			floorRow("resumed, no client certificate, "+r.What, r.Phase, r.Count)
		}
		floorRow("kept-alive connection", f.KeptAlive, -1)
		row("  renewal's public-key work, issuer's keys (ms)", ms(f.Work.Total()), "", 0, true)
		for _, r := range f.Resumed {
			lb := f.LowerBound(r.Phase)
			// The bound leaves out the store, the audit record, JSON and
			// routing: under the target, it only does not rule it out. A
			// phase with failures, or whose sessions did not all resume,
			// measured something else: it gives no verdict.
			verdict := "not ruled out"
			switch {
			case r.Failed > 0 || r.OK == 0 || r.Count < r.OK:
				verdict = "no verdict: phase incomplete"
			case lb > targetRenewCPU:
				verdict = "NOT reachable"
			}
			verdictRow("  renewal lower bound, resumed, "+r.What+" (ms)", ms(lb), "<= "+ms(targetRenewCPU), float64(lb)/float64(targetRenewCPU), verdict)
		}
		row("  renewal CPU above its floor (ms)", ms(p.CPUPerOp()-f.MTLS.CPUPerOp()), "", 0, true)
	}
	if len(c.Addrs) == 0 {
		row(fmt.Sprintf("store bytes/instance (%d instances)", r.Fleet.Instances), fmt.Sprintf("%.0f", r.Fleet.PerInstance()), "", 0, true)
	}
	var first float64
	for i, s := range r.Sizes {
		per := s.PerInstance()
		if i == 0 {
			first = per
		}
		row(fmt.Sprintf("store bytes/instance at %d (seeded in %s)", s.Instances, s.Seed.Round(time.Millisecond)), fmt.Sprintf("%.0f", per),
			fmt.Sprintf("flat: <= 1.25x the %d figure", r.Sizes[0].Instances), per/first, per <= 1.25*first)
	}
	if s := r.StepCA; s != nil && s.OK == 0 {
		row("step-ca ok / failed", fmt.Sprintf("%d / %d", s.OK, s.Failed), "", 0, true)
	}
	tw.Flush()
	failures := []*Phase{&r.Join, r.Renew, r.StepCA}
	if f := r.Floor; f != nil {
		fmt.Fprintf(w, "renewal's public-key work (ms): %s; lower bound = a resumed session's floor + this work\n", f.Work.describe())
		failures = append(failures, &f.MTLS, &f.KeptAlive)
		for i := range f.Resumed {
			failures = append(failures, &f.Resumed[i].Phase)
		}
	}
	for _, p := range failures {
		if p != nil && p.FirstError != "" {
			fmt.Fprintf(w, "first %s failure: %s\n", p.Name, p.FirstError)
		}
	}
	if r.FloorMsg != "" {
		fmt.Fprintf(w, "floor: %s\n", r.FloorMsg)
	}
	if r.StepCAMsg != "" {
		fmt.Fprintf(w, "step-ca: %s\n", r.StepCAMsg)
	}
}

func ms(d time.Duration) string {
	return fmt.Sprintf("%.3f", float64(d)/float64(time.Millisecond))
}

func perOpF(v float64, n int) float64 {
	if n == 0 {
		return 0
	}
	return v / float64(n)
}
