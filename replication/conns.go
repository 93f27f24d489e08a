package replication

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/cells/cellconn"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/dial"
)

// CellConns connects to cells by name through the registry and keeps one
// connection per cell (it follows the cell's members). Its Connect is a
// Connector.
type CellConns struct {
	reg  topo.Store
	log  *slog.Logger
	dial dial.Config

	mu     sync.Mutex
	conns  map[string]*cellconn.Conn
	closed bool
}

// Flow-control windows of replication connections. A change stream
// crosses regions: gRPC's default 64 KiB starting window (grown by BDP
// probes, which cross the same long link) caps a stream at about a window
// per round trip — 1.3 MB/s at 50 ms — below an owner's write rate. The
// sink bounds what it buffers itself (SinkConfig.ReadAhead).
const (
	StreamWindow = 8 << 20
	ConnWindow   = 32 << 20
)

// NewCellConns returns a connection cache over the registry whose
// connections are opened as dc says; the replication flow-control windows
// are always set.
func NewCellConns(reg topo.Store, dc dial.Config, log *slog.Logger) *CellConns {
	dc = dc.With(grpc.WithInitialWindowSize(StreamWindow), grpc.WithInitialConnWindowSize(ConnWindow))
	return &CellConns{reg: reg, log: log, dial: dc, conns: map[string]*cellconn.Conn{}}
}

// Connect returns the connection to cell, dialing it the first time.
func (c *CellConns) Connect(ctx context.Context, cell string) (grpc.ClientConnInterface, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("replication: connections closed")
	}
	if cc, ok := c.conns[cell]; ok {
		return cc, nil
	}
	cc, err := cellconn.Dial(ctx, c.reg, cell, c.dial, c.log)
	if err != nil {
		return nil, err
	}
	c.conns[cell] = cc
	return cc, nil
}

// Close closes every connection.
func (c *CellConns) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var errs []error
	for cell, cc := range c.conns {
		errs = append(errs, cc.Close())
		delete(c.conns, cell)
	}
	return errors.Join(errs...)
}
