package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/readcache"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"

	// The default forwarded service's descriptor must be registered.
	_ "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// ConsistencyKey is the metadata key of the routing hint for reads. With
// the value ConsistencyStale the forwarder may send the call to any healthy
// member of the cell instead of the leader. The forwarder never decodes
// payloads, so it cannot see ReadOptions.consistency: a client that asks
// for a STALE read should also send this hint. A hint on a call that is
// not a STALE read is harmless: a member that cannot serve it answers
// NOT_LEADER and the call is retried at the leader.
const ConsistencyKey = "x-cellplane-consistency"

// ConsistencyStale is the value of ConsistencyKey for STALE reads.
const ConsistencyStale = "stale"

// Target is where a tenant's calls go: its owner cell, the tenant's
// ownership epoch there, and the cell's member gRPC addresses.
type Target struct {
	Cell       string
	Epoch      uint64
	LeaderAddr string
	// Members are the healthy members' gRPC addresses (the leader may be
	// among them).
	Members []string
	// CuttingOver: a move or failover is cutting the tenant over (between
	// the fence of the old owner and the flip of the placement); calls are
	// held until the placement changes (see the package doc).
	CuttingOver bool
}

// differs reports a placement change that releases a held call: another
// cell, another epoch, or the cutover flag (addresses do not count).
func (t Target) differs(o Target) bool {
	return t.Cell != o.Cell || t.Epoch != o.Epoch || t.CuttingOver != o.CuttingOver
}

// Resolver maps tenants to targets; the router's routing table adapts to
// it.
type Resolver interface {
	// Resolve looks the tenant up in memory; it never blocks.
	Resolve(tenant string) (Target, bool)
	// Refresh re-reads the tenant's placement (after WRONG_CELL or
	// STALE_EPOCH from a cell).
	Refresh(ctx context.Context, tenant string) (Target, bool, error)
	// WaitChange waits until the tenant's placement differs from seen
	// (another cell, epoch or CuttingOver) and returns it (ok false: the
	// tenant is no longer routable), or returns ctx's error when ctx ends
	// first. It answers at once when the placement already differs. It
	// must not poll etcd: the change arrives through the table's watch.
	WaitChange(ctx context.Context, tenant string, seen Target) (Target, bool, error)
}

// Forwarder forwards calls of tenant-routed services to cells as raw
// frames. Install its Handler with grpc.UnknownServiceHandler on a server
// created with ServerOption().
type Forwarder struct {
	cfg      Config
	res      Resolver
	tenantOf func(ctx context.Context) (string, error)
	log      *slog.Logger
	pool     *pool
	m        *metrics
	services map[string]map[string]methodInfo // service → method → info
	other    *methodObservers                 // metrics of unknown methods
	rr       atomic.Uint64                    // spreads STALE reads over members
	cache    *readcache.Cache                 // nil: off (Config.ReadCache)

	leadersMu sync.Mutex
	leaders   map[string]leaderHint // cell → leader learned from NOT_LEADER
}

type methodInfo struct {
	clientStreams, serverStreams bool
	// requestID is the number of the request's top-level string field
	// request_id (0: none, the method is a read). It decides the kind of
	// the call for the retry policy.
	requestID protowire.Number
	// obs are the method's metric series, resolved once (no label
	// lookup per call).
	obs *methodObservers
}

// kindOf returns the retry kind of a call with request frame req: a read
// (no request_id field) is Immutable, a write is Idempotent when it
// carries a request id and Mutating when it does not. The forwarder
// decodes nothing else: it only walks the frame's top-level fields.
func (mi methodInfo) kindOf(req *Frame) retry.Kind {
	if mi.requestID == 0 {
		return retry.Immutable
	}
	b := req.Bytes()
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			break
		}
		b = b[n:]
		m := protowire.ConsumeFieldValue(num, typ, b)
		if m < 0 {
			break
		}
		if num == mi.requestID && typ == protowire.BytesType {
			if v, _ := protowire.ConsumeBytes(b); len(v) > 0 {
				return retry.Idempotent
			}
		}
		b = b[m:]
	}
	return retry.Mutating
}

// leaderHint is a leader address learned from a NOT_LEADER answer. It is
// used while the routing table still names base as the cell's leader (a
// table update supersedes it).
type leaderHint struct {
	base, addr string
}

