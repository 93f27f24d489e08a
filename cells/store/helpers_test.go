package store

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// testLogger sends logs to t.Log so they show only when a test fails.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// openSingle opens a one-node cell in dir (a fresh temp dir when empty)
// and waits until it leads.
func openSingle(t testing.TB, dir string, mutate ...func(*Config)) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.NodeID = "n1"
	cfg.RaftListener = ln
	cfg.DataDir = dir
	cfg.Bootstrap = []Peer{{ID: "n1", Addr: ln.Addr().String()}}
	cfg.Raft.HeartbeatTimeout = 50 * time.Millisecond
	cfg.Raft.ElectionTimeout = 50 * time.Millisecond
	cfg.Raft.LeaderLeaseTimeout = 50 * time.Millisecond
	cfg.Logger = testLogger(t)
	for _, m := range mutate {
		m(&cfg)
	}
	s, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	waitFor(t, 10*time.Second, func() bool { return s.IsLeader() && s.readyTerm.Load() == s.raft.CurrentTerm() })
	return s
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t testing.TB, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func mustPropose(t testing.TB, s *Store, c *cellv1.Command) *cellv1.CommandResult {
	t.Helper()
	res, err := s.Propose(testCtx(t), c)
	if err != nil {
		t.Fatalf("propose %s: %v", opName(c), err)
	}
	return res
}

func setOwner(t testing.TB, s *Store, tenant string, epoch uint64) {
	t.Helper()
	mustPropose(t, s, &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_OWNER, Epoch: epoch}}})
}

func createContext(tenant, id string) *cellv1.Command {
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_CreateContext{CreateContext: &contextv1.CreateContextRequest{ContextId: id}}}
}

func appendText(tenant, id, reqID string, texts ...string) *cellv1.Command {
	req := &contextv1.AppendRequest{ContextId: id}
	for _, tx := range texts {
		req.Entries = append(req.Entries, &contextv1.Entry{Role: "user", Content: &contextv1.Entry_Text{Text: tx}})
	}
	return &cellv1.Command{Tenant: tenant, RequestId: reqID, Op: &cellv1.Command_Append{Append: req}}
}

// readAll reads every entry of a context linearizably.
func readAll(t testing.TB, s *Store, tenant, id string) []*contextv1.Entry {
	t.Helper()
	var out []*contextv1.Entry
	err := s.ReadTenant(testCtx(t), tenant, 0, ReadOptions{}, func(v *TenantView) error {
		var err error
		out, err = v.Entries(id, 1, 1<<30, 1<<62)
		return err
	})
	if err != nil {
		t.Fatalf("read %s/%s: %v", tenant, id, err)
	}
	return out
}

// ---- state-machine harness (drives *fsm directly, no Raft) ----

// testT0 is the base of the harness clock: every command gets a distinct,
// deterministic time.
const testT0 = int64(1_700_000_000_000_000_000)

// fsmHarness feeds log entries to an fsm on an in-memory filesystem.
type fsmHarness struct {
	t     testing.TB
	f     *fsm
	fs    vfs.FS
	cfg   fsmConfig
	index uint64 // last Raft index handed out
	now   int64  // last command time handed out
	fatal []error
	// applied records the indexes passed to onApply.
	applied []uint64
}

// newFSM opens a state machine on a fresh in-memory filesystem with a
// dedup window of 100 ids (count only), an unbounded change log and a
// context-head cache of 4; mutate adjusts the
// config. The fsm is closed at cleanup.
func newFSM(t testing.TB, mutate ...func(*fsmConfig)) *fsmHarness {
	t.Helper()
	h := &fsmHarness{t: t, fs: vfs.NewMem(), now: testT0}
	h.cfg = fsmConfig{fs: h.fs, dir: "state", log: testLogger(t), dedupMaxIDs: 100, headCache: 4, dedupFilter: 4096} // a small head cache and dedup filters for about one tenant: evictions all the time
	for _, m := range mutate {
		m(&h.cfg)
	}
	h.cfg.onFatal = func(err error) { h.fatal = append(h.fatal, err) }
	h.cfg.onApply = func(i uint64) { h.applied = append(h.applied, i) }
	h.open()
	t.Cleanup(func() {
		if h.f != nil {
			if err := h.f.close(); err != nil {
				t.Errorf("close fsm: %v", err)
			}
		}
	})
	return h
}

