package integration

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/agentload"
)

const installOpenSSHClient = "apt-get install -y openssh-client"

// benchClients are the numbers of concurrent clients of the table's rows.
var benchClients = []int{1, 8, 64}

// targetClients is the row the target, and the reported metrics, refer to.
const targetClients = 8

// The target of the comparison, printed as met or not: it is a goal for
// the figures, never an assertion; a benchmark does not fail on timing.
const (
	targetRatio = 10.0
	targetP99   = time.Millisecond
)

// BenchmarkAgentSign compares the signing throughput and latency of
// mwid's SSH agent with OpenSSH's ssh-agent, both ed25519, under the same
// load generator (agentload.Run) at 1, 8 and 64 concurrent clients, and
// prints a table. make bench runs it as
//
//	MWI_BIN_DIR=$PWD/bin go test -run '^$' -bench . -benchtime 1x ./integration/
//
// Each cell lasts MWI_BENCH_SECONDS (default 3s; seconds, or a Go
// duration such as 500ms) after agentload's warm-up. The two agents take
// turns at each client count, mwid first, so that noise on the machine
// falls on both alike. The load generator runs in this process and shares
// the machine's CPUs with whichever agent is being measured; that holds
// for both sides.
//
// mwid runs as in the other integration tests: the real binary joined to
// a real mwi-issuer. The harness configures it with "log: level: debug";
// mwid's agent logs only refused connections, protocol errors and panics,
// not requests, so the level does not touch the signing path. The table
// prints how many lines mwid logged during its cells as a check.
//
// The benchmark runs the table once whatever b.N is: a cell is a fixed
// duration, not an iteration count. It fails only if setup fails or a
// request fails; the figures and the target are reported, never asserted.
func BenchmarkAgentSign(b *testing.B) {
	agentBin := harness.Require(b, "ssh-agent", installOpenSSHClient)
	addBin := harness.Require(b, "ssh-add", installOpenSSHClient)
	keygenBin := harness.Require(b, "ssh-keygen", installOpenSSHClient)
	d := benchDuration(b)
	// The load generator and the agent under test get a core each, the
	// same for both agents: sharing cores would measure the scheduler's
	// time slices rather than the agent. Pinning this process first means
	// the agents start with one CPU too (mwid's GOMAXPROCS is then 1).
	pinned := runtime.NumCPU() >= 2
	if pinned {
		if err := pin(os.Getpid(), 0); err != nil {
			b.Fatalf("pin the load generator to CPU 0: %v", err)
		}
	}

	// mwid, joined to an issuer that lets the bot log in as the
	// current user.
	login := harness.CurrentUser(b)
	iss := harness.StartIssuer(b, fmt.Sprintf(`kind: role
version: v1
metadata:
  name: bench
spec:
  allow:
    logins: [%s]
---
kind: bot
version: v1
metadata:
  name: bench
spec:
  roles: [bench]
`, strconv.Quote(login)))
	token := iss.CreateToken(b, "bench", 10*time.Minute)
	// agentload signs raw data without binding sessions: this is the
	// agent without destination checks, as ssh-agent is.
	mwid := harness.StartDaemon(b, iss, harness.DaemonOptions{Token: token, AllowUnbound: true})
	mwid.WaitState(b, "ready", 30*time.Second)

	// OpenSSH's agent, holding a fresh ed25519 key.
	sshAgentSock, sshAgentPID := startSSHAgent(b, agentBin, addBin, keygenBin)
	if pinned {
		for _, pid := range []int{mwid.Proc.Cmd.Process.Pid, sshAgentPID} {
			if err := pin(pid, 1); err != nil {
				b.Fatalf("pin agent (pid %d) to CPU 1: %v", pid, err)
			}
		}
	}

	type row struct {
		clients       int
		mwid, openssh agentload.Result
	}
	rows := make([]row, 0, len(benchClients))
	logBefore := lineCount(mwid.Proc.Output())
	b.ResetTimer()
	for _, n := range benchClients {
		r := row{clients: n}
		var err error
		if r.mwid, err = agentload.Run(b.Context(), mwid.AgentSock, n, d); err != nil {
			b.Fatalf("mwid, %d clients: %v", n, err)
		}
		if r.openssh, err = agentload.Run(b.Context(), sshAgentSock, n, d); err != nil {
			b.Fatalf("ssh-agent, %d clients: %v", n, err)
		}
		rows = append(rows, r)
	}
	b.StopTimer()
	logLines := lineCount(mwid.Proc.Output()) - logBefore

	fmt.Printf("\nSSH agent sign (ed25519), %v per cell after %v warm-up, same load generator\n", d, agentload.Warmup)
	if pinned {
		fmt.Printf("load generator pinned to CPU 0, the agent under test to CPU 1\n")
	} else {
		fmt.Printf("one CPU: load generator and agents share it\n")
	}
	fmt.Printf("clients | mwid ops/s  p50      p99      | ssh-agent ops/s  p50      p99      | throughput ratio\n")
	var errs []string
	var target row
	for _, r := range rows {
		fmt.Printf("%7d | %10.0f  %-7s  %-7s  | %15.0f  %-7s  %-7s  | %6.1fx\n",
			r.clients,
			r.mwid.OpsPerSec, fmtLatency(r.mwid.P50), fmtLatency(r.mwid.P99),
			r.openssh.OpsPerSec, fmtLatency(r.openssh.P50), fmtLatency(r.openssh.P99),
			ratio(r.mwid, r.openssh))
		if r.mwid.Errors != 0 {
			errs = append(errs, fmt.Sprintf("mwid at %d clients: %d errors", r.clients, r.mwid.Errors))
		}
		if r.openssh.Errors != 0 {
			errs = append(errs, fmt.Sprintf("ssh-agent at %d clients: %d errors", r.clients, r.openssh.Errors))
		}
		if r.clients == targetClients {
			target = r
		}
	}
	if len(errs) > 0 {
		fmt.Printf("errors: %s\n", strings.Join(errs, "; "))
	}
	met := "NOT met"
	if ratio(target.mwid, target.openssh) >= targetRatio && target.mwid.P99 < targetP99 {
		met = "met"
	}
	fmt.Printf("target: >= %gx ssh-agent throughput at %d clients with mwid p99 < %v: %s (ratio %.1fx, mwid p99 %s)\n",
		targetRatio, targetClients, targetP99, met, ratio(target.mwid, target.openssh), fmtLatency(target.mwid.P99))
	fmt.Printf("mwid (log level debug) wrote %d log lines during its cells\n\n", logLines)

	// The framework's ns/op would be the length of the whole table;
	// setting it to 0 leaves it out.
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(target.mwid.OpsPerSec, "mwid-ops/s")
	b.ReportMetric(target.openssh.OpsPerSec, "ssh-agent-ops/s")
	b.ReportMetric(float64(target.mwid.P99)/float64(time.Microsecond), "mwid-p99-us")
	b.ReportMetric(ratio(target.mwid, target.openssh), "ratio@8")

	if len(errs) > 0 {
		b.Errorf("failed agent requests: %s", strings.Join(errs, "; "))
	}
}

