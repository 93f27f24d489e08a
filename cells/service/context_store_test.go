package service

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/internal/tokens"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestStoreContexts(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := as(testutil.Context(t, 30*time.Second), "acme", 0)

	created := must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "c1", Labels: map[string]string{"agent": "planner"}, RequestId: "rc1"}))(t)
	if c := created.GetContext(); c.GetContextId() != "c1" || c.GetLabels()["agent"] != "planner" || c.GetCreateTime() == nil || c.GetLastSeq() != 0 {
		t.Fatalf("CreateContext = %v", c)
	}
	// A retry with the same request id returns the first result.
	again := must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "c1", Labels: map[string]string{"agent": "planner"}, RequestId: "rc1"}))(t)
	if !proto.Equal(again.GetContext(), created.GetContext()) {
		t.Fatalf("retried CreateContext = %v, want %v", again.GetContext(), created.GetContext())
	}
	_, err := n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "c1", RequestId: "other"})
	wantErr(t, err, codes.AlreadyExists, cperr.AlreadyExists)

	minted := must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{}))(t).GetContext().GetContextId()
	if !regexp.MustCompile(`^ctx-[a-z2-7]{26}$`).MatchString(minted) {
		t.Fatalf("minted id %q", minted)
	}
	// A retried create without an id returns the first minted id.
	first := must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{RequestId: "mint-1"}))(t).GetContext().GetContextId()
	if retry := must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{RequestId: "mint-1"}))(t).GetContext().GetContextId(); retry != first {
		t.Fatalf("retried minting gave %q, then %q", first, retry)
	}

	got := must(n.ctx.GetContext(ctx, &contextv1.GetContextRequest{ContextId: minted}))(t)
	if got.GetContext().GetContextId() != minted {
		t.Fatalf("GetContext = %v", got)
	}
	for _, c := range []contextv1.Consistency{contextv1.Consistency_CONSISTENCY_LEADER, contextv1.Consistency_CONSISTENCY_STALE} {
		ro := &contextv1.ReadOptions{Consistency: c, MaxStaleness: durationpb.New(time.Second)}
		must(n.ctx.GetContext(ctx, &contextv1.GetContextRequest{ContextId: "c1", ReadOptions: ro}))(t)
	}
	_, err = n.ctx.GetContext(ctx, &contextv1.GetContextRequest{ContextId: "nope"})
	wantErr(t, err, codes.NotFound, cperr.ContextNotFound)

	// Pagination: every context exactly once, in id order.
	for _, id := range []string{"c3", "c2", "c5", "c4"} {
		must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: id}))(t)
	}
	var ids []string
	pages := 0
	for tok := ""; ; {
		resp := must(n.ctx.ListContexts(ctx, &contextv1.ListContextsRequest{PageSize: 3, PageToken: tok}))(t)
		pages++
		if len(resp.GetContexts()) > 3 {
			t.Fatalf("page of %d", len(resp.GetContexts()))
		}
		for _, c := range resp.GetContexts() {
			ids = append(ids, c.GetContextId())
		}
		if tok = resp.GetNextPageToken(); tok == "" {
			break
		}
	}
	want := []string{"c1", "c2", "c3", "c4", "c5", first, minted}
	slices.Sort(want)
	if !slices.Equal(ids, want) || pages != 3 {
		t.Fatalf("listed %q in %d pages, want %q in 3", ids, pages, want)
	}
	all := must(n.ctx.ListContexts(ctx, &contextv1.ListContextsRequest{}))(t)
	if len(all.GetContexts()) != len(want) || all.GetNextPageToken() != "" {
		t.Fatalf("default page: %d contexts, token %q", len(all.GetContexts()), all.GetNextPageToken())
	}
	_, err = n.ctx.ListContexts(ctx, &contextv1.ListContextsRequest{PageToken: "not-a-token"})
	wantField(t, err, "page_token")

	must(n.ctx.DeleteContext(ctx, &contextv1.DeleteContextRequest{ContextId: "c1"}))(t)
	_, err = n.ctx.GetContext(ctx, &contextv1.GetContextRequest{ContextId: "c1"})
	wantErr(t, err, codes.NotFound, cperr.ContextNotFound)
	_, err = n.ctx.DeleteContext(ctx, &contextv1.DeleteContextRequest{ContextId: "c1"})
	wantErr(t, err, codes.NotFound, cperr.ContextNotFound)
}

