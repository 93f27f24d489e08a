package catalog_test

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestNewRecord: every key kind has its message, so a new kind cannot be
// added to topo without saying here what it stores.
func TestNewRecord(t *testing.T) {
	tests := []struct {
		key  string
		want proto.Message
	}{
		{topo.RegionKey("r"), &cpv1.Region{}},
		{topo.CellKey("c"), &cpv1.Cell{}},
		{topo.CellLoadKey("c"), &cpv1.CellLoad{}},
		{topo.CellBootstrapKey("c"), &cpv1.CellBootstrap{}},
		{topo.CellLeaderKey("c"), &cpv1.CellLeader{}},
		{topo.CellNodeKey("c", "n"), &cpv1.Node{}},
		{topo.CellAuthorityKey("c"), &cpv1.CellAuthority{}},
		{topo.CellFenceKey("c", "t"), &cpv1.CellFence{}},
		{topo.TenantKey("t"), &cpv1.Tenant{}},
		{topo.APIKeyKey("t", "k"), &cpv1.ApiKey{}},
		{topo.WorkflowKey("w"), &cpv1.Workflow{}},
		{topo.MoveKey("m"), &cpv1.Move{}},
		{topo.FailoverKey("f"), &cpv1.Failover{}},
		{topo.DrainKey("c"), &cpv1.DrainCellRequest{}},
		{topo.TokenPublicKeyKey("k"), &cpv1.TokenPublicKey{}},
		{topo.TokenPrivateKeyKey("k"), &cpv1.TokenPrivateKey{}},
		{topo.RevokedTokenKey("t", catalog.RevokedSubjectID("alice")), &cpv1.RevokedToken{}},
		{"controller/leader/x", nil},
	}
	seen := map[topo.KeyKind]bool{}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			kind := topo.ParseKey(tc.key).Kind
			seen[kind] = true
			got := catalog.NewRecord(kind)
			if (got == nil) != (tc.want == nil) || (got != nil && got.ProtoReflect().Descriptor() != tc.want.ProtoReflect().Descriptor()) {
				t.Fatalf("NewRecord(%v) = %T, want %T", kind, got, tc.want)
			}
		})
	}
	for k := topo.KindUnknown; k <= topo.KindRevokedToken; k++ {
		if !seen[k] {
			t.Errorf("kind %d has no case in this test", k)
		}
	}
}

func put(t *testing.T, st topo.Store, key string, msg proto.Message) {
	t.Helper()
	if _, err := st.Txn(testutil.Context(t, 5*time.Second), nil, []topo.Op{topo.Put(key, catalog.Encode(msg))}); err != nil {
		t.Fatal(err)
	}
}

func TestListRecords(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	st := memtopo.New()
	t.Cleanup(func() { _ = st.Close() })
	put(t, st, topo.TenantKey("b"), &cpv1.Tenant{Id: "b", Cell: "c1"})
	put(t, st, topo.TenantKey("a"), &cpv1.Tenant{Id: "a", Cell: "c2"})
	put(t, st, topo.APIKeyKey("a", "k1"), &cpv1.ApiKey{Id: "k1", Tenant: "a"}) // another kind under tenants/
	if _, err := st.Txn(ctx, nil, []topo.Op{topo.Put(topo.TenantKey("zz"), []byte{0xff})}); err != nil {
		t.Fatal(err)
	}

	if _, _, err := catalog.ListTenants(ctx, st); !errors.Is(err, catalog.ErrCorrupt) {
		t.Fatalf("ListTenants with a corrupt record: %v, want ErrCorrupt", err)
	}
	recs, rev, err := catalog.ListDecodable(ctx, st, topo.TenantsPrefix, topo.KindTenant, catalog.NewTenant)
	if err != nil || rev == 0 {
		t.Fatalf("ListDecodable: %v (revision %d)", err, rev)
	}
	if len(recs) != 2 || recs[0].Value.GetId() != "a" || recs[0].Parsed.ID != "a" || recs[0].Version == 0 || recs[1].Value.GetId() != "b" {
		t.Fatalf("ListDecodable = %v, want a and b in key order with versions", recs)
	}
	keys, _, err := catalog.List(ctx, st, topo.TenantKeysPrefix("a"), topo.KindAPIKey, catalog.NewAPIKey)
	if err != nil || len(keys) != 1 || keys[0].GetId() != "k1" {
		t.Fatalf("List API keys = %v, %v", keys, err)
	}

	st.FailNext(memtopo.OpList, topo.MovesPrefix, topo.ErrUnavailable, 1)
	if _, _, err := catalog.ListMoves(ctx, st); !errors.Is(catalog.StoreError(err), cperr.ErrControlPlaneUnavailable) {
		t.Fatalf("ListMoves on an unreachable store: %v, want CONTROLPLANE_UNAVAILABLE after StoreError", err)
	}
}

