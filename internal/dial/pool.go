package dial

import (
	"errors"
	"sync"

	"google.golang.org/grpc"
)

// ErrPoolClosed is returned by Pool.Get after Close.
var ErrPoolClosed = errors.New("dial: pool closed")

// Pool keeps one connection per target, opened on first use with the
// pool's Config and kept until Close. Safe for concurrent use.
type Pool struct {
	cfg Config

	mu     sync.Mutex
	conns  map[string]*grpc.ClientConn
	closed bool
}

// NewPool returns an empty pool whose connections use cfg.
func NewPool(cfg Config) *Pool {
	return &Pool{cfg: cfg, conns: map[string]*grpc.ClientConn{}}
}

// Get returns the pool's connection to target, opening it the first
// time; every Get of the same target returns the same connection.
func (p *Pool) Get(target string) (*grpc.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrPoolClosed
	}
	if cc, ok := p.conns[target]; ok {
		return cc, nil
	}
	cc, err := New(target, p.cfg)
	if err != nil {
		return nil, err
	}
	p.conns[target] = cc
	return cc, nil
}

// Close closes every connection; later Gets fail with ErrPoolClosed.
// Closing twice is harmless.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	var errs []error
	for target, cc := range p.conns {
		errs = append(errs, cc.Close())
		delete(p.conns, target)
	}
	return errors.Join(errs...)
}
