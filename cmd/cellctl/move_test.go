package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestMoveHelp(t *testing.T) {
	tests := []struct {
		golden string
		args   []string
	}{
		{"help-tenant-move.golden", []string{"tenant", "move", "--help"}},
		{"help-move.golden", []string{"move", "--help"}},
		{"help-cell-drain.golden", []string{"cell", "drain", "--help"}},
		{"help-tenant-standby-set.golden", []string{"tenant", "standby", "set", "--help"}},
	}
	for _, tt := range tests {
		t.Run(tt.golden, func(t *testing.T) {
			r := runCmd(t.Context(), tt.args...)
			if r.code != 0 || r.err != "" {
				t.Fatalf("%v: exit %d, stderr %q", tt.args, r.code, r.err)
			}
			checkGolden(t, tt.golden, r.out)
		})
	}
}

func TestMoveUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"move without target", []string{"tenant", "move", "acme"}, "--to is required"},
		{"wait and dry run", []string{"tenant", "move", "acme", "--to", "b", "--wait", "--dry-run"}, "--wait and --dry-run are exclusive"},
		{"standby without where", []string{"tenant", "standby", "set", "acme"}, "--region or --cell is required"},
		{"standby region and cell", []string{"tenant", "standby", "set", "acme", "--region", "r", "--cell", "c"}, "--region and --cell are exclusive"},
		{"move get without id", []string{"move", "get"}, "want 1 argument(s) <id>, got 0"},
		{"drain without cell", []string{"cell", "drain"}, "want 1 argument(s) <cell>, got 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkOneLineError(t, runCmd(testutil.Context(t, 10*time.Second), tt.args...), 2, tt.want)
		})
	}
}

// moveNormalizers replace what varies in move output, after normalize.
var moveNormalizers = []struct {
	re          *regexp.Regexp
	placeholder string
}{
	{regexp.MustCompile(`\b[a-z0-9]+-[0-9a-f]{8}\b`), "<MOVE-ID>"},
	{regexp.MustCompile(`\b\d+(\.\d+)?(ns|µs|ms|s)\b`), "<DURATION>"},
}

func normalizeMoves(s string) string {
	s = normalize(s)
	for _, n := range moveNormalizers {
		s = replacePadded(s, n.re, n.placeholder)
	}
	return s
}

// replacePadded replaces matches of re with placeholder, padding it to the
// width of the match inside a table column (like normalize).
func replacePadded(s string, re *regexp.Regexp, placeholder string) string {
	var b strings.Builder
	last := 0
	for _, loc := range re.FindAllStringIndex(s, -1) {
		b.WriteString(s[last:loc[0]])
		b.WriteString(placeholder)
		if w := loc[1] - loc[0]; len(placeholder) < w && strings.HasPrefix(s[loc[1]:], "  ") {
			b.WriteString(strings.Repeat(" ", w-len(placeholder)))
		}
		last = loc[1]
	}
	b.WriteString(s[last:])
	return b.String()
}

// startMoveControlPlane is a real control plane whose leader moves fast
// (small grace period) and holds moves of tenant "slowpoke" before the
// fence until they are cancelled; cells use1-a, use1-b (us-east) and
// euw1-a (eu-west), one node each.
func startMoveControlPlane(t *testing.T) string {
	t.Helper()
	env := cptest.New(t)
	cp := env.AddReplica(t, "cp2", func(c *controlplane.Config) {
		m := &c.Controller.Moves
		m.PollInterval = 20 * time.Millisecond
		m.CleanupGrace = 100 * time.Millisecond
		m.DrainInterval = 100 * time.Millisecond
		m.StandbyResyncInterval = 500 * time.Millisecond
		c.Controller.TestingKnobs.BeforeMoveStep = func(_ context.Context, mv *cpv1.Move) error {
			if mv.GetTenant() == "slowpoke" && mv.GetState() == cpv1.MoveState_MOVE_STATE_CATCHING_UP && !mv.GetCancelRequested() {
				return errors.New("held by the test until cancelled") // driven again when the record changes
			}
			return nil
		}
	})
	_ = env.Replicas[0].Close() // cp2 leads from here on
	addr := cp.GRPCAddr()
	for _, args := range [][]string{
		{"region", "create", "us-east"},
		{"region", "create", "eu-west"},
		{"cell", "create", "use1-a", "--region", "us-east", "--members", "1"},
		{"cell", "create", "use1-b", "--region", "us-east", "--members", "1"},
		{"cell", "create", "euw1-a", "--region", "eu-west", "--members", "1"},
	} {
		mustCP(t, addr, args...)
	}
	for _, c := range []string{"use1-a", "use1-b", "euw1-a"} {
		env.StartNodes(t, c, 1)
	}
	cl := cptest.Dial(t, addr)
	testutil.Eventually(t, 30*time.Second, func() error {
		if !cp.IsLeader() {
			return errors.New("cp2 does not lead yet")
		}
		for _, c := range []string{"use1-a", "use1-b", "euw1-a"} {
			resp, err := cl.GetCell(testutil.Context(t, 5*time.Second), &cpv1.GetCellRequest{Id: c})
			if err != nil {
				return err
			}
			if h := resp.GetCell().GetHealth(); h != cpv1.CellHealth_CELL_HEALTH_HEALTHY {
				return fmt.Errorf("cell %s is %s", c, h)
			}
		}
		return nil
	})
	return addr
}

