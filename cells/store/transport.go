package store

import (
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is Raft's TCP stream layer, with an optional NetworkFilter
// that lets tests partition nodes over real sockets. A TLS layer will wrap
// the listener and dialer here.
//
// It also closes the connections it accepted when it is closed: Raft's
// NetworkTransport serves each accepted connection in a goroutine blocked
// in Read, which would otherwise outlive the transport until the peer hangs up.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	filter    NetworkFilter

	mu       sync.Mutex
	closed   bool
	accepted map[net.Conn]struct{}
}

// Accept tracks accepted connections so Close can end them.
func (l *streamLayer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if l.accepted == nil {
		l.accepted = map[net.Conn]struct{}{}
	}
	tc := &trackedConn{Conn: c, l: l}
	l.accepted[tc] = struct{}{}
	return tc, nil
}

// Close closes the listener and every accepted connection.
func (l *streamLayer) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	l.closed = true
	conns := l.accepted
	l.accepted = nil
	l.mu.Unlock()
	for c := range conns {
		c.(*trackedConn).Conn.Close()
	}
	return err
}

type trackedConn struct {
	net.Conn
	l    *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.accepted, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

var errPartitioned = errors.New("store: peer unreachable (network filter)")

func (l *streamLayer) Addr() net.Addr {
	if l.advertise != nil {
		return l.advertise
	}
	return l.Listener.Addr()
}

func (l *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	peer := string(addr)
	if l.filter != nil && l.filter.Blocked(peer) {
		return nil, errPartitioned
	}
	c, err := net.DialTimeout("tcp", peer, timeout)
	if err != nil || l.filter == nil {
		return c, err
	}
	return &filteredConn{Conn: c, peer: peer, filter: l.filter}, nil
}

// filteredConn fails reads and writes once its peer is blocked, so an
// established connection breaks like a real partition would.
type filteredConn struct {
	net.Conn
	peer   string
	filter NetworkFilter
}

func (c *filteredConn) Read(p []byte) (int, error) {
	if c.filter.Blocked(c.peer) {
		c.Conn.Close()
		return 0, errPartitioned
	}
	return c.Conn.Read(p)
}

func (c *filteredConn) Write(p []byte) (int, error) {
	if c.filter.Blocked(c.peer) {
		c.Conn.Close()
		return 0, errPartitioned
	}
	return c.Conn.Write(p)
}
