package chaos

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/faultnet"
	"github.com/cellplane/cellplane/internal/histcheck"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// ack is one acknowledged append: which cell acknowledged it, at which
// seq, and the interval of the attempt that succeeded (the
// acknowledgement happened inside it); first is the call of its first
// attempt (the operation's start in the history).
type ack struct {
	value       string
	cell        string
	client      int
	seq         uint64
	call, done  time.Time
	first       time.Time
	refusedCall time.Time // a refusal: its only attempt's call
}

// ackLog records acknowledgements and refusals from every writer.
type ackLog struct {
	mu      sync.Mutex
	acks    []ack
	refused map[string]error // values whose (only) attempt failed
	calls   map[string]time.Time
}

func (a *ackLog) add(k ack) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.acks = append(a.acks, k)
}

func (a *ackLog) refuse(value string, call time.Time, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.refused[value] = err
	a.calls[value] = call
}

// history is the writes the new owner's state holds, for
// internal/histcheck: the acknowledged appends it holds (the old
// owner's, replicated before the cut, and the new owner's), and the
// refused appends it holds as "maybe"s (an attempt that timed out was
// applied). A refused append it does not hold was not applied (appends
// are never undone), so it constrains nothing and is left out (many
// "maybe"s make porcupine's search explode). The old owner's
// acknowledged appends it lost are not in it: the failover reports them
// (the RPO), which step 3 checks.
func (a *ackLog) history(onNew map[string]bool) []porcupine.Operation {
	a.mu.Lock()
	defer a.mu.Unlock()
	h := histcheck.New()
	for _, k := range a.acks {
		if onNew[k.value] {
			h.Append(k.client, "chat", k.value, k.first, k.done, k.seq, histcheck.OK)
		}
	}
	for v := range a.refused {
		if onNew[v] {
			h.Append(0, "chat", v, a.calls[v], a.calls[v], 0, histcheck.Ambiguous)
		}
	}
	return h.Operations()
}

