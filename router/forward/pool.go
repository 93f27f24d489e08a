package forward

import (
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// pool holds one *grpc.ClientConn per backend address, created on first
// use. Connections idle for IdleConnTimeout (the address left the routing
// table, or its tenants moved) are closed by a sweep that runs on get, so
// the pool needs no goroutine of its own.
type pool struct {
	cfg Config

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

func newPool(cfg Config) *pool {
	return &pool{cfg: cfg, conns: make(map[string]*poolConn), lastSweep: time.Now()}
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
		opts := []grpc.DialOption{
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithKeepaliveParams(p.cfg.keepalive()),
			grpc.WithDefaultCallOptions(
				grpc.MaxCallRecvMsgSize(p.cfg.MaxMsgBytes),
				grpc.MaxCallSendMsgSize(p.cfg.MaxMsgBytes),
			),
		}
		cc, err := grpc.NewClient(addr, append(opts, p.cfg.DialOptions...)...)
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
