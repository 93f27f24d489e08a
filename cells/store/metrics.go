package store

import (
	"time"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the store's Prometheus metrics. They are not registered
// anywhere by the store: the node registers Collectors() in its own
// registry, so several nodes can share a process.
type metrics struct {
	// corruptSnapshots counts snapshots found corrupt at start (and moved
	// aside): a DATA_LOSS-class alarm.
	corruptSnapshots prometheus.Counter

	batchSize        prometheus.Histogram
	commitLatency    prometheus.Histogram
	readIndexLatency prometheus.Histogram
	readLatency      *prometheus.HistogramVec
	// readObs are readLatency's observers by consistency, resolved once:
	// reads are the hottest path.
	readObs map[contextv1.Consistency]prometheus.Observer
	// authorityRefusals counts writes and reads refused because the cell's
	// authority lease could not be confirmed.
	authorityRefusals prometheus.Counter
	// eventsRejected counts apply_changes batches refused by invariant 12,
	// by stage: propose (the leader's check) or apply (the state machine,
	// on every replica).
	eventsRejected *prometheus.CounterVec
	// raftConnsRefused counts Raft connections closed before Raft saw
	// them (TLS handshake or peer check failed), by side and reason.
	raftConnsRefused *prometheus.CounterVec
	// staleIncarnations counts old incarnations this node, as leader,
	// removed from the Raft configuration (H1).
	staleIncarnations prometheus.Counter
	// wrongServer counts Raft responses refused because another server
	// than the one addressed answered (H1).
	wrongServer prometheus.Counter
	// Disk (H4): refusals below the free-space watermark, failed
	// free-space checks, and Raft log store write errors by kind.
	storageFullRefusals prometheus.Counter
	diskCheckErrors     prometheus.Counter
	logStoreErrors      *prometheus.CounterVec
	// promptElections counts the leader checks that woke Raft's follower
	// loop because the leader had been silent for HeartbeatTimeout + the
	// node's stagger (leadercheck.go).
	promptElections prometheus.Counter
	// leaseReads counts linearizable reads served under the leader lease
	// (no quorum round); leaseRefused the Raft RPCs the vote guard
	// refused, by rpc (lease.go).
	leaseReads   prometheus.Counter
	leaseRefused *prometheus.CounterVec
}

func newMetrics() *metrics {
	lat := prometheus.ExponentialBuckets(0.0001, 2, 16) // 100µs … ~3.3s
	m := &metrics{
		corruptSnapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_store_corrupt_snapshots_total",
			Help: "Snapshots found corrupt when the node started (moved to <data-dir>/snapshots-corrupt/): local data loss; alert on any.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cellplane_store_proposal_batch_size",
			Help:    "Commands per Raft log entry (group commit).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		commitLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cellplane_store_commit_seconds",
			Help:    "Time from handing a batch to Raft until it was applied on the leader.",
			Buckets: lat,
		}),
		leaseReads: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_store_lease_reads_total",
			Help: "Linearizable reads this node, as leader, served under its leader lease, without a quorum round (--raft-lease-reads).",
		}),
		leaseRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_store_lease_refused_total",
			Help: "Raft RPCs refused to keep leader leases sound (--raft-lease-reads), by rpc: vote and pre_vote within HeartbeatTimeout of a restart, timeout_now from another server than this node's leader.",
		}, []string{"rpc"}),
		readIndexLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "cellplane_store_read_index_seconds",
			Help:    "Time to confirm leadership for a round of linearizable reads.",
			Buckets: lat,
		}),
		readLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cellplane_store_read_seconds",
			Help:    "Store read latency by consistency level.",
			Buckets: lat,
		}, []string{"consistency"}),
		authorityRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_store_authority_refusals_total",
			Help: "Client writes and linearizable reads refused because the cell's authority lease was not valid.",
		}),
		eventsRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_store_replication_batches_rejected_total",
			Help: "Batches of a source's change events refused whole (another tenant's command, a forbidden operation, a malformed or out-of-order event), by stage: propose (leader) or apply (state machine).",
		}, []string{"stage"}),
		raftConnsRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_store_raft_conns_refused_total",
			Help: "Raft connections closed before Raft read or wrote a byte: the TLS handshake or the peer check failed. side: inbound (accepted) or outbound (dialed); reason: identity, no_certificate, unknown_ca, expired, bad_certificate, timeout, handshake, overload.",
		}, []string{"side", "reason"}),
		staleIncarnations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_store_stale_incarnations_removed_total",
			Help: "Old incarnations of members (nodes that came back without their data dir) this node removed from the Raft configuration as leader.",
		}),
		wrongServer: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_store_raft_wrong_server_total",
			Help: "Raft responses ignored because another server than the one addressed answered (a member that came back without its data, under a new Raft id, at its old address).",
		}),
		storageFullRefusals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_store_storage_full_refusals_total",
			Help: "Writes refused with STORAGE_FULL because this node was below its free-space watermark.",
		}),
		diskCheckErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_store_disk_check_errors_total",
			Help: "Free-space checks (statfs) of the data dir that failed; the last verdict stands.",
		}),
		logStoreErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_store_log_store_errors_total",
			Help: "Leader writes the Raft log store refused, by kind: no_space (ENOSPC, answered STORAGE_FULL) or io (EIO).",
		}, []string{"kind"}),
		promptElections: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "cellplane_store_prompt_elections_total",
			Help: "Times this follower stood for election at once because its leader had been silent for the heartbeat timeout plus its stagger (Raft.LeaderCheckInterval); each is one lost leader seen, or a starved node.",
		}),
	}
	m.readObs = map[contextv1.Consistency]prometheus.Observer{}
	for c := range contextv1.Consistency_name {
		m.readObs[contextv1.Consistency(c)] = m.readLatency.WithLabelValues(consistencyLabel(contextv1.Consistency(c)))
	}
	return m
}

