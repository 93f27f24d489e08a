package forward

import (
	"context"
	"sync"
	"time"

	"github.com/cellplane/cellplane/internal/readcache"
	"github.com/cellplane/cellplane/internal/tenantmd"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// The router's read cache (Config.ReadCache, docs/cache.md) sits here,
// after authentication (the router's interceptors settled the tenant, the
// principal and the method's scopes before the forwarder runs) and after
// tenantOf authorised the tenant: of the forwarded methods it decodes only
// the requests of ContextService Read and GetMemory. A STALE one the
// cache holds is answered without a hop; any other is forwarded, and its
// answer fills the cache at the cursor the cell's header names.
const (
	contextService = "cellplane.context.v1.ContextService"
	methodRead     = "/" + contextService + "/Read"
	methodGetMem   = "/" + contextService + "/GetMemory"
)

// CacheHeader is set ("hit") on answers the router's read cache served.
const CacheHeader = "x-cellplane-read-cache"

// cacheFill is what a forwarded read fills the cache with once answered.
type cacheFill struct {
	key    readcache.Key
	answer func() proto.Message // a new response message of the method
}

// fromCache answers a Read or GetMemory from the read cache when it may
// (served reports it did); otherwise it returns the fill to do with the
// cell's answer (nil: not cacheable).
func (c *call) fromCache(req *Frame) (fill *cacheFill, served bool, err error) {
	rc := c.f.cache
	if rc == nil || (c.method != methodRead && c.method != methodGetMem) {
		return nil, false, nil
	}
	principal, _ := tenantmd.Caller(c.ctx) // set by the router's authentication, never the client's own
	var (
		opts *contextv1.ReadOptions
	)
	switch c.method {
	case methodRead:
		var r contextv1.ReadRequest
		if proto.Unmarshal(req.Bytes(), &r) != nil {
			return nil, false, nil // the cell answers INVALID_ARGUMENT
		}
		opts = r.GetReadOptions()
		fill = &cacheFill{key: readcache.ReadKey(c.tenant, &r), answer: func() proto.Message { return &contextv1.ReadResponse{} }}
	default:
		var r contextv1.GetMemoryRequest
		if proto.Unmarshal(req.Bytes(), &r) != nil {
			return nil, false, nil
		}
		opts = r.GetReadOptions()
		fill = &cacheFill{key: readcache.MemoryKey(c.tenant, principal, r.GetScope(), r.GetKey()), answer: func() proto.Message { return &contextv1.GetMemoryResponse{} }}
	}
	if d, ok := rc.Staleness(opts); ok {
		if v, hit := rc.Get(fill.key, d); hit {
			b, err := proto.Marshal(v)
			if err != nil {
				return nil, false, err
			}
			if err := c.ss.SetHeader(metadata.Pairs(CacheHeader, "hit")); err != nil {
				return nil, false, err
			}
			return nil, true, sendFrame(c.ss, &Frame{Payload: b})
		}
	}
	return fill, false, nil
}

// fillCache stores a forwarded read's answer (first, with the cell's
// header h) in the read cache.
func (c *call) fillCache(h metadata.MD, first *Frame) {
	if c.fill == nil || first == nil {
		return
	}
	tseq, at, exp, ok := tenantmd.ReadCursor(h)
	if !ok {
		return
	}
	m := c.fill.answer()
	if proto.Unmarshal(first.Bytes(), m) != nil {
		return
	}
	cur := readcache.Cursor{Tseq: tseq, TimeUnixNano: at}
	if exp != 0 {
		cur.Expires = time.Unix(0, exp)
	}
	c.f.cache.Fill(c.fill.key, m, cur)
}

// watchChanges opens the read cache's change stream of a tenant at its
// owner cell, as the router itself (no principal, no scopes: the cell
// sends every change). A move ends it with WRONG_CELL, and the cache
// drops the tenant.
func (f *Forwarder) watchChanges(ctx context.Context, tenant string, req *contextv1.WatchChangesRequest) (readcache.Stream, error) {
	t, ok := f.res.Resolve(tenant)
	if !ok {
		return nil, f.unavailable()
	}
	addr := t.LeaderAddr
	if addr == "" && len(t.Members) > 0 {
		addr = t.Members[0]
	}
	if addr == "" {
		return nil, f.unavailable()
	}
	pc, err := f.pool.get(addr)
	if err != nil {
		return nil, err
	}
	ctx = tenantmd.Outgoing(ctx, tenant, t.Epoch)
	s, err := contextv1.NewContextServiceClient(pc.cc).WatchChanges(ctx, req)
	if err != nil {
		pc.release()
		return nil, err
	}
	return &watchStream{ServerStreamingClient: s, pc: pc}, nil
}

// watchStream releases its pooled connection when the stream ends.
type watchStream struct {
	grpc.ServerStreamingClient[contextv1.WatchChangesResponse]
	pc   *poolConn
	once sync.Once
}

func (s *watchStream) Recv() (*contextv1.WatchChangesResponse, error) {
	r, err := s.ServerStreamingClient.Recv()
	if err != nil {
		s.once.Do(s.pc.release)
	}
	return r, err
}
