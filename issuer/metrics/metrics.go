// Package metrics holds mwi-issuer's Prometheus metrics.
//
// Every Metrics has its own registry; nothing is registered on the
// Prometheus default registry, so tests (and several issuers in one test
// process) can each create their own. The authority knows nothing of
// Prometheus: Metrics implements its Observer.
//
// Metrics:
//
//	mwi_issuer_build_info{version,commit,goversion}          1
//	mwi_issuer_joins_total{method,outcome}                    joins decided
//	mwi_issuer_renewals_total{outcome}                        renewals decided
//	mwi_issuer_decision_duration_seconds{event,outcome}       how long each took (histogram)
//	mwi_issuer_denials_total{event,reason}                    refusals, by their stable code
//	mwi_issuer_locks{kind}                                    locks in force (bot, instance, token)
//	mwi_issuer_store_operation_duration_seconds{operation}    store calls (histogram)
//	mwi_issuer_store_errors_total{operation}                  store calls that failed
//	mwi_issuer_ca_expiry_timestamp_seconds{ca}                when each X.509 authority expires
//	mwi_issuer_serving_certificate_expiry_timestamp_seconds  when the HTTPS certificate expires
//	mwi_issuer_resources_last_load_successful                 0 while a rejected set left the previous one serving
//	mwi_issuer_resources_last_load_success_timestamp_seconds  when the set in use was loaded
//
// outcome is allowed, denied or error, as in the audit log; method is a
// join method or "unknown"; reason is an api.Code* value. Each label has
// a small, fixed set of values. Plus the Go runtime (go_*) and process
// (process_*) collectors.
package metrics

import (
	"context"
	"crypto/x509"
	"net/http"
	"runtime"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mwi-project/mwi/api"
	"github.com/mwi-project/mwi/internal/version"
	"github.com/mwi-project/mwi/issuer/authority"
	"github.com/mwi-project/mwi/issuer/ca"
	"github.com/mwi-project/mwi/issuer/store"
)

// durationBuckets are the histogram buckets of decisions and store calls,
// in seconds: from a millisecond (a bbolt read) to ten seconds (a request
// that waited for a slow database).
var durationBuckets = []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}

// Metrics are the issuer's metrics on their own registry. Its methods are
// safe for concurrent use.
type Metrics struct {
	registry *prometheus.Registry

	joins    *prometheus.CounterVec
	renewals *prometheus.CounterVec
	duration *prometheus.HistogramVec
	denials  *prometheus.CounterVec

	storeDuration *prometheus.HistogramVec
	storeErrors   *prometheus.CounterVec

	resourcesOK   prometheus.Gauge
	resourcesLoad prometheus.Gauge
}

// New returns Metrics registered on a fresh registry, with
// mwi_issuer_build_info from info.
func New(info version.Info) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		registry: reg,
		joins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mwi_issuer_joins_total",
			Help: "Joins decided, by join method and outcome (allowed, denied, error).",
		}, []string{"method", "outcome"}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mwi_issuer_renewals_total",
			Help: "Renewals decided, by outcome (allowed, denied, error).",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mwi_issuer_decision_duration_seconds",
			Help:    "How long joins and renewals took to decide, signing included, by event and outcome.",
			Buckets: durationBuckets,
		}, []string{"event", "outcome"}),
		denials: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mwi_issuer_denials_total",
			Help: "Joins and renewals refused or failed, by event and the refusal's stable code.",
		}, []string{"event", "reason"}),
		storeDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mwi_issuer_store_operation_duration_seconds",
			Help:    "How long calls to the issuer's store took, by operation.",
			Buckets: durationBuckets,
		}, []string{"operation"}),
		storeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mwi_issuer_store_errors_total",
			Help: "Calls to the issuer's store that failed for want of the store (not refusals such as an unknown token), by operation.",
		}, []string{"operation"}),
	}
	m.resourcesOK = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mwi_issuer_resources_last_load_successful",
		Help: "1 if the last load of the resources (directory or store) was applied, 0 if it was rejected and the previous set serves.",
	})
	m.resourcesOK.Set(1)
	m.resourcesLoad = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mwi_issuer_resources_last_load_success_timestamp_seconds",
		Help: "When the resource set in use was loaded, in seconds since the Unix epoch.",
	})
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "mwi_issuer_build_info",
		Help: "Always 1, with the version and commit mwi-issuer was built from and its Go version.",
	}, []string{"version", "commit", "goversion"})
	buildInfo.WithLabelValues(info.Version, info.Commit, runtime.Version()).Set(1)
	// Every series that alerts and the dashboard use exists from the
	// start, at zero, so that rate() sees the first event.
	for _, outcome := range []string{authority.OutcomeAllowed, authority.OutcomeDenied, authority.OutcomeError} {
		for _, method := range api.JoinMethods {
			m.joins.WithLabelValues(string(method), outcome)
		}
		m.renewals.WithLabelValues(outcome)
	}
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		buildInfo,
		m.joins, m.renewals, m.duration, m.denials,
		m.storeDuration, m.storeErrors,
		m.resourcesOK, m.resourcesLoad,
	)
	return m
}

