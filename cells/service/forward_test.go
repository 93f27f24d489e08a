package service

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// pair is a follower (fake store that refuses to lead) whose leader is a
// second node over a fake store that answers.
type pair struct {
	follower, leader *node
	fst, lst         *fakeStore
}

func newPair(t *testing.T) *pair {
	t.Helper()
	llis, flis := testutil.Listen(t), testutil.Listen(t)
	linfo := &cellv1.NodeInfo{NodeId: "n2", RaftAddr: fakeLeaderRaft, GrpcAddr: llis.Addr().String()}
	finfo := &cellv1.NodeInfo{NodeId: "n1", GrpcAddr: flis.Addr().String()}
	lst := &fakeStore{leaderID: "n2", leader: linfo}
	fst := &fakeStore{follower: true, leaderID: "n2", leader: linfo}
	return &pair{
		leader:   serveNode(t, lst, linfo, llis, nil),
		follower: serveNode(t, fst, finfo, flis, nil),
		fst:      fst,
		lst:      lst,
	}
}

func TestForwardWriteToLeader(t *testing.T) {
	p := newPair(t)
	p.lst.propose = func(cmd *cellv1.Command) (*cellv1.CommandResult, error) {
		return &cellv1.CommandResult{Tseq: 1, Result: &cellv1.CommandResult_Append{Append: &contextv1.AppendResponse{FirstSeq: 1, LastSeq: 2}}}, nil
	}
	ctx := testutil.Context(t, 10*time.Second)
	resp, err := p.follower.ctx.Append(as(ctx, "acme", 3), &contextv1.AppendRequest{
		ContextId: "c1", RequestId: "r1", Entries: []*contextv1.Entry{textEntry("user", "a"), textEntry("user", "b")},
	})
	if err != nil {
		t.Fatalf("Append through the follower: %v", err)
	}
	if resp.GetFirstSeq() != 1 || resp.GetLastSeq() != 2 {
		t.Fatalf("Append = %v", resp)
	}
	cmds := p.lst.commands()
	if len(cmds) != 1 {
		t.Fatalf("leader got %d proposals, want 1", len(cmds))
	}
	cmd := cmds[0]
	if cmd.GetTenant() != "acme" || cmd.GetEpoch() != 3 || cmd.GetRequestId() != "r1" || cmd.GetAppend().GetContextId() != "c1" || len(cmd.GetAppend().GetEntries()) != 2 {
		t.Fatalf("leader proposed %v", cmd)
	}
	md := lastSeen(t, p.leader)
	if !hasValue(md, tenantmd.ForwardedKey) || first(md, tenantmd.TenantKey) != "acme" || first(md, tenantmd.EpochKey) != "3" {
		t.Fatalf("leader saw metadata %v", md)
	}
	if len(p.fst.commands()) != 0 {
		t.Fatal("the follower applied a proposal")
	}
}

func TestForwardLeaderErrorsKeepTheirReason(t *testing.T) {
	p := newPair(t)
	p.lst.propose = func(*cellv1.Command) (*cellv1.CommandResult, error) {
		return nil, cperr.New(cperr.SequenceMismatch, "expected_seq does not match").With(cperr.MetaLastSeq, "7")
	}
	p.lst.readErr = cperr.New(cperr.ContextNotFound, "no such context")
	ctx := as(testutil.Context(t, 10*time.Second), "acme", 0)

	_, err := p.follower.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "c", ExpectedSeq: proto.Uint64(1), Entries: []*contextv1.Entry{textEntry("u", "x")}})
	e := wantErr(t, err, codes.Aborted, cperr.SequenceMismatch)
	if e.Metadata[cperr.MetaLastSeq] != "7" {
		t.Fatalf("metadata %v, want last_seq 7", e.Metadata)
	}
	_, err = p.follower.ctx.GetContext(ctx, &contextv1.GetContextRequest{ContextId: "c"})
	wantErr(t, err, codes.NotFound, cperr.ContextNotFound)
	_, err = p.follower.cell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: "acme"})
	wantErr(t, err, codes.NotFound, cperr.ContextNotFound)
}