// TestMoveCommands drives standbys, moves, cancels and a drain through
// cellctl against a real control plane and real cells (subtests in order).
func TestMoveCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, two control-plane replicas and three cells")
	}
	addr := startMoveControlPlane(t)
	var moveID string
	t.Run("create with a standby", func(t *testing.T) {
		out := mustCP(t, addr, "tenant", "create", "acme", "--region", "us-east", "--cell", "use1-a", "--standby-region", "eu-west")
		if out != "tenant acme created on cell use1-a (region us-east, epoch 1, ACTIVE, standby euw1-a)\n" {
			t.Fatalf("create: %q", out)
		}
		waitCaughtUp(t, addr, "acme")
		checkGolden(t, "tenant-get-standby.golden", normalizeMoves(mustCP(t, addr, "tenant", "get", "acme")))
	})
	t.Run("dry run", func(t *testing.T) {
		checkGolden(t, "move-dry-run.golden", normalizeMoves(mustCP(t, addr, "tenant", "move", "acme", "--to", "use1-b", "--dry-run")))
		if out := mustCP(t, addr, "move", "list", "--all"); strings.Count(out, "\n") != 1 {
			t.Fatalf("a dry run recorded a move:\n%s", out)
		}
	})
	t.Run("move and wait", func(t *testing.T) {
		out := mustCP(t, addr, "tenant", "move", "acme", "--to", "use1-b", "--wait")
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		first, lastLine := lines[0], lines[len(lines)-1]
		if !strings.HasPrefix(first, "move acme-") || !strings.HasSuffix(first, ": tenant acme from use1-a to use1-b (epoch 1 -> 2)") {
			t.Errorf("first line %q", first)
		}
		if !strings.Contains(lastLine, " DONE in ") || !strings.HasSuffix(lastLine, "; tenant acme is on use1-b at epoch 2") {
			t.Errorf("last line %q", lastLine)
		}
		if len(lines) < 3 || !strings.HasPrefix(lines[1], "  ") {
			t.Errorf("no progress line:\n%s", out)
		}
		moveID = strings.TrimSuffix(strings.Fields(first)[1], ":")
		checkGolden(t, "move-get.golden", normalizeMoves(mustCP(t, addr, "move", "get", moveID)))
		var got cpv1.GetMoveResponse
		if err := protojson.Unmarshal([]byte(mustCP(t, addr, "move", "get", moveID, "-o", "json")), &got); err != nil ||
			got.GetMove().GetState() != cpv1.MoveState_MOVE_STATE_DONE || got.GetMove().GetFlipTime() == nil {
			t.Fatalf("move get -o json: %v %v", got.GetMove(), err)
		}
		var tn cpv1.GetTenantResponse
		if err := protojson.Unmarshal([]byte(mustCP(t, addr, "tenant", "get", "acme", "-o", "json")), &tn); err != nil ||
			tn.GetTenant().GetCell() != "use1-b" || tn.GetTenant().GetEpoch() != 2 || tn.GetTenant().GetStandbyCell() != "euw1-a" {
			t.Fatalf("tenant after the move: %v %v", tn.GetTenant(), err)
		}
		checkOneLineError(t, cp(t, addr, "move", "cancel", moveID), 1, "MOVE_NOT_CANCELLABLE: move "+moveID+" already ended DONE")
		checkOneLineError(t, cp(t, addr, "move", "get", "nope-00000000"), 1, "cellctl move get: MOVE_NOT_FOUND: ")
		checkOneLineError(t, cp(t, addr, "tenant", "move", "acme", "--to", "use1-b"), 1, "INVALID_ARGUMENT: ")
		checkOneLineError(t, cp(t, addr, "tenant", "move", "acme", "--to", "euw1-a"), 1, "is the tenant's standby")
	})
	t.Run("cancel while waiting", func(t *testing.T) {
		mustCP(t, addr, "tenant", "create", "slowpoke", "--region", "us-east", "--cell", "use1-a")
		done := make(chan result, 1)
		go func() {
			done <- runCmd(testutil.Context(t, 60*time.Second), "--controlplane", addr, "tenant", "move", "slowpoke", "--to", "use1-b", "--wait")
		}()
		var id string
		testutil.Eventually(t, 20*time.Second, func() error {
			var l cpv1.ListMovesResponse
			if err := protojson.Unmarshal([]byte(mustCP(t, addr, "move", "list", "--tenant", "slowpoke", "-o", "json")), &l); err != nil {
				return err
			}
			if len(l.GetMoves()) != 1 || l.GetMoves()[0].GetState() != cpv1.MoveState_MOVE_STATE_CATCHING_UP {
				return fmt.Errorf("moves %v", l.GetMoves())
			}
			id = l.GetMoves()[0].GetId()
			return nil
		})
		checkGolden(t, "move-list.golden", normalizeMoves(mustCP(t, addr, "move", "list")))
		if out := mustCP(t, addr, "move", "cancel", id); out != "cancel of move "+id+" requested (it was CATCHING_UP); the control plane deletes the copy on use1-b, tenant slowpoke stays on use1-a\n" {
			t.Errorf("cancel: %q", out)
		}
		var r result
		select {
		case r = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("tenant move --wait did not end after the cancel")
		}
		if r.code != 1 || !strings.HasSuffix(r.err, "cellctl tenant move: move "+id+" ended CANCELLED: cancelled by request; the tenant stays on use1-a\n") {
			t.Errorf("--wait of a cancelled move: exit %d, stderr %q", r.code, r.err)
		}
		if out := mustCP(t, addr, "move", "cancel", id); out != "move "+id+" is CANCELLED; tenant slowpoke stays on use1-a\n" {
			t.Errorf("second cancel: %q", out)
		}
		checkGolden(t, "move-list-all.golden", normalizeMoves(mustCP(t, addr, "move", "list", "--all")))
	})
	t.Run("standby clear and set", func(t *testing.T) {
		if out := mustCP(t, addr, "tenant", "standby", "clear", "acme"); out != "standby euw1-a of tenant acme removed\n" {
			t.Errorf("clear: %q", out)
		}
		if out := mustCP(t, addr, "tenant", "standby", "clear", "acme"); out != "tenant acme has no standby\n" {
			t.Errorf("clear again: %q", out)
		}
		checkOneLineError(t, cp(t, addr, "tenant", "standby", "set", "acme", "--region", "us-east"), 1, "INVALID_ARGUMENT: ")
		if out := mustCP(t, addr, "tenant", "standby", "set", "acme", "--cell", "euw1-a"); out != "tenant acme has standby euw1-a (owner use1-b, epoch 2); it copies the data and follows the owner: 'cellctl tenant get acme' shows its lag\n" {
			t.Errorf("set: %q", out)
		}
		waitCaughtUp(t, addr, "acme")
	})
	t.Run("drain", func(t *testing.T) {
		out := mustCP(t, addr, "cell", "drain", "use1-b", "--concurrency", "1", "--wait")
		if !strings.HasPrefix(out, "cell use1-b: 1 tenant(s) left") || !strings.HasSuffix(out, "cell use1-b drained (DRAINING)\n") {
			t.Errorf("drain --wait:\n%s", out)
		}
		var tn cpv1.GetTenantResponse
		if err := protojson.Unmarshal([]byte(mustCP(t, addr, "tenant", "get", "acme", "-o", "json")), &tn); err != nil || tn.GetTenant().GetCell() != "use1-a" {
			t.Fatalf("tenant after the drain: %v %v", tn.GetTenant(), err)
		}
		checkOneLineError(t, cp(t, addr, "cell", "drain", "nope"), 1, "CELL_NOT_FOUND: ")
	})
}

// waitCaughtUp waits until the tenant's standby reports no lag.
func waitCaughtUp(t *testing.T, addr, tenant string) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, func() error {
		var resp cpv1.GetTenantResponse
		if err := protojson.Unmarshal([]byte(mustCP(t, addr, "tenant", "get", tenant, "-o", "json")), &resp); err != nil {
			return err
		}
		r := resp.GetReplication()
		if r == nil || r.GetState() != "STREAMING" || r.GetLagEvents() != 0 || r.GetAppliedTseq() == 0 {
			return fmt.Errorf("replication %v", r)
		}
		return nil
	})
}