// New returns a forwarder. tenantOf extracts and authorises the tenant of
// a call (the auth layer); its error is returned to the client as is (it
// should be a *cperr.Error).
func New(cfg Config, r Resolver, tenantOf func(ctx context.Context) (string, error)) (*Forwarder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if r == nil || tenantOf == nil {
		return nil, errors.New("forward: a Resolver and a tenantOf function are required")
	}
	m := newMetrics()
	f := &Forwarder{
		cfg:      cfg,
		res:      r,
		tenantOf: tenantOf,
		log:      cfg.Logger,
		pool:     newPool(cfg, m.handshakes),
		m:        m,
		services: make(map[string]map[string]methodInfo, len(cfg.Services)),
		leaders:  make(map[string]leaderHint),
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	for _, name := range cfg.Services {
		d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(name))
		if err != nil {
			return nil, fmt.Errorf("forward: service %s: descriptor not linked into the binary: %w", name, err)
		}
		sd, ok := d.(protoreflect.ServiceDescriptor)
		if !ok {
			return nil, fmt.Errorf("forward: %s is not a service", name)
		}
		ms := make(map[string]methodInfo, sd.Methods().Len())
		for i := range sd.Methods().Len() {
			md := sd.Methods().Get(i)
			mi := methodInfo{clientStreams: md.IsStreamingClient(), serverStreams: md.IsStreamingServer(), obs: m.observers(string(md.Name()))}
			if fd := md.Input().Fields().ByName("request_id"); fd != nil && fd.Kind() == protoreflect.StringKind && !fd.IsList() {
				mi.requestID = fd.Number()
			}
			ms[string(md.Name())] = mi
		}
		f.services[name] = ms
	}
	f.other = m.observers("other")
	rc := cfg.ReadCache
	if rc.Logger == nil {
		rc.Logger = f.log
	}
	cache, err := readcache.New(rc, f.watchChanges)
	if err != nil {
		return nil, err
	}
	f.cache = cache
	return f, nil
}

// Handler returns the stream handler to install with
// grpc.UnknownServiceHandler. Calls to services not in Config.Services
// fail with UNIMPLEMENTED.
func (f *Forwarder) Handler() grpc.StreamHandler { return f.handle }

// Close closes the backend connections. Calls still running fail.
func (f *Forwarder) Close() error {
	f.cache.Close()
	return f.pool.close()
}

// Collectors returns the forwarder's Prometheus collectors, for the
// caller to register.
func (f *Forwarder) Collectors() []prometheus.Collector {
	return append(f.m.collectors(), f.cache.Collectors()...)
}

func (f *Forwarder) handle(_ any, ss grpc.ServerStream) error {
	start := time.Now()
	full, ok := grpc.MethodFromServerStream(ss)
	if !ok {
		return status.Error(codes.Internal, "no method on the stream")
	}
	svc, meth, _ := strings.Cut(strings.TrimPrefix(full, "/"), "/")
	methods, ok := f.services[svc]
	if !ok {
		return status.Errorf(codes.Unimplemented, "unknown service %s", svc)
	}
	mi, known := methods[meth]
	obs := mi.obs
	if !known {
		obs = f.other
	}
	var cell string
	err := f.toStatus(f.forward(ss, full, mi, known, &cell))
	obs.forwarded(status.Code(err), cell).Inc()
	obs.latency.Observe(time.Since(start).Seconds())
	return err
}

// toStatus maps the forwarder's errors at its edge: backend statuses pass
// through (with their details), except transport failures (UNAVAILABLE
// without cellplane ErrorInfo), which become CELL_UNAVAILABLE.
func (f *Forwarder) toStatus(err error) error {
	if err == nil {
		return nil
	}
	if rpcerr.IsTransport(err) {
		return rpcerr.ToStatus(f.unavailable())
	}
	return rpcerr.ToStatus(err)
}

func (f *Forwarder) unavailable() *cperr.Error {
	return cperr.New(cperr.CellUnavailable, "the tenant's cell is unavailable").WithRetryAfter(f.cfg.UnavailableRetryAfter)
}