func TestStoreAppendAndRead(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := as(testutil.Context(t, 30*time.Second), "acme", 0)
	must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "log"}))(t)

	req := &contextv1.AppendRequest{ContextId: "log", RequestId: "a1", Entries: []*contextv1.Entry{
		textEntry("user", "hello"),
		{Role: "tool", Content: &contextv1.Entry_Data{Data: []byte{0, 1, 2}}, Metadata: map[string]string{"tool": "search"}},
		{Role: "assistant", Content: &contextv1.Entry_Text{Text: "hi"}, Seq: 77},
	}}
	a := must(n.ctx.Append(ctx, req))(t)
	if a.GetFirstSeq() != 1 || a.GetLastSeq() != 3 {
		t.Fatalf("Append = %v", a)
	}
	// The idempotent retry returns the first result and applies nothing.
	if again := must(n.ctx.Append(ctx, req))(t); !proto.Equal(again, a) {
		t.Fatalf("retried Append = %v, want %v", again, a)
	}
	if c := must(n.ctx.GetContext(ctx, &contextv1.GetContextRequest{ContextId: "log"}))(t).GetContext(); c.GetLastSeq() != 3 || c.GetEntryCount() != 3 {
		t.Fatalf("after the retry: %v", c)
	}

	_, err := n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "log", ExpectedSeq: proto.Uint64(2), Entries: []*contextv1.Entry{textEntry("user", "x")}})
	if e := wantErr(t, err, codes.Aborted, cperr.SequenceMismatch); e.Metadata[cperr.MetaLastSeq] != "3" {
		t.Fatalf("SEQUENCE_MISMATCH metadata %v", e.Metadata)
	}
	if a := must(n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "log", ExpectedSeq: proto.Uint64(3), Entries: []*contextv1.Entry{textEntry("user", "four")}}))(t); a.GetFirstSeq() != 4 || a.GetLastSeq() != 4 {
		t.Fatalf("Append with expected_seq = %v", a)
	}
	_, err = n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "missing", Entries: []*contextv1.Entry{textEntry("user", "x")}})
	wantErr(t, err, codes.NotFound, cperr.ContextNotFound)

	all := must(n.ctx.Read(ctx, &contextv1.ReadRequest{ContextId: "log"}))(t)
	checkSeqs(t, all.GetEntries(), 1, 4)
	if all.GetNextSeq() != 5 || all.GetLastSeq() != 4 {
		t.Fatalf("Read next %d last %d", all.GetNextSeq(), all.GetLastSeq())
	}
	e := all.GetEntries()
	if e[0].GetText() != "hello" || string(e[1].GetData()) != "\x00\x01\x02" || e[1].GetMetadata()["tool"] != "search" || e[1].GetRole() != "tool" || e[2].GetText() != "hi" || e[0].GetCreateTime() == nil {
		t.Fatalf("entries %v", e)
	}

	tests := []struct {
		name           string
		req            *contextv1.ReadRequest
		from, to, next uint64
	}{
		{"from 2, two", &contextv1.ReadRequest{Start: &contextv1.ReadRequest_FromSeq{FromSeq: 2}, MaxEntries: 2}, 2, 3, 4},
		{"from 0", &contextv1.ReadRequest{Start: &contextv1.ReadRequest_FromSeq{FromSeq: 0}}, 1, 4, 5},
		{"tail 2", &contextv1.ReadRequest{Start: &contextv1.ReadRequest_Tail{Tail: 2}}, 3, 4, 5},
		{"tail 9", &contextv1.ReadRequest{Start: &contextv1.ReadRequest_Tail{Tail: 9}}, 1, 4, 5},
		{"tail 0", &contextv1.ReadRequest{Start: &contextv1.ReadRequest_Tail{Tail: 0}}, 5, 4, 5},
		{"past the end", &contextv1.ReadRequest{Start: &contextv1.ReadRequest_FromSeq{FromSeq: 99}}, 99, 98, 99},
		{"one byte", &contextv1.ReadRequest{MaxBytes: 1}, 1, 1, 2},
		{"stale", &contextv1.ReadRequest{ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}}, 1, 4, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.req.ContextId = "log"
			resp := must(n.ctx.Read(ctx, tt.req))(t)
			checkSeqs(t, resp.GetEntries(), tt.from, tt.to)
			if resp.GetNextSeq() != tt.next || resp.GetLastSeq() != 4 {
				t.Fatalf("next %d last %d, want %d 4", resp.GetNextSeq(), resp.GetLastSeq(), tt.next)
			}
		})
	}
	_, err = n.ctx.Read(ctx, &contextv1.ReadRequest{ContextId: "missing"})
	wantErr(t, err, codes.NotFound, cperr.ContextNotFound)
}

