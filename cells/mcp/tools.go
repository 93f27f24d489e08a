package mcp

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/jsonschema-go/jsonschema"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/readcache"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/tokens"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// PrincipalLabel is the reserved context label holding the principal that
// created a context (when authentication is on). Labels starting with
// ReservedLabelPrefix are refused in input and removed from output.
const (
	PrincipalLabel      = "cellplane.principal"
	ReservedLabelPrefix = "cellplane."
)

// ContextURITemplate is the resource template of a context's entries.
const ContextURITemplate = "cellplane://contexts/{context_id}"

const contextURIPrefix = "cellplane://contexts/"

// caller is who a tool call is for: the URL's tenant, the authenticated
// principal ("" without authentication) and its scopes.
type caller struct {
	tenant    string
	principal string
	scopes    auth.Scopes
	// tool is the tool being called ("" for a resource read): the
	// origin "mcp:<tool>" the cell writes in the audit record.
	tool string
}

// origin is the x-cellplane-origin the worker sends for c.
func (c caller) origin() string {
	if c.tool == "" {
		return "mcp"
	}
	return "mcp:" + c.tool
}

// outgoing is ctx with c's tenant, principal, origin and scopes on the
// outgoing metadata of a cell call (the worker authenticated them).
func (c caller) outgoing(ctx context.Context) context.Context {
	ctx = tenantmd.WithCaller(tenantmd.Outgoing(ctx, c.tenant, 0), c.principal, c.origin())
	return tenantmd.WithScopes(ctx, c.scopes.String())
}

// callerFrom reads the headers serveMCP set (it deletes a client's own
// copies first): a scope list it cannot read grants nothing.
func callerFrom(h http.Header) caller {
	c := caller{tenant: h.Get(TenantHeader), principal: h.Get(PrincipalHeader)}
	for _, f := range strings.Fields(h.Get(ScopesHeader)) {
		c.scopes = c.scopes.With(auth.Scope(f))
	}
	return c
}

// ToolScopes is the scope each MCP tool (and resources/read) needs. Every
// registered tool must have a row: addTool panics on one without (a test
// also checks the list), so a new tool cannot be added open by accident.
// A tool the caller's scopes do not cover is refused with
// PERMISSION_DENIED and left out of its tools/list.
var ToolScopes = map[string]auth.Scope{
	"context_create":  auth.ScopeContextsWrite,
	"context_append":  auth.ScopeContextsWrite,
	"context_read":    auth.ScopeContextsRead,
	"context_list":    auth.ScopeContextsRead,
	"context_delete":  auth.ScopeContextsWrite,
	"memory_put":      auth.ScopeMemoryWrite,
	"memory_get":      auth.ScopeMemoryRead,
	"memory_delete":   auth.ScopeMemoryWrite,
	"memory_list":     auth.ScopeMemoryRead,
	"context_search":  auth.ScopeContextsRead,
	"memory_search":   auth.ScopeMemoryRead,
	"context_fork":    auth.ScopeContextsWrite,
	"context_compact": auth.ScopeContextsWrite,
	"audit_read":      auth.ScopeAdmin,
	"erase_subject":   auth.ScopeAdmin,
	// changes_read: memory changes only with memory:read too (the cell
	// filters them by the scopes the worker sends).
	"changes_read": auth.ScopeContextsRead,
	resourcesRead:  auth.ScopeContextsRead,
}

const resourcesRead = "resources/read"

// checkScope refuses a tool c's scopes do not cover.
func checkScope(c caller, tool string) error {
	need, ok := ToolScopes[tool]
	if !ok {
		return cperr.New(cperr.PermissionDenied, "%s has no scope: no credential may call it", tool)
	}
	return auth.CheckScope(auth.Identity{Scopes: c.scopes}, tool, need)
}

// filterTools is the receiving middleware that leaves the tools a caller
// may not call out of its tools/list.
func filterTools(next sdk.MethodHandler) sdk.MethodHandler {
	return func(ctx context.Context, method string, req sdk.Request) (sdk.Result, error) {
		res, err := next(ctx, method, req)
		lt, ok := res.(*sdk.ListToolsResult)
		if method != "tools/list" || err != nil || !ok {
			return res, err
		}
		extra := req.GetExtra()
		if extra == nil || extra.Header == nil {
			return res, err
		}
		c := callerFrom(extra.Header)
		out := *lt
		out.Tools = make([]*sdk.Tool, 0, len(lt.Tools))
		for _, t := range lt.Tools {
			if checkScope(c, t.Name) == nil {
				out.Tools = append(out.Tools, t)
			}
		}
		return &out, nil
	}
}

// callerOf reads the headers serveMCP set. Their absence means the SDK
// handler was reached without the wrapper: a wiring bug.
func callerOf(extra *sdk.RequestExtra) (caller, error) {
	if extra == nil || extra.Header == nil {
		return caller{}, cperr.New(cperr.Internal, "request reached the tools without the worker's wrapper")
	}
	c := callerFrom(extra.Header)
	if !ids.Valid(c.tenant, ids.MaxLen) {
		return caller{}, cperr.New(cperr.Internal, "request reached the tools without a tenant")
	}
	return c, nil
}

func boolp(b bool) *bool { return &b }

