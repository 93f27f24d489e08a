package store

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/failpoint"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/retry"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/segment"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Store is one node's replica of a cell: Raft (raft-wal log, file
// snapshots, TCP transport) in front of a Pebble state machine.
type Store struct {
	cfg  Config
	log  *slog.Logger
	raft *raft.Raft
	// raftID is this node's Raft server id (see IdentityFile).
	raftID string
	// wrongLogged is when wrongServer last logged (unix nanos).
	wrongLogged atomic.Int64
	fsm         *fsm
	trans       *raft.NetworkTransport
	safe        *safeTransport // what Raft uses: trans with a safe pipeline and gated heartbeats
	layer       *streamLayer   // trans's stream layer
	wal         *raftwal.WAL
	self        *cellv1.NodeInfo

	proposals chan *proposal
	inflight  chan *inflight
	// slots holds one token per batch in flight (MaxInflightBatches).
	slots chan struct{}
	reads readIndexer
	// lease is the leader lease for linearizable reads (lease.go).
	lease leaseState
	// readyTerm is the term in which this node, as leader, has applied
	// everything committed before its term (its barrier completed).
	readyTerm atomic.Uint64
	metrics   *metrics
	// clock stamps proposed commands (clock.go).
	clock *cellClock
	// authority is the cell authority gate (nil: none); see SetAuthority.
	authority atomic.Pointer[Authority]
	// space reads free disk space; disk is the last check (disk.go).
	space DiskSpace
	disk  atomic.Pointer[DiskStatus]
	// peerDisk holds the members' free-space reports, as this node (the
	// leader) last polled them (NotePeerDisk).
	peerDiskMu sync.Mutex
	peerDisk   map[string]PeerDisk

	closing   chan struct{}
	closeOnce sync.Once
	closeErr  error
	workers   sync.WaitGroup // proposer, leadership watcher, disk monitor, leader check
	waiter    sync.WaitGroup

	// promptElections counts the leader check's wake-ups (leadercheck.go).
	promptElections atomic.Uint64

	done     chan struct{}
	doneOnce sync.Once
	fatal    atomic.Pointer[error]
}

// Open opens (or creates) the node's data dir, starts Raft and, when
// cfg.Bootstrap is set and there is no Raft state yet, bootstraps the cell.
func Open(cfg Config) (*Store, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	log = log.With("node", cfg.NodeID)
	s := &Store{
		cfg:       cfg,
		log:       log,
		proposals: make(chan *proposal, 4*cfg.MaxBatchCommands),
		inflight:  make(chan *inflight, cfg.MaxInflightBatches),
		slots:     make(chan struct{}, cfg.MaxInflightBatches),
		closing:   make(chan struct{}),
		done:      make(chan struct{}),
		metrics:   newMetrics(),
		clock:     newCellClock(cfg.TestingKnobs.WallClock, cfg.ClockMaxStep, log),
	}
	s.reads.s = s
	s.space = cfg.TestingKnobs.DiskSpace
	if s.space == nil {
		s.space = statfsSpace{}
	}
	if err := s.open(); err != nil {
		s.closeParts()
		return nil, err
	}
	s.checkDisk()
	s.workers.Add(5)
	s.waiter.Add(1)
	go s.runProposer()
	go s.runWaiter()
	go s.watchLeadership()
	go s.runDiskMonitor()
	go s.runLeaderCheck()
	go s.runExpirySweeper()
	return s, nil
}

