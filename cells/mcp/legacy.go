package mcp

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"io"
	"maps"
	"net/http"
	"sync"
	"time"

	sdk "github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/serve"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// SessionHeader is the Streamable HTTP session header of the 2025-era
// protocol versions.
const SessionHeader = "Mcp-Session-Id"

// peeked is what serveMCP needs to know of a request's body to route it.
type peeked struct {
	method  string // the JSON-RPC method of a single request ("" otherwise)
	version string // an initialize's params.protocolVersion
}

// peek reads r's body (already bounded by MaxBodyBytes) and puts it back,
// decoding it only when it may be a subscriptions/listen or an
// initialize (so that tool calls are not decoded once more here).
func peek(r *http.Request) peeked {
	body, err := io.ReadAll(r.Body)
	rest := io.Reader(errReader{err})
	if err == nil {
		rest = bytes.NewReader(nil)
	}
	r.Body = io.NopCloser(io.MultiReader(bytes.NewReader(body), rest))
	if err != nil || (!bytes.Contains(body, []byte("subscriptions/listen")) && !bytes.Contains(body, []byte("initialize"))) {
		return peeked{}
	}
	var m struct {
		Method string `json:"method"`
		Params struct {
			ProtocolVersion string `json:"protocolVersion"`
		} `json:"params"`
	}
	if json.Unmarshal(body, &m) != nil {
		return peeked{}
	}
	return peeked{method: m.Method, version: m.Params.ProtocolVersion}
}

// sessions serves the 2025-era clients that want a session: an
// initialize naming a protocol version before 2026-07-28, and every
// request carrying an Mcp-Session-Id (GET: the session's standalone SSE
// stream, DELETE: its end). It runs the SDK's stateful Streamable HTTP
// handler with a fresh sdk.Server per session, so that ResourceUpdated
// reaches that session alone: two principals subscribed to the same URI
// never see each other's signals. A session is bound to the tenant and
// principal that opened it (another caller presenting its id is told
// the session does not exist), lives on this worker only (the router pins
// it here) and ends after Config.SessionIdleTimeout without a request, on
// DELETE, or when the worker closes.
type sessions struct {
	w      *Worker
	h      *sdk.StreamableHTTPHandler
	mu     sync.Mutex
	byID   map[string]*session
	closed bool
}

// session is one 2025-era session and its subscriptions.
type session struct {
	l                 *sessions
	id                string
	tenant, principal string
	srv               *sdk.Server

	mu   sync.Mutex
	subs map[string]subTarget
	stop context.CancelFunc // the change follower's; nil while none runs
}

type sessionKey struct{}

// retryFull is the Retry-After of a refused initialize.
const retryFull = time.Second

func newSessions(w *Worker) *sessions {
	l := &sessions{w: w, byID: make(map[string]*session)}
	l.h = sdk.NewStreamableHTTPHandler(func(r *http.Request) *sdk.Server {
		if s, ok := r.Context().Value(sessionKey{}).(*session); ok {
			return s.srv // a new session's initialize
		}
		return w.server // only consulted for the protocol versions
	}, &sdk.StreamableHTTPOptions{
		JSONResponse:        true,
		Logger:              w.sdkLog,
		MaxRequestBodyBytes: w.cfg.MaxBodyBytes,
		SessionTimeout:      w.cfg.SessionIdleTimeout,
	})
	return l
}

// wants reports whether a request goes to the sessions.
func (l *sessions) wants(r *http.Request, p peeked) bool {
	if r.Header.Get("Mcp-Protocol-Version") >= statelessVersion {
		return false // 2026-07-28 has no sessions: a stray header is ignored
	}
	if r.Header.Get(SessionHeader) != "" {
		return true
	}
	return r.Method == http.MethodPost && p.method == "initialize" && p.version != "" && p.version < statelessVersion
}

// serve serves a request of a session, or the initialize opening one (r
// carries the worker's caller headers).
func (l *sessions) serve(rw http.ResponseWriter, r *http.Request) {
	c := callerFrom(r.Header)
	if id := r.Header.Get(SessionHeader); id != "" {
		l.mu.Lock()
		s := l.byID[id]
		l.mu.Unlock()
		if s == nil || s.tenant != c.tenant || s.principal != c.principal {
			// The 2025 spec's "session not found": the client initializes
			// again. Another caller's session is not found either.
			serve.WriteError(rw, http.StatusNotFound, "NOT_FOUND", "no such MCP session on this worker (it ended, or the worker restarted): initialize again, then resume with changes_read")
			return
		}
		l.h.ServeHTTP(rw, r)
		return
	}
	s, err := l.open(c)
	if err != nil {
		var ce *cperr.Error
		errors.As(err, &ce)
		if ce.RetryAfter > 0 {
			rw.Header().Set("Retry-After", "1")
		}
		serve.WriteError(rw, rpcerr.HTTPStatus(ce.Reason), string(ce.Reason), ce.Message)
		return
	}
	l.h.ServeHTTP(rw, r.WithContext(context.WithValue(r.Context(), sessionKey{}, s)))
	var ss *sdk.ServerSession
	for x := range s.srv.Sessions() {
		ss = x
	}
	if ss == nil { // the initialize failed: no session
		l.drop(s)
		return
	}
	go func() {
		_ = ss.Wait() // DELETE, the idle timeout, Worker.Close
		l.drop(s)
	}()
}

