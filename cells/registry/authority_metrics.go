package registry

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// authorityMetrics are the keeper's metrics. The writes and reads refused
// while the authority is not valid are counted by the store
// (cellplane_store_authority_refusals_total).
type authorityMetrics struct {
	valid         prometheus.GaugeFunc
	renewalAge    prometheus.GaugeFunc
	renewals      *prometheus.CounterVec
	fencesApplied prometheus.Counter
	keepAlives    prometheus.Counter
	leasesLost    prometheus.Counter
}

func newAuthorityMetrics() authorityMetrics {
	return authorityMetrics{
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_cell_authority_renewals_total",
			Help: "Authority lease publications and renewals by this node, by result (ok, conflict, error).",
		}, []string{"result"}),
		fencesApplied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_cell_fences_applied_total",
			Help: "Fences (cells/<c>/fence/<t>) this node applied as the cell leader: tenants made FENCED by an emergency promotion.",
		}),
		keepAlives: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_cell_authority_keepalives_total",
			Help: "Authority renewals done with one lease keep-alive (no etcd write) rather than a new lease and a write.",
		}),
		leasesLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_cell_authority_leases_lost_total",
			Help: "Times a keep-alive found the authority lease gone from etcd (expired): the authority is published again under a new lease.",
		}),
	}
}

// register creates the gauges that read a.
func (m *authorityMetrics) register(a *Authority) {
	m.valid = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cellplane_cell_authority_valid",
		Help: "1 while this node leads its cell and its authority lease is valid (it may acknowledge writes), else 0.",
	}, func() float64 {
		if ok, _ := a.valid(); ok {
			return 1
		}
		return 0
	})
	m.renewalAge = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "cellplane_cell_authority_renewal_age_seconds",
		Help: "Seconds since the last successful authority renewal was sent (-1: none while leading this term).",
	}, func() float64 {
		if a.term.Load() == 0 {
			return -1
		}
		return (a.now() - time.Duration(a.renewedAt.Load())).Seconds()
	})
}

func (m authorityMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.valid, m.renewalAge, m.renewals, m.fencesApplied, m.keepAlives, m.leasesLost}
}
