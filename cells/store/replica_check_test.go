package store

import (
	"errors"
	"log/slog"
	"testing"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// changeEvent is what a source streams for cmd at tseq.
func changeEvent(tseq uint64, cmd *cellv1.Command) *cellv1.ChangeEvent {
	if cmd.Version == 0 {
		cmd.Version = commandVersion
	}
	if cmd.TimeUnixNano == 0 {
		cmd.TimeUnixNano = testT0 + int64(tseq)*1e6
	}
	return &cellv1.ChangeEvent{Tseq: tseq, TimeUnixNano: cmd.GetTimeUnixNano(), Command: cmd, Result: &cellv1.CommandResult{Tseq: tseq}}
}

// events numbers cmds as consecutive change events from tseq first.
func events(first uint64, cmds ...*cellv1.Command) []*cellv1.ChangeEvent {
	evs := make([]*cellv1.ChangeEvent, len(cmds))
	for i, c := range cmds {
		evs[i] = changeEvent(first+uint64(i), c)
	}
	return evs
}

// crossTenantSetup: "victim" is OWNER here with a context, entries and a
// memory key; "evil" is a bootstrapped standby (tseq 0) of cell "src".
func crossTenantSetup() []*cellv1.Command {
	return []*cellv1.Command{
		ownedBy("victim"), createContext("victim", "vc"), appendText("victim", "vc", "v1", "secret"), putMemory("victim", "k", "mine"),
		standbyOf("evil", "src", 1, false), importChunk("evil", "src", true, nil, &cellv1.TenantRecord{}),
	}
}

func nested(tenant string, op *cellv1.Command) *cellv1.Command { op.Tenant = tenant; return op }

// TestApplyChangesRefusesForeignEvents (H3): a batch with any event that
// names another tenant, carries an operation no source logs, or is out of
// order is refused whole with REPLICATION_EVENT_REJECTED; nothing of the
// cell's state changes (compared key for key, values byte for byte).
//
// Remove the checkEvents call in applyChanges and every "rejected" case
// fails (the cross-tenant ones write into victim's range).
func TestApplyChangesRefusesForeignEvents(t *testing.T) {
	tests := []struct {
		name string
		evs  []*cellv1.ChangeEvent
		ok   bool // a legitimate batch: applied
	}{
		{"own events", events(1, createContext("evil", "c"), appendText("evil", "c", "r", "x"), putMemory("evil", "k", "v")), true},
		{"own fence and an ignorable newer op", events(1, putMemory("evil", "k", "v"), setTenant("evil", fenced, 2), unknownOp("evil", true)), true},
		{"put into victim", events(1, putMemory("victim", "k", "pwned")), false},
		{"append to victim's context", events(1, appendText("victim", "vc", "", "injected")), false},
		{"delete victim's context", events(1, deleteContext("victim", "vc")), false},
		{"unnamed tenant", events(1, &cellv1.Command{Op: &cellv1.Command_PutMemory{PutMemory: &contextv1.PutMemoryRequest{Key: "k"}}}), false},
		{"mixed batch, one bad event", events(1, createContext("evil", "c"), putMemory("victim", "k", "pwned"), putMemory("evil", "k", "v")), false},
		{"bad event last", events(1, createContext("evil", "c"), appendText("evil", "c", "", "x"), deleteMemory("victim", "k")), false},
		{"nested delete_tenant", events(1, deleteTenant("evil")), false},
		{"nested import", events(1, importChunk("evil", "src", true, []*cellv1.KeyValue{{Key: []byte("x"), Value: []byte("y")}}, nil)), false},
		{"nested apply_changes", events(1, applyEvents("evil", events(1, putMemory("victim", "k", "pwned")))), false},
		{"nested standby", events(1, nested("evil", setTenant("evil", standby, 5))), false},
		{"nested replica_ack", events(1, &cellv1.Command{Tenant: "evil", Op: &cellv1.Command_ReplicaAck{ReplicaAck: &cellv1.ReplicaAckOp{Tseq: 9}}}), false},
		{"nested register_node", events(1, nested("evil", registerNode("n9", "h:1"))), false},
		{"nested cell_settings", events(1, &cellv1.Command{Tenant: "evil", Op: &cellv1.Command_CellSettings{CellSettings: &cellv1.CellSettings{DedupWindow: 1}}}), false},
		{"nested noop", events(1, nested("evil", noop())), false},
		{"unknown op", events(1, unknownOp("evil", false)), false},
		{"newer version", events(1, futureVersion(putMemory("evil", "k", "v"), false)), false},
		{"tseq going back", []*cellv1.ChangeEvent{changeEvent(2, putMemory("evil", "a", "1")), changeEvent(1, putMemory("evil", "b", "1"))}, false},
		{"tseq repeated", []*cellv1.ChangeEvent{changeEvent(1, putMemory("evil", "a", "1")), changeEvent(1, putMemory("evil", "b", "1"))}, false},
		{"tseq zero", []*cellv1.ChangeEvent{changeEvent(0, putMemory("evil", "a", "1"))}, false},
		{"no command", []*cellv1.ChangeEvent{{Tseq: 1}}, false},
		{"null event", []*cellv1.ChangeEvent{nil}, false},
		{"logged rejection", []*cellv1.ChangeEvent{{Tseq: 1, Command: putMemory("evil", "k", "v"), Result: &cellv1.CommandResult{Error: &cellv1.CommandError{Reason: "X"}}}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rejected := 0
			h := newFSM(t, func(c *fsmConfig) { c.onRejected = func() { rejected++ } })
			for _, c := range crossTenantSetup() {
				h.mustApply(c)
			}
			before := h.dump(false)
			res := h.applyOne(applyEvents("evil", tc.evs))
			if tc.ok {
				if res.GetError() != nil || res.GetTseq() != uint64(len(tc.evs)) || rejected != 0 {
					t.Fatalf("legitimate batch: %v (rejected %d)", res, rejected)
				}
				return
			}
			if reasonOf(res) != string(cperr.ReplicationEventRejected) {
				t.Fatalf("reason = %q (%v), want REPLICATION_EVENT_REJECTED", reasonOf(res), res)
			}
			if md := res.GetError().GetMetadata(); md[cperr.MetaTenant] != "evil" || md[cperr.MetaTseq] == "" {
				t.Errorf("metadata = %v, want tenant and tseq", md)
			}
			if rejected != 1 {
				t.Errorf("counted %d rejections, want 1", rejected)
			}
			if d := diffDumps(before, h.dump(false)); d != "" {
				t.Fatalf("refused batch wrote: %s", d)
			}
			h.tenant("victim", func(v *TenantView) {
				if item, err := v.Memory("k"); err != nil || string(item.GetValue()) != "mine" {
					t.Errorf("victim's memory k = %v, %v", item, err)
				}
			})
		})
	}
}

// TestProposeRefusesInvalidEvents: on the leader, a batch is also checked
// with the client validators before it is proposed (nothing reaches the
// log); with that check skipped (ProposeUnchecked, as an older leader
// would propose), the state machine still refuses a cross-tenant batch on
// every replica. Victim, an OWNER here, keeps its data either way.
func TestProposeRefusesInvalidEvents(t *testing.T) {
	for _, unchecked := range []bool{false, true} {
		name := "checked at propose"
		if unchecked {
			name = "checked in the state machine"
		}
		t.Run(name, func(t *testing.T) {
			s := openSingle(t, "", func(c *Config) { c.TestingKnobs.ProposeUnchecked = unchecked })
			for _, c := range crossTenantSetup() {
				mustPropose(t, s, c)
			}
			before := dumpRange(t, s.fsm, nil, nil, false)
			batches := [][]*cellv1.ChangeEvent{
				events(1, createContext("evil", "c"), appendText("victim", "vc", "", "injected")),
				events(1, putMemory("victim", "k", "pwned")),
			}
			if !unchecked {
				// What a client could not send: the validator refuses it.
				batches = append(batches, events(1, appendText("evil", "c", "", "")), events(1, createContext("evil", "")))
				batches[2][0].Command.GetAppend().Entries[0].Role = ""
			}
			for i, evs := range batches {
				_, err := s.Propose(testCtx(t), applyEvents("evil", evs))
				if !errors.Is(err, cperr.ErrReplicationEventRejected) {
					t.Fatalf("batch %d: %v, want REPLICATION_EVENT_REJECTED", i, err)
				}
			}
			if d := diffDumps(before, dumpRange(t, s.fsm, nil, nil, false)); d != "" {
				t.Fatalf("refused batches wrote: %s", d)
			}
			if got := readAll(t, s, "victim", "vc"); len(got) != 1 || got[0].GetText() != "secret" {
				t.Errorf("victim's entries = %v", got)
			}
			stage := "propose"
			if unchecked {
				stage = "apply"
			}
			if n := counterValue(t, s.metrics.eventsRejected.WithLabelValues(stage)); n != float64(len(batches)) {
				t.Errorf("%s rejections counted %v, want %d", stage, n, len(batches))
			}
			// The stream goes on once the source sends its own events.
			if res := mustPropose(t, s, applyEvents("evil", events(1, createContext("evil", "c")))); res.GetTseq() != 1 {
				t.Errorf("legitimate batch: %v", res)
			}
		})
	}
}

// FuzzApplyChanges feeds adversarial apply_changes batches (arbitrary
// events: commands, tenants, operations, tseqs) to a standby "evil" in a
// cell where "victim" is OWNER. Invariants: no key outside evil's data
// range and record changes (victim's data and record, node and cell keys
// are untouched), and a batch with an event naming another tenant is
// refused whole.
func FuzzApplyChanges(f *testing.F) {
	seeds := [][]*cellv1.ChangeEvent{
		events(1, createContext("evil", "c"), appendText("evil", "c", "r", "x")),
		events(1, putMemory("victim", "k", "pwned")),
		events(1, createContext("evil", "c"), deleteContext("victim", "vc")),
		events(1, applyEvents("evil", events(1, putMemory("victim", "k", "pwned")))),
		events(1, deleteTenant("evil"), importChunk("evil", "src", true, nil, nil)),
		events(1, nested("evil", registerNode("n9", "h:1")), nested("evil", setTenant("evil", standby, 4))),
		events(1, setTenant("evil", fenced, 2), unknownOp("evil", true), unknownOp("victim", true)),
		{changeEvent(3, putMemory("evil", "a", "1")), changeEvent(2, putMemory("victim", "b", "1"))},
		events(1, createContext("evil\x00c", "x"), putMemory("evi", "l\x00c", "x")),
	}
	for _, evs := range seeds {
		b, err := marshalOpts.Marshal(&cellv1.ApplyChangesOp{Events: evs})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var op cellv1.ApplyChangesOp
		if proto.Unmarshal(data, &op) != nil {
			return
		}
		h := newFSM(t, func(c *fsmConfig) { c.log = slog.New(slog.DiscardHandler) })
		for _, c := range crossTenantSetup() {
			h.mustApply(c)
		}
		outside := func() []kv {
			var out []kv
			for _, e := range h.dump(false) {
				k := []byte(e.k)
				if e.k == string(recordKey("evil")) || (string(k) >= string(tenantPrefix("evil")) && string(k) < string(tenantEnd("evil"))) {
					continue
				}
				out = append(out, e)
			}
			return out
		}
		before, all := outside(), h.dump(false)
		res := h.applyOne(applyEvents("evil", op.GetEvents()))
		if d := diffDumps(before, outside()); d != "" {
			t.Fatalf("a batch of evil's changed keys outside its range: %s (result %v)", d, res)
		}
		foreign := false
		for _, ev := range op.GetEvents() {
			if c := ev.GetCommand(); c != nil && c.GetTenant() != "evil" {
				foreign = true
			}
		}
		rejected := reasonOf(res) == string(cperr.ReplicationEventRejected)
		if foreign && !rejected {
			t.Fatalf("a batch naming another tenant was not refused: %v", res)
		}
		if rejected {
			if d := diffDumps(all, h.dump(false)); d != "" {
				t.Fatalf("a refused batch wrote: %s", d)
			}
		}
	})
}

// counterValue reads a counter's current value.
func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}
