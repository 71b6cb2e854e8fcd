// Package metrics holds mwid's Prometheus metrics.
//
// Every Metrics has its own registry; nothing is registered on the
// Prometheus default registry, so tests (and several daemons in one test
// process) can each create their own.
//
// Metrics:
//
//	mwid_api_requests_total{route,code}           local API requests
//	mwid_agent_requests_total{type,result}        SSH agent requests
//	mwid_renewals_total{result}                   renewal attempts
//	mwid_renewal_failures_consecutive             failed renewals since the last success
//	mwid_credential_expiry_timestamp_seconds{kind,name} when each held credential expires
//	mwid_build_info{version,commit,goversion}     1
//	mwid_renewal_duration_seconds{result}         how long renewal attempts took (histogram)
//	mwid_renewal_last_success_timestamp_seconds   when a renewal (or the join) last succeeded
//	mwid_config_reloads_total{result}             configuration reloads
//	mwid_config_last_reload_successful            1 if the last reload was applied, 0 if refused
//	mwid_config_last_reload_success_timestamp_seconds when the configuration was last loaded
//	mwid_output_write_failures_total{type}        outputs that could not be written, by output type
//
// result is success or failure in every metric that has it; an output's
// type is the one the configuration names (identity, ssh_host,
// kubernetes, ...). Plus the Go runtime (go_*) and process (process_*)
// collectors.
package metrics

import (
	"net/http"
	"runtime"
	"strconv"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/mwi-project/mwi/internal/unixsock"
	"github.com/mwi-project/mwi/internal/version"
)

// RouteUnmatched is the route label of API requests that matched no route.
const RouteUnmatched = "unmatched"

// Agent request types, the values of mwid_agent_requests_total's type label.
const (
	opList = iota
	opSign
	opAdd
	opRemove
	opRemoveAll
	opLock
	opUnlock
	opSigners
	opExtension
	numOps
)

var opNames = [numOps]string{
	opList:      "list",
	opSign:      "sign",
	opAdd:       "add",
	opRemove:    "remove",
	opRemoveAll: "remove_all",
	opLock:      "lock",
	opUnlock:    "unlock",
	opSigners:   "signers",
	opExtension: "extension",
}

// Metrics are mwid's metrics on their own registry. Its methods are safe
// for concurrent use.
type Metrics struct {
	registry *prometheus.Registry

	apiRequests *prometheus.CounterVec

	// agentOps holds the resolved counters of every (type, result) pair,
	// so that counting an agent request is a single atomic add.
	agentOps [numOps]opCounters

	renewalSuccess      prometheus.Counter
	renewalFailure      prometheus.Counter
	consecutiveFailures prometheus.Gauge

	expiry *prometheus.GaugeVec
	// expiryMu guards expiryHeld, the (kind, name) pairs of the series
	// SetExpiries set last.
	expiryMu   sync.Mutex
	expiryHeld map[[2]string]bool

	renewalDuration    *prometheus.HistogramVec
	renewalLastSuccess prometheus.Gauge
	reloads            *prometheus.CounterVec
	reloadOK           prometheus.Gauge
	reloadLastSuccess  prometheus.Gauge
	outputFailures     *prometheus.CounterVec
}

// Values of the result label, the same in every metric that has one.
const (
	resultSuccess = "success"
	resultFailure = "failure"
)

func result(err error) string {
	if err != nil {
		return resultFailure
	}
	return resultSuccess
}

type opCounters struct {
	ok, err prometheus.Counter
}

func (c *opCounters) done(err error) {
	if err != nil {
		c.err.Inc()
	} else {
		c.ok.Inc()
	}
}

