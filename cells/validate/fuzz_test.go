package validate

import (
	"errors"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/tokens"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// fuzzLimits are small so that the fuzzer reaches every bound quickly.
func fuzzLimits() Limits {
	l := DefaultLimits()
	l.MaxIDLen = 8
	l.MaxRequestBytes = 4096
	l.MaxEntriesPerAppend = 4
	l.MaxEntryContentBytes = 64
	l.MaxRoleBytes = 8
	l.EntryMetadata = MapLimits{MaxPairs: 2, MaxKeyBytes: 8, MaxValueBytes: 16}
	l.Labels = l.EntryMetadata
	l.MaxMemoryKeyBytes = 16
	l.MaxMemoryValueBytes = 64
	l.MaxPageTokenBytes = 32
	return l
}

// checkResult is the invariant of every validator: nil, or an
// INVALID_ARGUMENT *cperr.Error with at least one described violation.
func checkResult(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	var ce *cperr.Error
	if !errors.As(err, &ce) || !errors.Is(err, cperr.ErrInvalidArgument) {
		t.Fatalf("got %T %v, want INVALID_ARGUMENT", err, err)
	}
	if len(ce.Violations) == 0 {
		t.Fatalf("no violations in %v", err)
	}
	for _, v := range ce.Violations {
		if v.Field == "" || v.Description == "" {
			t.Fatalf("incomplete violation %+v", v)
		}
	}
}

// FuzzContextRequests decodes arbitrary bytes as each ContextService
// request and runs its validator: it must never panic, and what it accepts
// must really be within the limits.
func FuzzContextRequests(f *testing.F) {
	seed := func(m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(&contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: "hi"}, Metadata: map[string]string{"k": "v"}}}, RequestId: "r", ExpectedSeq: proto.Uint64(0)})
	seed(&contextv1.PutMemoryRequest{Key: "a/b", Value: []byte("v"), ExpectedRevision: proto.Uint64(1)})
	seed(&contextv1.PutMemoryRequest{Key: "k", Value: []byte("v"), Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT})
	seed(&contextv1.PutMemoryRequest{Key: "k", Value: []byte("v"), Embedding: []float32{0.5, -1, 0}})
	seed(&contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "user", Embedding: []float32{1, 2}}}})
	seed(&contextv1.GetMemoryRequest{Key: "k", Scope: 7})
	seed(&contextv1.CreateContextRequest{ContextId: "ctx", Labels: map[string]string{"a": "b"}})
	seed(&contextv1.ReadRequest{ContextId: "c", Start: &contextv1.ReadRequest_Tail{Tail: 3}, ReadOptions: &contextv1.ReadOptions{Consistency: 3}})
	f.Add([]byte{})
	f.Add([]byte{0x0a, 0x01, 0x00})
	lim := fuzzLimits()
	f.Fuzz(func(t *testing.T, b []byte) {
		var app contextv1.AppendRequest
		if proto.Unmarshal(b, &app) == nil {
			err := Append(lim, &app)
			checkResult(t, err)
			if err == nil {
				if !ids.Valid(app.GetContextId(), lim.MaxIDLen) || len(app.GetEntries()) == 0 || len(app.GetEntries()) > lim.MaxEntriesPerAppend {
					t.Fatalf("accepted %v", &app)
				}
				for _, e := range app.GetEntries() {
					if len(e.GetText()) > lim.MaxEntryContentBytes || len(e.GetData()) > lim.MaxEntryContentBytes || e.GetRole() == "" || len(e.GetMetadata()) > lim.EntryMetadata.MaxPairs {
						t.Fatalf("accepted entry %v", e)
					}
				}
			}
		}
		var put contextv1.PutMemoryRequest
		if proto.Unmarshal(b, &put) == nil {
			err := PutMemory(lim, &put)
			checkResult(t, err)
			if err == nil && (put.GetKey() == "" || len(put.GetKey()) > lim.MaxMemoryKeyBytes || len(put.GetValue()) > lim.MaxMemoryValueBytes) {
				t.Fatalf("accepted %v", &put)
			}
			if _, known := contextv1.MemoryScope_name[int32(put.GetScope())]; err == nil && !known {
				t.Fatalf("accepted unknown scope %v", &put)
			}
		}
		var gm contextv1.GetMemoryRequest
		if proto.Unmarshal(b, &gm) == nil {
			err := GetMemory(lim, &gm)
			checkResult(t, err)
			if _, known := contextv1.MemoryScope_name[int32(gm.GetScope())]; err == nil && !known {
				t.Fatalf("accepted unknown scope %v", &gm)
			}
		}
		var cc contextv1.CreateContextRequest
		if proto.Unmarshal(b, &cc) == nil {
			checkResult(t, CreateContext(lim, &cc))
		}
		var rd contextv1.ReadRequest
		if proto.Unmarshal(b, &rd) == nil {
			checkResult(t, Read(lim, &rd))
		}
		var lm contextv1.ListMemoryRequest
		if proto.Unmarshal(b, &lm) == nil {
			checkResult(t, ListMemory(lim, &lm))
		}
		var dm contextv1.DeleteMemoryRequest
		if proto.Unmarshal(b, &dm) == nil {
			checkResult(t, DeleteMemory(lim, &dm))
		}
	})
}

