package mcp

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/changecursor"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/rpcerr"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	sdk "github.com/modelcontextprotocol/go-sdk/mcp"
)

// Subscription resource URIs carry the tenant, so that two tenants'
// identical context ids (or memory keys) never name the same resource:
//
//	cellplane://t/<tenant>/contexts/<context_id>  one context
//	cellplane://t/<tenant>/memory/<key>           one memory key (path-escaped), either scope the caller sees
//	cellplane://t/<tenant>/contexts               every context the caller sees
//	cellplane://t/<tenant>/memory                 every memory key the caller sees
//
// A URI naming another tenant than the endpoint's URL is refused.
const (
	tenantURIPrefix = "cellplane://t/"
	// TenantContextURITemplate is the tenant-qualified resource template
	// of a context (cellplane://contexts/{context_id}, the older form,
	// names the same context of the URL's tenant).
	TenantContextURITemplate = "cellplane://t/{tenant}/contexts/{context_id}"
)

// Meta keys of the worker's subscription notifications (and of a
// subscriptions/listen request: MetaCursor resumes).
const (
	MetaCursor = "cellplane/cursor" // "<tseq>.<time_unix_nano>": resume after it
	MetaKind   = "cellplane/kind"   // the change (context_appended, memory_put, ...)
	MetaSeqs   = "cellplane/seqs"   // appends: "<first>-<last>"
	MetaScope  = "cellplane/scope"  // memory: principal or tenant
)

// ContextURI is the subscription URI of a tenant's context.
func ContextURI(tenant, id string) string { return tenantURIPrefix + tenant + "/contexts/" + id }

// MemoryURI is the subscription URI of a tenant's memory key.
func MemoryURI(tenant, key string) string {
	return tenantURIPrefix + tenant + "/memory/" + url.PathEscape(key)
}

// subTarget is what a subscription URI names.
type subTarget struct {
	memory bool   // memory (else contexts)
	name   string // the context id or key; "" for every one
}

// parseSubURI reads a subscription URI for the endpoint's tenant.
func parseSubURI(tenant, uri string) (subTarget, error) {
	rest, ok := strings.CutPrefix(uri, tenantURIPrefix)
	if !ok {
		return subTarget{}, cperr.New(cperr.InvalidArgument, "subscribe to %s<tenant>/contexts[/<id>] or %s<tenant>/memory[/<key>], not %q", tenantURIPrefix, tenantURIPrefix, uri)
	}
	t, rest, _ := strings.Cut(rest, "/")
	if t != tenant {
		// Never another tenant's resource, whatever the id.
		return subTarget{}, cperr.New(cperr.PermissionDenied, "the URI names tenant %q; this endpoint serves %q", t, tenant)
	}
	kind, name, _ := strings.Cut(rest, "/")
	switch kind {
	case "contexts":
		if name != "" && !ids.Valid(name, ids.MaxLen) {
			return subTarget{}, cperr.New(cperr.InvalidArgument, "the context id %s", ids.Rule(ids.MaxLen))
		}
		return subTarget{name: name}, nil
	case "memory":
		key, err := url.PathUnescape(name)
		if err != nil {
			return subTarget{}, cperr.New(cperr.InvalidArgument, "the memory key in %q is not path-escaped", uri)
		}
		return subTarget{memory: true, name: key}, nil
	}
	return subTarget{}, cperr.New(cperr.InvalidArgument, "unknown resource kind %q in %q", kind, uri)
}

// needScope is the scope a subscription target needs.
func (t subTarget) needScope() auth.Scope {
	if t.memory {
		return auth.ScopeMemoryRead
	}
	return auth.ScopeContextsRead
}

// changeURIs returns, of the subscribed URIs, those a change updates.
func changeURIs(tenant string, subs map[string]subTarget, ch *contextv1.Change) []string {
	var out []string
	for uri, t := range subs {
		switch {
		case ch.GetKind() == contextv1.ChangeKind_CHANGE_KIND_ERASED:
			out = append(out, uri) // an erasure may have removed anything
		case t.memory != (ch.GetMemoryKey() != "" || isMemoryKind(ch.GetKind())):
		case t.name == "":
			out = append(out, uri)
		case t.memory && t.name == ch.GetMemoryKey(), !t.memory && t.name == ch.GetContextId():
			out = append(out, uri)
		}
	}
	return out
}

