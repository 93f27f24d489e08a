package controller_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// waitRoles waits until the cells holding tenant are exactly want.
func (e *moveEnv) waitRoles(t *testing.T, tenant, want string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := strings.Join(e.cells.roles(tenant), " "); got != want {
			return fmt.Errorf("cells hold %q, want %q", got, want)
		}
		return nil
	})
}

// A standby set on a tenant becomes a STANDBY of the owner at its epoch,
// follows the owner when the tenant moves (keeping its data: resume), and
// is removed when cleared.
func TestStandbyFollowsTheOwner(t *testing.T) {
	e := newMoveEnv(t)
	e.start(t, "c1", controller.TestingKnobs{})
	e.create(t, "acme", "a")
	e.create(t, "other", "e1") // e1 has a tenant: the policy picks e2
	e.cells.write(t, "acme", 4)
	ctx := testutil.Context(t, 15*time.Second)

	tn, err := intent.SetStandby(ctx, e.st, "acme", "eu", "")
	if err != nil {
		t.Fatal(err)
	}
	if tn.GetStandbyCell() != "e2" {
		t.Fatalf("standby %q, want e2 (the least loaded cell of eu)", tn.GetStandbyCell())
	}
	if again, err := intent.SetStandby(ctx, e.st, "acme", "eu", ""); err != nil || again.GetStandbyCell() != "e2" {
		t.Fatalf("setting the same standby again: %v %v", again, err)
	}
	if _, err := intent.SetStandby(ctx, e.st, "acme", "", "e1"); !errors.Is(err, cperr.ErrAlreadyExists) {
		t.Fatalf("another standby: %v, want ALREADY_EXISTS", err)
	}
	e.waitRoles(t, "acme", "a:OWNER@1 e2:STANDBY@1")
	if got := e.loads(t, "e1", "e2"); got != "e1=1 e2=1" {
		t.Fatalf("loads %s", got)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		info, repl, err := e.cells.GetTenant(ctx, "e2", "acme")
		if err != nil {
			return err
		}
		if !info.GetBootstrapped() || repl.GetAppliedTseq() != 5 || info.GetSourceCell() != "a" {
			return fmt.Errorf("standby %v %v", info, repl)
		}
		return nil
	})

	mv, _, err := intent.StartMove(ctx, e.st, intent.MoveRequest{Tenant: "acme", Target: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if mv.GetStandbyCell() != "e2" {
		t.Errorf("move records standby %q", mv.GetStandbyCell())
	}
	e.waitMove(t, mv.GetId(), cpv1.MoveState_MOVE_STATE_DONE)
	e.waitRoles(t, "acme", "b:OWNER@2 e2:STANDBY@2")
	if n := e.cells.changeCount("e2/acme/ROLE_STANDBY/2/true"); n != 1 {
		t.Fatalf("standby repointed %d times with resume, want 1 (%v)", n, e.cells.changes)
	}
	info, _, err := e.cells.GetTenant(ctx, "e2", "acme")
	if err != nil || info.GetSourceCell() != "b" {
		t.Fatalf("standby after the move: %v %v", info, err)
	}

	// The reconciler repairs a standby that lost its copy.
	if err := e.cells.DeleteTenant(ctx, "e2", &cellv1.DeleteTenantRequest{Tenant: "acme", Force: true}); err != nil {
		t.Fatal(err)
	}
	e.waitRoles(t, "acme", "b:OWNER@2 e2:STANDBY@2")

	cell, err := intent.StartClearStandby(ctx, e.st, "acme")
	if err != nil || cell != "e2" {
		t.Fatalf("clear: %q %v", cell, err)
	}
	cleared, err := intent.WaitStandbyCleared(ctx, e.st, "acme", cell)
	if err != nil {
		t.Fatal(err)
	}
	if cleared.GetStandbyCell() != "" || cleared.GetOperationId() != "" {
		t.Fatalf("placement after clear: %v", cleared)
	}
	e.waitRoles(t, "acme", "b:OWNER@2")
	if got := e.loads(t, "e2"); got != "e2=0" {
		t.Fatalf("loads %s", got)
	}
	if cell, err := intent.StartClearStandby(ctx, e.st, "acme"); err != nil || cell != "" {
		t.Fatalf("clearing no standby: %q %v", cell, err)
	}
	e.cells.checkNoViolation(t)
}

func TestSetStandbyValidation(t *testing.T) {
	e := newMoveEnv(t)
	e.start(t, "c1", controller.TestingKnobs{})
	e.create(t, "acme", "a")
	ctx := testutil.Context(t, 10*time.Second)
	tests := []struct {
		name           string
		tenant, region string
		cell           string
		want           *cperr.Error
	}{
		{"owner's region", "acme", "us", "", cperr.ErrInvalidArgument},
		{"cell in owner's region", "acme", "", "b", cperr.ErrInvalidArgument},
		{"nothing asked", "acme", "", "", cperr.ErrInvalidArgument},
		{"cell of another region", "acme", "us", "e1", cperr.ErrInvalidArgument},
		{"unknown cell", "acme", "", "zz", cperr.ErrCellNotFound},
		{"region without cells", "acme", "ap", "", cperr.ErrNoCapacity},
		{"unknown tenant", "nope", "eu", "", cperr.ErrTenantNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := intent.SetStandby(ctx, e.st, tt.tenant, tt.region, tt.cell); !errors.Is(err, tt.want) {
				t.Fatalf("SetStandby = %v, want %s", err, tt.want.Reason)
			}
		})
	}
}

