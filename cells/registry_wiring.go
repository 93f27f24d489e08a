package cells

import (
	"context"
	"fmt"
	"log/slog"
	"sync/atomic"

	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/cells/store"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// leaderSource tells the registrar whether this node leads; it reports
// false until the store is open.
type leaderSource struct {
	st atomic.Pointer[store.Store]
}

func (l *leaderSource) LeaderTerm() (uint64, bool) {
	st := l.st.Load()
	if st == nil {
		return 0, false
	}
	return st.LeaderTerm()
}

// startRegistrar registers the node in the control plane's registry.
func startRegistrar(ctx context.Context, cfg Config, info *cellv1.NodeInfo, leader registry.LeaderSource, log *slog.Logger) (*registry.Registrar, error) {
	rc := registry.DefaultConfig()
	rc.Cell = cfg.CellID
	rc.Node = &cpv1.Node{
		Id:       cfg.NodeID,
		Cell:     cfg.CellID,
		Role:     cpv1.NodeRole_NODE_ROLE_MEMBER,
		RaftAddr: info.RaftAddr,
		GrpcAddr: info.GrpcAddr,
		HttpAddr: info.HttpAddr,
	}
	if cfg.RegistryTTL > 0 {
		rc.TTL = cfg.RegistryTTL
	}
	rc.Logger = log
	reg, err := registry.Start(ctx, cfg.Registry, rc, leader)
	if err != nil {
		return nil, fmt.Errorf("cells: registry: %w", err)
	}
	return reg, nil
}

// fromRegistry fills cfg.Bootstrap or cfg.Join from the registry's
// bootstrap record when the node is new: no Raft state in its data dir and
// neither Bootstrap nor Join given. It waits (within ctx) for the control
// plane to create the cell and for enough nodes to register.
//
// A node of the bootstrap record bootstraps only while the cell is not
// formed (registry.CellFormed): once it is, a node of the record with no
// Raft state lost its data dir, and bootstrapping would bring it back
// under the Raft id its peers counted votes and acknowledgements from,
// with none of them (H1, "Raft amnesia"). It joins as a new incarnation
// instead (rejoin is true): the cell replaces its old incarnation.
func fromRegistry(ctx context.Context, cfg *Config, base *slog.Logger) (rejoin bool, err error) {
	log := base.With("node", cfg.NodeID)
	if len(cfg.Bootstrap) > 0 || cfg.Join != "" {
		return false, nil
	}
	has, err := store.HasState(cfg.DataDir)
	if err != nil {
		return false, fmt.Errorf("cells: inspect raft state in %s: %w", cfg.DataDir, err)
	}
	if has {
		return false, nil // a restart: the node knows its cell
	}
	self := &cpv1.Node{Id: cfg.NodeID, Cell: cfg.CellID}
	members, err := registry.WaitBootstrap(ctx, cfg.Registry, cfg.CellID, self, base)
	if err != nil {
		return false, fmt.Errorf("cells: bootstrap from the registry: %w", err)
	}
	listed := registry.Contains(members, cfg.NodeID)
	formed := false
	if listed {
		if formed, err = registry.CellFormed(ctx, cfg.Registry, cfg.CellID); err != nil {
			return false, fmt.Errorf("cells: bootstrap from the registry: %w", err)
		}
	}
	if listed && !formed {
		for _, m := range members {
			cfg.Bootstrap = append(cfg.Bootstrap, store.Peer{ID: m.GetId(), Addr: m.GetRaftAddr()})
		}
		log.Info("forming the cell from the registry's bootstrap record", "members", len(members))
		return false, nil
	}
	for _, m := range members {
		if m.GetId() != cfg.NodeID && m.GetGrpcAddr() != "" {
			cfg.Join = m.GetGrpcAddr()
			break
		}
	}
	if cfg.Join == "" {
		return false, fmt.Errorf("cells: the registry's bootstrap record for cell %s names no other member with a gRPC address to join through", cfg.CellID)
	}
	if listed {
		log.Warn("the cell was formed already but this node's data dir holds no Raft state (lost or wiped): "+
			"refusing to bootstrap it again; joining as a new incarnation, which the cell adds in place of the old one",
			"via", cfg.Join)
		return true, nil
	}
	log.Info("the cell was formed without this node; joining it", "via", cfg.Join)
	return false, nil
}

// authorityConfig is the authority keeper's configuration for cfg.
func authorityConfig(cfg Config, log *slog.Logger) registry.AuthorityConfig {
	ac := registry.DefaultAuthorityConfig()
	ac.Cell, ac.NodeID, ac.Logger = cfg.CellID, cfg.NodeID, log
	ac.TestingKnobs = cfg.TestingKnobs.Authority
	if cfg.AuthorityTTL > 0 {
		ac.TTL = cfg.AuthorityTTL
	}
	if cfg.AuthorityDriftMargin > 0 {
		ac.DriftMargin = cfg.AuthorityDriftMargin
	}
	return ac
}

// startAuthority starts the node's authority keeper (with a registry
// only) and installs it as the store's write gate: the node acknowledges
// writes only while it leads with a valid authority lease, and applies
// the fences of emergency promotions (cells/registry/authority.go).
func startAuthority(cfg Config, st *store.Store, leader registry.LeaderSource, log *slog.Logger) (*registry.Authority, error) {
	a, err := registry.StartAuthority(cfg.Registry, authorityConfig(cfg, log), leader, st)
	if err != nil {
		return nil, fmt.Errorf("cells: authority: %w", err)
	}
	st.SetAuthority(a)
	return a, nil
}
