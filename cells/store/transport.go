package store

import (
	"errors"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is Raft's TCP stream layer, with an optional NetworkFilter
// that lets tests partition nodes over real sockets. A TLS layer will wrap
// the listener and dialer here.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	filter    NetworkFilter
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