func (s *Store) open() error {
	cfg := s.cfg
	fs := vfs.Default
	stateDir := filepath.Join(cfg.DataDir, "state")
	if cfg.TestingKnobs.InMemoryState {
		fs = vfs.NewMem()
		stateDir = "state"
	}
	if k := cfg.TestingKnobs.StateFS; k != nil {
		fs = k
	}
	for _, d := range []string{cfg.DataDir, filepath.Join(cfg.DataDir, "raft-wal"), filepath.Join(cfg.DataDir, "snapshots")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return fmt.Errorf("data dir %s is not usable: %w", cfg.DataDir, err)
		}
	}
	if err := checkWritable(cfg.DataDir); err != nil {
		return err
	}
	hlog := logging.NewHclog(s.log, logging.HclogOptions{Name: "raft", Demote: logging.RaftRoutineMessages()})

	f, err := openFSM(fsmConfig{cacheBytes: cfg.StateCacheBytes, memTableBytes: cfg.StateMemTableBytes, headCache: cfg.StateHeadCacheEntries, dedupFilter: cfg.StateDedupFilterBytes, fs: s.stateFS(fs), dir: stateDir, log: s.log, dedupWindow: defaultDedupWindow, dedupMaxIDs: defaultDedupMaxIDs, changelog: defaultChangeLog, tenantQuota: defaultTenantQuota, onFatal: s.failWith, onApply: cfg.TestingKnobs.OnApply,
		onRejected: func() { s.metrics.eventsRejected.WithLabelValues("apply").Inc() }})
	if err != nil {
		return err
	}
	s.fsm = f
	f.onTime = s.clock.observe // before Raft applies anything
	f.vectors = newVectorIndexes(cfg.Vector, s.log)
	f.vectors.closing, f.vectors.wg = s.closing, &s.workers
	f.vectors.build = func(ix *vecIndex) { f.buildVectorIndex(ix, s.closing) }

	walDir := filepath.Join(cfg.DataDir, "raft-wal")
	segmentSize := raftwal.WithSegmentSize(cmp.Or(cfg.Raft.LogSegmentBytes, raftwal.DefaultSegmentSize))
	if k := cfg.TestingKnobs.LogFS; k != nil {
		s.wal, err = raftwal.Open(walDir, raftwal.WithLogger(hlog), segmentSize, raftwal.WithSegmentFiler(segment.NewFiler(walDir, k)))
	} else {
		s.wal, err = raftwal.Open(walDir, raftwal.WithLogger(hlog), segmentSize)
	}
	if err != nil {
		return fmt.Errorf("open raft log: %w", err)
	}

	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "snapshots"), cfg.Raft.SnapshotRetain, hlog)
	if err != nil {
		return fmt.Errorf("open snapshots: %w", err)
	}
	if err := s.catchUpFromSnapshot(snaps); err != nil {
		return err
	}

	has, err := raft.HasExistingState(s.wal, s.wal, snaps)
	if err != nil {
		return fmt.Errorf("inspect raft state: %w", err)
	}
	if s.raftID, err = s.settleIdentity(has); err != nil {
		return err
	}

	ln := cfg.RaftListener
	if ln == nil {
		ln, err = net.Listen("tcp", cfg.RaftBind)
		if err != nil {
			return fmt.Errorf("raft address %s: %w", cfg.RaftBind, err)
		}
	}
	var adv net.Addr
	if cfg.RaftAdvertise != "" {
		if adv, err = net.ResolveTCPAddr("tcp", cfg.RaftAdvertise); err != nil {
			ln.Close()
			return fmt.Errorf("raft advertise address %s: %w", cfg.RaftAdvertise, err)
		}
	}
	var tl *tlsLayer
	if cfg.TLS != nil {
		tl = newTLSLayer(cfg, s.log, s.metrics.raftConnsRefused)
		s.log.Info("raft transport: mutual TLS", "identity", tl.self.String())
	}
	layer := newStreamLayer(ln, cfg.TestingKnobs.Network, tl)
	layer.advertise = adv
	layer.routes = cfg.RaftDialRoutes
	s.layer = layer
	s.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 4,
		Timeout: 10 * time.Second,
		Logger:  hlog,
	})
	s.safe = &safeTransport{NetworkTransport: s.trans, onWrongServer: s.wrongServer}
	s.self = &cellv1.NodeInfo{NodeId: cfg.NodeID, RaftAddr: string(s.trans.LocalAddr()), GrpcAddr: cfg.GRPCAdvertise, HttpAddr: cfg.HTTPAdvertise, RaftId: s.raftID}

	rc := raftConfig(cfg)
	rc.LocalID = raft.ServerID(s.raftID)
	rc.Logger = hlog
	if d := cfg.Raft.leaseDuration(); d > 0 {
		s.lease.dur = d
		s.safe.onAck = s.lease.noteAck
		var votesFrom time.Time
		if has { // a restart: refuse votes while a lease this node acknowledged may hold
			votesFrom = time.Now().Add(cfg.Raft.HeartbeatTimeout)
		}
		hdr := raft.RPCHeader{ProtocolVersion: rc.ProtocolVersion, ID: []byte(s.raftID), Addr: s.trans.EncodePeer(rc.LocalID, s.trans.LocalAddr())}
		s.safe.guard = newVoteGuard(votesFrom, hdr, func(rpc string) { s.metrics.leaseRefused.WithLabelValues(rpc).Inc() })
	}

	if len(cfg.Bootstrap) > 0 {
		if !has {
			var conf raft.Configuration
			for _, p := range cfg.Bootstrap {
				addr := raft.ServerAddress(p.Addr)
				if p.ID == cfg.NodeID {
					addr = s.trans.LocalAddr()
				}
				conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: addr})
			}
			if err := raft.BootstrapCluster(rc, s.logStore(), s.wal, snaps, s.safe, conf); err != nil {
				return fmt.Errorf("bootstrap cell: %w", err)
			}
			s.log.Info("bootstrapped new cell", "voters", len(conf.Servers))
		}
	}
	// safeTransport: raft's own pipeline can deadlock, and its heartbeats
	// can outlive Shutdown (see pipeline.go).
	logs := s.logStore() // TestingKnobs.LogStoreFault in front when set
	if failpoint.Enabled() {
		logs = failpointLog{logs} // crash points around the log's fsync
	}
	if n := cfg.Raft.LogCacheEntries; n > 0 {
		logs = newLogCache(logs, n)
	}
	s.raft, err = raft.NewRaft(rc, s.fsm, logs, s.wal, snaps, s.safe)
	if err != nil {
		return fmt.Errorf("start raft: %w", err)
	}
	if tl != nil {
		tl.raft.Store(s.raft)
	}
	if s.safe.guard != nil {
		s.safe.guard.raft.Store(s.raft)
	}
	return nil
}

