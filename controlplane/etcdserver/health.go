package etcdserver

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/embed"
)

// validateHealth checks the compaction, quota and defragmentation fields
// (after withDefaults).
func (c Config) validateHealth() error {
	var errs []error
	switch c.AutoCompactionMode {
	case embed.CompactorModePeriodic:
		if _, err := periodicRetention(c.AutoCompactionRetention); err != nil {
			errs = append(errs, fmt.Errorf("etcdserver: AutoCompactionRetention %q: want a duration (10m) or whole hours: %w", c.AutoCompactionRetention, err))
		}
	case embed.CompactorModeRevision:
		if n, err := strconv.ParseInt(c.AutoCompactionRetention, 10, 64); err != nil || n < 0 {
			errs = append(errs, fmt.Errorf("etcdserver: AutoCompactionRetention %q: want a revision count ≥ 0 in revision mode", c.AutoCompactionRetention))
		}
	default:
		errs = append(errs, fmt.Errorf("etcdserver: AutoCompactionMode %q: want %q or %q", c.AutoCompactionMode, embed.CompactorModePeriodic, embed.CompactorModeRevision))
	}
	if c.QuotaBackendBytes <= 0 {
		errs = append(errs, fmt.Errorf("etcdserver: QuotaBackendBytes must be > 0, got %d", c.QuotaBackendBytes))
	}
	if c.DefragMinFreeRatio > 1 {
		errs = append(errs, fmt.Errorf("etcdserver: DefragMinFreeRatio must be ≤ 1, got %g", c.DefragMinFreeRatio))
	}
	return errors.Join(errs...)
}

// periodicRetention parses a periodic retention as etcd does: whole hours
// or a duration.
func periodicRetention(v string) (time.Duration, error) {
	if h, err := strconv.ParseInt(v, 10, 64); err == nil {
		if h < 0 {
			return 0, errors.New("negative")
		}
		return time.Duration(h) * time.Hour, nil
	}
	d, err := time.ParseDuration(v)
	if err == nil && d < 0 {
		return 0, errors.New("negative")
	}
	return d, err
}

// Alarm is a raised etcd alarm.
type Alarm struct {
	Member uint64
	// Type is etcd's alarm name: "NOSPACE" (the backend reached
	// QuotaBackendBytes: writes refused) or "CORRUPT".
	Type string
}

// Alarms returns the member's raised alarms (none: nil). NOSPACE stays
// raised after space is freed until it is disarmed (etcdctl alarm
// disarm; docs/reliability.md).
func (s *Server) Alarms() []Alarm {
	s.mu.Lock()
	e := s.etcd
	s.mu.Unlock()
	if e == nil {
		return nil
	}
	return alarmsOf(e)
}

func alarmsOf(e *embed.Etcd) []Alarm {
	var out []Alarm
	for _, a := range e.Server.Alarms() {
		if a.Alarm == pb.AlarmType_NONE {
			continue
		}
		out = append(out, Alarm{Member: a.MemberID, Type: a.Alarm.String()})
	}
	return out
}

// BackendSize returns the backend's size on disk and the part of it in
// use (the rest is free pages a defragmentation gives back); 0, 0 while
// the member is down.
func (s *Server) BackendSize() (size, inUse int64) {
	s.mu.Lock()
	e := s.etcd
	s.mu.Unlock()
	if e == nil {
		return 0, 0
	}
	be := e.Server.Backend()
	return be.Size(), be.SizeInUse()
}

// Revisions returns the member's current revision and the revision its
// history is compacted to: the history kept is their difference.
func (s *Server) Revisions() (current, compacted int64) {
	s.mu.Lock()
	e := s.etcd
	s.mu.Unlock()
	if e == nil {
		return 0, 0
	}
	kv := e.Server.KV()
	return kv.Rev(), max(kv.FirstRev(), 0) // FirstRev: the compaction revision (-1: none yet)
}

// Defragment defragments the backend now, whatever the thresholds (the
// maintenance loop calls it when they are met). It blocks the member's
// reads and writes while it runs.
func (s *Server) Defragment() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.etcd == nil {
		return ErrClosed
	}
	return defrag(s.etcd, s.health, s.cfg.Logger)
}

func defrag(e *embed.Etcd, m *healthMetrics, log *slog.Logger) error {
	be := e.Server.Backend()
	size, inUse := be.Size(), be.SizeInUse()
	start := time.Now()
	err := be.Defrag()
	took := time.Since(start)
	m.defragSeconds.Observe(took.Seconds())
	if err != nil {
		m.defrags.WithLabelValues("error").Inc()
		if log != nil {
			log.Warn("etcd defragmentation failed", "component", "etcd", "err", err)
		}
		return fmt.Errorf("etcdserver: defragment: %w", err)
	}
	m.defrags.WithLabelValues("ok").Inc()
	if log != nil {
		log.Info("etcd defragmented", "component", "etcd", "took", took, "size_before", size, "in_use", inUse, "size_after", be.Size())
	}
	return nil
}