func TestStoreMemory(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := as(testutil.Context(t, 30*time.Second), "acme", 0)

	r1 := must(n.ctx.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: "prefs/theme", Value: []byte("dark"), ExpectedRevision: proto.Uint64(0), RequestId: "p1"}))(t).GetRevision()
	if r1 == 0 {
		t.Fatal("revision 0")
	}
	if again := must(n.ctx.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: "prefs/theme", Value: []byte("dark"), ExpectedRevision: proto.Uint64(0), RequestId: "p1"}))(t).GetRevision(); again != r1 {
		t.Fatalf("retried put gave revision %d, want %d", again, r1)
	}
	_, err := n.ctx.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: "prefs/theme", Value: []byte("light"), ExpectedRevision: proto.Uint64(0)})
	if e := wantErr(t, err, codes.Aborted, cperr.RevisionMismatch); e.Metadata[cperr.MetaRevision] == "" {
		t.Fatalf("REVISION_MISMATCH without the current revision: %v", e.Metadata)
	}
	r2 := must(n.ctx.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: "prefs/theme", Value: []byte("light"), ExpectedRevision: proto.Uint64(r1)}))(t).GetRevision()
	if r2 <= r1 {
		t.Fatalf("revision went from %d to %d", r1, r2)
	}
	item := must(n.ctx.GetMemory(ctx, &contextv1.GetMemoryRequest{Key: "prefs/theme"}))(t).GetItem()
	if string(item.GetValue()) != "light" || item.GetRevision() != r2 || item.GetCreateTime() == nil {
		t.Fatalf("GetMemory = %v", item)
	}
	_, err = n.ctx.GetMemory(ctx, &contextv1.GetMemoryRequest{Key: "missing"})
	wantErr(t, err, codes.NotFound, cperr.KeyNotFound)
	_, err = n.ctx.DeleteMemory(ctx, &contextv1.DeleteMemoryRequest{Key: "prefs/theme", ExpectedRevision: proto.Uint64(r1)})
	wantErr(t, err, codes.Aborted, cperr.RevisionMismatch)
	must(n.ctx.DeleteMemory(ctx, &contextv1.DeleteMemoryRequest{Key: "prefs/theme", ExpectedRevision: proto.Uint64(r2)}))(t)
	_, err = n.ctx.GetMemory(ctx, &contextv1.GetMemoryRequest{Key: "prefs/theme"})
	wantErr(t, err, codes.NotFound, cperr.KeyNotFound)

	for _, k := range []string{"a/3", "a/1", "b/1", "a/5", "a/2", "a/4", "a"} {
		must(n.ctx.PutMemory(ctx, &contextv1.PutMemoryRequest{Key: k, Value: []byte("v-" + k)}))(t)
	}
	var keys []string
	var tok string
	for pages := 0; ; pages++ {
		resp := must(n.ctx.ListMemory(ctx, &contextv1.ListMemoryRequest{Prefix: "a/", PageSize: 2, PageToken: tok}))(t)
		for _, it := range resp.GetItems() {
			if string(it.GetValue()) != "v-"+it.GetKey() {
				t.Fatalf("item %v", it)
			}
			keys = append(keys, it.GetKey())
		}
		tok = resp.GetNextPageToken()
		if tok == "" {
			break
		}
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		// A token is bound to its prefix.
		_, err := n.ctx.ListMemory(ctx, &contextv1.ListMemoryRequest{Prefix: "b/", PageToken: tok})
		wantField(t, err, "page_token")
	}
	if want := []string{"a/1", "a/2", "a/3", "a/4", "a/5"}; !slices.Equal(keys, want) {
		t.Fatalf("listed %q, want %q", keys, want)
	}
	ko := must(n.ctx.ListMemory(ctx, &contextv1.ListMemoryRequest{KeysOnly: true}))(t)
	if len(ko.GetItems()) != 7 || ko.GetNextPageToken() != "" {
		t.Fatalf("keys-only listing: %v", ko)
	}
	for _, it := range ko.GetItems() {
		if len(it.GetValue()) != 0 {
			t.Fatalf("keys_only returned a value for %q", it.GetKey())
		}
	}
}

