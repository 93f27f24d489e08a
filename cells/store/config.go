package store

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"
	"unicode/utf8"

	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/internal/pki"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"github.com/hashicorp/raft"
)

// Config configures a Store.
type Config struct {
	// NodeID is this node's id in the cell.
	NodeID string
	// RaftBind is the address the Raft transport listens on.
	RaftBind string
	// RaftListener, when set, is used instead of listening on RaftBind
	// (tests open listeners on port 0 first so that no port can be taken
	// between choosing and binding it). RaftAdvertise defaults to its address.
	RaftListener net.Listener
	// RaftAdvertise is the address peers dial; empty means RaftBind.
	RaftAdvertise string
	// RaftDialRoutes maps a peer's Raft address (as the Raft
	// configuration has it) to the address this node dials instead: a
	// fault-injection proxy per directed link in tests (test/faults), or
	// a NAT. The peer's identity is still checked against the configured
	// address under TLS. Empty: peers are dialed at their addresses.
	RaftDialRoutes map[string]string
	// GRPCAdvertise and HTTPAdvertise are this node's service addresses.
	// The store registers them in the cell state when it becomes leader, so
	// that followers can forward to it.
	GRPCAdvertise string
	HTTPAdvertise string
	// DataDir holds raft-wal/, snapshots/ and state/ (Pebble).
	DataDir string
	// Bootstrap, when non-empty and DataDir holds no Raft state, creates a
	// new cell with these voters (which must include this node).
	Bootstrap []Peer
	// NewIncarnation, when DataDir holds no Raft state, starts the node
	// under a new Raft server id ("<NodeID>.inc-<hex>") instead of NodeID:
	// the node joins an existing cell as a new member and never answers
	// for an earlier incarnation that voted and acknowledged entries it
	// no longer has (H1; see IdentityFile). It cannot be combined with
	// Bootstrap; with Raft state it changes nothing.
	NewIncarnation bool

	// TLS, when set, makes the Raft transport mutual TLS with this
	// node's certificate, key and CA bundle (a node identity whose node is
	// NodeID): both sides of every Raft connection must be nodes of the
	// cell of this certificate, and a dialed peer the node the Raft
	// configuration has at that address (transport_tls.go). nil is plain
	// TCP with no peer authentication: anyone who reaches RaftBind can
	// rewrite the cell's state (security finding C4).
	TLS *pki.Source
	// Transport bounds the TLS handshakes of the Raft transport.
	Transport TransportConfig

	Raft RaftConfig
	// MaxBatchCommands and MaxBatchBytes bound one group-committed Raft
	// log entry.
	MaxBatchCommands int
	MaxBatchBytes    int
	// MaxInflightBatches bounds the Raft entries proposed but not yet
	// applied. While that many are in flight, new proposals wait and join
	// the next entry: the bound is what makes batches grow with load.
	MaxInflightBatches int
	// StateCacheBytes is Pebble's block cache; StateMemTableBytes its
	// memtable size. A memtable large enough to hold the recent dedup
	// windows and context heads keeps the apply path off the disk.
	StateCacheBytes    int64
	StateMemTableBytes uint64
	// StateHeadCacheEntries is how many context heads the state machine
	// keeps in memory (encoded), so that an append does not read its
	// context's head from Pebble (0: none). About 200 bytes each.
	StateHeadCacheEntries int
	// StateDedupFilterBytes bounds the in-memory negative filters of the
	// tenants' remembered request ids (about 10 bits per id), which spare
	// a write with a new request id its Pebble lookup (0: none;
	// dedupfilter.go). Past it, tenants' filters are dropped and built
	// again from the dedup queue on their next write.
	StateDedupFilterBytes int64
	// DedupWindow is how long a client request id is remembered at least,
	// measured with the commands' timestamps (the leader's clock at
	// proposal, so every replica forgets alike), so that a retry within it
	// is answered with the first attempt's result. Past it an id is
	// forgotten (in chunks: once the oldest is DedupWindow/16 past it). It
	// must cover the longest client retry horizon (docs/reliability.md).
	DedupWindow time.Duration
	// DedupMaxIDs bounds the request ids one tenant remembers (disk and
	// memtable space). A write with a new request id while the tenant
	// remembers that many ids, all younger than DedupWindow, is refused
	// with QUOTA_EXCEEDED (retryable once the oldest ages out) rather than
	// forgetting an id a retry may still carry. 0 disables deduplication.
	DedupMaxIDs int
	ChangeLog   ChangeLogConfig
	// Audit bounds each tenant's audit log (docs/contexts.md "Audit"): a
	// replicated cell setting like ChangeLog.
	Audit AuditConfig
	// Keyword is the keyword index (docs/search.md): a replicated cell
	// setting like Audit, so every replica indexes alike.
	Keyword KeywordConfig
	// TenantQuota is the cell's default per-tenant quota (H4; a tenant's
	// own quota, set with SetTenant, overrides it field by field). Like
	// DedupWindow it is a replicated cell setting: the leader proposes its
	// configured values and every replica enforces the cell's, in apply.
	TenantQuota TenantQuota
	// Expiry is how the leader sweeps expired contexts and memory keys
	// (retention.go).
	Expiry ExpiryConfig
	// Disk is the free-space watermark below which this node, as leader,
	// refuses new writes with STORAGE_FULL (disk.go).
	Disk DiskConfig
	// Vector tunes vector search: the exact/approximate threshold and the
	// member's budget for its (derived, in-memory) HNSW indexes.
	Vector VectorConfig
	// ApplyTimeout bounds a proposal when the caller's context has no
	// earlier deadline.
	ApplyTimeout time.Duration
	// DefaultMaxStaleness applies to STALE reads that name no bound.
	DefaultMaxStaleness time.Duration
	// ClockMaxStep is how far the wall clock may be from the cell clock
	// (the last trusted timestamp advanced by the monotonic clock) and
	// still be followed when a leader stamps a command. A wall clock
	// further off — a step of the leader's clock, or a new leader whose
	// clock stepped — is ignored and the monotonic estimate used instead,
	// so a clock jump cannot trim change logs or forget request ids
	// (finding M8, clock.go). It must exceed the clock error between
	// healthy nodes plus a commit's latency.
	ClockMaxStep time.Duration
	// ReplicatedLimits are the request limits a source's change events are
	// validated against before a standby proposes them (the node sets its
	// client request limits: a source cannot make the standby store what a
	// client could not send). A standby's limits must be at least its
	// source's, or the stream stops with REPLICATION_EVENT_REJECTED.
	ReplicatedLimits validate.Limits

	// Logger receives structured logs; nil means slog.Default().
	Logger       *slog.Logger
	TestingKnobs TestingKnobs
}