func (f *Forwarder) forward(ss grpc.ServerStream, full string, mi methodInfo, known bool, cell *string) error {
	ctx := ss.Context()
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.cfg.DefaultTimeout)
		defer cancel()
	}
	tenant, err := f.tenantOf(ctx)
	if err != nil {
		return err
	}
	target, ok := f.res.Resolve(tenant)
	if !ok {
		return cperr.New(cperr.TenantNotFound, "tenant %q not found", tenant).With(cperr.MetaTenant, tenant)
	}
	*cell = target.Cell
	in, _ := metadata.FromIncomingContext(ctx)
	c := &call{
		f: f, ss: ss, ctx: ctx, method: full, tenant: tenant, in: in,
		stale: staleHint(in), cell: cell,
	}
	c.setTarget(target)
	if !known || mi.clientStreams {
		// Several request frames: a plain proxy, never retried; but it
		// may wait for a cutover before it starts.
		if err := c.holdWhileCuttingOver(holdRoute); err != nil {
			return err
		}
		return c.proxy()
	}
	var req Frame
	if err := ss.RecvMsg(&req); err != nil {
		req.Free() // a frame refused after it was read (the byte limit)
		if errors.Is(err, io.EOF) {
			return status.Error(codes.InvalidArgument, "no request message")
		}
		return err
	}
	// The request's buffers go back to gRPC once no attempt can send
	// them again.
	defer req.Free()
	c.info = mi
	fill, served, err := c.fromCache(&req)
	if served || err != nil {
		return err
	}
	c.fill = fill
	return c.retrying(&req, mi.serverStreams)
}

func staleHint(md metadata.MD) bool {
	for _, v := range md.Get(ConsistencyKey) {
		if strings.EqualFold(strings.TrimSpace(v), ConsistencyStale) {
			return true
		}
	}
	return false
}

// call is one forwarded call and its retry state.
type call struct {
	f      *Forwarder
	ss     grpc.ServerStream
	ctx    context.Context
	method string
	tenant string
	in     metadata.MD
	stale  bool
	cell   *string
	info   methodInfo // the retry kind is read from the request frame only after a failure (off the hot path)
	fill   *cacheFill // a read the read cache takes the answer of (nil: none)

	target     Target
	candidates []string // addresses in the order to try
	next       int      // index of the next candidate

	// holdStart is when the call was first held (a cutover) or first
	// answered TENANT_MOVING: both share the MovingHold budget.
	holdStart time.Time
}

func (c *call) setTarget(t Target) {
	c.target = t
	*c.cell = t.Cell
	c.candidates = c.candidates[:0]
	add := func(a string) {
		if a == "" {
			return
		}
		for _, x := range c.candidates {
			if x == a {
				return
			}
		}
		c.candidates = append(c.candidates, a)
	}
	if c.stale && len(t.Members) > 0 {
		off := int(c.f.rr.Add(1) % uint64(len(t.Members)))
		for i := range t.Members {
			add(t.Members[(off+i)%len(t.Members)])
		}
		add(t.LeaderAddr)
	} else {
		if h, ok := c.f.leaderHint(t); ok {
			add(h)
		}
		add(t.LeaderAddr)
		for _, m := range t.Members {
			add(m)
		}
	}
	c.next = 0
}

// nextAddr returns the next candidate; after the last one it re-resolves
// the tenant (the table may have changed) and starts over. wrapped reports
// that every candidate has been tried.
func (c *call) nextAddr() (addr string, wrapped bool) {
	if c.next >= len(c.candidates) {
		if t, ok := c.f.res.Resolve(c.tenant); ok {
			c.setTarget(t)
		}
		c.next = 0
		wrapped = true
	}
	if len(c.candidates) == 0 {
		return "", wrapped
	}
	addr = c.candidates[c.next]
	c.next++
	return addr, wrapped
}

// outgoing is the metadata sent to the backend: the caller's, minus hop
// and credential headers, plus the tenant, the route's epoch and the
// no-forward flag (the forwarder follows NOT_LEADER hints itself).
func (c *call) outgoing() metadata.MD {
	md := make(metadata.MD, len(c.in)+3)
	for k, vs := range c.in {
		if dropIncoming(k) {
			continue
		}
		md[k] = append([]string(nil), vs...)
	}
	md.Set(tenantmd.TenantKey, c.tenant)
	if c.target.Epoch != 0 {
		md.Set(tenantmd.EpochKey, strconv.FormatUint(c.target.Epoch, 10))
	} else {
		md.Delete(tenantmd.EpochKey)
	}
	md.Set(tenantmd.NoForwardKey, "true")
	return md
}