// Tool inputs and outputs. The JSON names are the contract; the
// jsonschema tags are the descriptions the SDK puts in the schemas.
type (
	CreateInput struct {
		ContextID     string            `json:"context_id,omitempty" jsonschema:"optional id for the new context (1-128 characters of [A-Za-z0-9._-]); omitted: the server mints one"`
		Labels        map[string]string `json:"labels,omitempty" jsonschema:"optional labels (string to string); keys starting with 'cellplane.' are reserved"`
		RequestID     string            `json:"request_id,omitempty" jsonschema:"optional idempotency key (1-128 characters of [A-Za-z0-9._-]): a retried call with the same request_id creates one context and returns the same context_id"`
		ExpireAt      string            `json:"expire_at,omitempty" jsonschema:"optional RFC 3339 time at which the context expires (not with ttl_seconds)"`
		TTL           uint64            `json:"ttl_seconds,omitempty" jsonschema:"optional lifetime in seconds from now (not with expire_at); neither: the tenant's default retention"`
		TokenEncoding string            `json:"token_encoding,omitempty" jsonschema:"optional tokenizer encoding of the context's token counts: o200k_base (the default), cl100k_base, p50k_base, p50k_edit or r50k_base"`
	}
	CreateOutput struct {
		ContextID string `json:"context_id" jsonschema:"the context's id: the handle to pass to the other context_* tools"`
		ExpireAt  string `json:"expire_at,omitempty" jsonschema:"RFC 3339 time the context expires at; absent: never"`
	}

	ForkInput struct {
		ContextID    string            `json:"context_id" jsonschema:"the context to fork (it may itself be a fork)"`
		AtSeq        uint64            `json:"at_seq,omitempty" jsonschema:"the fork holds the context's entries 1..at_seq; 0 or omitted: all of them"`
		NewContextID string            `json:"new_context_id,omitempty" jsonschema:"optional id for the fork (1-128 characters of [A-Za-z0-9._-]); omitted: the server mints one"`
		RequestID    string            `json:"request_id,omitempty" jsonschema:"optional idempotency key (1-128 characters of [A-Za-z0-9._-]): a retried call with the same request_id forks once and returns the same fork"`
		Labels       map[string]string `json:"labels,omitempty" jsonschema:"optional labels of the fork; keys starting with 'cellplane.' are reserved"`
		ExpireAt     string            `json:"expire_at,omitempty" jsonschema:"optional RFC 3339 time at which the fork expires (not with ttl_seconds)"`
		TTL          uint64            `json:"ttl_seconds,omitempty" jsonschema:"optional lifetime of the fork in seconds from now (not with expire_at)"`
	}
	ForkOutput struct {
		ContextID string `json:"context_id" jsonschema:"the fork's id"`
		ForkedSeq uint64 `json:"forked_seq" jsonschema:"the seq the fork was taken at: its entries up to it are the source's; its own continue from forked_seq + 1"`
		Parent    string `json:"parent_context_id,omitempty" jsonschema:"the context forked"`
		ExpireAt  string `json:"expire_at,omitempty" jsonschema:"RFC 3339 time the fork expires at; absent: never"`
	}

	EntryInput struct {
		Role     string            `json:"role" jsonschema:"who wrote the entry, e.g. user, assistant, tool, system"`
		Content  string            `json:"content" jsonschema:"the entry's text"`
		Metadata map[string]string `json:"metadata,omitempty" jsonschema:"optional string metadata"`
		// Embedding: a vector the client computed (cellplane runs no model).
		Embedding []float32 `json:"embedding,omitempty" jsonschema:"optional embedding of the entry for vector search (context_search with vector): finite numbers, not all zero; every embedding of the tenant's contexts has the dimension of the first one written"`
	}
	AppendInput struct {
		ContextID   string       `json:"context_id" jsonschema:"the context to append to"`
		Entries     []EntryInput `json:"entries" jsonschema:"the entries to append, in order (at least one)"`
		RequestID   string       `json:"request_id,omitempty" jsonschema:"optional idempotency key (1-128 characters of [A-Za-z0-9._-]): a retried call with the same request_id appends once and returns the same seqs"`
		ExpectedSeq *uint64      `json:"expected_seq,omitempty" jsonschema:"append only if the context's last seq is this (0: only to an empty context); else the call fails SEQUENCE_MISMATCH and appends nothing (safe concurrent writers)"`
	}
	AppendOutput struct {
		FirstSeq uint64 `json:"first_seq" jsonschema:"seq of the first appended entry"`
		LastSeq  uint64 `json:"last_seq" jsonschema:"seq of the last appended entry"`
	}

	ReadInput struct {
		ContextID      string  `json:"context_id" jsonschema:"the context to read"`
		FromSeq        *uint64 `json:"from_seq,omitempty" jsonschema:"read from this seq on (inclusive; 0 and 1 mean the first entry); not with tail"`
		Tail           *uint32 `json:"tail,omitempty" jsonschema:"read the last tail entries; not with from_seq"`
		MaxEntries     uint32  `json:"max_entries,omitempty" jsonschema:"at most this many entries (0: the worker's cap)"`
		MaxBytes       uint64  `json:"max_bytes,omitempty" jsonschema:"at most about this many bytes of entries (0: 64 KiB, newest entries first); at least one entry is returned when one exists"`
		MaxTokens      uint32  `json:"max_tokens,omitempty" jsonschema:"a token budget: the newest entries that fit, preceded by the compaction summary of older ones when it fits too; never exceeded"`
		Raw            bool    `json:"raw,omitempty" jsonschema:"return the entries a compaction summary covers instead of the summary"`
		MaxStalenessMs uint32  `json:"max_staleness_ms,omitempty" jsonschema:"accept an answer up to this many milliseconds stale (a STALE read, which the worker may serve from its read cache without asking the cell); it may then miss recent writes, even your own made through another worker. 0 (default): the answer reflects every write acknowledged before the call"`
	}
	EntryOutput struct {
		Seq        uint64            `json:"seq"`
		Role       string            `json:"role"`
		Content    string            `json:"content"`
		Encoding   string            `json:"encoding,omitempty" jsonschema:"base64 when the entry holds binary data"`
		Metadata   map[string]string `json:"metadata,omitempty"`
		CreateTime string            `json:"create_time,omitempty" jsonschema:"RFC 3339"`
	}
	SummaryOutput struct {
		FromSeq    uint64 `json:"from_seq"`
		UpToSeq    uint64 `json:"up_to_seq"`
		Text       string `json:"text"`
		TokenCount uint32 `json:"token_count"`
		CreateTime string `json:"create_time,omitempty" jsonschema:"RFC 3339"`
	}
	ReadOutput struct {
		Summary        *SummaryOutput `json:"summary,omitempty" jsonschema:"the compaction summary standing in for entries from_seq..up_to_seq"`
		Entries        []EntryOutput  `json:"entries"`
		NextSeq        uint64         `json:"next_seq" jsonschema:"the from_seq of the next read: last returned seq + 1"`
		LastSeq        uint64         `json:"last_seq" jsonschema:"the context's last seq at the time of the read"`
		TokensReturned uint64         `json:"tokens_returned" jsonschema:"tokens of the returned entries and summary"`
		TotalTokens    uint64         `json:"total_tokens" jsonschema:"tokens of all the context's entries"`
		TokenEncoding  string         `json:"token_encoding" jsonschema:"the tokenizer encoding of the counts"`
	}

	CompactInput struct {
		ContextID string `json:"context_id" jsonschema:"the context to compact"`
		UpToSeq   uint64 `json:"up_to_seq" jsonschema:"the summary stands for entries 1..up_to_seq (at most last_seq, above any earlier compaction's)"`
		Summary   string `json:"summary" jsonschema:"the summary text, written by the caller"`
		RequestID string `json:"request_id,omitempty" jsonschema:"optional idempotency key (1-128 characters of [A-Za-z0-9._-]): a retried call with the same request_id compacts once"`
	}
	CompactOutput struct {
		ContextID     string `json:"context_id"`
		UpToSeq       uint64 `json:"up_to_seq" jsonschema:"reads return the summary in place of entries 1..up_to_seq"`
		SummaryTokens uint32 `json:"summary_tokens"`
		TotalTokens   uint64 `json:"total_tokens" jsonschema:"tokens of all the context's entries (which stay stored)"`
	}

	ListInput struct {
		PageToken     string               `json:"page_token,omitempty" jsonschema:"next_page_token of the previous page"`
		Labels        map[string]string    `json:"labels,omitempty" jsonschema:"only contexts having every one of these labels with exactly this value"`
		LabelSelector []LabelRequirementIn `json:"label_selector,omitempty" jsonschema:"only contexts whose labels meet every requirement (with labels: both)"`
	}
	// LabelRequirementIn is one condition of a label_selector.
	LabelRequirementIn struct {
		Key      string   `json:"key" jsonschema:"the label key (keys starting with 'cellplane.' are reserved)"`
		Operator string   `json:"operator" jsonschema:"equals or not_equals (one value), in or not_in (one or more values), exists or not_exists (no values); not_equals and not_in also match items without the label"`
		Values   []string `json:"values,omitempty" jsonschema:"the values the operator compares with"`
	}

	AuditInput struct {
		AfterTseq uint64 `json:"after_tseq,omitempty" jsonschema:"records after this tseq (the previous page's next_after_tseq)"`
		Limit     uint32 `json:"limit,omitempty" jsonschema:"most records (default 100, at most 1000)"`
		Principal string `json:"principal,omitempty" jsonschema:"only this principal's records"`
		Since     string `json:"since,omitempty" jsonschema:"only records at or after this RFC 3339 time"`
	}
	AuditRecord struct {
		Tseq         uint64 `json:"tseq"`
		Time         string `json:"time"`
		Principal    string `json:"principal,omitempty"`
		Origin       string `json:"origin,omitempty"`
		RequestID    string `json:"request_id,omitempty"`
		Op           string `json:"op"`
		ContextID    string `json:"context_id,omitempty"`
		MemoryKey    string `json:"memory_key,omitempty"`
		ErasedAtTseq uint64 `json:"erased_at_tseq,omitempty" jsonschema:"set when an erasure at that tseq redacted the record"`
	}
	AuditOutput struct {
		Records       []AuditRecord `json:"records"`
		NextAfterTseq uint64        `json:"next_after_tseq,omitempty" jsonschema:"pass as after_tseq for the next page; absent: no more"`
	}

	EraseInput struct {
		Principal   string `json:"principal,omitempty" jsonschema:"erase this principal's contexts and memory (exactly one of principal and context_id)"`
		ContextID   string `json:"context_id,omitempty" jsonschema:"erase this context (exactly one of principal and context_id)"`
		RequestID   string `json:"request_id,omitempty" jsonschema:"optional idempotency key (1-128 characters of [A-Za-z0-9._-]): a retried call returns the first erase's answer"`
		WaitSeconds uint32 `json:"wait_seconds,omitempty" jsonschema:"how long to wait for the standby region's acknowledgement (default and most: half the worker's call timeout, 5 s by default)"`
	}
	EraseOutput struct {
		Tseq              uint64 `json:"tseq" jsonschema:"the erase's place in the tenant's change log"`
		Time              string `json:"time"`
		Cell              string `json:"cell,omitempty" jsonschema:"the cell that erased (the tenant's owner)"`
		ContextsDeleted   uint64 `json:"contexts_deleted"`
		MemoryKeysDeleted uint64 `json:"memory_keys_deleted"`
		EventsScrubbed    uint64 `json:"events_scrubbed"`
		HasStandby        bool   `json:"has_standby"`
		StandbyApplied    bool   `json:"standby_applied" jsonschema:"the standby acknowledged the erase's tseq (it applied the erase) within the wait"`
		StandbyTseq       uint64 `json:"standby_tseq,omitempty"`
		Deduplicated      bool   `json:"deduplicated,omitempty"`
	}
	ContextOutput struct {
		ContextID     string            `json:"context_id"`
		Labels        map[string]string `json:"labels,omitempty"`
		LastSeq       uint64            `json:"last_seq"`
		EntryCount    uint64            `json:"entry_count"`
		SizeBytes     uint64            `json:"size_bytes"`
		TotalTokens   uint64            `json:"total_tokens"`
		TokenEncoding string            `json:"token_encoding,omitempty"`
		CompactedSeq  uint64            `json:"compacted_seq,omitempty"`
		CreateTime    string            `json:"create_time,omitempty"`
		UpdateTime    string            `json:"update_time,omitempty"`
		Parent        string            `json:"parent_context_id,omitempty" jsonschema:"for a fork: the context it was forked from"`
		ForkedSeq     uint64            `json:"forked_seq,omitempty" jsonschema:"for a fork: the seq it was forked at"`
		ExpireAt      string            `json:"expire_at,omitempty" jsonschema:"RFC 3339 time the context expires at; absent: never"`
	}
	ListOutput struct {
		Contexts      []ContextOutput `json:"contexts"`
		NextPageToken string          `json:"next_page_token" jsonschema:"empty on the last page (a page may be short, even empty, with a token: a filtered listing examines a bounded number of contexts per call)"`
	}

	DeleteInput struct {
		ContextID string `json:"context_id" jsonschema:"the context to delete, with all its entries"`
	}
	DeleteOutput struct {
		ContextID string `json:"context_id"`
		Deleted   bool   `json:"deleted"`
	}

	PutInput struct {
		Key              string            `json:"key" jsonschema:"the memory key (UTF-8, at most 512 bytes)"`
		Value            string            `json:"value" jsonschema:"the value to store"`
		ExpectedRevision *uint64           `json:"expected_revision,omitempty" jsonschema:"compare-and-set: write only if the key's current revision is this (0: only if the key does not exist)"`
		Scope            string            `json:"scope,omitempty" jsonschema:"whose memory: principal (the default: the caller's own) or tenant (shared by every principal of the tenant)"`
		RequestID        string            `json:"request_id,omitempty" jsonschema:"optional idempotency key (1-128 characters of [A-Za-z0-9._-]): a retried call with the same request_id writes once and returns the same revision"`
		ExpireAt         string            `json:"expire_at,omitempty" jsonschema:"optional RFC 3339 time at which the key expires (not with ttl_seconds)"`
		TTL              uint64            `json:"ttl_seconds,omitempty" jsonschema:"optional lifetime in seconds from now (not with expire_at); neither: the tenant's default retention"`
		Labels           map[string]string `json:"labels,omitempty" jsonschema:"optional labels (string to string) that memory_list filters on; every put sets them anew; keys starting with 'cellplane.' are reserved"`
		Embedding        []float32         `json:"embedding,omitempty" jsonschema:"optional embedding of the value for vector search (memory_search with vector): finite numbers, not all zero; every embedding of the tenant's memory has the dimension of the first one written. A put without one removes the key's previous embedding"`
	}
	PutOutput struct {
		Revision uint64 `json:"revision" jsonschema:"the key's new revision"`
		ExpireAt string `json:"expire_at,omitempty" jsonschema:"RFC 3339 time the key expires at; absent: never"`
	}
	GetInput struct {
		Key            string `json:"key" jsonschema:"the memory key"`
		Scope          string `json:"scope,omitempty" jsonschema:"whose memory: principal (the default: the caller's own) or tenant (shared by every principal of the tenant)"`
		MaxStalenessMs uint32 `json:"max_staleness_ms,omitempty" jsonschema:"accept an answer up to this many milliseconds stale (a STALE read, which the worker may serve from its read cache without asking the cell); it may then miss recent writes, even your own made through another worker. 0 (default): the answer reflects every write acknowledged before the call"`
	}
	GetOutput struct {
		Value    string            `json:"value"`
		Encoding string            `json:"encoding,omitempty" jsonschema:"base64 when the value is not UTF-8 text"`
		Revision uint64            `json:"revision"`
		Labels   map[string]string `json:"labels,omitempty"`
	}
	MemDeleteInput struct {
		Key              string  `json:"key" jsonschema:"the memory key"`
		ExpectedRevision *uint64 `json:"expected_revision,omitempty" jsonschema:"delete only if the key's current revision is this"`
		Scope            string  `json:"scope,omitempty" jsonschema:"whose memory: principal (the default: the caller's own) or tenant (shared by every principal of the tenant)"`
		RequestID        string  `json:"request_id,omitempty" jsonschema:"optional idempotency key (1-128 characters of [A-Za-z0-9._-]): a retried call with the same request_id deletes once"`
	}
	MemDeleteOutput struct {
		Key     string `json:"key"`
		Deleted bool   `json:"deleted"`
	}
	MemListInput struct {
		Prefix        string               `json:"prefix,omitempty" jsonschema:"list only keys starting with this"`
		PageToken     string               `json:"page_token,omitempty" jsonschema:"next_page_token of the previous page"`
		Scope         string               `json:"scope,omitempty" jsonschema:"whose memory: principal (the default: the caller's own) or tenant (shared by every principal of the tenant)"`
		Labels        map[string]string    `json:"labels,omitempty" jsonschema:"only keys having every one of these labels with exactly this value"`
		LabelSelector []LabelRequirementIn `json:"label_selector,omitempty" jsonschema:"only keys whose labels meet every requirement (with labels: both)"`
		UpdatedAfter  string               `json:"updated_after,omitempty" jsonschema:"only keys written after this RFC 3339 time"`
	}
	MemItem struct {
		Key        string            `json:"key"`
		Revision   uint64            `json:"revision"`
		Labels     map[string]string `json:"labels,omitempty"`
		UpdateTime string            `json:"update_time,omitempty"`
	}
	MemListOutput struct {
		Items         []MemItem `json:"items"`
		NextPageToken string    `json:"next_page_token" jsonschema:"empty on the last page (a page may be short, even empty, with a token: a filtered listing examines a bounded number of keys per call)"`
	}

	ContextSearchInput struct {
		Query      string            `json:"query,omitempty" jsonschema:"keywords: entries are ranked by BM25; words match after lower-casing (no stemming); at least one of query and vector"`
		Vector     []float32         `json:"vector,omitempty" jsonschema:"optional embedding to rank entries by similarity (entries appended with an embedding); with query, both rankings are fused"`
		MatchAll   bool              `json:"match_all,omitempty" jsonschema:"only entries holding every query word (default: any word)"`
		Limit      uint32            `json:"limit,omitempty" jsonschema:"most hits (default 10, at most 100)"`
		ContextIDs []string          `json:"context_ids,omitempty" jsonschema:"only entries of these contexts"`
		Labels     map[string]string `json:"labels,omitempty" jsonschema:"only entries of contexts with these labels (every key equal)"`
		Metadata   map[string]string `json:"metadata,omitempty" jsonschema:"only entries with this metadata (every key equal)"`
		Roles      []string          `json:"roles,omitempty" jsonschema:"only entries with one of these roles"`
	}
	ContextHitOutput struct {
		ContextID string      `json:"context_id"`
		Score     float64     `json:"score" jsonschema:"higher is better; comparable within one answer only"`
		Entry     EntryOutput `json:"entry"`
	}
	ContextSearchOutput struct {
		Hits      []ContextHitOutput `json:"hits" jsonschema:"best first"`
		Truncated bool               `json:"truncated,omitempty" jsonschema:"the search stopped at the server's bound of index work (very common words): hits are the best of what it scanned"`
	}
	MemorySearchInput struct {
		Query    string            `json:"query,omitempty" jsonschema:"keywords: memory values (UTF-8 text) are ranked by BM25; at least one of query and vector"`
		Vector   []float32         `json:"vector,omitempty" jsonschema:"optional embedding to rank items by similarity (items put with an embedding)"`
		MatchAll bool              `json:"match_all,omitempty" jsonschema:"only items holding every query word (default: any word)"`
		Limit    uint32            `json:"limit,omitempty" jsonschema:"most hits (default 10, at most 100)"`
		Prefix   string            `json:"prefix,omitempty" jsonschema:"only keys starting with this"`
		Scope    string            `json:"scope,omitempty" jsonschema:"whose memory: principal (the default: the caller's own) or tenant (shared by every principal of the tenant)"`
		Labels   map[string]string `json:"labels,omitempty" jsonschema:"only items with these labels (every key equal)"`
	}
	MemoryHitOutput struct {
		Key      string            `json:"key"`
		Value    string            `json:"value"`
		Encoding string            `json:"encoding,omitempty" jsonschema:"base64 when the value is not UTF-8 text"`
		Revision uint64            `json:"revision"`
		Score    float64           `json:"score" jsonschema:"higher is better; comparable within one answer only"`
		Labels   map[string]string `json:"labels,omitempty"`
	}
	MemorySearchOutput struct {
		Hits      []MemoryHitOutput `json:"hits" jsonschema:"best first"`
		Truncated bool              `json:"truncated,omitempty" jsonschema:"the search stopped at the server's bound of index work: hits are the best of what it scanned"`
	}
)