// TransportConfig bounds the Raft transport's TLS handshakes (used only
// with Config.TLS).
type TransportConfig struct {
	// HandshakeTimeout bounds one TLS handshake, accepted or dialed (a
	// dial's is also bounded by Raft's dial timeout).
	HandshakeTimeout time.Duration
	// MaxHandshakes bounds the accepted connections whose handshake is in
	// progress; a connection arriving while that many are is closed at
	// once (counted with reason "overload").
	MaxHandshakes int
}

// RaftConfig holds the Raft timing knobs. Defaults were chosen by
// measurement on a loaded 2-core machine (docs/benchmarks.md): fast failover
// without spurious elections.
type RaftConfig struct {
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// LeaderCheckInterval is how often a follower compares the time since
	// it last heard from its leader with HeartbeatTimeout (leadercheck.go).
	// Raft itself checks on a timer re-armed at a random 1–2×
	// HeartbeatTimeout, so a follower notices a dead leader 1–3×
	// HeartbeatTimeout after the last contact, and an election needs a
	// second follower to have noticed too (a follower that knows a leader
	// refuses votes): with the check, each follower stands for election
	// HeartbeatTimeout + its ElectionStagger after the last contact instead.
	// The condition is Raft's own (no contact for HeartbeatTimeout), so the
	// check adds no election Raft's timer could not have started; it only
	// starts it sooner. 0 (the default) turns it off. With it on, Raft is given a
	// LeaderLeaseTimeout of at most HeartbeatTimeout − 1ms (the check
	// wakes Raft's follower loop through ReloadConfig with a 1ms shorter
	// HeartbeatTimeout, which Raft validates against the lease).
	LeaderCheckInterval time.Duration
	// ElectionStagger spaces the followers' prompt elections: the follower
	// ranked i among the voters other than the lost leader (by server id)
	// stands at HeartbeatTimeout + i×ElectionStagger, so that two followers
	// do not stand together and split the vote (each would vote for
	// itself and wait ElectionTimeout to retry). It must exceed a vote's
	// round trip (a vote is persisted: an fsync).
	ElectionStagger time.Duration
	// MaxAppendEntries caps log entries per AppendEntries RPC.
	MaxAppendEntries int
	// SnapshotInterval is how often Raft checks whether to snapshot;
	// SnapshotThreshold is how many new log entries trigger one;
	// TrailingLogs is how many entries stay in the log after a snapshot.
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64
	// SnapshotRetain is how many snapshots are kept on disk.
	SnapshotRetain int
	// LogSegmentBytes is the size of one Raft log segment file (0: the
	// raft-wal default, 64 MiB). The log is truncated after a snapshot a
	// whole segment at a time, so a follower behind a truncation needs a
	// snapshot only once its entries' segment is gone.
	LogSegmentBytes int
	// LogCacheEntries is how many of the newest log entries are kept in
	// memory in front of the log (0: none): replication reads each new
	// entry back from there instead of from the disk.
	LogCacheEntries int
	// LeaseReads serves linearizable reads under a leader lease instead of
	// a quorum round per batch of reads (lease.go, DESIGN.md "Lease
	// reads"). Its safety assumes the members' clocks advance at nearly
	// the same rate (LeaseDuration leaves the margin) and that a paused
	// or suspended leader's monotonic clock does not stop while real time
	// goes on. Every member of the cell must run with the same setting: a
	// restarted member's vote guard, which the lease relies on, runs only
	// with it on. Off by default.
	LeaseReads bool
	// LeaseDuration is how long a leader's lease lasts after the send time
	// of the newest heartbeat a quorum acknowledged (0: 4/5 of
	// HeartbeatTimeout). At most 9/10 of HeartbeatTimeout less 1 ms:
	// followers stay loyal for HeartbeatTimeout (less 1 ms with the leader
	// check) by their own clocks, and the rest is the clock-drift margin.
	LeaseDuration time.Duration
}