func isMemoryKind(k contextv1.ChangeKind) bool {
	switch k {
	case contextv1.ChangeKind_CHANGE_KIND_MEMORY_PUT, contextv1.ChangeKind_CHANGE_KIND_MEMORY_DELETED, contextv1.ChangeKind_CHANGE_KIND_MEMORY_EXPIRED:
		return true
	}
	return false
}

// kindName is a change kind as the MCP face names it ("context_appended").
func kindName(k contextv1.ChangeKind) string {
	return strings.ToLower(strings.TrimPrefix(k.String(), "CHANGE_KIND_"))
}

// changeMeta is the _meta of a change's notification.
func changeMeta(ch *contextv1.Change) sdk.Meta {
	m := sdk.Meta{MetaCursor: changecursor.Format(ch.GetCursor()), MetaKind: kindName(ch.GetKind())}
	if ch.GetLastSeq() != 0 {
		m[MetaSeqs] = fmt.Sprintf("%d-%d", ch.GetFirstSeq(), ch.GetLastSeq())
	}
	switch ch.GetMemoryScope() {
	case contextv1.MemoryScope_MEMORY_SCOPE_TENANT:
		m[MetaScope] = "tenant"
	case contextv1.MemoryScope_MEMORY_SCOPE_PRINCIPAL:
		m[MetaScope] = "principal"
	}
	return m
}

// cursorErr is a cell error as the listen (or changes_read) returns it:
// CURSOR_EXPIRED names the cursors to resume from in its text.
func cursorErr(err error) error {
	var ce *cperr.Error
	if errors.As(rpcerr.FromStatus(err), &ce) && ce.Reason == cperr.CursorExpired {
		return cperr.New(cperr.CursorExpired, "%s (oldest_cursor %q, current_cursor %q: re-read, then resume after current_cursor)",
			ce.Message, ce.Metadata[cperr.MetaOldestCursor], ce.Metadata[cperr.MetaCurrentCursor]).
			With(cperr.MetaOldestCursor, ce.Metadata[cperr.MetaOldestCursor]).
			With(cperr.MetaCurrentCursor, ce.Metadata[cperr.MetaCurrentCursor])
	}
	return toolError(err)
}

// listen is one subscriptions/listen request: the worker serves it with
// its own SDK server (whose only session is the listen's), so that
// ResourceUpdated reaches this listener alone — never another principal's
// listen of the same URI on this worker — and follows the cell's
// WatchChanges for the caller from the listen's cursor.
type listen struct {
	w      *Worker
	c      caller
	srv    *sdk.Server
	acked  chan struct{} // closed once the acknowledgement is sent
	mu     sync.Mutex
	subs   map[string]subTarget
	stream contextv1.ContextService_WatchChangesClient
	start  *contextv1.ChangeCursor
}

// serveListen serves a subscriptions/listen request (r carries the
// worker's caller headers).
func (w *Worker) serveListen(rw http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Header)
	l := &listen{w: w, c: c, acked: make(chan struct{}), subs: make(map[string]subTarget)}
	l.srv = sdk.NewServer(w.impl, &sdk.ServerOptions{
		Logger:                    w.sdkLog,
		SupportedProtocolVersions: ProtocolVersions,
		HasResources:              true,
		SubscribeHandler:          l.subscribe,
		UnsubscribeHandler:        func(context.Context, *sdk.UnsubscribeRequest) error { return nil },
	})
	l.srv.AddSendingMiddleware(l.sending)
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	h := sdk.NewStreamableHTTPHandler(func(*http.Request) *sdk.Server { return l.srv }, &sdk.StreamableHTTPOptions{
		Stateless:           true,
		JSONResponse:        true,
		Logger:              w.sdkLog,
		MaxRequestBodyBytes: w.cfg.MaxBodyBytes,
	})
	h.ServeHTTP(flushWriter{rw}, r.WithContext(ctx))
}

// flushWriter flushes after every write: a listen's notifications must
// not wait in a buffer (nor in a proxy's).
type flushWriter struct{ http.ResponseWriter }

func (f flushWriter) Write(b []byte) (int, error) {
	n, err := f.ResponseWriter.Write(b)
	if fl, ok := f.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
	return n, err
}

func (f flushWriter) Flush() {
	if fl, ok := f.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
}

func (f flushWriter) Unwrap() http.ResponseWriter { return f.ResponseWriter }