// settleIdentity returns the Raft server id this node runs under and
// makes sure the data dir's identity file records it before Raft writes
// any state (see IdentityFile). has says whether the dir holds Raft state.
func (s *Store) settleIdentity(has bool) (string, error) {
	cfg := s.cfg
	id, ok, err := ReadIdentity(cfg.DataDir)
	if err != nil {
		return "", err
	}
	if ok && id.NodeID != cfg.NodeID {
		return "", fmt.Errorf("%w: data dir %s belongs to node %q, not %q", ErrIdentity, cfg.DataDir, id.NodeID, cfg.NodeID)
	}
	if has {
		if ok {
			return id.RaftID, nil
		}
		// Raft state written before identity files existed: the node
		// founded its cell or joined it under its node id.
		if err := writeIdentity(cfg.DataDir, Identity{NodeID: cfg.NodeID, RaftID: cfg.NodeID}); err != nil {
			return "", err
		}
		s.log.Info("recorded the data dir's Raft identity", "raft_id", cfg.NodeID)
		return cfg.NodeID, nil
	}
	raftID := cfg.NodeID
	if cfg.NewIncarnation {
		if raftID, err = NewRaftID(cfg.NodeID); err != nil {
			return "", err
		}
	}
	if ok {
		s.log.Warn("the data dir has an identity but no Raft state: its Raft state was lost", "lost_raft_id", id.RaftID, "raft_id", raftID)
	}
	if err := writeIdentity(cfg.DataDir, Identity{NodeID: cfg.NodeID, RaftID: raftID}); err != nil {
		return "", err
	}
	if cfg.NewIncarnation {
		s.log.Warn("no Raft state in the data dir: starting as a new incarnation, which votes only once the cell has added it as a member",
			"raft_id", raftID)
	}
	return raftID, nil
}

// wrongServer counts and logs an answer refused by the transport because
// another server answered than the one addressed (at most every few
// seconds per address: a replaced member is retried often).
func (s *Store) wrongServer(want, got raft.ServerID, addr raft.ServerAddress) {
	s.metrics.wrongServer.Inc()
	now := time.Now().UnixNano()
	last := s.wrongLogged.Load()
	if now-last < int64(10*time.Second) || !s.wrongLogged.CompareAndSwap(last, now) {
		return
	}
	s.log.Warn("a Raft answer came from another server than the one addressed; ignored (a member came back without its data under a new Raft id: it counts only once added)",
		"addressed", string(want), "answered", string(got), "addr", string(addr))
}

// membershipOf reports whether the latest Raft configuration holds this
// node's incarnation, and with a vote.
func (s *Store) membershipOf() (m struct{ Member, Voter bool }) {
	if s.raft == nil {
		return m
	}
	if cf := s.raft.GetConfiguration(); cf.Error() == nil {
		for _, srv := range cf.Configuration().Servers {
			if string(srv.ID) == s.raftID {
				m.Member, m.Voter = true, srv.Suffrage == raft.Voter
			}
		}
	}
	return m
}

// RaftID returns this node's Raft server id (see IdentityFile).
func (s *Store) RaftID() string { return s.raftID }

// raftConfig derives hashicorp/raft's config from ours.
func raftConfig(cfg Config) *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.HeartbeatTimeout = cfg.Raft.HeartbeatTimeout
	rc.ElectionTimeout = cfg.Raft.ElectionTimeout
	rc.LeaderLeaseTimeout = cfg.Raft.LeaderLeaseTimeout
	if leaderCheckOn(cfg.Raft) {
		// The leader check wakes Raft's follower loop with a 1 ms shorter
		// HeartbeatTimeout, which Raft validates against the lease.
		rc.LeaderLeaseTimeout = min(rc.LeaderLeaseTimeout, rc.HeartbeatTimeout-time.Millisecond)
	}
	rc.PreVoteDisabled = false // explicit: a lone follower cannot depose a leader
	rc.CommitTimeout = cfg.Raft.CommitTimeout
	rc.MaxAppendEntries = cfg.Raft.MaxAppendEntries
	rc.SnapshotInterval = cfg.Raft.SnapshotInterval
	rc.SnapshotThreshold = cfg.Raft.SnapshotThreshold
	rc.TrailingLogs = cfg.Raft.TrailingLogs
	// Not BatchApplyCh: futures buffered there are never answered when Raft
	// shuts down (a Close would hang on them). The proposer batches instead.
	rc.BatchApplyCh = false
	rc.NoSnapshotRestoreOnStart = true // the Pebble state survives restarts
	return rc
}

// catchUpFromSnapshot makes the Pebble state start at or after the newest
// snapshot Raft will see (Raft starts applying after that snapshot's index,
// NoSnapshotRestoreOnStart), restoring one when the state is behind it (a
// lost or wiped state/ dir), and refuses to start (ErrDataLoss) rather than
// serve a state with a hole in it (S14).
//
// A snapshot is opened only when the state needs it: a corrupt one (Raft's
// CRC over the file, then ours) is moved out of the snapshot store
// (DataDir/snapshots-corrupt/) and counted, and the next older one tried.
// An older snapshot is usable only when the Raft log still holds every entry
// after it (the log is truncated after each snapshot); otherwise, and when no
// snapshot is usable and the log does not start at its first entry, the
// node's local data cannot rebuild the state: ErrDataLoss. The remedy is
// to rejoin as a new member (docs/reliability.md, ## Disk faults).
func (s *Store) catchUpFromSnapshot(snaps *raft.FileSnapshotStore) error {
	metas, err := snaps.List()
	if err != nil || len(metas) == 0 {
		return err
	}
	applied := s.fsm.applied.Load()
	if metas[0].Index <= applied {
		return nil // not needed; a corrupt one is found when Raft sends it (and replaced by the next snapshot)
	}
	first, err := s.wal.FirstIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	last, err := s.wal.LastIndex()
	if err != nil {
		return fmt.Errorf("raft log: %w", err)
	}
	// covered: Raft can replay every entry after index from the log.
	covered := func(index uint64) bool { return last == 0 || first <= index+1 }
	for _, meta := range metas {
		idx, err := s.checkSnapshot(snaps, meta.ID)
		if err != nil {
			s.metrics.corruptSnapshots.Inc()
			s.log.Error("snapshot is corrupt; moving it aside", "reason", "DATA_LOSS", "snapshot", meta.ID, "index", meta.Index, "err", err)
			if err := s.quarantineSnapshot(meta.ID); err != nil {
				return err
			}
			continue
		}
		if !covered(meta.Index) {
			return fmt.Errorf("%w: snapshot %s (index %d) is the newest readable one, but the raft log starts at %d", ErrDataLoss, meta.ID, meta.Index, first)
		}
		if idx <= applied {
			return nil
		}
		s.log.Warn("state is behind the newest snapshot; restoring it", "state_index", applied, "snapshot_index", idx)
		_, rc, err := snaps.Open(meta.ID)
		if err != nil {
			return err
		}
		return s.fsm.Restore(rc)
	}
	// No readable snapshot: Raft replays the log from its first entry.
	if !covered(0) {
		return fmt.Errorf("%w: no readable snapshot, the state is behind (index %d), and the raft log starts at %d", ErrDataLoss, applied, first)
	}
	return nil
}