// open (re)opens the state machine on the harness filesystem.
func (h *fsmHarness) open() {
	h.t.Helper()
	f, err := openFSM(h.cfg)
	if err != nil {
		h.t.Fatalf("open fsm: %v", err)
	}
	h.f = f
	h.index = max(h.index, f.applied.Load())
}

// reopen closes and reopens the state machine on the same filesystem, as a
// restart does.
func (h *fsmHarness) reopen() {
	h.t.Helper()
	if err := h.f.close(); err != nil {
		h.t.Fatalf("close fsm: %v", err)
	}
	h.open()
}

// stamp gives a command the version and time Propose would.
func (h *fsmHarness) stamp(c *cellv1.Command) *cellv1.Command {
	if c.Version == 0 {
		c.Version = commandVersion
	}
	if c.TimeUnixNano == 0 {
		h.now += int64(time.Millisecond)
		c.TimeUnixNano = h.now
	}
	return c
}

// entry builds the next log entry carrying cmds (stamped).
func (h *fsmHarness) entry(cmds ...*cellv1.Command) *raft.Log {
	h.t.Helper()
	for _, c := range cmds {
		h.stamp(c)
	}
	h.index++
	return &raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: encodeBatch(h.t, cmds...)}
}

// rawEntry builds the next log entry with arbitrary data.
func (h *fsmHarness) rawEntry(data []byte) *raft.Log {
	h.index++
	return &raft.Log{Index: h.index, Term: 1, Type: raft.LogCommand, Data: data}
}

func encodeBatch(t testing.TB, cmds ...*cellv1.Command) []byte {
	t.Helper()
	data, err := marshalOpts.Marshal(&cellv1.CommandBatch{Commands: cmds})
	if err != nil {
		t.Fatalf("encode batch: %v", err)
	}
	return data
}

// applyLogs hands logs to ApplyBatch in one call and returns the responses.
func (h *fsmHarness) applyLogs(logs ...*raft.Log) []*batchResponse {
	h.t.Helper()
	resps := h.f.ApplyBatch(logs)
	if len(resps) != len(logs) {
		h.t.Fatalf("ApplyBatch returned %d responses for %d logs", len(resps), len(logs))
	}
	out := make([]*batchResponse, len(resps))
	for i, r := range resps {
		if r == nil {
			continue
		}
		br, ok := r.(*batchResponse)
		if !ok {
			h.t.Fatalf("response %d is %T, want *batchResponse", i, r)
		}
		out[i] = br
	}
	return out
}

// apply applies cmds as one log entry and returns one result per command.
func (h *fsmHarness) apply(cmds ...*cellv1.Command) []*cellv1.CommandResult {
	h.t.Helper()
	r := h.applyLogs(h.entry(cmds...))[0]
	if r == nil || r.err != nil {
		h.t.Fatalf("apply %v: response %+v", cmds, r)
	}
	if len(r.results) != len(cmds) {
		h.t.Fatalf("apply: %d results for %d commands", len(r.results), len(cmds))
	}
	return r.results
}

// applyOne applies one command in its own log entry.
func (h *fsmHarness) applyOne(c *cellv1.Command) *cellv1.CommandResult {
	h.t.Helper()
	return h.apply(c)[0]
}

// mustApply applies one command and fails the test if it was rejected.
func (h *fsmHarness) mustApply(c *cellv1.Command) *cellv1.CommandResult {
	h.t.Helper()
	res := h.applyOne(c)
	if e := res.GetError(); e != nil {
		h.t.Fatalf("%s on %q rejected: %s %s %v", opName(c), c.GetTenant(), e.GetReason(), e.GetMessage(), e.GetMetadata())
	}
	return res
}

// tenant runs fn on a view of the tenant (whatever its role). It fails the
// test when the tenant does not exist.
func (h *fsmHarness) tenant(tenant string, fn func(v *TenantView)) {
	h.t.Helper()
	err := h.f.view(func(r pebble.Reader) error {
		rec, err := getRecord(r, tenant)
		if err != nil {
			return err
		}
		if rec == nil {
			return fmt.Errorf("tenant %q does not exist", tenant)
		}
		fn(&TenantView{r: r, tenant: tenant, rec: rec})
		return nil
	})
	if err != nil {
		h.t.Fatalf("view %s: %v", tenant, err)
	}
}

