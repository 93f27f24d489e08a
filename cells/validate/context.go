package validate

import (
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cellplane/cellplane/internal/tokens"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// CreateContext validates a CreateContextRequest. An empty context_id is
// valid: the server mints one.
func CreateContext(lim Limits, req *contextv1.CreateContextRequest) error {
	var v violations
	v.size(lim, req)
	v.optionalID("context_id", req.GetContextId(), lim.MaxIDLen)
	v.stringMap("labels", req.GetLabels(), lim.Labels)
	v.requestID(lim, req.GetRequestId())
	v.retention(req.GetExpireTime(), req.GetTtl())
	if e := req.GetTokenEncoding(); e != "" && tokens.Check(e) != nil {
		v.add("token_encoding", "is not a supported encoding (%s)", strings.Join(tokens.Encodings(), ", "))
	}
	return v.err()
}

// GetContext validates a GetContextRequest.
func GetContext(lim Limits, req *contextv1.GetContextRequest) error {
	var v violations
	v.id("context_id", req.GetContextId(), lim.MaxIDLen)
	v.readOptions("read_options", req.GetReadOptions())
	return v.err()
}

// ListContexts validates a ListContextsRequest. A page_size above the
// maximum is capped by the server, not rejected.
func ListContexts(lim Limits, req *contextv1.ListContextsRequest) error {
	var v violations
	v.pageToken(lim, req.GetPageToken())
	v.readOptions("read_options", req.GetReadOptions())
	v.selector(lim, "label_selector", req.GetLabelSelector())
	return v.err()
}

// DeleteContext validates a DeleteContextRequest.
func DeleteContext(lim Limits, req *contextv1.DeleteContextRequest) error {
	var v violations
	v.id("context_id", req.GetContextId(), lim.MaxIDLen)
	v.requestID(lim, req.GetRequestId())
	return v.err()
}

// Append validates an AppendRequest: the context id, the number of
// entries, and each entry's role, content and metadata. Entries' seq and
// create_time are ignored (the server assigns them).
func Append(lim Limits, req *contextv1.AppendRequest) error {
	var v violations
	v.size(lim, req)
	v.id("context_id", req.GetContextId(), lim.MaxIDLen)
	v.requestID(lim, req.GetRequestId())
	entries := req.GetEntries()
	switch {
	case len(entries) == 0:
		v.add("entries", "at least one entry is required")
	case len(entries) > lim.MaxEntriesPerAppend:
		// Checking each of a huge list would only make a huge error.
		v.add("entries", "has %d entries; the limit is %d", len(entries), lim.MaxEntriesPerAppend)
		return v.err()
	}
	for i, e := range entries {
		v.entry(lim, fmt.Sprintf("entries[%d]", i), e)
	}
	return v.err()
}

func (v *violations) entry(lim Limits, field string, e *contextv1.Entry) {
	if e == nil {
		v.add(field, "must not be null")
		return
	}
	role := e.GetRole()
	switch {
	case role == "":
		v.add(field+".role", "is required")
	case len(role) > lim.MaxRoleBytes:
		v.add(field+".role", "is %d bytes; the limit is %d bytes", len(role), lim.MaxRoleBytes)
	case !utf8.ValidString(role) || strings.IndexFunc(role, isControl) >= 0:
		v.add(field+".role", "must be printable UTF-8")
	}
	var n int
	switch c := e.GetContent().(type) {
	case *contextv1.Entry_Text:
		n = len(c.Text)
	case *contextv1.Entry_Data:
		n = len(c.Data)
	}
	if n > lim.MaxEntryContentBytes {
		v.add(field+".content", "is %d bytes; the limit is %d bytes", n, lim.MaxEntryContentBytes)
	}
	v.stringMap(field+".metadata", e.GetMetadata(), lim.EntryMetadata)
	v.vector(lim, field+".embedding", e.GetEmbedding())
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// Read validates a ReadRequest. from_seq may be anything (past the end
// reads nothing); tail 0 reads nothing and reports the next seq.
// max_entries and max_bytes above the maxima are capped, not rejected.
func Read(lim Limits, req *contextv1.ReadRequest) error {
	var v violations
	v.id("context_id", req.GetContextId(), lim.MaxIDLen)
	v.readOptions("read_options", req.GetReadOptions())
	return v.err()
}

// Watch validates a WatchRequest.
func Watch(lim Limits, req *contextv1.WatchRequest) error {
	var v violations
	v.id("context_id", req.GetContextId(), lim.MaxIDLen)
	return v.err()
}

// PutMemory validates a PutMemoryRequest.
func PutMemory(lim Limits, req *contextv1.PutMemoryRequest) error {
	var v violations
	v.size(lim, req)
	v.memoryKey(lim, "key", req.GetKey(), true)
	if n := len(req.GetValue()); n > lim.MaxMemoryValueBytes {
		v.add("value", "is %d bytes; the limit is %d bytes", n, lim.MaxMemoryValueBytes)
	}
	v.requestID(lim, req.GetRequestId())
	v.memoryScope(req.GetScope())
	v.retention(req.GetExpireTime(), req.GetTtl())
	v.stringMap("labels", req.GetLabels(), lim.Labels)
	v.vector(lim, "embedding", req.GetEmbedding())
	return v.err()
}

// GetMemory validates a GetMemoryRequest.
func GetMemory(lim Limits, req *contextv1.GetMemoryRequest) error {
	var v violations
	v.memoryKey(lim, "key", req.GetKey(), true)
	v.readOptions("read_options", req.GetReadOptions())
	v.memoryScope(req.GetScope())
	return v.err()
}

// DeleteMemory validates a DeleteMemoryRequest.
func DeleteMemory(lim Limits, req *contextv1.DeleteMemoryRequest) error {
	var v violations
	v.memoryKey(lim, "key", req.GetKey(), true)
	v.requestID(lim, req.GetRequestId())
	v.memoryScope(req.GetScope())
	return v.err()
}

// ListMemory validates a ListMemoryRequest. The prefix may be empty.
func ListMemory(lim Limits, req *contextv1.ListMemoryRequest) error {
	var v violations
	v.memoryKey(lim, "prefix", req.GetPrefix(), false)
	v.pageToken(lim, req.GetPageToken())
	v.readOptions("read_options", req.GetReadOptions())
	v.memoryScope(req.GetScope())
	v.selector(lim, "label_selector", req.GetLabelSelector())
	if t := req.GetUpdatedAfter(); t != nil {
		if err := t.CheckValid(); err != nil {
			v.add("updated_after", "must be a valid time")
		}
	}
	return v.err()
}

// memoryScope refuses a scope this version does not know (a newer
// client's): guessing would read or write another scope's keys.
func (v *violations) memoryScope(s contextv1.MemoryScope) {
	if _, ok := contextv1.MemoryScope_name[int32(s)]; !ok {
		v.add("scope", "unknown memory scope %d", int32(s))
	}
}

// Fork validates a ForkRequest: the source's id, an optional new id (empty:
// server-minted), labels, request id and retention. at_seq may be anything
// (above the source's last seq is refused in apply, where it is known).
func Fork(lim Limits, req *contextv1.ForkRequest) error {
	var v violations
	v.size(lim, req)
	v.id("context_id", req.GetContextId(), lim.MaxIDLen)
	v.optionalID("new_context_id", req.GetNewContextId(), lim.MaxIDLen)
	v.stringMap("labels", req.GetLabels(), lim.Labels)
	v.requestID(lim, req.GetRequestId())
	v.retention(req.GetExpireTime(), req.GetTtl())
	return v.err()
}

// MaxTTL is the longest ttl a write may ask for, and expire_time may be at
// most this far in the Unix epoch's future beyond now's century: bounds
// that keep every expiry in int64 nanoseconds (until 2262).
const MaxTTL = 100 * 365 * 24 * time.Hour

// maxExpireSeconds is the latest expire_time accepted (2200-01-01 UTC).
const maxExpireSeconds = 7258118400

// retention checks an expiry: expire_time or ttl, not both; a valid
// timestamp after the epoch and before 2200; a positive ttl of at most
// MaxTTL. An expire_time in the past is accepted: the item is born expired
// (reads never show it; the next sweep removes it).
func (v *violations) retention(at *timestamppb.Timestamp, ttl *durationpb.Duration) {
	if at != nil && ttl != nil {
		v.add("ttl", "set expire_time or ttl, not both")
	}
	if at != nil {
		if err := at.CheckValid(); err != nil || at.GetSeconds() <= 0 || at.GetSeconds() >= maxExpireSeconds {
			v.add("expire_time", "must be a valid time after 1970 and before 2200")
		}
	}
	if ttl != nil {
		if err := ttl.CheckValid(); err != nil || ttl.AsDuration() <= 0 || ttl.AsDuration() > MaxTTL {
			v.add("ttl", "must be positive and at most %v", MaxTTL)
		}
	}
}

// Compact validates a CompactRequest: the context id, an up_to_seq of at
// least 1 (the state machine checks it against the context), a summary
// that is UTF-8 text of at most an entry's content size, and the request
// id. The token fields are the cell's to set: ignored.
func Compact(lim Limits, req *contextv1.CompactRequest) error {
	var v violations
	v.size(lim, req)
	v.id("context_id", req.GetContextId(), lim.MaxIDLen)
	v.requestID(lim, req.GetRequestId())
	if req.GetUpToSeq() == 0 {
		v.add("up_to_seq", "must be at least 1")
	}
	switch s := req.GetSummary(); {
	case s == "":
		v.add("summary", "is required")
	case len(s) > lim.MaxEntryContentBytes:
		v.add("summary", "is %d bytes; the limit is %d bytes", len(s), lim.MaxEntryContentBytes)
	case !utf8.ValidString(s):
		v.add("summary", "must be UTF-8 text")
	}
	return v.err()
}