// ChangeLogConfig bounds each tenant's change log. Trimming happens in the
// state machine, with the command's timestamp, so all replicas trim alike.
// Like DedupWindow, these bounds are replicated cell settings: the leader
// proposes its configured values, and every replica applies the cell's.
type ChangeLogConfig struct {
	// RetentionAge drops events older than this (0: keep by size only).
	// RetentionAge and MaxEvents are trimmed in chunks: the log may go a
	// sixteenth past them before it is cut back (txn.go:trimChanges).
	RetentionAge time.Duration
	// MaxBytes and MaxEvents bound one tenant's log (0: unbounded).
	// MaxBytes is never exceeded; a trim it causes goes a sixteenth below.
	MaxBytes  uint64
	MaxEvents uint64
}

// AuditConfig bounds each tenant's audit records. Trimming happens in the
// state machine with command time, in chunks (a sixteenth of a bound past
// it), so all replicas trim alike.
type AuditConfig struct {
	// RetentionAge drops records older than this (0: no age bound).
	RetentionAge time.Duration
	// MaxRecords bounds the records kept per tenant (0: no count bound).
	MaxRecords uint64
}

// KeywordConfig is the keyword index's replicated settings.
type KeywordConfig struct {
	// Off stops indexing new entries and memory values (postings already
	// written are still removed with their documents; data written while
	// off is not found until a rebuild).
	Off bool
	// MaxTerms is the most tokens indexed per document (0:
	// DefaultKeywordMaxTerms); MaxTermBytes the longest term (0:
	// DefaultKeywordMaxTermBytes). Changing either applies to documents
	// written from then on, and to queries at once.
	MaxTerms     uint32
	MaxTermBytes uint32
}

// withKeyword sets the keyword settings of s and returns s.
func withKeyword(s *cellv1.CellSettings, k KeywordConfig) *cellv1.CellSettings {
	s.KeywordIndexOff, s.KeywordMaxTerms, s.KeywordMaxTermBytes = k.Off, k.MaxTerms, k.MaxTermBytes
	return s
}

// defaultAudit keeps a month of records, at most a million per tenant.
var defaultAudit = AuditConfig{RetentionAge: 30 * 24 * time.Hour, MaxRecords: 1_000_000}

// TenantQuota bounds what one tenant stores in the cell (0: no bound).
// A client write that would take the tenant's usage above a bound is
// refused with QUOTA_EXCEEDED and applies nothing; deletes always pass.
type TenantQuota struct {
	// MaxBytes bounds entry and memory bytes (TenantUsage.bytes: content,
	// role, metadata, keys and values; not the index and log overhead).
	MaxBytes      uint64
	MaxContexts   uint64
	MaxMemoryKeys uint64
	// DefaultRetention is how long a context or memory key written
	// without an expiry of its own lives (0: forever). Not a bound
	// QUOTA_EXCEEDED enforces; it sets expire_time at the write.
	DefaultRetention time.Duration
}