// addTools registers the tools and the resource templates on w.server
// (and, through onServers, on every 2025-era session's server).
//
// Annotations, per the MCP definitions (readOnly: no modification;
// destructive: may delete or overwrite, as opposed to only adding;
// idempotent: repeating the call with the same arguments has no further
// effect; openWorld: reaches outside a closed domain, which the tenant's
// store is not):
//   - context_fork: additive; not idempotent as a tool (a repeat without
//     request_id forks again), like context_append.
//   - context_create: additive; not idempotent (without context_id every
//     call makes a new context; with one, a repeat fails ALREADY_EXISTS).
//   - context_append: additive; NOT idempotent as a tool: a repeat without
//     request_id appends again. With request_id it is (the hint cannot say
//     "idempotent when an argument is given", so it says false).
//   - context_read/list, memory_get/list: read-only (hence idempotent).
//   - context_delete, memory_delete: destructive; idempotent (a repeat
//     deletes nothing more: it fails CONTEXT_NOT_FOUND / KEY_NOT_FOUND or
//     REVISION_MISMATCH, or succeeds on an absent key).
//   - memory_put: destructive, because it overwrites the previous value;
//     not idempotent, because every put bumps the revision, which other
//     callers' compare-and-set depends on.
func (w *Worker) addTools() {
	closed := boolp(false)
	addTool(w, &sdk.Tool{
		Name:        "context_create",
		Title:       "Create a context",
		Description: "Create a conversation context (an append-only log of entries) and return its context_id handle.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: boolp(false), OpenWorldHint: closed},
	}, w.contextCreate)
	addTool(w, &sdk.Tool{
		Name:  "context_append",
		Title: "Append entries to a context",
		Description: "Append entries (role, content, metadata) to a context; returns the seqs they got. " +
			"Pass a request_id to make retries safe: the same request_id appends once.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: boolp(false), OpenWorldHint: closed},
	}, w.contextAppend)
	addTool(w, &sdk.Tool{
		Name:        "context_read",
		Title:       "Read a context",
		Description: "Read a context: by default its newest entries within 64 KiB; from a seq (from_seq) or its last entries (tail); within a token budget (max_tokens: the newest entries that fit, after the compaction summary of older ones). A compaction's summary stands in for the entries it covers unless raw. next_seq continues the read.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: closed},
	}, w.contextRead)
	addTool(w, &sdk.Tool{
		Name:  "context_compact",
		Title: "Compact a context",
		Description: "Store a summary (that you wrote) of a context's entries 1..up_to_seq: reads then return it in place of those entries (raw reads still get them). " +
			"A later compaction must reach further and replaces it. Pass a request_id to make retries safe.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: boolp(false), OpenWorldHint: closed},
	}, w.contextCompact)
	addTool(w, &sdk.Tool{
		Name:        "audit_read",
		Title:       "Read the tenant's audit log",
		Description: "Tenant admins only: who changed what, when and through which tool or RPC, oldest first, one page at a time.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: closed},
	}, w.auditRead)
	addTool(w, &sdk.Tool{
		Name:  "erase_subject",
		Title: "Erase a principal's data or a context",
		Description: "Tenant admins only: delete a principal's contexts and memory, or one context, and scrub them from the change log and the dedup window, here and on the standby region; " +
			"the answer says whether the standby has applied the erasure. Pass a request_id to make retries safe.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: boolp(true), IdempotentHint: true, OpenWorldHint: closed},
	}, w.eraseSubject)
	addTool(w, &sdk.Tool{
		Name:        "context_list",
		Title:       "List contexts",
		Description: "List the caller's contexts, one page at a time, optionally only those whose labels match (labels: exact values; label_selector: equals/not_equals/in/not_in/exists/not_exists). A filtered page may be short or empty and still carry a next_page_token: keep paging until it is empty.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: closed},
	}, w.contextList)
	addTool(w, &sdk.Tool{
		Name:        "context_delete",
		Title:       "Delete a context",
		Description: "Delete a context and all its entries.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: boolp(true), IdempotentHint: true, OpenWorldHint: closed},
	}, w.contextDelete)
	addTool(w, &sdk.Tool{
		Name:  "context_fork",
		Title: "Fork a context",
		Description: "Fork a context at a seq into a new context (copy-on-write: instant whatever its length): the fork reads the source's entries up to at_seq, then its own. " +
			"Pass a request_id to make retries safe.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: boolp(false), OpenWorldHint: closed},
	}, w.contextFork)
	addTool(w, &sdk.Tool{
		Name:        "memory_put",
		Title:       "Write a memory key",
		Description: "Set a memory key to a value (and optional labels to filter memory_list on); with expected_revision, only if the key is at that revision (compare-and-set). Returns the new revision.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: boolp(true), OpenWorldHint: closed},
	}, w.memoryPut)
	addTool(w, &sdk.Tool{
		Name:        "memory_get",
		Title:       "Read a memory key",
		Description: "Get a memory key's value and revision.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: closed},
	}, w.memoryGet)
	addTool(w, &sdk.Tool{
		Name:        "memory_delete",
		Title:       "Delete a memory key",
		Description: "Delete a memory key; with expected_revision, only if the key is at that revision.",
		Annotations: &sdk.ToolAnnotations{DestructiveHint: boolp(true), IdempotentHint: true, OpenWorldHint: closed},
	}, w.memoryDelete)
	addTool(w, &sdk.Tool{
		Name:        "memory_list",
		Title:       "List memory keys",
		Description: "List memory keys (with revisions, labels and update times) with an optional prefix, one page at a time, optionally only those whose labels match (labels, label_selector) or written after updated_after. A filtered page may be short or empty and still carry a next_page_token: keep paging until it is empty.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: closed},
	}, w.memoryList)
	addTool(w, &sdk.Tool{
		Name:  "context_search",
		Title: "Search the caller's contexts",
		Description: "Find entries of the caller's contexts by keywords (BM25 ranking) and/or an embedding, best first, with optional filters (context_ids, labels, metadata, roles). " +
			"Each hit carries the entry; use context_read with from_seq to see what surrounds it.",
		InputSchema: portableSchema[ContextSearchInput](),
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: closed},
	}, w.contextSearch)
	addTool(w, &sdk.Tool{
		Name:        "memory_search",
		Title:       "Search memory",
		Description: "Find memory items by keywords in their values (BM25 ranking) and/or an embedding, best first: the caller's own memory, or the tenant's with scope tenant.",
		InputSchema: portableSchema[MemorySearchInput](),
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: closed},
	}, w.memorySearch)

	addTool(w, &sdk.Tool{
		Name:  "changes_read",
		Title: "Read the tenant's changes after a cursor",
		Description: "Changes to your contexts and memory after a cursor (from a previous changes_read or a subscription notification's _meta cellplane/cursor), waiting up to wait_ms for one; returns them with the cursor to pass next time. " +
			"Resume a subscription with it after a reconnect: nothing is lost or repeated. CURSOR_EXPIRED: re-read what you follow, then continue from the current_cursor it names.",
		Annotations: &sdk.ToolAnnotations{ReadOnlyHint: true, IdempotentHint: true, OpenWorldHint: closed},
	}, w.changesRead)

	w.onServers(func(s *sdk.Server) { w.addResources(s) })
}

