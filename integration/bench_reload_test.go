package integration

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mwi-project/mwi/integration/harness"
	"github.com/mwi-project/mwi/internal/agentload"
	"github.com/mwi-project/mwi/internal/watch"
)

// revisionOf is the revision mwid reports for a configuration file's bytes.
func revisionOf(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:6])
}

// BenchmarkReload measures how long a configuration change takes to be
// live, through the file watcher and through POST /v1/reload, and the
// agent's sign throughput while reloads run continuously against the same
// run without them. Like BenchmarkAgentSign it reports and never asserts.
func BenchmarkReload(b *testing.B) {
	d := benchDuration(b)
	if runtime.NumCPU() >= 2 {
		if err := pin(os.Getpid(), 0); err != nil {
			b.Fatal(err)
		}
	}
	iss := harness.StartIssuer(b, resources(harness.CurrentUser(b)))
	mwid := harness.StartDaemon(b, iss, harness.DaemonOptions{Token: iss.CreateToken(b, "ci", time.Hour), AllowUnbound: true})
	mwid.WaitState(b, "ready", 30*time.Second)
	if runtime.NumCPU() >= 2 {
		if err := pin(mwid.Proc.Cmd.Process.Pid, 1); err != nil {
			b.Fatal(err)
		}
	}
	base, err := os.ReadFile(mwid.Config)
	if err != nil {
		b.Fatal(err)
	}
	// variant returns a valid configuration that differs from base by a
	// host pattern, a change that applies without a renewal.
	variant := func(i int) []byte {
		return []byte(strings.Replace(string(base), "hosts: []", fmt.Sprintf("hosts: [host-%d]", i), 1))
	}
	write := func(data []byte) {
		tmp := mwid.Config + ".tmp"
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(tmp, mwid.Config); err != nil {
			b.Fatal(err)
		}
	}
	waitRevision := func(rev string) {
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); {
			if st, err := mwid.Status(b); err == nil && st.Config.Revision == rev {
				return
			}
			time.Sleep(time.Millisecond)
		}
		b.Fatalf("revision %s never became live", rev)
	}

	const rounds = 20
	var viaWatch, viaAPI []time.Duration
	for i := range rounds {
		data := variant(2 * i)
		start := time.Now()
		write(data)
		waitRevision(revisionOf(data))
		viaWatch = append(viaWatch, time.Since(start))

		data = variant(2*i + 1)
		start = time.Now()
		// Written and reloaded at once, inside the watcher's debounce, so
		// the API's reload is the one measured.
		write(data)
		if out, err := mwid.Ctl("reload"); err != nil {
			b.Fatalf("mwictl reload: %v\n%s", err, out)
		}
		waitRevision(revisionOf(data))
		viaAPI = append(viaAPI, time.Since(start))
	}

	// Agent throughput, 8 clients, without and then with a reload every
	// 50ms (alternating valid and invalid files, as an operator's mistakes
	// would).
	quiet, err := agentload.Run(context.Background(), mwid.AgentSock, 8, d)
	if err != nil {
		b.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var reloads int
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			data := variant(1000 + i)
			if i%2 == 1 {
				data = append(data, []byte("bogus: 1\n")...)
			}
			write(data)
			// The client package, not an mwictl process: a process start
			// on the load generator's core would slow the generator, not
			// the agent.
			mwid.Client.Reload(ctx)
			reloads++
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	busy, err := agentload.Run(context.Background(), mwid.AgentSock, 8, d)
	stop()
	wg.Wait()
	if err != nil {
		b.Fatal(err)
	}
	write(base)

	fmt.Printf("\nconfiguration reload, %d rounds each (mwid pinned to CPU 1)\n", rounds)
	fmt.Printf("  file written -> live (watcher, %v debounce + %v settle): %s\n", watch.Debounce, watch.DefaultSettle, latencies(viaWatch))
	fmt.Printf("  file written + mwictl reload -> live:        %s\n", latencies(viaAPI))
	fmt.Printf("agent sign, 8 clients, %v per run\n", d)
	fmt.Printf("  without reloads:                  %8.0f ops/s  p50 %-7s p99 %-7s errors %d\n", quiet.OpsPerSec, fmtLatency(quiet.P50), fmtLatency(quiet.P99), quiet.Errors)
	fmt.Printf("  with %3d reloads (half invalid):  %8.0f ops/s  p50 %-7s p99 %-7s errors %d\n", reloads, busy.OpsPerSec, fmtLatency(busy.P50), fmtLatency(busy.P99), busy.Errors)
	fmt.Printf("  throughput ratio (with / without): %.2f\n\n", busy.OpsPerSec/quiet.OpsPerSec)
	if quiet.Errors+busy.Errors > 0 {
		b.Fatalf("agent errors: %d without reloads, %d with", quiet.Errors, busy.Errors)
	}
	b.ReportMetric(float64(percentile(viaWatch, 50).Microseconds())/1000, "watch-p50-ms")
	b.ReportMetric(float64(percentile(viaAPI, 50).Microseconds())/1000, "api-p50-ms")
	b.ReportMetric(busy.OpsPerSec/quiet.OpsPerSec, "ops-ratio")
	b.ReportMetric(0, "ns/op")
}

func percentile(ds []time.Duration, p int) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)*p/100]
}

func latencies(ds []time.Duration) string {
	return fmt.Sprintf("p50 %s  p99 %s  max %s", fmtLatency(percentile(ds, 50)), fmtLatency(percentile(ds, 99)), fmtLatency(percentile(ds, 100)))
}
