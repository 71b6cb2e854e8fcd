// Command mwi-loadgen measures what mwi-issuer carries: bots that join with
// one-time tokens and renew over mutual TLS, each request on a new
// connection with a fresh key and CSR, against a bbolt or PostgreSQL
// store and one or several issuers. It prints throughput, p50/p99 latency
// and the issuer's CPU time per operation beside the targets, and the
// store's size per instance. make loadtest runs it.
//
// Usage:
//
//	mwi-loadgen [-issuer PATH] [-store bolt|postgres|URL] [-replicas N]
//	            [-instances N] [-joins N] [-renewals N] [-concurrency N]
//	            [-pin] [-sizes 1000,100000,1000000] [-stepca DIR] [-floor=false]
//	mwi-loadgen -addrs HOST:PORT,... -state DIR -admin-socket PATH [-pids PID,...] ...
//
// Without -addrs it initialises an issuer state directory of its own,
// seeds the store with -instances minus -joins instances (package
// loadgen), starts -replicas issuers and joins -joins bots through tokens
// made on the admin socket, then makes -renewals renewals with those bots.
// -pin runs the issuers on CPU 0 and the generator on CPU 1 (taskset).
// -stepca names a directory holding step-ca and step v0.30.2: the same
// renewals then run against step-ca, with the ratio printed. Unless
// -floor=false, it then measures a bare TLS server on the issuers' CPU,
// the renewal's floor, and prints the lower bound of a renewal's CPU time
// beside the target (package loadgen).
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/mwi-project/mwi/internal/loadgen"
)

func main() {
	loadgen.ServeFloorIfAsked()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	c := loadgen.Defaults()
	fs := flag.NewFlagSet("mwi-loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var addrs, pids, sizes string
	fs.StringVar(&c.Issuer, "issuer", defaultIssuer(), "mwi-issuer `PATH`")
	fs.StringVar(&c.Store, "store", c.Store, "store: bolt, postgres (a server started here, fsync on) or a `URL`")
	fs.IntVar(&c.Replicas, "replicas", c.Replicas, "issuers to start on the store (more than one needs PostgreSQL)")
	fs.StringVar(&addrs, "addrs", "", "issuers that run already, `HOST:PORT,...` (then -state and -admin-socket)")
	fs.StringVar(&c.StateDir, "state", "", "issuer state `DIR` (default: a new temporary one)")
	fs.StringVar(&c.AdminSocket, "admin-socket", "", "admin socket `PATH` of a running issuer, for join tokens")
	fs.StringVar(&pids, "pids", "", "`PID,...` of running issuers whose CPU time to count")
	fs.IntVar(&c.Instances, "instances", c.Instances, "bot instances in the store while renewals run")
	fs.IntVar(&c.Joins, "joins", c.Joins, "bots that join with tokens, and then renew")
	fs.IntVar(&c.Renewals, "renewals", c.Renewals, "renewals to make")
	fs.IntVar(&c.Concurrency, "concurrency", c.Concurrency, "requests in flight at once")
	fs.BoolVar(&c.Pin, "pin", false, "run the issuers on CPU 0 and the generator on CPU 1")
	fs.DurationVar(&c.TTL, "ttl", c.TTL, "certificate lifetime to ask for")
	fs.StringVar(&sizes, "sizes", "", "fleet sizes `N,...` at which to measure the store's size per instance")
	fs.StringVar(&c.StepCA, "stepca", "", "`DIR` holding step-ca and step v0.30.2, to compare with")
	floor := fs.Bool("floor", true, "after the renewals, measure a bare TLS server's CPU per request beside them")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mwi-loadgen: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	var err error
	if addrs != "" {
		c.Addrs = strings.Split(addrs, ",")
	}
	if c.PIDs, err = ints("pids", pids); err == nil {
		c.Sizes, err = ints("sizes", sizes)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mwi-loadgen: %v\n", err)
		return 2
	}
	if *floor {
		if c.Self, err = os.Executable(); err != nil {
			fmt.Fprintf(stderr, "mwi-loadgen: -floor: %v\n", err)
			return 2
		}
	}
	c.Log = slog.New(slog.NewTextHandler(stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	r, err := loadgen.Run(ctx, c)
	if r != nil {
		r.Print(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "mwi-loadgen: %v\n", err)
		return 1
	}
	return 0
}

// defaultIssuer is the mwi-issuer beside this program, as make build puts
// them.
func defaultIssuer() string {
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "mwi-issuer")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "mwi-issuer"
}

func ints(name, list string) ([]int, error) {
	if list == "" {
		return nil, nil
	}
	var out []int
	for _, f := range strings.Split(list, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("-%s: %q is not a positive number", name, f)
		}
		out = append(out, n)
	}
	return out, nil
}