// checkSnapshot reads a whole snapshot (Raft checks its CRC on open, we
// check ours while reading) and returns the state index it holds.
func (s *Store) checkSnapshot(snaps *raft.FileSnapshotStore, id string) (uint64, error) {
	_, rc, err := snaps.Open(id)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return snapshotAppliedIndex(rc)
}

// quarantineSnapshot moves a snapshot out of Raft's snapshot store, kept
// for inspection.
func (s *Store) quarantineSnapshot(id string) error {
	dir := filepath.Join(s.cfg.DataDir, "snapshots-corrupt")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	return os.Rename(filepath.Join(s.cfg.DataDir, "snapshots", "snapshots", id), filepath.Join(dir, id))
}

func checkWritable(dir string) error {
	f, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// Close stops Raft and closes the state. It does not remove the node from
// the cell. It is safe to call more than once.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		s.workers.Wait()
		// Drain the entries in flight while Raft still runs: each is then
		// applied or fails (leadership lost) and is answered. Raft's shutdown
		// drops entries queued for the state machine without answering
		// their futures, which would leave the waiter blocked for ever.
		drained := make(chan struct{})
		go func() { s.waiter.Wait(); close(drained) }()
		timeout := time.NewTimer(s.cfg.ApplyTimeout)
		select {
		case <-drained:
		case <-timeout.C:
			s.log.Warn("in-flight writes not answered before shutdown; their outcome is unknown")
		}
		timeout.Stop()
		if s.raft != nil {
			if err := s.raft.Shutdown().Error(); err != nil {
				s.closeErr = err
			}
		}
		s.reads.wait()
		if err := s.closeParts(); err != nil && s.closeErr == nil {
			s.closeErr = err
		}
	})
	return s.closeErr
}

func (s *Store) closeParts() error {
	var errs []error
	if s.safe != nil {
		s.safe.closeHeartbeats() // before the log closes under a late heartbeat
		s.safe.closeGuard()
	}
	if s.trans != nil {
		errs = append(errs, s.trans.Close())
	} else if s.cfg.RaftListener != nil {
		errs = append(errs, s.cfg.RaftListener.Close())
	}
	if s.wal != nil {
		errs = append(errs, s.wal.Close())
	}
	if s.fsm != nil {
		errs = append(errs, s.fsm.close())
	}
	return errors.Join(errs...)
}

// failWith records a fatal error and closes Done. It must not block: it
// runs on Raft's apply goroutine.
func (s *Store) failWith(err error) {
	s.fatal.CompareAndSwap(nil, &err)
	s.doneOnce.Do(func() { close(s.done) })
}

// Done is closed when the store stopped by itself because it cannot go on
// safely (an unknown non-ignorable command, a storage failure); Err then
// says why. The owner should Close the store.
func (s *Store) Done() <-chan struct{} { return s.done }

// Err returns why the store stopped, or nil.
func (s *Store) Err() error {
	if p := s.fatal.Load(); p != nil {
		return *p
	}
	return nil
}

// proposal is one command waiting to be group-committed.
type proposal struct {
	data []byte // encoded Command
	ch   chan proposalResult
}

type proposalResult struct {
	res *cellv1.CommandResult
	err error
	// ack is what TestingKnobs.Acks is told (set only with the knob).
	ack Ack
}

// inflight is one Raft entry (a batch of proposals) being replicated.
type inflight struct {
	f     raft.ApplyFuture
	batch []*proposal
	start time.Time
	// before is TestingKnobs.Acks.Now() just before raft.Apply.
	before int64
}

// Propose replicates cmd through Raft (group-committed with concurrent
// proposals) and returns the state machine's result. It fills in the
// command's version and timestamp. A command the state machine rejected
// returns its *cperr.Error (WRONG_CELL, STALE_EPOCH, SEQUENCE_MISMATCH, …);
// on a follower it returns NOT_LEADER with the leader in the metadata.
// A context that ends before the result is known returns the context's
// error: the command may still be applied (retry with the same request_id).
func (s *Store) Propose(ctx context.Context, cmd *cellv1.Command) (*cellv1.CommandResult, error) {
	p, err := s.Submit(ctx, cmd)
	if err != nil {
		return nil, err
	}
	return p.Wait(ctx)
}

