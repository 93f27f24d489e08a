package mcp

import (
	"context"
	"time"

	"github.com/cellplane/cellplane/internal/readcache"
	"github.com/cellplane/cellplane/internal/tenantmd"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Close stops the worker's read-cache followers and ends its 2025-era
// sessions (their change followers with them). The worker serves on
// afterwards, without its cache and refusing new sessions.
func (w *Worker) Close() {
	w.cache.Close()
	w.sessions.close()
}

// CloseSessions ends the worker's 2025-era sessions (their SSE streams
// would otherwise hold a graceful HTTP shutdown until its deadline) and
// refuses new ones: the HTTP server's shutdown hook (RegisterOnShutdown).
// Their clients initialize again elsewhere.
func (w *Worker) CloseSessions() { w.sessions.close() }

// watchChanges opens a tenant's change stream for the read cache, as the
// worker itself: no principal and no scopes, so the cell sends every
// change (principal memory with its principal named).
func (w *Worker) watchChanges(ctx context.Context, tenant string, req *contextv1.WatchChangesRequest) (readcache.Stream, error) {
	return w.cell.WatchChanges(tenantmd.Outgoing(ctx, tenant, 0), req)
}

// staleOptions are the read options of a tool call's max_staleness_ms:
// nil (LINEARIZABLE) for 0, else a STALE read with that bound.
func staleOptions(ms uint32) *contextv1.ReadOptions {
	if ms == 0 {
		return nil
	}
	return &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE, MaxStaleness: durationpb.New(time.Duration(ms) * time.Millisecond)}
}

// cached reads through the worker's read cache: a STALE read the cache
// holds (its tenant's follower current within the bound) is answered
// without a call to the cell; any other read calls the cell (read) and
// fills the cache with the answer at the cursor the cell's header names.
// The caller has authorised the read for k (tenant, principal) already.
func cached[T proto.Message](w *Worker, k readcache.Key, opts *contextv1.ReadOptions, read func(grpc.CallOption) (T, error)) (T, error) {
	if d, ok := w.cache.Staleness(opts); ok {
		if v, hit := w.cache.Get(k, d); hit {
			return v.(T), nil
		}
	}
	if w.cache == nil {
		return read(grpc.EmptyCallOption{})
	}
	var md metadata.MD
	out, err := read(grpc.Header(&md))
	if err != nil {
		return out, err
	}
	if tseq, at, exp, ok := tenantmd.ReadCursor(md); ok {
		c := readcache.Cursor{Tseq: tseq, TimeUnixNano: at}
		if exp != 0 {
			c.Expires = time.Unix(0, exp)
		}
		w.cache.Fill(k, out, c)
	}
	return out, nil
}