// benchDuration returns the measured duration of a cell: MWI_BENCH_SECONDS
// as seconds ("3", "0.5") or as a Go duration ("500ms"), 3s by default.
func benchDuration(b *testing.B) time.Duration {
	b.Helper()
	v := os.Getenv("MWI_BENCH_SECONDS")
	if v == "" {
		return 3 * time.Second
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		s, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil {
			b.Fatalf("MWI_BENCH_SECONDS=%q: want seconds, such as 3 or 0.5, or a duration such as 500ms", v)
		}
		d = time.Duration(s * float64(time.Second))
	}
	if d <= 0 {
		b.Fatalf("MWI_BENCH_SECONDS=%q: want a positive duration", v)
	}
	return d
}

// startSSHAgent runs OpenSSH's ssh-agent in the foreground on a fresh
// socket, loads a fresh ed25519 key into it with ssh-add, and returns the
// socket. The agent is stopped, through its own process, when the
// benchmark ends.
func startSSHAgent(b *testing.B, agentBin, addBin, keygenBin string) (sock string, pid int) {
	b.Helper()
	dir := b.TempDir()
	sock = filepath.Join(dir, "agent.sock")
	logPath := filepath.Join(dir, "ssh-agent.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(agentBin, "-D", "-a", sock)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		logFile.Close()
		b.Fatalf("start ssh-agent: %v", err)
	}
	exited := make(chan error, 1)
	go func() {
		exited <- cmd.Wait()
		logFile.Close()
	}()
	b.Cleanup(func() {
		// SIGTERM lets ssh-agent remove its socket; Kill is the fallback.
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			b.Errorf("ssh-agent (pid %d) did not stop on SIGTERM within 5s; killing it", cmd.Process.Pid)
			cmd.Process.Kill()
			<-exited
		}
		if b.Failed() {
			out, _ := os.ReadFile(logPath)
			b.Logf("--- ssh-agent output (%s) ---\n%s", logPath, out)
		}
	})

	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			break
		}
		select {
		case werr := <-exited:
			out, _ := os.ReadFile(logPath)
			b.Fatalf("ssh-agent exited: %v\n%s", werr, out)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			b.Fatalf("ssh-agent did not listen on %s within 10s: %v", sock, err)
		}
	}

	key := filepath.Join(dir, "id_ed25519")
	if out, err := harness.Run(b.Context(), 30*time.Second, nil,
		keygenBin, "-q", "-t", "ed25519", "-N", "", "-C", "mwi-bench", "-f", key); err != nil {
		b.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
	if out, err := harness.Run(b.Context(), 30*time.Second, []string{"SSH_AUTH_SOCK=" + sock},
		addBin, key); err != nil {
		b.Fatalf("ssh-add: %v\n%s", err, out)
	}
	return sock, cmd.Process.Pid
}

