package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/retry"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// DefaultExpectedMembers is used when a Cell record leaves
// expected_members at 0.
const DefaultExpectedMembers = 3

// Pacing of WaitBootstrap: it wakes on every change under cells/<c> (a
// watch) and re-reads at least every bootstrapPoll in case the watch
// missed something; failed reads back off up to bootstrapRetryMax.
const (
	bootstrapPoll     = time.Second
	bootstrapRetryMin = 50 * time.Millisecond
	bootstrapRetryMax = 2 * time.Second
)

// WaitBootstrap returns the members a new cell forms its Raft group with,
// as recorded at cells/<cell>/bootstrap. If the record does not exist yet,
// it waits until the control plane created cells/<cell> and at least
// Cell.expected_members member nodes registered under cells/<cell>/nodes/,
// then creates the record (only if still absent: another node may win)
// with the expected_members registered members of lowest creation
// revision, and reads it back. Store errors are logged and retried until
// ctx ends.
//
// self should already be registered (a running Registrar). If self is not
// among the returned members, the cell was formed without it: the caller
// joins through a member's gRPC address instead of bootstrapping.
func WaitBootstrap(ctx context.Context, st topo.Store, cell string, self *cpv1.Node, log *slog.Logger) ([]*cpv1.Node, error) {
	log = logging.OrDefault(log).With("cell", cell, "node", self.GetId())
	w := bootstrapWaiter{st: st, cell: cell, log: log}

	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	changes := st.Watch(wctx, topo.CellKey(cell), 0)

	backoff := retry.Policy{Min: bootstrapRetryMin, Max: bootstrapRetryMax}.Backoff()
	for attempt := 1; ; attempt++ {
		members, wait, err := w.step(ctx)
		if members != nil {
			log.Info("cell bootstrap record read", "members", memberIDs(members), "self_listed", Contains(members, self.GetId()))
			return members, nil
		}
		if err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("registry: wait for cell %s bootstrap: %w (last error: %v)", cell, ctx.Err(), err)
			}
			lvl := slog.LevelDebug
			if attempt%10 == 0 {
				lvl = slog.LevelWarn
			}
			wait := backoff.Next()
			log.Log(ctx, lvl, "reading the cell's registry failed; retrying", "attempt", attempt, "retry_in", wait, "err", err)
			if err := retry.Sleep(ctx, wait); err != nil {
				return nil, fmt.Errorf("registry: wait for cell %s bootstrap: %w", cell, err)
			}
			continue
		}
		backoff.Reset()
		if !wait {
			continue // progress made (the record written): read it back now
		}
		t := time.NewTimer(bootstrapPoll)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("registry: wait for cell %s bootstrap: %w", cell, ctx.Err())
		case resp, ok := <-changes:
			if !ok || resp.Err != nil {
				// The watch ended (compaction, store trouble): keep
				// polling on the timer, and watch again.
				changes = st.Watch(wctx, topo.CellKey(cell), 0)
			}
		case <-t.C:
		}
		t.Stop()
	}
}

type bootstrapWaiter struct {
	st   topo.Store
	cell string
	log  *slog.Logger
	// what was logged already, so that waiting logs once per state
	loggedNoCell  bool
	loggedMembers int
}

