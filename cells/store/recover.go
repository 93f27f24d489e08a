package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"

	"github.com/cellplane/cellplane/internal/logging"
)

// ErrRecoverRefused is returned by UnsafeRecover when it will not run:
// no confirmation, no Raft state, no identity, or another node's dir.
var ErrRecoverRefused = errors.New("store: unsafe recovery refused")

// RecoverConfig configures UnsafeRecover.
type RecoverConfig struct {
	// DataDir is the stopped node's data dir.
	DataDir string
	// NodeID must be the node the data dir belongs to.
	NodeID string
	// RaftAddr is the Raft address the node will serve on; empty keeps
	// the address its Raft configuration has for it.
	RaftAddr string
	// Confirm must be true: the recovery may lose acknowledged writes
	// that only the lost members held.
	Confirm bool
	// Logger receives the recovery's loud logs; nil means slog.Default().
	Logger *slog.Logger
}

// RecoverResult says what UnsafeRecover did.
type RecoverResult struct {
	// RaftID and RaftAddr are the sole voter of the new configuration.
	RaftID, RaftAddr string
	// Dropped are the Raft ids of the configuration the recovery removed.
	Dropped []string
	// LastIndex is the last Raft index the recovered state holds.
	LastIndex uint64
}

// UnsafeRecover rewrites the Raft configuration of a stopped node's data
// dir to the node alone (hashicorp/raft's RecoverCluster, like etcd's
// --force-new-cluster), so that a cell whose other voters lost their
// data — it cannot elect a leader, by design (H1) — can serve again from
// this survivor. The other nodes then rejoin as new members. It is
// unsafe: writes acknowledged by a quorum that did not include this node
// are lost, and running it on two survivors of one cell makes two cells.
// Run it on the most up-to-date survivor only, with every node of the
// cell stopped (docs/reliability.md, "Raft amnesia (H1)").
func UnsafeRecover(cfg RecoverConfig) (RecoverResult, error) {
	var res RecoverResult
	log := logging.OrDefault(cfg.Logger).With("node", cfg.NodeID, "data_dir", cfg.DataDir)
	if !cfg.Confirm {
		return res, fmt.Errorf("%w: it may lose acknowledged writes; confirm explicitly", ErrRecoverRefused)
	}
	has, err := HasState(cfg.DataDir)
	if err != nil {
		return res, err
	}
	if !has {
		return res, fmt.Errorf("%w: %s holds no Raft state", ErrRecoverRefused, cfg.DataDir)
	}
	id, ok, err := ReadIdentity(cfg.DataDir)
	if err != nil {
		return res, err
	}
	if !ok {
		// Raft state from before identity files: a founding member.
		id = Identity{NodeID: cfg.NodeID, RaftID: cfg.NodeID}
	}
	if id.NodeID != cfg.NodeID {
		return res, fmt.Errorf("%w: %s belongs to node %q, not %q", ErrRecoverRefused, cfg.DataDir, id.NodeID, cfg.NodeID)
	}
	res.RaftID = id.RaftID

	hlog := logging.NewHclog(log, logging.HclogOptions{Name: "raft"})
	f, err := openFSM(fsmConfig{cacheBytes: 8 << 20, memTableBytes: 4 << 20, fs: vfs.Default, dir: filepath.Join(cfg.DataDir, "state"), log: log,
		dedupWindow: defaultDedupWindow, dedupMaxIDs: defaultDedupMaxIDs, changelog: defaultChangeLog, onFatal: func(error) {}})
	if err != nil {
		return res, err
	}
	defer f.close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(filepath.Join(cfg.DataDir, "snapshots"), 2, hlog)
	if err != nil {
		return res, fmt.Errorf("open snapshots: %w", err)
	}
	wal, err := raftwal.Open(filepath.Join(cfg.DataDir, "raft-wal"), raftwal.WithLogger(hlog))
	if err != nil {
		return res, fmt.Errorf("open raft log: %w", err)
	}
	defer wal.Close()
	_, trans := raft.NewInmemTransport(raft.ServerAddress(cfg.RaftAddr))
	defer trans.Close()

	rc := raftConfig(DefaultConfig())
	rc.LocalID = raft.ServerID(id.RaftID)
	rc.Logger = hlog
	cur, err := raft.GetConfiguration(rc, f, wal, wal, snaps, trans)
	if err != nil {
		return res, fmt.Errorf("read the raft configuration: %w", err)
	}
	addr := raft.ServerAddress(cfg.RaftAddr)
	for _, srv := range cur.Servers {
		if srv.ID == rc.LocalID {
			if addr == "" {
				addr = srv.Address
			}
			continue
		}
		res.Dropped = append(res.Dropped, string(srv.ID))
	}
	if addr == "" {
		return res, fmt.Errorf("%w: %s is not in its own Raft configuration; give the Raft address to serve on", ErrRecoverRefused, id.RaftID)
	}
	res.RaftAddr = string(addr)
	log.Warn("UNSAFE RECOVERY: rewriting the Raft configuration to this node alone; writes only the dropped members held are lost",
		"raft_id", id.RaftID, "raft_addr", addr, "dropped", res.Dropped)
	rc = raftConfig(DefaultConfig())
	rc.LocalID = raft.ServerID(id.RaftID)
	rc.Logger = hlog
	conf := raft.Configuration{Servers: []raft.Server{{Suffrage: raft.Voter, ID: rc.LocalID, Address: addr}}}
	if err := raft.RecoverCluster(rc, f, wal, wal, snaps, trans, conf); err != nil {
		return res, fmt.Errorf("recover the cell: %w", err)
	}
	if res.LastIndex, err = wal.LastIndex(); err != nil || res.LastIndex == 0 {
		if metas, lerr := snaps.List(); lerr == nil && len(metas) > 0 {
			res.LastIndex = metas[0].Index
		}
	}
	if err := syncDir(cfg.DataDir); err != nil && !errors.Is(err, os.ErrNotExist) {
		return res, err
	}
	log.Warn("UNSAFE RECOVERY done: start the node; it leads the cell alone, and the other nodes rejoin as new members",
		"raft_id", id.RaftID, "last_index", res.LastIndex)
	return res, nil
}
