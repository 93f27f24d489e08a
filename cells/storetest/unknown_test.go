package storetest

import (
	"errors"
	"fmt"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"google.golang.org/protobuf/encoding/protowire"
)

// unknownCommand carries an operation no node knows (field 99).
func unknownCommand(ignorable bool) *cellv1.Command {
	c := &cellv1.Command{Tenant: "acme", Ignorable: ignorable}
	b := protowire.AppendTag(nil, 99, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("from the future"))
	c.ProtoReflect().SetUnknown(b)
	return c
}

// TestUnknownCommand: an ignorable unknown command is skipped; a
// non-ignorable one is refused at the door; one that a newer node managed
// to propose stops every node (Done closes, Err says why) rather than
// letting replicas diverge.
func TestUnknownCommand(t *testing.T) {
	newer := false
	c := NewCluster(t, 3, Options{Config: func(cfg *store.Config) { cfg.TestingKnobs.ProposeUnchecked = newer }})
	mustCreate(t, c, "acme", "c")
	ctx := testCtx(t, 20*time.Second)
	if _, err := c.Propose(ctx, unknownCommand(true)); err != nil {
		t.Fatalf("ignorable unknown command: %v", err)
	}
	if _, err := c.Propose(ctx, appendCmd("acme", "c", "", "still-fine")); err != nil {
		t.Fatalf("write after an ignorable command: %v", err)
	}
	if _, err := c.Leader().S().Propose(ctx, unknownCommand(false)); !errors.Is(err, cperr.ErrInvalidArgument) {
		t.Fatalf("unknown command: err = %v, want INVALID_ARGUMENT", err)
	}
	if _, err := c.Propose(ctx, appendCmd("acme", "c", "", "still-fine-2")); err != nil {
		t.Fatalf("write after a refused command: %v", err)
	}
	// The leader restarts as a "newer" node that proposes what others do not know.
	newer = true
	leader := c.Leader()
	c.Kill(leader.Index)
	c.Restart(leader.Index)
	var s *store.Store
	testutil.Eventually(t, 20*time.Second, func() error {
		if s = c.Leader().S(); s != c.Nodes[leader.Index].S() {
			_, err := s.TransferLeadership(ctx, leader.ID)
			return fmt.Errorf("leader is not the newer node yet (transfer: %v)", err)
		}
		return nil
	})
	if _, err := s.Propose(ctx, unknownCommand(false)); err == nil {
		t.Fatalf("unknown command was acknowledged")
	}
	for _, n := range c.Nodes {
		select {
		case <-n.S().Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not stop", n.ID)
		}
		if err := n.S().Err(); err == nil || !errors.Is(err, store.ErrUnknownCommand) {
			t.Fatalf("%s: Err() = %v", n.ID, err)
		}
	}
}