// isolatedCell starts a one-node cell whose every link to the rest of the
// platform goes through proxies: its registry (etcd) client, and the gRPC
// address it advertises (routers, the standby's sink and the controller
// reach it there). A client inside the region reaches the node directly.
// Cutting both proxies is a partition of the region from the rest.
func isolatedCell(t *testing.T, p *harness, region, cell string) (*cells.Node, []*faultnet.Proxy) {
	t.Helper()
	etcd, err := url.Parse(p.EtcdEndpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	etcdProxy := faultnet.Start(t, etcd.Host)
	var grpcProxy *faultnet.Proxy
	nodes := p.createCell(t, platform.CellSpec{Region: region, ID: cell, Nodes: 1,
		EtcdEndpoints: []string{etcd.Scheme + "://" + etcdProxy.Addr()},
		Configure: func(c *cells.Config) {
			grpcProxy = faultnet.Start(t, c.GRPCAddr)
			c.Store.GRPCAdvertise = grpcProxy.Addr()
			c.AuthorityTTL, c.AuthorityDriftMargin = 2*time.Second, 500*time.Millisecond
		}})
	// The node stops before its proxies close (cleanups run last first).
	t.Cleanup(func() { p.Cell(cell).Nodes()[0].Stop() })
	return nodes[0], []*faultnet.Proxy{etcdProxy, grpcProxy}
}

// TestRegionPartitionPromotesTheStandby cuts the owner's region off from
// etcd, the router and the standby while a client inside the region keeps
// writing to the owner directly and clients outside write through the
// router. The automatic policy promotes the standby. The acknowledgement
// log must show the old owner's last acknowledgement before the new
// owner's first (never two cells acknowledging at once); once the region
// heals, the old owner is FENCED, refuses writes and reports its tseq; the
// RPO the failover reports is exactly the old owner's writes the standby
// never received, every acknowledged one of them among them, and nothing
// acknowledged after the promotion is lost.
func TestRegionPartitionPromotesTheStandby(t *testing.T) {
	p := newPlatform(t, fastMoves, func(c *controller.Config) {
		c.Failover.PollInterval = 20 * time.Millisecond
		c.Failover.LeaseMargin = 300 * time.Millisecond
		c.AutoPromote.Enabled = true
		c.AutoPromote.UnhealthyFor = time.Second
		c.AutoPromote.Interval = 100 * time.Millisecond
		c.AutoPromote.ResumeGrace, c.AutoPromote.BlindAfter = time.Second, 500*time.Millisecond
	})
	east, proxies := isolatedCell(t, p, "us-east", "east-a")
	p.createCell(t, platform.CellSpec{Region: "eu-west", ID: "west-a", Nodes: 1})
	ctx := testutil.Context(t, 3*time.Minute)
	p.createTenant(t, ctx, "acme", "us-east", "east-a", "eu-west")
	p.waitStandby(t, ctx, "acme")

	log := &ackLog{refused: map[string]error{}, calls: map[string]time.Time{}}
	// The writer inside the region: straight to the owner's node, one
	// attempt per value (a refusal is recorded, not retried).
	inside := contextv1.NewContextServiceClient(p.dialNode(t, east.GRPCAddr(), "router.chaos-router"))
	ictx, stopInside := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ictx.Err() == nil; i++ {
			v := fmt.Sprintf("in-%d", i)
			call := time.Now()
			cctx, cancel := context.WithTimeout(tenantmd.Outgoing(ictx, "acme", 0), 2*time.Second)
			resp, err := inside.Append(cctx, &contextv1.AppendRequest{ContextId: "chat", RequestId: v,
				Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: v}}}})
			cancel()
			if err == nil {
				log.add(ack{value: v, cell: "east-a", seq: resp.GetFirstSeq(), call: call, first: call, done: time.Now()})
			} else {
				log.refuse(v, call, err)
			}
			if err != nil && ictx.Err() == nil {
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()
	testutil.Eventually(t, 10*time.Second, func() error {
		log.mu.Lock()
		defer log.mu.Unlock()
		if len(log.acks) < 50 {
			return fmt.Errorf("%d acks", len(log.acks))
		}
		return nil
	})

	// Partition. Writers outside the region start now, through the router:
	// every acknowledgement they get comes from the promoted standby.
	if r, err := p.cp.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "acme"}); err == nil {
		t.Logf("before the cut: %v, replication %v", r.GetTenant(), r.GetReplication())
	}
	cut := time.Now()
	for _, px := range proxies {
		px.Cut()
	}
	octx, stopOutside := context.WithCancel(ctx)
	for c := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; octx.Err() == nil; i++ {
				v := fmt.Sprintf("out%d-%d", c, i)
				first := time.Now()
				for {
					if octx.Err() != nil {
						log.refuse(v, first, octx.Err()) // pending at the end: a "maybe"
						break
					}
					call := time.Now()
					cctx, cancel := context.WithTimeout(tenantmd.Outgoing(octx, "acme", 0), 5*time.Second)
					resp, err := p.data.Append(cctx, &contextv1.AppendRequest{ContextId: "chat", RequestId: v,
						Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: v}}}})
					cancel()
					if err == nil {
						log.add(ack{value: v, cell: "west-a", client: c + 1, seq: resp.GetFirstSeq(), call: call, first: first, done: time.Now()})
						break
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
		}()
	}

	// The policy promotes west-a.
	var fo *cpv1.Failover
	testutil.Eventually(t, 60*time.Second, func() error {
		r, err := p.cp.ListFailovers(ctx, &cpv1.ListFailoversRequest{Tenant: "acme"})
		if err != nil {
			return err
		}
		for _, f := range r.GetFailovers() {
			if f.GetKind() == cpv1.FailoverKind_FAILOVER_KIND_PROMOTE {
				fo = f
				return nil
			}
		}
		return errors.New("no promotion yet")
	})
	fo = p.waitFailover(t, ctx, fo.GetId(), 60*time.Second, cpv1.FailoverState_FAILOVER_STATE_AWAITING_OLD_OWNER, cpv1.FailoverState_FAILOVER_STATE_DONE)
	promotedAt := time.Now()
	testutil.Eventually(t, 20*time.Second, func() error { // the new owner acknowledges
		log.mu.Lock()
		defer log.mu.Unlock()
		for _, a := range log.acks {
			if a.cell == "west-a" {
				return nil
			}
		}
		return errors.New("no acknowledgement from the new owner yet")
	})
	t.Logf("promotion %s (trigger %q): recorded state %s, time to promote %v, partition → promoted %v",
		fo.GetId(), fo.GetTrigger(), fo.GetState(), fo.GetTimeToPromote().AsDuration(), promotedAt.Sub(cut).Round(time.Millisecond))

	// Heal: the old owner learns it is fenced and reports.
	for _, px := range proxies {
		px.Heal()
	}
	fo = p.waitFailover(t, ctx, fo.GetId(), 60*time.Second, cpv1.FailoverState_FAILOVER_STATE_DONE)
	stopInside()
	stopOutside()
	wg.Wait()

	// 1. At most one cell acknowledged at any instant.
	var lastEast, firstWest ack
	for _, a := range log.acks {
		switch a.cell {
		case "east-a":
			if a.done.After(lastEast.done) {
				lastEast = a
			}
		case "west-a":
			if firstWest.call.IsZero() || a.call.Before(firstWest.call) {
				firstWest = a
			}
		}
	}
	if !lastEast.done.Before(firstWest.call) {
		t.Errorf("two cells acknowledged at once: east-a acknowledged %s until %v, west-a acknowledged %s from %v",
			lastEast.value, lastEast.done, firstWest.value, firstWest.call)
	}
	t.Logf("last east-a ack %v after the cut; first west-a ack attempt %v after the cut",
		lastEast.done.Sub(cut).Round(time.Millisecond), firstWest.call.Sub(cut).Round(time.Millisecond))

	// 2. The old owner is fenced and refuses writes.
	if r := role(east.Store(), "acme"); r != cellv1.Role_ROLE_FENCED {
		t.Errorf("old owner's role after healing: %s", r)
	}
	_, err := inside.Append(tenantmd.Outgoing(ctx, "acme", 0), &contextv1.AppendRequest{ContextId: "chat",
		Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "late"}}}})
	if !errors.Is(rpcerr.FromStatus(err), cperr.ErrWrongCell) {
		t.Errorf("write to the fenced old owner: %v, want WRONG_CELL", err)
	}

	// 3. RPO: the old owner's events after the promoted tseq are exactly
	// the reported ones; each acknowledged write the new owner lacks is
	// among them; the rest of them were refused to the client.
	final, err := readAll(tenantmd.Outgoing(ctx, "acme", 0), p.data)
	if err != nil {
		t.Fatal(err)
	}
	onNew := map[string]bool{}
	for _, v := range splitEntries(final) {
		onNew[v] = true
	}
	// The new owner's history is linearizable and its state holds every
	// write it acknowledged, exactly once, at its seq (histcheck).
	ops := log.history(onNew)
	for _, err := range histcheck.CheckFinal(ops, map[string][]string{"chat": splitEntries(final)}) {
		t.Error(err)
	}
	if err := histcheck.Check(ops, time.Minute); err != nil {
		t.Errorf("the new owner's history: %v (%s)", err, histcheck.Summary(ops))
	}
	oldCell := cellv1.NewCellServiceClient(p.dialNode(t, east.GRPCAddr(), "operator.admin"))
	beyond := map[string]bool{}
	var events uint64
	for after := fo.GetPromotedTseq(); ; {
		lc, err := oldCell.ListChanges(ctx, &cellv1.ListChangesRequest{Tenant: "acme", AfterTseq: after, Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		for _, ev := range lc.GetEvents() {
			if ev.GetTseq() > fo.GetOldOwnerTseq() {
				break // the fence itself
			}
			events++
			if ev.GetCommand().GetAppend() != nil {
				beyond[ev.GetCommand().GetRequestId()] = true
			}
			after = ev.GetTseq()
		}
		if len(lc.GetEvents()) < 1000 || after >= fo.GetOldOwnerTseq() {
			break
		}
	}
	var ackedLost []string
	for _, a := range log.acks {
		if !onNew[a.value] {
			ackedLost = append(ackedLost, a.value)
			if a.cell != "east-a" || !beyond[a.value] {
				t.Errorf("acknowledged %s (by %s) is lost and not in the old owner's reported events", a.value, a.cell)
			}
		}
	}
	if fo.GetLostEvents() != events || events != uint64(len(beyond)) || !fo.GetOldOwnerReported() {
		t.Errorf("failover reports %d lost events (reported=%v); the old owner holds %d events (%d appends) in (%d, %d]",
			fo.GetLostEvents(), fo.GetOldOwnerReported(), events, len(beyond), fo.GetPromotedTseq(), fo.GetOldOwnerTseq())
	}
	for v := range beyond {
		if onNew[v] {
			continue // refused to the client, retried elsewhere: not possible here (one attempt)
		}
		lost := false
		for _, a := range ackedLost {
			lost = lost || a == v
		}
		if !lost {
			if _, refused := log.refused[v]; !refused {
				t.Errorf("%s is on the old owner beyond the standby but was neither acknowledged nor refused", v)
			}
		}
	}
	t.Logf("RPO reported: %d events; acknowledged writes lost: %d; applied by the old owner but refused to the client: %d",
		fo.GetLostEvents(), len(ackedLost), len(beyond)-len(ackedLost))
}