// New returns Metrics registered on a fresh registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		registry: reg,
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mwid_api_requests_total",
			Help: "Requests to mwid's local API, by route pattern and HTTP status code.",
		}, []string{"route", "code"}),
		consecutiveFailures: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "mwid_renewal_failures_consecutive",
			Help: "Renewal attempts that failed since the last successful one.",
		}),
		expiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "mwid_credential_expiry_timestamp_seconds",
			Help: "When each credential mwid holds expires, in seconds since the Unix epoch.",
		}, []string{"kind", "name"}),
	}
	agentRequests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mwid_agent_requests_total",
		Help: "Requests to mwid's SSH agent, by request type and result.",
	}, []string{"type", "result"})
	for op, name := range opNames {
		m.agentOps[op] = opCounters{
			ok:  agentRequests.WithLabelValues(name, resultSuccess),
			err: agentRequests.WithLabelValues(name, resultFailure),
		}
	}
	renewals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mwid_renewals_total",
		Help: "Renewal attempts, by result.",
	}, []string{"result"})
	m.renewalSuccess = renewals.WithLabelValues(resultSuccess)
	m.renewalFailure = renewals.WithLabelValues(resultFailure)

	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mwid_build_info",
		Help: "Always 1, with the version and commit mwid was built from and its Go version.",
	}, []string{"version", "commit", "goversion"})
	v := version.Get()
	buildInfo.WithLabelValues(v.Version, v.Commit, runtime.Version()).Set(1)
	m.renewalDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "mwid_renewal_duration_seconds",
		Help: "How long renewal attempts (the join too) took, writing the outputs included, by result.",
		// From a renewal next to the issuer to one that waited on a slow
		// issuer, a platform's token endpoint or a reload command.
		Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"result"})
	m.renewalDuration.WithLabelValues(resultSuccess)
	m.renewalDuration.WithLabelValues(resultFailure)
	m.renewalLastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mwid_renewal_last_success_timestamp_seconds",
		Help: "When a renewal, or the join, last succeeded, in seconds since the Unix epoch; 0 before the first.",
	})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mwid_config_reloads_total",
		Help: "Configuration reloads (SIGHUP, file change, mwictl reload), by result.",
	}, []string{"result"})
	m.reloads.WithLabelValues(resultSuccess)
	m.reloads.WithLabelValues(resultFailure)
	m.reloadOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mwid_config_last_reload_successful",
		Help: "1 if the last configuration reload was applied (or none was tried), 0 if it was refused and the previous configuration runs.",
	})
	m.reloadOK.Set(1)
	m.reloadLastSuccess = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mwid_config_last_reload_success_timestamp_seconds",
		Help: "When the configuration in use was loaded (at start or by a reload), in seconds since the Unix epoch.",
	})
	m.outputFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mwid_output_write_failures_total",
		Help: "Outputs that could not be written, by output type.",
	}, []string{"type"})

	reg.MustRegister(
		buildInfo, m.renewalDuration, m.renewalLastSuccess,
		m.reloads, m.reloadOK, m.reloadLastSuccess, m.outputFailures,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.apiRequests,
		agentRequests,
		renewals,
		m.consecutiveFailures,
		m.expiry,
	)
	return m
}

// Handler serves the metrics in the Prometheus text exposition format.
// A collector that fails does not fail the scrape: the other metrics are
// still served, and promhttp_metric_handler_errors_total counts the error.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.registry,
	})
}

// Middleware counts API requests by chi route pattern and status code:
// mwid_api_requests_total{route,code}. It must run inside a chi router
// (localapi.Routes' middlewares), since the pattern is read from chi's
// routing context once the router has routed the request; put it first so
// that it also counts requests the other middlewares refuse. Requests that
// match no route, or a route but not its method, count as route
// "unmatched", so that probing random paths cannot create unbounded label
// values.
func (m *Metrics) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := &statusRecorder{ResponseWriter: w}
		next.ServeHTTP(rec, r)
		m.apiRequests.WithLabelValues(routeOf(r), codeLabel(rec.status())).Inc()
	})
}

