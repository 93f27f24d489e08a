package bench

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
)

// delayLine is a one-way delay injected on connections: bytes read from
// the remote end are delivered d after they arrived (the other direction
// is not delayed). d can change while connections are open: a chunk is
// delivered at its arrival time plus the delay in force when it is read,
// in arrival order.
type delayLine struct {
	d atomic.Int64 // ns
}

// set changes the delay.
func (l *delayLine) set(d time.Duration) { l.d.Store(int64(max(d, 0))) }

// get returns the delay in force.
func (l *delayLine) get() time.Duration { return time.Duration(l.d.Load()) }

// dialOptions are the gRPC dial options of a client whose connections
// read through the delay line (added to the node's dial.Config, which
// sets the credentials).
func (l *delayLine) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return l.wrap(c), nil
		}),
	}
}

// wrap returns c with its reads delayed.
func (l *delayLine) wrap(c net.Conn) net.Conn {
	dc := &delayConn{Conn: c, line: l, ch: make(chan chunk, 1024), closed: make(chan struct{})}
	go dc.pump()
	return dc
}

// chunk is what one read of the underlying connection returned.
type chunk struct {
	b   []byte
	at  time.Time
	err error
}

// delayConn reads its connection eagerly into a queue of timestamped
// chunks (a delay line with a buffer of up to 1024 reads; when full, TCP
// flow control pushes back on the sender) and hands each chunk out only
// once it is old enough.
type delayConn struct {
	net.Conn
	line *delayLine

	ch        chan chunk
	closed    chan struct{}
	closeOnce sync.Once

	// Owned by Read (gRPC reads from one goroutine).
	cur  []byte
	rerr error
}

func (c *delayConn) pump() {
	for {
		b := make([]byte, 32<<10)
		n, err := c.Conn.Read(b)
		ch := chunk{b: b[:n], at: time.Now(), err: err}
		select {
		case c.ch <- ch:
		case <-c.closed:
			return
		}
		if err != nil {
			return
		}
	}
}

// Read implements net.Conn.
func (c *delayConn) Read(p []byte) (int, error) {
	for len(c.cur) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		var ch chunk
		select {
		case ch = <-c.ch:
		case <-c.closed:
			return 0, net.ErrClosed
		}
		if wait := time.Until(ch.at.Add(c.line.get())); wait > 0 {
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-c.closed:
				t.Stop()
				return 0, net.ErrClosed
			}
		}
		c.cur, c.rerr = ch.b, ch.err
	}
	n := copy(p, c.cur)
	c.cur = c.cur[n:]
	return n, nil
}

// Close implements net.Conn.
func (c *delayConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return c.Conn.Close()
}