func TestForwardedCallIsNeverForwardedAgain(t *testing.T) {
	p := newPair(t)
	ctx := tenantmd.WithForwarded(as(testutil.Context(t, 10*time.Second), "acme", 0))
	_, err := p.follower.ctx.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: "k", Value: []byte("v")})
	e := wantErr(t, err, codes.Unavailable, cperr.NotLeader)
	if e.Metadata[cperr.MetaLeader] != p.leader.info.GetGrpcAddr() || e.Metadata[cperr.MetaLeaderID] != "n2" {
		t.Fatalf("NOT_LEADER metadata %v", e.Metadata)
	}
	if n := len(p.lst.commands()); n != 0 {
		t.Fatalf("leader got %d proposals", n)
	}
}

func TestNoForwardAnswersNotLeaderWithHint(t *testing.T) {
	p := newPair(t)
	base := testutil.Context(t, 10*time.Second)
	ctx := tenantmd.WithNoForward(as(base, "acme", 0))
	calls := map[string]func() error{
		"CreateContext": func() error {
			_, err := p.follower.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{})
			return err
		},
		"DeleteContext": func() error {
			_, err := p.follower.ctx.DeleteContext(ctx, &contextv1.DeleteContextRequest{ContextId: "c"})
			return err
		},
		"Read": func() error { _, err := p.follower.ctx.Read(ctx, &contextv1.ReadRequest{ContextId: "c"}); return err },
		"ListContexts": func() error {
			_, err := p.follower.ctx.ListContexts(ctx, &contextv1.ListContextsRequest{})
			return err
		},
		"GetMemory": func() error {
			_, err := p.follower.ctx.GetMemory(ctx, &contextv1.GetMemoryRequest{Key: "k"})
			return err
		},
		"DeleteMemory": func() error {
			_, err := p.follower.ctx.DeleteMemory(ctx, &contextv1.DeleteMemoryRequest{Key: "k"})
			return err
		},
		"ListMemory": func() error { _, err := p.follower.ctx.ListMemory(ctx, &contextv1.ListMemoryRequest{}); return err },
		"SetTenant": func() error {
			_, err := p.follower.cell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "t", Role: cellv1.Role_ROLE_OWNER, Epoch: 1})
			return err
		},
		"DeleteTenant": func() error {
			_, err := p.follower.cell.DeleteTenant(ctx, &cellv1.DeleteTenantRequest{Tenant: "t", Force: true})
			return err
		},
		"ListTenants": func() error { _, err := p.follower.cell.ListTenants(ctx, &cellv1.ListTenantsRequest{}); return err },
		"EraseSubject": func() error {
			_, err := p.follower.cell.EraseSubject(ctx, &cellv1.EraseSubjectRequest{Tenant: "t", Principal: "p", RequestId: "e"})
			return err
		},
		"AddVoter": func() error {
			_, err := p.follower.cell.AddVoter(ctx, &cellv1.AddVoterRequest{Node: &cellv1.NodeInfo{NodeId: "n9", RaftAddr: "127.0.0.1:9"}})
			return err
		},
		"AddNonVoter": func() error {
			_, err := p.follower.cell.AddNonVoter(ctx, &cellv1.AddNonVoterRequest{Node: &cellv1.NodeInfo{NodeId: "n9", RaftAddr: "127.0.0.1:9"}})
			return err
		},
		"RemoveServer": func() error {
			_, err := p.follower.cell.RemoveServer(ctx, &cellv1.RemoveServerRequest{NodeId: "n9"})
			return err
		},
		"TransferLeadership": func() error {
			_, err := p.follower.cell.TransferLeadership(ctx, &cellv1.TransferLeadershipRequest{})
			return err
		},
		"RegisterNode": func() error {
			_, err := p.follower.cell.RegisterNode(ctx, &cellv1.RegisterNodeRequest{Node: &cellv1.NodeInfo{NodeId: "n9", GrpcAddr: "127.0.0.1:9"}})
			return err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			e := wantErr(t, call(), codes.Unavailable, cperr.NotLeader)
			if e.Metadata[cperr.MetaLeader] != p.leader.info.GetGrpcAddr() {
				t.Fatalf("leader hint %v", e.Metadata)
			}
		})
	}
	if n := len(p.lst.commands()); n != 0 {
		t.Fatalf("leader got %d proposals", n)
	}
}

