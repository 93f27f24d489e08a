package replication

import "github.com/prometheus/client_golang/prometheus"

// sinkMetrics are the standby side's metrics. Lag is per tenant (the
// tenants a cell keeps standbys of), removed when the stream stops.
type sinkMetrics struct {
	streams       prometheus.Gauge
	lagEvents     *prometheus.GaugeVec
	lagSeconds    *prometheus.GaugeVec
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
		lagEvents: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cellplane_replication_lag_events",
			Help: "Change events the standby has not applied yet, per tenant.",
		}, []string{"tenant"}),
		lagSeconds: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cellplane_replication_lag_seconds",
			Help: "Age of the oldest change the standby has not applied yet, per tenant (0 when caught up).",
		}, []string{"tenant"}),
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
	return []prometheus.Collector{m.streams, m.lagEvents, m.lagSeconds, m.applied, m.applyDelay, m.applyBatch, m.bootstraps, m.importedBytes, m.restarts, m.rejected}
}
