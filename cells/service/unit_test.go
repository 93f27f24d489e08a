package service

import (
	"errors"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestPageTokens(t *testing.T) {
	tests := []struct {
		name    string
		kind    byte
		tok     string
		want    string
		invalid bool
	}{
		{"empty starts at the beginning", kindContexts, "", "", false},
		{"round trip", kindContexts, encodePageToken(kindContexts, "ctx-9"), "ctx-9", false},
		{"round trip memory key", kindMemory, encodePageToken(kindMemory, "a/b c/é"), "a/b c/é", false},
		{"round trip tenant", kindTenants, encodePageToken(kindTenants, "acme"), "acme", false},
		{"other listing", kindTenants, encodePageToken(kindContexts, "acme"), "", true},
		{"not base64", kindContexts, "!!!", "", true},
		{"padded base64", kindContexts, encodePageToken(kindContexts, "x") + "=", "", true},
		{"no position", kindContexts, "AWM", "", true}, // version 1, kind 'c', nothing after
		{"other version", kindContexts, "AmN4", "", true},
		{"not utf8", kindMemory, encodePageToken(kindMemory, "\xff"), "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodePageToken(tt.kind, tt.tok)
			if tt.invalid {
				if !errors.Is(err, cperr.ErrInvalidArgument) {
					t.Fatalf("decode(%q) = %q, %v; want INVALID_ARGUMENT", tt.tok, got, err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("decode(%q) = %q, %v; want %q", tt.tok, got, err, tt.want)
			}
		})
	}
}

func TestMemoryTokenMustMatchPrefix(t *testing.T) {
	tok := encodePageToken(kindMemory, "users/7")
	if after, err := decodeMemoryToken(tok, "users/"); err != nil || after != "users/7" {
		t.Fatalf("same prefix: %q, %v", after, err)
	}
	if _, err := decodeMemoryToken(tok, "agents/"); !errors.Is(err, cperr.ErrInvalidArgument) {
		t.Fatalf("other prefix: %v", err)
	}
}

// FuzzPageToken: decoding never panics and whatever decodes re-encodes to
// the same position.
func FuzzPageToken(f *testing.F) {
	f.Add(encodePageToken(kindContexts, "c1"))
	f.Add("")
	f.Add("AWM")
	f.Fuzz(func(t *testing.T, tok string) {
		after, err := decodePageToken(kindContexts, tok)
		if err != nil || tok == "" {
			return
		}
		again, err := decodePageToken(kindContexts, encodePageToken(kindContexts, after))
		if err != nil || again != after {
			t.Fatalf("re-encoding %q gave %q, %v", after, again, err)
		}
	})
}

func TestFillPage(t *testing.T) {
	keys := []string{"a", "b", "c", "d", "e", "f", "g"}
	list := func(calls *int) func(string, int) ([]string, bool, error) {
		return func(after string, n int) ([]string, bool, error) {
			*calls++
			i, _ := slices.BinarySearch(keys, after)
			if i < len(keys) && keys[i] == after {
				i++
			}
			end := min(i+n, len(keys))
			return keys[i:end], end < len(keys), nil
		}
	}
	id := func(s string) string { return s }
	tests := []struct {
		name      string
		limit     int
		chunk     int
		budget    uint64
		size      int
		after     string
		want      string
		wantMore  bool
		wantCalls int
	}{
		{"all in one", 10, 64, 1 << 20, 1, "", "abcdefg", false, 1},
		{"limit", 3, 64, 1 << 20, 1, "", "abc", true, 1},
		{"limit at the end", 7, 64, 1 << 20, 1, "", "abcdefg", false, 1},
		{"after", 3, 64, 1 << 20, 1, "c", "def", true, 1},
		{"chunks", 5, 2, 1 << 20, 1, "", "abcde", true, 3},
		{"chunks to the end", 10, 3, 1 << 20, 1, "", "abcdefg", false, 3},
		{"budget", 10, 64, 25, 10, "", "ab", true, 1},
		{"budget lets one big item through", 10, 64, 5, 10, "", "a", true, 1},
		{"budget across chunks", 10, 2, 30, 10, "", "abc", true, 2},
		{"past the end", 10, 64, 1 << 20, 1, "g", "", false, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			got, more, err := fillPage(tt.limit, tt.chunk, tt.budget, tt.after, list(&calls), id, func(string) int { return tt.size })
			if err != nil || strings.Join(got, "") != tt.want || more != tt.wantMore || calls != tt.wantCalls {
				t.Fatalf("fillPage = %q, more %v, %v after %d calls; want %q, %v after %d", got, more, err, calls, tt.want, tt.wantMore, tt.wantCalls)
			}
		})
	}
	boom := errors.New("boom")
	if _, _, err := fillPage(1, 1, 1, "", func(string, int) ([]string, bool, error) { return nil, false, boom }, id, func(string) int { return 1 }); !errors.Is(err, boom) {
		t.Fatalf("error = %v", err)
	}
}

func TestReadStart(t *testing.T) {
	from := func(s uint64) *contextv1.ReadRequest {
		return &contextv1.ReadRequest{Start: &contextv1.ReadRequest_FromSeq{FromSeq: s}}
	}
	tail := func(n uint32) *contextv1.ReadRequest {
		return &contextv1.ReadRequest{Start: &contextv1.ReadRequest_Tail{Tail: n}}
	}
	tests := []struct {
		req  *contextv1.ReadRequest
		last uint64
		want uint64
	}{
		{&contextv1.ReadRequest{}, 10, 1},
		{from(0), 10, 1},
		{from(1), 10, 1},
		{from(7), 10, 7},
		{from(99), 10, 99},
		{tail(3), 10, 8},
		{tail(10), 10, 1},
		{tail(11), 10, 1},
		{tail(0), 10, 11},
		{tail(5), 0, 1},
		{tail(1), 1<<64 - 1, 1<<64 - 1},
	}
	for _, tt := range tests {
		if got := readStart(tt.req, tt.last); got != tt.want {
			t.Errorf("readStart(%v, last %d) = %d, want %d", tt.req.GetStart(), tt.last, got, tt.want)
		}
	}
}

func TestMintContextID(t *testing.T) {
	re := regexp.MustCompile(`^ctx-[a-z2-7]{26}$`)
	seen := map[string]bool{}
	for range 1000 {
		id := mintContextID()
		if !re.MatchString(id) || !ids.Valid(id, ids.MaxLen) {
			t.Fatalf("minted %q", id)
		}
		if seen[id] {
			t.Fatalf("minted %q twice", id)
		}
		seen[id] = true
	}
}

func TestCountEntries(t *testing.T) {
	clean := textEntry("user", "hello world")
	dirty := &contextv1.Entry{Seq: 9, Role: "tool", Content: &contextv1.Entry_Data{Data: []byte{1}}, Metadata: map[string]string{"k": "v"}, CreateTime: timestamppb.Now(), TokenCount: 999}
	out := countEntries("o200k_base", []*contextv1.Entry{clean, dirty})
	if out[0].GetTokenCount() != 2 || out[0].GetText() != "hello world" {
		t.Errorf("counted %v", out[0])
	}
	if out[1].GetSeq() != 0 || out[1].GetCreateTime() != nil || out[1].GetRole() != "tool" || string(out[1].GetData()) != "\x01" || out[1].GetMetadata()["k"] != "v" || out[1].GetTokenCount() != 1 {
		t.Errorf("sanitized %v", out[1])
	}
	if dirty.GetSeq() != 9 || dirty.GetCreateTime() == nil || dirty.GetTokenCount() != 999 {
		t.Error("the caller's entry was modified")
	}
	// Without a known encoding: no counts at all, the client's dropped.
	if got := countEntries("", []*contextv1.Entry{dirty}); got[0].GetTokenCount() != 0 {
		t.Errorf("uncounted entry kept a count: %v", got[0])
	}
}

func TestConfigValidate(t *testing.T) {
	ok := DefaultConfig()
	ok.Node = &cellv1.NodeInfo{NodeId: "n1"}
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"ok", func(*Config) {}, ""},
		{"no node", func(c *Config) { c.Node = nil }, "Node.NodeId"},
		{"bad node id", func(c *Config) { c.Node = &cellv1.NodeInfo{NodeId: "a b"} }, "Node.NodeId"},
		{"retry", func(c *Config) { c.RetryAfter = 0 }, "RetryAfter"},
		{"batch", func(c *Config) { c.WatchChangeBatch = 0 }, "WatchChangeBatch"},
		{"limits", func(c *Config) { c.Limits.MaxPageSize = 0 }, "MaxPageSize"},
		{"own addresses on one host", func(c *Config) {
			c.Node = &cellv1.NodeInfo{NodeId: "n1", RaftAddr: "10.0.0.1:7210", GrpcAddr: "10.0.0.1:7211", HttpAddr: "10.0.0.1:7212"}
		}, ""},
		{"own gRPC address on another host", func(c *Config) {
			c.Node = &cellv1.NodeInfo{NodeId: "n1", RaftAddr: "10.0.0.1:7210", GrpcAddr: "10.0.0.2:7211"}
		}, "Raft address"},
		{"own HTTP address on another host", func(c *Config) {
			c.Node = &cellv1.NodeInfo{NodeId: "n1", RaftAddr: "10.0.0.1:7210", HttpAddr: "node1:7212"}
		}, "Raft address"},
		{"cross-host allowed", func(c *Config) {
			c.Node = &cellv1.NodeInfo{NodeId: "n1", RaftAddr: "10.0.0.1:7210", GrpcAddr: "10.0.0.2:7211"}
			c.AllowCrossHostAddrs = true
		}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := ok
			tt.mutate(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				if _, err := New(&fakeStore{}, c); err != nil {
					t.Fatalf("New: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want it to mention %s", err, tt.want)
			}
			if _, err := New(&fakeStore{}, c); err == nil {
				t.Fatal("New accepted an invalid config")
			}
		})
	}
}