// Pending is a command Submit queued for Raft; Wait returns its result.
type Pending struct {
	s     *Store
	p     *proposal
	cmd   *cellv1.Command
	gated bool
}

// Submit checks cmd and queues it for Raft like Propose, but returns as
// soon as it is queued; Pending.Wait returns the result. Commands that one
// goroutine submits one after another enter the Raft log in that order
// (the proposer takes the queue in order, one Raft entry after the other),
// so a caller can keep several in flight without reordering them. Order is
// all Submit promises: a command that fails (a lost leadership, an enqueue
// timeout) does not stop those submitted after it, which may still be
// applied — a caller that needs them to stop must make them harmless by
// itself (the replication sink does: apply_changes refuses a gap in tseq).
func (s *Store) Submit(ctx context.Context, cmd *cellv1.Command) (*Pending, error) {
	if s.raft.State() != raft.Leader {
		return nil, s.notLeader()
	}
	if cmd.Version == 0 {
		cmd.Version = commandVersion
	}
	spec, known := lookupOp(cmd)
	// A command no replica can apply would stop the whole cell (see
	// checkKnown): refuse it here, at the door.
	if !cmd.GetIgnorable() && !s.cfg.TestingKnobs.ProposeUnchecked {
		if !known {
			return nil, cperr.Invalid(cperr.FieldViolation{Field: "op", Description: "unknown or missing operation"})
		}
		if cmd.GetVersion() > commandVersion {
			return nil, cperr.Invalid(cperr.FieldViolation{Field: "version", Description: "newer than this node understands"})
		}
	}
	// A source's events are checked before they enter the log (the state
	// machine checks them again, invariant 12).
	if cmd.GetApplyChanges() != nil && !s.cfg.TestingKnobs.ProposeUnchecked {
		if err := s.checkReplicated(cmd); err != nil {
			return nil, err
		}
	}
	// A client write is proposed only while the cell's authority is valid,
	// and acknowledged only if it still is once applied.
	gated := known && spec.owner
	if gated {
		if err := s.checkAuthority(); err != nil {
			return nil, err
		}
	}
	// A node below its free-space watermark adds no data (H4): refused
	// before the log, so nothing of it is appended anywhere.
	if err := s.checkDiskRoom(cmd); err != nil {
		return nil, err
	}
	if cmd.TimeUnixNano == 0 {
		cmd.TimeUnixNano = s.clock.now() // not the wall clock: finding M8 (clock.go)
	}
	data, err := marshalOpts.Marshal(cmd)
	if err != nil {
		return nil, cperr.New(cperr.InvalidArgument, "command cannot be encoded")
	}
	p := &proposal{data: data, ch: make(chan proposalResult, 1)}
	select {
	case s.proposals <- p:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.closing:
		return nil, errUnavailable("the node is shutting down")
	}
	return &Pending{s: s, p: p, cmd: cmd, gated: gated}, nil
}

// Wait returns the submitted command's result, as Propose does. A context
// that ends first returns the context's error (the command may still be
// applied). Call it once.
func (pd *Pending) Wait(ctx context.Context) (*cellv1.CommandResult, error) {
	s := pd.s
	var r proposalResult
	select {
	case r = <-pd.p.ch:
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-s.closing:
		return nil, errUnavailable("the node is shutting down; the outcome is unknown, retry with the same request_id")
	}
	if r.err != nil {
		return nil, r.err
	}
	if e := r.res.GetError(); e != nil {
		return nil, &cperr.Error{Reason: cperr.Reason(e.GetReason()), Message: e.GetMessage(), Metadata: e.GetMetadata()}
	}
	if pd.gated {
		if err := s.checkAuthority(); err != nil {
			return nil, err
		}
		if acks := s.cfg.TestingKnobs.Acks; acks != nil && r.ack.Epoch != 0 {
			r.ack.Tenant, r.ack.After = pd.cmd.GetTenant(), acks.Now()
			acks.Acked(r.ack)
		}
	}
	return r.res, nil
}

func errUnavailable(msg string) *cperr.Error {
	return cperr.New(cperr.CellUnavailable, "%s", msg).WithRetryAfter(100 * time.Millisecond)
}

// runProposer batches queued proposals into Raft entries: while
// MaxInflightBatches entries are being replicated, proposals pile up and the
// next entry carries all of them, so one fsync and one Raft round serve many
// writers (group commit).
func (s *Store) runProposer() {
	defer s.workers.Done()
	defer close(s.inflight)
	var buf []byte
	for {
		var first *proposal
		select {
		case first = <-s.proposals:
		case <-s.closing:
			return
		}
		select {
		case s.slots <- struct{}{}:
		case <-s.closing:
			answer([]*proposal{first}, proposalResult{err: errUnavailable("the node is shutting down")})
			return
		}
		batch := []*proposal{first}
		size := len(first.data)
	fill:
		for len(batch) < s.cfg.MaxBatchCommands && size < s.cfg.MaxBatchBytes {
			select {
			case p := <-s.proposals:
				batch = append(batch, p)
				size += len(p.data)
			default:
				break fill
			}
		}
		buf = buf[:0]
		for _, p := range batch {
			buf = protowire.AppendTag(buf, 1, protowire.BytesType)
			buf = protowire.AppendBytes(buf, p.data)
		}
		data := append([]byte(nil), buf...)
		s.metrics.batchSize.Observe(float64(len(batch)))
		var before int64
		if acks := s.cfg.TestingKnobs.Acks; acks != nil {
			before = acks.Now()
		}
		f := s.raft.Apply(data, s.cfg.ApplyTimeout)
		select {
		case s.inflight <- &inflight{f: f, batch: batch, start: time.Now(), before: before}:
		case <-s.closing:
			answer(batch, proposalResult{err: errUnavailable("the node is shutting down")})
			return
		}
	}
}

