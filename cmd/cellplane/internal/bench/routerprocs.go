package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/tenantmd"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// runRouterProcesses is RunRouter's per-process mode: the cell runs as 3
// × `cellplane cell --insecure` and the router as `cellplane router
// --insecure --auth none`, each its own process, on the bench's etcd
// (single member, in this process, fsync off: no etcd write is measured);
// this process is the load generator. The router's memory is measured
// first with a router in this process (live heap growth, as in the
// in-process mode), which is then stopped. Each step reports the router
// process's CPU and the cell members' CPU per call.
func runRouterProcesses(ctx context.Context, opts RouterOptions, root string, res *RouterResults, p progress) error {
	bin := opts.Binary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return fmt.Errorf("bench: the cellplane binary: %w", err)
		}
		bin = exe
	}
	res.Mode = "processes"
	base, err := startProcBase(ctx, root, bin, opts.Logger, p)
	if err != nil {
		return err
	}
	defer base.close()
	res.EtcdStartSec, res.CellStartSec = base.etcdStartSec, base.cellStartSec
	etcd, st, env, cell, termStart := base.etcd, base.st, base.env, base.cell, base.termStart

	popts := PlacementOptions{Tenants: opts.Tenants, LoadConcurrency: opts.LoadConcurrency, LoadBatch: etcdtopo.DefaultMaxTxnOps, Logger: opts.Logger}
	p.printf("loading %d placements into etcd", opts.Tenants)
	if res.Bulk, _, err = loadPlacements(ctx, st, popts, p); err != nil {
		return err
	}
	p.result(res.Bulk)

	// The memory figure, from a router in this process.
	mem, err := startBenchRouter(ctx, st, opts, res, p)
	if err != nil {
		return err
	}
	mem.close()

	rt, err := startRouterProcess(ctx, env, etcd.Endpoints(), opts, p)
	if err != nil {
		return err
	}
	defer rt.close()
	res.Members = append(res.Members, fmt.Sprintf("%s: pid %d", rt.proc.name, rt.proc.pid()))
	for _, c := range cell.procs {
		res.Members = append(res.Members, fmt.Sprintf("%s: pid %d", c.name, c.pid()))
	}

	all := []*procSystem{cell, {name: "router", procs: children{rt.proc}}}
	figures := func(path string) (func(bool), func(*Result)) {
		var a, b [3]time.Duration // cell members, router, machine busy minus ours
		var at, bt time.Time
		read := func() ([3]time.Duration, time.Time) {
			ours := processCPU()
			for _, s := range all {
				ours += s.procs.cpu()
			}
			busy, _ := machineCPU()
			return [3]time.Duration{cell.procs.cpu(), rt.proc.cpu(), busy - ours}, time.Now()
		}
		window := func(open bool) {
			if open {
				a, at = read()
			} else {
				b, bt = read()
			}
		}
		fill := func(r *Result) {
			w := bt.Sub(at).Seconds()
			if w <= 0 || r.Ops == 0 {
				return
			}
			r.MemberCPUCores = round3((b[0] - a[0]).Seconds() / w)
			r.MemberCPUPerOpUs = round3(float64((b[0] - a[0]).Microseconds()) / float64(r.Ops))
			r.RouterCPUCores = round3((b[1] - a[1]).Seconds() / w)
			r.RouterCPUPerOpUs = round3(float64((b[1] - a[1]).Microseconds()) / float64(r.Ops))
			r.ForeignCores = round3(max(b[2]-a[2], 0).Seconds() / w)
		}
		return window, fill
	}
	if err := runRouterSteps(ctx, opts, cell.conns[cell.leader], rt, res, p, figures); err != nil {
		return err
	}
	if term, err := procCellTerm(ctx, cell); err == nil {
		res.CellElections = term - termStart
	}
	if err := cell.procs.alive(); err != nil {
		return err
	}
	return nil
}

// procCellTerm returns the leader's Raft term.
func procCellTerm(ctx context.Context, cell *procSystem) (uint64, error) {
	st, err := cellv1.NewCellServiceClient(cell.admin[cell.leader]).GetStatus(ctx, &cellv1.GetStatusRequest{})
	if err != nil {
		return 0, fmt.Errorf("bench: cell status: %w", err)
	}
	return st.GetTerm(), nil
}

