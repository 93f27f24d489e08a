package topo

import "testing"

func TestParseKey(t *testing.T) {
	tests := []struct {
		key  string
		want ParsedKey
	}{
		{RegionKey("us-east"), ParsedKey{Kind: KindRegion, ID: "us-east"}},
		{CellKey("c1"), ParsedKey{Kind: KindCell, ID: "c1"}},
		{CellLoadKey("c1"), ParsedKey{Kind: KindCellLoad, ID: "c1"}},
		{CellBootstrapKey("c1"), ParsedKey{Kind: KindCellBootstrap, ID: "c1"}},
		{CellLeaderKey("c1"), ParsedKey{Kind: KindCellLeader, ID: "c1"}},
		{CellNodeKey("c1", "n1"), ParsedKey{Kind: KindCellNode, ID: "c1", Sub: "n1"}},
		{TenantKey("acme"), ParsedKey{Kind: KindTenant, ID: "acme"}},
		{APIKeyKey("acme", "k1"), ParsedKey{Kind: KindAPIKey, ID: "acme", Sub: "k1"}},
		{WorkflowKey("create-acme"), ParsedKey{Kind: KindWorkflow, ID: "create-acme"}},
		{CellAuthorityKey("c1"), ParsedKey{Kind: KindCellAuthority, ID: "c1"}},
		{CellFenceKey("c1", "acme"), ParsedKey{Kind: KindCellFence, ID: "c1", Sub: "acme"}},
		{MoveKey("m1"), ParsedKey{Kind: KindMove, ID: "m1"}},
		{FailoverKey("f1"), ParsedKey{Kind: KindFailover, ID: "f1"}},
		{DrainKey("c1"), ParsedKey{Kind: KindDrain, ID: "c1"}},
		{TokenPublicKeyKey("k1"), ParsedKey{Kind: KindTokenPublicKey, ID: "k1"}},
		{TokenPrivateKeyKey("k1"), ParsedKey{Kind: KindTokenPrivateKey, ID: "k1"}},
		{"tokenkeys/public/", ParsedKey{}},
		{"tokenkeys/private/a/b", ParsedKey{}},
		{"tokenkeys/other/k1", ParsedKey{}},
		{RevokedTokenKey("acme", "sub-YWxpY2U"), ParsedKey{Kind: KindRevokedToken, ID: "acme", Sub: "sub-YWxpY2U"}},
		{"tenants/acme/revoked/", ParsedKey{}},
		{FailoverPolicyKey, ParsedKey{Kind: KindFailoverPolicy}},
		{"policies/failover/x", ParsedKey{}},
		{"drains/c1/x", ParsedKey{}},
		{"cells/c1/fence/", ParsedKey{}},
		{"moves/a/b", ParsedKey{}},
		{"regions/", ParsedKey{}},
		{"regions/a/b", ParsedKey{}},
		{"cells/", ParsedKey{}},
		{"cells/c1/nodes/", ParsedKey{}},
		{"cells/c1/other", ParsedKey{}},
		{"cells//load", ParsedKey{}},
		{"tenants/acme/keys", ParsedKey{}},
		{"tenants/acme/other/x", ParsedKey{}},
		{"workflows/a/b", ParsedKey{}},
		{"controller/leader/abc", ParsedKey{}},
		{"", ParsedKey{}},
	}
	for _, tc := range tests {
		t.Run(tc.key, func(t *testing.T) {
			if got := ParseKey(tc.key); got != tc.want {
				t.Fatalf("ParseKey(%q) = %+v, want %+v", tc.key, got, tc.want)
			}
		})
	}
}

// FuzzParseKey: a parsed key rebuilds to itself, and never panics.
func FuzzParseKey(f *testing.F) {
	for _, k := range []string{RegionKey("r"), CellNodeKey("c", "n"), APIKeyKey("t", "k"), "cells/x/y/z", "tenants//keys/"} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		pk := ParseKey(key)
		var back string
		switch pk.Kind {
		case KindUnknown:
			return
		case KindRegion:
			back = RegionKey(pk.ID)
		case KindCell:
			back = CellKey(pk.ID)
		case KindCellLoad:
			back = CellLoadKey(pk.ID)
		case KindCellBootstrap:
			back = CellBootstrapKey(pk.ID)
		case KindCellLeader:
			back = CellLeaderKey(pk.ID)
		case KindCellNode:
			back = CellNodeKey(pk.ID, pk.Sub)
		case KindTenant:
			back = TenantKey(pk.ID)
		case KindAPIKey:
			back = APIKeyKey(pk.ID, pk.Sub)
		case KindWorkflow:
			back = WorkflowKey(pk.ID)
		case KindCellAuthority:
			back = CellAuthorityKey(pk.ID)
		case KindCellFence:
			back = CellFenceKey(pk.ID, pk.Sub)
		case KindMove:
			back = MoveKey(pk.ID)
		case KindFailover:
			back = FailoverKey(pk.ID)
		case KindDrain:
			back = DrainKey(pk.ID)
		case KindFailoverPolicy:
			back = FailoverPolicyKey
		case KindTokenPublicKey:
			back = TokenPublicKeyKey(pk.ID)
		case KindTokenPrivateKey:
			back = TokenPrivateKeyKey(pk.ID)
		case KindRevokedToken:
			back = RevokedTokenKey(pk.ID, pk.Sub)
		}
		if back != key {
			t.Fatalf("ParseKey(%q) = %+v rebuilds as %q", key, pk, back)
		}
	})
}
