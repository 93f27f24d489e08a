package controller

import "github.com/prometheus/client_golang/prometheus"

// failoverMetrics are the leader's metrics of switchovers and promotions.
type failoverMetrics struct {
	finished      *prometheus.CounterVec
	timeToPromote *prometheus.HistogramVec
	lostEvents    prometheus.Counter
	policyStarted prometheus.Counter
}

func newFailoverMetrics() failoverMetrics {
	return failoverMetrics{
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_controller_failovers_total",
			Help: "Failovers this replica finished, by kind (switchover, promote) and outcome (done, failed).",
		}, []string{"kind", "outcome"}),
		timeToPromote: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cellplane_controller_failover_time_to_promote_seconds",
			Help:    "Time from a failover's start to the placement flip (the standby serving), by kind.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 12), // 50 ms .. ~100 s
		}, []string{"kind"}),
		lostEvents: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_controller_failover_lost_events_total",
			Help: "Writes acknowledged by an old owner that never reached the promoted standby (the RPO of emergency promotions, as the old owners reported it).",
		}),
		policyStarted: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_controller_failover_policy_promotions_total",
			Help: "Emergency promotions the automatic policy started.",
		}),
	}
}

func (m failoverMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.finished, m.timeToPromote, m.lostEvents, m.policyStarted}
}