// sending puts the starting cursor in the acknowledgement's _meta and
// releases the notifications once it is sent (every URI is registered
// with the SDK by then).
func (l *listen) sending(next sdk.MethodHandler) sdk.MethodHandler {
	return func(ctx context.Context, method string, req sdk.Request) (sdk.Result, error) {
		if method != "notifications/subscriptions/acknowledged" {
			return next(ctx, method, req)
		}
		l.mu.Lock()
		start := l.start
		l.mu.Unlock()
		if p, ok := req.GetParams().(*sdk.SubscriptionsAcknowledgedParams); ok && start != nil {
			m := p.GetMeta()
			if m == nil {
				m = map[string]any{}
			}
			m[MetaCursor] = changecursor.Format(start)
			p.SetMeta(m)
		}
		res, err := next(ctx, method, req)
		select {
		case <-l.acked:
		default:
			close(l.acked)
		}
		return res, err
	}
}

// subscribe is the SDK's SubscribeHandler, called once per URI of the
// listen with the listen's context and _meta. The first call opens the
// cell's WatchChanges from the _meta cursor (or from now), synchronously,
// so nothing between the acknowledgement and the first change is missed.
func (l *listen) subscribe(ctx context.Context, req *sdk.SubscribeRequest) error {
	t, err := parseSubURI(l.c.tenant, req.Params.URI)
	if err == nil {
		err = auth.CheckScope(auth.Identity{Scopes: l.c.scopes}, "subscribing to "+req.Params.URI, t.needScope())
	}
	if err != nil {
		return toolError(err)
	}
	l.mu.Lock()
	l.subs[req.Params.URI] = t
	opened := l.stream != nil
	l.mu.Unlock()
	if opened {
		return nil
	}
	var after *contextv1.ChangeCursor
	if s, ok := req.Params.Meta[MetaCursor].(string); ok && s != "" {
		if after, err = changecursor.Parse(s); err != nil {
			return cperr.New(cperr.InvalidArgument, "_meta %s: %v", MetaCursor, err)
		}
	}
	c := l.c
	c.tool = "subscriptions/listen"
	stream, err := l.w.cell.WatchChanges(c.outgoing(ctx), &contextv1.WatchChangesRequest{After: after})
	var first *contextv1.WatchChangesResponse
	if err == nil {
		first, err = stream.Recv()
	}
	if err != nil {
		return cursorErr(err)
	}
	l.mu.Lock()
	l.stream, l.start = stream, first.GetCursor()
	l.mu.Unlock()
	go l.follow(ctx)
	return nil
}

// follow sends a notification per change and subscribed URI, in cursor
// order, until the listen ends or the cell's stream does (the listen then
// ends: the client listens again from its last cursor, through any
// worker).
func (l *listen) follow(ctx context.Context) {
	select {
	case <-l.acked:
	case <-ctx.Done():
		return
	}
	for {
		resp, err := l.stream.Recv()
		if err != nil {
			if ctx.Err() == nil {
				l.w.log.Debug("listen: the change stream ended", "tenant", l.c.tenant, "err", err)
			}
			l.end()
			return
		}
		l.mu.Lock()
		subs := l.subs
		l.mu.Unlock()
		for _, ch := range resp.GetChanges() {
			for _, uri := range changeURIs(l.c.tenant, subs, ch) {
				if err := l.srv.ResourceUpdated(ctx, &sdk.ResourceUpdatedNotificationParams{URI: uri, Meta: changeMeta(ch)}); err != nil {
					l.end()
					return
				}
			}
		}
	}
}

// end ends the listen when its change stream ended (tenant moved,
// cursor expired, worker shutting down): closing the SDK's sessions
// ends the request, and the client listens again.
func (l *listen) end() {
	for ss := range l.srv.Sessions() {
		_ = ss.Close()
	}
}

// ChangesReadInput and ChangesReadOutput are changes_read's.
type (
	ChangesReadInput struct {
		After    string `json:"after,omitempty" jsonschema:"the cursor to read after (\"<tseq>.<time_unix_nano>\", from a previous changes_read or a notification's _meta cellplane/cursor); empty: the current position, no changes"`
		WaitMs   uint32 `json:"wait_ms,omitempty" jsonschema:"wait up to this long for a change when there is none yet (capped by the worker)"`
		Contexts bool   `json:"contexts,omitempty" jsonschema:"context changes (neither contexts nor memory: both)"`
		Memory   bool   `json:"memory,omitempty" jsonschema:"memory changes"`
	}
	ChangeOut struct {
		Cursor    string `json:"cursor"`
		Kind      string `json:"kind" jsonschema:"context_created, context_appended, context_deleted, context_compacted, context_forked, context_expired, memory_put, memory_deleted, memory_expired or erased"`
		URI       string `json:"uri,omitempty" jsonschema:"the changed resource (cellplane://t/<tenant>/contexts/<id> or .../memory/<key>)"`
		ContextID string `json:"context_id,omitempty"`
		FirstSeq  uint64 `json:"first_seq,omitempty"`
		LastSeq   uint64 `json:"last_seq,omitempty"`
		Key       string `json:"key,omitempty"`
		Scope     string `json:"scope,omitempty"`
		Revision  uint64 `json:"revision,omitempty"`
	}
	ChangesReadOutput struct {
		Changes []ChangeOut `json:"changes"`
		Cursor  string      `json:"cursor" jsonschema:"every change up to here was returned or is not yours: pass it as after next time"`
	}
)

