package routing

import (
	"testing"
	"time"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// TestSnapshotBytesLimits (H4): a tenant's byte rate and burst survive the
// snapshot file; a version 3 file (without them) is still read, its
// tenants on the router's default byte limits.
func TestSnapshotBytesLimits(t *testing.T) {
	st := memtopo.New()
	defer st.Close()
	fixture(t, st, 3)
	rec := tenant("t001", "c2", active, 9)
	rec.Limits = &cpv1.TenantLimits{Rate: 100, Burst: 10, BytesRate: 4096, BytesBurst: 8192}
	put(t, st, topo.TenantKey("t001"), rec)
	v, _ := loadView(t, st)
	want := Limits{Rate: 100, Burst: 10, BytesRate: 4096, BytesBurst: 8192}
	lookup := func(v *view, id string) Route {
		tb := &Table{}
		tb.view.Store(v)
		r, ok := tb.Lookup(id)
		if !ok {
			t.Fatalf("no route for %s", id)
		}
		return r
	}
	if got := lookup(v, "t001").Limits; got != want {
		t.Fatalf("loaded limits %+v, want %+v", got, want)
	}
	v2, _, err := decodeSnapshot(encodeSnapshot(v, time.Now()))
	if err != nil {
		t.Fatal(err)
	}
	if got := lookup(v2, "t001").Limits; got != want {
		t.Fatalf("limits after a round trip %+v, want %+v", got, want)
	}
	v3, _, err := decodeSnapshot(encodeSnapshotFormat(v, time.Now(), snapshotVersionBytes-1))
	if err != nil {
		t.Fatalf("decode a version 3 snapshot: %v", err)
	}
	if got := lookup(v3, "t001").Limits; got != (Limits{Rate: 100, Burst: 10}) {
		t.Fatalf("limits from a version 3 snapshot %+v, want the request limits only", got)
	}
}
