package validate

import (
	"math"
	"strings"
	"testing"
	"time"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func text(role, s string) *contextv1.Entry {
	return &contextv1.Entry{Role: role, Content: &contextv1.Entry_Text{Text: s}}
}

func TestCreateContext(t *testing.T) {
	lim := DefaultLimits()
	bigLabels := map[string]string{}
	for i := range lim.Labels.MaxPairs + 1 {
		bigLabels[strings.Repeat("k", i+1)] = "v"
	}
	tests := []struct {
		name   string
		req    *contextv1.CreateContextRequest
		fields []string
	}{
		{"empty id is minted", &contextv1.CreateContextRequest{}, nil},
		{"nil request", nil, nil},
		{"valid", &contextv1.CreateContextRequest{ContextId: "c-1", Labels: map[string]string{"a": "b"}, RequestId: "r1"}, nil},
		{"bad id", &contextv1.CreateContextRequest{ContextId: "c/1"}, []string{"context_id"}},
		{"long id", &contextv1.CreateContextRequest{ContextId: strings.Repeat("c", 129)}, []string{"context_id"}},
		{"bad request id", &contextv1.CreateContextRequest{RequestId: "r 1"}, []string{"request_id"}},
		{"too many labels", &contextv1.CreateContextRequest{Labels: bigLabels}, []string{"labels"}},
		{"label key", &contextv1.CreateContextRequest{Labels: map[string]string{strings.Repeat("k", 129): "v", "": "x"}}, []string{"labels", "labels"}},
		{"label value", &contextv1.CreateContextRequest{Labels: map[string]string{"k": strings.Repeat("v", 513)}}, []string{"labels"}},
		{"all at once", &contextv1.CreateContextRequest{ContextId: "?", RequestId: "?", Labels: map[string]string{"k": strings.Repeat("v", 513)}}, []string{"context_id", "labels", "request_id"}},
		{"encoding", &contextv1.CreateContextRequest{TokenEncoding: "cl100k_base"}, nil},
		{"unknown encoding", &contextv1.CreateContextRequest{TokenEncoding: "gpt-4"}, []string{"token_encoding"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkFields(t, CreateContext(lim, tt.req), tt.fields...) })
	}
}

func TestAppend(t *testing.T) {
	lim := DefaultLimits()
	many := make([]*contextv1.Entry, lim.MaxEntriesPerAppend+1)
	for i := range many {
		many[i] = text("user", "x")
	}
	meta := func(n int) map[string]string {
		m := map[string]string{}
		for i := range n {
			m[strings.Repeat("k", i+1)] = "v"
		}
		return m
	}
	tests := []struct {
		name   string
		req    *contextv1.AppendRequest
		fields []string
	}{
		{"valid", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{text("user", "hi"), {Role: "tool", Content: &contextv1.Entry_Data{Data: []byte{0, 1}}}}, RequestId: "r"}, nil},
		{"no content is fine", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "system"}}}, nil},
		{"seq and time ignored", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "a", Seq: 9}}}, nil},
		{"max content", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{text("user", strings.Repeat("x", 1<<20))}}, nil},
		{"missing context", &contextv1.AppendRequest{Entries: []*contextv1.Entry{text("user", "hi")}}, []string{"context_id"}},
		{"no entries", &contextv1.AppendRequest{ContextId: "c"}, []string{"entries"}},
		{"too many entries", &contextv1.AppendRequest{ContextId: "c", Entries: many}, []string{"entries"}},
		{"nil entry", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{nil}}, []string{"entries[0]"}},
		{"embedding", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "u", Embedding: []float32{0.1, -2}}}}, nil},
		{"nan embedding", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "u", Embedding: []float32{float32(math.NaN())}}}}, []string{"entries[0].embedding"}},
		{"zero embedding", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "u"}, {Role: "u", Embedding: []float32{0, 0}}}}, []string{"entries[1].embedding"}},
		{"embedding too long", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "u", Embedding: make([]float32, 5000)}}}, []string{"entries[0].embedding"}},
		{"text too big", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{text("user", "ok"), text("user", "ok"), text("user", "ok"), text("user", strings.Repeat("x", 1<<20+1))}}, []string{"entries[3].content"}},
		{"data too big", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "u", Content: &contextv1.Entry_Data{Data: make([]byte, 1<<20+1)}}}}, []string{"entries[0].content"}},
		{"role missing", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{text("", "x")}}, []string{"entries[0].role"}},
		{"role long", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{text(strings.Repeat("r", 65), "x")}}, []string{"entries[0].role"}},
		{"role control", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{text("a\nb", "x")}}, []string{"entries[0].role"}},
		{"metadata count", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "u", Metadata: meta(65)}}}, []string{"entries[0].metadata"}},
		{"metadata value", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "u", Metadata: map[string]string{"k": strings.Repeat("v", 4097)}}}}, []string{"entries[0].metadata"}},
		{"request too big", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{text("u", strings.Repeat("x", 1<<20)), text("u", strings.Repeat("x", 1<<20)), text("u", strings.Repeat("x", 1<<20)), text("u", strings.Repeat("x", 1<<20))}}, []string{"request"}},
		{"everything wrong", &contextv1.AppendRequest{ContextId: "bad id", RequestId: "bad id", Entries: []*contextv1.Entry{text("", strings.Repeat("x", 1<<20+1))}}, []string{"context_id", "request_id", "entries[0].role", "entries[0].content"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkFields(t, Append(lim, tt.req), tt.fields...) })
	}
}