// Collectors returns the store's metrics for registration: the histograms
// above and gauges read from Raft at scrape time.
func (s *Store) Collectors() []prometheus.Collector {
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	return append([]prometheus.Collector{
		s.metrics.corruptSnapshots,
		s.metrics.batchSize, s.metrics.commitLatency, s.metrics.readIndexLatency, s.metrics.readLatency, s.metrics.authorityRefusals, s.metrics.eventsRejected, s.metrics.raftConnsRefused,
		s.metrics.staleIncarnations, s.metrics.wrongServer, s.metrics.promptElections,
		s.metrics.leaseReads, s.metrics.leaseRefused,
		gauge("cellplane_raft_member", "1 when this node's incarnation is in the cell's Raft configuration as a voter, 0.5 as a non-voter, 0 when it is not (a node that came back without its data waits to be added).", func() float64 {
			st := s.membershipOf()
			switch {
			case st.Voter:
				return 1
			case st.Member:
				return 0.5
			}
			return 0
		}),
		s.metrics.storageFullRefusals, s.metrics.diskCheckErrors, s.metrics.logStoreErrors,
		gauge("cellplane_store_disk_free_bytes", "Free bytes of the data dir's filesystem at the last check.", func() float64 { return float64(s.DiskStatus().FreeBytes) }),
		gauge("cellplane_store_disk_total_bytes", "Size of the data dir's filesystem at the last check.", func() float64 { return float64(s.DiskStatus().TotalBytes) }),
		gauge("cellplane_store_storage_full", "1 while this node is below its free-space watermark (it refuses new writes as leader: STORAGE_FULL).", func() float64 {
			if s.DiskStatus().Full {
				return 1
			}
			return 0
		}),
		gauge("cellplane_store_member_storage_full", "1 while this node (as leader) holds a fresh report of another member below its free-space watermark (the cell refuses new writes: STORAGE_FULL).", func() float64 {
			if _, _, ok := s.fullPeer(time.Now()); ok {
				return 1
			}
			return 0
		}),
		gauge("cellplane_raft_is_leader", "1 when this node is the Raft leader.", func() float64 {
			if s.raft.State() == raft.Leader {
				return 1
			}
			return 0
		}),
		gauge("cellplane_raft_term", "Current Raft term.", func() float64 { return float64(s.raft.CurrentTerm()) }),
		gauge("cellplane_raft_commit_index", "Raft commit index.", func() float64 { return float64(s.raft.CommitIndex()) }),
		gauge("cellplane_raft_applied_index", "Raft applied index.", func() float64 { return float64(s.raft.AppliedIndex()) }),
		gauge("cellplane_raft_apply_lag", "Committed entries not yet applied.", func() float64 {
			c, a := s.raft.CommitIndex(), s.raft.AppliedIndex()
			if c < a {
				return 0
			}
			return float64(c - a)
		}),
		gauge("cellplane_raft_last_contact_seconds", "Time since this follower heard from the leader (0 on the leader).", func() float64 {
			if s.raft.State() == raft.Leader {
				return 0
			}
			lc := s.raft.LastContact()
			if lc.IsZero() {
				return -1
			}
			return timeSince(lc)
		}),
		gauge("cellplane_cell_tenants", "Tenants this cell holds (any role).", func() float64 { return float64(s.fsm.tenantCount()) }),
	}, s.fsm.vectors.collectors()...)
}

func timeSince(t time.Time) float64 { return time.Since(t).Seconds() }