// open registers a new session for c, within Config.MaxSessions.
func (l *sessions) open(c caller) (*session, error) {
	full := func() error {
		return cperr.New(cperr.QuotaExceeded, "this worker serves its maximum of %d MCP sessions (2025-era protocol versions): retry later, or use protocol %s, which needs none",
			l.w.cfg.MaxSessions, statelessVersion).WithRetryAfter(retryFull)
	}
	l.mu.Lock()
	n, closed := len(l.byID), l.closed
	l.mu.Unlock()
	if closed {
		return nil, cperr.New(cperr.CellUnavailable, "the worker is closing").WithRetryAfter(retryFull)
	}
	if n >= l.w.cfg.MaxSessions {
		return nil, full()
	}
	s := &session{l: l, id: rand.Text(), tenant: c.tenant, principal: c.principal, subs: make(map[string]subTarget)}
	s.srv = l.w.newSessionServer(s)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.byID) >= l.w.cfg.MaxSessions {
		return nil, full()
	}
	l.byID[s.id] = s
	return s, nil
}

// drop forgets an ended session and stops its follower.
func (l *sessions) drop(s *session) {
	l.mu.Lock()
	delete(l.byID, s.id)
	l.mu.Unlock()
	s.mu.Lock()
	if s.stop != nil {
		s.stop()
		s.stop = nil
	}
	s.mu.Unlock()
}

// close ends every session (Worker.Close) and refuses new ones.
func (l *sessions) close() {
	l.mu.Lock()
	l.closed = true
	all := make([]*session, 0, len(l.byID))
	for _, s := range l.byID {
		all = append(all, s)
	}
	l.mu.Unlock()
	for _, s := range all {
		s.end()
		l.drop(s)
	}
}

// count is the number of open sessions.
func (l *sessions) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.byID)
}

// newSessionServer builds a session's own SDK server: the tools,
// resources and options of w.server, plus the session's subscribe
// handlers.
func (w *Worker) newSessionServer(s *session) *sdk.Server {
	srv := sdk.NewServer(w.impl, &sdk.ServerOptions{
		Instructions:              instructions,
		Logger:                    w.sdkLog,
		SupportedProtocolVersions: ProtocolVersions,
		SetCacheable:              cacheable,
		SchemaCache:               w.schemas,
		GetSessionID:              func() string { return s.id },
		SubscribeHandler:          s.subscribe,
		UnsubscribeHandler:        s.unsubscribe,
	})
	srv.AddReceivingMiddleware(filterTools)
	for _, f := range w.registrations {
		f(srv)
	}
	return srv
}

// subscribe is the session's SubscribeHandler. The first subscription
// opens the cell's WatchChanges for the caller (principal and scopes in
// the metadata, so the cell shows it only what it may see), from now,
// synchronously, and starts the follower.
func (s *session) subscribe(ctx context.Context, req *sdk.SubscribeRequest) error {
	c, err := callerOf(req.Extra)
	if err != nil {
		return err
	}
	t, err := parseSubURI(c.tenant, req.Params.URI)
	if err == nil {
		err = auth.CheckScope(auth.Identity{Scopes: c.scopes}, "subscribing to "+req.Params.URI, t.needScope())
	}
	if err != nil {
		return toolError(err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, dup := s.subs[req.Params.URI]; !dup && len(s.subs) >= s.l.w.cfg.MaxSubscriptionsPerSession {
		return cperr.New(cperr.QuotaExceeded, "a session subscribes to at most %d resources: unsubscribe from one first (or subscribe to cellplane://t/<tenant>/contexts for all of them)",
			s.l.w.cfg.MaxSubscriptionsPerSession)
	}
	if s.stop == nil {
		fctx, cancel := context.WithCancel(context.Background())
		c.tool = "resources/subscribe"
		stream, err := s.l.w.cell.WatchChanges(c.outgoing(fctx), &contextv1.WatchChangesRequest{})
		if err == nil {
			_, err = stream.Recv() // the starting cursor: the stream is open
		}
		if err != nil {
			cancel()
			return cursorErr(err)
		}
		s.stop = cancel
		go s.follow(fctx, stream)
	}
	s.subs[req.Params.URI] = t
	return nil
}

// unsubscribe is the session's UnsubscribeHandler: the last one stops
// the follower.
func (s *session) unsubscribe(_ context.Context, req *sdk.UnsubscribeRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.subs, req.Params.URI)
	if len(s.subs) == 0 && s.stop != nil {
		s.stop()
		s.stop = nil
	}
	return nil
}

// follow sends notifications/resources/updated per change and
// subscribed URI (with the change's cursor in _meta) on the session's
// standalone SSE stream, until stopped. When the cell's stream ends on
// its own (tenant moved, node closing) the session ends too: the client
// initializes again rather than wait for notifications that would never
// come.
func (s *session) follow(ctx context.Context, stream contextv1.ContextService_WatchChangesClient) {
	for {
		resp, err := stream.Recv()
		if err != nil {
			if ctx.Err() == nil {
				s.l.w.log.Debug("MCP session: the change stream ended; ending the session", "tenant", s.tenant, "err", err)
				s.end()
			}
			return
		}
		s.mu.Lock()
		subs := maps.Clone(s.subs)
		s.mu.Unlock()
		for _, ch := range resp.GetChanges() {
			for _, uri := range changeURIs(s.tenant, subs, ch) {
				// A context of no request: the standalone SSE stream.
				_ = s.srv.ResourceUpdated(ctx, &sdk.ResourceUpdatedNotificationParams{URI: uri, Meta: changeMeta(ch)})
			}
		}
	}
}

// end closes the session's SDK session.
func (s *session) end() {
	for ss := range s.srv.Sessions() {
		_ = ss.Close()
	}
}
