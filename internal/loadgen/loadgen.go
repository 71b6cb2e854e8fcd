// Package loadgen measures what an issuer carries: it simulates a fleet
// of bots that join with one-time tokens and renew over mutual TLS, each
// request on a new connection with a fresh key and CSR, as mwid makes
// them, and reports throughput, latency and the issuer's CPU time per
// operation beside the targets of the fleet the issuer is meant for.
//
// Run starts the issuers itself (mwi-issuer serve, one or several on one
// PostgreSQL database) in a state directory of its own, fills the store
// with the rest of the fleet in bulk (store.Seed: joining a million bots
// one at a time would take most of an hour), or drives issuers that run
// already. With Pin, the issuers (and PostgreSQL) run on CPU 0 and the
// generator on CPU 1, so that they do not take each other's time. After
// the renewals it measures their floor (Floor): what a bare TLS server and
// the unavoidable public-key work cost on the issuers' CPU.
package loadgen

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/pgtest"
	"github.com/mwi-project/mwi/issuer/store"
)

// Config says what to run. Zero fields take the defaults of Defaults.
type Config struct {
	// Issuer is the mwi-issuer program that Run starts.
	Issuer string
	// Store is "bolt" (a bbolt file in the state directory), "postgres"
	// (a PostgreSQL server that Run starts, with fsync on), or the URL of
	// a store (bolt://PATH, postgres://…).
	Store string
	// Replicas is how many issuers Run starts on the store; more than one
	// needs PostgreSQL.
	Replicas int
	// Addrs, if set, are issuers that run already: Run starts none and
	// sends its requests to these, in turn. StateDir is then their state
	// directory (its tls_ca.crt verifies them), AdminSocket makes the join
	// tokens, and PIDs are the processes whose CPU time is counted.
	Addrs       []string
	AdminSocket string
	PIDs        []int
	// StateDir is the issuers' state directory; empty means a new
	// temporary one, removed at the end.
	StateDir string
	// Instances is how many bot instances the store holds while renewals
	// run: Joins of them join through the API, the rest are seeded.
	Instances int
	// Joins is how many bots join with one-time tokens; they are the ones
	// that then renew.
	Joins int
	// Renewals is how many renewals to make.
	Renewals int
	// Concurrency is how many requests are in flight at once.
	Concurrency int
	// Pin runs the issuers (and PostgreSQL) on CPU 0 and the generator on
	// CPU 1.
	Pin bool
	// TTL is the lifetime asked for.
	TTL time.Duration
	// Sizes, if set, are fleet sizes at which to measure the store's size
	// per instance, each in a store of its own.
	Sizes []int
	// StepCA is a directory holding step-ca and step (v0.30.2); if set,
	// the same renewal load runs against step-ca too, for comparison.
	StepCA string
	// Self, if set, is a program that calls ServeFloorIfAsked (this one):
	// Run then measures the floor after the renewals (see Floor).
	Self string
	// Log receives progress; nil means slog.Default().
	Log *slog.Logger
}

// Defaults returns the configuration that Run uses for zero fields.
func Defaults() Config {
	return Config{
		Issuer:      "mwi-issuer",
		Store:       "bolt",
		Replicas:    1,
		Instances:   1000,
		Joins:       200,
		Renewals:    5000,
		Concurrency: 8,
		TTL:         20 * time.Minute,
	}
}

func (c Config) withDefaults() Config {
	d := Defaults()
	c.Issuer = cmp.Or(c.Issuer, d.Issuer)
	c.Store = cmp.Or(c.Store, d.Store)
	c.Replicas = cmp.Or(c.Replicas, d.Replicas)
	c.Instances = cmp.Or(c.Instances, d.Instances)
	c.Joins = cmp.Or(c.Joins, d.Joins)
	c.Renewals = cmp.Or(c.Renewals, d.Renewals)
	c.Concurrency = cmp.Or(c.Concurrency, d.Concurrency)
	c.TTL = cmp.Or(c.TTL, d.TTL)
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return c
}

