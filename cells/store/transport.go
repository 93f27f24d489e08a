package store

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is Raft's stream layer: TCP, or mutual TLS when the store
// is given TLS material (see tlsLayer), with an optional NetworkFilter
// that lets tests partition nodes over real sockets.
//
// It also closes the connections it accepted when it is closed: Raft's
// NetworkTransport serves each accepted connection in a goroutine blocked
// in Read, which would otherwise outlive the transport until the peer hangs up.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	filter    NetworkFilter
	// routes: a peer address → the address dialed instead
	// (Config.RaftDialRoutes).
	routes map[string]string
	// tls, when set, makes every connection mutual TLS: Accept hands Raft
	// only connections whose handshake and peer check succeeded (run in
	// the background by acceptLoop), and Dial does the client side.
	tls *tlsLayer

	mu       sync.Mutex
	closed   bool
	accepted map[net.Conn]struct{}

	// With tls: acceptLoop's hand-off to Accept, and its lifetime (ctx
	// ends when the layer closes, aborting the handshakes in progress).
	ready  chan acceptResult
	ctx    context.Context
	cancel context.CancelFunc
	loops  sync.WaitGroup
}

type acceptResult struct {
	conn net.Conn
	err  error
}

// newStreamLayer returns the stream layer on ln; with tls it starts the
// background accept loop that Close stops.
func newStreamLayer(ln net.Listener, filter NetworkFilter, tl *tlsLayer) *streamLayer {
	l := &streamLayer{Listener: ln, filter: filter, tls: tl}
	if tl != nil {
		l.ready = make(chan acceptResult)
		l.ctx, l.cancel = context.WithCancel(context.Background())
		l.loops.Add(1)
		go l.acceptLoop()
	}
	return l
}

// Accept returns the next connection for Raft and tracks it so Close can
// end it. With TLS, the connection is one whose peer was verified.
func (l *streamLayer) Accept() (net.Conn, error) {
	var c net.Conn
	if l.tls == nil {
		var err error
		if c, err = l.Listener.Accept(); err != nil {
			return nil, err
		}
	} else {
		select {
		case r := <-l.ready:
			if r.err != nil {
				return nil, r.err
			}
			c = r.conn
		case <-l.ctx.Done():
			return nil, net.ErrClosed
		}
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

// acceptLoop accepts TCP connections and runs each one's TLS handshake in
// its own goroutine (at most MaxHandshakes at once; more are closed at
// once), so that a peer that connects and says nothing holds up no one.
// An Accept error is handed to Raft, whose accept loop backs off.
func (l *streamLayer) acceptLoop() {
	defer l.loops.Done()
	slots := make(chan struct{}, l.tls.maxHandshakes)
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			select {
			case l.ready <- acceptResult{err: err}:
				continue
			case <-l.ctx.Done():
				return
			}
		}
		select {
		case slots <- struct{}{}:
		default:
			l.tls.refuse(sideInbound, c.RemoteAddr().String(), reasonOverload, errTooManyHandshakes)
			c.Close()
			continue
		}
		l.loops.Add(1)
		go func() {
			defer l.loops.Done()
			defer func() { <-slots }()
			tc, err := l.tls.server(l.ctx, c)
			if err != nil {
				return // refused and closed
			}
			select {
			case l.ready <- acceptResult{conn: tc}:
			case <-l.ctx.Done():
				tc.Close()
			}
		}()
	}
}

// Close closes the listener and every accepted connection, and with TLS
// waits for the accept loop and the handshakes in progress to end.
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
	if l.cancel != nil {
		l.cancel()
		l.loops.Wait()
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

// Dial connects to a peer's Raft address; with TLS, the handshake and the
// peer check (tlsLayer.client) complete before Raft writes a byte.
func (l *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	peer := string(addr)
	if l.filter != nil && l.filter.Blocked(peer) {
		return nil, errPartitioned
	}
	target := peer
	if r, ok := l.routes[peer]; ok {
		target = r
	}
	c, err := net.DialTimeout("tcp", target, timeout)
	if err != nil {
		return nil, err
	}
	if l.tls != nil {
		if c, err = l.tls.client(c, peer, timeout); err != nil {
			return nil, err
		}
	}
	if l.filter == nil {
		return c, nil
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