// dropIncoming reports the caller's metadata keys that are not forwarded:
// credentials (the router authenticated the caller; cells trust the
// router), pseudo and transport headers, and the cell-internal
// forwarding marker.
func dropIncoming(k string) bool {
	switch k {
	case "authorization", "x-api-key", "cookie", tenantmd.ForwardedKey,
		"content-type", "user-agent", "te", "host", "connection", "keep-alive",
		"proxy-authorization", "transfer-encoding", "upgrade":
		return true
	case "grpc-trace-bin", "grpc-tags-bin":
		return false
	}
	return strings.HasPrefix(k, ":") || strings.HasPrefix(k, "grpc-")
}

// dropReturned filters backend headers and trailers sent back to the
// client (gRPC filters its reserved keys again; this keeps pseudo headers
// out explicitly).
func dropReturned(md metadata.MD) metadata.MD {
	out := make(metadata.MD, len(md))
	for k, vs := range md {
		if strings.HasPrefix(k, ":") || k == "content-type" || k == "grpc-status" || k == "grpc-message" || k == "grpc-status-details-bin" {
			continue
		}
		out[k] = vs
	}
	return out
}

// attempt is one try of a call at one backend.
type attempt struct {
	addr    string
	cs      grpc.ClientStream
	first   *Frame // first response frame; nil when the stream ended without one
	cancel  context.CancelFunc
	conn    *poolConn // released by done
	header  metadata.MD
	trailer metadata.MD
	err     error
}

func (a *attempt) done() {
	if a.cancel != nil {
		a.cancel()
	}
	if a.conn != nil {
		a.conn.release()
		a.conn = nil
	}
}

// try sends the request frame to addr and waits for the first response
// frame (or the end of the call): until then nothing reached the client
// and the call may be retried.
func (c *call) try(addr string, req *Frame, serverStreams bool) *attempt {
	a := &attempt{addr: addr}
	pc, err := c.f.pool.get(addr)
	if err != nil {
		a.err = err
		return a
	}
	a.conn = pc
	cc := pc.cc
	ctx, cancel := context.WithCancel(c.ctx)
	a.cancel = cancel
	ctx = metadata.NewOutgoingContext(ctx, c.outgoing())
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: serverStreams}, c.method, grpc.ForceCodecV2(codecV2{}))
	if err != nil {
		a.err = err
		return a
	}
	a.cs = cs
	if err := cs.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		a.err = err
		return a
	}
	_ = cs.CloseSend()
	var first Frame
	switch err := cs.RecvMsg(&first); {
	case err == nil:
		a.first = &first
	case errors.Is(err, io.EOF):
		// A stream that ended OK without a message.
	default:
		a.err = err
		a.header, _ = cs.Header()
		a.trailer = cs.Trailer()
	}
	return a
}