func (c Config) check() error {
	switch {
	case c.Replicas < 1:
		return errors.New("replicas: want at least 1")
	case c.Joins < 1 || c.Renewals < 0 || c.Concurrency < 1:
		return errors.New("joins and concurrency must be at least 1, renewals at least 0")
	case c.Instances < c.Joins:
		return fmt.Errorf("instances (%d) must be at least joins (%d): the joined bots are part of the fleet", c.Instances, c.Joins)
	case len(c.Addrs) > 0 && c.StateDir == "":
		return errors.New("with issuer addresses, name their state directory (for the TLS CA)")
	case len(c.Addrs) > 0 && c.AdminSocket == "":
		return errors.New("with issuer addresses, name an admin socket (for the join tokens)")
	case len(c.Addrs) == 0 && c.Replicas > 1 && !isPostgres(c.Store):
		return errors.New("several replicas share a PostgreSQL store: bbolt is one issuer at a time (use --store postgres)")
	}
	return nil
}

func isPostgres(location string) bool {
	return location == "postgres" || strings.HasPrefix(location, "postgres://") || strings.HasPrefix(location, "postgresql://")
}

// Phase is the outcome of a series of requests of one kind.
type Phase struct {
	Name     string
	OK       int
	Failed   int
	Elapsed  time.Duration
	P50, P99 time.Duration
	// Issuer is what the issuers used during the phase; Database what
	// PostgreSQL did, when Run started it.
	Issuer, Database usage
	// AuditBytes is how much the issuers' audit logs grew.
	AuditBytes int64
	// FirstError is the first failure, if any.
	FirstError string

	latencies []time.Duration
}

// Rate returns the successful operations per second.
func (p Phase) Rate() float64 {
	if p.Elapsed <= 0 {
		return 0
	}
	return float64(p.OK) / p.Elapsed.Seconds()
}

// CPUPerOp returns the issuers' CPU time per successful operation.
func (p Phase) CPUPerOp() time.Duration { return perOp(p.Issuer.cpu, p.OK) }

func perOp(d time.Duration, n int) time.Duration {
	if n == 0 {
		return 0
	}
	return d / time.Duration(n)
}

// Size is the store's size with a number of instances.
type Size struct {
	Instances int
	Bytes     int64
	// Empty is the size of the store before any instance was written.
	Empty int64
	Seed  time.Duration
}

// PerInstance returns the bytes each instance takes.
func (s Size) PerInstance() float64 {
	if s.Instances == 0 {
		return 0
	}
	return float64(s.Bytes-s.Empty) / float64(s.Instances)
}

// Report is what Run measured.
type Report struct {
	Config    Config
	StoreKind string
	Load      string // the load average when the run started
	Join      Phase
	Renew     *Phase
	Fleet     Size
	Sizes     []Size
	StepCA    *Phase
	StepCAMsg string // why step-ca was not measured, if it was not
	Floor     *Floor
	FloorMsg  string // why the floor was not measured, if it was not
}