// routeOf returns the pattern of the route chi routed r to. A request that
// a later middleware answered itself (such as a 403 from the peer check)
// was never routed; its pattern is looked up in the router, so that it
// still counts under its route.
func routeOf(r *http.Request) string {
	rctx := chi.RouteContext(r.Context())
	if rctx == nil {
		return RouteUnmatched
	}
	if p := rctx.RoutePattern(); p != "" {
		return p
	}
	if rctx.Routes != nil {
		if p := rctx.Routes.Find(chi.NewRouteContext(), r.Method, r.URL.Path); p != "" {
			return p
		}
	}
	return RouteUnmatched
}

// codeLabel formats an HTTP status code without allocating for the common ones.
func codeLabel(code int) string {
	switch code {
	case http.StatusOK:
		return "200"
	case http.StatusForbidden:
		return "403"
	case http.StatusNotFound:
		return "404"
	case http.StatusMethodNotAllowed:
		return "405"
	case http.StatusInternalServerError:
		return "500"
	case http.StatusBadGateway:
		return "502"
	case http.StatusServiceUnavailable:
		return "503"
	}
	return strconv.Itoa(code)
}

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (s *statusRecorder) WriteHeader(code int) {
	if s.code == 0 {
		s.code = code
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

// Flush lets streaming handlers flush through the recorder.
func (s *statusRecorder) Flush() {
	if s.code == 0 {
		s.code = http.StatusOK
	}
	http.NewResponseController(s.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// status is the status code sent, 200 if the handler wrote nothing.
func (s *statusRecorder) status() int {
	if s.code == 0 {
		return http.StatusOK
	}
	return s.code
}

// InstrumentAgent wraps a so that each request is counted:
// mwid_agent_requests_total{type,result}, with type one of list, sign,
// add, remove, remove_all, lock, unlock, signers, extension and result
// success or failure. Sign and SignWithFlags both count as sign. An extension the
// agent does not support counts as an error.
//
// Counting costs one atomic add and no allocation per request.
func (m *Metrics) InstrumentAgent(a agent.ExtendedAgent) agent.ExtendedAgent {
	return &instrumentedAgent{a: a, ops: &m.agentOps}
}

type instrumentedAgent struct {
	a   agent.ExtendedAgent
	ops *[numOps]opCounters
}

func (i *instrumentedAgent) List() ([]*agent.Key, error) {
	keys, err := i.a.List()
	i.ops[opList].done(err)
	return keys, err
}

func (i *instrumentedAgent) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	sig, err := i.a.Sign(key, data)
	i.ops[opSign].done(err)
	return sig, err
}

func (i *instrumentedAgent) SignWithFlags(key ssh.PublicKey, data []byte, flags agent.SignatureFlags) (*ssh.Signature, error) {
	sig, err := i.a.SignWithFlags(key, data, flags)
	i.ops[opSign].done(err)
	return sig, err
}

func (i *instrumentedAgent) Add(key agent.AddedKey) error {
	err := i.a.Add(key)
	i.ops[opAdd].done(err)
	return err
}

func (i *instrumentedAgent) Remove(key ssh.PublicKey) error {
	err := i.a.Remove(key)
	i.ops[opRemove].done(err)
	return err
}

func (i *instrumentedAgent) RemoveAll() error {
	err := i.a.RemoveAll()
	i.ops[opRemoveAll].done(err)
	return err
}

func (i *instrumentedAgent) Lock(passphrase []byte) error {
	err := i.a.Lock(passphrase)
	i.ops[opLock].done(err)
	return err
}

func (i *instrumentedAgent) Unlock(passphrase []byte) error {
	err := i.a.Unlock(passphrase)
	i.ops[opUnlock].done(err)
	return err
}

func (i *instrumentedAgent) Signers() ([]ssh.Signer, error) {
	s, err := i.a.Signers()
	i.ops[opSigners].done(err)
	return s, err
}

// ForConn returns the agent for one connection, counted like i, if i wraps
// an agent that serves each connection with one of its own (see
// mwid's agent.ConnAgent), and i itself otherwise.
func (i *instrumentedAgent) ForConn(p unixsock.Peer) agent.Agent {
	c, ok := i.a.(interface {
		ForConn(unixsock.Peer) agent.Agent
	})
	if !ok {
		return i
	}
	ea, ok := c.ForConn(p).(agent.ExtendedAgent)
	if !ok {
		return i
	}
	return &instrumentedAgent{a: ea, ops: i.ops}
}

func (i *instrumentedAgent) Extension(extensionType string, contents []byte) ([]byte, error) {
	out, err := i.a.Extension(extensionType, contents)
	i.ops[opExtension].done(err)
	return out, err
}

// Renewal records one renewal attempt, failed if err is not nil:
// mwid_renewals_total{result="success"|"failure"}, and sets
// mwid_renewal_failures_consecutive to consecutiveFailures.
func (m *Metrics) Renewal(err error, consecutiveFailures int) {
	if err != nil {
		m.renewalFailure.Inc()
	} else {
		m.renewalSuccess.Inc()
	}
	m.consecutiveFailures.Set(float64(consecutiveFailures))
}

// RenewalSucceeded sets mwid_renewal_last_success_timestamp_seconds to
// at, when a renewal, or the join, succeeded.
func (m *Metrics) RenewalSucceeded(at time.Time) {
	m.renewalLastSuccess.Set(unixSeconds(at))
}

// RenewalDuration records how long one renewal attempt took:
// mwid_renewal_duration_seconds{result}.
func (m *Metrics) RenewalDuration(d time.Duration, err error) {
	m.renewalDuration.WithLabelValues(result(err)).Observe(d.Seconds())
}

// Loaded records that the configuration in use was loaded at at, at start
// or by a reload that changed it.
func (m *Metrics) Loaded(at time.Time) {
	m.reloadLastSuccess.Set(unixSeconds(at))
}

// Reload records one reload, refused if err is not nil:
// mwid_config_reloads_total{result} and
// mwid_config_last_reload_successful.
func (m *Metrics) Reload(err error) {
	m.reloads.WithLabelValues(result(err)).Inc()
	if err != nil {
		m.reloadOK.Set(0)
	} else {
		m.reloadOK.Set(1)
	}
}

// Outputs makes the series of mwid_output_write_failures_total for each
// output type in types, at zero, so that the first failure of one is an
// increase that rate() and alerts see. Series of types no longer
// configured stay: they are counters.
func (m *Metrics) Outputs(types []string) {
	for _, t := range types {
		m.outputFailures.WithLabelValues(t)
	}
}

// OutputFailed counts an output of the given type that could not be
// written: mwid_output_write_failures_total{type}.
func (m *Metrics) OutputFailed(outputType string) {
	m.outputFailures.WithLabelValues(outputType).Inc()
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1e3 }

// Expiry is when one held credential expires. Name tells credentials of
// one kind apart: the cluster of a "kubernetes" credential, the principals
// (comma-separated) of an "ssh_host" certificate, empty for the one
// "identity" and the one "ssh" credential.
type Expiry struct {
	Kind, Name string
	At         time.Time
}

// SetExpiries records when each credential mwid holds expires:
// mwid_credential_expiry_timestamp_seconds{kind,name}. It removes the
// series of credentials not in held, so that one mwid no longer holds (a
// removed output, a cluster no longer allowed) leaves none behind; the
// others are updated in place, so that no scrape sees them missing.
func (m *Metrics) SetExpiries(held []Expiry) {
	m.expiryMu.Lock()
	defer m.expiryMu.Unlock()
	now := make(map[[2]string]bool, len(held))
	for _, e := range held {
		now[[2]string{e.Kind, e.Name}] = true
		m.expiry.WithLabelValues(e.Kind, e.Name).Set(unixSeconds(e.At))
	}
	for k := range m.expiryHeld {
		if !now[k] {
			m.expiry.DeleteLabelValues(k[0], k[1])
		}
	}
	m.expiryHeld = now
}
