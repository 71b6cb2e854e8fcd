package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
)

// BenchmarkHostAccess measures what host access control costs and how fast
// a lock takes effect, and prints each figure beside its reference:
//
//   - the time of an ssh login to a managed sshd (AuthorizedPrincipalsCommand
//     mwictl ssh authorized-principals) against the same sshd, same host
//     key and certificate, without the command; logins alternate between
//     the two so that noise falls on both alike. Target: ratio <= 1.10.
//   - the time from mwi-issuer lock add until the managed host's decision
//     refuses the locked bot, and from lock rm until it admits it again,
//     over several rounds (p50, p99). The decision is read by running the
//     principals command as sshd would, every 20 ms.
//
// MWI_BENCH_LOGINS sets the logins per side (default 30), and
// MWI_BENCH_LOCKS the lock rounds (default 10).
func BenchmarkHostAccess(b *testing.B) {
	harness.Require(b, "sshd", "apt-get install -y --no-install-recommends openssh-server")
	login := harness.CurrentUser(b)
	iss := harness.StartIssuer(b, accessResources(login))
	ctl := harness.SafeExecutable(b, iss.Bins.Ctl)
	host := startManagedHost(b, iss, "staging-01", "staging", ctl)
	// The same sshd without the principals command: same key, certificate,
	// user CA and KRL.
	plain := harness.StartSSHDWith(b, harness.SSHDOptions{
		UserCAFile: filepath.Join(host.access, "user_ca.pub"),
		HostKey:    host.hostKey,
		HostCert:   host.hostKey + "-cert.pub",
		Extra:      "RevokedKeys " + filepath.Join(host.access, "revoked_keys.krl") + "\n",
	})
	files := b.TempDir()
	admin := harness.StartDaemon(b, iss, harness.DaemonOptions{
		Token: iss.CreateToken(b, "admin", time.Hour),
		Hosts: []string{"127.0.0.1"},
		Extra: fmt.Sprintf("outputs:\n  - type: identity\n    directory: %s\n", files),
	})
	admin.WaitState(b, "ready", 20*time.Second)
	knownHosts := filepath.Join(b.TempDir(), "known_hosts")
	kh, err := admin.Ctl("known-hosts")
	if err != nil {
		b.Fatalf("mwictl known-hosts: %v\n%s", err, kh)
	}
	if err := os.WriteFile(knownHosts, []byte(kh+"\n"), 0o600); err != nil {
		b.Fatal(err)
	}

	logins := benchCount(b, "MWI_BENCH_LOGINS", 30)
	var managed, reference []time.Duration
	b.ResetTimer()
	for range logins {
		for _, side := range []struct {
			port int
			into *[]time.Duration
		}{{host.sshd.Port, &managed}, {plain.Port, &reference}} {
			start := time.Now()
			out, err := sshTo(b, knownHosts, admin.AgentSock, "", side.port, login, "true")
			if err != nil {
				b.Fatalf("ssh to port %d: %v\n%s", side.port, err, out)
			}
			*side.into = append(*side.into, time.Since(start))
		}
	}

	// Lock rounds, read through the principals command itself.
	cert, err := os.ReadFile(filepath.Join(files, "key-cert.pub"))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(cert))
	decide := func() bool {
		out, _ := harness.Run(context.Background(), 10*time.Second, nil, ctl, "ssh", "authorized-principals", "--dir", host.access, login, f[0], f[1])
		return strings.TrimSpace(out) == login
	}
	issuer := func(args ...string) {
		argv := append([]string{iss.Bins.Issuer}, args[:2]...)
		argv = append(append(argv, "--state", iss.State), args[2:]...)
		if out, err := harness.Run(context.Background(), 10*time.Second, nil, argv...); err != nil {
			b.Fatalf("mwi-issuer %v: %v\n%s", args, err, out)
		}
	}
	wait := func(want bool) time.Duration {
		start := time.Now()
		for decide() != want {
			if time.Since(start) > time.Minute {
				b.Fatalf("the host's decision did not become %v within a minute", want)
			}
			time.Sleep(20 * time.Millisecond)
		}
		return time.Since(start)
	}
	rounds := benchCount(b, "MWI_BENCH_LOCKS", 10)
	var toRefusal, toAdmission []time.Duration
	for range rounds {
		issuer("lock", "add", "--bot", "admin", "--message", "bench")
		toRefusal = append(toRefusal, wait(false))
		issuer("lock", "rm", "--bot", "admin")
		toAdmission = append(toAdmission, wait(true))
	}
	b.StopTimer()

	ratio := float64(percentile(managed, 50)) / float64(percentile(reference, 50))
	met := "NOT met"
	if ratio <= 1.10 {
		met = "met"
	}
	fmt.Printf("\nssh login (ssh -> sshd, agent, certificate), %d logins each, alternating\n", logins)
	fmt.Printf("managed sshd (principals command) | %s\n", latencies(managed))
	fmt.Printf("same sshd without the command     | %s\n", latencies(reference))
	fmt.Printf("p50 ratio %.2f; target <= 1.10: %s\n", ratio, met)
	fmt.Printf("lock -> managed host refuses (%d rounds)   | %s\n", rounds, latencies(toRefusal))
	fmt.Printf("unlock -> managed host admits (%d rounds)  | %s\n", rounds, latencies(toAdmission))
	fmt.Printf("target: refusal within 10s: %s\n\n", map[bool]string{true: "met", false: "NOT met"}[percentile(toRefusal, 100) <= 10*time.Second])
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(ratio, "login-ratio")
	b.ReportMetric(float64(percentile(toRefusal, 50).Milliseconds()), "lock-p50-ms")
	b.ReportMetric(float64(percentile(toRefusal, 99).Milliseconds()), "lock-p99-ms")
}

// benchCount returns the positive integer in the environment variable
// name, or def.
func benchCount(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var n int
	if _, err := fmt.Sscan(v, &n); err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive number", name, v)
	}
	return n
}