// Run runs the load that c describes and returns what it measured.
func Run(ctx context.Context, c Config) (*Report, error) {
	c = c.withDefaults()
	if err := c.check(); err != nil {
		return nil, err
	}
	r := &Report{Config: c, Load: loadAverage(), StoreKind: "bolt"}
	if isPostgres(c.Store) {
		r.StoreKind = "postgres"
	}
	e := &env{c: c, log: c.Log}
	defer e.close()
	if err := e.setup(ctx, r); err != nil {
		return nil, err
	}
	if c.Pin {
		if err := pinSelf(1); err != nil {
			return nil, err
		}
	}
	c.Log.Info("making keys and CSRs", "count", c.Joins+c.Renewals)
	keys, err := newKeySets(c.Joins+c.Renewals, func(i int) string { return "load-" + strconv.Itoa(i) })
	if err != nil {
		return nil, err
	}
	bots, err := e.joinPhase(ctx, r, keys[:c.Joins])
	if err != nil {
		return nil, err
	}
	// step-ca, when compared, runs beside the issuers, idle while they
	// work and the reverse: the renewals alternate between the two in
	// rounds, so that a change in the machine's other load during the run
	// falls on both alike.
	var sca *stepCA
	switch {
	case c.StepCA == "":
		r.StepCAMsg = "no step-ca directory given (--stepca DIR with step-ca and step v0.30.2): comparison skipped"
	case c.Renewals > 0:
		if sca, err = startStepCA(ctx, c, keys[c.Joins:]); err != nil {
			r.StepCAMsg = err.Error()
		} else {
			defer sca.close()
		}
	}
	idle := make(chan bot, len(bots))
	for _, b := range bots {
		idle <- b
	}
	if c.Renewals > 0 {
		rounds := 1
		if sca != nil {
			rounds = compareRounds
		}
		e.log.Info("renewing", "renewals", c.Renewals, "bots", len(bots), "concurrency", c.Concurrency, "rounds", rounds)
		renewKeys := keys[c.Joins:]
		for i := range rounds {
			from, to := i*len(renewKeys)/rounds, (i+1)*len(renewKeys)/rounds
			r.Renew = r.Renew.merge(e.renewPhase(ctx, idle, renewKeys[from:to]))
			if sca != nil {
				p := sca.run(ctx, e, from, to)
				r.StepCA = r.StepCA.merge(p)
			}
		}
	}
	switch {
	case c.Renewals == 0:
	case len(c.Addrs) > 0:
		r.FloorMsg = "measured only beside issuers that this program starts, on their machine: floor skipped"
	case c.Self == "":
		r.FloorMsg = "no program to serve it: floor skipped"
	default:
		bots = bots[:0]
		for len(idle) > 0 {
			bots = append(bots, <-idle)
		}
		if r.Floor, err = e.floor(ctx, bots); err != nil {
			r.FloorMsg = err.Error()
			r.Floor = nil
		}
	}
	if r.Fleet.Bytes, err = e.storeSize(ctx, e.location); err != nil {
		c.Log.Warn("store size", "err", err)
	}
	if len(c.Sizes) > 0 {
		e.stopIssuers()
		if r.Sizes, err = e.sizes(ctx); err != nil {
			return r, err
		}
	}
	return r, nil
}

// env is a run's processes and files.
type env struct {
	c        Config
	log      *slog.Logger
	dir      string // the state directory
	tempDir  string // removed at the end, if Run made it
	location string // the store
	pg       *pgtest.Server
	issuers  []*exec.Cmd
	targets  []target
	admin    string
	audit    []string
	pids     []int
	dbPIDs   map[int]bool
}

func (e *env) close() {
	e.stopIssuers()
	if e.pg != nil {
		e.pg.Stop()
	}
	if e.tempDir != "" {
		os.RemoveAll(e.tempDir)
	}
}