// A tenant created with a standby (as the API records it) is published
// with it, counted in its load and made STANDBY; deleting the tenant
// removes both copies and both counts.
func TestCreateAndDeleteWithStandby(t *testing.T) {
	e := newMoveEnv(t)
	e.start(t, "c1", controller.TestingKnobs{})
	ctx := testutil.Context(t, 10*time.Second)
	sb, err := intent.ChooseStandby(ctx, e.st, "", "eu", "")
	if err != nil || sb != "e1" {
		t.Fatalf("ChooseStandby = %q %v", sb, err)
	}
	if err := intent.StartCreate(ctx, e.st, &cpv1.Tenant{Id: "acme", HomeRegion: "us", StandbyCell: sb}, "a"); err != nil {
		t.Fatal(err)
	}
	tn, err := intent.WaitCreate(ctx, e.st, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if tn.GetStandbyCell() != "e1" || tn.GetCell() != "a" {
		t.Fatalf("published %v", tn)
	}
	e.waitRoles(t, "acme", "a:OWNER@1 e1:STANDBY@1")
	if got := e.loads(t, "a", "e1"); got != "a=1 e1=1" {
		t.Fatalf("loads %s", got)
	}
	if err := intent.StartDelete(ctx, e.st, "acme"); err != nil {
		t.Fatal(err)
	}
	if err := intent.WaitDelete(ctx, e.st, "acme"); err != nil {
		t.Fatal(err)
	}
	e.waitRoles(t, "acme", "")
	if got := e.loads(t, "a", "e1"); got != "a=0 e1=0" {
		t.Fatalf("loads after delete %s", got)
	}
}

// An old owner that becomes the standby keeps its data (resume) only when
// a planned switchover fenced it for the current owner; after an
// emergency promotion (or without a record) it imports a fresh export.
func TestStandbyResumeOnlyAfterSwitchover(t *testing.T) {
	tests := []struct {
		name       string
		failover   *cpv1.Failover
		wantResume bool
	}{
		{"switchover", &cpv1.Failover{Id: "acme-e2-switchover", Tenant: "acme", Kind: cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER,
			State: cpv1.FailoverState_FAILOVER_STATE_DONE, FromCell: "e1", ToCell: "a", OldEpoch: 1, NewEpoch: 2}, true},
		{"emergency promotion", &cpv1.Failover{Id: "acme-e2-promote", Tenant: "acme", Kind: cpv1.FailoverKind_FAILOVER_KIND_PROMOTE,
			State: cpv1.FailoverState_FAILOVER_STATE_DONE, FromCell: "e1", ToCell: "a", OldEpoch: 1, NewEpoch: 2}, false},
		{"switchover to another cell", &cpv1.Failover{Id: "acme-e2-switchover", Tenant: "acme", Kind: cpv1.FailoverKind_FAILOVER_KIND_SWITCHOVER,
			State: cpv1.FailoverState_FAILOVER_STATE_DONE, FromCell: "e1", ToCell: "b", OldEpoch: 1, NewEpoch: 2}, false},
		{"no record", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newMoveEnv(t)
			ctx := testutil.Context(t, 10*time.Second)
			// e1 owned acme at epoch 1 and was fenced at 2; a owns it at 2.
			if _, err := e.cells.SetTenant(ctx, "e1", &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_OWNER, Epoch: 1}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.cells.SetTenant(ctx, "e1", &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_FENCED, Epoch: 2}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.cells.SetTenant(ctx, "a", &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_OWNER, Epoch: 2}); err != nil {
				t.Fatal(err)
			}
			ops := []topo.Op{topo.Put(topo.TenantKey("acme"), catalog.Encode(&cpv1.Tenant{Id: "acme", HomeRegion: "us", Cell: "a",
				StandbyCell: "e1", State: cpv1.TenantState_TENANT_STATE_ACTIVE, Epoch: 2}))}
			if tt.failover != nil {
				tt.failover.UpdateTime = timestamppb.Now() // recent: within the kept history
				ops = append(ops, topo.Put(topo.FailoverKey(tt.failover.GetId()), catalog.Encode(tt.failover)))
			}
			if _, err := e.st.Txn(ctx, nil, ops); err != nil {
				t.Fatal(err)
			}
			e.start(t, "c1", controller.TestingKnobs{})
			e.waitRoles(t, "acme", "a:OWNER@2 e1:STANDBY@2")
			key := fmt.Sprintf("e1/acme/ROLE_STANDBY/2/%t", tt.wantResume)
			if n := e.cells.changeCount(key); n != 1 {
				t.Fatalf("%s applied %d times (%v)", key, n, e.cells.changes)
			}
		})
	}
}
