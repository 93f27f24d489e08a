package forward

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the forwarder's Prometheus collectors. Label values are
// bounded: method is a known method name of a forwarded service or
// "other", code a gRPC code name, cell a cell id from the routing table
// (or "" when the tenant did not resolve), reason one of the retry reasons
// below.
type metrics struct {
	forwarded *prometheus.CounterVec
	retries   *prometheus.CounterVec
	latency   *prometheus.HistogramVec
}

// Retry reasons (the reason label of cellplane_router_forward_retries_total).
const (
	retryNotLeader   = "not_leader"
	retryStaleRoute  = "stale_route" // WRONG_CELL / STALE_EPOCH
	retryMoving      = "tenant_moving"
	retryUnavailable = "unavailable" // CELL_UNAVAILABLE or a connection failure
)

func newMetrics() *metrics {
	return &metrics{
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_router_forwarded_total",
			Help: "Calls forwarded to cells, by method, final gRPC code and cell.",
		}, []string{"method", "code", "cell"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_router_forward_retries_total",
			Help: "Forwarded call attempts retried, by reason.",
		}, []string{"reason"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cellplane_router_forward_duration_seconds",
			Help:    "Time from receiving a forwarded call to its end (streams: to the stream's end), retries included.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
		}, []string{"method"}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.forwarded, m.retries, m.latency}
}