func (e *env) stopIssuers() {
	for _, cmd := range e.issuers {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	e.issuers = nil
}

// setup makes the state directory and the store, seeds it, and starts
// the issuers, or finds the ones given.
func (e *env) setup(ctx context.Context, r *Report) error {
	c := e.c
	if len(c.Addrs) > 0 {
		e.dir, e.admin, e.pids = c.StateDir, c.AdminSocket, c.PIDs
		return e.findTargets(c.Addrs)
	}
	e.dir = c.StateDir
	if e.dir == "" {
		tmp, err := os.MkdirTemp("", "mwi-loadgen-")
		if err != nil {
			return err
		}
		e.tempDir, e.dir = tmp, filepath.Join(tmp, "issuer")
	}
	if out, err := exec.CommandContext(ctx, c.Issuer, "init", "--state", e.dir, "--host", "127.0.0.1").CombinedOutput(); err != nil {
		return fmt.Errorf("%s init: %v: %s", c.Issuer, err, out)
	}
	if err := os.MkdirAll(filepath.Join(e.dir, "resources"), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(e.dir, "resources", "load.yaml"), []byte(resources), 0o600); err != nil {
		return err
	}
	switch {
	case c.Store == "bolt":
		e.location = "bolt://" + filepath.Join(e.dir, "store.db")
	case c.Store == "postgres":
		pg, err := pgtest.StartDurable()
		if err != nil {
			return fmt.Errorf("start PostgreSQL: %w", err)
		}
		e.pg = pg
		if e.location, err = pg.CreateDatabase("mwi_load", ""); err != nil {
			return err
		}
		if c.Pin {
			if err := pinTree(pg.PID(), 0); err != nil {
				return err
			}
		}
	default:
		e.location = c.Store
	}
	// The size of the empty store, made as the issuer makes it.
	st, err := store.Open(e.location)
	if err != nil {
		return err
	}
	st.Close()
	if r.Fleet.Empty, err = e.storeSize(ctx, e.location); err != nil {
		return err
	}
	r.Fleet.Instances = c.Instances
	if n := c.Instances - c.Joins; n > 0 {
		e.log.Info("seeding the store", "instances", n, "store", store.Redact(e.location))
		start := time.Now()
		if _, err := store.Seed(ctx, e.location, fleet(n)); err != nil {
			return err
		}
		r.Fleet.Seed = time.Since(start)
	}
	for i := range c.Replicas {
		if err := e.startIssuer(ctx, i); err != nil {
			return err
		}
	}
	if e.pg != nil {
		e.dbPIDs = map[int]bool{e.pg.PID(): true}
	}
	return nil
}

// resources are the bots of the load: ten bots with one role that allows
// one login, so that every answer carries an SSH certificate too.
var resources = func() string {
	var b strings.Builder
	b.WriteString("kind: role\nversion: v1\nmetadata:\n  name: load\nspec:\n  allow:\n    logins: [load]\n  options:\n    max_ttl: 1h\n")
	for i := range botCount {
		fmt.Fprintf(&b, "---\nkind: bot\nversion: v1\nmetadata:\n  name: load-%d\nspec:\n  roles: [load]\n", i)
	}
	return b.String()
}()

const botCount = 10

// fleet returns n instances as joins with tokens make them, in the order
// of their IDs, which bbolt appends fastest.
func fleet(n int) iter.Seq[store.Instance] {
	ids := make([]string, n)
	var b [16]byte
	for i := range ids {
		rand.Read(b[:])
		ids[i] = hex.EncodeToString(b[:])
	}
	slices.Sort(ids)
	created := time.Now().UTC()
	return func(yield func(store.Instance) bool) {
		for i, id := range ids {
			in := store.Instance{ID: id, Bot: "load-" + strconv.Itoa(i%botCount), Generation: 1, Created: created, JoinMethod: api.JoinMethodToken}
			if !yield(in) {
				return
			}
		}
	}
}

func freePort() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// startIssuer starts replica i of the issuer and waits until it is healthy.
func (e *env) startIssuer(ctx context.Context, i int) error {
	addr, err := freePort()
	if err != nil {
		return err
	}
	admin := filepath.Join(e.dir, fmt.Sprintf("admin-%d.sock", i))
	audit := filepath.Join(e.dir, fmt.Sprintf("audit-%d.log", i))
	args := []string{e.c.Issuer, "serve", "--state", e.dir, "--listen", addr, "--store", e.location,
		"--admin-socket", admin, "--audit-log", audit, "--log-level", "warn"}
	if e.c.Pin {
		// taskset executes the issuer in its own process: the PID is the issuer's.
		args = append([]string{"taskset", "-c", "0"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return err
	}
	e.issuers = append(e.issuers, cmd)
	e.pids = append(e.pids, cmd.Process.Pid)
	e.audit = append(e.audit, audit)
	if i == 0 {
		e.admin = admin
	}
	if err := e.findTargets([]string{addr}); err != nil {
		return err
	}
	t := e.targets[len(e.targets)-1]
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := healthy(ctx, t)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("issuer %d on %s is not healthy after 30s: %w", i, addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// findTargets adds the issuers at addrs, verified by the state
// directory's TLS CA.
func (e *env) findTargets(addrs []string) error {
	data, err := os.ReadFile(filepath.Join(e.dir, "tls_ca.crt"))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(data) {
		return fmt.Errorf("%s: no certificate", filepath.Join(e.dir, "tls_ca.crt"))
	}
	for _, a := range addrs {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			return fmt.Errorf("issuer address %q: %w", a, err)
		}
		e.targets = append(e.targets, target{addr: a, serverName: host, roots: roots})
	}
	return nil
}

func healthy(ctx context.Context, t target) error {
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: t.roots, ServerName: t.serverName}}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+t.addr+"/healthz", nil)
	if err != nil {
		return err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("healthz: %s", resp.Status)
	}
	return nil
}

// tokens makes n one-time join tokens through the admin socket, as an
// operator does.
func (e *env) tokens(ctx context.Context, n int) ([]string, error) {
	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", e.admin)
		}}}
	defer hc.CloseIdleConnections()
	out := make([]string, n)
	for i := range out {
		body, _ := json.Marshal(api.CreateTokenRequest{Bot: "load-" + strconv.Itoa(i%botCount), TTLSeconds: 3600})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://issuer/admin/v1/tokens", strings.NewReader(string(body)))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := hc.Do(req)
		if err != nil {
			return nil, fmt.Errorf("create a join token (admin socket %s): %w", e.admin, err)
		}
		var tr api.CreateTokenResponse
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			return nil, fmt.Errorf("create a join token: %s: %s", resp.Status, data)
		}
		if err := json.Unmarshal(data, &tr); err != nil {
			return nil, err
		}
		out[i] = tr.Token
	}
	return out, nil
}