// FuzzCellRequests does the same for CellService's mutating requests.
func FuzzCellRequests(f *testing.F) {
	for _, m := range []proto.Message{
		&cellv1.SetTenantRequest{Tenant: "t", Role: cellv1.Role_ROLE_OWNER, Epoch: 1},
		&cellv1.AddVoterRequest{Node: &cellv1.NodeInfo{NodeId: "n", RaftAddr: "h:1", GrpcAddr: "h:2"}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	lim := fuzzLimits()
	f.Fuzz(func(t *testing.T, b []byte) {
		var st cellv1.SetTenantRequest
		if proto.Unmarshal(b, &st) == nil {
			err := SetTenant(lim, &st)
			checkResult(t, err)
			if err == nil && (st.GetEpoch() == 0 || st.GetRole() == cellv1.Role_ROLE_UNSPECIFIED) {
				t.Fatalf("accepted %v", &st)
			}
		}
		var av cellv1.AddVoterRequest
		if proto.Unmarshal(b, &av) == nil {
			checkResult(t, AddVoter(lim, &av))
		}
		var rn cellv1.RegisterNodeRequest
		if proto.Unmarshal(b, &rn) == nil {
			checkResult(t, RegisterNode(lim, &rn))
		}
		var dt cellv1.DeleteTenantRequest
		if proto.Unmarshal(b, &dt) == nil {
			checkResult(t, DeleteTenant(lim, &dt))
		}
	})
}

// FuzzAuditRequests: the erasure and audit validators never panic, and an
// accepted erase names exactly one subject.
func FuzzAuditRequests(f *testing.F) {
	for _, m := range []proto.Message{
		&cellv1.EraseSubjectRequest{Tenant: "t", Principal: "alice@example.com"},
		&cellv1.EraseSubjectRequest{Tenant: "t", ContextId: "c", RequestId: "r"},
		&cellv1.ListAuditRequest{Tenant: "t", Principal: "p", Limit: 10, SinceUnixNano: 1},
		&contextv1.EraseRequest{Principal: "alice", RequestId: "r", Wait: durationpb.New(time.Second)},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	lim := fuzzLimits()
	f.Fuzz(func(t *testing.T, b []byte) {
		var er cellv1.EraseSubjectRequest
		if proto.Unmarshal(b, &er) == nil {
			err := EraseSubject(lim, &er)
			checkResult(t, err)
			if err == nil && (er.GetPrincipal() == "") == (er.GetContextId() == "") {
				t.Fatalf("accepted %v", &er)
			}
		}
		var ce contextv1.EraseRequest
		if proto.Unmarshal(b, &ce) == nil {
			err := Erase(lim, &ce, time.Minute)
			checkResult(t, err)
			if err == nil && ((ce.GetPrincipal() == "") == (ce.GetContextId() == "") || ce.GetWait().AsDuration() > time.Minute || ce.GetWait().AsDuration() < 0) {
				t.Fatalf("accepted %v", &ce)
			}
		}
		var la cellv1.ListAuditRequest
		if proto.Unmarshal(b, &la) == nil {
			err := ListAudit(lim, &la)
			checkResult(t, err)
			if err == nil && la.GetLimit() > 1000 {
				t.Fatalf("accepted %v", &la)
			}
		}
	})
}

// FuzzReplicatedCommand decodes arbitrary bytes as a replicated Command:
// the validator never panics, and what it accepts names a valid tenant
// and, for a data operation, passes that operation's client validator.
func FuzzReplicatedCommand(f *testing.F) {
	for _, c := range []*cellv1.Command{
		{Tenant: "t", RequestId: "r", Op: &cellv1.Command_Append{Append: &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "user"}}}}},
		{Tenant: "t", Op: &cellv1.Command_CreateContext{CreateContext: &contextv1.CreateContextRequest{ContextId: "c"}}},
		{Tenant: "t", Op: &cellv1.Command_PutMemory{PutMemory: &contextv1.PutMemoryRequest{Key: "k"}}},
		{Tenant: "t", Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_FENCED, Epoch: 2}}},
		{Tenant: "t", Op: &cellv1.Command_ImportTenant{ImportTenant: &cellv1.ImportTenantOp{First: true}}},
		{Tenant: "t", Op: &cellv1.Command_EraseSubject{EraseSubject: &cellv1.EraseSubjectOp{Kind: cellv1.EraseSubjectOp_KIND_PRINCIPAL, SubjectSha256: make([]byte, 32)}}},
		{Tenant: "t", Op: &cellv1.Command_EraseSubject{EraseSubject: &cellv1.EraseSubjectOp{ErasedOp: "append", ErasedAtTseq: 9}}},
	} {
		b, err := proto.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	lim := fuzzLimits()
	f.Fuzz(func(t *testing.T, b []byte) {
		var c cellv1.Command
		if proto.Unmarshal(b, &c) != nil {
			return
		}
		err := ReplicatedCommand(lim, &c)
		checkResult(t, err)
		if err != nil {
			return
		}
		if !ids.Valid(c.GetTenant(), lim.MaxIDLen) {
			t.Fatalf("accepted tenant %q", c.GetTenant())
		}
		var opErr error
		switch op := c.GetOp().(type) {
		case *cellv1.Command_CreateContext:
			opErr = CreateContext(lim, op.CreateContext)
		case *cellv1.Command_Append:
			opErr = Append(lim, op.Append)
		case *cellv1.Command_PutMemory:
			opErr = PutMemory(lim, op.PutMemory)
		case *cellv1.Command_DeleteMemory:
			opErr = DeleteMemory(lim, op.DeleteMemory)
		case *cellv1.Command_DeleteContext:
			opErr = DeleteContext(lim, op.DeleteContext)
		case *cellv1.Command_SetTenant:
			if r := op.SetTenant.GetRole(); r != cellv1.Role_ROLE_OWNER && r != cellv1.Role_ROLE_FENCED {
				t.Fatalf("accepted set_tenant %v", op.SetTenant)
			}
		case *cellv1.Command_EraseSubject:
			if e := op.EraseSubject; e.GetErasedOp() == "" && len(e.GetSubjectSha256()) != 32 {
				t.Fatalf("accepted erase_subject %v", e)
			}
		}
		if opErr != nil {
			t.Fatalf("accepted %v, which its client validator refuses: %v", &c, opErr)
		}
	})
}

