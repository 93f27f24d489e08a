package bench

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/tenantmd"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router"
)

// The bench cell's place in the control plane's keyspace.
const (
	routerBenchRegion = "bench-region"
	routerBenchCell   = "bench-cell"
)

// publishCell writes what the control plane and the cell's registry would
// have written for cell: its region, its Cell record, one Node record per
// member, its leader, and the placement of tenant "bench" on it (ACTIVE at
// epoch 1, the epoch StartCell gave it, with a rate limit no step reaches).
func publishCell(ctx context.Context, st topo.Store, cell *Cell) error {
	now := timestamppb.Now()
	ops := []topo.Op{
		topo.Put(topo.RegionKey(routerBenchRegion), catalog.Encode(&cpv1.Region{Name: routerBenchRegion, CreateTime: now})),
		topo.Put(topo.CellKey(routerBenchCell), catalog.Encode(&cpv1.Cell{
			Id: routerBenchCell, Region: routerBenchRegion, ExpectedMembers: uint32(len(cell.nodes)),
			State: cpv1.CellState_CELL_STATE_ACTIVE, CreateTime: now,
		})),
	}
	for _, n := range cell.nodes {
		id := n.Store().Status().NodeID
		ops = append(ops, topo.Put(topo.CellNodeKey(routerBenchCell, id), catalog.Encode(&cpv1.Node{
			Id: id, Cell: routerBenchCell, Role: cpv1.NodeRole_NODE_ROLE_MEMBER,
			RaftAddr: n.RaftAddr(), GrpcAddr: n.GRPCAddr(), HttpAddr: n.HTTPAddr(), StartTime: now,
		})))
	}
	leader := cell.Leader()
	ops = append(ops,
		topo.Put(topo.CellLeaderKey(routerBenchCell), catalog.Encode(&cpv1.CellLeader{
			NodeId: leader.Store().Status().NodeID, GrpcAddr: leader.GRPCAddr(), HttpAddr: leader.HTTPAddr(),
			Term: leader.Store().Status().Term, Since: now,
		})),
		topo.Put(topo.TenantKey(benchTenant), catalog.Encode(benchTenantRecord(now))),
	)
	if _, err := st.Txn(ctx, nil, ops); err != nil {
		return fmt.Errorf("bench: publish the cell: %w", err)
	}
	return nil
}

// benchRouter is a router in this process with its client connections.
type benchRouter struct {
	srv  *router.Server // nil when the router is a process
	proc *child         // the router process, or nil
	// httpAddr is the router process's HTTP address.
	httpAddr string
	conn     *grpc.ClientConn // plain gRPC to the router
	client   *client.Client   // the smart client, resolving through it
	once     sync.Once
}

func (b *benchRouter) close() {
	b.once.Do(func() {
		if b.client != nil {
			_ = b.client.Close()
		}
		if b.conn != nil {
			_ = b.conn.Close()
		}
		if b.srv != nil {
			_ = b.srv.Close()
		}
		if b.proc != nil {
			_ = b.proc.stop(10 * time.Second)
		}
	})
}

// startBenchRouter starts a router on st (auth off: the tenant comes from
// x-cellplane-tenant), waits until its table holds every placement and
// the bench cell's leader, and records the time and the live heap it took.
func startBenchRouter(ctx context.Context, st topo.Store, opts RouterOptions, res *RouterResults, p progress) (_ *benchRouter, err error) {
	grpcLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("bench: listen: %w", err)
	}
	httpLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		grpcLis.Close()
		return nil, fmt.Errorf("bench: listen: %w", err)
	}
	cfg := router.DefaultConfig()
	cfg.Store = st
	cfg.GRPCListener, cfg.HTTPListener = grpcLis, httpLis
	cfg.Auth.Mode = auth.ModeNone
	cfg.Routing.PageSize = opts.PageSize
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = opts.Logger

	p.printf("starting a router (table pages of %d)", opts.PageSize)
	before := liveHeap()
	start := time.Now()
	srv, err := router.Start(ctx, cfg)
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		return nil, fmt.Errorf("bench: start the router: %w", err)
	}
	b := &benchRouter{srv: srv}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	want := opts.Tenants + 1 // the placements and the bench tenant
	wctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	err = poll(wctx, func() error {
		t := srv.Table()
		if !t.Loaded() || t.Len() < want {
			return fmt.Errorf("router table has %d of %d tenants", t.Len(), want)
		}
		if c, ok := t.Cell(routerBenchCell); !ok || c.LeaderGRPC == "" {
			return fmt.Errorf("router table has no leader for cell %s", routerBenchCell)
		}
		return nil
	})
	if err != nil {
		return b, fmt.Errorf("bench: router load: %w", err)
	}
	res.RouterLoadSec = time.Since(start).Seconds()
	after := liveHeap()
	res.TableTenants = srv.Table().Len()
	if after > before {
		res.RouterHeapBytes = after - before
	}
	res.BytesPerTenant = round3(float64(res.RouterHeapBytes) / float64(res.TableTenants))
	p.printf("  router table: %d tenants in %.2f s, live heap +%s (%.0f B per tenant)",
		res.TableTenants, res.RouterLoadSec, mib(res.RouterHeapBytes), res.BytesPerTenant)

	if b.conn, err = dial.New(srv.GRPCAddr(), dial.DefaultConfig()); err != nil {
		return b, fmt.Errorf("bench: dial the router: %w", err)
	}
	ccfg := client.DefaultConfig()
	ccfg.Router, ccfg.Tenant = srv.GRPCAddr(), benchTenant
	ccfg.Logger = opts.Logger
	if b.client, err = client.New(ccfg); err != nil {
		return b, fmt.Errorf("bench: smart client: %w", err)
	}
	return b, nil
}