// record returns the tenant's record, or nil.
func (h *fsmHarness) record(tenant string) *cellv1.TenantRecord {
	h.t.Helper()
	var rec *cellv1.TenantRecord
	err := h.f.view(func(r pebble.Reader) error {
		var err error
		rec, err = getRecord(r, tenant)
		return err
	})
	if err != nil {
		h.t.Fatal(err)
	}
	return rec
}

// cell runs fn on a view of the whole cell.
func (h *fsmHarness) cell(fn func(v *CellView)) {
	h.t.Helper()
	if err := h.f.view(func(r pebble.Reader) error { fn(&CellView{r: r}); return nil }); err != nil {
		h.t.Fatal(err)
	}
}

// kv is one key of the state.
type kv struct{ k, v string }

// dump returns every key of the state in order. The applied index is left
// out unless withApplied.
func (h *fsmHarness) dump(withApplied bool) []kv {
	h.t.Helper()
	return dumpRange(h.t, h.f, nil, nil, withApplied)
}

// dumpRange returns the keys in [lower, upper) (nil: unbounded).
func dumpRange(t testing.TB, f *fsm, lower, upper []byte, withApplied bool) []kv {
	t.Helper()
	var out []kv
	err := f.view(func(r pebble.Reader) error {
		return scan(r, lower, upper, func(k, v []byte) (bool, error) {
			if !withApplied && bytes.Equal(k, keyApplied) {
				return true, nil
			}
			out = append(out, kv{string(k), string(v)})
			return true, nil
		})
	})
	if err != nil {
		t.Fatalf("dump: %v", err)
	}
	return out
}

// diffDumps describes how two dumps differ ("" when equal).
func diffDumps(a, b []kv) string {
	am, bm := map[string]string{}, map[string]string{}
	for _, e := range a {
		am[e.k] = e.v
	}
	for _, e := range b {
		bm[e.k] = e.v
	}
	var d []string
	for k, v := range am {
		if w, ok := bm[k]; !ok {
			d = append(d, fmt.Sprintf("removed %q", k))
		} else if w != v {
			d = append(d, fmt.Sprintf("changed %q", k))
		}
	}
	for k := range bm {
		if _, ok := am[k]; !ok {
			d = append(d, fmt.Sprintf("added %q", k))
		}
	}
	sort.Strings(d)
	return strings.Join(d, "; ")
}

// ---- command builders ----

func setTenant(tenant string, role cellv1.Role, epoch uint64) *cellv1.Command {
	op := &cellv1.SetTenantOp{Role: role, Epoch: epoch}
	if role == cellv1.Role_ROLE_STANDBY {
		op.SourceCell = "src"
	}
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_SetTenant{SetTenant: op}}
}

func deleteTenant(tenant string) *cellv1.Command {
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_DeleteTenant{DeleteTenant: &cellv1.DeleteTenantOp{}}}
}

// guardedDeleteTenant is a delete of a tenant that is one of roles (none:
// any) at epoch (0: any) here.
func guardedDeleteTenant(tenant string, epoch uint64, roles ...cellv1.Role) *cellv1.Command {
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_DeleteTenant{DeleteTenant: &cellv1.DeleteTenantOp{ExpectedEpoch: epoch, AllowedRoles: roles}}}
}

func deleteContext(tenant, id string) *cellv1.Command {
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_DeleteContext{DeleteContext: &contextv1.DeleteContextRequest{ContextId: id}}}
}

// appendExpect is appendText with expected_seq set.
func appendExpect(tenant, id string, expected uint64, texts ...string) *cellv1.Command {
	c := appendText(tenant, id, "", texts...)
	c.GetAppend().ExpectedSeq = &expected
	return c
}

// putMemory writes key=value; expected (optional) is the CAS revision.
func putMemory(tenant, key, value string, expected ...uint64) *cellv1.Command {
	req := &contextv1.PutMemoryRequest{Key: key, Value: []byte(value)}
	if len(expected) > 0 {
		req.ExpectedRevision = &expected[0]
	}
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_PutMemory{PutMemory: req}}
}