// retrying forwards a call with one request frame (unary or
// server-streaming), retrying as long as nothing reached the client.
func (c *call) retrying(req *Frame, serverStreams bool) error {
	f := c.f
	var (
		retries   int
		refreshed bool
		firstFail time.Time
		backoff   = retry.Policy{Min: f.cfg.RetryBackoff, Max: f.cfg.MaxRetryBackoff}.Backoff()
	)
	addr, _ := c.nextAddr()
	for {
		if c.target.CuttingOver {
			// Neither the old owner (fenced) nor the new one (standby)
			// takes the call before the flip: wait for it here.
			if err := c.holdWhileCuttingOver(holdRoute); err != nil {
				return err
			}
			addr, _ = c.nextAddr()
		}
		if addr == "" {
			return f.unavailable()
		}
		a := c.try(addr, req, serverStreams)
		if a.err == nil {
			if retries > 0 && !c.stale {
				// The member that took a leader-bound call after a
				// failure is the leader: later calls go there first,
				// until the routing table names a leader again.
				f.learnLeader(c.target, a.addr)
			}
			return c.relay(a)
		}
		a.done()
		err := a.err
		if errors.Is(err, errPoolClosed) {
			return f.unavailable()
		}
		if a.cs == nil && status.Code(err) == codes.Unknown {
			// The backend connection could not be made (a bad address).
			err = status.Error(codes.Unavailable, err.Error())
			a.err = err
		}
		if c.ctx.Err() != nil {
			return c.final(a)
		}
		policyErr := err
		if a.cs == nil {
			// No stream was opened: no backend saw the request.
			policyErr = retry.Unsent(err)
		}
		if !retry.Allowed(c.info.kindOf(req), policyErr) {
			return c.final(a)
		}
		var ce *cperr.Error
		cp := errors.As(rpcerr.FromStatus(err), &ce)
		var reason string
		wait, held := false, false
		now := time.Now()
		switch class := retry.ClassOf(err); {
		case cp && ce.Reason == cperr.NotLeader:
			reason = retryNotLeader
			if hint := c.memberHint(ce.Metadata[cperr.MetaLeader]); hint != "" && hint != addr {
				f.learnLeader(c.target, hint)
				addr = hint
			} else {
				var wrapped bool
				addr, wrapped = c.nextAddr()
				wait = wrapped
			}
		case class == retry.RetryRefresh:
			reason = retryStaleRoute
			if t, ok := f.res.Resolve(c.tenant); ok && t.differs(c.target) {
				// The table moved on since the call started.
				c.setTarget(t)
			} else if !c.target.CuttingOver {
				if refreshed {
					return c.final(a)
				}
				refreshed = true
				t, ok, rerr := f.res.Refresh(c.ctx, c.tenant)
				if rerr != nil {
					f.log.Debug("placement refresh failed", "tenant", c.tenant, "err", rerr)
					return c.final(a)
				}
				if !ok {
					return c.notFound()
				}
				c.setTarget(t)
			}
			if c.target.CuttingOver {
				// A fenced old owner or a standby new one refused the
				// call during a cutover: hold it until the flip.
				if err := c.holdWhileCuttingOver(holdRefused); err != nil {
					return err
				}
				held, refreshed = true, false
			}
			addr, _ = c.nextAddr()
		case cp && ce.Reason == cperr.TenantMoving:
			reason = retryMoving
			if t, ok := f.res.Resolve(c.tenant); ok {
				c.setTarget(t)
			}
			if c.target.CuttingOver {
				if err := c.holdWhileCuttingOver(holdRefused); err != nil {
					return err
				}
				held = true
			} else {
				if c.holdStart.IsZero() {
					c.holdStart = now
				}
				if now.Sub(c.holdStart) >= f.cfg.MovingHold {
					return c.movingErr(ce.RetryAfter)
				}
				wait = true
			}
			addr, _ = c.nextAddr()
		case class == retry.RetryElsewhere: // CELL_UNAVAILABLE, AUTHORITY_LEASE_EXPIRED, STALENESS_EXCEEDED, transport
			reason = retryUnavailable
			f.forgetLeader(c.target, addr)
			var wrapped bool
			addr, wrapped = c.nextAddr()
			wait = wrapped
		default:
			// RetryNo, and the RetryLater reasons a client waits out
			// itself (RATE_LIMITED, TENANT_BUSY, ...).
			return c.final(a)
		}
		if reason != retryMoving && !held {
			if firstFail.IsZero() {
				firstFail = now
			}
			if now.Sub(firstFail) >= f.cfg.FailoverHold {
				return c.final(a)
			}
		}
		retries++
		f.m.retries.WithLabelValues(reason).Inc()
		f.log.Debug("retrying forwarded call", "tenant", c.tenant, "cell", c.target.Cell, "epoch", c.target.Epoch,
			"method", c.method, "reason", reason, "from", a.addr, "to", addr, "retry", retries, "err", err)
		if !held && (wait || retries > f.cfg.MaxRetries) {
			if !retry.Within(c.ctx, backoff.Next()) {
				return c.final(a)
			}
		}
	}
}

// final returns the failed attempt's error to the client, with the
// backend's headers and trailers.
func (c *call) final(a *attempt) error {
	if len(a.header) > 0 {
		_ = c.ss.SetHeader(dropReturned(a.header))
	}
	if len(a.trailer) > 0 {
		c.ss.SetTrailer(dropReturned(a.trailer))
	}
	return a.err
}

// relay copies a successful attempt's response to the client: headers,
// the first frame, the rest of the stream, trailers.
func (c *call) relay(a *attempt) error {
	defer a.done()
	if h, err := a.cs.Header(); err == nil && len(h) > 0 {
		c.fillCache(h, a.first)
		if err := c.ss.SetHeader(dropReturned(h)); err != nil {
			return err
		}
	}
	if a.first != nil {
		if err := sendFrame(c.ss, a.first); err != nil {
			return err
		}
		for {
			var fr Frame
			err := a.cs.RecvMsg(&fr)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				c.ss.SetTrailer(dropReturned(a.cs.Trailer()))
				return err
			}
			if err := sendFrame(c.ss, &fr); err != nil {
				return err
			}
		}
	}
	c.ss.SetTrailer(dropReturned(a.cs.Trailer()))
	return nil
}