// changesRead returns the caller's changes after a cursor (long-polling
// up to wait_ms), from the cell's WatchChanges: the resume path for any
// client, whatever its protocol version, with no loss between reads.
func (w *Worker) changesRead(ctx context.Context, c caller, in ChangesReadInput) (ChangesReadOutput, error) {
	var after *contextv1.ChangeCursor
	if in.After != "" {
		var err error
		if after, err = changecursor.Parse(in.After); err != nil {
			return ChangesReadOutput{}, invalid("after", err.Error())
		}
	}
	if in.Memory && !c.scopes.Has(auth.ScopeMemoryRead) {
		return ChangesReadOutput{}, auth.CheckScope(auth.Identity{Scopes: c.scopes}, "memory changes", auth.ScopeMemoryRead)
	}
	wait := min(time.Duration(in.WaitMs)*time.Millisecond, w.cfg.MaxChangesWait)
	ctx, cancel := context.WithTimeout(ctx, w.cfg.CallTimeout+wait)
	defer cancel()
	stream, err := w.cell.WatchChanges(c.outgoing(ctx), &contextv1.WatchChangesRequest{After: after, Contexts: in.Contexts, Memory: in.Memory})
	if err != nil {
		return ChangesReadOutput{}, cursorErr(err)
	}
	first, err := stream.Recv()
	if err != nil {
		return ChangesReadOutput{}, cursorErr(err)
	}
	out := ChangesReadOutput{Changes: []ChangeOut{}, Cursor: changecursor.Format(first.GetCursor())}
	if after == nil {
		return out, nil
	}
	// Read what is there, then wait for more only while nothing came.
	deadline := time.Now().Add(wait)
	for len(out.Changes) < w.cfg.MaxChangesPerRead {
		rctx, rcancel := context.WithDeadline(ctx, deadline)
		if len(out.Changes) > 0 || wait == 0 {
			rctx, rcancel = context.WithTimeout(ctx, changesDrain)
		}
		resp, err := recvCtx(rctx, stream)
		rcancel()
		if err != nil {
			if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
				break
			}
			return ChangesReadOutput{}, cursorErr(err)
		}
		for _, ch := range resp.GetChanges() {
			out.Changes = append(out.Changes, changeOut(c.tenant, ch))
		}
		out.Cursor = changecursor.Format(resp.GetCursor())
	}
	return out, nil
}

// changesDrain is how long changes_read waits for the next response once
// it has changes (or was asked not to wait): long enough for a response
// already on its way, short enough not to hold the answer.
const changesDrain = 20 * time.Millisecond

// recvCtx receives from stream until ctx ends (the stream stays usable
// only when it returned a response).
func recvCtx(ctx context.Context, stream contextv1.ContextService_WatchChangesClient) (*contextv1.WatchChangesResponse, error) {
	type res struct {
		r   *contextv1.WatchChangesResponse
		err error
	}
	ch := make(chan res, 1)
	go func() {
		r, err := stream.Recv()
		ch <- res{r, err}
	}()
	select {
	case r := <-ch:
		return r.r, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func changeOut(tenant string, ch *contextv1.Change) ChangeOut {
	o := ChangeOut{Cursor: changecursor.Format(ch.GetCursor()), Kind: kindName(ch.GetKind()), ContextID: ch.GetContextId(),
		FirstSeq: ch.GetFirstSeq(), LastSeq: ch.GetLastSeq(), Key: ch.GetMemoryKey(), Revision: ch.GetRevision()}
	switch {
	case ch.GetContextId() != "":
		o.URI = ContextURI(tenant, ch.GetContextId())
	case ch.GetMemoryKey() != "":
		o.URI = MemoryURI(tenant, ch.GetMemoryKey())
	}
	if s, ok := changeMeta(ch)[MetaScope].(string); ok {
		o.Scope = s
	}
	return o
}