// publishProcCell writes what publishCell writes, for a cell of processes.
func publishProcCell(ctx context.Context, st topo.Store, cell *procSystem) error {
	status, err := cellv1.NewCellServiceClient(cell.admin[cell.leader]).GetStatus(ctx, &cellv1.GetStatusRequest{})
	if err != nil {
		return fmt.Errorf("bench: cell status: %w", err)
	}
	now := timestamppb.Now()
	ops := []topo.Op{
		topo.Put(topo.RegionKey(routerBenchRegion), catalog.Encode(&cpv1.Region{Name: routerBenchRegion, CreateTime: now})),
		topo.Put(topo.CellKey(routerBenchCell), catalog.Encode(&cpv1.Cell{
			Id: routerBenchCell, Region: routerBenchRegion, ExpectedMembers: uint32(len(cell.nodes)),
			State: cpv1.CellState_CELL_STATE_ACTIVE, CreateTime: now,
		})),
	}
	for _, n := range cell.nodes {
		ops = append(ops, topo.Put(topo.CellNodeKey(routerBenchCell, n.id), catalog.Encode(&cpv1.Node{
			Id: n.id, Cell: routerBenchCell, Role: cpv1.NodeRole_NODE_ROLE_MEMBER,
			RaftAddr: n.raft, GrpcAddr: n.grpc, HttpAddr: n.http, StartTime: now,
		})))
	}
	leader := cell.nodes[cell.leader]
	ops = append(ops,
		topo.Put(topo.CellLeaderKey(routerBenchCell), catalog.Encode(&cpv1.CellLeader{
			NodeId: leader.id, GrpcAddr: leader.grpc, HttpAddr: leader.http, Term: status.GetTerm(), Since: now,
		})),
		topo.Put(topo.TenantKey(benchTenant), catalog.Encode(benchTenantRecord(now))),
	)
	if _, err := st.Txn(ctx, nil, ops); err != nil {
		return fmt.Errorf("bench: publish the cell: %w", err)
	}
	return nil
}

// startRouterProcess starts `cellplane router --insecure --auth none` on
// the etcd endpoints and waits until its table is loaded (/readyz) and it
// routes a call of tenant "bench".
func startRouterProcess(ctx context.Context, env *procEnv, endpoints []string, opts RouterOptions, p progress) (*benchRouter, error) {
	addrs, err := loopbackAddrs(2)
	if err != nil {
		return nil, err
	}
	c, err := startChild("router", env.bin, "router", "--insecure", "--auth", "none",
		"--etcd-endpoints", strings.Join(endpoints, ","), "--grpc-addr", addrs[0], "--http-addr", addrs[1], "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	b := &benchRouter{proc: c, httpAddr: addrs[1]}
	p.printf("starting a router process (pid %d)", c.pid())
	t0 := time.Now()
	if b.conn, err = dial.New(addrs[0], dial.DefaultConfig()); err != nil {
		b.close()
		return nil, fmt.Errorf("bench: dial the router: %w", err)
	}
	cs := contextv1.NewContextServiceClient(b.conn)
	tctx := metadata.AppendToOutgoingContext(ctx, tenantmd.TenantKey, benchTenant)
	wctx, cancel := context.WithTimeout(tctx, 5*time.Minute)
	defer cancel()
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	err = waitChildren(wctx, children{c}, func() error {
		// Ready: the whole table loaded (/readyz), and a call routed.
		resp, err := hc.Get("http://" + addrs[1] + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("router /readyz: %s", resp.Status)
		}
		_, err = cs.CreateContext(wctx, &contextv1.CreateContextRequest{ContextId: "router-ready", RequestId: "router-ready"})
		if err != nil && Code(err) != codes.AlreadyExists {
			return err
		}
		return nil
	})
	if err != nil {
		b.close()
		return nil, fmt.Errorf("bench: the router process: %w", err)
	}
	p.printf("  router process routing after %.2f s", time.Since(t0).Seconds())
	ccfg := client.DefaultConfig()
	ccfg.Router, ccfg.Tenant = addrs[0], benchTenant
	ccfg.Logger = opts.Logger
	if b.client, err = client.New(ccfg); err != nil {
		b.close()
		return nil, fmt.Errorf("bench: smart client: %w", err)
	}
	return b, nil
}
