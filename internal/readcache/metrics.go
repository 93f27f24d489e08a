package readcache

import (
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// metrics are the cache's Prometheus series (stable names, documented in
// docs/cache.md).
type metrics struct {
	hits, misses    prometheus.Counter
	bytes, entries  prometheus.Gauge
	tenants         prometheus.Gauge
	evictions       prometheus.Counter
	tenantEvictions prometheus.Counter
	rejected        *prometheus.CounterVec
	invalidations   *prometheus.CounterVec
	dropped         *prometheus.CounterVec
	lag             prometheus.Histogram
	restarts        prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		hits: prometheus.NewCounter(prometheus.CounterOpts{Name: "cellplane_readcache_hits_total",
			Help: "STALE reads answered from the read cache."}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{Name: "cellplane_readcache_misses_total",
			Help: "STALE reads the read cache could not answer (absent, or its tenant's follower not current within the read's max_staleness)."}),
		bytes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cellplane_readcache_bytes",
			Help: "Bytes of answers held by the read cache (encoded size plus keys and bookkeeping)."}),
		entries: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cellplane_readcache_entries",
			Help: "Answers held by the read cache."}),
		tenants: prometheus.NewGauge(prometheus.GaugeOpts{Name: "cellplane_readcache_followed_tenants",
			Help: "Tenants the read cache follows (one WatchChanges stream each)."}),
		evictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "cellplane_readcache_evictions_total",
			Help: "Answers evicted by the byte budget or the entry cap."}),
		tenantEvictions: prometheus.NewCounter(prometheus.CounterOpts{Name: "cellplane_readcache_tenant_evictions_total",
			Help: "Tenants no longer followed because the followed-tenant cap was reached."}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cellplane_readcache_fills_rejected_total",
			Help: "Answers not cached, by reason (behind_follower: older than changes already seen; too_large)."}, []string{"reason"}),
		invalidations: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cellplane_readcache_invalidations_total",
			Help: "Answers dropped because a change made them stale, by change kind."}, []string{"kind"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "cellplane_readcache_tenant_drops_total",
			Help: "Tenants whose answers were all dropped because their change stream could not resume (stream_refused: CURSOR_EXPIRED, WRONG_CELL, ...; gap)."}, []string{"reason"}),
		lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "cellplane_readcache_invalidation_lag_seconds",
			Help:    "From a change's commit (its command time) to its invalidation applied in the read cache.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16)}),
		restarts: prometheus.NewCounter(prometheus.CounterOpts{Name: "cellplane_readcache_follower_restarts_total",
			Help: "Change streams of the read cache's followers resumed after they broke."}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.hits, m.misses, m.bytes, m.entries, m.tenants, m.evictions, m.tenantEvictions,
		m.rejected, m.invalidations, m.dropped, m.lag, m.restarts}
}

func counterValue(c prometheus.Counter) uint64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		return 0
	}
	return uint64(d.GetCounter().GetValue())
}