// runWaiter answers proposals in commit order.
func (s *Store) runWaiter() {
	defer s.waiter.Done()
	for inf := range s.inflight {
		err := inf.f.Error()
		<-s.slots
		s.metrics.commitLatency.Observe(time.Since(inf.start).Seconds())
		if err != nil {
			answer(inf.batch, proposalResult{err: s.applyError(err)})
			continue
		}
		resp, _ := inf.f.Response().(*batchResponse)
		_ = failpoint.Inject(failpoint.StoreAfterApplyBeforeAck) // crash or sleep; an error means nothing here
		switch {
		case resp == nil:
			answer(inf.batch, proposalResult{err: cperr.New(cperr.Internal, "no result from the state machine")})
		case resp.err != nil || len(resp.results) != len(inf.batch):
			answer(inf.batch, proposalResult{err: errUnavailable("the cell's state machine stopped")})
		default:
			for i, p := range inf.batch {
				r := proposalResult{res: resp.results[i]}
				if s.cfg.TestingKnobs.Acks != nil {
					r.ack = Ack{Epoch: resp.epochs[i], Term: resp.term, Index: inf.f.Index(), Before: inf.before}
				}
				p.ch <- r
			}
		}
	}
}

func answer(batch []*proposal, r proposalResult) {
	for _, p := range batch {
		p.ch <- r
	}
}

// applyError maps a Raft apply error to the error contract.
func (s *Store) applyError(err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		return s.notLeader() // never appended: safe to retry anywhere
	case errors.Is(err, raft.ErrLeadershipLost), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return errUnavailable("leadership changed while the write was in flight; the outcome is unknown, retry with the same request_id")
	case errors.Is(err, raft.ErrEnqueueTimeout):
		return errUnavailable("the cell is overloaded")
	case errors.Is(err, raft.ErrRaftShutdown):
		return errUnavailable("the node is shutting down")
	case isNoSpace(err):
		// The leader could not append the entry to its own log, so it sent
		// it nowhere: nothing was applied. Raft steps down; another member
		// leads if its disk has room.
		s.metrics.logStoreErrors.WithLabelValues("no_space").Inc()
		s.log.Error("raft log store is out of space: the write was not appended; refusing new writes until the next free-space check", "err", err)
		s.noteNoSpace()
		return storageFull(s.cfg.NodeID, s.DiskStatus().FreeBytes, fmt.Sprintf("node %s could not append to its Raft log: no space left on its disk; the write was not applied", s.cfg.NodeID))
	case errors.Is(err, syscall.EIO):
		s.metrics.logStoreErrors.WithLabelValues("io").Inc()
		s.log.Error("raft log store I/O error: the write was not appended", "err", err)
		return errUnavailable("the leader's disk failed (I/O error); the write was not applied, retry")
	}
	s.log.Error("raft apply failed", "err", err)
	return errUnavailable("the write could not be replicated")
}

// notLeader is the NOT_LEADER error with the leader's addresses, or
// CELL_UNAVAILABLE when no leader is known.
func (s *Store) notLeader() error {
	id, info := s.Leader()
	if id == "" {
		return cperr.New(cperr.CellUnavailable, "the cell has no leader right now").WithRetryAfter(s.cfg.Raft.HeartbeatTimeout)
	}
	e := cperr.New(cperr.NotLeader, "this node is not the cell leader").With(cperr.MetaLeaderID, id)
	if info != nil && info.GetGrpcAddr() != "" {
		e.With(cperr.MetaLeader, info.GetGrpcAddr())
	}
	return e
}

// IsLeader reports whether this node is the Raft leader.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// LeaderTerm returns the current Raft term and true while this node is
// the leader and ready to serve (everything committed in earlier terms is
// applied). It is cheap enough to poll.
func (s *Store) LeaderTerm() (uint64, bool) {
	if s.raft.State() != raft.Leader {
		return 0, false
	}
	term := s.raft.CurrentTerm()
	return term, s.readyTerm.Load() == term
}

// HasState reports whether dataDir already holds Raft state (a log or a
// snapshot), that is whether a node opened on it restarts rather than
// starts a new member. A missing dir holds none.
func HasState(dataDir string) (bool, error) {
	walDir, snapDir := filepath.Join(dataDir, "raft-wal"), filepath.Join(dataDir, "snapshots")
	if _, err := os.Stat(walDir); errors.Is(err, os.ErrNotExist) {
		if _, err := os.Stat(snapDir); errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
	}
	if err := os.MkdirAll(walDir, 0o750); err != nil {
		return false, err
	}
	if err := os.MkdirAll(snapDir, 0o750); err != nil {
		return false, err
	}
	hlog := hclog.NewNullLogger()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(snapDir, 1, hlog)
	if err != nil {
		return false, fmt.Errorf("open snapshots: %w", err)
	}
	wal, err := raftwal.Open(walDir, raftwal.WithLogger(hlog))
	if err != nil {
		return false, fmt.Errorf("open raft log: %w", err)
	}
	has, err := raft.HasExistingState(wal, wal, snaps)
	if cerr := wal.Close(); err == nil && cerr != nil {
		err = cerr
	}
	return has, err
}

