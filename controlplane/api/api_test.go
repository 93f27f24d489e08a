package api

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func newServer(t *testing.T) (*Server, *memtopo.Store) {
	t.Helper()
	st := memtopo.New()
	t.Cleanup(func() { _ = st.Close() })
	cfg := DefaultConfig()
	cfg.Logger = testutil.Logger(t)
	cfg.MaxScanPerPage = 1000
	s, err := New(st, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return s, st
}

// putTenants writes placements directly, as the controller would publish
// them, plus an API key for each (keys share the tenants/ prefix and must
// never show up as tenants).
func putTenants(t *testing.T, st topo.Store, n int, cellOf func(i int) string) {
	t.Helper()
	ctx := testutil.Context(t, 10*time.Second)
	for i := range n {
		id := fmt.Sprintf("t%04d", i)
		tn := &cpv1.Tenant{Id: id, HomeRegion: "us", Cell: cellOf(i), State: cpv1.TenantState_TENANT_STATE_ACTIVE, Epoch: 1}
		if _, err := st.Txn(ctx, nil, []topo.Op{
			topo.Put(topo.TenantKey(id), catalog.Encode(tn)),
			topo.Put(topo.APIKeyKey(id, "k"), catalog.Encode(&cpv1.ApiKey{Id: "k", Tenant: id})),
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func TestListTenantsPaginatesAndFilters(t *testing.T) {
	s, st := newServer(t)
	putTenants(t, st, 2500, func(i int) string {
		if i%5 == 0 {
			return "b"
		}
		return "a"
	})
	ctx := testutil.Context(t, 30*time.Second)
	tests := []struct {
		name     string
		req      *cpv1.ListTenantsRequest
		want     int
		maxPages int
	}{
		{"all, default page", &cpv1.ListTenantsRequest{}, 2500, 25},
		{"all, big pages", &cpv1.ListTenantsRequest{PageSize: 1000}, 2500, 3},
		{"page of 7", &cpv1.ListTenantsRequest{PageSize: 7}, 2500, 358},
		{"one cell", &cpv1.ListTenantsRequest{Cell: "b", PageSize: 100}, 500, 6},
		{"no match", &cpv1.ListTenantsRequest{Cell: "zz"}, 0, 3},
		{"state filter", &cpv1.ListTenantsRequest{State: cpv1.TenantState_TENANT_STATE_DELETING}, 0, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[string]bool{}
			req := tc.req
			for pages := 1; ; pages++ {
				if pages > tc.maxPages {
					t.Fatalf("more than %d pages", tc.maxPages)
				}
				resp, err := s.ListTenants(ctx, req)
				if err != nil {
					t.Fatal(err)
				}
				for _, tn := range resp.GetTenants() {
					if seen[tn.GetId()] {
						t.Fatalf("tenant %s listed twice", tn.GetId())
					}
					if tc.req.GetCell() != "" && tn.GetCell() != tc.req.GetCell() {
						t.Fatalf("filter cell=%s returned %v", tc.req.GetCell(), tn)
					}
					seen[tn.GetId()] = true
				}
				if resp.GetNextPageToken() == "" {
					break
				}
				req = proto.Clone(req).(*cpv1.ListTenantsRequest)
				req.PageToken = resp.GetNextPageToken()
			}
			if len(seen) != tc.want {
				t.Fatalf("listed %d tenants, want %d", len(seen), tc.want)
			}
		})
	}
	_, err := s.ListTenants(ctx, &cpv1.ListTenantsRequest{PageSize: 5000})
	if !errors.Is(err, cperr.ErrInvalidArgument) {
		t.Fatalf("page size over the max: %v", err)
	}
}

func TestCordonUncordon(t *testing.T) {
	s, _ := newServer(t)
	ctx := testutil.Context(t, 10*time.Second)
	if _, err := s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "us"}); err != nil {
		t.Fatal(err)
	}
	c, err := s.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "us"})
	if err != nil || c.GetCell().GetExpectedMembers() != 3 || c.GetCell().GetState() != cpv1.CellState_CELL_STATE_ACTIVE {
		t.Fatalf("create cell: %v %v", c, err)
	}
	for _, step := range []struct {
		cordon bool
		want   cpv1.CellState
	}{{true, cpv1.CellState_CELL_STATE_CORDONED}, {true, cpv1.CellState_CELL_STATE_CORDONED}, {false, cpv1.CellState_CELL_STATE_ACTIVE}, {false, cpv1.CellState_CELL_STATE_ACTIVE}} {
		var got *cpv1.Cell
		if step.cordon {
			r, err := s.CordonCell(ctx, &cpv1.CordonCellRequest{Id: "c1"})
			if err != nil {
				t.Fatal(err)
			}
			got = r.GetCell()
		} else {
			r, err := s.UncordonCell(ctx, &cpv1.UncordonCellRequest{Id: "c1"})
			if err != nil {
				t.Fatal(err)
			}
			got = r.GetCell()
		}
		if got.GetState() != step.want {
			t.Fatalf("state %v, want %v", got.GetState(), step.want)
		}
	}
	if _, err := s.CordonCell(ctx, &cpv1.CordonCellRequest{Id: "nope"}); !errors.Is(err, cperr.ErrCellNotFound) {
		t.Fatalf("cordon unknown: %v", err)
	}
}

