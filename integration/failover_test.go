package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/pgtest"
)

// startReplica starts a second mwi-issuer serve on the store and the CA
// keys of a: the same state directory and flags, with its own address,
// admin socket, audit log and working directory.
func startReplica(t *testing.T, a *harness.Issuer) *harness.Issuer {
	t.Helper()
	dir := t.TempDir()
	b := *a
	b.Dir = dir
	b.Addr = fmt.Sprintf("127.0.0.1:%d", harness.FreePort(t))
	b.AdminSock = filepath.Join(dir, "admin.sock")
	b.AuditLog = filepath.Join(dir, "audit.log")
	b.Args = append(append([]string(nil), a.Args...), "--admin-socket", b.AdminSock, "--audit-log", b.AuditLog)
	b.Proc = nil
	b.Start(t)
	return &b
}

// countAuditFor counts the allowed events of kind ev for instance in iss's
// audit log.
func countAuditFor(t *testing.T, iss *harness.Issuer, ev, instance string) int {
	t.Helper()
	n := 0
	for _, e := range iss.Audit(t) {
		if e["event"] == ev && e["outcome"] == "allowed" && e["instance"] == instance {
			n++
		}
	}
	return n
}

// TestIssuerFailover runs two issuer replicas on one PostgreSQL database
// and two mwid, each given both replicas in another order: joins and
// renewals go to both. Then one replica is killed with SIGKILL while the
// daemons renew: the daemon that used it moves to the other, its
// certificates never expire, no bot or instance is locked, and the
// surviving replica's audit log shows its renewals.
func TestIssuerFailover(t *testing.T) {
	t.Parallel()
	pg := pgtest.StartT(t)
	url, err := pg.CreateDatabase("mwi", "")
	if err != nil {
		t.Fatal(err)
	}
	a := harness.StartIssuerWith(t, resources(harness.CurrentUser(t)), harness.IssuerOptions{Args: []string{"--store", url}})
	b := startReplica(t, a)

	const ttl = 10 * time.Second
	d1 := harness.StartDaemon(t, a, harness.DaemonOptions{Token: a.CreateToken(t, "ci", time.Hour), TTL: ttl, IssuerAddrs: []string{a.Addr, b.Addr}})
	// A token made on one replica is good on the other.
	d2 := harness.StartDaemon(t, a, harness.DaemonOptions{Token: a.CreateToken(t, "ci", time.Hour), TTL: ttl, IssuerAddrs: []string{b.Addr, a.Addr}})
	var first [2]api.Status
	for i, d := range []*harness.Daemon{d1, d2} {
		d := d
		harness.Eventually(t, 30*time.Second, "a join and a renewal", func() error {
			st, err := d.Status(t)
			if err != nil {
				return err
			}
			if st.State != "ready" || st.Generation < 2 {
				return fmt.Errorf("state %s, generation %d, error %s", st.State, st.Generation, st.LastError)
			}
			first[i] = st
			return nil
		})
	}
	if first[0].Issuer != a.Addr || first[1].Issuer != b.Addr {
		t.Errorf("issuers in status = %q, %q; want the first address of each: %q, %q", first[0].Issuer, first[1].Issuer, a.Addr, b.Addr)
	}
	// Joins and renewals spread over both replicas.
	for _, c := range []struct {
		iss      *harness.Issuer
		instance string
	}{{a, first[0].Instance}, {b, first[1].Instance}} {
		if countAuditFor(t, c.iss, "join", c.instance) != 1 || countAuditFor(t, c.iss, "renew", c.instance) < 1 {
			t.Errorf("replica %s: %d joins, %d renewals of %s; want the instance's join and renewals",
				c.iss.Addr, countAuditFor(t, c.iss, "join", c.instance), countAuditFor(t, c.iss, "renew", c.instance), c.instance)
		}
	}

	// Watch the daemons from now on: ready, and every certificate valid,
	// at every look.
	ctx, stop := context.WithCancel(context.Background())
	watched := make(chan []string)
	go func() {
		var bad []string
		defer func() { watched <- bad }()
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			for i, d := range []*harness.Daemon{d1, d2} {
				st, err := d.Client.Status(context.Background())
				now := time.Now()
				switch {
				case err != nil:
					bad = append(bad, fmt.Sprintf("mwid %d: status: %v", i+1, err))
				case st.State != "ready":
					bad = append(bad, fmt.Sprintf("mwid %d: state %s at %s (error %s)", i+1, st.State, now.Format(time.TimeOnly), st.LastError))
				}
				for _, c := range st.Credentials {
					if !c.Expires.After(now) {
						bad = append(bad, fmt.Sprintf("mwid %d: %s credential expired at %s", i+1, c.Kind, c.Expires.Format(time.TimeOnly)))
					}
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
		}
	}()

	// Kill replica A in the middle of d1's renewals: it renews every few
	// seconds, so wait for one to land and kill right after.
	gen := first[0].Generation
	harness.Eventually(t, 30*time.Second, "a renewal through replica A", func() error {
		st, err := d1.Status(t)
		if err != nil {
			return err
		}
		if st.Generation <= gen {
			return fmt.Errorf("generation %d", st.Generation)
		}
		gen = st.Generation
		return nil
	})
	if err := a.Proc.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	harness.Eventually(t, 10*time.Second, "replica A gone", func() error {
		if !a.Proc.Exited() {
			return fmt.Errorf("pid %d still runs", a.Proc.Cmd.Process.Pid)
		}
		return nil
	})
	renewedOnB := countAuditFor(t, b, "renew", first[0].Instance)

	// d1 goes on renewing through B, for more than a certificate's life.
	harness.Eventually(t, 60*time.Second, "d1 renewing through replica B", func() error {
		st, err := d1.Status(t)
		if err != nil {
			return err
		}
		if st.Issuer != b.Addr || st.Generation < gen+3 {
			return fmt.Errorf("issuer %s, generation %d (%d at the kill), error %s", st.Issuer, st.Generation, gen, st.LastError)
		}
		return nil
	})
	stop()
	for _, b := range <-watched {
		t.Error(b)
	}

	if n := countAuditFor(t, b, "renew", first[0].Instance); n < renewedOnB+3 {
		t.Errorf("replica B audited %d renewals of d1's instance, %d before A was killed; want 3 more", n, renewedOnB)
	}
	out, err := harness.Run(context.Background(), 30*time.Second, nil, b.Bins.Issuer, "lock", "ls", "--admin-socket", b.AdminSock, "--format", "json")
	if err != nil {
		t.Fatalf("lock ls on replica B: %v\n%s", err, out)
	}
	var locks struct{ Locks []json.RawMessage }
	if err := json.Unmarshal([]byte(out), &locks); err != nil || len(locks.Locks) != 0 {
		t.Errorf("locks after the failover: %v %s", err, out)
	}
	if !strings.Contains(d1.Proc.Output(), "issuer failover") {
		t.Errorf("d1 logged no failover:\n%s", d1.Proc.Output())
	}
	for _, e := range b.Audit(t) {
		if e["outcome"] == "denied" {
			t.Errorf("replica B denied: %v", e)
		}
	}
}