func TestGetRecord(t *testing.T) {
	ctx := testutil.Context(t, 10*time.Second)
	st := memtopo.New()
	t.Cleanup(func() { _ = st.Close() })
	if _, err := catalog.GetCellLeader(ctx, st, "c1"); !errors.Is(err, topo.ErrNotFound) {
		t.Fatalf("GetCellLeader of nothing: %v", err)
	}
	if _, err := st.Txn(ctx, nil, []topo.Op{topo.Put(topo.CellLeaderKey("c1"), []byte{0xff})}); err != nil {
		t.Fatal(err)
	}
	rec, err := catalog.GetCellLeader(ctx, st, "c1")
	if !errors.Is(err, catalog.ErrCorrupt) || rec.Version == 0 || rec.Key != topo.CellLeaderKey("c1") {
		t.Fatalf("GetCellLeader of a corrupt record = %+v, %v: want ErrCorrupt with the version set", rec, err)
	}
	put(t, st, topo.CellLeaderKey("c1"), &cpv1.CellLeader{NodeId: "n1", Term: 3})
	rec, err = catalog.GetCellLeader(ctx, st, "c1")
	if err != nil || rec.Value.GetNodeId() != "n1" || rec.Parsed.Kind != topo.KindCellLeader {
		t.Fatalf("GetCellLeader = %+v, %v", rec, err)
	}
}

func TestDecodeEvent(t *testing.T) {
	fence := catalog.Encode(&cpv1.CellFence{Tenant: "acme", Epoch: 2})
	tests := []struct {
		name     string
		ev       topo.Event
		kind     topo.KeyKind
		value    bool
		corrupt  bool
		putFence bool // DecodePut as a fence: ok
	}{
		{"fence put", topo.Event{Type: topo.EventPut, KV: topo.KV{Key: topo.CellFenceKey("c1", "acme"), Value: fence}}, topo.KindCellFence, true, false, true},
		{"fence delete", topo.Event{Type: topo.EventDelete, KV: topo.KV{Key: topo.CellFenceKey("c1", "acme")}}, topo.KindCellFence, false, false, false},
		{"corrupt cell", topo.Event{Type: topo.EventPut, KV: topo.KV{Key: topo.CellKey("c1"), Value: []byte{0xff}}}, topo.KindCell, false, true, false},
		{"unknown key", topo.Event{Type: topo.EventPut, KV: topo.KV{Key: "cells/c1/other", Value: []byte{0xff}}}, topo.KindUnknown, false, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := catalog.DecodeEvent(tc.ev)
			if e.Key.Kind != tc.kind || (e.Value != nil) != tc.value || errors.Is(err, catalog.ErrCorrupt) != tc.corrupt {
				t.Fatalf("DecodeEvent = %+v, %v", e, err)
			}
			rec, ok, err := catalog.DecodePut(tc.ev, topo.KindCellFence, catalog.NewFence)
			if ok != tc.putFence || err != nil || (ok && rec.Value.GetTenant() != "acme") {
				t.Fatalf("DecodePut = %+v, %t, %v", rec, ok, err)
			}
		})
	}
}
