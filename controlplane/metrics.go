package controlplane

import (
	"context"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// cellCollector exports each cell's derived health, live members and
// tenant count, read from the registry at scrape time (a handful of cells:
// the labels stay bounded).
type cellCollector struct {
	st      topo.Store
	log     *slog.Logger
	health  *prometheus.Desc
	members *prometheus.Desc
	tenants *prometheus.Desc
	up      *prometheus.Desc
}

func newCellCollector(st topo.Store, log *slog.Logger) *cellCollector {
	return &cellCollector{
		st:  st,
		log: log,
		health: prometheus.NewDesc("cellplane_cell_health",
			"1 for the cell's current derived health (HEALTHY, DEGRADED, UNAVAILABLE, NOT_STARTED), 0 for the others.",
			[]string{"cell", "region", "health"}, nil),
		members: prometheus.NewDesc("cellplane_cell_live_members", "Registered, live Raft members of the cell.", []string{"cell", "region"}, nil),
		tenants: prometheus.NewDesc("cellplane_cell_tenants", "Tenants placed on the cell.", []string{"cell", "region"}, nil),
		up:      prometheus.NewDesc("cellplane_controlplane_registry_up", "1 if the registry (etcd) could be read for this scrape.", nil, nil),
	}
}

func (c *cellCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.health
	ch <- c.members
	ch <- c.tenants
	ch <- c.up
}

var healthNames = map[cpv1.CellHealth]string{
	cpv1.CellHealth_CELL_HEALTH_HEALTHY:     "HEALTHY",
	cpv1.CellHealth_CELL_HEALTH_DEGRADED:    "DEGRADED",
	cpv1.CellHealth_CELL_HEALTH_UNAVAILABLE: "UNAVAILABLE",
	cpv1.CellHealth_CELL_HEALTH_NOT_STARTED: "NOT_STARTED",
}

func (c *cellCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	cells, err := catalog.Cells(ctx, c.st)
	if err != nil {
		c.log.Debug("metrics: reading cells failed", "err", err)
		ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 0)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, 1)
	for _, ci := range cells {
		id, region := ci.Cell.GetId(), ci.Cell.GetRegion()
		h := catalog.Health(ci)
		for v, name := range healthNames {
			val := 0.0
			if v == h {
				val = 1
			}
			ch <- prometheus.MustNewConstMetric(c.health, prometheus.GaugeValue, val, id, region, name)
		}
		members := 0
		for _, n := range ci.Nodes {
			if n.GetRole() == cpv1.NodeRole_NODE_ROLE_MEMBER {
				members++
			}
		}
		ch <- prometheus.MustNewConstMetric(c.members, prometheus.GaugeValue, float64(members), id, region)
		ch <- prometheus.MustNewConstMetric(c.tenants, prometheus.GaugeValue, float64(ci.Load.GetTenants()), id, region)
	}
}
