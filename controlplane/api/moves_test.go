package api

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// standbyReader answers GetTenant like a standby cell's leader: with fn.
type standbyReader func(ctx context.Context, cell, tenant string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error)

func (f standbyReader) GetTenant(ctx context.Context, cell, tenant string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error) {
	return f(ctx, cell, tenant)
}

func TestGetTenantShowsStandbyLag(t *testing.T) {
	s, st := newServer(t)
	s.cfg.StandbyStatusTimeout = 50 * time.Millisecond
	ctx := testutil.Context(t, 10*time.Second)
	for _, tn := range []*cpv1.Tenant{
		{Id: "plain", HomeRegion: "us", Cell: "a", State: cpv1.TenantState_TENANT_STATE_ACTIVE, Epoch: 1},
		{Id: "acme", HomeRegion: "us", Cell: "a", StandbyCell: "e1", State: cpv1.TenantState_TENANT_STATE_ACTIVE, Epoch: 1},
	} {
		if _, err := st.Create(ctx, topo.TenantKey(tn.GetId()), catalog.Encode(tn)); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		tenant string
		reader standbyReader
		want   *cpv1.ReplicationLag
	}{
		{"no standby", "plain", func(context.Context, string, string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error) {
			t.Error("a tenant without a standby asked a cell")
			return nil, nil, errors.New("unexpected")
		}, nil},
		{"streaming", "acme", func(_ context.Context, cell, tenant string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error) {
			if cell != "e1" || tenant != "acme" {
				t.Errorf("asked %s about %s", cell, tenant)
			}
			return &cellv1.TenantInfo{Tseq: 40}, &cellv1.ReplicationStatus{AppliedTseq: 42, SourceTseq: 45, LagEvents: 3,
				Lag: durationpb.New(time.Second), State: "STREAMING"}, nil
		}, &cpv1.ReplicationLag{StandbyCell: "e1", AppliedTseq: 42, SourceTseq: 45, LagEvents: 3, Lag: durationpb.New(time.Second), State: "STREAMING"}},
		{"no stream on the leader", "acme", func(context.Context, string, string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error) {
			return &cellv1.TenantInfo{Tseq: 7}, nil, nil
		}, &cpv1.ReplicationLag{StandbyCell: "e1", AppliedTseq: 7, Lag: durationpb.New(0)}},
		{"cell down", "acme", func(context.Context, string, string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error) {
			return nil, nil, cperr.New(cperr.CellUnavailable, "down")
		}, nil},
		{"cell silent", "acme", func(ctx context.Context, _, _ string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error) {
			<-ctx.Done()
			return nil, nil, ctx.Err()
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s.cfg.Cells = tt.reader
			resp, err := s.GetTenant(ctx, &cpv1.GetTenantRequest{Id: tt.tenant})
			if err != nil {
				t.Fatalf("GetTenant failed: %v (a standby must never fail it)", err)
			}
			got := resp.GetReplication()
			if (got == nil) != (tt.want == nil) || (got != nil && got.String() != tt.want.String()) {
				t.Fatalf("replication = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMoveAndStandbyValidation(t *testing.T) {
	s, _ := newServer(t)
	ctx := testutil.Context(t, 10*time.Second)
	long := make([]byte, 200)
	for i := range long {
		long[i] = 'a'
	}
	tests := []struct {
		name string
		call func() error
		want *cperr.Error
	}{
		{"move without tenant", func() error {
			_, err := s.StartMove(ctx, &cpv1.StartMoveRequest{TargetCell: "b"})
			return err
		}, cperr.ErrInvalidArgument},
		{"move without target", func() error {
			_, err := s.StartMove(ctx, &cpv1.StartMoveRequest{Tenant: "acme"})
			return err
		}, cperr.ErrInvalidArgument},
		{"move of no tenant", func() error {
			_, err := s.StartMove(ctx, &cpv1.StartMoveRequest{Tenant: "acme", TargetCell: "b"})
			return err
		}, cperr.ErrTenantNotFound},
		{"get bad id", func() error {
			_, err := s.GetMove(ctx, &cpv1.GetMoveRequest{Id: "a/b"})
			return err
		}, cperr.ErrInvalidArgument},
		{"get long id", func() error {
			_, err := s.GetMove(ctx, &cpv1.GetMoveRequest{Id: string(long)})
			return err
		}, cperr.ErrInvalidArgument},
		{"get no move", func() error {
			_, err := s.GetMove(ctx, &cpv1.GetMoveRequest{Id: "acme-00000000"})
			return err
		}, cperr.ErrMoveNotFound},
		{"cancel no move", func() error {
			_, err := s.CancelMove(ctx, &cpv1.CancelMoveRequest{Id: "acme-00000000"})
			return err
		}, cperr.ErrMoveNotFound},
		{"list bad cell", func() error {
			_, err := s.ListMoves(ctx, &cpv1.ListMovesRequest{Cell: "a b"})
			return err
		}, cperr.ErrInvalidArgument},
		{"drain no cell", func() error {
			_, err := s.DrainCell(ctx, &cpv1.DrainCellRequest{Cell: "nope"})
			return err
		}, cperr.ErrCellNotFound},
		{"drain too wide", func() error {
			_, err := s.DrainCell(ctx, &cpv1.DrainCellRequest{Cell: "a", Concurrency: 5000})
			return err
		}, cperr.ErrInvalidArgument},
		{"standby nowhere", func() error {
			_, err := s.SetStandby(ctx, &cpv1.SetStandbyRequest{Tenant: "acme"})
			return err
		}, cperr.ErrInvalidArgument},
		{"standby in no region", func() error {
			_, err := s.SetStandby(ctx, &cpv1.SetStandbyRequest{Tenant: "acme", Region: "mars"})
			return err
		}, cperr.ErrRegionNotFound},
		{"clear of no tenant", func() error {
			_, err := s.ClearStandby(ctx, &cpv1.ClearStandbyRequest{Tenant: "acme"})
			return err
		}, cperr.ErrTenantNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %s", err, tt.want.Reason)
			}
		})
	}
	if resp, err := s.ListMoves(ctx, &cpv1.ListMovesRequest{All: true}); err != nil || len(resp.GetMoves()) != 0 {
		t.Fatalf("ListMoves on an empty store: %v %v", resp, err)
	}
}

func TestCreateTenantStandbyRegion(t *testing.T) {
	s, st := newServer(t)
	ctx := testutil.Context(t, 10*time.Second)
	for _, r := range []string{"us", "eu"} {
		if _, err := s.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: r}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "a", Region: "us"}); err != nil {
		t.Fatal(err)
	}
	registerHealthy(t, st, "a", 3)
	for _, tt := range []struct {
		region string
		want   *cperr.Error
	}{
		{"us", cperr.ErrInvalidArgument},
		{"mars", cperr.ErrRegionNotFound},
		{"eu", cperr.ErrNoCapacity}, // no cell there
		{"Bad!", cperr.ErrInvalidArgument},
	} {
		_, err := s.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "t", HomeRegion: "us", StandbyRegion: tt.region})
		if !errors.Is(err, tt.want) {
			t.Errorf("standby region %q: %v, want %s", tt.region, err, tt.want.Reason)
		}
	}
}