// Leader returns the leader's node id and its registered addresses (nil
// when unknown or not registered yet).
func (s *Store) Leader() (id string, info *cellv1.NodeInfo) {
	_, lid := s.raft.LeaderWithID()
	if lid == "" {
		return "", nil
	}
	if string(lid) == s.raftID {
		return s.cfg.NodeID, s.self
	}
	id = NodeOfRaftID(string(lid))
	info, _ = s.fsm.node(id)
	return id, info
}

// Self returns this node's advertised addresses.
func (s *Store) Self() *cellv1.NodeInfo { return s.self }

// watchLeadership makes a new leader ready to serve reads: it waits until
// everything committed in earlier terms is applied (a barrier), then
// registers this node's addresses in the cell state if they changed.
func (s *Store) watchLeadership() {
	defer s.workers.Done()
	ch := s.raft.LeaderCh()
	for {
		select {
		case <-s.closing:
			return
		case isLeader := <-ch:
			if !isLeader {
				s.log.Info("lost leadership")
				continue
			}
			term := s.raft.CurrentTerm()
			s.lease.becameLeader(term, time.Now())
			if err := s.raft.Barrier(s.cfg.ApplyTimeout).Error(); err != nil {
				s.log.Warn("leader barrier failed", "err", err)
				continue
			}
			s.readyTerm.Store(term)
			s.log.Info("became leader", "term", term)
			s.registerSelf()
			s.ensureSettings()
		}
	}
}

// ensureSettings makes the cell's replicated settings the ones this leader
// is configured with. Until a leader has done so, every replica uses the
// package defaults, so replicas never disagree.
func (s *Store) ensureSettings() {
	want := withKeyword(withAudit(settingsOf(s.cfg.DedupWindow, s.cfg.DedupMaxIDs, s.cfg.ChangeLog, s.cfg.TenantQuota), s.cfg.Audit), s.cfg.Keyword)
	if proto.Equal(s.fsm.settings.Load(), want) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ApplyTimeout)
	defer cancel()
	if _, err := s.Propose(ctx, &cellv1.Command{Op: &cellv1.Command_CellSettings{CellSettings: want}}); err != nil {
		s.log.Warn("updating cell settings failed", "err", err)
		return
	}
	s.log.Info("cell settings updated", "dedup_window", time.Duration(want.GetDedupWindowNanos()), "dedup_max_ids", want.GetDedupWindow(), "changelog_max_events", want.GetChangelogMaxEvents(),
		"changelog_max_bytes", want.GetChangelogMaxBytes(), "changelog_retention", time.Duration(want.GetChangelogRetentionNanos()),
		"tenant_max_bytes", want.GetTenantQuota().GetMaxBytes(), "tenant_max_contexts", want.GetTenantQuota().GetMaxContexts(), "tenant_max_memory_keys", want.GetTenantQuota().GetMaxMemoryKeys())
}

func (s *Store) registerSelf() {
	cur, _ := s.fsm.node(s.cfg.NodeID)
	if cur != nil && cur.GetRaftAddr() == s.self.GetRaftAddr() && cur.GetGrpcAddr() == s.self.GetGrpcAddr() && cur.GetHttpAddr() == s.self.GetHttpAddr() && cur.GetRaftId() == s.self.GetRaftId() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.ApplyTimeout)
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	if _, err := s.Propose(ctx, &cellv1.Command{Op: &cellv1.Command_RegisterNode{RegisterNode: s.self}}); err != nil {
		s.log.Warn("registering this node failed", "err", err)
	}
}

// AddVoter adds a voting member, or promotes a non-voter, under Raft
// server id id (leader only).
func (s *Store) AddVoter(ctx context.Context, id, raftAddr string) error {
	return s.membership(ctx, func(d time.Duration) raft.Future {
		return s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, d)
	})
}

// AddNonVoter adds a non-voting member under Raft server id id (leader
// only).
func (s *Store) AddNonVoter(ctx context.Context, id, raftAddr string) error {
	return s.membership(ctx, func(d time.Duration) raft.Future {
		return s.raft.AddNonvoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, d)
	})
}

// RemoveServer removes a member (leader only): the server whose Raft id
// is id, else every incarnation of node id. Removing no server is not an
// error.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	servers, err := s.configuration()
	if err != nil {
		return err
	}
	var targets []raft.ServerID
	for _, srv := range servers {
		if string(srv.ID) == id {
			targets = []raft.ServerID{srv.ID}
			break
		}
		if NodeOfRaftID(string(srv.ID)) == id {
			targets = append(targets, srv.ID)
		}
	}
	if len(targets) == 0 {
		targets = []raft.ServerID{raft.ServerID(id)} // the leader check and raft's own answer
	}
	for _, t := range targets {
		if err := s.membership(ctx, func(d time.Duration) raft.Future {
			return s.raft.RemoveServer(t, 0, d)
		}); err != nil {
			return err
		}
	}
	return nil
}