func TestStoreTenantAndEpochErrors(t *testing.T) {
	n := newCell(t, nil, nil)
	base := testutil.Context(t, 30*time.Second)
	acme := as(base, "acme", 0)
	must(n.ctx.CreateContext(acme, &contextv1.CreateContextRequest{ContextId: "c"}))(t)
	app := &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{textEntry("user", "x")}}

	_, err := n.ctx.Append(base, app)
	wantField(t, err, tenantmd.TenantKey)

	_, err = n.ctx.Append(as(base, "nobody", 0), app)
	wantErr(t, err, codes.FailedPrecondition, cperr.WrongCell)
	_, err = n.ctx.GetContext(as(base, "nobody", 0), &contextv1.GetContextRequest{ContextId: "c"})
	wantErr(t, err, codes.FailedPrecondition, cperr.WrongCell)

	_, err = n.ctx.Append(as(base, "acme", 5), app)
	if e := wantErr(t, err, codes.FailedPrecondition, cperr.StaleEpoch); e.Metadata[cperr.MetaEpoch] != "1" {
		t.Fatalf("STALE_EPOCH metadata %v", e.Metadata)
	}
	_, err = n.ctx.Read(as(base, "acme", 5), &contextv1.ReadRequest{ContextId: "c"})
	wantErr(t, err, codes.FailedPrecondition, cperr.StaleEpoch)
	must(n.ctx.Append(as(base, "acme", 1), app))(t)

	// A fenced tenant's writes are refused with its role and new epoch.
	must(n.cell.SetTenant(base, &cellv1.SetTenantRequest{Tenant: "moved", Role: cellv1.Role_ROLE_OWNER, Epoch: 1}))(t)
	must(n.cell.SetTenant(base, &cellv1.SetTenantRequest{Tenant: "moved", Role: cellv1.Role_ROLE_FENCED, Epoch: 2}))(t)
	_, err = n.ctx.PutMemory(as(base, "moved", 0), &contextv1.PutMemoryRequest{Key: "k"})
	if e := wantErr(t, err, codes.FailedPrecondition, cperr.WrongCell); e.Metadata[cperr.MetaEpoch] != "2" {
		t.Fatalf("WRONG_CELL metadata %v", e.Metadata)
	}
}

// checkSeqs asserts entries have seqs from..to, consecutive (none when
// to < from).
func checkSeqs(t *testing.T, es []*contextv1.Entry, from, to uint64) {
	t.Helper()
	var want []uint64
	for s := from; s <= to; s++ {
		want = append(want, s)
	}
	var got []uint64
	for _, e := range es {
		got = append(got, e.GetSeq())
	}
	if !slices.Equal(got, want) {
		t.Fatalf("seqs %v, want %v", got, want)
	}
}

// TestCellIDInOwnershipErrors: with a cell id configured, WRONG_CELL and
// STALE_EPOCH name the answering cell (docs/design.md §9); other errors do not.
func TestCellIDInOwnershipErrors(t *testing.T) {
	n := newCell(t, nil, func(c *Config) { c.CellID = "use-1" })
	base := testutil.Context(t, 30*time.Second)
	must(n.ctx.CreateContext(as(base, "acme", 0), &contextv1.CreateContextRequest{ContextId: "c"}))(t)
	app := &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{textEntry("user", "x")}}

	_, err := n.ctx.Append(as(base, "nobody", 0), app)
	if e := wantErr(t, err, codes.FailedPrecondition, cperr.WrongCell); e.Metadata[cperr.MetaCell] != "use-1" {
		t.Fatalf("WRONG_CELL metadata %v", e.Metadata)
	}
	_, err = n.ctx.Read(as(base, "acme", 7), &contextv1.ReadRequest{ContextId: "c"})
	if e := wantErr(t, err, codes.FailedPrecondition, cperr.StaleEpoch); e.Metadata[cperr.MetaCell] != "use-1" || e.Metadata[cperr.MetaEpoch] != "1" {
		t.Fatalf("STALE_EPOCH metadata %v", e.Metadata)
	}
	_, err = n.ctx.GetContext(as(base, "acme", 0), &contextv1.GetContextRequest{ContextId: "missing"})
	if e := wantErr(t, err, codes.NotFound, cperr.ContextNotFound); e.Metadata[cperr.MetaCell] != "" {
		t.Fatalf("CONTEXT_NOT_FOUND carries a cell: %v", e.Metadata)
	}
}