func TestForwardCellServiceCalls(t *testing.T) {
	p := newPair(t)
	p.lst.transfer = "n3"
	p.lst.propose = func(cmd *cellv1.Command) (*cellv1.CommandResult, error) {
		if st := cmd.GetSetTenant(); st != nil {
			return &cellv1.CommandResult{Result: &cellv1.CommandResult_Tenant{Tenant: &cellv1.TenantInfo{Tenant: cmd.GetTenant(), Role: st.GetRole(), Epoch: st.GetEpoch()}}}, nil
		}
		return &cellv1.CommandResult{}, nil
	}
	ctx := testutil.Context(t, 10*time.Second)
	st, err := p.follower.cell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: "acme", Role: cellv1.Role_ROLE_OWNER, Epoch: 2, RequestId: "r"})
	if err != nil || st.GetTenant().GetEpoch() != 2 || st.GetTenant().GetRole() != cellv1.Role_ROLE_OWNER {
		t.Fatalf("SetTenant = %v, %v", st, err)
	}
	tr, err := p.follower.cell.TransferLeadership(ctx, &cellv1.TransferLeadershipRequest{})
	if err != nil || tr.GetLeaderId() != "n3" {
		t.Fatalf("TransferLeadership = %v, %v", tr, err)
	}
	n9 := &cellv1.NodeInfo{NodeId: "n9", RaftAddr: "127.0.0.1:9", GrpcAddr: "127.0.0.1:10"}
	if _, err := p.follower.cell.AddVoter(ctx, &cellv1.AddVoterRequest{Node: n9}); err != nil {
		t.Fatalf("AddVoter: %v", err)
	}
	if _, err := p.follower.cell.AddNonVoter(ctx, &cellv1.AddNonVoterRequest{Node: &cellv1.NodeInfo{NodeId: "n8", RaftAddr: "127.0.0.1:8"}}); err != nil {
		t.Fatalf("AddNonVoter: %v", err)
	}
	if _, err := p.follower.cell.RemoveServer(ctx, &cellv1.RemoveServerRequest{NodeId: "n8"}); err != nil {
		t.Fatalf("RemoveServer: %v", err)
	}
	if _, err := p.follower.cell.DeleteTenant(ctx, &cellv1.DeleteTenantRequest{Tenant: "acme", Force: true}); err != nil {
		t.Fatalf("DeleteTenant: %v", err)
	}
	var kinds []string
	for _, c := range p.lst.commands() {
		switch {
		case c.GetSetTenant() != nil:
			kinds = append(kinds, "set_tenant")
		case c.GetRegisterNode() != nil:
			if !proto.Equal(c.GetRegisterNode(), n9) {
				t.Errorf("registered %v, want %v", c.GetRegisterNode(), n9)
			}
			kinds = append(kinds, "register_node")
		case c.GetDeleteTenant() != nil:
			kinds = append(kinds, "delete_tenant")
		}
	}
	// AddNonVoter of n8 has no gRPC address: nothing to register.
	if got := strings.Join(kinds, ","); got != "set_tenant,register_node,delete_tenant" {
		t.Fatalf("leader proposals %s", got)
	}
}

func TestForwardWithoutUsableLeader(t *testing.T) {
	tests := []struct {
		name     string
		leaderID string
		leader   func(self *cellv1.NodeInfo, dead string) *cellv1.NodeInfo
		hint     func(dead string) string
	}{
		{"leader unknown", "", func(*cellv1.NodeInfo, string) *cellv1.NodeInfo { return nil }, func(string) string { return "" }},
		{"leader not registered", "n2", func(*cellv1.NodeInfo, string) *cellv1.NodeInfo { return nil }, func(string) string { return "" }},
		{"leader is this node", "n1", func(self *cellv1.NodeInfo, _ string) *cellv1.NodeInfo { return self }, func(string) string { return "" }},
		{"leader unreachable", "n2", func(_ *cellv1.NodeInfo, dead string) *cellv1.NodeInfo {
			return &cellv1.NodeInfo{NodeId: "n2", RaftAddr: fakeLeaderRaft, GrpcAddr: dead}
		}, func(string) string { return "" }},
		{"hint only, unreachable", "", func(*cellv1.NodeInfo, string) *cellv1.NodeInfo { return nil }, func(dead string) string { return dead }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			deadLis := testutil.Listen(t)
			dead := deadLis.Addr().String()
			if err := deadLis.Close(); err != nil {
				t.Fatal(err)
			}
			lis := testutil.Listen(t)
			self := &cellv1.NodeInfo{NodeId: "n1", GrpcAddr: lis.Addr().String()}
			fst := &fakeStore{follower: true, leaderID: tt.leaderID, leader: tt.leader(self, dead), hintAddr: tt.hint(dead)}
			n := serveNode(t, fst, self, lis, nil)
			ctx := as(testutil.Context(t, 10*time.Second), "acme", 0)
			_, err := n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{textEntry("u", "x")}})
			e := wantErr(t, err, codes.Unavailable, cperr.CellUnavailable)
			if e.RetryAfter <= 0 {
				t.Fatalf("no RetryInfo in %v", e)
			}
		})
	}
}