// RemoveStaleIncarnations removes from the Raft configuration every
// other incarnation of raftID's node (leader only): a node that lost its
// data dir came back under raftID, so its old incarnation will never
// answer again. It returns the Raft ids removed.
//
// Removing a server that does not answer never costs the quorum: the
// leader leads, so a majority of the voters answers it, and that
// majority, without the silent server, is still a majority of the
// voters that remain. The leader's own incarnation is never removed.
func (s *Store) RemoveStaleIncarnations(ctx context.Context, raftID string) ([]string, error) {
	if !ValidRaftID(raftID) {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "node.raft_id", Description: "is not a Raft server id"})
	}
	servers, err := s.configuration()
	if err != nil {
		return nil, err
	}
	node := NodeOfRaftID(raftID)
	var removed []string
	for _, srv := range servers {
		id := string(srv.ID)
		if id == raftID || id == s.raftID || NodeOfRaftID(id) != node {
			continue
		}
		if err := s.membership(ctx, func(d time.Duration) raft.Future {
			return s.raft.RemoveServer(srv.ID, 0, d)
		}); err != nil {
			return removed, err
		}
		s.metrics.staleIncarnations.Inc()
		s.log.Warn("removed a stale incarnation from the Raft configuration: its node came back without its data",
			"member", node, "removed_raft_id", id, "new_raft_id", raftID, "voter", srv.Suffrage == raft.Voter)
		removed = append(removed, id)
	}
	return removed, nil
}

// configuration returns the latest Raft configuration's servers.
func (s *Store) configuration() ([]raft.Server, error) {
	cf := s.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, s.applyError(err)
	}
	return cf.Configuration().Servers, nil
}

func (s *Store) membership(ctx context.Context, op func(time.Duration) raft.Future) error {
	if !s.IsLeader() {
		return s.notLeader()
	}
	d := s.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok && time.Until(dl) < d {
		d = time.Until(dl)
	}
	if err := op(d).Error(); err != nil {
		return s.applyError(err)
	}
	return nil
}

// TransferLeadership hands leadership to id (or the most up-to-date
// follower when id is empty) and returns the new leader's id.
func (s *Store) TransferLeadership(ctx context.Context, id string) (string, error) {
	if !s.IsLeader() {
		return "", s.notLeader()
	}
	// The new leader is elected by votes that ignore stickiness: no lease
	// read from here on in this term (lease.go).
	s.lease.blockedTerm.Store(s.raft.CurrentTerm())
	var f raft.Future
	if id == "" {
		f = s.raft.LeadershipTransfer()
	} else {
		cf := s.raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			return "", s.applyError(err)
		}
		var addr raft.ServerAddress
		var target raft.ServerID
		for _, srv := range cf.Configuration().Servers {
			if (string(srv.ID) == id || NodeOfRaftID(string(srv.ID)) == id) && (addr == "" || srv.Suffrage == raft.Voter) {
				addr, target = srv.Address, srv.ID
			}
		}
		if addr == "" {
			return "", cperr.Invalid(cperr.FieldViolation{Field: "node_id", Description: "not a member of this cell"})
		}
		f = s.raft.LeadershipTransferToServer(target, addr)
	}
	if err := f.Error(); err != nil {
		s.log.Warn("leadership transfer failed", "target", id, "err", err)
		return "", cperr.New(cperr.CellUnavailable, "leadership transfer did not complete; retry").WithRetryAfter(s.cfg.Raft.HeartbeatTimeout)
	}
	for {
		if lid, _ := s.Leader(); lid != "" && lid != s.cfg.NodeID {
			return lid, nil
		}
		if err := retry.Sleep(ctx, 5*time.Millisecond); err != nil { // poll for the new leader
			return "", err
		}
	}
}

// Snapshot takes a Raft snapshot now, which lets Raft truncate its log.
func (s *Store) Snapshot() error {
	err := s.raft.Snapshot().Error()
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	return err
}

// Status reports this node's view of the cell.
func (s *Store) Status() Status {
	leaderAddr, leaderID := s.raft.LeaderWithID()
	st := Status{
		NodeID:       s.cfg.NodeID,
		RaftID:       s.raftID,
		State:        s.raft.State().String(),
		Term:         s.raft.CurrentTerm(),
		LeaderID:     NodeOfRaftID(string(leaderID)),
		LeaderRaftID: string(leaderID),
		LeaderAddr:   string(leaderAddr),
		CommitIndex:  s.raft.CommitIndex(),
		AppliedIndex: s.stateIndex(),
		LastLogIndex: s.raft.LastIndex(),
		Tenants:      s.fsm.tenantCount(),
	}
	if first, err := s.wal.FirstIndex(); err == nil {
		st.FirstLogIndex = first
	}
	if st.State != raft.Leader.String() {
		if lc := s.raft.LastContact(); !lc.IsZero() {
			st.LastContact = time.Since(lc)
		}
	}
	if cf := s.raft.GetConfiguration(); cf.Error() == nil {
		for _, srv := range cf.Configuration().Servers {
			m := Member{ID: NodeOfRaftID(string(srv.ID)), RaftID: string(srv.ID), RaftAddr: string(srv.Address), Voter: srv.Suffrage == raft.Voter, Leader: srv.ID == leaderID}
			m.Info, _ = s.fsm.node(m.ID)
			st.Members = append(st.Members, m)
			if m.RaftID == s.raftID {
				st.Member, st.Voter = true, m.Voter
			}
		}
	}
	return st
}

var _ io.Closer = (*Store)(nil)
