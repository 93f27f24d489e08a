package forward

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// metrics are the forwarder's Prometheus collectors. Label values are
// bounded: method is a known method name of a forwarded service or
// "other", code a gRPC code name, cell a cell id from the routing table
// (or "" when the tenant did not resolve), reason one of the retry reasons
// below, trigger and outcome the hold triggers and outcomes of hold.go.
type metrics struct {
	forwarded    *prometheus.CounterVec
	retries      *prometheus.CounterVec
	latency      *prometheus.HistogramVec
	held         *prometheus.CounterVec
	holdDuration *prometheus.HistogramVec
	hintsIgnored *prometheus.CounterVec
	handshakes   *prometheus.CounterVec
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
		held: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_router_forward_held_total",
			Help: "Holds of forwarded calls while their tenant was cut over, by trigger (cutting_over: the route said so; refused: a cell refused the call during the cutover).",
		}, []string{"trigger"}),
		holdDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cellplane_router_forward_hold_duration_seconds",
			Help:    "Time a forwarded call was held for a cutover, by outcome (released, expired, canceled, gone).",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
		}, []string{"outcome"}),
		hintsIgnored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_router_leader_hints_ignored_total",
			Help: "NOT_LEADER answers whose leader hint named no member of the cell in the routing table, by cell (the hint was not followed).",
		}, []string{"cell"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_router_backend_handshakes_total",
			Help: "Transport handshakes of the connections to cells (mutual TLS, or plaintext without it), by result (ok, error). One per backend connection: a count that keeps rising under steady load means connections are re-established.",
		}, []string{"result"}),
	}
}

func (m *metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.forwarded, m.retries, m.latency, m.held, m.holdDuration, m.hintsIgnored, m.handshakes}
}

// methodObservers are one method's series of the per-call metrics,
// resolved once: its latency observer, and its forwarded counters per
// cell and code, each looked up in the vector the first time it is used.
// A call then costs no label hashing or vector lock.
type methodObservers struct {
	method  string
	latency prometheus.Observer
	vec     *prometheus.CounterVec
	byCell  sync.Map // cell → *cellCounters
}

// cellCounters are a (method, cell)'s forwarded counters by gRPC code.
type cellCounters [codes.Unauthenticated + 1]atomic.Pointer[prometheus.Counter]

func (m *metrics) observers(method string) *methodObservers {
	return &methodObservers{method: method, latency: m.latency.WithLabelValues(method), vec: m.forwarded}
}

// forwarded returns the counter of calls of the method to cell that ended
// with code.
func (o *methodObservers) forwarded(code codes.Code, cell string) prometheus.Counter {
	if code > codes.Unauthenticated {
		return o.vec.WithLabelValues(o.method, code.String(), cell)
	}
	v, ok := o.byCell.Load(cell)
	if !ok {
		v, _ = o.byCell.LoadOrStore(cell, new(cellCounters))
	}
	slot := &v.(*cellCounters)[code]
	if c := slot.Load(); c != nil {
		return *c
	}
	c := o.vec.WithLabelValues(o.method, code.String(), cell)
	slot.Store(&c)
	return c
}