// ratio is a's throughput over b's, or 0 if b measured none.
func ratio(a, b agentload.Result) float64 {
	if b.OpsPerSec == 0 {
		return 0
	}
	return a.OpsPerSec / b.OpsPerSec
}

// fmtLatency formats a latency to two or three significant digits, in µs
// below a millisecond and in ms above.
func fmtLatency(d time.Duration) string {
	switch {
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < 100*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
	}
}

func lineCount(s string) int { return strings.Count(s, "\n") }

// pin restricts every thread of process pid to one CPU. Threads made later
// inherit the mask from the thread that makes them.
func pin(pid, cpu int) error {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return err
	}
	var set unix.CPUSet
	set.Set(cpu)
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if err := unix.SchedSetaffinity(tid, &set); err != nil && !errors.Is(err, unix.ESRCH) {
			return err
		}
	}
	return nil
}

// kubectlTargetRatio is the goal for kubectl through mwictl's exec plugin
// against kubectl with the certificate inline: the plugin may cost at most
// a tenth more. Like the agent's target, it is printed, never asserted.
const kubectlTargetRatio = 1.10

// BenchmarkKubectl times `kubectl get --raw /version` against a real
// kube-apiserver, with a kubeconfig from mwictl whose user is the exec
// plugin (kubectl runs mwictl kube-credential, which asks mwid) side by
// side with the same call with the certificate and key inline (mwictl
// kubeconfig --embed), and then `mwictl kube-credential` alone, each as a
// whole process as a person or a script runs it. make bench runs it as
//
//	MWI_BIN_DIR=$PWD/bin MWI_KUBE_APISERVER=... MWI_KUBECTL=... go test -run '^$' -bench BenchmarkKubectl -benchtime 1x ./integration/
//
// MWI_BENCH_RUNS (default 40) is the number of timed runs of each; three
// of each come first, untimed. The two kubectl variants alternate, and
// which goes first alternates too, so that noise falls on both alike.
func BenchmarkKubectl(b *testing.B) {
	runs := benchRuns(b)
	kube := harness.NewKube(b)
	iss := harness.StartIssuer(b, `kind: role
version: v1
metadata: {name: bench-kube}
spec:
  allow:
    kubernetes_labels: {env: bench}
    kubernetes_groups: [system:masters]
---
kind: bot
version: v1
metadata: {name: bench-kube}
spec: {roles: [bench-kube]}
---
`+kube.ClusterYAML("bench", map[string]string{"env": "bench"}))
	kube.Start(b, iss.KubeCAFile)
	d := harness.StartDaemon(b, iss, harness.DaemonOptions{
		Token: iss.CreateToken(b, "bench-kube", 10*time.Minute),
		Extra: "outputs:\n  - type: kubernetes\n    clusters: [bench]\n",
	})
	d.WaitState(b, "ready", 30*time.Second)

	dir := b.TempDir()
	execCfg, embedCfg := filepath.Join(dir, "exec.kubeconfig"), filepath.Join(dir, "embed.kubeconfig")
	if out, err := d.Ctl("kubeconfig", "-o", execCfg); err != nil {
		b.Fatalf("mwictl kubeconfig: %v\n%s", err, out)
	}
	if out, err := d.Ctl("kubeconfig", "--embed", "-o", embedCfg); err != nil {
		b.Fatalf("mwictl kubeconfig --embed: %v\n%s", err, out)
	}
	env := append(os.Environ(), "HOME="+kube.Home, "KUBECONFIG=")
	timed := func(argv ...string) time.Duration {
		cmd := exec.Command(argv[0], argv[1:]...)
		cmd.Env = env
		start := time.Now()
		out, err := cmd.CombinedOutput()
		elapsed := time.Since(start)
		if err != nil {
			b.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
		}
		return elapsed
	}
	kubectl := func(cfg string) time.Duration {
		return timed(kube.Kubectl, "--kubeconfig", cfg, "get", "--raw", "/version")
	}
	credential := func() time.Duration {
		return timed(iss.Bins.Ctl, "--socket", d.APISock, "kube-credential", "--cluster", "bench")
	}
	for range 3 {
		kubectl(execCfg)
		kubectl(embedCfg)
		credential()
	}

	b.ResetTimer()
	var viaExec, viaEmbed, cred []time.Duration
	for i := range runs {
		if i%2 == 0 {
			viaExec = append(viaExec, kubectl(execCfg))
			viaEmbed = append(viaEmbed, kubectl(embedCfg))
		} else {
			viaEmbed = append(viaEmbed, kubectl(embedCfg))
			viaExec = append(viaExec, kubectl(execCfg))
		}
	}
	for range runs {
		cred = append(cred, credential())
	}
	b.StopTimer()

	e, m, c := summarize(viaExec), summarize(viaEmbed), summarize(cred)
	ratio := float64(e.mean) / float64(m.mean)
	fmt.Printf("\nkubectl get --raw /version against kube-apiserver v1.32.2 on 127.0.0.1, %d runs each, whole processes\n", runs)
	fmt.Printf("%-28s | mean     p50      p99      min      max\n", "")
	for _, r := range []struct {
		name string
		s    durationStats
	}{{"exec plugin (mwictl)", e}, {"certificate inline (--embed)", m}, {"mwictl kube-credential alone", c}} {
		fmt.Printf("%-28s | %-7s  %-7s  %-7s  %-7s  %-7s\n", r.name,
			fmtLatency(r.s.mean), fmtLatency(r.s.p50), fmtLatency(r.s.p99), fmtLatency(r.s.min), fmtLatency(r.s.max))
	}
	met := "NOT met"
	if ratio <= kubectlTargetRatio {
		met = "met"
	}
	fmt.Printf("exec plugin / inline: %.2fx of the mean (%.2fx of the p50); target <= %.2fx: %s\n\n",
		ratio, float64(e.p50)/float64(m.p50), kubectlTargetRatio, met)

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(e.mean.Microseconds())/1000, "exec-mean-ms")
	b.ReportMetric(float64(m.mean.Microseconds())/1000, "embed-mean-ms")
	b.ReportMetric(ratio, "exec/embed")
	b.ReportMetric(float64(c.mean.Microseconds())/1000, "credential-mean-ms")
	b.ReportMetric(float64(c.p99.Microseconds())/1000, "credential-p99-ms")
}

// benchRuns returns MWI_BENCH_RUNS, the number of timed runs of each
// command in BenchmarkKubectl, 40 by default.
func benchRuns(b *testing.B) int {
	b.Helper()
	v := os.Getenv("MWI_BENCH_RUNS")
	if v == "" {
		return 40
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("MWI_BENCH_RUNS=%q: want a positive number of runs", v)
	}
	return n
}

// durationStats summarizes timed runs.
type durationStats struct {
	mean, p50, p99, min, max time.Duration
}

func summarize(ds []time.Duration) durationStats {
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	at := func(p int) time.Duration { return s[(len(s)-1)*p/100] }
	return durationStats{mean: sum / time.Duration(len(s)), p50: at(50), p99: at(99), min: s[0], max: s[len(s)-1]}
}
