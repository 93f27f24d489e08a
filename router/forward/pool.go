package forward

import (
	"context"
	"errors"
	"net"
	"sync"
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

	mu        sync.Mutex
	conns     map[string]*poolConn
	lastSweep time.Time
	closed    bool
}

type poolConn struct {
	cc       *grpc.ClientConn
	inflight int
	lastUsed time.Time
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
	return &pool{cfg: cfg, dial: dc, conns: make(map[string]*poolConn), lastSweep: time.Now()}
}

// get returns the connection to addr and a release function to call when
// the call using it ended.
func (p *pool) get(addr string) (*grpc.ClientConn, func(), error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, errPoolClosed
	}
	now := time.Now()
	p.sweepLocked(now)
	pc, ok := p.conns[addr]
	if !ok {
		cc, err := dial.New(addr, p.dial)
		if err != nil {
			return nil, nil, err
		}
		pc = &poolConn{cc: cc}
		p.conns[addr] = pc
	}
	pc.inflight++
	pc.lastUsed = now
	var once sync.Once
	return pc.cc, func() {
		once.Do(func() {
			p.mu.Lock()
			pc.inflight--
			pc.lastUsed = time.Now()
			p.mu.Unlock()
		})
	}, nil
}

func (p *pool) sweepLocked(now time.Time) {
	idle := p.cfg.IdleConnTimeout
	if idle <= 0 || now.Sub(p.lastSweep) < idle/2 {
		return
	}
	p.lastSweep = now
	for addr, pc := range p.conns {
		if pc.inflight == 0 && now.Sub(pc.lastUsed) >= idle {
			_ = pc.cc.Close()
			delete(p.conns, addr)
		}
	}
}

// size is the number of open connections (tests).
func (p *pool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
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