func TestStaleReadIsServedLocally(t *testing.T) {
	p := newPair(t)
	p.fst.readErr = cperr.New(cperr.KeyNotFound, "no such key")
	ctx := as(testutil.Context(t, 10*time.Second), "acme", 0)
	_, err := p.follower.ctx.GetMemory(ctx, &contextv1.GetMemoryRequest{Key: "k", ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}})
	wantErr(t, err, codes.NotFound, cperr.KeyNotFound)
	for {
		select {
		case md := <-p.leader.seen:
			t.Fatalf("the leader was called: %v", md)
		default:
			return
		}
	}
}

func TestRequestsRejectedBeforeTheStore(t *testing.T) {
	lis := testutil.Listen(t)
	fst := &fakeStore{}
	n := serveNode(t, fst, &cellv1.NodeInfo{NodeId: "n1", GrpcAddr: lis.Addr().String()}, lis, nil)
	base := testutil.Context(t, 10*time.Second)
	ctx := as(base, "acme", 0)
	tests := []struct {
		name  string
		err   error
		field string
	}{
		{"no tenant", second(n.ctx.GetContext(base, &contextv1.GetContextRequest{ContextId: "c"})), tenantmd.TenantKey},
		{"bad tenant", second(n.ctx.Append(as(base, "a/b", 0), &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{textEntry("u", "x")}})), tenantmd.TenantKey},
		{"bad epoch", second(n.ctx.Append(metadata.AppendToOutgoingContext(base, tenantmd.TenantKey, "a", tenantmd.EpochKey, "x"), &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{textEntry("u", "x")}})), tenantmd.EpochKey},
		{"bad context id", second(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "no spaces"})), "context_id"},
		{"big content", second(n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{textEntry("u", "x"), textEntry("u", strings.Repeat("x", 1<<20+1))}})), "entries[1].content"},
		{"empty key", second(n.ctx.PutMemory(ctx, &contextv1.PutMemoryRequest{})), "key"},
		{"long key", second(n.ctx.GetMemory(ctx, &contextv1.GetMemoryRequest{Key: strings.Repeat("k", 513)})), "key"},
		{"bad token", second(n.ctx.ListContexts(ctx, &contextv1.ListContextsRequest{PageToken: "%%%"})), "page_token"},
		{"foreign token", second(n.ctx.ListContexts(ctx, &contextv1.ListContextsRequest{PageToken: encodePageToken(kindMemory, "k")})), "page_token"},
		{"watch id", watchErr(n.ctx.Watch(ctx, &contextv1.WatchRequest{ContextId: ""})), "context_id"},
		{"watch no tenant", watchErr(n.ctx.Watch(base, &contextv1.WatchRequest{ContextId: "c"})), tenantmd.TenantKey},
		{"role unspecified", second(n.cell.SetTenant(base, &cellv1.SetTenantRequest{Tenant: "t", Epoch: 1})), "role"},
		{"epoch zero", second(n.cell.SetTenant(base, &cellv1.SetTenantRequest{Tenant: "t", Role: cellv1.Role_ROLE_OWNER})), "epoch"},
		{"voter without raft addr", second(n.cell.AddVoter(base, &cellv1.AddVoterRequest{Node: &cellv1.NodeInfo{NodeId: "n2"}})), "node.raft_addr"},
		{"remove without id", second(n.cell.RemoveServer(base, &cellv1.RemoveServerRequest{})), "node_id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantField(t, tt.err, tt.field) })
	}
	if got := fst.commands(); len(got) != 0 {
		t.Fatalf("rejected requests reached the store: %v", got)
	}
}