// addResources registers the resource templates on s.
func (w *Worker) addResources(s *sdk.Server) {
	s.AddResourceTemplate(&sdk.ResourceTemplate{
		Name:        "tenant-context",
		Title:       "Context entries (tenant-qualified URI)",
		Description: "The same as cellplane://contexts/{context_id}, naming the tenant: the URI to subscribe to (subscriptions/listen). The tenant must be the endpoint's.",
		MIMEType:    "text/plain",
		URITemplate: TenantContextURITemplate,
	}, w.readContextResource)
	s.AddResourceTemplate(&sdk.ResourceTemplate{
		Name:        "context",
		Title:       "Context entries",
		Description: "A context's entries as text, one \"role: content\" per entry (up to the worker's read caps).",
		MIMEType:    "text/plain",
		URITemplate: ContextURITemplate,
	}, w.readContextResource)
}

// addTool registers a typed tool whose handler gets the caller and returns
// the structured output or an error; it adds metrics, logs and the error
// mapping. Errors become tool errors (isError results) whose text is
// "REASON: message".
func addTool[In, Out any](w *Worker, t *sdk.Tool, h func(context.Context, caller, In) (Out, error)) {
	name := t.Name
	if _, ok := ToolScopes[name]; !ok {
		panic(fmt.Sprintf("mcp: tool %s has no row in ToolScopes", name))
	}
	// The input schema is handed to the SDK pre-serialized: v1.8.0
	// re-marshals a tool's input schema on every request (looking for
	// x-mcp-header annotations), which for a *jsonschema.Schema cost about a
	// third of the worker's CPU per call; a json.RawMessage costs a copy.
	if t.InputSchema == nil {
		schema, err := jsonschema.For[In](nil)
		if err != nil {
			panic(fmt.Sprintf("mcp: input schema of %s: %v", name, err))
		}
		b, err := json.Marshal(schema)
		if err != nil {
			panic(fmt.Sprintf("mcp: input schema of %s: %v", name, err))
		}
		t.InputSchema = json.RawMessage(b)
	}
	// invoke is the tool on both paths, the SDK's and the fast one: the
	// same metrics, logs and error mapping.
	invoke := func(ctx context.Context, c caller, cerr error, in In) (Out, error) {
		c.tool = name
		start := time.Now()
		err := cerr
		var out Out
		if err == nil {
			err = checkScope(c, name)
		}
		if err == nil {
			out, err = h(ctx, c, in)
		}
		err = toolError(err)
		w.observe(name, c, start, err)
		if err != nil {
			var zero Out
			return zero, err
		}
		return out, nil
	}
	handler := func(ctx context.Context, req *sdk.CallToolRequest, in In) (*sdk.CallToolResult, Out, error) {
		c, err := callerOf(req.Extra)
		out, err := invoke(ctx, c, err, in)
		if text, ok := toolText(out); ok && err == nil {
			return &sdk.CallToolResult{Content: []sdk.Content{&sdk.TextContent{Text: text}}}, out, nil
		}
		return nil, out, err
	}
	w.onServers(func(s *sdk.Server) { sdk.AddTool(s, t, handler) })
	w.fast[name] = fastTool{
		in:  resolveFor[In](),
		out: resolveFor[Out](),
		call: func(ctx context.Context, c caller, args []byte) (any, error, bool) {
			var in In
			if err := json.Unmarshal(args, &in); err != nil {
				return nil, nil, false
			}
			out, err := invoke(ctx, c, nil, in)
			return out, err, true
		},
	}
}

func (w *Worker) observe(tool string, c caller, start time.Time, err error) {
	d := time.Since(start)
	result := "ok"
	if err != nil {
		result = string(cperr.ReasonOf(err))
	}
	w.toolCalls.WithLabelValues(tool, result).Inc()
	w.toolDur.WithLabelValues(tool).Observe(d.Seconds())
	if cperr.ReasonOf(err) == cperr.Internal {
		w.log.Error("MCP tool call failed", "method", "tools/call", "tool", tool, "tenant", c.tenant, "principal", c.principal, "err", err, "duration", d)
		return
	}
	// Info with the principal: who did what through MCP is worth a line
	// (the audit record in the store is the durable account of mutations).
	w.log.Info("MCP tool call", "method", "tools/call", "tool", tool, "tenant", c.tenant, "principal", c.principal, "result", result, "duration", d)
}

// toolError turns any error into a *cperr.Error with a reason of the
// error contract (which bounds the result label and the reasons a tool
// error names); the message of an unexpected error is not passed on.
func toolError(err error) error {
	if err == nil {
		return nil
	}
	if rpcerr.IsTransport(err) {
		return cperr.New(cperr.CellUnavailable, "the cell is unreachable").WithRetryAfter(time.Second)
	}
	err = rpcerr.FromStatus(err)
	var ce *cperr.Error
	switch {
	case errors.As(err, &ce) && cperr.Known(ce.Reason):
		return ce
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return cperr.New(cperr.CellUnavailable, "the cell did not answer in time").WithRetryAfter(time.Second)
	}
	return &cperr.Error{Reason: cperr.Internal, Message: "internal error"}
}