// maintainer defragments a member when enough of its db is free.
type maintainer struct {
	stopc chan struct{}
	done  chan struct{}
}

func startMaintainer(e *embed.Etcd, cfg Config, m *healthMetrics) *maintainer {
	mt := &maintainer{stopc: make(chan struct{}), done: make(chan struct{})}
	if cfg.DefragInterval < 0 {
		close(mt.done)
		return mt
	}
	go func() {
		defer close(mt.done)
		t := time.NewTicker(cfg.DefragInterval)
		defer t.Stop()
		for {
			select {
			case <-mt.stopc:
				return
			case <-t.C:
			}
			be := e.Server.Backend()
			if worthDefrag(be.Size(), be.SizeInUse(), cfg.DefragMinFreeBytes, cfg.DefragMinFreeRatio) {
				_ = defrag(e, m, cfg.Logger)
			}
		}
	}()
	return mt
}

// worthDefrag: the free part of the db is at least minFree bytes and at
// least minRatio of it (a negative threshold is no threshold).
func worthDefrag(size, inUse, minFree int64, minRatio float64) bool {
	free := size - inUse
	if size <= 0 || free <= 0 {
		return false
	}
	return free >= minFree && float64(free)/float64(size) >= minRatio
}

func (mt *maintainer) stop() {
	if mt == nil {
		return
	}
	close(mt.stopc)
	<-mt.done
}

// healthMetrics are the member's health metrics (Collectors).
type healthMetrics struct {
	defrags       *prometheus.CounterVec
	defragSeconds prometheus.Histogram
}

func newHealthMetrics() *healthMetrics {
	return &healthMetrics{
		defrags: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_etcd_defrags_total",
			Help: "Defragmentations of the embedded etcd member, by result (ok, error).",
		}, []string{"result"}),
		defragSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cellplane_etcd_defrag_seconds",
			Help:    "How long a defragmentation blocked the embedded etcd member's reads and writes.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}),
	}
}

// AlarmTypes are the alarm types cellplane_etcd_alarm reports (0 or 1
// each).
var AlarmTypes = []string{pb.AlarmType_NOSPACE.String(), pb.AlarmType_CORRUPT.String()}

var (
	descAlarm = prometheus.NewDesc("cellplane_etcd_alarm",
		"1 while the embedded etcd member has an alarm of this type raised (NOSPACE: writes refused; see docs/reliability.md).", []string{"type"}, nil)
	descSize = prometheus.NewDesc("cellplane_etcd_db_size_bytes",
		"Size of the embedded etcd member's backend on disk.", nil, nil)
	descInUse = prometheus.NewDesc("cellplane_etcd_db_size_in_use_bytes",
		"Part of the embedded etcd member's backend in use (the rest is reclaimed by a defragmentation).", nil, nil)
	descQuota = prometheus.NewDesc("cellplane_etcd_quota_backend_bytes",
		"The embedded etcd member's backend quota: NOSPACE beyond it.", nil, nil)
	descKept = prometheus.NewDesc("cellplane_etcd_history_revisions",
		"Revisions of history the embedded etcd member keeps (current − compacted): bounded while compaction runs.", nil, nil)
)

// stateCollector reads the member's state at scrape time.
type stateCollector struct{ s *Server }

func (c stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descAlarm, descSize, descInUse, descQuota, descKept} {
		ch <- d
	}
}

func (c stateCollector) Collect(ch chan<- prometheus.Metric) {
	raised := map[string]bool{}
	for _, a := range c.s.Alarms() {
		raised[a.Type] = true
	}
	for _, t := range AlarmTypes {
		v := 0.0
		if raised[t] {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descAlarm, prometheus.GaugeValue, v, t)
	}
	size, inUse := c.s.BackendSize()
	cur, compacted := c.s.Revisions()
	ch <- prometheus.MustNewConstMetric(descSize, prometheus.GaugeValue, float64(size))
	ch <- prometheus.MustNewConstMetric(descInUse, prometheus.GaugeValue, float64(inUse))
	ch <- prometheus.MustNewConstMetric(descQuota, prometheus.GaugeValue, float64(c.s.cfg.QuotaBackendBytes))
	ch <- prometheus.MustNewConstMetric(descKept, prometheus.GaugeValue, float64(cur-compacted))
}

// Collectors returns the member's health metrics: cellplane_etcd_alarm
// {type}, the backend's size, size in use and quota, the history kept,
// and the defragmentations.
func (s *Server) Collectors() []prometheus.Collector {
	return []prometheus.Collector{stateCollector{s}, s.health.defrags, s.health.defragSeconds}
}