func TestUntranslatedStoreErrorsDoNotLeak(t *testing.T) {
	lis := testutil.Listen(t)
	fst := &fakeStore{propose: func(*cellv1.Command) (*cellv1.CommandResult, error) {
		return nil, errors.New("pebble: disk on fire at /var/lib/secret")
	}}
	n := serveNode(t, fst, &cellv1.NodeInfo{NodeId: "n1", GrpcAddr: lis.Addr().String()}, lis, nil)
	ctx := as(testutil.Context(t, 10*time.Second), "acme", 0)
	_, err := n.ctx.DeleteContext(ctx, &contextv1.DeleteContextRequest{ContextId: "c"})
	wantErr(t, err, codes.Internal, cperr.Internal)
	if strings.Contains(err.Error(), "pebble") || strings.Contains(err.Error(), "secret") {
		t.Fatalf("internals leaked: %v", err)
	}
	// A rejection carried in the result (not the error) is still an error.
	fst.propose = func(*cellv1.Command) (*cellv1.CommandResult, error) {
		return &cellv1.CommandResult{Error: &cellv1.CommandError{Reason: string(cperr.StaleEpoch), Message: "epoch 2 is not current", Metadata: map[string]string{cperr.MetaEpoch: "3"}}}, nil
	}
	_, err = n.ctx.DeleteContext(ctx, &contextv1.DeleteContextRequest{ContextId: "c"})
	if e := wantErr(t, err, codes.FailedPrecondition, cperr.StaleEpoch); e.Metadata[cperr.MetaEpoch] != "3" {
		t.Fatalf("metadata %v", e.Metadata)
	}
	// A result without its payload is a store bug, reported as INTERNAL.
	fst.propose = func(*cellv1.Command) (*cellv1.CommandResult, error) { return &cellv1.CommandResult{}, nil }
	_, err = n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{textEntry("u", "x")}})
	wantErr(t, err, codes.Internal, cperr.Internal)
}

func TestCloseStopsForwarding(t *testing.T) {
	p := newPair(t)
	if err := p.follower.svc.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := as(testutil.Context(t, 10*time.Second), "acme", 0)
	_, err := p.follower.ctx.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: "k"})
	wantErr(t, err, codes.Unavailable, cperr.CellUnavailable)
}

func TestStatusFromFollower(t *testing.T) {
	p := newPair(t)
	ctx := testutil.Context(t, 10*time.Second)
	st, err := p.follower.cell.GetStatus(ctx, &cellv1.GetStatusRequest{})
	if err != nil {
		t.Fatalf("GetStatus: %v", err)
	}
	if st.GetNode().GetNodeId() != "n1" || st.GetState() != "Follower" || st.GetLeaderId() != "n2" || st.GetTerm() != 3 {
		t.Fatalf("GetStatus = %v", st)
	}
	if len(st.GetMembers()) != 2 || !st.GetMembers()[1].GetLeader() || st.GetMembers()[0].GetNode().GetRaftAddr() != "127.0.0.1:7211" {
		t.Fatalf("members %v", st.GetMembers())
	}
	if st.GetLeader().GetGrpcAddr() != p.leader.info.GetGrpcAddr() {
		t.Fatalf("leader %v", st.GetLeader())
	}
}

func second[T any](_ T, err error) error { return err }

// watchErr returns the first error of a watch stream.
func watchErr(stream interface {
	Recv() (*contextv1.WatchResponse, error)
}, err error) error {
	if err != nil {
		return err
	}
	for {
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
}

// lastSeen returns the metadata of the last call the node served.
func lastSeen(t *testing.T, n *node) metadata.MD {
	t.Helper()
	var md metadata.MD
	for {
		select {
		case m := <-n.seen:
			md = m
		default:
			if md == nil {
				t.Fatal("the node served no call")
			}
			return md
		}
	}
}

func first(md metadata.MD, key string) string {
	if v := md.Get(key); len(v) > 0 {
		return v[0]
	}
	return ""
}

func hasValue(md metadata.MD, key string) bool { return first(md, key) != "" }