func TestValidation(t *testing.T) {
	s, _ := newServer(t)
	ctx := testutil.Context(t, 10*time.Second)
	long := strings.Repeat("r", ids.MaxLen+1) // 129: the bound is ids.MaxLen (it was 63)
	checks := map[string]error{
		"region empty":       call(s.CreateRegion(ctx, &cpv1.CreateRegionRequest{})),
		"region bad chars":   call(s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "a/b"})),
		"region long":        call(s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: long})),
		"description long":   call(s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "r", Description: string(make([]byte, 300))})),
		"cell members even":  call(s.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c", Region: "r", ExpectedMembers: 2})),
		"cell members large": call(s.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c", Region: "r", ExpectedMembers: 9})),
		"tenant no region":   call(s.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "t"})),
		"tenant neg rate":    call(s.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "t", HomeRegion: "r", Limits: &cpv1.TenantLimits{Rate: -1}})),
		"tenant bad cell":    call(s.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "t", HomeRegion: "r", Cell: "x y"})),
		"key bad id":         call(s.RevokeApiKey(ctx, &cpv1.RevokeApiKeyRequest{Tenant: "t", Id: ""})),
		"page token":         call(s.ListTenants(ctx, &cpv1.ListTenantsRequest{PageToken: "%%%"})),
	}
	for name, err := range checks {
		if !errors.Is(err, cperr.ErrInvalidArgument) {
			t.Errorf("%s: %v, want INVALID_ARGUMENT", name, err)
		}
	}
	if _, err := s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: strings.Repeat("r", ids.MaxLen)}); err != nil {
		t.Errorf("a region id of %d characters: %v", ids.MaxLen, err)
	}
}

func call[T any](_ T, err error) error { return err }

// An unreachable store becomes CONTROLPLANE_UNAVAILABLE with a retry hint.
func TestStoreUnavailableIsMapped(t *testing.T) {
	s, st := newServer(t)
	st.Fail(memtopo.OpList, "", topo.ErrUnavailable)
	ctx := testutil.Context(t, 10*time.Second)
	icpt := UnaryServerInterceptor()
	_, err := icpt(ctx, &cpv1.GetStatusRequest{}, &grpc.UnaryServerInfo{}, func(ctx context.Context, req any) (any, error) {
		return s.GetStatus(ctx, req.(*cpv1.GetStatusRequest))
	})
	var ce *cperr.Error
	if !errors.As(err, &ce) || ce.Reason != cperr.ControlPlaneUnavailable || ce.RetryAfter <= 0 {
		t.Fatalf("GetStatus with etcd down: %v", err)
	}
}