func deleteMemory(tenant, key string, expected ...uint64) *cellv1.Command {
	req := &contextv1.DeleteMemoryRequest{Key: key}
	if len(expected) > 0 {
		req.ExpectedRevision = &expected[0]
	}
	return &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_DeleteMemory{DeleteMemory: req}}
}

func registerNode(id, grpcAddr string) *cellv1.Command {
	return &cellv1.Command{Op: &cellv1.Command_RegisterNode{RegisterNode: &cellv1.NodeInfo{NodeId: id, RaftAddr: "127.0.0.1:1", GrpcAddr: grpcAddr}}}
}

func noop() *cellv1.Command {
	return &cellv1.Command{Op: &cellv1.Command_Noop{Noop: &cellv1.NoopOp{}}}
}

// withReq sets a command's request id; withEpoch its epoch.
func withReq(c *cellv1.Command, id string) *cellv1.Command { c.RequestId = id; return c }

func withEpoch(c *cellv1.Command, e uint64) *cellv1.Command { c.Epoch = e; return c }

// reasonOf returns a result's rejection reason ("" when applied).
func reasonOf(res *cellv1.CommandResult) string { return res.GetError().GetReason() }

// checkState verifies the bookkeeping of the whole state against the keys
// it describes: tenant count, per-tenant usage, context counters, the
// change log's [first, tseq] range and byte count, and the dedup window.
// It assumes tenant and context ids are valid ([A-Za-z0-9._-]).
func checkState(t testing.TB, f *fsm) {
	t.Helper()
	for _, p := range stateProblems(t, f) {
		t.Errorf("state invariant: %s", p)
	}
}

type tenantKeys struct {
	contexts map[string]*contextv1.Context
	entries  map[string][]*contextv1.Entry // by context id, in key order
	sums     map[string][]*contextv1.Summary
	memory   []*contextv1.MemoryItem
	memBytes uint64
	changes  []uint64
	chBytes  uint64
	events   []*cellv1.ChangeEvent
	dedup    int
	dedupQ   []uint64
	owned    map[string]string                // context id -> principal, from the owner index
	expiry   [][]byte                         // expiry index keys, relative to the 'x' kind
	memIdx   map[string]*contextv1.MemoryItem // by expiry-index kind and id
	audit    []*cellv1.AuditRecord
	erased   bool              // an erase scrubbed dedup records
	vectors  map[string]int    // vector keys (relative to the 'v' kind) -> bytes
	vecNS    map[byte]vectorNS // 'V' records
	// raw holds every key of the tenant (relative to its prefix) and the
	// keyword index's keys by kind (keyword_test.go keywordProblems).
	raw map[string][]byte
}

