package replication

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// MetricsConfig says what the sink's lag metrics show.
//
// By default no series carries a tenant id: /metrics is not
// authenticated, so per-tenant series would list every tenant a cell
// keeps a standby of to anyone who can reach the port, and a cell with
// 100k standby tenants would export 200k series per scrape, churning on
// every leader change. The lag is therefore exported as aggregates over
// the standby tenants this node streams (the worst lag, the backlog, how
// many tenants are beyond LagThreshold, streams by state). Per-tenant
// detail stays behind the authenticated CellService.GetTenant (what
// `cellctl tenant get` shows); an operator who wants it in Prometheus as
// well opts in with TenantLabels, bounded by MaxTenantSeries.
type MetricsConfig struct {
	// LagThreshold: a standby tenant whose lag (the age of its oldest
	// change not applied yet) is at least this counts in
	// cellplane_replication_streams_lagging. It is exported too
	// (cellplane_replication_lag_threshold_seconds), so an alert can say
	// what "lagging" meant.
	LagThreshold time.Duration
	// TenantLabels exports cellplane_replication_lag_events{tenant} and
	// cellplane_replication_lag_seconds{tenant}, for the MaxTenantSeries
	// most lagging tenants of each scrape. Off by default: see above.
	TenantLabels bool
	// MaxTenantSeries bounds the tenants exported with TenantLabels (two
	// series each); the tenants left out of a scrape are counted in
	// cellplane_replication_tenant_series_dropped.
	MaxTenantSeries int
}

// DefaultMetricsConfig returns the defaults: no tenant labels, a 5 s lag
// threshold (docs/replication.md's alert), and at most 100 tenants when
// tenant labels are turned on.
func DefaultMetricsConfig() MetricsConfig {
	return MetricsConfig{LagThreshold: 5 * time.Second, MaxTenantSeries: 100}
}

// Validate reports every problem with c.
func (c MetricsConfig) Validate() error {
	var errs []error
	if c.LagThreshold <= 0 {
		errs = append(errs, fmt.Errorf("replication: Metrics.LagThreshold must be > 0, got %v", c.LagThreshold))
	}
	if c.MaxTenantSeries < 1 {
		errs = append(errs, fmt.Errorf("replication: Metrics.MaxTenantSeries must be ≥ 1, got %d", c.MaxTenantSeries))
	}
	return errors.Join(errs...)
}

// Stream states, as CellService.GetTenant reports them and
// cellplane_replication_streams_by_state counts them.
const (
	stateStarting      = "STARTING"
	stateBootstrapping = "BOOTSTRAPPING"
	stateStreaming     = "STREAMING"
	stateRetrying      = "RETRYING"
	// stateRejected: the source sent a batch the store refused
	// (REPLICATION_EVENT_REJECTED); the stream waits RejectRetry.
	stateRejected = "REJECTED"
)

var streamStates = []string{stateStarting, stateBootstrapping, stateStreaming, stateRetrying, stateRejected}

// sinkMetrics are the standby side's metrics: event counters here, the
// lag computed from the streams at scrape time (lagCollector).
type sinkMetrics struct {
	streams       prometheus.Gauge
	applied       prometheus.Counter
	applyDelay    prometheus.Histogram
	applyBatch    prometheus.Histogram
	bootstraps    *prometheus.CounterVec
	importedBytes prometheus.Counter
	restarts      prometheus.Counter
	rejected      prometheus.Counter
}

func newSinkMetrics() *sinkMetrics {
	return &sinkMetrics{
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cellplane_replication_streams",
			Help: "Standby tenants this node (the standby cell's leader) streams.",
		}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_replication_applied_events_total",
			Help: "Change events applied to standbys.",
		}),
		applyDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cellplane_replication_apply_delay_seconds",
			Help:    "Time from the source's commit of a change to its apply on the standby (source and standby clocks).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		applyBatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cellplane_replication_apply_batch_events",
			Help:    "Change events per standby apply proposal (messages received during a Raft round are coalesced).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		bootstraps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_replication_bootstraps_total",
			Help: "Standbys bootstrapped from an export, by reason (initial, trimmed: the source no longer held the position).",
		}, []string{"reason"}),
		importedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_replication_imported_bytes_total",
			Help: "Bytes of exports imported into standbys.",
		}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_replication_stream_restarts_total",
			Help: "Replication streams that failed and were restarted.",
		}),
		rejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_replication_rejected_batches_total",
			Help: "Batches of a source's change events the standby refused (REPLICATION_EVENT_REJECTED); the stream holds its position and retries after RejectRetry.",
		}),
	}
}

func (m *sinkMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.streams, m.applied, m.applyDelay, m.applyBatch, m.bootstraps, m.importedBytes, m.restarts, m.rejected}
}

