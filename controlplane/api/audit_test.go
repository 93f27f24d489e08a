package api

import (
	"context"
	"errors"
	"sync/atomic"
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

// fakeSubjects is an owner cell that erases at tseq 50 and a standby
// whose applied tseq standbyAt returns.
type fakeSubjects struct {
	erases    atomic.Int64
	standbyAt func() uint64
}

func (f *fakeSubjects) ListAudit(_ context.Context, cell string, req *cellv1.ListAuditRequest) (*cellv1.ListAuditResponse, error) {
	return &cellv1.ListAuditResponse{Records: []*cellv1.AuditRecord{{Tseq: 1, Principal: req.GetPrincipal(), Op: cell}}}, nil
}

func (f *fakeSubjects) EraseSubject(_ context.Context, cell string, req *cellv1.EraseSubjectRequest) (*cellv1.EraseSubjectResponse, error) {
	if cell != "a" {
		return nil, errors.New("not the owner")
	}
	f.erases.Add(1)
	return &cellv1.EraseSubjectResponse{Tseq: 50, TimeUnixNano: 1e18, Erased: &cellv1.EraseSubjectResult{ContextsDeleted: 2}}, nil
}

func (f *fakeSubjects) GetTenant(_ context.Context, cell, _ string) (*cellv1.TenantInfo, *cellv1.ReplicationStatus, error) {
	if cell != "e1" {
		return nil, nil, errors.New("not the standby")
	}
	return &cellv1.TenantInfo{Tseq: f.standbyAt()}, nil, nil
}

func TestEraseSubjectReport(t *testing.T) {
	s, st := newServer(t)
	ctx := testutil.Context(t, 20*time.Second)
	for _, tn := range []*cpv1.Tenant{
		{Id: "plain", HomeRegion: "us", Cell: "a", State: cpv1.TenantState_TENANT_STATE_ACTIVE, Epoch: 1},
		{Id: "acme", HomeRegion: "us", Cell: "a", StandbyCell: "e1", State: cpv1.TenantState_TENANT_STATE_ACTIVE, Epoch: 1},
	} {
		if _, err := st.Create(ctx, topo.TenantKey(tn.GetId()), catalog.Encode(tn)); err != nil {
			t.Fatal(err)
		}
	}
	var at atomic.Uint64
	f := &fakeSubjects{standbyAt: func() uint64 { return at.Add(10) }} // 10, 20, ... : reaches 50 on the fifth look
	s.cfg.Subjects = f

	rep, err := s.EraseSubject(ctx, &cpv1.EraseSubjectRequest{Tenant: "acme", Principal: "alice", Wait: durationpb.New(10 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.GetCell() != "a" || rep.GetTseq() != 50 || !rep.GetStandbyApplied() || rep.GetStandbyAppliedTseq() < 50 || rep.GetStandbyObservedTime() == nil ||
		rep.GetErased().GetContextsDeleted() != 2 {
		t.Fatalf("report %v", rep)
	}
	// A standby that stays behind: pending when the wait ends.
	f.standbyAt = func() uint64 { return 49 }
	rep, err = s.EraseSubject(ctx, &cpv1.EraseSubjectRequest{Tenant: "acme", ContextId: "c1", Wait: durationpb.New(300 * time.Millisecond)})
	if err != nil || rep.GetStandbyApplied() || rep.GetStandbyAppliedTseq() != 49 || rep.GetStandbyCell() != "e1" {
		t.Fatalf("pending report %v, %v", rep, err)
	}
	// No standby: nothing to wait for.
	rep, err = s.EraseSubject(ctx, &cpv1.EraseSubjectRequest{Tenant: "plain", ContextId: "c1"})
	if err != nil || rep.GetStandbyCell() != "" || rep.GetStandbyApplied() {
		t.Fatalf("report without standby %v, %v", rep, err)
	}

	// Refused before any cell is asked.
	before := f.erases.Load()
	for _, req := range []*cpv1.EraseSubjectRequest{
		{Tenant: "acme"},
		{Tenant: "acme", Principal: "p", ContextId: "c"},
		{Tenant: "acme", ContextId: "a/b"},
		{Tenant: "acme", Principal: "p", Wait: durationpb.New(-time.Second)},
		{Tenant: "bad/tenant", Principal: "p"},
	} {
		if _, err := s.EraseSubject(ctx, req); !errors.Is(err, cperr.ErrInvalidArgument) {
			t.Errorf("%v: %v, want INVALID_ARGUMENT", req, err)
		}
	}
	if _, err := s.EraseSubject(ctx, &cpv1.EraseSubjectRequest{Tenant: "ghost", Principal: "p"}); !errors.Is(err, cperr.ErrTenantNotFound) {
		t.Errorf("unknown tenant: %v", err)
	}
	if f.erases.Load() != before {
		t.Errorf("a refused request reached the cell")
	}

	resp, err := s.ListTenantAudit(ctx, &cpv1.ListTenantAuditRequest{Tenant: "acme", Principal: "bob"})
	if err != nil || resp.GetCell() != "a" || len(resp.GetRecords()) != 1 || resp.GetRecords()[0].GetPrincipal() != "bob" {
		t.Fatalf("ListTenantAudit %v, %v", resp, err)
	}
	if _, err := s.ListTenantAudit(ctx, &cpv1.ListTenantAuditRequest{Tenant: "acme", Limit: 1001}); !errors.Is(err, cperr.ErrInvalidArgument) {
		t.Errorf("limit 1001: %v", err)
	}
}
