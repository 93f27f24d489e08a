package routing

import "github.com/prometheus/client_golang/prometheus"

func (t *Table) initMetrics() {
	t.reloads = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cellplane_router_table_reloads_total",
		Help: "Full loads (List of tenants/ and cells/) swapped into the routing table, the first one included.",
	})
	t.snapshotWrites = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "cellplane_router_table_snapshot_writes_total",
		Help: "Routing table snapshots written to the local file.",
	})
	t.collectors = []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cellplane_router_table_tenants",
			Help: "Tenant records in the routing table (any state).",
		}, func() float64 { return float64(t.Len()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cellplane_router_table_revision",
			Help: "Newest etcd revision applied to the routing table.",
		}, func() float64 { return float64(t.Revision()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cellplane_router_table_age_seconds",
			Help: "Seconds since the routing table last saw a watch event or a successful load.",
		}, func() float64 { return t.Age().Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cellplane_router_apikeys_age_seconds",
			Help: "Seconds since the router's view of API keys was last known to match etcd (a load, or a progress notification of its watch; after a restart: the snapshot's). Above the API-key staleness bound, API keys are refused with CREDENTIALS_STALE.",
		}, func() float64 { a, _ := t.KeysAge(); return a.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cellplane_router_apikeys_max_staleness_seconds",
			Help: "The API-key staleness bound (0: unbounded).",
		}, func() float64 { return t.cfg.APIKeyMaxStaleness.Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cellplane_router_table_tenants_cutting_over",
			Help: "Tenants whose placement says a move or failover is cutting them over (their calls are held).",
		}, func() float64 { return float64(t.CuttingOver()) }),
		t.reloads,
		t.snapshotWrites,
	}
}

// Collectors returns the table's metrics, for registration by the caller.
func (t *Table) Collectors() []prometheus.Collector { return t.collectors }