// callPolicy is the backoff of a tool's backend call; CallTimeout bounds
// the tries.
var callPolicy = retry.Policy{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond}

// call runs one backend call for c's tenant, bounded by CallTimeout, and
// retries what the retry policy allows until the budget ends. Every write
// carries a request id, so a retry never applies twice.
func call[T any](ctx context.Context, w *Worker, c caller, fn func(context.Context) (T, error)) (T, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout)
	defer cancel()
	ctx = c.outgoing(ctx)
	if c.scopes.Has(auth.ScopeAdmin) {
		// The worker authenticated the caller: the cell's admin-only
		// methods (ReadAudit, Erase) take its word, as they take the
		// router's.
		ctx = metadata.AppendToOutgoingContext(ctx, tenantmd.AdminKey, "true")
	}
	var res T
	err := retry.Do(ctx, callPolicy, retry.Idempotent, func(ctx context.Context) error {
		var err error
		res, err = fn(ctx)
		return toolError(err)
	})
	if err != nil {
		var zero T
		return zero, err
	}
	return res, nil
}

func contextNotFound(id string) error {
	return cperr.New(cperr.ContextNotFound, "context %s does not exist", id)
}

// contextErr gives every CONTEXT_NOT_FOUND the same text, so that a
// context of another principal and a missing one read alike.
func contextErr(id string, err error) error {
	if errors.Is(err, cperr.ErrContextNotFound) {
		return contextNotFound(id)
	}
	return err
}

func invalid(field, desc string) error {
	return cperr.Invalid(cperr.FieldViolation{Field: field, Description: desc})
}

func checkContextID(id string) error {
	return ids.Check("context_id", id, ids.MaxLen)
}

// checkOwner makes a context of another principal look missing. Without
// a principal (no authentication) there is nothing to check. The check
// precedes the operation (one extra read); a context deleted and re-created
// in between by another principal is the only window, and its id would
// have to be chosen by that principal.
func (w *Worker) checkOwner(ctx context.Context, c caller, id string) error {
	return w.checkOwnerAt(ctx, c, id, nil)
}

// checkOwnerAt is checkOwner reading the context's owner with opts: a
// STALE read's owner check may come from the read cache (the owner is
// the context's label, which only a change of the context alters, and
// every change of the context drops the cached metadata).
func (w *Worker) checkOwnerAt(ctx context.Context, c caller, id string, opts *contextv1.ReadOptions) error {
	if err := checkContextID(id); err != nil {
		return err
	}
	if c.principal == "" {
		return nil
	}
	req := &contextv1.GetContextRequest{ContextId: id, ReadOptions: opts}
	res, err := cached(w, readcache.ContextKey(c.tenant, id), opts, func(opt grpc.CallOption) (*contextv1.GetContextResponse, error) {
		return call(ctx, w, c, func(ctx context.Context) (*contextv1.GetContextResponse, error) {
			return w.cell.GetContext(ctx, req, opt)
		})
	})
	if err != nil {
		return contextErr(id, err)
	}
	if res.GetContext().GetLabels()[PrincipalLabel] != c.principal {
		return contextNotFound(id)
	}
	return nil
}

// newRequestID makes a request id for one tool call, so that the worker's
// own retries of the backend call are applied once.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "mcp-" + hex.EncodeToString(b[:])
}

// appendRequestID derives the backend request id from the caller's: the
// same on every worker (so a retry through another worker deduplicates)
// and namespaced by principal and context (so that callers' ids never
// collide in the tenant-wide dedup table).
func appendRequestID(c caller, contextID, requestID string) string {
	return toolRequestID("context_append", "mcp-a-", c, contextID, requestID)
}

// toolRequestID is appendRequestID's derivation for any mutating tool:
// namespaced by tool, principal and target (a context id, a memory key
// with its scope), so one client request id used with two tools or two
// targets never deduplicates one against the other.
func toolRequestID(tool, prefix string, c caller, target, requestID string) string {
	h := sha256.Sum256([]byte(tool + "\x00" + c.principal + "\x00" + target + "\x00" + requestID))
	return prefix + hex.EncodeToString(h[:16])
}

// requestID is the backend request id of a mutating tool call: derived
// from the client's request_id when given (a retry, through any worker,
// applies once), else fresh (the worker's own retries apply once).
func requestID(tool, prefix string, c caller, target, clientID string) (string, error) {
	if clientID == "" {
		return newRequestID(), nil
	}
	if err := ids.Check("request_id", clientID, ids.MaxLen); err != nil {
		return "", err
	}
	return toolRequestID(tool, prefix, c, target, clientID), nil
}

// memoryScope reads a memory tool's scope argument.
func memoryScope(s string) (contextv1.MemoryScope, string, error) {
	switch s {
	case "", "principal":
		return contextv1.MemoryScope_MEMORY_SCOPE_PRINCIPAL, "principal", nil
	case "tenant":
		return contextv1.MemoryScope_MEMORY_SCOPE_TENANT, "tenant", nil
	}
	return 0, "", invalid("scope", "must be principal or tenant")
}

// compactRequestID is appendRequestID for context_compact (its own
// namespace: an append and a compaction may share a caller's id).
func compactRequestID(c caller, contextID, requestID string) string {
	h := sha256.Sum256([]byte("context_compact\x00" + c.principal + "\x00" + contextID + "\x00" + requestID))
	return "mcp-k-" + hex.EncodeToString(h[:16])
}

// textSummarizer is an output whose tool result text is a short summary
// of it, the data being in structuredContent only (a read's entries are
// not serialized twice).
type textSummarizer interface{ toolText() string }

// toolText is out's summary text when it has one.
func toolText(out any) (string, bool) {
	if s, ok := out.(textSummarizer); ok {
		return s.toolText(), true
	}
	return "", false
}

func (o ReadOutput) toolText() string {
	var b strings.Builder
	if s := o.Summary; s != nil {
		fmt.Fprintf(&b, "summary of entries %d-%d, ", s.FromSeq, s.UpToSeq)
	}
	switch n := len(o.Entries); n {
	case 0:
		b.WriteString("no entries")
	default:
		fmt.Fprintf(&b, "%d entries (seq %d-%d)", n, o.Entries[0].Seq, o.Entries[n-1].Seq)
	}
	fmt.Fprintf(&b, "; %d of the context's %d tokens (%s); last_seq %d, next_seq %d. The entries are in structuredContent.",
		o.TokensReturned, o.TotalTokens, o.TokenEncoding, o.LastSeq, o.NextSeq)
	return b.String()
}

func userLabels(in map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(in)+1)
	for k, v := range in {
		if strings.HasPrefix(strings.ToLower(k), ReservedLabelPrefix) {
			return nil, invalid("labels", "keys starting with '"+ReservedLabelPrefix+"' are reserved")
		}
		out[k] = v
	}
	return out, nil
}

// labelOperators are the label_selector operators by their MCP names.
var labelOperators = map[string]contextv1.LabelOperator{
	"equals":     contextv1.LabelOperator_LABEL_OPERATOR_EQUALS,
	"not_equals": contextv1.LabelOperator_LABEL_OPERATOR_NOT_EQUALS,
	"in":         contextv1.LabelOperator_LABEL_OPERATOR_IN,
	"not_in":     contextv1.LabelOperator_LABEL_OPERATOR_NOT_IN,
	"exists":     contextv1.LabelOperator_LABEL_OPERATOR_EXISTS,
	"not_exists": contextv1.LabelOperator_LABEL_OPERATOR_NOT_EXISTS,
}

// labelSelector builds a list filter from a tool's labels (each an
// EQUALS) and label_selector arguments (nil when both are empty). Keys
// with the reserved prefix are refused: the worker's own labels (the
// creator binding) are not the caller's to filter on, as they are not
// the caller's to set or see. The cell checks sizes and meaning.
func labelSelector(labels map[string]string, reqs []LabelRequirementIn) (*contextv1.LabelSelector, error) {
	if len(labels) == 0 && len(reqs) == 0 {
		return nil, nil
	}
	sel := &contextv1.LabelSelector{}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	slices.Sort(keys) // a deterministic request
	for _, k := range keys {
		if strings.HasPrefix(strings.ToLower(k), ReservedLabelPrefix) {
			return nil, invalid("labels", "keys starting with '"+ReservedLabelPrefix+"' are reserved")
		}
		sel.Requirements = append(sel.Requirements, &contextv1.LabelRequirement{Key: k, Operator: contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, Values: []string{labels[k]}})
	}
	for i, r := range reqs {
		if strings.HasPrefix(strings.ToLower(r.Key), ReservedLabelPrefix) {
			return nil, invalid(fmt.Sprintf("label_selector[%d].key", i), "keys starting with '"+ReservedLabelPrefix+"' are reserved")
		}
		op, ok := labelOperators[strings.ToLower(r.Operator)]
		if !ok {
			return nil, invalid(fmt.Sprintf("label_selector[%d].operator", i), "must be equals, not_equals, in, not_in, exists or not_exists")
		}
		sel.Requirements = append(sel.Requirements, &contextv1.LabelRequirement{Key: r.Key, Operator: op, Values: r.Values})
	}
	return sel, nil
}

func visibleLabels(in map[string]string) map[string]string {
	var out map[string]string
	for k, v := range in {
		if strings.HasPrefix(strings.ToLower(k), ReservedLabelPrefix) {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(in))
		}
		out[k] = v
	}
	return out
}

