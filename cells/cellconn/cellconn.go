// Package cellconn dials a cell by name: a gRPC connection whose address
// list follows the cell's live members in the control plane's registry
// (cells/<c>/nodes/, role MEMBER), balanced round robin. Any member serves
// a call (followers forward writes and consistent reads to their leader),
// so a stand-alone MCP worker pool needs nothing more to reach its cell.
//
//	conn, err := cellconn.Dial(ctx, registry, "use1-a", dial.DefaultConfig(), log)
//	defer conn.Close()
//	cs := contextv1.NewContextServiceClient(conn)
package cellconn

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/resolver"
	"google.golang.org/grpc/resolver/manual"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/retry"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Conn is a connection to a cell.
type Conn struct {
	*grpc.ClientConn
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu    sync.Mutex
	addrs []string
}

// Dial connects to cell: it reads the cell's members now (failing if the
// registry cannot be read within ctx), then follows them with a watch.
// The connection is opened as dc says, balanced round robin over the
// members.
func Dial(ctx context.Context, st topo.Store, cell string, dc dial.Config, log *slog.Logger) (*Conn, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var id [8]byte
	_, _ = rand.Read(id[:])
	r := manual.NewBuilderWithScheme("cellplane-cell-" + hex.EncodeToString(id[:]))
	addrs, rev, err := members(ctx, st, cell)
	if err != nil {
		return nil, fmt.Errorf("cellconn: members of cell %s: %w", cell, err)
	}
	r.InitialState(state(addrs))
	dc.ServiceConfig = `{"loadBalancingConfig":[{"round_robin":{}}]}`
	cc, err := dial.New(r.Scheme()+":///"+cell, dc.With(grpc.WithResolvers(r)))
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	c := &Conn{ClientConn: cc, cancel: cancel, addrs: addrs}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		c.follow(wctx, st, cell, rev, r, log)
	}()
	return c, nil
}

// Members returns the member addresses the connection currently uses.
func (c *Conn) Members() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.addrs)
}

// Close stops following the registry and closes the connection.
func (c *Conn) Close() error {
	c.cancel()
	c.wg.Wait()
	return c.ClientConn.Close()
}

// follow re-reads the members on every change under cells/<cell>/nodes/
// and hands the new list to the resolver; a broken watch is re-listed.
func (c *Conn) follow(ctx context.Context, st topo.Store, cell string, rev topo.Revision, r *manual.Resolver, log *slog.Logger) {
	backoff := retry.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}.Backoff()
	for ctx.Err() == nil {
		// Wait for the next change (or a broken watch), then re-list.
		wctx, stop := context.WithCancel(ctx)
		<-st.Watch(wctx, topo.CellNodesPrefix(cell), rev+1)
		stop()
		if ctx.Err() != nil {
			return
		}
		addrs, newRev, err := members(ctx, st, cell)
		if err != nil {
			wait := backoff.Next()
			log.Warn("cellconn: reading the cell's members failed; keeping the last list", "cell", cell, "err", err, "retry_in", wait)
			if retry.Sleep(ctx, wait) != nil {
				return
			}
			continue
		}
		backoff.Reset()
		rev = newRev
		c.mu.Lock()
		same := slices.Equal(addrs, c.addrs)
		c.addrs = addrs
		c.mu.Unlock()
		if !same && len(addrs) > 0 {
			// An empty list would fail every call at once; keep dialing
			// the last members until the registry names new ones.
			r.UpdateState(state(addrs))
			log.Info("cell members changed", "cell", cell, "members", addrs)
		}
	}
}

// members lists the cell's live Raft members' gRPC addresses, sorted.
func members(ctx context.Context, st topo.Store, cell string) ([]string, topo.Revision, error) {
	nodes, rev, err := catalog.ListNodes(ctx, st, cell)
	if err != nil {
		return nil, 0, err
	}
	var addrs []string
	for _, n := range nodes {
		if n.Value.GetRole() == cpv1.NodeRole_NODE_ROLE_MEMBER && n.Value.GetGrpcAddr() != "" {
			addrs = append(addrs, n.Value.GetGrpcAddr())
		}
	}
	slices.Sort(addrs)
	return addrs, rev, nil
}

func state(addrs []string) resolver.State {
	s := resolver.State{}
	for _, a := range addrs {
		s.Addresses = append(s.Addresses, resolver.Address{Addr: a})
	}
	return s
}