// proxy forwards a call with a client stream both ways, without retries:
// it goes to the leader.
func (c *call) proxy() error {
	addr, _ := c.nextAddr()
	if addr == "" {
		return c.f.unavailable()
	}
	pc, err := c.f.pool.get(addr)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	defer pc.release()
	cc := pc.cc
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	ctx = metadata.NewOutgoingContext(ctx, c.outgoing())
	cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, c.method, grpc.ForceCodecV2(codecV2{}))
	if err != nil {
		return err
	}
	go func() {
		for {
			var fr Frame
			if err := c.ss.RecvMsg(&fr); err != nil {
				if errors.Is(err, io.EOF) {
					_ = cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := sendFrame(cs, &fr); err != nil {
				return // the backend ended the call; RecvMsg below sees why
			}
		}
	}()
	a := &attempt{addr: addr, cs: cs}
	if h, err := cs.Header(); err == nil && len(h) > 0 {
		if err := c.ss.SetHeader(dropReturned(h)); err != nil {
			return err
		}
	}
	for {
		var fr Frame
		err := cs.RecvMsg(&fr)
		if errors.Is(err, io.EOF) {
			c.ss.SetTrailer(dropReturned(cs.Trailer()))
			return nil
		}
		if err != nil {
			a.trailer = cs.Trailer()
			a.err = err
			return c.final(a)
		}
		if err := sendFrame(c.ss, &fr); err != nil {
			return err
		}
	}
}

// sendFrame sends a received frame on and releases its buffers (gRPC
// keeps its own reference until the bytes are written).
func sendFrame(s interface{ SendMsg(any) error }, fr *Frame) error {
	err := s.SendMsg(fr)
	fr.Free()
	return err
}

func (f *Forwarder) leaderHint(t Target) (string, bool) {
	f.leadersMu.Lock()
	defer f.leadersMu.Unlock()
	h, ok := f.leaders[t.Cell]
	if !ok || h.base != t.LeaderAddr || !t.isMember(h.addr) {
		return "", false
	}
	return h.addr, true
}

// isMember reports whether addr is one of t's member addresses (its
// leader or one of its members), as the routing table knows them.
func (t Target) isMember(addr string) bool {
	return addr != "" && (addr == t.LeaderAddr || slices.Contains(t.Members, addr))
}

// memberHint returns the leader address a NOT_LEADER answer names when it
// is a member of the call's cell as the routing table knows it (the
// call's target or, after a table change, the tenant's current target of
// the same cell), and "" otherwise. A hint naming anything else is
// ignored, logged and counted: a malicious or confused node must not
// redirect the router's retries (and the learned leader of the cell) to
// an address of its choosing (finding C5). A legitimate hint always names
// a registered member, so following it costs nothing more.
func (c *call) memberHint(hint string) string {
	if hint == "" || c.target.isMember(hint) {
		return hint
	}
	if t, ok := c.f.res.Resolve(c.tenant); ok && t.Cell == c.target.Cell && t.isMember(hint) {
		return hint
	}
	c.f.m.hintsIgnored.WithLabelValues(c.target.Cell).Inc()
	c.f.log.Warn("ignoring a NOT_LEADER hint that names no member of the cell", "cell", c.target.Cell, "leader_addr", hint, "tenant", c.tenant)
	return ""
}

func (f *Forwarder) learnLeader(t Target, addr string) {
	if t.Cell == "" || addr == t.LeaderAddr {
		f.forgetLeader(t, "")
		return
	}
	f.leadersMu.Lock()
	defer f.leadersMu.Unlock()
	f.leaders[t.Cell] = leaderHint{base: t.LeaderAddr, addr: addr}
}

// forgetLeader drops the learned leader of t's cell when it is addr (or
// whatever it is, for addr "").
func (f *Forwarder) forgetLeader(t Target, addr string) {
	f.leadersMu.Lock()
	defer f.leadersMu.Unlock()
	if h, ok := f.leaders[t.Cell]; ok && (addr == "" || h.addr == addr) {
		delete(f.leaders, t.Cell)
	}
}