// step makes one pass: it returns the members once the bootstrap record
// exists; wait=true when nothing can be done until something changes.
func (w *bootstrapWaiter) step(ctx context.Context) (members []*cpv1.Node, wait bool, err error) {
	bkey := topo.CellBootstrapKey(w.cell)
	boot, _, err := catalog.GetCellBootstrap(ctx, w.st, w.cell)
	switch {
	case errors.Is(err, catalog.ErrCorrupt):
		return nil, false, fmt.Errorf("decode %s: %w", bkey, err)
	case err == nil:
		if len(boot.GetMembers()) == 0 {
			return nil, false, fmt.Errorf("%s lists no members", bkey)
		}
		return boot.GetMembers(), false, nil
	case !errors.Is(err, topo.ErrNotFound):
		return nil, false, fmt.Errorf("get %s: %w", bkey, err)
	}

	c, _, err := catalog.GetCell(ctx, w.st, w.cell)
	if errors.Is(err, topo.ErrNotFound) {
		if !w.loggedNoCell {
			w.log.Info(fmt.Sprintf("waiting for cell %s to be created in the control plane", w.cell))
			w.loggedNoCell = true
		}
		return nil, true, nil
	}
	if errors.Is(err, catalog.ErrCorrupt) {
		return nil, false, fmt.Errorf("decode %s: %w", topo.CellKey(w.cell), err)
	}
	if err != nil {
		return nil, false, fmt.Errorf("get %s: %w", topo.CellKey(w.cell), err)
	}
	expected := int(c.GetExpectedMembers())
	if expected == 0 {
		expected = DefaultExpectedMembers
	}

	nodes, err := RegisteredMembers(ctx, w.st, w.cell)
	if err != nil {
		return nil, false, err
	}
	if len(nodes) < expected {
		if w.loggedMembers != len(nodes) {
			w.log.Info("waiting for the cell's nodes to register", "expected_members", expected, "registered", len(nodes))
			w.loggedMembers = len(nodes)
		}
		return nil, true, nil
	}
	rec := &cpv1.CellBootstrap{CreateTime: timestamppb.Now()}
	for _, n := range nodes[:expected] {
		rec.Members = append(rec.Members, n.Node)
	}
	b, err := proto.Marshal(rec)
	if err != nil {
		return nil, false, err
	}
	_, err = w.st.Txn(ctx, []topo.Cond{topo.IfAbsent(bkey)}, []topo.Op{topo.Put(bkey, b)})
	switch {
	case err == nil:
		w.log.Info("wrote the cell bootstrap record", "members", memberIDs(rec.Members))
	case errors.Is(err, topo.ErrConditionFailed):
		// Another node wrote it first; read theirs.
	default:
		return nil, false, fmt.Errorf("create %s: %w", bkey, err)
	}
	return nil, false, nil
}

// RegisteredNode is a node record with the revision that created its key.
type RegisteredNode struct {
	Node    *cpv1.Node
	Created topo.Version
}

// RegisteredMembers lists the member nodes (role MEMBER or unspecified)
// registered under cells/<cell>/nodes/, oldest registration first (by
// creation revision, then id). Records that do not decode are skipped.
func RegisteredMembers(ctx context.Context, st topo.Store, cell string) ([]RegisteredNode, error) {
	recs, _, err := catalog.ListNodes(ctx, st, cell)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", topo.CellNodesPrefix(cell), err)
	}
	var out []RegisteredNode
	for _, rec := range recs {
		n := rec.Value
		if n.GetId() == "" {
			continue
		}
		if r := n.GetRole(); r != cpv1.NodeRole_NODE_ROLE_MEMBER && r != cpv1.NodeRole_NODE_ROLE_UNSPECIFIED {
			continue
		}
		out = append(out, RegisteredNode{Node: n, Created: rec.Created})
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Created != out[j].Created {
			return out[i].Created < out[j].Created
		}
		return out[i].Node.GetId() < out[j].Node.GetId()
	})
	return out, nil
}

// CellFormed reports whether cell has been formed: it has (or had) a
// leader that published its authority (cells/<c>/formed) or its leader
// key. A node of the bootstrap record that has no Raft state must then
// join as a new member instead of bootstrapping (H1). The formed record
// is written before the first authority of each term (ensureFormed), so
// a cell that acknowledged a write is always formed; the leader
// key covers cells formed before the record existed.
func CellFormed(ctx context.Context, st topo.Store, cell string) (bool, error) {
	for _, key := range []string{topo.CellFormedKey(cell), topo.CellLeaderKey(cell)} {
		_, err := st.Get(ctx, key)
		switch {
		case err == nil:
			return true, nil
		case !errors.Is(err, topo.ErrNotFound):
			return false, fmt.Errorf("registry: get %s: %w", key, err)
		}
	}
	return false, nil
}

// Contains reports whether members lists node id.
func Contains(members []*cpv1.Node, id string) bool {
	for _, m := range members {
		if m.GetId() == id {
			return true
		}
	}
	return false
}

func memberIDs(ms []*cpv1.Node) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.GetId()
	}
	return ids
}