func stateProblems(t testing.TB, f *fsm) []string {
	t.Helper()
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, fmt.Sprintf(format, args...)) }
	recs := map[string]*cellv1.TenantRecord{}
	data := map[string]*tenantKeys{}
	tk := func(tenant string) *tenantKeys {
		if d, ok := data[tenant]; ok {
			return d
		}
		d := &tenantKeys{contexts: map[string]*contextv1.Context{}, entries: map[string][]*contextv1.Entry{}, owned: map[string]string{}, memIdx: map[string]*contextv1.MemoryItem{}, sums: map[string][]*contextv1.Summary{}, raw: map[string][]byte{}}
		data[tenant] = d
		return d
	}
	count, hasCount := int64(0), false
	for _, e := range dumpRange(t, f, nil, nil, true) {
		k, v := []byte(e.k), []byte(e.v)
		switch k[0] {
		case spaceMeta:
			switch {
			case bytes.Equal(k, keyApplied):
				if len(v) != 16 {
					bad("applied index value has %d bytes", len(v))
				}
			case bytes.Equal(k, keyTenantCount):
				hasCount = true
				n, err := strconv.ParseInt(e.v, 10, 64)
				if err != nil {
					bad("tenant count %q: %v", e.v, err)
				}
				count = n
			case bytes.Equal(k, keySettings):
				if err := proto.Unmarshal(v, &cellv1.CellSettings{}); err != nil {
					bad("cell settings: %v", err)
				}
			default:
				bad("unknown meta key %q", k)
			}
		case spaceNode:
			var n cellv1.NodeInfo
			if err := proto.Unmarshal(v, &n); err != nil || n.GetNodeId() != string(k[1:]) {
				bad("node key %q holds %v (%v)", k, &n, err)
			}
		case spaceRecord:
			var rec cellv1.TenantRecord
			if err := proto.Unmarshal(v, &rec); err != nil {
				bad("record %q: %v", k, err)
			}
			recs[string(k[1:])] = &rec
		case spaceTenant:
			i := bytes.IndexByte(k, 0)
			if i < 0 || i+1 >= len(k) {
				bad("tenant key %q has no kind", k)
				continue
			}
			d, rest := tk(string(k[1:i])), k[i+2:]
			d.raw[string(k[i+1:])] = v
			switch k[i+1] {
			case kindPosting, kindForward, kindKeywordStats:
				// checked whole below (keywordProblems)
			case kindContext:
				var c contextv1.Context
				if err := proto.Unmarshal(v, &c); err != nil || c.GetContextId() != string(rest) {
					bad("context key %q holds %v (%v)", k, &c, err)
				}
				d.contexts[string(rest)] = &c
			case kindEntry:
				j := bytes.IndexByte(rest, 0)
				if j < 0 || len(rest) != j+9 {
					bad("entry key %q is malformed", k)
					continue
				}
				var en contextv1.Entry
				if err := proto.Unmarshal(v, &en); err != nil || en.GetSeq() != binary.BigEndian.Uint64(rest[j+1:]) {
					bad("entry key %q holds seq %d (%v)", k, en.GetSeq(), err)
				}
				d.entries[string(rest[:j])] = append(d.entries[string(rest[:j])], &en)
			case kindSummary:
				j := bytes.IndexByte(rest, 0)
				if j < 0 || len(rest) != j+9 {
					bad("summary key %q is malformed", k)
					continue
				}
				var s contextv1.Summary
				if err := proto.Unmarshal(v, &s); err != nil || s.GetUpToSeq() != binary.BigEndian.Uint64(rest[j+1:]) || s.GetFromSeq() != 1 {
					bad("summary key %q holds %v (%v)", k, &s, err)
				}
				d.sums[string(rest[:j])] = append(d.sums[string(rest[:j])], &s)
			case kindMemory:
				var m contextv1.MemoryItem
				if err := proto.Unmarshal(v, &m); err != nil || m.GetKey() != string(rest) || m.GetRevision() == 0 {
					bad("memory key %q holds %v (%v)", k, &m, err)
				}
				d.memory = append(d.memory, &m)
				d.memIdx[string(kindMemory)+string(rest)] = &m
				d.memBytes += memoryBytes(&m)
			case kindPrincipalMemory:
				p, key, ok := splitPrincipalKey(rest)
				var m contextv1.MemoryItem
				if err := proto.Unmarshal(v, &m); !ok || p == "" || err != nil || m.GetKey() != key || m.GetRevision() == 0 {
					bad("principal memory key %q holds %v (%v)", k, &m, err)
				}
				d.memory = append(d.memory, &m)
				d.memIdx[string(kindPrincipalMemory)+string(rest)] = &m
				d.memBytes += memoryBytes(&m)
			case kindOwned:
				p, id, ok := splitPrincipalKey(rest)
				if !ok || p == "" || id == "" || len(v) != 0 {
					bad("owner index key %q is malformed", k)
					continue
				}
				d.owned[id] = p
			case kindChange:
				var ev cellv1.ChangeEvent
				if err := proto.Unmarshal(v, &ev); err != nil || len(rest) != 8 {
					bad("change key %q: %v", k, err)
					continue
				}
				tseq := binary.BigEndian.Uint64(rest)
				if ev.GetTseq() != tseq || ev.GetResult().GetTseq() != tseq {
					bad("change key %q holds event tseq %d result tseq %d", k, ev.GetTseq(), ev.GetResult().GetTseq())
				}
				d.changes = append(d.changes, tseq)
				d.chBytes += uint64(len(v))
				d.events = append(d.events, &ev)
			case kindDedup:
				d.dedup++
			case kindAudit:
				var ar cellv1.AuditRecord
				if err := proto.Unmarshal(v, &ar); err != nil || len(rest) != 8 || ar.GetTseq() != binary.BigEndian.Uint64(rest) {
					bad("audit key %q holds %v (%v)", k, &ar, err)
					continue
				}
				d.audit = append(d.audit, &ar)
				d.erased = d.erased || ar.GetErasedAtTseq() != 0 || ar.GetEraseKind() != cellv1.EraseSubjectOp_KIND_UNSPECIFIED
			case kindDedupQ:
				if len(rest) != 8 {
					bad("dedup queue key %q is malformed", k)
					continue
				}
				d.dedupQ = append(d.dedupQ, binary.BigEndian.Uint64(rest))
			case kindExpiry:
				d.expiry = append(d.expiry, bytes.Clone(rest))
			case kindVector:
				if _, ok := parseVectorKey(rest); !ok || len(v)%4 != 0 || len(v) == 0 {
					bad("vector key %q is malformed (%d bytes)", k, len(v))
				}
				if d.vectors == nil {
					d.vectors = map[string]int{}
				}
				d.vectors[string(rest)] = len(v)
			case kindVectorDims:
				if len(rest) != 1 || len(v) != 12 {
					bad("vector namespace key %q is malformed", k)
					continue
				}
				if d.vecNS == nil {
					d.vecNS = map[byte]vectorNS{}
				}
				d.vecNS[rest[0]] = decodeVectorNS(v)
			default:
				bad("unknown tenant key kind in %q", k)
			}
		default:
			bad("key %q in an unknown space", k)
		}
	}
	if hasCount || len(recs) > 0 {
		if count != int64(len(recs)) {
			bad("tenant count is %d, %d records exist", count, len(recs))
		}
	}
	for tenant := range data {
		if recs[tenant] == nil {
			bad("tenant %q has data but no record", tenant)
		}
	}
	for tenant, rec := range recs {
		d := tk(tenant)
		u := rec.GetUsage()
		var entries, entryBytes, live uint64
		refs := map[string]uint64{}
		for _, c := range d.contexts {
			if p := c.GetParentContextId(); p != "" {
				refs[p]++
				if pc := d.contexts[p]; pc == nil || pc.GetLastSeq() < c.GetParentSeq() {
					bad("%s/%s: forked from %q at %d, which does not hold it", tenant, c.GetContextId(), p, c.GetParentSeq())
				}
			}
		}
		for id, c := range d.contexts {
			if !c.GetDeleted() {
				live++
			} else if c.GetForkRefs() == 0 {
				bad("%s/%s: deleted context kept without forks", tenant, id)
			}
			if c.GetForkRefs() != refs[id] {
				bad("%s/%s: fork_refs %d, %d forks name it", tenant, id, c.GetForkRefs(), refs[id])
			}
			es := d.entries[id]
			var size, toks uint64
			for i, e := range es {
				if e.GetSeq() != c.GetParentSeq()+uint64(i)+1 {
					bad("%s/%s: entry %d has seq %d", tenant, id, i, e.GetSeq())
				}
				size += EntrySize(e) + 4*uint64(e.GetEmbeddingDims())
				toks += uint64(e.GetTokenCount())
			}
			if c.GetTotalTokens() != toks {
				bad("%s/%s: context says %d tokens; its entries hold %d", tenant, id, c.GetTotalTokens(), toks)
			}
			var compacted uint64
			for _, s := range d.sums[id] {
				if s.GetUpToSeq() <= compacted || s.GetUpToSeq() > c.GetLastSeq() {
					bad("%s/%s: summary up to %d after %d (last_seq %d)", tenant, id, s.GetUpToSeq(), compacted, c.GetLastSeq())
				}
				compacted = s.GetUpToSeq()
				size += uint64(len(s.GetText()))
			}
			if c.GetCompactedSeq() != compacted {
				bad("%s/%s: compacted_seq %d; newest summary up to %d", tenant, id, c.GetCompactedSeq(), compacted)
			}
			if c.GetLastSeq() != c.GetParentSeq()+uint64(len(es)) || c.GetEntryCount() != uint64(len(es)) || c.GetSizeBytes() != size {
				bad("%s/%s: context says last_seq %d entry_count %d size %d; %d entries of %d bytes stored",
					tenant, id, c.GetLastSeq(), c.GetEntryCount(), c.GetSizeBytes(), len(es), size)
			}
			entries += uint64(len(es))
			entryBytes += size
		}
		for id := range d.entries {
			if d.contexts[id] == nil {
				bad("%s: entries of missing context %q", tenant, id)
			}
		}
		// The owner index names exactly the live contexts with an owner
		// label (a deleted one that forks still read is not listed).
		for id, c := range d.contexts {
			want := c.GetLabels()[PrincipalLabel]
			if c.GetDeleted() {
				want = ""
			}
			if want != d.owned[id] {
				bad("%s/%s: owner label %q, index %q", tenant, id, want, d.owned[id])
			}
		}
		for id := range d.owned {
			if d.contexts[id] == nil {
				bad("%s: owner index names missing context %q", tenant, id)
			}
		}
		for _, x := range d.expiry {
			if len(x) < 9 {
				bad("%s: expiry key %q is malformed", tenant, x)
				continue
			}
			at, id := int64(binary.BigEndian.Uint64(x)), string(x[9:])
			var exp *timestamppb.Timestamp
			switch x[8] {
			case kindContext:
				exp = d.contexts[id].GetExpireTime()
			case kindMemory, kindPrincipalMemory:
				exp = d.memIdx[string(x[8])+id].GetExpireTime()
			}
			if exp == nil || exp.AsTime().UnixNano() != at {
				bad("%s: expiry index entry %d %c %q does not match its item (%v)", tenant, at, x[8], id, exp)
			}
		}
		indexed := 0
		for _, c := range d.contexts {
			if c.GetExpireTime() != nil {
				indexed++
			}
		}
		for _, m := range d.memory {
			if m.GetExpireTime() != nil {
				indexed++
			}
		}
		if indexed != len(d.expiry) {
			bad("%s: %d items have an expiry, %d index entries", tenant, indexed, len(d.expiry))
		}
		for _, p := range vectorProblems(tenant, d) {
			bad("%s", p)
		}
		for _, p := range keywordProblems(d.raw) {
			bad("%s: keyword index: %s", tenant, p)
		}
		for id := range d.sums {
			if d.contexts[id] == nil {
				bad("%s: summaries of missing context %q", tenant, id)
			}
		}
		if u.GetContexts() != live || u.GetEntries() != entries ||
			u.GetMemoryKeys() != uint64(len(d.memory)) || u.GetBytes() != entryBytes+d.memBytes {
			bad("%s: usage %v; stored contexts %d entries %d memory keys %d bytes %d",
				tenant, u, live, entries, len(d.memory), entryBytes+d.memBytes)
		}
		for _, m := range d.memory {
			if m.GetRevision() > rec.GetTseq() {
				bad("%s: memory %q revision %d above tseq %d", tenant, m.GetKey(), m.GetRevision(), rec.GetTseq())
			}
		}
		if rec.GetChangelogCount() != uint64(len(d.changes)) || rec.GetChangelogBytes() != d.chBytes {
			bad("%s: change log says %d events %d bytes; %d events %d bytes stored",
				tenant, rec.GetChangelogCount(), rec.GetChangelogBytes(), len(d.changes), d.chBytes)
		}
		for i, tseq := range d.changes {
			if want := rec.GetChangelogFirstTseq() + uint64(i); tseq != want {
				bad("%s: change log event %d has tseq %d, want %d", tenant, i, tseq, want)
				break
			}
		}
		if n := len(d.changes); n > 0 && d.changes[n-1] != rec.GetTseq() {
			bad("%s: last change event %d, tseq %d", tenant, d.changes[n-1], rec.GetTseq())
		}
		if n := len(d.changes); n > 0 && rec.GetChangelogFirstTimeUnixNano() != d.events[0].GetTimeUnixNano() {
			bad("%s: first change time %d, oldest event's %d", tenant, rec.GetChangelogFirstTimeUnixNano(), d.events[0].GetTimeUnixNano())
		}
		if rec.GetTseq() > 0 && len(d.changes) == 0 {
			bad("%s: tseq %d but an empty change log", tenant, rec.GetTseq())
		}
		// With a time window an id that came back after it expired has
		// two queue slots and one record.
		set := f.settings.Load()
		if rec.GetAuditCount() != uint64(len(d.audit)) {
			bad("%s: audit log says %d records; %d stored", tenant, rec.GetAuditCount(), len(d.audit))
		}
		for i, ar := range d.audit {
			if want := rec.GetAuditFirstTseq() + uint64(i); ar.GetTseq() != want {
				bad("%s: audit record %d has tseq %d, want %d", tenant, i, ar.GetTseq(), want)
				break
			}
		}
		if n := len(d.audit); n > 0 && (d.audit[n-1].GetTseq() != rec.GetTseq() || d.audit[0].GetTimeUnixNano() != rec.GetAuditFirstTimeUnixNano()) {
			bad("%s: audit log [%d..%d] from time %d; tseq %d, record says first time %d", tenant, d.audit[0].GetTseq(), d.audit[n-1].GetTseq(),
				d.audit[0].GetTimeUnixNano(), rec.GetTseq(), rec.GetAuditFirstTimeUnixNano())
		}
		if want := rec.GetDedupNext() - rec.GetDedupFirst(); uint64(d.dedup) > want || (set.GetDedupWindowNanos() == 0 && !d.erased && uint64(d.dedup) != want) ||
			uint64(len(d.dedupQ)) != want || want > set.GetDedupWindow()+dedupEvictChunk(set.GetDedupWindow()) || (want == 0) != (rec.GetDedupFirstTimeUnixNano() == 0) {
			bad("%s: dedup window [%d, %d) (limit %d); %d records %d queued", tenant, rec.GetDedupFirst(), rec.GetDedupNext(), f.settings.Load().GetDedupWindow(), d.dedup, len(d.dedupQ))
		}
		for i, q := range d.dedupQ {
			if q != rec.GetDedupFirst()+uint64(i) {
				bad("%s: dedup queue slot %d is %d", tenant, i, q)
				break
			}
		}
	}
	return probs
}

