package controller

import "github.com/prometheus/client_golang/prometheus"

// moveMetrics are the leader's metrics of moves, drains and standbys.
// Gauges are set by the leader's passes and reset when it stops leading.
type moveMetrics struct {
	byState   *prometheus.GaugeVec
	finished  *prometheus.CounterVec
	duration  prometheus.Histogram
	pause     prometheus.Histogram
	standbys  prometheus.Gauge
	repairs   *prometheus.CounterVec
	draining  prometheus.Gauge
	stepError *prometheus.CounterVec
}

func newMoveMetrics() moveMetrics {
	return moveMetrics{
		byState: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "cellplane_controller_moves",
			Help: "Move records kept in etcd, by state (set by the leader's housekeeping pass).",
		}, []string{"state"}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_controller_moves_finished_total",
			Help: "Moves this replica finished, by result (done, cancelled, failed).",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cellplane_controller_move_duration_seconds",
			Help:    "Time from a move's start to DONE.",
			Buckets: prometheus.ExponentialBuckets(0.5, 2, 14), // 0.5 s .. ~2.3 h
		}),
		pause: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cellplane_controller_move_write_pause_seconds",
			Help:    "A move's write pause: from the fence (routers hold the tenant) to the placement flip.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14), // 5 ms .. ~40 s
		}),
		standbys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cellplane_controller_standbys",
			Help: "Tenants with a standby cell (set by the leader's standby pass).",
		}),
		repairs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_controller_standby_repairs_total",
			Help: "Standby assignments the reconciler set on a cell, by result (ok, error).",
		}, []string{"result"}),
		draining: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cellplane_controller_draining_cells",
			Help: "Cells being drained (set by the leader's drain pass).",
		}),
		stepError: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_controller_move_step_errors_total",
			Help: "Move steps that failed and were retried, by state.",
		}, []string{"state"}),
	}
}

func (m moveMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.byState, m.finished, m.duration, m.pause, m.standbys, m.repairs, m.draining, m.stepError}
}

// reset clears the gauges only a leader sets.
func (m moveMetrics) reset() {
	m.byState.Reset()
	m.standbys.Set(0)
	m.draining.Set(0)
}