func timeString(t *timestamppb.Timestamp) string {
	if t == nil {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}

func (w *Worker) contextCreate(ctx context.Context, c caller, in CreateInput) (CreateOutput, error) {
	if in.ContextID != "" {
		if err := checkContextID(in.ContextID); err != nil {
			return CreateOutput{}, err
		}
	}
	labels, err := userLabels(in.Labels)
	if err != nil {
		return CreateOutput{}, err
	}
	if c.principal != "" {
		labels[PrincipalLabel] = c.principal
	}
	if in.TokenEncoding != "" {
		if err := tokens.Check(in.TokenEncoding); err != nil {
			return CreateOutput{}, invalid("token_encoding", "is not a supported encoding ("+strings.Join(tokens.Encodings(), ", ")+")")
		}
	}
	rid, err := requestID("context_create", "mcp-c-", c, in.ContextID, in.RequestID)
	if err != nil {
		return CreateOutput{}, err
	}
	at, ttl, err := retention(in.ExpireAt, in.TTL)
	if err != nil {
		return CreateOutput{}, err
	}
	req := &contextv1.CreateContextRequest{ContextId: in.ContextID, Labels: labels, RequestId: rid, ExpireTime: at, Ttl: ttl, TokenEncoding: in.TokenEncoding}
	res, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.CreateContextResponse, error) {
		return w.cell.CreateContext(ctx, req)
	})
	if err != nil {
		if errors.Is(err, cperr.ErrAlreadyExists) {
			// Whoever owns it: do not tell more than that the id is taken.
			return CreateOutput{}, cperr.New(cperr.AlreadyExists, "context %s already exists", in.ContextID)
		}
		return CreateOutput{}, err
	}
	return CreateOutput{ContextID: res.GetContext().GetContextId(), ExpireAt: timeString(res.GetContext().GetExpireTime())}, nil
}

// retention turns the tools' expire_at (RFC 3339) or ttl_seconds into the
// request's fields; the cell validates the bounds.
func retention(expireAt string, ttlSeconds uint64) (*timestamppb.Timestamp, *durationpb.Duration, error) {
	if expireAt != "" && ttlSeconds != 0 {
		return nil, nil, invalid("ttl_seconds", "set expire_at or ttl_seconds, not both")
	}
	if ttlSeconds != 0 {
		if ttlSeconds > uint64(validate.MaxTTL/time.Second) {
			return nil, nil, invalid("ttl_seconds", fmt.Sprintf("must be at most %d", uint64(validate.MaxTTL/time.Second)))
		}
		return nil, durationpb.New(time.Duration(ttlSeconds) * time.Second), nil
	}
	if expireAt == "" {
		return nil, nil, nil
	}
	t, err := timeArg("expire_at", expireAt)
	return t, nil, err
}

// timeArg parses a tool's RFC 3339 time argument (nil when empty).
func timeArg(field, s string) (*timestamppb.Timestamp, error) {
	if s == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return nil, invalid(field, "must be an RFC 3339 time, e.g. 2030-01-02T15:04:05Z")
	}
	return timestamppb.New(t), nil
}

// forkRequestID derives the backend request id of a fork like
// appendRequestID (same on every worker, namespaced by principal).
func forkRequestID(c caller, contextID, requestID string) string {
	h := sha256.Sum256([]byte("context_fork\x00" + c.principal + "\x00" + contextID + "\x00" + requestID))
	return "mcp-f-" + hex.EncodeToString(h[:16])
}

func (w *Worker) contextFork(ctx context.Context, c caller, in ForkInput) (ForkOutput, error) {
	if err := checkContextID(in.ContextID); err != nil {
		return ForkOutput{}, err
	}
	if in.NewContextID != "" {
		if err := ids.Check("new_context_id", in.NewContextID, ids.MaxLen); err != nil {
			return ForkOutput{}, err
		}
	}
	rid := newRequestID()
	if in.RequestID != "" {
		if err := ids.Check("request_id", in.RequestID, ids.MaxLen); err != nil {
			return ForkOutput{}, err
		}
		rid = forkRequestID(c, in.ContextID, in.RequestID)
	}
	labels, err := userLabels(in.Labels)
	if err != nil {
		return ForkOutput{}, err
	}
	if c.principal != "" {
		labels[PrincipalLabel] = c.principal // the fork is the caller's
	}
	at, ttl, err := retention(in.ExpireAt, in.TTL)
	if err != nil {
		return ForkOutput{}, err
	}
	if err := w.checkOwner(ctx, c, in.ContextID); err != nil {
		return ForkOutput{}, err
	}
	req := &contextv1.ForkRequest{ContextId: in.ContextID, AtSeq: in.AtSeq, NewContextId: in.NewContextID, RequestId: rid,
		Labels: labels, ExpireTime: at, Ttl: ttl}
	res, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.ForkResponse, error) {
		return w.cell.Fork(ctx, req)
	})
	if err != nil {
		if errors.Is(err, cperr.ErrAlreadyExists) {
			return ForkOutput{}, cperr.New(cperr.AlreadyExists, "context %s already exists", in.NewContextID)
		}
		return ForkOutput{}, contextErr(in.ContextID, err)
	}
	f := res.GetContext()
	return ForkOutput{ContextID: f.GetContextId(), ForkedSeq: f.GetParentSeq(), Parent: f.GetParentContextId(), ExpireAt: timeString(f.GetExpireTime())}, nil
}

func (w *Worker) contextAppend(ctx context.Context, c caller, in AppendInput) (AppendOutput, error) {
	if err := checkContextID(in.ContextID); err != nil {
		return AppendOutput{}, err
	}
	if len(in.Entries) == 0 {
		return AppendOutput{}, invalid("entries", "at least one entry is required")
	}
	rid, err := requestID("context_append", "mcp-a-", c, in.ContextID, in.RequestID)
	if err != nil {
		return AppendOutput{}, err
	}
	entries := make([]*contextv1.Entry, len(in.Entries))
	for i, e := range in.Entries {
		if e.Role == "" {
			return AppendOutput{}, invalid(fmt.Sprintf("entries[%d].role", i), "is required")
		}
		entries[i] = &contextv1.Entry{Role: e.Role, Content: &contextv1.Entry_Text{Text: e.Content}, Metadata: e.Metadata, Embedding: e.Embedding}
	}
	if err := w.checkOwner(ctx, c, in.ContextID); err != nil {
		return AppendOutput{}, err
	}
	req := &contextv1.AppendRequest{ContextId: in.ContextID, Entries: entries, RequestId: rid, ExpectedSeq: in.ExpectedSeq}
	res, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.AppendResponse, error) {
		return w.cell.Append(ctx, req)
	})
	if err != nil {
		return AppendOutput{}, contextErr(in.ContextID, err)
	}
	return AppendOutput{FirstSeq: res.GetFirstSeq(), LastSeq: res.GetLastSeq()}, nil
}

// readBudget caps a requested budget (0: the cap).
func readBudget[T uint32 | uint64](requested T, limit T) T {
	if requested == 0 || requested > limit {
		return limit
	}
	return requested
}

// read runs a context read within the worker's caps; a read that names no
// byte bound gets DefaultReadBytes.
func (w *Worker) read(ctx context.Context, c caller, req *contextv1.ReadRequest) (*contextv1.ReadResponse, error) {
	req.MaxEntries = readBudget(req.MaxEntries, uint32(min(w.cfg.MaxReadEntries, 1<<31)))
	if req.MaxBytes == 0 {
		req.MaxBytes = uint64(w.cfg.DefaultReadBytes)
	}
	req.MaxBytes = readBudget(req.MaxBytes, uint64(w.cfg.MaxReadBytes))
	if err := w.checkOwnerAt(ctx, c, req.GetContextId(), req.GetReadOptions()); err != nil {
		return nil, err
	}
	res, err := cached(w, readcache.ReadKey(c.tenant, req), req.GetReadOptions(), func(opt grpc.CallOption) (*contextv1.ReadResponse, error) {
		return call(ctx, w, c, func(ctx context.Context) (*contextv1.ReadResponse, error) {
			return w.cell.Read(ctx, req, opt)
		})
	})
	if err != nil {
		return nil, contextErr(req.GetContextId(), err)
	}
	return res, nil
}

func entryContent(e *contextv1.Entry) (content, encoding string) {
	switch x := e.GetContent().(type) {
	case *contextv1.Entry_Text:
		return x.Text, ""
	case *contextv1.Entry_Data:
		if utf8.Valid(x.Data) {
			return string(x.Data), ""
		}
		return base64.StdEncoding.EncodeToString(x.Data), "base64"
	}
	return "", ""
}

func (w *Worker) contextRead(ctx context.Context, c caller, in ReadInput) (ReadOutput, error) {
	if err := checkContextID(in.ContextID); err != nil {
		return ReadOutput{}, err
	}
	req := &contextv1.ReadRequest{ContextId: in.ContextID, MaxEntries: in.MaxEntries, MaxBytes: in.MaxBytes, MaxTokens: in.MaxTokens, Raw: in.Raw,
		ReadOptions: staleOptions(in.MaxStalenessMs)}
	switch {
	case in.FromSeq != nil && in.Tail != nil:
		return ReadOutput{}, invalid("from_seq", "give from_seq or tail, not both")
	case in.Tail != nil:
		req.Start, req.Newest = &contextv1.ReadRequest_Tail{Tail: *in.Tail}, true
	case in.FromSeq != nil:
		req.Start = &contextv1.ReadRequest_FromSeq{FromSeq: *in.FromSeq}
	default:
		req.Start, req.Newest = &contextv1.ReadRequest_FromSeq{FromSeq: 1}, true // the newest entries
	}
	res, err := w.read(ctx, c, req)
	if err != nil {
		return ReadOutput{}, err
	}
	out := ReadOutput{Entries: make([]EntryOutput, 0, len(res.GetEntries())), NextSeq: res.GetNextSeq(), LastSeq: res.GetLastSeq(),
		TokensReturned: res.GetTokensReturned(), TotalTokens: res.GetTotalTokens(), TokenEncoding: res.GetTokenEncoding()}
	if s := res.GetSummary(); s != nil {
		out.Summary = &SummaryOutput{FromSeq: s.GetFromSeq(), UpToSeq: s.GetUpToSeq(), Text: s.GetText(), TokenCount: s.GetTokenCount(), CreateTime: timeString(s.GetCreateTime())}
	}
	for _, e := range res.GetEntries() {
		content, enc := entryContent(e)
		out.Entries = append(out.Entries, EntryOutput{
			Seq: e.GetSeq(), Role: e.GetRole(), Content: content, Encoding: enc,
			Metadata: e.GetMetadata(), CreateTime: timeString(e.GetCreateTime()),
		})
	}
	return out, nil
}