// TestStoreTokensAndCompact: the service counts an append's tokens in the
// context's encoding before proposing (the stored counts are the
// tokenizer's, whatever the client sent), Compact stores a summary that
// reads return in place of the entries it covers, and a budgeted read
// stays within its budget.
func TestStoreTokensAndCompact(t *testing.T) {
	n := newCell(t, nil, nil)
	ctx := as(testutil.Context(t, 30*time.Second), "acme", 0)
	c := must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "chat", TokenEncoding: "cl100k_base"}))(t).GetContext()
	if c.GetTokenEncoding() != "cl100k_base" {
		t.Fatalf("created %v", c)
	}
	if d := must(n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "default"}))(t).GetContext(); d.GetTokenEncoding() != "o200k_base" {
		t.Fatalf("default encoding: %v", d)
	}
	_, err := n.ctx.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "bad", TokenEncoding: "gpt-4"})
	wantErr(t, err, codes.InvalidArgument, cperr.InvalidArgument)

	var texts []string
	for i := range 6 {
		texts = append(texts, strings.Repeat("word ", i+1))
	}
	for i, tx := range texts {
		e := textEntry("user", tx)
		e.TokenCount = 999 // a client's count is never stored
		must(n.ctx.Append(ctx, &contextv1.AppendRequest{ContextId: "chat", RequestId: "a" + strconv.Itoa(i), Entries: []*contextv1.Entry{e}}))(t)
	}
	r := must(n.ctx.Read(ctx, &contextv1.ReadRequest{ContextId: "chat"}))(t)
	var total uint64
	for i, e := range r.GetEntries() {
		if want := tokens.Text("cl100k_base", texts[i]); e.GetTokenCount() != want {
			t.Fatalf("entry %d: %d tokens, want %d", i+1, e.GetTokenCount(), want)
		}
		total += uint64(e.GetTokenCount())
	}
	if r.GetTotalTokens() != total || r.GetTokensReturned() != total || r.GetTokenEncoding() != "cl100k_base" {
		t.Fatalf("read reports %d of %d tokens (%s), want %d", r.GetTokensReturned(), r.GetTotalTokens(), r.GetTokenEncoding(), total)
	}

	creq := &contextv1.CompactRequest{ContextId: "chat", UpToSeq: 4, Summary: "the user said word many times", RequestId: "k1"}
	cres := must(n.ctx.Compact(ctx, creq))(t)
	if s := cres.GetSummary(); s.GetUpToSeq() != 4 || s.GetTokenCount() != tokens.Text("cl100k_base", creq.GetSummary()) || cres.GetContext().GetCompactedSeq() != 4 {
		t.Fatalf("Compact = %v", cres)
	}
	if again := must(n.ctx.Compact(ctx, creq))(t); !proto.Equal(again, cres) {
		t.Fatalf("retried Compact = %v, want %v", again, cres)
	}
	_, err = n.ctx.Compact(ctx, &contextv1.CompactRequest{ContextId: "chat", UpToSeq: 3, Summary: "less"})
	wantErr(t, err, codes.InvalidArgument, cperr.InvalidArgument)
	_, err = n.ctx.Compact(ctx, &contextv1.CompactRequest{ContextId: "nope", UpToSeq: 1, Summary: "s"})
	wantErr(t, err, codes.NotFound, cperr.ContextNotFound)

	r = must(n.ctx.Read(ctx, &contextv1.ReadRequest{ContextId: "chat"}))(t)
	if r.GetSummary().GetUpToSeq() != 4 {
		t.Fatalf("read after compaction: %v", r)
	}
	checkSeqs(t, r.GetEntries(), 5, 6)
	raw := must(n.ctx.Read(ctx, &contextv1.ReadRequest{ContextId: "chat", Raw: true}))(t)
	if raw.GetSummary() != nil {
		t.Fatalf("raw read: %v", raw)
	}
	checkSeqs(t, raw.GetEntries(), 1, 6)
	// A budget that holds the summary and the newest entry only.
	budget := uint32(r.GetSummary().GetTokenCount() + r.GetEntries()[1].GetTokenCount())
	b := must(n.ctx.Read(ctx, &contextv1.ReadRequest{ContextId: "chat", MaxTokens: budget}))(t)
	if b.GetSummary() == nil || b.GetTokensReturned() > uint64(budget) {
		t.Fatalf("budgeted read %v (budget %d)", b, budget)
	}
	checkSeqs(t, b.GetEntries(), 6, 6)
}
