package cells_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/cells/celltest"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/memtopo"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The node forwards Config.TestingKnobs.Authority to its authority keeper:
// a real node's first publication runs AfterRead (what a chaos test needs
// to race a fence with it).
func TestAuthorityKnobsReachTheNode(t *testing.T) {
	st := memtopo.New()
	t.Cleanup(func() { _ = st.Close() })
	b, err := proto.Marshal(&cpv1.Cell{Id: "c1", Region: "r1", ExpectedMembers: 1, State: cpv1.CellState_CELL_STATE_ACTIVE})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Create(testutil.Context(t, 5*time.Second), topo.CellKey("c1"), b); err != nil {
		t.Fatalf("create cell: %v", err)
	}

	var reads atomic.Int64
	cfg := registryNode(t, st, "n1")
	cfg.Bootstrap = []store.Peer{{ID: "n1", Addr: cfg.RaftListener.Addr().String()}}
	cfg.TestingKnobs.Authority.AfterRead = func() { reads.Add(1) }
	n := celltest.StartNode(t, cfg)
	testutil.Eventually(t, 20*time.Second, func() error {
		if reads.Load() == 0 {
			return fmt.Errorf("AfterRead not called yet")
		}
		if !n.Authority().Valid() {
			return fmt.Errorf("authority not valid yet")
		}
		return nil
	})
}