func (w *Worker) contextList(ctx context.Context, c caller, in ListInput) (ListOutput, error) {
	sel, err := labelSelector(in.Labels, in.LabelSelector)
	if err != nil {
		return ListOutput{}, err
	}
	res, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.ListContextsResponse, error) {
		// With a principal, the store lists only the principal's contexts,
		// through its index by creator.
		return w.cell.ListContexts(ctx, &contextv1.ListContextsRequest{PageToken: in.PageToken, CreatedByCaller: c.principal != "", LabelSelector: sel})
	})
	if err != nil {
		return ListOutput{}, err
	}
	out := ListOutput{Contexts: []ContextOutput{}, NextPageToken: res.GetNextPageToken()}
	for _, x := range res.GetContexts() {
		out.Contexts = append(out.Contexts, ContextOutput{
			ContextID: x.GetContextId(), Labels: visibleLabels(x.GetLabels()),
			LastSeq: x.GetLastSeq(), EntryCount: x.GetEntryCount(), SizeBytes: x.GetSizeBytes(),
			TotalTokens: x.GetTotalTokens(), TokenEncoding: x.GetTokenEncoding(), CompactedSeq: x.GetCompactedSeq(),
			CreateTime: timeString(x.GetCreateTime()), UpdateTime: timeString(x.GetUpdateTime()),
			Parent: x.GetParentContextId(), ForkedSeq: x.GetParentSeq(), ExpireAt: timeString(x.GetExpireTime()),
		})
	}
	return out, nil
}

func (w *Worker) contextCompact(ctx context.Context, c caller, in CompactInput) (CompactOutput, error) {
	if err := checkContextID(in.ContextID); err != nil {
		return CompactOutput{}, err
	}
	switch {
	case in.UpToSeq == 0:
		return CompactOutput{}, invalid("up_to_seq", "must be at least 1")
	case in.Summary == "":
		return CompactOutput{}, invalid("summary", "is required")
	}
	rid := newRequestID()
	if in.RequestID != "" {
		if err := ids.Check("request_id", in.RequestID, ids.MaxLen); err != nil {
			return CompactOutput{}, err
		}
		rid = compactRequestID(c, in.ContextID, in.RequestID)
	}
	if err := w.checkOwner(ctx, c, in.ContextID); err != nil {
		return CompactOutput{}, err
	}
	req := &contextv1.CompactRequest{ContextId: in.ContextID, UpToSeq: in.UpToSeq, Summary: in.Summary, RequestId: rid}
	res, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.CompactResponse, error) {
		return w.cell.Compact(ctx, req)
	})
	if err != nil {
		return CompactOutput{}, contextErr(in.ContextID, err)
	}
	return CompactOutput{ContextID: in.ContextID, UpToSeq: res.GetSummary().GetUpToSeq(), SummaryTokens: res.GetSummary().GetTokenCount(),
		TotalTokens: res.GetContext().GetTotalTokens()}, nil
}

func (w *Worker) auditRead(ctx context.Context, c caller, in AuditInput) (AuditOutput, error) {
	req := &contextv1.ReadAuditRequest{AfterTseq: in.AfterTseq, Limit: in.Limit, Principal: in.Principal}
	since, err := timeArg("since", in.Since)
	if err != nil {
		return AuditOutput{}, err
	}
	req.Since = since
	res, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.ReadAuditResponse, error) {
		return w.cell.ReadAudit(ctx, req)
	})
	if err != nil {
		return AuditOutput{}, err
	}
	out := AuditOutput{Records: []AuditRecord{}, NextAfterTseq: res.GetNextAfterTseq()}
	for _, r := range res.GetRecords() {
		out.Records = append(out.Records, AuditRecord{Tseq: r.GetTseq(), Time: timeString(r.GetTime()), Principal: r.GetPrincipal(), Origin: r.GetOrigin(),
			RequestID: r.GetRequestId(), Op: r.GetOp(), ContextID: r.GetContextId(), MemoryKey: r.GetMemoryKey(), ErasedAtTseq: r.GetErasedAtTseq()})
	}
	return out, nil
}

func (w *Worker) eraseSubject(ctx context.Context, c caller, in EraseInput) (EraseOutput, error) {
	if (in.Principal == "") == (in.ContextID == "") {
		return EraseOutput{}, invalid("principal", "exactly one of principal and context_id is required")
	}
	if in.ContextID != "" {
		if err := checkContextID(in.ContextID); err != nil {
			return EraseOutput{}, err
		}
	}
	rid, err := requestID("erase_subject", "mcp-e-", c, in.Principal+"\x00"+in.ContextID, in.RequestID)
	if err != nil {
		return EraseOutput{}, err
	}
	// The wait for the standby fits in the backend call's bound: at most
	// half of CallTimeout (the default too).
	wait := w.cfg.CallTimeout / 2
	if in.WaitSeconds > 0 {
		wait = min(wait, time.Duration(in.WaitSeconds)*time.Second)
	}
	req := &contextv1.EraseRequest{Principal: in.Principal, ContextId: in.ContextID, RequestId: rid, Wait: durationpb.New(wait)}
	res, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.EraseResponse, error) {
		return w.cell.Erase(ctx, req)
	})
	if err != nil {
		return EraseOutput{}, err
	}
	return EraseOutput{Tseq: res.GetTseq(), Time: timeString(res.GetTime()), Cell: res.GetCell(), ContextsDeleted: res.GetContextsDeleted(),
		MemoryKeysDeleted: res.GetMemoryKeysDeleted(), EventsScrubbed: res.GetEventsScrubbed(), HasStandby: res.GetHasStandby(),
		StandbyApplied: res.GetStandbyApplied(), StandbyTseq: res.GetStandbyTseq(), Deduplicated: res.GetDeduplicated()}, nil
}

func (w *Worker) contextDelete(ctx context.Context, c caller, in DeleteInput) (DeleteOutput, error) {
	if err := w.checkOwner(ctx, c, in.ContextID); err != nil {
		return DeleteOutput{}, err
	}
	req := &contextv1.DeleteContextRequest{ContextId: in.ContextID, RequestId: newRequestID()}
	if _, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.DeleteContextResponse, error) {
		return w.cell.DeleteContext(ctx, req)
	}); err != nil {
		return DeleteOutput{}, contextErr(in.ContextID, err)
	}
	return DeleteOutput{ContextID: in.ContextID, Deleted: true}, nil
}

func checkKey(key string) error {
	if key == "" {
		return invalid("key", "is required")
	}
	return nil
}

func (w *Worker) memoryPut(ctx context.Context, c caller, in PutInput) (PutOutput, error) {
	if err := checkKey(in.Key); err != nil {
		return PutOutput{}, err
	}
	scope, sname, err := memoryScope(in.Scope)
	if err != nil {
		return PutOutput{}, err
	}
	rid, err := requestID("memory_put", "mcp-p-", c, sname+"\x00"+in.Key, in.RequestID)
	if err != nil {
		return PutOutput{}, err
	}
	at, ttl, err := retention(in.ExpireAt, in.TTL)
	if err != nil {
		return PutOutput{}, err
	}
	labels, err := userLabels(in.Labels)
	if err != nil {
		return PutOutput{}, err
	}
	req := &contextv1.PutMemoryRequest{Key: in.Key, Value: []byte(in.Value), ExpectedRevision: in.ExpectedRevision, RequestId: rid, Scope: scope, ExpireTime: at, Ttl: ttl, Labels: labels, Embedding: in.Embedding}
	res, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.PutMemoryResponse, error) {
		return w.cell.PutMemory(ctx, req)
	})
	if err != nil {
		return PutOutput{}, err
	}
	return PutOutput{Revision: res.GetRevision(), ExpireAt: timeString(res.GetExpireTime())}, nil
}

func (w *Worker) memoryGet(ctx context.Context, c caller, in GetInput) (GetOutput, error) {
	if err := checkKey(in.Key); err != nil {
		return GetOutput{}, err
	}
	scope, _, err := memoryScope(in.Scope)
	if err != nil {
		return GetOutput{}, err
	}
	req := &contextv1.GetMemoryRequest{Key: in.Key, Scope: scope, ReadOptions: staleOptions(in.MaxStalenessMs)}
	res, err := cached(w, readcache.MemoryKey(c.tenant, c.principal, scope, in.Key), req.GetReadOptions(), func(opt grpc.CallOption) (*contextv1.GetMemoryResponse, error) {
		return call(ctx, w, c, func(ctx context.Context) (*contextv1.GetMemoryResponse, error) {
			return w.cell.GetMemory(ctx, req, opt)
		})
	})
	if err != nil {
		return GetOutput{}, err
	}
	item := res.GetItem()
	out := GetOutput{Value: string(item.GetValue()), Revision: item.GetRevision(), Labels: visibleLabels(item.GetLabels())}
	if !utf8.Valid(item.GetValue()) {
		out.Value, out.Encoding = base64.StdEncoding.EncodeToString(item.GetValue()), "base64"
	}
	return out, nil
}

