package pki_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/cellplane/cellplane/internal/pki"
)

func TestParseIdentity(t *testing.T) {
	long := strings.Repeat("a", 129)
	tests := []struct {
		uri  string
		want pki.Identity // zero: an error
	}{
		{"spiffe://prod/region/eu/cell/c1/node/n1", pki.NodeIdentity("prod", "eu", "c1", "n1")},
		{"spiffe://prod/router/r-1", pki.RouterIdentity("prod", "r-1")},
		{"spiffe://prod/controlplane/cp0", pki.ControlPlaneIdentity("prod", "cp0")},
		{"spiffe://prod/worker/w_1.a", pki.WorkerIdentity("prod", "w_1.a")},
		{"spiffe://prod/operator/admin/alice", pki.OperatorIdentity("prod", pki.RoleAdmin, "alice")},
		{"spiffe://prod/operator/read-only/bob", pki.OperatorIdentity("prod", pki.RoleReadOnly, "bob")},
		{"spiffe://prod/client/acme", pki.ClientIdentity("prod", "acme")},
		{"spiffe://p.r_o-d/client/" + strings.Repeat("a", 128), pki.ClientIdentity("p.r_o-d", strings.Repeat("a", 128))},

		{"", pki.Identity{}},
		{"spiffe://", pki.Identity{}},
		{"spiffe://prod", pki.Identity{}},
		{"spiffe://prod/", pki.Identity{}},
		{"https://prod/router/r1", pki.Identity{}},
		{"SPIFFE://prod/router/r1", pki.Identity{}},
		{"spiffe://prod/router/r1/", pki.Identity{}},
		{"spiffe://prod//router/r1", pki.Identity{}},
		{"spiffe://prod/router/", pki.Identity{}},
		{"spiffe://prod/router/r1?x=1", pki.Identity{}},
		{"spiffe://prod/router/r1#f", pki.Identity{}},
		{"spiffe://prod:443/router/r1", pki.Identity{}},
		{"spiffe://u@prod/router/r1", pki.Identity{}},
		{"spiffe://prod/router/r%31", pki.Identity{}},
		{"spiffe://prod/router/..", pki.Identity{}},
		{"spiffe://prod/router/.", pki.Identity{}},
		{"spiffe://../router/r1", pki.Identity{}},
		{"spiffe://prod/router/" + long, pki.Identity{}},
		{"spiffe://prod/router/r 1", pki.Identity{}},
		{"spiffe://prod/operator/alice", pki.Identity{}},
		{"spiffe://prod/operator/root/alice", pki.Identity{}},
		{"spiffe://prod/operator/Admin/alice", pki.Identity{}},
		{"spiffe://prod/region/eu/cell/c1/node", pki.Identity{}},
		{"spiffe://prod/region/eu/zone/c1/node/n1", pki.Identity{}},
		{"spiffe://prod/node/n1", pki.Identity{}},
		{"spiffe://prod/tenant/acme", pki.Identity{}},
		{"spiffe://prod/client/acme/extra", pki.Identity{}},
	}
	for _, tt := range tests {
		t.Run(tt.uri, func(t *testing.T) {
			got, err := pki.ParseIdentity(tt.uri)
			if tt.want == (pki.Identity{}) {
				if err == nil || !errors.Is(err, pki.ErrBadIdentity) {
					t.Fatalf("ParseIdentity(%q) = %+v, %v; want ErrBadIdentity", tt.uri, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseIdentity(%q) = %+v, %v; want %+v", tt.uri, got, err, tt.want)
			}
			if s := got.String(); s != tt.uri {
				t.Errorf("String() = %q, want %q", s, tt.uri)
			}
		})
	}
}

func TestIdentityValidate(t *testing.T) {
	tests := []struct {
		name string
		id   pki.Identity
		ok   bool
	}{
		{"node", pki.NodeIdentity("c", "r", "c1", "n1"), true},
		{"operator", pki.OperatorIdentity("c", pki.RoleReadOnly, "x"), true},
		{"no cluster", pki.RouterIdentity("", "r1"), false},
		{"no id", pki.RouterIdentity("c", ""), false},
		{"unknown kind", pki.Identity{Cluster: "c", Kind: "tenant", ID: "x"}, false},
		{"no kind", pki.Identity{Cluster: "c"}, false},
		{"mixed fields", pki.Identity{Cluster: "c", Kind: pki.KindRouter, ID: "r1", Tenant: "acme"}, false},
		{"bad role", pki.OperatorIdentity("c", "root", "x"), false},
		{"bad char", pki.ClientIdentity("c", "a/b"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.id.Validate()
			if (err == nil) != tt.ok || err != nil && !errors.Is(err, pki.ErrBadIdentity) {
				t.Fatalf("Validate(%+v) = %v, want ok=%v", tt.id, err, tt.ok)
			}
		})
	}
}

func TestFileName(t *testing.T) {
	for id, want := range map[pki.Identity]string{
		pki.NodeIdentity("c", "eu", "c1", "n1"):           "node.eu.c1.n1",
		pki.RouterIdentity("c", "r1"):                     "router.r1",
		pki.ControlPlaneIdentity("c", "cp"):               "controlplane.cp",
		pki.WorkerIdentity("c", "w"):                      "worker.w",
		pki.OperatorIdentity("c", pki.RoleAdmin, "alice"): "operator.alice",
		pki.ClientIdentity("c", "acme"):                   "client.acme",
	} {
		if got := id.FileName(); got != want {
			t.Errorf("%s: FileName() = %q, want %q", id, got, want)
		}
	}
}

// FuzzParseIdentity: ParseIdentity never panics, accepts only valid
// identities, and what it accepts is the canonical spelling.
func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{
		"spiffe://prod/region/eu/cell/c1/node/n1", "spiffe://prod/router/r1", "spiffe://prod/operator/admin/a",
		"spiffe://prod/client/acme", "spiffe://prod/worker/..", "spiffe://prod/controlplane/x/y", "spiffe:///router/r1",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, uri string) {
		id, err := pki.ParseIdentity(uri)
		if err != nil {
			if !errors.Is(err, pki.ErrBadIdentity) {
				t.Fatalf("error %v does not wrap ErrBadIdentity", err)
			}
			return
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("accepted %q as %+v, which does not validate: %v", uri, id, err)
		}
		if s := id.String(); s != uri {
			t.Fatalf("accepted %q, but its canonical form is %q", uri, s)
		}
	})
}

func TestVerifyFuncs(t *testing.T) {
	node := pki.NodeIdentity("c", "eu", "c1", "n1")
	other := pki.NodeIdentity("c", "eu", "c1", "n2")
	if pki.ExpectKinds(pki.KindNode, pki.KindWorker)(node) != nil || pki.ExpectKinds(pki.KindRouter)(node) == nil {
		t.Error("ExpectKinds")
	}
	if pki.ExpectIdentity(node)(node) != nil || pki.ExpectIdentity(node)(other) == nil {
		t.Error("ExpectIdentity")
	}
}
