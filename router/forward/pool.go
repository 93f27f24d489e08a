package forward

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cellplane/cellplane/internal/dial"
)

// pool holds one *grpc.ClientConn per backend address, created on first
// use. Connections idle for IdleConnTimeout (the address left the routing
// table, or its tenants moved) are closed by a sweep that runs on get, so
// the pool needs no goroutine of its own. (dial.Pool never evicts, so
// this pool keeps its own map and opens each connection with dial.New.)
type pool struct {
	cfg  Config
	dial dial.Config

	// mu guards conns and closed: get reads them under the read lock
	// (the call path), the sweep, a new connection and close take the
	// write lock. A connection's in-flight count and last use are atomics
	// so that neither get nor release needs the write lock.
	mu        sync.RWMutex
	conns     map[string]*poolConn
	closed    bool
	lastSweep atomic.Int64 // unix nanos
}

type poolConn struct {
	cc       *grpc.ClientConn
	inflight atomic.Int64
	lastUsed atomic.Int64 // unix nanos
}

// release ends one use of the connection (the call that got it from get
// ended).
func (pc *poolConn) release() {
	pc.lastUsed.Store(time.Now().UnixNano())
	pc.inflight.Add(-1)
}

var errPoolClosed = errors.New("forward: forwarder closed")

func newPool(cfg Config, handshakes *prometheus.CounterVec) *pool {
	dc := cfg.Dial
	creds := dc.Credentials
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	dc.Credentials = &countingCreds{TransportCredentials: creds, n: handshakes}
	dc.Keepalive = cfg.keepalive()
	dc = dc.With(grpc.WithDefaultCallOptions(
		grpc.MaxCallRecvMsgSize(cfg.MaxMsgBytes),
		grpc.MaxCallSendMsgSize(cfg.MaxMsgBytes),
	))
	p := &pool{cfg: cfg, dial: dc, conns: make(map[string]*poolConn)}
	p.lastSweep.Store(time.Now().UnixNano())
	return p
}

// get returns the connection to addr, counted in flight until its release
// is called (once) when the call using it ended.
func (p *pool) get(addr string) (*poolConn, error) {
	now := time.Now().UnixNano()
	if idle := p.cfg.IdleConnTimeout; idle > 0 && now-p.lastSweep.Load() >= int64(idle/2) {
		p.sweep(now)
	}
	p.mu.RLock()
	if p.closed {
		p.mu.RUnlock()
		return nil, errPoolClosed
	}
	if pc, ok := p.conns[addr]; ok {
		// Counted under the read lock: the sweep (write lock) never sees
		// a connection between its lookup and its count.
		pc.inflight.Add(1)
		pc.lastUsed.Store(now)
		p.mu.RUnlock()
		return pc, nil
	}
	p.mu.RUnlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errPoolClosed
	}
	pc, ok := p.conns[addr]
	if !ok {
		cc, err := dial.New(addr, p.dial)
		if err != nil {
			return nil, err
		}
		pc = &poolConn{cc: cc}
		p.conns[addr] = pc
	}
	pc.inflight.Add(1)
	pc.lastUsed.Store(now)
	return pc, nil
}

// sweep closes the connections idle for IdleConnTimeout.
func (p *pool) sweep(now int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	idle := int64(p.cfg.IdleConnTimeout)
	if now-p.lastSweep.Load() < idle/2 {
		return // another get swept meanwhile
	}
	p.lastSweep.Store(now)
	for addr, pc := range p.conns {
		if pc.inflight.Load() == 0 && now-pc.lastUsed.Load() >= idle {
			_ = pc.cc.Close()
			delete(p.conns, addr)
		}
	}
}

// size is the number of open connections (tests).
func (p *pool) size() int {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return len(p.conns)
}

func (p *pool) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	var errs []error
	for addr, pc := range p.conns {
		if err := pc.cc.Close(); err != nil {
			errs = append(errs, err)
		}
		delete(p.conns, addr)
	}
	return errors.Join(errs...)
}

// countingCreds counts the client handshakes of the backend connections
// (cellplane_router_backend_handshakes_total): one per connection, which
// carries every call to its backend; a handshake per call would show as a
// count that grows with the calls.
type countingCreds struct {
	credentials.TransportCredentials
	n *prometheus.CounterVec
}

func (c *countingCreds) ClientHandshake(ctx context.Context, authority string, raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ClientHandshake(ctx, authority, raw)
	result := "ok"
	if err != nil {
		result = "error"
	}
	c.n.WithLabelValues(result).Inc()
	return conn, info, err
}

func (c *countingCreds) Clone() credentials.TransportCredentials {
	return &countingCreds{TransportCredentials: c.TransportCredentials.Clone(), n: c.n}
}