func TestReadsAndDeletes(t *testing.T) {
	lim := DefaultLimits()
	bad := &contextv1.ReadOptions{Consistency: 9, MaxStaleness: durationpb.New(-1)}
	tests := []struct {
		name   string
		err    error
		fields []string
	}{
		{"get ok", GetContext(lim, &contextv1.GetContextRequest{ContextId: "c", ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE, MaxStaleness: durationpb.New(5e9)}}), nil},
		{"get missing id", GetContext(lim, &contextv1.GetContextRequest{}), []string{"context_id"}},
		{"get bad options", GetContext(lim, &contextv1.GetContextRequest{ContextId: "c", ReadOptions: bad}), []string{"read_options.consistency", "read_options.max_staleness"}},
		{"get invalid duration", GetContext(lim, &contextv1.GetContextRequest{ContextId: "c", ReadOptions: &contextv1.ReadOptions{MaxStaleness: &durationpb.Duration{Seconds: 1, Nanos: -1}}}), []string{"read_options.max_staleness"}},
		{"list ok", ListContexts(lim, &contextv1.ListContextsRequest{PageSize: 1 << 30}), nil},
		{"list long token", ListContexts(lim, &contextv1.ListContextsRequest{PageToken: strings.Repeat("t", 1025)}), []string{"page_token"}},
		{"delete ok", DeleteContext(lim, &contextv1.DeleteContextRequest{ContextId: "c", RequestId: "r"}), nil},
		{"delete bad", DeleteContext(lim, &contextv1.DeleteContextRequest{ContextId: "", RequestId: "?"}), []string{"context_id", "request_id"}},
		{"read ok", Read(lim, &contextv1.ReadRequest{ContextId: "c", Start: &contextv1.ReadRequest_Tail{Tail: 0}, MaxEntries: 1 << 31, MaxBytes: 1 << 62}), nil},
		{"read bad", Read(lim, &contextv1.ReadRequest{ContextId: "c d", ReadOptions: bad}), []string{"context_id", "read_options.consistency", "read_options.max_staleness"}},
		{"watch ok", Watch(lim, &contextv1.WatchRequest{ContextId: "c", FromSeq: 1 << 60}), nil},
		{"watch bad", Watch(lim, &contextv1.WatchRequest{}), []string{"context_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkFields(t, tt.err, tt.fields...) })
	}
}

func TestMemory(t *testing.T) {
	lim := DefaultLimits()
	tests := []struct {
		name   string
		err    error
		fields []string
	}{
		{"put ok", PutMemory(lim, &contextv1.PutMemoryRequest{Key: "any key/with spaces é", Value: []byte("v"), ExpectedRevision: proto.Uint64(0)}), nil},
		{"put max", PutMemory(lim, &contextv1.PutMemoryRequest{Key: strings.Repeat("k", 512), Value: make([]byte, 1<<20)}), nil},
		{"put empty value", PutMemory(lim, &contextv1.PutMemoryRequest{Key: "k"}), nil},
		{"put no key", PutMemory(lim, &contextv1.PutMemoryRequest{}), []string{"key"}},
		{"put tenant scope", PutMemory(lim, &contextv1.PutMemoryRequest{Key: "k", Scope: contextv1.MemoryScope_MEMORY_SCOPE_TENANT}), nil},
		{"put unknown scope", PutMemory(lim, &contextv1.PutMemoryRequest{Key: "k", Scope: 9}), []string{"scope"}},
		{"get unknown scope", GetMemory(lim, &contextv1.GetMemoryRequest{Key: "k", Scope: 3}), []string{"scope"}},
		{"delete unknown scope", DeleteMemory(lim, &contextv1.DeleteMemoryRequest{Key: "k", Scope: -1}), []string{"scope"}},
		{"list unknown scope", ListMemory(lim, &contextv1.ListMemoryRequest{Scope: 5}), []string{"scope"}},
		{"put long key", PutMemory(lim, &contextv1.PutMemoryRequest{Key: strings.Repeat("k", 513)}), []string{"key"}},
		{"put nul key", PutMemory(lim, &contextv1.PutMemoryRequest{Key: "a\x00b"}), []string{"key"}},
		{"put bad utf8", PutMemory(lim, &contextv1.PutMemoryRequest{Key: "a\xffb"}), []string{"key"}},
		{"put big value", PutMemory(lim, &contextv1.PutMemoryRequest{Key: "k", Value: make([]byte, 1<<20+1), RequestId: "x y"}), []string{"value", "request_id"}},
		{"get ok", GetMemory(lim, &contextv1.GetMemoryRequest{Key: "k"}), nil},
		{"get bad", GetMemory(lim, &contextv1.GetMemoryRequest{ReadOptions: &contextv1.ReadOptions{Consistency: -1}}), []string{"key", "read_options.consistency"}},
		{"delete ok", DeleteMemory(lim, &contextv1.DeleteMemoryRequest{Key: "k", ExpectedRevision: proto.Uint64(3)}), nil},
		{"delete bad", DeleteMemory(lim, &contextv1.DeleteMemoryRequest{Key: ""}), []string{"key"}},
		{"list ok empty prefix", ListMemory(lim, &contextv1.ListMemoryRequest{}), nil},
		{"list ok", ListMemory(lim, &contextv1.ListMemoryRequest{Prefix: "a/", PageSize: 5, KeysOnly: true}), nil},
		{"list bad", ListMemory(lim, &contextv1.ListMemoryRequest{Prefix: strings.Repeat("p", 513), PageToken: strings.Repeat("t", 2000)}), []string{"prefix", "page_token"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkFields(t, tt.err, tt.fields...) })
	}
}

// TestDescriptionsDoNotEchoValues guards against reflecting client input
// (possibly large or sensitive) into error messages.
func TestDescriptionsDoNotEchoValues(t *testing.T) {
	lim := DefaultLimits()
	secret := "SECRET" + strings.Repeat("s", 600)
	errs := []error{
		PutMemory(lim, &contextv1.PutMemoryRequest{Key: secret}),
		CreateContext(lim, &contextv1.CreateContextRequest{ContextId: secret, Labels: map[string]string{secret: secret}}),
		Append(lim, &contextv1.AppendRequest{ContextId: secret, Entries: []*contextv1.Entry{{Role: secret, Metadata: map[string]string{secret: secret}}}}),
	}
	for i, err := range errs {
		if err == nil || strings.Contains(err.Error(), "SECRET") {
			t.Errorf("case %d: %v", i, err)
		}
	}
}

func TestForkAndRetentionFields(t *testing.T) {
	lim := DefaultLimits()
	hour := durationpb.New(time.Hour)
	future := timestamppb.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	tests := []struct {
		name   string
		req    *contextv1.ForkRequest
		fields []string
	}{
		{"valid", &contextv1.ForkRequest{ContextId: "c", AtSeq: 3, NewContextId: "f", RequestId: "r", Ttl: hour}, nil},
		{"minted id, head", &contextv1.ForkRequest{ContextId: "c"}, nil},
		{"expire_time", &contextv1.ForkRequest{ContextId: "c", ExpireTime: future}, nil},
		{"past expire_time is accepted", &contextv1.ForkRequest{ContextId: "c", ExpireTime: timestamppb.New(time.Unix(10, 0))}, nil},
		{"no source", &contextv1.ForkRequest{}, []string{"context_id"}},
		{"bad new id", &contextv1.ForkRequest{ContextId: "c", NewContextId: "a b"}, []string{"new_context_id"}},
		{"both", &contextv1.ForkRequest{ContextId: "c", Ttl: hour, ExpireTime: future}, []string{"ttl"}},
		{"negative ttl", &contextv1.ForkRequest{ContextId: "c", Ttl: durationpb.New(-time.Second)}, []string{"ttl"}},
		{"zero ttl", &contextv1.ForkRequest{ContextId: "c", Ttl: durationpb.New(0)}, []string{"ttl"}},
		{"ttl too long", &contextv1.ForkRequest{ContextId: "c", Ttl: durationpb.New(MaxTTL + time.Second)}, []string{"ttl"}},
		{"before 1970", &contextv1.ForkRequest{ContextId: "c", ExpireTime: &timestamppb.Timestamp{Seconds: -5}}, []string{"expire_time"}},
		{"after 2200", &contextv1.ForkRequest{ContextId: "c", ExpireTime: &timestamppb.Timestamp{Seconds: maxExpireSeconds}}, []string{"expire_time"}},
		{"bad nanos", &contextv1.ForkRequest{ContextId: "c", ExpireTime: &timestamppb.Timestamp{Seconds: 5, Nanos: -1}}, []string{"expire_time"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkFields(t, Fork(lim, tt.req), tt.fields...) })
	}
	checkFields(t, CreateContext(lim, &contextv1.CreateContextRequest{Ttl: hour, ExpireTime: future}), "ttl")
	checkFields(t, PutMemory(lim, &contextv1.PutMemoryRequest{Key: "k", Ttl: durationpb.New(-1)}), "ttl")
	checkFields(t, PutMemory(lim, &contextv1.PutMemoryRequest{Key: "k", ExpireTime: future}))
}

func TestCompact(t *testing.T) {
	lim := DefaultLimits()
	tests := []struct {
		name   string
		req    *contextv1.CompactRequest
		fields []string
	}{
		{"valid", &contextv1.CompactRequest{ContextId: "c", UpToSeq: 3, Summary: "the gist", RequestId: "r1"}, nil},
		{"server fields ignored", &contextv1.CompactRequest{ContextId: "c", UpToSeq: 3, Summary: "s", SummaryTokens: 9, TokenEncoding: "nope"}, nil},
		{"nil request", nil, []string{"context_id", "up_to_seq", "summary"}},
		{"bad id", &contextv1.CompactRequest{ContextId: "c/1", UpToSeq: 1, Summary: "s"}, []string{"context_id"}},
		{"up_to_seq 0", &contextv1.CompactRequest{ContextId: "c", Summary: "s"}, []string{"up_to_seq"}},
		{"no summary", &contextv1.CompactRequest{ContextId: "c", UpToSeq: 1}, []string{"summary"}},
		{"long summary", &contextv1.CompactRequest{ContextId: "c", UpToSeq: 1, Summary: strings.Repeat("s", lim.MaxEntryContentBytes+1)}, []string{"summary"}},
		{"binary summary", &contextv1.CompactRequest{ContextId: "c", UpToSeq: 1, Summary: "\xff"}, []string{"summary"}},
		{"bad request id", &contextv1.CompactRequest{ContextId: "c", UpToSeq: 1, Summary: "s", RequestId: "r 1"}, []string{"request_id"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkFields(t, Compact(lim, tt.req), tt.fields...) })
	}
}
