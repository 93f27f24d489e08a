// Package cellclient is how the control plane calls cells: it finds a
// cell's leader (or any live member) in the registry, keeps one gRPC
// connection per node address, and calls CellService with the error
// contract restored on the way back (rpcerr.FromStatus). Request ids pass
// through ids.Fit, so that one derived from a long tenant id stays valid.
// It implements controller.Cells.
//
//	cc := cellclient.New(st, dial.DefaultConfig(), logger)
//	defer cc.Close()
//	info, err := cc.SetTenant(ctx, "use1-a", &cellv1.SetTenantRequest{
//		Tenant: "acme", Role: cellv1.Role_ROLE_OWNER, Epoch: 1, RequestId: "create-acme.owner",
//	})
package cellclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// Client calls cells. Safe for concurrent use.
type Client struct {
	st    topo.Store
	log   *slog.Logger
	conns *dial.Pool
}

// New returns a client that resolves cells through st and opens its
// connections to cell nodes as dc says.
func New(st topo.Store, dc dial.Config, log *slog.Logger) *Client {
	if log == nil {
		log = slog.Default()
	}
	return &Client{st: st, log: log, conns: dial.NewPool(dc)}
}

// Close closes every connection.
func (c *Client) Close() error {
	return c.conns.Close()
}

// DeleteTenant removes the tenant's data from cell if its guard holds
// there (req.expected_epoch, req.allowed_roles; or req.force); a cell that
// does not know the tenant (already deleted) is success. A guard that does
// not hold is WRONG_CELL (role) or STALE_EPOCH (epoch), and nothing is
// deleted (IsDeleteRefused).
func (c *Client) DeleteTenant(ctx context.Context, cell string, req *cellv1.DeleteTenantRequest) error {
	req = proto.CloneOf(req)
	req.RequestId = ids.Fit(req.GetRequestId())
	err := c.call(ctx, cell, func(cl cellv1.CellServiceClient) error {
		_, err := cl.DeleteTenant(ctx, req)
		return err
	})
	if errors.Is(err, cperr.ErrTenantNotFound) {
		return nil
	}
	return err
}

// call runs fn against the cell's published leader, else against each live
// member in turn (members forward to their leader). NOT_LEADER with a
// leader address is followed once.
func (c *Client) call(ctx context.Context, cell string, fn func(cellv1.CellServiceClient) error) error {
	ci, err := catalog.Cell(ctx, c.st, cell)
	if err != nil {
		return err
	}
	var addrs []string
	if ci.Leader != nil && ci.Leader.GetGrpcAddr() != "" {
		addrs = append(addrs, ci.Leader.GetGrpcAddr())
	}
	for _, n := range ci.Nodes {
		if n.GetGrpcAddr() != "" && (ci.Leader == nil || n.GetGrpcAddr() != ci.Leader.GetGrpcAddr()) {
			addrs = append(addrs, n.GetGrpcAddr())
		}
	}
	if len(addrs) == 0 {
		return cperr.New(cperr.CellUnavailable, "cell %s has no live node registered", cell)
	}
	var lastErr error
	for _, addr := range addrs {
		err := c.callAt(ctx, addr, fn)
		var ce *cperr.Error
		if errors.As(err, &ce) && ce.Reason == cperr.NotLeader && ce.Metadata[cperr.MetaLeader] != "" {
			err = c.callAt(ctx, ce.Metadata[cperr.MetaLeader], fn)
		}
		// Every cell call is a read or carries a request id: the policy
		// lets it try another member after any RetryElsewhere failure.
		if err == nil || retry.ClassOf(err) != retry.RetryElsewhere || ctx.Err() != nil {
			return err
		}
		c.log.Debug("cell call failed; trying another member", "cell", cell, "addr", addr, "err", err)
		lastErr = err
	}
	return fmt.Errorf("cell %s: every member failed: %w", cell, lastErr)
}

func (c *Client) callAt(ctx context.Context, addr string, fn func(cellv1.CellServiceClient) error) error {
	conn, err := c.conn(addr)
	if err != nil {
		// A connection that cannot be made is a transport failure: the
		// call may go to another member.
		return status.Error(codes.Unavailable, err.Error())
	}
	return rpcerr.FromStatus(fn(cellv1.NewCellServiceClient(conn)))
}

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	conn, err := c.conns.Get(addr)
	if err != nil {
		return nil, fmt.Errorf("cellclient: dial %s: %w", addr, err)
	}
	return conn, nil
}