func (w *Worker) memoryDelete(ctx context.Context, c caller, in MemDeleteInput) (MemDeleteOutput, error) {
	if err := checkKey(in.Key); err != nil {
		return MemDeleteOutput{}, err
	}
	scope, sname, err := memoryScope(in.Scope)
	if err != nil {
		return MemDeleteOutput{}, err
	}
	rid, err := requestID("memory_delete", "mcp-d-", c, sname+"\x00"+in.Key, in.RequestID)
	if err != nil {
		return MemDeleteOutput{}, err
	}
	req := &contextv1.DeleteMemoryRequest{Key: in.Key, ExpectedRevision: in.ExpectedRevision, RequestId: rid, Scope: scope}
	if _, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.DeleteMemoryResponse, error) {
		return w.cell.DeleteMemory(ctx, req)
	}); err != nil {
		return MemDeleteOutput{}, err
	}
	return MemDeleteOutput{Key: in.Key, Deleted: true}, nil
}

func (w *Worker) memoryList(ctx context.Context, c caller, in MemListInput) (MemListOutput, error) {
	scope, _, err := memoryScope(in.Scope)
	if err != nil {
		return MemListOutput{}, err
	}
	sel, err := labelSelector(in.Labels, in.LabelSelector)
	if err != nil {
		return MemListOutput{}, err
	}
	req := &contextv1.ListMemoryRequest{Prefix: in.Prefix, PageToken: in.PageToken, KeysOnly: true, Scope: scope, LabelSelector: sel}
	if req.UpdatedAfter, err = timeArg("updated_after", in.UpdatedAfter); err != nil {
		return MemListOutput{}, err
	}
	res, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.ListMemoryResponse, error) {
		return w.cell.ListMemory(ctx, req)
	})
	if err != nil {
		return MemListOutput{}, err
	}
	out := MemListOutput{Items: make([]MemItem, 0, len(res.GetItems())), NextPageToken: res.GetNextPageToken()}
	for _, it := range res.GetItems() {
		out.Items = append(out.Items, MemItem{Key: it.GetKey(), Revision: it.GetRevision(), Labels: visibleLabels(it.GetLabels()), UpdateTime: timeString(it.GetUpdateTime())})
	}
	return out, nil
}

// portableSchema is In's input schema (pre-serialized, see addTool) with
// the nullable types jsonschema gives slices (["null","array"]) made plain
// ("array"): an omitted argument is the same as an empty one, and strict
// clients accept only a single type.
func portableSchema[In any]() json.RawMessage {
	schema, err := jsonschema.For[In](nil)
	if err != nil {
		panic(fmt.Sprintf("mcp: input schema: %v", err))
	}
	var plain func(s *jsonschema.Schema)
	plain = func(s *jsonschema.Schema) {
		if s == nil {
			return
		}
		if len(s.Types) == 2 && s.Types[0] == "null" {
			s.Type, s.Types = s.Types[1], nil
		}
		plain(s.Items)
		plain(s.AdditionalProperties)
		for _, p := range s.Properties {
			plain(p)
		}
	}
	plain(schema)
	b, err := json.Marshal(schema)
	if err != nil {
		panic(fmt.Sprintf("mcp: input schema: %v", err))
	}
	return b
}

// equalsSelector is the selector of labels all equal to m's (nil: none).
func equalsSelector(m map[string]string) *contextv1.LabelSelector {
	if len(m) == 0 {
		return nil
	}
	sel := &contextv1.LabelSelector{}
	for _, k := range slices.Sorted(maps.Keys(m)) {
		sel.Requirements = append(sel.Requirements, &contextv1.LabelRequirement{Key: k, Operator: contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, Values: []string{m[k]}})
	}
	return sel
}

func (w *Worker) contextSearch(ctx context.Context, c caller, in ContextSearchInput) (ContextSearchOutput, error) {
	// Like context_list: with a principal, only the contexts it created.
	labels, err := labelSelector(in.Labels, nil)
	if err != nil {
		return ContextSearchOutput{}, err
	}
	req := &contextv1.SearchContextsRequest{Query: in.Query, Vector: in.Vector, MatchAll: in.MatchAll, Limit: in.Limit,
		ContextIds: in.ContextIDs, ContextLabels: labels, EntryMetadata: equalsSelector(in.Metadata),
		Roles: in.Roles, CreatedByCaller: c.principal != ""}
	res, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.SearchContextsResponse, error) {
		return w.cell.SearchContexts(ctx, req)
	})
	if err != nil {
		return ContextSearchOutput{}, err
	}
	out := ContextSearchOutput{Hits: make([]ContextHitOutput, 0, len(res.GetHits())), Truncated: res.GetTruncated()}
	for _, h := range res.GetHits() {
		e := h.GetEntry()
		content, enc := entryContent(e)
		out.Hits = append(out.Hits, ContextHitOutput{ContextID: h.GetContextId(), Score: h.GetScore(), Entry: EntryOutput{
			Seq: e.GetSeq(), Role: e.GetRole(), Content: content, Encoding: enc,
			Metadata: e.GetMetadata(), CreateTime: timeString(e.GetCreateTime()),
		}})
	}
	return out, nil
}

func (w *Worker) memorySearch(ctx context.Context, c caller, in MemorySearchInput) (MemorySearchOutput, error) {
	scope, _, err := memoryScope(in.Scope)
	if err != nil {
		return MemorySearchOutput{}, err
	}
	labels, err := labelSelector(in.Labels, nil)
	if err != nil {
		return MemorySearchOutput{}, err
	}
	req := &contextv1.SearchMemoryRequest{Query: in.Query, Vector: in.Vector, MatchAll: in.MatchAll, Limit: in.Limit, Prefix: in.Prefix, Scope: scope, Labels: labels}
	res, err := call(ctx, w, c, func(ctx context.Context) (*contextv1.SearchMemoryResponse, error) {
		return w.cell.SearchMemory(ctx, req)
	})
	if err != nil {
		return MemorySearchOutput{}, err
	}
	out := MemorySearchOutput{Hits: make([]MemoryHitOutput, 0, len(res.GetHits())), Truncated: res.GetTruncated()}
	for _, h := range res.GetHits() {
		it := h.GetItem()
		o := MemoryHitOutput{Key: it.GetKey(), Value: string(it.GetValue()), Revision: it.GetRevision(), Score: h.GetScore(), Labels: it.GetLabels()}
		if !utf8.Valid(it.GetValue()) {
			o.Value, o.Encoding = base64.StdEncoding.EncodeToString(it.GetValue()), "base64"
		}
		out.Hits = append(out.Hits, o)
	}
	return out, nil
}

// readContextResource serves cellplane://contexts/{context_id}: the
// context's newest entries within DefaultReadBytes, "role: content" per
// line, after the compaction summary that stands for older ones and a line
// naming the entries left out. The result is the caller's alone
// (cacheScope private, see cacheable).
func (w *Worker) readContextResource(ctx context.Context, req *sdk.ReadResourceRequest) (*sdk.ReadResourceResult, error) {
	uri := req.Params.URI
	start := time.Now()
	c, err := callerOf(req.Extra)
	id, ok := strings.CutPrefix(uri, contextURIPrefix)
	if !ok && err == nil {
		// cellplane://t/<tenant>/contexts/<id>: the endpoint's tenant only.
		t, perr := parseSubURI(c.tenant, uri)
		ok, id = perr == nil && !t.memory, t.name
	}
	if !ok || !ids.Valid(id, ids.MaxLen) {
		return nil, sdk.ResourceNotFoundError(uri)
	}
	if err == nil {
		err = checkScope(c, resourcesRead)
	}
	var res *contextv1.ReadResponse
	if err == nil {
		res, err = w.read(ctx, c, &contextv1.ReadRequest{ContextId: id, Start: &contextv1.ReadRequest_FromSeq{FromSeq: 1}, Newest: true})
	}
	err = toolError(err)
	w.observe(resourcesRead, c, start, err)
	if errors.Is(err, cperr.ErrContextNotFound) {
		return nil, sdk.ResourceNotFoundError(uri)
	}
	if err != nil {
		return nil, err
	}
	var b strings.Builder
	first := res.GetLastSeq() + 1 // the first seq shown
	if es := res.GetEntries(); len(es) > 0 {
		first = es[0].GetSeq()
	}
	shown := uint64(1) // entries before it are shown (by the summary)
	if s := res.GetSummary(); s != nil {
		fmt.Fprintf(&b, "[summary of entries %d to %d]: %s\n", s.GetFromSeq(), s.GetUpToSeq(), s.GetText())
		shown = s.GetUpToSeq() + 1
	}
	if first > shown {
		fmt.Fprintf(&b, "[entries %d to %d not shown; use context_read with from_seq %d]\n", shown, first-1, shown)
	}
	for _, e := range res.GetEntries() {
		content, _ := entryContent(e)
		fmt.Fprintf(&b, "%s: %s\n", e.GetRole(), content)
	}
	return &sdk.ReadResourceResult{Cacheable: sdk.Cacheable{CacheScope: "private"}, Contents: []*sdk.ResourceContents{{URI: uri, MIMEType: "text/plain", Text: b.String()}}}, nil
}
