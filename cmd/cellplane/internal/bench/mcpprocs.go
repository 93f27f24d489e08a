package bench

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/tenantmd"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// runMCPProcesses is RunMCP's per-process mode: the cell (3 × `cellplane
// cell --insecure`, their Node records published without an HTTP
// address), the MCP worker (`cellplane worker`) and the router
// (`cellplane router --insecure --auth none`) each run as processes;
// this process holds etcd (fsync off) and generates the load.
func runMCPProcesses(ctx context.Context, opts MCPOptions, root string, res *MCPResults, p progress) error {
	bin := opts.WorkerBinary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: the cellplane binary: %w", err)
		}
		bin = exe
	}
	opts.WorkerBinary, opts.InProcessWorker = bin, false
	res.Mode = "processes"
	base, err := startProcBase(ctx, root, bin, opts.Logger, p)
	if err != nil {
		return err
	}
	defer base.close()
	res.EtcdStartSec, res.CellStartSec = base.etcdStartSec, base.cellStartSec
	etcd, st, env, cell, termStart := base.etcd, base.st, base.env, base.cell, base.termStart
	if err := hideProcMemberHTTP(ctx, st, cell); err != nil {
		return err
	}

	p.printf("starting the MCP worker")
	w, err := startMCPWorker(ctx, st, etcd.Endpoints(), routerBenchCell, opts, p)
	if err != nil {
		return err
	}
	defer func() {
		if err := w.stop(); err != nil {
			p.printf("warning: stopping the worker: %v", err)
		}
	}()
	res.WorkerCPUSource = w.cpuSource
	rt, err := startRouterProcess(ctx, env, etcd.Endpoints(), RouterOptions{Logger: opts.Logger}, p)
	if err != nil {
		return err
	}
	defer rt.close()
	res.Members = append(res.Members, fmt.Sprintf("%s: pid %d", rt.proc.name, rt.proc.pid()))
	for _, c := range cell.procs {
		res.Members = append(res.Members, fmt.Sprintf("%s: pid %d", c.name, c.pid()))
	}

	tctx := metadata.AppendToOutgoingContext(ctx, tenantmd.TenantKey, benchTenant)
	ids := make([]string, opts.Concurrency)
	for i := range ids {
		ids[i] = fmt.Sprintf("mcp-bench-%03d", i)
	}
	if err := prefillContexts(tctx, contextv1.NewContextServiceClient(cell.conns[cell.leader]), ids, opts.Prefill, opts.EntrySize); err != nil {
		return err
	}
	endpoints := map[string]string{
		pathDirect: "http://" + w.addr + "/t/" + benchTenant + "/mcp",
		pathRouter: "http://" + rt.httpAddr + "/t/" + benchTenant + "/mcp",
	}
	// The router learns the worker from the registry: wait until a call
	// through it is served.
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err = waitChildren(wctx, children{rt.proc}, func() error {
		m, err := connectMCP(wctx, endpoints[pathRouter], 1)
		if err != nil {
			return err
		}
		defer m.close()
		return callTool(wctx, m.sessions[0], toolRead, map[string]any{"context_id": ids[0], "tail": 1})
	})
	if err != nil {
		return fmt.Errorf("bench: MCP via the router process: %w", err)
	}
	if err := runMCPSteps(ctx, opts, endpoints, ids, w, rt.proc, res, p); err != nil {
		return err
	}
	if term, err := procCellTerm(ctx, cell); err == nil {
		res.CellElections = term - termStart
	}
	return cell.procs.alive()
}

// hideProcMemberHTTP is hideMemberHTTP for a cell of processes.
func hideProcMemberHTTP(ctx context.Context, st topo.Store, cell *procSystem) error {
	now := timestamppb.Now()
	var ops []topo.Op
	for _, n := range cell.nodes {
		ops = append(ops, topo.Put(topo.CellNodeKey(routerBenchCell, n.id), catalog.Encode(&cpv1.Node{
			Id: n.id, Cell: routerBenchCell, Role: cpv1.NodeRole_NODE_ROLE_MEMBER,
			RaftAddr: n.raft, GrpcAddr: n.grpc, StartTime: now,
		})))
	}
	if _, err := st.Txn(ctx, nil, ops); err != nil {
		return fmt.Errorf("bench: rewrite the node records: %w", err)
	}
	return nil
}