// benchPath is one way to reach the cell: a ContextService client and the
// context its calls carry (the tenant metadata for plain gRPC; the smart
// client adds its own).
type benchPath struct {
	name string
	cs   contextv1.ContextServiceClient
	ctx  context.Context
}

// contextOps returns, per op (opAppend, opRead), the Op a path runs:
// worker w appends one entrySize entry to, or reads the tail
// (linearizable) of, context ids[w]; every append has its own request id
// (prefix, the path's name, a counter).
func contextOps(ids []string, entrySize int, prefix string) map[string]func(bp benchPath) Op {
	text := string(payload(entrySize))
	var reqs atomic.Uint64
	return map[string]func(bp benchPath) Op{
		opAppend: func(bp benchPath) Op {
			return func(ctx context.Context, w int) error {
				_, err := bp.cs.Append(ctx, &contextv1.AppendRequest{
					ContextId: ids[w],
					Entries:   []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: text}}},
					RequestId: fmt.Sprintf("%s-%s-%d", prefix, bp.name, reqs.Add(1)),
				})
				return err
			}
		},
		opRead: func(bp benchPath) Op {
			return func(ctx context.Context, w int) error {
				_, err := bp.cs.Read(ctx, &contextv1.ReadRequest{
					ContextId:   ids[w],
					Start:       &contextv1.ReadRequest_Tail{Tail: 1},
					ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_LINEARIZABLE},
				})
				return err
			}
		},
	}
}

// runRouterSteps runs opts.Rounds rounds; each round runs an append step
// and a read step through every path, the paths' order rotating from
// round to round so that none always runs first (or after another). It
// fills res.Runs and res.Summary.
//
// figures, when set, gives each step a Load.Window and a function that
// adds the per-process figures to its result (per-process mode).
func runRouterSteps(ctx context.Context, opts RouterOptions, direct *grpc.ClientConn, rt *benchRouter, res *RouterResults, p progress,
	figures func(path string) (func(bool), func(*Result))) error {
	tctx := metadata.AppendToOutgoingContext(ctx, tenantmd.TenantKey, benchTenant)
	paths := map[string]benchPath{
		pathDirect: {pathDirect, contextv1.NewContextServiceClient(direct), tctx},
		pathRouter: {pathRouter, contextv1.NewContextServiceClient(rt.conn), tctx},
		pathClient: {pathClient, rt.client.Context(), ctx},
	}
	// One context per worker: appends contend on the cell's log, not on a
	// context's sequence; reads read the tail of the worker's context.
	ids := make([]string, opts.Concurrency)
	for i := range ids {
		ids[i] = fmt.Sprintf("router-bench-%03d", i)
	}
	if err := createContexts(tctx, paths[pathDirect].cs, ids); err != nil {
		return err
	}
	ops := contextOps(ids, opts.EntrySize, "rb")
	byKey := map[string][]Result{}
	for round := range opts.Rounds {
		for i := range routerPaths {
			bp := paths[routerPaths[(i+round)%len(routerPaths)]]
			for _, op := range routerOps {
				l := Load{
					Name:        fmt.Sprintf("%s %s #%d", bp.name, op, round+1),
					Concurrency: opts.Concurrency,
					Duration:    opts.Duration,
					Warmup:      warmupFor(opts.Duration),
					OpTimeout:   10 * time.Second,
				}
				var fill func(*Result)
				if figures != nil {
					l.Window, fill = figures(bp.name)
				}
				r, err := Run(bp.ctx, l, ops[op](bp))
				if err != nil {
					return fmt.Errorf("bench: %s: %w", l.Name, err)
				}
				if fill != nil {
					fill(&r)
				}
				p.result(r)
				res.Runs = append(res.Runs, r)
				byKey[bp.name+"/"+op] = append(byKey[bp.name+"/"+op], r)
			}
		}
	}
	for _, path := range routerPaths {
		for _, op := range routerOps {
			rs := byKey[path+"/"+op]
			s := PathSummary{
				Path:      path,
				Op:        op,
				P50:       median(rs, func(r Result) float64 { return r.Latency.P50 }),
				P99:       median(rs, func(r Result) float64 { return r.Latency.P99 }),
				OpsPerSec: round3(median(rs, func(r Result) float64 { return r.OpsPerSec })),
			}
			if len(rs) > 0 && rs[0].MemberCPUCores > 0 {
				s.CellCPUPerOpUs = round3(median(rs, func(r Result) float64 { return r.MemberCPUPerOpUs }))
				s.RouterCPUPerOpUs = round3(median(rs, func(r Result) float64 { return r.RouterCPUPerOpUs }))
			}
			for _, r := range rs {
				s.Errors += r.Errors
			}
			res.Summary = append(res.Summary, s)
		}
	}
	return nil
}

// benchTenantRecord is the placement of tenant "bench" on the router
// benchmarks' cell: ACTIVE at epoch 1, limits out of the way.
func benchTenantRecord(now *timestamppb.Timestamp) *cpv1.Tenant {
	return &cpv1.Tenant{
		Id: benchTenant, HomeRegion: routerBenchRegion, Cell: routerBenchCell,
		State: cpv1.TenantState_TENANT_STATE_ACTIVE, Epoch: 1,
		Limits:     &cpv1.TenantLimits{Rate: 1e9, Burst: 1 << 30},
		CreateTime: now,
	}
}
