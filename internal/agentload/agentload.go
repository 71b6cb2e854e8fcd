// Package agentload generates signing load against an SSH agent.
//
// make bench runs it against mwid's agent and against OpenSSH's ssh-agent
// with the same number of clients for the same time, so that the two can
// be compared on throughput and latency.
package agentload

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"slices"
	"sync"
	"time"

	sshagent "golang.org/x/crypto/ssh/agent"
)

// Warmup is how long clients sign before measuring starts. It lets
// connections, goroutines and CPU frequency settle, so a short run is not
// dominated by start-up cost.
const Warmup = 200 * time.Millisecond

// stallGrace bounds how long a request may outlive the run before its
// connection is cut, so a hung agent cannot hang Run.
const stallGrace = 10 * time.Second

// A Result summarizes one run.
type Result struct {
	Clients int
	// Ops counts the signatures that succeeded during the measured
	// window; warm-up requests are not counted.
	Ops int64
	// Errors counts failed requests over the whole run, warm-up
	// included, since any failure means the comparison is suspect.
	Errors int64
	// Duration is the length of the measured window, up to the end of
	// the last request in it.
	Duration  time.Duration
	OpsPerSec float64
	// P50, P99 and Max are latencies of the successful requests in the
	// measured window, from sending the request to reading the reply.
	P50, P99, Max time.Duration
}

func (r Result) String() string {
	return fmt.Sprintf("%d clients: %d ops in %v (%.0f ops/s), %d errors, p50 %v, p99 %v, max %v",
		r.Clients, r.Ops, r.Duration.Round(time.Millisecond), r.OpsPerSec, r.Errors, r.P50, r.P99, r.Max)
}

// Run loads the agent listening on the Unix socket path socket with
// clients concurrent clients, each on its own connection, for Warmup plus
// d. Each client lists the agent's keys once and then signs a fresh
// 32-byte payload with the first key, one request at a time, as an ssh
// client authenticating would.
//
// Run fails if a client cannot connect or the agent holds no keys. A
// failed request is counted in Result.Errors and the client carries on.
// If ctx is cancelled, Run stops early and returns what it measured along
// with ctx's error.
func Run(ctx context.Context, socket string, clients int, d time.Duration) (Result, error) {
	return RunWith(ctx, socket, clients, d, Options{})
}

// Options change what Run's clients sign.
type Options struct {
	// Prepare, if set, is called once for each client, on its own
	// connection, after it listed the agent's keys, with the key it signs
	// with. The client then signs the payload Prepare returns on every
	// request, instead of fresh random bytes: this is how a client binds
	// its connection to a session and signs that session's userauth
	// request, as ssh does with session-bind@openssh.com.
	Prepare func(client sshagent.ExtendedAgent, key *sshagent.Key) ([]byte, error)
}

// RunWith loads the agent as Run does, with clients that sign as o says.
func RunWith(ctx context.Context, socket string, clients int, d time.Duration, o Options) (Result, error) {
	if clients < 1 {
		return Result{}, fmt.Errorf("agentload: need at least one client, got %d", clients)
	}
	if d <= 0 {
		return Result{}, fmt.Errorf("agentload: duration must be positive, got %v", d)
	}

	workers := make([]*worker, clients)
	errs := make([]error, clients)
	var wg sync.WaitGroup
	for i := range workers {
		wg.Go(func() { workers[i], errs[i] = connect(ctx, socket, o.Prepare) })
	}
	wg.Wait()
	defer func() {
		for _, w := range workers {
			if w != nil {
				w.conn.Close()
			}
		}
	}()
	if err := errors.Join(errs...); err != nil {
		return Result{}, err
	}

	start := time.Now()
	from := start.Add(Warmup)
	end := from.Add(d)
	// Closing the connections is what interrupts a request in flight.
	stop := context.AfterFunc(ctx, func() {
		for _, w := range workers {
			w.conn.Close()
		}
	})
	defer stop()
	for i, w := range workers {
		w.conn.SetDeadline(end.Add(stallGrace))
		wg.Go(func() { w.run(ctx, uint64(i), from, end) })
	}
	wg.Wait()

	res := Result{Clients: clients, Duration: max(time.Since(from), 0)}
	var lat []time.Duration
	for _, w := range workers {
		res.Errors += w.errors
		lat = append(lat, w.latencies...)
	}
	res.Ops = int64(len(lat))
	if res.Duration > 0 {
		res.OpsPerSec = float64(res.Ops) / res.Duration.Seconds()
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		res.P50 = percentile(lat, 0.50)
		res.P99 = percentile(lat, 0.99)
		res.Max = lat[len(lat)-1]
	}
	return res, ctx.Err()
}

// percentile returns the nearest-rank p-quantile of the sorted lat.
func percentile(lat []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(lat)))) - 1
	return lat[min(max(i, 0), len(lat)-1)]
}

type worker struct {
	conn   net.Conn
	client sshagent.ExtendedAgent
	key    *sshagent.Key
	fixed  []byte // the payload to sign, if Options.Prepare set one

	latencies []time.Duration
	errors    int64
}

func connect(ctx context.Context, socket string, prepare func(sshagent.ExtendedAgent, *sshagent.Key) ([]byte, error)) (*worker, error) {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", socket)
	if err != nil {
		return nil, fmt.Errorf("agentload: connecting to agent at %s: %w", socket, err)
	}
	w := &worker{conn: conn, client: sshagent.NewClient(conn)}
	keys, err := w.client.List()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("agentload: listing keys of agent at %s: %w", socket, err)
	}
	if len(keys) == 0 {
		conn.Close()
		return nil, fmt.Errorf("agentload: agent at %s holds no keys", socket)
	}
	w.key = keys[0]
	if prepare != nil {
		if w.fixed, err = prepare(w.client, w.key); err != nil {
			conn.Close()
			return nil, fmt.Errorf("agentload: preparing a client of agent at %s: %w", socket, err)
		}
	}
	return w, nil
}

// run signs until end, recording the latency of each request that starts
// at or after from.
func (w *worker) run(ctx context.Context, seed uint64, from, end time.Time) {
	// A cheap per-client generator: the payload only has to differ from
	// request to request, as session identifiers do, not be secret.
	rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
	payload := make([]byte, 32)
	w.latencies = make([]time.Duration, 0, 1<<12)
	for {
		t := time.Now()
		if !t.Before(end) {
			return
		}
		data := w.fixed
		if data == nil {
			for i := 0; i < len(payload); i += 8 {
				binary.LittleEndian.PutUint64(payload[i:], rng.Uint64())
			}
			data = payload
		}
		_, err := w.client.Sign(w.key, data)
		elapsed := time.Since(t)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			w.errors++
		case !t.Before(from):
			w.latencies = append(w.latencies, elapsed)
		}
	}
}
