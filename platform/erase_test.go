package platform_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// TestEraseReachesStandby: through the real platform (router, control
// plane, an owner cell and a standby cell in another region), an erase
// by principal deletes the data and scrubs the change log on the owner,
// the standby applies it from the stream, and the report says so; the
// audit log, read through the control plane, keeps that it happened.
func TestEraseReachesStandby(t *testing.T) {
	cfg := platform.DefaultConfig()
	cfg.Name = "erase"
	cfg.DataDir = t.TempDir()
	cfg.Regions, cfg.CellsPerRegion, cfg.NodesPerCell = []string{"us-east", "eu-west"}, 1, 1
	cfg.Node.MCPDisabled = true
	cfg.Node.RegistryTTL = time.Second
	cfg.Controller.RetryMin, cfg.Controller.RetryMax = 10*time.Millisecond, 200*time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = testutil.Logger(t)
	cfg.EtcdUnsafeNoFsync = true
	ctx := testutil.Context(t, 2*time.Minute)
	p, err := platform.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)

	if _, err := p.Admin().CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east", StandbyRegion: "eu-west"}); err != nil {
		t.Fatalf("create tenant: %v", err)
	}
	data := contextv1.NewContextServiceClient(p.RouterConn())
	tctx := tenantmd.Outgoing(ctx, "acme", 0)
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := data.CreateContext(tctx, &contextv1.CreateContextRequest{ContextId: "ctx-a", RequestId: "c1",
			Labels: map[string]string{store.PrincipalLabel: "alice"}})
		if err == nil || errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) {
			return nil
		}
		return err
	})
	for i, text := range []string{"SECRET-1", "SECRET-2"} {
		if _, err := data.Append(tctx, &contextv1.AppendRequest{ContextId: "ctx-a", RequestId: fmt.Sprintf("a%d", i),
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: text}}}}); err != nil {
			t.Fatalf("append: %v", err)
		}
	}
	if _, err := data.CreateContext(tctx, &contextv1.CreateContextRequest{ContextId: "ctx-b", Labels: map[string]string{store.PrincipalLabel: "bob"}}); err != nil {
		t.Fatal(err)
	}

	tn, err := p.Admin().GetTenant(ctx, &cpv1.GetTenantRequest{Id: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	standby := p.Cell(tn.GetTenant().GetStandbyCell())
	if standby == nil {
		t.Fatalf("no standby cell: %v", tn.GetTenant())
	}
	// The standby is bootstrapped and follows before the erase.
	testutil.Eventually(t, 60*time.Second, func() error {
		return standby.Nodes()[0].Node().Store().ReadReplica("acme", func(v *store.TenantView) error {
			if r := v.Record(); r.GetTseq() < 5 || !r.GetBootstrapped() {
				return fmt.Errorf("standby at tseq %d (bootstrapped %v)", r.GetTseq(), r.GetBootstrapped())
			}
			return nil
		})
	})

	req := &cpv1.EraseSubjectRequest{Tenant: "acme", Principal: "alice", RequestId: "erase-1", Wait: durationpb.New(30 * time.Second)}
	rep, err := p.Admin().EraseSubject(ctx, req)
	if err != nil {
		t.Fatalf("erase: %v", err)
	}
	if rep.GetCell() != tn.GetTenant().GetCell() || rep.GetTseq() == 0 || rep.GetErased().GetContextsDeleted() != 1 ||
		rep.GetErased().GetEventsScrubbed() < 3 || rep.GetStandbyCell() != standby.ID() || !rep.GetStandbyApplied() ||
		rep.GetStandbyAppliedTseq() < rep.GetTseq() || rep.GetStandbyObservedTime() == nil {
		t.Fatalf("erase report %v", rep)
	}
	// The context is gone through the router.
	if _, err := data.GetContext(tctx, &contextv1.GetContextRequest{ContextId: "ctx-a"}); !errors.Is(rpcerr.FromStatus(err), cperr.ErrContextNotFound) {
		t.Errorf("erased context: %v, want CONTEXT_NOT_FOUND", err)
	}
	// Nothing of alice in either cell's change log or audit log.
	for _, c := range []*platform.Cell{p.Cell(rep.GetCell()), standby} {
		err := c.Nodes()[0].Node().Store().ReadReplica("acme", func(v *store.TenantView) error {
			evs, err := v.Changes(0, 1000)
			if err != nil {
				return err
			}
			recs, _, err := v.Audit(store.AuditQuery{Limit: 1000})
			if err != nil {
				return err
			}
			var all []proto.Message
			for _, e := range evs {
				all = append(all, e)
			}
			for _, r := range recs {
				all = append(all, r)
			}
			for _, m := range all {
				b, _ := proto.Marshal(m)
				for _, s := range []string{"SECRET", "alice", "ctx-a"} {
					if bytes.Contains(b, []byte(s)) {
						return fmt.Errorf("%s still holds %q: %v", c.ID(), s, m)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Error(err)
		}
	}
	// A retried erase answers with the first one.
	again, err := p.Admin().EraseSubject(ctx, req)
	if err != nil || !again.GetDeduplicated() || again.GetTseq() != rep.GetTseq() {
		t.Errorf("retried erase: %v, %v", again, err)
	}
	// The audit log says an erase happened (through the control plane).
	audit, err := p.Admin().ListTenantAudit(ctx, &cpv1.ListTenantAuditRequest{Tenant: "acme", AfterTseq: rep.GetTseq() - 1, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r := audit.GetRecords(); len(r) != 1 || r[0].GetOp() != "erase_subject" || r[0].GetEraseKind() != cellv1.EraseSubjectOp_KIND_PRINCIPAL ||
		r[0].GetOrigin() != "controlplane:EraseSubject" {
		t.Errorf("erase's audit record: %v", r)
	}
}