// FuzzCompact decodes arbitrary bytes as a CompactRequest (and a
// CreateContextRequest's encoding): the validator never panics, and what
// it accepts is within the limits.
func FuzzCompact(f *testing.F) {
	for _, m := range []proto.Message{
		&contextv1.CompactRequest{ContextId: "c", UpToSeq: 3, Summary: "gist", RequestId: "r"},
		&contextv1.CreateContextRequest{ContextId: "c", TokenEncoding: "o200k_base"},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	lim := fuzzLimits()
	f.Fuzz(func(t *testing.T, b []byte) {
		var req contextv1.CompactRequest
		if proto.Unmarshal(b, &req) == nil {
			err := Compact(lim, &req)
			checkResult(t, err)
			if err == nil && (!ids.Valid(req.GetContextId(), lim.MaxIDLen) || req.GetUpToSeq() == 0 || req.GetSummary() == "" ||
				len(req.GetSummary()) > lim.MaxEntryContentBytes || !utf8.ValidString(req.GetSummary())) {
				t.Fatalf("accepted %v", &req)
			}
		}
		var cc contextv1.CreateContextRequest
		if proto.Unmarshal(b, &cc) == nil {
			err := CreateContext(lim, &cc)
			checkResult(t, err)
			if e := cc.GetTokenEncoding(); err == nil && e != "" && tokens.Check(e) != nil {
				t.Fatalf("accepted encoding %q", e)
			}
		}
	})
}
