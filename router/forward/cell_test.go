package forward

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/celltest"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

const cellTenant = "acme"

// TestForwardCell runs the forwarding scenarios through a router in front
// of one real 3-node cell (starting the cell is the slow part). The
// subtests run in order; the last one kills the leader.
func TestForwardCell(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a 3-node cell; skipped with -short")
	}
	ctx := testutil.Context(t, 90*time.Second)
	nodes := celltest.StartCell(t, 3)
	leader := celltest.WaitLeader(t, nodes)
	var follower *cells.Node
	var addrs []string
	for _, n := range nodes {
		addrs = append(addrs, n.GRPCAddr())
		if n != leader && follower == nil {
			follower = n
		}
	}
	if _, err := cellv1.NewCellServiceClient(mustDial(t, leader.GRPCAddr())).SetTenant(ctx, &cellv1.SetTenantRequest{
		Tenant: cellTenant, Role: cellv1.Role_ROLE_OWNER, Epoch: 1, RequestId: "own-" + cellTenant,
	}); err != nil {
		t.Fatalf("SetTenant: %v", err)
	}

	res := newResolver()
	good := Target{Cell: "cell-1", Epoch: 1, LeaderAddr: leader.GRPCAddr(), Members: addrs}
	res.set(cellTenant, good)
	cfg := testConfig()
	cfg.FailoverHold = 20 * time.Second // ride out the leader change below
	client, fwd, _ := startRouter(t, cfg, res)
	tctx := tenantmd.Outgoing(ctx, cellTenant, 0)

	appendText := func(ctx context.Context, id, text, reqID string) (*contextv1.AppendResponse, error) {
		return client.Append(ctx, &contextv1.AppendRequest{
			ContextId: id, RequestId: reqID,
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: text}}},
		})
	}

	t.Run("create, append, read, watch", func(t *testing.T) {
		if _, err := client.CreateContext(tctx, &contextv1.CreateContextRequest{ContextId: "chat", RequestId: "create-chat"}); err != nil {
			t.Fatalf("CreateContext: %v", err)
		}
		resp, err := appendText(tctx, "chat", "hello", "append-hello")
		if err != nil || resp.GetFirstSeq() != 1 {
			t.Fatalf("Append = %v, %v", resp, err)
		}
		read, err := client.Read(tctx, &contextv1.ReadRequest{ContextId: "chat"})
		if err != nil || len(read.GetEntries()) != 1 || read.GetEntries()[0].GetText() != "hello" {
			t.Fatalf("Read = %v, %v", read, err)
		}

		wctx, cancel := context.WithCancel(tctx)
		defer cancel()
		watch, err := client.Watch(wctx, &contextv1.WatchRequest{ContextId: "chat"})
		if err != nil {
			t.Fatal(err)
		}
		got, err := watch.Recv()
		if err != nil || len(got.GetEntries()) == 0 || got.GetEntries()[0].GetText() != "hello" {
			t.Fatalf("first Watch batch = %v, %v", got, err)
		}
		if _, err := appendText(tctx, "chat", "live", "append-live"); err != nil {
			t.Fatal(err)
		}
		got, err = watch.Recv()
		if err != nil || len(got.GetEntries()) == 0 || got.GetEntries()[0].GetText() != "live" {
			t.Fatalf("live Watch batch = %v, %v", got, err)
		}
	})

	t.Run("stale read hint goes to members", func(t *testing.T) {
		sctx := tenantmd.Outgoing(ctx, cellTenant, 0)
		sctx = contextWithStale(sctx)
		// Members may lag: poll until a stale read (spread over the
		// members) sees the entries.
		testutil.Eventually(t, 10*time.Second, func() error {
			for range 3 {
				read, err := client.Read(sctx, &contextv1.ReadRequest{ContextId: "chat",
					ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}})
				if err != nil {
					return err
				}
				if len(read.GetEntries()) == 0 {
					return fmt.Errorf("stale Read = %v", read)
				}
			}
			return nil
		})
	})

	t.Run("watch ends at the client deadline", func(t *testing.T) {
		dctx, cancel := context.WithTimeout(tctx, 300*time.Millisecond)
		defer cancel()
		watch, err := client.Watch(dctx, &contextv1.WatchRequest{ContextId: "chat", FromSeq: 100})
		if err != nil {
			t.Fatal(err)
		}
		for {
			_, err := watch.Recv()
			if err == nil {
				continue
			}
			if status.Code(err) != codes.DeadlineExceeded {
				t.Fatalf("blocked Watch ended with %v, want DEADLINE_EXCEEDED", err)
			}
			break
		}
	})

	t.Run("NOT_LEADER from a follower is retried at the leader", func(t *testing.T) {
		before := counterValue(t, fwd.m.retries.WithLabelValues(retryNotLeader))
		res.set(cellTenant, Target{Cell: "cell-x", Epoch: 1, LeaderAddr: follower.GRPCAddr(), Members: addrs})
		defer res.set(cellTenant, good)
		if _, err := appendText(tctx, "chat", "via follower", "append-follower"); err != nil {
			t.Fatalf("Append with a follower as leader: %v", err)
		}
		if after := counterValue(t, fwd.m.retries.WithLabelValues(retryNotLeader)); after <= before {
			t.Fatalf("no NOT_LEADER retry counted (%v → %v)", before, after)
		}
	})

	t.Run("STALE_EPOCH refreshes once and retries", func(t *testing.T) {
		stale := good
		stale.Epoch = 2
		res.set(cellTenant, stale)
		res.mu.Lock()
		res.refreshTo[cellTenant] = good
		res.mu.Unlock()
		before := res.refreshCount()
		if _, err := appendText(tctx, "chat", "after refresh", "append-refresh"); err != nil {
			t.Fatalf("Append at a stale epoch: %v", err)
		}
		if n := res.refreshCount() - before; n != 1 {
			t.Fatalf("Refresh called %d times, want 1", n)
		}
	})

	t.Run("dead address first, then the next member", func(t *testing.T) {
		dead := deadAddr(t)
		res.set(cellTenant, Target{Cell: "cell-1", Epoch: 1, LeaderAddr: dead, Members: append([]string{dead}, addrs...)})
		defer res.set(cellTenant, good)
		if _, err := appendText(tctx, "chat", "past a dead member", "append-dead"); err != nil {
			t.Fatalf("Append with a dead address first: %v", err)
		}
	})

	t.Run("leader killed under sequential appends", func(t *testing.T) {
		if _, err := client.CreateContext(tctx, &contextv1.CreateContextRequest{ContextId: "failover", RequestId: "create-failover"}); err != nil {
			t.Fatal(err)
		}
		const total = 40
		var sent atomic.Int32
		errc := make(chan error, 1)
		go func() {
			for i := range total {
				actx, cancel := context.WithTimeout(tctx, 25*time.Second)
				_, err := appendText(actx, "failover", fmt.Sprintf("e%02d", i), fmt.Sprintf("failover-%02d", i))
				cancel()
				if err != nil {
					errc <- fmt.Errorf("append %d: %w", i, err)
					return
				}
				sent.Add(1)
			}
			errc <- nil
		}()
		testutil.Eventually(t, 20*time.Second, func() error {
			if sent.Load() < 5 {
				return errors.New("waiting for appends before the kill")
			}
			return nil
		})
		if err := leader.Close(); err != nil {
			t.Fatalf("close leader: %v", err)
		}
		select {
		case err := <-errc:
			if err != nil {
				t.Fatalf("an append failed across the leader change: %v", err)
			}
		case <-ctx.Done():
			t.Fatal("appends did not finish")
		}
		rctx := tenantmd.Outgoing(ctx, cellTenant, 0)
		var texts []string
		from := uint64(1)
		for {
			read, err := client.Read(rctx, &contextv1.ReadRequest{ContextId: "failover", Start: &contextv1.ReadRequest_FromSeq{FromSeq: from}})
			if err != nil {
				t.Fatalf("read back: %v", err)
			}
			for _, e := range read.GetEntries() {
				texts = append(texts, e.GetText())
			}
			if len(read.GetEntries()) == 0 || read.GetNextSeq() > read.GetLastSeq() {
				break
			}
			from = read.GetNextSeq()
		}
		if len(texts) != total {
			t.Fatalf("read back %d entries, want %d (each append exactly once): %v", len(texts), total, texts)
		}
		for i, text := range texts {
			if want := fmt.Sprintf("e%02d", i); text != want {
				t.Fatalf("entry %d = %q, want %q (each append exactly once, in order)", i+1, text, want)
			}
		}
		t.Logf("retries: not_leader=%v unavailable=%v",
			counterValue(t, fwd.m.retries.WithLabelValues(retryNotLeader)), counterValue(t, fwd.m.retries.WithLabelValues(retryUnavailable)))
	})
}