// ExpiryConfig drives the leader's expiry sweeps: every SweepInterval,
// each owned tenant with an item due gets expire_sweep commands of at
// most SweepBatch items, at most MaxSweepsPerTenant per round. Reads hide
// expired items before any sweep ran; sweeps free the space.
type ExpiryConfig struct {
	SweepInterval      time.Duration
	SweepBatch         int
	MaxSweepsPerTenant int
}

// DefaultExpiryConfig sweeps every 10 s, 1024 items per command, up to
// 16 commands per tenant and round.
func DefaultExpiryConfig() ExpiryConfig {
	return ExpiryConfig{SweepInterval: 10 * time.Second, SweepBatch: 1024, MaxSweepsPerTenant: 16}
}

// Defaults of the replicated cell settings: what every replica uses until
// a leader proposes its configured DedupWindow, DedupMaxIDs and ChangeLog.
const (
	defaultDedupWindow = 10 * time.Minute
	defaultDedupMaxIDs = 1_000_000
)

var defaultChangeLog = ChangeLogConfig{RetentionAge: 24 * time.Hour, MaxBytes: 64 << 20, MaxEvents: 100000}

// defaultTenantQuota is generous: it stops one tenant from filling a
// node's disk, not ordinary use (set lower per tenant with SetTenant).
var defaultTenantQuota = TenantQuota{MaxBytes: 8 << 30, MaxContexts: 1_000_000, MaxMemoryKeys: 1_000_000}

// DefaultConfig returns a Config with every limit and timeout set to its
// default; NodeID, RaftBind (or RaftListener) and DataDir still need to be
// set.
//
// Raft timing: a follower stands for election 1–3× HeartbeatTimeout
// (500 ms) after it last heard from the leader (Raft's randomized timer),
// and an election then waits for the second follower's; with the leader
// check (LeaderCheckInterval, off by default) at HeartbeatTimeout plus its
// rank × ElectionStagger instead. The leader heartbeats every
// HeartbeatTimeout/10. Pre-vote is on (Raft's
// default): a follower that lost contact alone cannot depose a leader the
// others still hear. A leader steps down when it has not reached a quorum
// for LeaderLeaseTimeout; at 250 ms that happened on a CPU-starved 2-core
// box (docs/benchmarks.md), so it equals HeartbeatTimeout, the most Raft
// allows (less 1 ms with the leader check).
func DefaultConfig() Config {
	return Config{
		Transport: TransportConfig{HandshakeTimeout: 5 * time.Second, MaxHandshakes: 64},
		Raft: RaftConfig{
			HeartbeatTimeout:   500 * time.Millisecond,
			ElectionTimeout:    500 * time.Millisecond,
			LeaderLeaseTimeout: 500 * time.Millisecond,
			CommitTimeout:      10 * time.Millisecond,
			// Off by default: under heavy CPU starvation (a race build on a
			// machine at load ~27) it turned more of a starved node's
			// silences into elections than Raft's randomized timer does
			// (storetest, 200 ms timeouts; docs/benchmarks.md). 40 ms is
			// the value measured with it on.
			LeaderCheckInterval: 0,
			ElectionStagger:     60 * time.Millisecond,
			MaxAppendEntries:    64,
			SnapshotInterval:    30 * time.Second,
			SnapshotThreshold:   8192,
			TrailingLogs:        10240,
			SnapshotRetain:      2,
			LogCacheEntries:     512,
		},
		StateCacheBytes:       64 << 20,
		StateMemTableBytes:    32 << 20,
		StateHeadCacheEntries: 16384,
		Vector:                DefaultVectorConfig(),
		StateDedupFilterBytes: 64 << 20,
		MaxBatchCommands:      512,
		MaxInflightBatches:    4,
		MaxBatchBytes:         4 << 20,
		DedupWindow:           defaultDedupWindow,
		DedupMaxIDs:           defaultDedupMaxIDs,
		ChangeLog: ChangeLogConfig{
			RetentionAge: 24 * time.Hour,
			MaxBytes:     64 << 20,
			MaxEvents:    100000,
		},
		Audit:               defaultAudit,
		TenantQuota:         defaultTenantQuota,
		Expiry:              DefaultExpiryConfig(),
		Disk:                DefaultDiskConfig(),
		ApplyTimeout:        10 * time.Second,
		DefaultMaxStaleness: 5 * time.Second,
		ClockMaxStep:        time.Minute,
		ReplicatedLimits:    validate.DefaultLimits(),
	}
}

