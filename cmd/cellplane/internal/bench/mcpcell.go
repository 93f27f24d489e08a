package bench

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
)

// publishedCell is the set-up the router and mcp scenarios share: a
// single-member embedded etcd (fsync off: no etcd write is measured), a
// store on it, and a 3-node cell whose records and tenant "bench" are
// published in it (publishCell).
type publishedCell struct {
	etcd         *etcdserver.Server
	st           topo.Store
	cell         *Cell
	etcdStartSec float64
	cellStartSec float64
}

// startPublishedCell starts etcd under root/etcd and the cell under
// root/cell, and publishes the cell. On error everything started is
// stopped.
func startPublishedCell(ctx context.Context, root string, logger *slog.Logger, p progress) (_ *publishedCell, err error) {
	pc := &publishedCell{}
	defer func() {
		if err != nil {
			pc.close(p)
		}
	}()
	t0 := time.Now()
	if pc.etcd, err = startSingleEtcd(ctx, filepath.Join(root, "etcd"), PlacementOptions{UnsafeNoFsync: true, Logger: logger}); err != nil {
		return nil, err
	}
	ecfg := etcdtopo.DefaultConfig()
	ecfg.Endpoints = pc.etcd.Endpoints()
	if pc.st, err = etcdtopo.Dial(ctx, ecfg); err != nil {
		return nil, fmt.Errorf("bench: dial etcd: %w", err)
	}
	pc.etcdStartSec = time.Since(t0).Seconds()

	p.printf("starting a 3-node cell")
	t0 = time.Now()
	if pc.cell, err = StartCell(ctx, filepath.Join(root, "cell"), logger); err != nil {
		return nil, err
	}
	pc.cellStartSec = time.Since(t0).Seconds()
	p.printf("  cell ready in %.2f s (leader %s)", pc.cellStartSec, pc.cell.Leader().GRPCAddr())
	if err := publishCell(ctx, pc.st, pc.cell); err != nil {
		return nil, err
	}
	return pc, nil
}

// close stops the cell, then the store and etcd (idempotent).
func (pc *publishedCell) close(p progress) {
	if pc.cell != nil {
		if err := pc.cell.Close(); err != nil {
			p.printf("warning: closing the cell: %v", err)
		}
		pc.cell = nil
	}
	if pc.st != nil {
		_ = pc.st.Close()
		pc.st = nil
	}
	if pc.etcd != nil {
		_ = pc.etcd.Close()
		pc.etcd = nil
	}
}