// lagCollector exports the standby tenants' lag, read from the sink's
// streams at scrape time: the lag of a stalled stream keeps growing
// between messages, and a stopped stream's tenant is gone at once.
type lagCollector struct {
	s   *Sink
	cfg MetricsConfig

	secondsMax, eventsMax, pending, lagging, threshold, byState *prometheus.Desc
	// With TenantLabels only.
	tenantEvents, tenantSeconds, dropped *prometheus.Desc
}

func newLagCollector(s *Sink, cfg MetricsConfig) *lagCollector {
	c := &lagCollector{
		s:   s,
		cfg: cfg,
		secondsMax: prometheus.NewDesc("cellplane_replication_lag_seconds_max",
			"Largest lag over this node's standby tenants: age of the oldest change not applied yet (0 when all are caught up). What a promotion now could lose at worst.", nil, nil),
		eventsMax: prometheus.NewDesc("cellplane_replication_lag_events_max",
			"Most change events any of this node's standby tenants has not applied yet.", nil, nil),
		pending: prometheus.NewDesc("cellplane_replication_pending_events",
			"Change events not applied yet, summed over this node's standby tenants (the backlog).", nil, nil),
		lagging: prometheus.NewDesc("cellplane_replication_streams_lagging",
			"Standby tenants of this node whose lag is at least cellplane_replication_lag_threshold_seconds.", nil, nil),
		threshold: prometheus.NewDesc("cellplane_replication_lag_threshold_seconds",
			"The lag from which a standby tenant counts in cellplane_replication_streams_lagging (--replication-lag-threshold).", nil, nil),
		byState: prometheus.NewDesc("cellplane_replication_streams_by_state",
			"Standby streams of this node by state (STARTING, BOOTSTRAPPING, STREAMING, RETRYING: the source cannot be reached or refused; REJECTED: the source sent events the store refused).", []string{"state"}, nil),
	}
	if cfg.TenantLabels {
		c.tenantEvents = prometheus.NewDesc("cellplane_replication_lag_events",
			"Change events the standby has not applied yet, per tenant (--metrics-tenant-labels; the most lagging tenants only, see cellplane_replication_tenant_series_dropped).", []string{"tenant"}, nil)
		c.tenantSeconds = prometheus.NewDesc("cellplane_replication_lag_seconds",
			"Age of the oldest change the standby has not applied yet, per tenant (0 when caught up; --metrics-tenant-labels; the most lagging tenants only).", []string{"tenant"}, nil)
		c.dropped = prometheus.NewDesc("cellplane_replication_tenant_series_dropped",
			"Standby tenants left out of this scrape's per-tenant lag series by --metrics-max-tenant-series.", nil, nil)
	}
	return c
}

func (c *lagCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.secondsMax, c.eventsMax, c.pending, c.lagging, c.threshold, c.byState, c.tenantEvents, c.tenantSeconds, c.dropped} {
		if d != nil {
			ch <- d
		}
	}
}

// tenantLag is one standby tenant's lag at a scrape.
type tenantLag struct {
	tenant  string
	events  uint64
	seconds float64
}

func (c *lagCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	lags, states := c.s.lags(now)
	var (
		secondsMax float64
		eventsMax  uint64
		pending    uint64
		lagging    int
	)
	thr := c.cfg.LagThreshold.Seconds()
	for _, l := range lags {
		secondsMax = max(secondsMax, l.seconds)
		eventsMax = max(eventsMax, l.events)
		pending += l.events
		if l.seconds >= thr {
			lagging++
		}
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	gauge(c.secondsMax, secondsMax)
	gauge(c.eventsMax, float64(eventsMax))
	gauge(c.pending, float64(pending))
	gauge(c.lagging, float64(lagging))
	gauge(c.threshold, thr)
	for _, s := range streamStates {
		gauge(c.byState, float64(states[s]), s)
	}
	if !c.cfg.TenantLabels {
		return
	}
	// The most lagging first (then by id, so that a bounded scrape is
	// stable while nothing lags).
	slices.SortFunc(lags, func(a, b tenantLag) int {
		switch {
		case a.seconds != b.seconds:
			if a.seconds > b.seconds {
				return -1
			}
			return 1
		case a.events != b.events:
			if a.events > b.events {
				return -1
			}
			return 1
		}
		return strings.Compare(a.tenant, b.tenant)
	})
	keep := min(len(lags), c.cfg.MaxTenantSeries)
	for _, l := range lags[:keep] {
		gauge(c.tenantEvents, float64(l.events), l.tenant)
		gauge(c.tenantSeconds, l.seconds, l.tenant)
	}
	gauge(c.dropped, float64(len(lags)-keep))
}