// vectorProblems checks a tenant's vectors: every entry and memory item
// with embedding_dims has its vector (of that size) and no vector lacks
// one; each namespace's count is its vectors'; a context's vector_count
// is its own entries' vectors.
func vectorProblems(tenant string, d *tenantKeys) []string {
	var probs []string
	bad := func(format string, args ...any) { probs = append(probs, tenant+": "+fmt.Sprintf(format, args...)) }
	want := map[string]int{}
	counts := map[byte]uint64{}
	for id, es := range d.entries {
		var n uint64
		for _, e := range es {
			if e.GetEmbeddingDims() > 0 {
				want[string(contextVectorKey("", id, e.GetSeq())[len(tenantKey("", kindVector, 0)):])] = 4 * int(e.GetEmbeddingDims())
				n++
			}
		}
		if c := d.contexts[id]; c != nil && c.GetVectorCount() != n {
			bad("context %q vector_count %d; %d entries have one", id, c.GetVectorCount(), n)
		}
		counts[VectorContexts] += n
	}
	for ik, m := range d.memIdx {
		if m.GetEmbeddingDims() == 0 {
			continue
		}
		p, key, ok := memoryScopeOfIndex(ik[0], ik[1:])
		if !ok {
			continue
		}
		want[string(memoryVectorKey("", p, key)[len(tenantKey("", kindVector, 0)):])] = 4 * int(m.GetEmbeddingDims())
		counts[VectorMemory]++
	}
	for k, n := range want {
		if d.vectors[k] != n {
			bad("vector %q: %d bytes stored, %d expected", k, d.vectors[k], n)
		}
	}
	for k := range d.vectors {
		if _, ok := want[k]; !ok {
			bad("vector %q has no entry or memory item", k)
		}
	}
	for _, ns := range []byte{VectorContexts, VectorMemory} {
		if d.vecNS[ns].count != counts[ns] {
			bad("vector namespace %c counts %d; %d stored", ns, d.vecNS[ns].count, counts[ns])
		}
	}
	return probs
}