// measure returns the usage of the issuers and of PostgreSQL, if Run
// started it.
func (e *env) measure() (issuer, db usage) {
	issuer = usageOf(e.pids, nil)
	if e.pg != nil {
		db = usageOf([]int{e.pg.PID()}, e.dbPIDs)
	}
	return issuer, db
}

func (e *env) auditSize() int64 {
	var n int64
	for _, p := range e.audit {
		if fi, err := os.Stat(p); err == nil {
			n += fi.Size()
		}
	}
	return n
}

// phase runs do(ctx, i) for i in [0, n) on c.Concurrency workers and
// measures it.
func (e *env) phase(ctx context.Context, name string, n int, do func(ctx context.Context, i int) error) Phase {
	var (
		next      atomic.Int64
		mu        sync.Mutex
		latencies = make([]time.Duration, 0, n)
		failed    int
		first     string
		wg        sync.WaitGroup
	)
	beforeIssuer, beforeDB := e.measure()
	beforeAudit := e.auditSize()
	start := time.Now()
	for range e.c.Concurrency {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				err := do(ctx, i)
				d := time.Since(t0)
				mu.Lock()
				if err != nil {
					failed++
					if first == "" {
						first = err.Error()
					}
				} else {
					latencies = append(latencies, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	p := Phase{Name: name, Elapsed: time.Since(start), OK: len(latencies), Failed: failed, FirstError: first}
	afterIssuer, afterDB := e.measure()
	p.Issuer, p.Database = afterIssuer.sub(beforeIssuer), afterDB.sub(beforeDB)
	p.AuditBytes = e.auditSize() - beforeAudit
	p.latencies = latencies
	p.P50, p.P99 = percentiles(latencies)
	return p
}

// compareRounds is how many rounds the renewals alternate between the
// issuers and step-ca in.
const compareRounds = 5

// merge returns the sum of two rounds of one kind of phase; a nil p is
// none.
func (p *Phase) merge(q Phase) *Phase {
	if p == nil {
		return &q
	}
	m := *p
	m.OK += q.OK
	m.Failed += q.Failed
	m.Elapsed += q.Elapsed
	m.Issuer, m.Database = m.Issuer.add(q.Issuer), m.Database.add(q.Database)
	m.AuditBytes += q.AuditBytes
	m.FirstError = cmp.Or(m.FirstError, q.FirstError)
	m.latencies = append(slices.Clip(m.latencies), q.latencies...)
	m.P50, m.P99 = percentiles(m.latencies)
	return &m
}

func percentiles(ds []time.Duration) (p50, p99 time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	slices.Sort(ds)
	at := func(q float64) time.Duration { return ds[min(len(ds)-1, int(q*float64(len(ds))))] }
	return at(0.50), at(0.99)
}

func (e *env) joinPhase(ctx context.Context, r *Report, keys []keySet) ([]bot, error) {
	toks, err := e.tokens(ctx, len(keys))
	if err != nil {
		return nil, err
	}
	e.log.Info("joining", "bots", len(keys))
	bots := make([]bot, len(keys))
	r.Join = e.phase(ctx, "join", len(keys), func(ctx context.Context, i int) error {
		b, err := join(ctx, e.targets[i%len(e.targets)], toks[i], keys[i], e.c.TTL)
		bots[i] = b
		return err
	})
	joined := slices.DeleteFunc(bots, func(b bot) bool { return b.instance == "" })
	if len(joined) == 0 {
		return nil, fmt.Errorf("no bot could join: %s", r.Join.FirstError)
	}
	return joined, nil
}

// renewPhase makes a renewal with each of keys, by the bots in idle. Each
// bot renews one request at a time, as mwid does: two renewals of one
// identity at once would be a copied identity, and locked.
func (e *env) renewPhase(ctx context.Context, idle chan bot, keys []keySet) Phase {
	return e.phase(ctx, "renew", len(keys), func(ctx context.Context, i int) error {
		var b bot
		select {
		case b = <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
		nb, err := renew(ctx, e.targets[i%len(e.targets)], b, keys[i], e.c.TTL)
		if err != nil {
			// The old identity may still be good; a locked one fails again
			// and shows in the count of failures.
			idle <- b
			return err
		}
		idle <- nb
		return nil
	})
}

// storeSize returns the size of the store at location: the bbolt file's,
// or the PostgreSQL database's.
func (e *env) storeSize(ctx context.Context, location string) (int64, error) {
	if isPostgres(location) {
		conn, err := pgx.Connect(ctx, location)
		if err != nil {
			return 0, err
		}
		defer conn.Close(ctx)
		var n int64
		// A checkpoint first, so that what is in shared buffers only is
		// counted as the files will hold it.
		conn.Exec(ctx, "CHECKPOINT")
		err = conn.QueryRow(ctx, "SELECT pg_database_size(current_database())").Scan(&n)
		return n, err
	}
	fi, err := os.Stat(strings.TrimPrefix(location, "bolt://"))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

// sizes seeds a store of its own for each of c.Sizes and measures it.
func (e *env) sizes(ctx context.Context) ([]Size, error) {
	var out []Size
	for _, n := range e.c.Sizes {
		var location string
		var cleanup func()
		switch {
		case e.pg != nil:
			url, err := e.pg.CreateDatabase("mwi_size_"+strconv.Itoa(n), "")
			if err != nil {
				return out, err
			}
			location, cleanup = url, func() {}
		default:
			dir, err := os.MkdirTemp("", "mwi-loadgen-size-")
			if err != nil {
				return out, err
			}
			location, cleanup = "bolt://"+filepath.Join(dir, "store.db"), func() { os.RemoveAll(dir) }
		}
		s, err := e.seededSize(ctx, location, n)
		cleanup()
		if err != nil {
			return out, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (e *env) seededSize(ctx context.Context, location string, n int) (Size, error) {
	s := Size{Instances: n}
	st, err := store.Open(location)
	if err != nil {
		return s, err
	}
	st.Close()
	if s.Empty, err = e.storeSize(ctx, location); err != nil {
		return s, err
	}
	e.log.Info("seeding for the store's size", "instances", n)
	start := time.Now()
	if _, err := store.Seed(ctx, location, fleet(n)); err != nil {
		return s, err
	}
	s.Seed = time.Since(start)
	s.Bytes, err = e.storeSize(ctx, location)
	return s, err
}

// pinTree binds process pid, its threads and its child processes to cpu,
// with taskset. Children forked later inherit the binding.
func pinTree(pid, cpu int) error {
	pids := []int{pid}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		child, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if _, ppid, err := procStat(child); err == nil && ppid == pid {
			pids = append(pids, child)
		}
	}
	for _, p := range pids {
		out, err := exec.Command("taskset", "-a", "-p", "-c", strconv.Itoa(cpu), strconv.Itoa(p)).CombinedOutput()
		if err != nil {
			return fmt.Errorf("taskset: %v: %s", err, out)
		}
	}
	return nil
}