// Validate reports every problem with c, each naming its field.
func (c Config) Validate() error {
	var errs []error
	bad := func(field, format string, args ...any) {
		errs = append(errs, fmt.Errorf("store config %s: %s", field, fmt.Sprintf(format, args...)))
	}
	if err := c.Vector.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.NodeID == "" {
		bad("NodeID", "required")
	}
	if c.RaftBind == "" && c.RaftListener == nil {
		bad("RaftBind", "required (or RaftListener)")
	}
	for from, to := range c.RaftDialRoutes {
		for _, a := range []string{from, to} {
			if _, _, err := net.SplitHostPort(a); err != nil {
				bad("RaftDialRoutes", "%q → %q: %q is not host:port", from, to, a)
			}
		}
	}
	if c.DataDir == "" && !c.TestingKnobs.InMemoryState {
		bad("DataDir", "required")
	}
	if c.TLS != nil {
		if id := c.TLS.Identity(); id.Kind != pki.KindNode {
			bad("TLS", "certificate identity %s is not a cell node's", id)
		} else if id.Node != c.NodeID {
			bad("TLS", "certificate identity %s is not node %q's", id, c.NodeID)
		}
	}
	if c.Transport.HandshakeTimeout <= 0 {
		bad("Transport.HandshakeTimeout", "must be positive")
	}
	if c.Transport.MaxHandshakes < 1 {
		bad("Transport.MaxHandshakes", "must be at least 1")
	}
	r := c.Raft
	if r.HeartbeatTimeout < 5*time.Millisecond {
		bad("Raft.HeartbeatTimeout", "%v is below 5ms", r.HeartbeatTimeout)
	}
	if r.ElectionTimeout < r.HeartbeatTimeout {
		bad("Raft.ElectionTimeout", "%v is below HeartbeatTimeout %v", r.ElectionTimeout, r.HeartbeatTimeout)
	}
	if r.LeaderLeaseTimeout < 5*time.Millisecond || r.LeaderLeaseTimeout > r.HeartbeatTimeout {
		bad("Raft.LeaderLeaseTimeout", "%v must be at least 5ms and at most HeartbeatTimeout", r.LeaderLeaseTimeout)
	}
	if r.LeaseDuration < 0 {
		bad("Raft.LeaseDuration", "%v is negative", r.LeaseDuration)
	} else if d, most := r.leaseDuration(), r.HeartbeatTimeout*9/10-time.Millisecond; r.LeaseReads && (d < time.Millisecond || d > most) {
		bad("Raft.LeaseDuration", "%v must be at least 1ms and at most 9/10 of HeartbeatTimeout less 1ms (%v)", d, most)
	}
	if r.CommitTimeout < time.Millisecond {
		bad("Raft.CommitTimeout", "%v is below 1ms", r.CommitTimeout)
	}
	if r.LeaderCheckInterval < 0 || (r.LeaderCheckInterval > 0 && r.LeaderCheckInterval < time.Millisecond) {
		bad("Raft.LeaderCheckInterval", "%v must be 0 (off) or at least 1ms", r.LeaderCheckInterval)
	}
	if r.ElectionStagger < 0 {
		bad("Raft.ElectionStagger", "%v is negative", r.ElectionStagger)
	}
	if r.MaxAppendEntries < 1 || r.MaxAppendEntries > 1024 {
		bad("Raft.MaxAppendEntries", "%d is not in [1, 1024]", r.MaxAppendEntries)
	}
	if r.SnapshotInterval < 5*time.Millisecond {
		bad("Raft.SnapshotInterval", "%v is below 5ms", r.SnapshotInterval)
	}
	if r.SnapshotThreshold == 0 {
		bad("Raft.SnapshotThreshold", "must be positive")
	}
	if r.LogSegmentBytes != 0 && r.LogSegmentBytes < 64<<10 {
		bad("Raft.LogSegmentBytes", "%d is below 64 KiB", r.LogSegmentBytes)
	}
	if r.LogCacheEntries < 0 || r.LogCacheEntries > 1<<16 {
		bad("Raft.LogCacheEntries", "%d is not in [0, 65536]", r.LogCacheEntries)
	}
	if r.SnapshotRetain < 1 {
		bad("Raft.SnapshotRetain", "must be at least 1")
	}
	if c.MaxBatchCommands < 1 {
		bad("MaxBatchCommands", "must be at least 1")
	}
	if c.MaxInflightBatches < 1 {
		bad("MaxInflightBatches", "must be at least 1")
	}
	if c.MaxBatchBytes < 1<<10 {
		bad("MaxBatchBytes", "%d is below 1 KiB", c.MaxBatchBytes)
	}
	if c.StateCacheBytes < 1<<20 {
		bad("StateCacheBytes", "%d is below 1 MiB", c.StateCacheBytes)
	}
	if c.StateHeadCacheEntries < 0 || c.StateHeadCacheEntries > 1<<22 {
		bad("StateHeadCacheEntries", "%d is not in [0, 4194304]", c.StateHeadCacheEntries)
	}
	if c.StateDedupFilterBytes < 0 {
		bad("StateDedupFilterBytes", "%d is negative", c.StateDedupFilterBytes)
	}
	if c.StateMemTableBytes < 1<<20 || c.StateMemTableBytes > 1<<30 {
		bad("StateMemTableBytes", "%d is not in [1 MiB, 1 GiB]", c.StateMemTableBytes)
	}
	if c.DedupWindow <= 0 {
		bad("DedupWindow", "must be positive")
	}
	if c.DedupMaxIDs < 0 {
		bad("DedupMaxIDs", "must not be negative")
	}
	if c.ChangeLog.RetentionAge < 0 {
		bad("ChangeLog.RetentionAge", "must not be negative")
	}
	if c.Keyword.MaxTermBytes > 0 && c.Keyword.MaxTermBytes < utf8.UTFMax {
		bad("Keyword.MaxTermBytes", "must be 0 (default) or at least %d (one rune)", utf8.UTFMax)
	}
	if c.Audit.RetentionAge < 0 {
		bad("Audit.RetentionAge", "must not be negative")
	}
	if err := c.Disk.validate(); err != nil {
		bad("Disk", "%v", err)
	}
	if c.Expiry.SweepInterval <= 0 {
		bad("Expiry.SweepInterval", "must be positive")
	}
	if c.Expiry.SweepBatch < 1 || c.Expiry.SweepBatch > 1<<20 {
		bad("Expiry.SweepBatch", "must be 1..%d", 1<<20)
	}
	if c.Expiry.MaxSweepsPerTenant < 1 {
		bad("Expiry.MaxSweepsPerTenant", "must be at least 1")
	}
	if c.TenantQuota.DefaultRetention < 0 {
		bad("TenantQuota.DefaultRetention", "must not be negative")
	}
	if c.ApplyTimeout <= 0 {
		bad("ApplyTimeout", "must be positive")
	}
	if c.DefaultMaxStaleness <= 0 {
		bad("DefaultMaxStaleness", "must be positive")
	}
	if c.ClockMaxStep < time.Second {
		bad("ClockMaxStep", "%v is below 1s", c.ClockMaxStep)
	}
	if err := c.ReplicatedLimits.Validate(); err != nil {
		bad("ReplicatedLimits", "%v", err)
	}
	for i, p := range c.Bootstrap {
		if p.ID == "" || p.Addr == "" {
			bad(fmt.Sprintf("Bootstrap[%d]", i), "needs an id and an address")
		}
	}
	if len(c.Bootstrap) > 0 && !containsPeer(c.Bootstrap, c.NodeID) {
		bad("Bootstrap", "does not include this node %q", c.NodeID)
	}
	if len(c.Bootstrap) > 0 && c.NewIncarnation {
		bad("NewIncarnation", "cannot be combined with Bootstrap: a new incarnation joins an existing cell")
	}
	if HasIncarnation(c.NodeID) {
		bad("NodeID", "must not end like a Raft incarnation (%q followed by %d hex digits)", validate.IncarnationSep, validate.IncarnationHex)
	}
	if len(errs) == 0 && c.NodeID != "" {
		// Backstop: whatever else Raft refuses at start.
		if err := raft.ValidateConfig(raftConfig(c)); err != nil {
			bad("Raft", "%v", err)
		}
	}
	return errors.Join(errs...)
}

func containsPeer(peers []Peer, id string) bool {
	for _, p := range peers {
		if p.ID == id {
			return true
		}
	}
	return false
}
