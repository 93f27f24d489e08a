package controller

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	leader     prometheus.Gauge
	finished   *prometheus.CounterVec
	stepErrors *prometheus.CounterVec
}

func newMetrics() metrics {
	return metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "cellplane_controller_leader",
			Help: "1 while this replica leads the controller, else 0.",
		}),
		finished: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_controller_workflows_finished_total",
			Help: "Workflows this replica finished, by kind and result (done, failed).",
		}, []string{"kind", "result"}),
		stepErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_controller_workflow_step_errors_total",
			Help: "Workflow steps that failed and were retried, by kind.",
		}, []string{"kind"}),
	}
}

func (m metrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.leader, m.finished, m.stepErrors}
}
