package router_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	routerv1 "github.com/cellplane/cellplane/proto/cellplane/router/v1"
)

// A cutover as a move makes it (cutting_over set, source fenced, target
// made owner, placement flipped with the flag cleared in one write), with
// calls arriving in the middle: through the router and through the smart
// client whose cached route still names the fenced cell. None fails; both
// wait about until the flip and land on the new owner.
func TestCutoverPausesCalls(t *testing.T) {
	p := newPlatform(t, &cpv1.CreateTenantRequest{Id: "acme"})
	ctx := testutil.Context(t, 90*time.Second)
	nodes2 := p.env.CreateCell(t, "us-east", "c2", 1)
	st := p.env.Store(t)
	actx := p.as(ctx, "acme")
	conn := dial(t, p.router.GRPCAddr())
	cs := contextv1.NewContextServiceClient(conn)
	if _, err := cs.CreateContext(actx, &contextv1.CreateContextRequest{ContextId: "before"}); err != nil {
		t.Fatal(err)
	}
	cfg := client.DefaultConfig()
	cfg.Router, cfg.Tenant, cfg.APIKey = p.router.GRPCAddr(), "acme", p.keys["acme"]
	smart, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer smart.Close()
	if _, err := smart.Lookup(ctx); err != nil { // the cached route names c1
		t.Fatal(err)
	}

	placement := func(mut func(*cpv1.Tenant)) {
		t.Helper()
		tn, v, err := catalog.GetTenant(ctx, st, "acme")
		if err != nil {
			t.Fatal(err)
		}
		mut(tn)
		if _, err := st.Update(ctx, topo.TenantKey("acme"), catalog.Encode(tn), v); err != nil {
			t.Fatal(err)
		}
	}
	placement(func(tn *cpv1.Tenant) { tn.CuttingOver = true })
	testutil.Eventually(t, 10*time.Second, func() error {
		lk, err := routerv1.NewRouterServiceClient(conn).Lookup(actx, &routerv1.LookupRequest{})
		if err != nil || !lk.GetCuttingOver() || lk.GetCell() != "c1" {
			return fmt.Errorf("Lookup = %v, %v; want c1 cutting over", lk, err)
		}
		return nil
	})
	cell1 := cellv1.NewCellServiceClient(dial(t, p.nodes[0].GRPCAddr()))
	if _, err := cell1.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_FENCED, Epoch: 2, RequestId: "fence-acme"}); err != nil {
		t.Fatal(err)
	}

	type result struct {
		what string
		err  error
		took time.Duration
	}
	results := make(chan result, 2)
	call := func(what string, c contextv1.ContextServiceClient, ctx context.Context) {
		start := time.Now()
		_, err := c.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: what, RequestId: "create-" + what})
		results <- result{what, err, time.Since(start)}
	}
	start := time.Now()
	go call("via-router", cs, actx)
	go call("via-client", smart.Context(), ctx)
	const flipDelay = 300 * time.Millisecond
	time.Sleep(flipDelay) // the cutover takes a while: delay the flip
	cell2 := cellv1.NewCellServiceClient(dial(t, nodes2[0].GRPCAddr()))
	if _, err := cell2.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_OWNER, Epoch: 2, RequestId: "own-acme-2"}); err != nil {
		t.Fatal(err)
	}
	placement(func(tn *cpv1.Tenant) { tn.Cell, tn.Epoch, tn.CuttingOver = "c2", 2, false })
	flipped := time.Since(start)

	for range 2 {
		r := <-results
		if r.err != nil {
			t.Errorf("%s: a call during the cutover failed: %v", r.what, r.err)
			continue
		}
		if r.took < flipDelay {
			t.Errorf("%s: took %s, returned before the flip (%s)", r.what, r.took, flipped)
		}
		t.Logf("%s: held %s (flip after %s)", r.what, r.took.Round(time.Millisecond), flipped.Round(time.Millisecond))
		if _, err := contextv1.NewContextServiceClient(dial(t, nodes2[0].GRPCAddr())).GetContext(
			metadata.AppendToOutgoingContext(ctx, "x-cellplane-tenant", "acme"), &contextv1.GetContextRequest{ContextId: r.what}); err != nil {
			t.Errorf("%s: the write is not on the new owner: %v", r.what, err)
		}
	}

	// The router's metrics show the holds.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.router.HTTPAddr()+"/metrics", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`cellplane_router_forward_hold_duration_seconds_count{outcome="released"} 2`,
		`cellplane_router_table_tenants_cutting_over 0`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