// Registry returns the registry that holds the metrics, for tests.
func (m *Metrics) Registry() *prometheus.Registry { return m.registry }

// Handler serves the metrics in the Prometheus text exposition format.
// A collector that fails does not fail the scrape: the other metrics are
// still served, and promhttp_metric_handler_errors_total counts the error.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		Registry:      m.registry,
	})
}

// Decision counts one join or renewal; Metrics is the authority's
// Observer.
func (m *Metrics) Decision(d authority.Decision) {
	switch d.Event {
	case authority.DecisionJoin:
		m.joins.WithLabelValues(string(d.Method), d.Outcome).Inc()
	case authority.DecisionRenew:
		m.renewals.WithLabelValues(d.Outcome).Inc()
	}
	m.duration.WithLabelValues(d.Event, d.Outcome).Observe(d.Duration.Seconds())
	if d.Outcome != authority.OutcomeAllowed {
		m.denials.WithLabelValues(d.Event, d.Reason).Inc()
	}
}

// ResourcesLoaded records that a resource set was loaded and serves
// (err nil), or that one was rejected and the previous set serves:
// mwi_issuer_resources_last_load_successful and its timestamp. A nil
// *Metrics records nothing.
func (m *Metrics) ResourcesLoaded(err error, at time.Time) {
	if m == nil {
		return
	}
	if err != nil {
		m.resourcesOK.Set(0)
		return
	}
	m.resourcesOK.Set(1)
	m.resourcesLoad.Set(unixSeconds(at))
}

// scrapeTimeout bounds what a scrape asks the store.
const scrapeTimeout = 3 * time.Second

// Watch registers the collectors of what is read at each scrape: the
// expiry of the authorities and of the serving certificate that cas
// returns (the ones in use then), and the locks in force in st.
func (m *Metrics) Watch(cas func() *ca.Authority, st store.Store, now func() time.Time) {
	m.registry.MustRegister(&stateCollector{cas: cas, store: st, now: now})
}

var (
	caExpiryDesc = prometheus.NewDesc("mwi_issuer_ca_expiry_timestamp_seconds",
		"When each of the issuer's X.509 certificate authorities expires (tls, identity, kube, admin), in seconds since the Unix epoch.",
		[]string{"ca"}, nil)
	servingExpiryDesc = prometheus.NewDesc("mwi_issuer_serving_certificate_expiry_timestamp_seconds",
		"When the issuer's HTTPS serving certificate expires, in seconds since the Unix epoch.",
		nil, nil)
	locksDesc = prometheus.NewDesc("mwi_issuer_locks",
		"Locks in force, by what they lock (bot, instance, token).",
		[]string{"kind"}, nil)
)

// stateCollector reads the authorities and the locks at each scrape.
type stateCollector struct {
	cas   func() *ca.Authority
	store store.Store
	now   func() time.Time
}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- caExpiryDesc
	ch <- servingExpiryDesc
	ch <- locksDesc
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	if a := c.cas(); a != nil {
		for _, x := range []struct {
			name string
			cert *x509.Certificate
		}{{"tls", a.TLSCA()}, {"identity", a.IdentityCA()}, {"kube", a.KubeCA()}, {"admin", a.AdminCA()}} {
			if x.cert != nil {
				ch <- prometheus.MustNewConstMetric(caExpiryDesc, prometheus.GaugeValue, unixSeconds(x.cert.NotAfter), x.name)
			}
		}
		if leaf := a.ServingLeaf(); leaf != nil {
			ch <- prometheus.MustNewConstMetric(servingExpiryDesc, prometheus.GaugeValue, unixSeconds(leaf.NotAfter))
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	locks, err := c.store.Locks(ctx, c.now())
	if err != nil {
		// No series rather than a wrong zero; the store's errors count it.
		ch <- prometheus.NewInvalidMetric(locksDesc, err)
		return
	}
	counts := map[string]int{"bot": 0, "instance": 0, "token": 0}
	for _, l := range locks {
		switch {
		case l.Token != "":
			counts["token"]++
		case l.Instance != "":
			counts["instance"]++
		default:
			counts["bot"]++
		}
	}
	for kind, n := range counts {
		ch <- prometheus.MustNewConstMetric(locksDesc, prometheus.GaugeValue, float64(n), kind)
	}
}

func unixSeconds(t time.Time) float64 { return float64(t.UnixMilli()) / 1e3 }
