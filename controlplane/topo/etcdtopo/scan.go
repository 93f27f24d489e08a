package etcdtopo

import (
	"context"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/controlplane/topo"
)

var _ topo.Scanner = (*Store)(nil)

// scanFallbackPage is the List page of Scan against an etcd without
// RangeStream (older than 3.7).
const scanFallbackPage = 50_000

// Scan implements topo.Scanner with etcd's RangeStream: one request for
// the whole prefix, answered in chunks of about the server's request size
// limit, every chunk at the first one's revision and none of them paying
// the per-page count of the remaining keys that a paged Range pays (see
// topo.Scanner). Against a server without RangeStream (UNIMPLEMENTED
// before the first chunk) it falls back to List pages.
func (s *Store) Scan(ctx context.Context, prefix string, rev topo.Revision, fn func([]topo.KV) error) (topo.Revision, error) {
	if rev < 0 {
		return 0, fmt.Errorf("etcdtopo: scan %q at %d: %w", prefix, rev, topo.ErrInvalid)
	}
	if s.noStream.Load() {
		return topo.ScanPages(ctx, s, prefix, rev, scanFallbackPage, fn)
	}
	start := s.abs(prefix)
	opts := []clientv3.OpOption{clientv3.WithRange(clientv3.GetPrefixRangeEnd(start))}
	if rev > 0 {
		opts = append(opts, clientv3.WithRev(int64(rev)))
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, err := s.cli.GetStream(sctx, start, opts...)
	if err != nil {
		if status.Code(err) == codes.Unimplemented {
			s.noStream.Store(true)
			return topo.ScanPages(ctx, s, prefix, rev, scanFallbackPage, fn)
		}
		return 0, s.mapErr(ctx, "scan "+prefix, err)
	}
	// The client's goroutine sends every chunk and the final error on ch
	// without watching ctx: drain it whatever happens, after cancel.
	defer func() {
		cancel()
		for range ch {
		}
	}()
	chunks, read := 0, topo.Revision(0)
	for r := range ch {
		if err := r.Err(); err != nil {
			if chunks == 0 && status.Code(err) == codes.Unimplemented {
				s.noStream.Store(true)
				return topo.ScanPages(ctx, s, prefix, rev, scanFallbackPage, fn)
			}
			return 0, s.mapErr(ctx, "scan "+prefix, err)
		}
		chunks++
		if h := r.Header; h != nil && h.Revision > 0 {
			read = topo.Revision(h.Revision)
		}
		if len(r.Kvs) == 0 {
			continue
		}
		kvs := make([]topo.KV, len(r.Kvs))
		for i, k := range r.Kvs {
			kvs[i] = s.kv(k)
		}
		if err := fn(kvs); err != nil {
			return 0, err
		}
	}
	if err := ctx.Err(); err != nil {
		return 0, s.mapErr(ctx, "scan "+prefix, err)
	}
	if chunks == 0 || read == 0 {
		// The stream ended without its final chunk (which carries the
		// header): not a complete listing.
		return 0, fmt.Errorf("etcdtopo: scan %q: the stream ended early: %w", prefix, topo.ErrUnavailable)
	}
	if rev > 0 {
		read = rev
	}
	return read, nil
}
