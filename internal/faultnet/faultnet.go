// Package faultnet is a loopback TCP proxy for fault injection in tests:
// put it between two components and cut the link (existing connections
// are closed and new ones refused until Heal), as a network partition
// would. It listens on 127.0.0.1 only.
//
//	p := faultnet.Start(t, etcdAddr)
//	cfg.Endpoints = []string{p.Addr()} // the component talks through p
//	p.Cut()                             // partition
//	p.Heal()
//
// Faults can also be one-directional and gentler than a cut, on live
// connections: Blackhole discards the bytes flowing one way (Forward:
// from the dialer to the target; Backward: the answers), as a one-way
// partition does; Delay holds each chunk for a latency plus a random
// jitter, keeping order; Drop loses each chunk with a probability. A TCP
// stream cannot lose bytes and stay usable, so a connection that lost
// bytes (Blackhole, Drop) is reset when it next carries data once the
// fault is gone, as after a loss longer than TCP's retransmission
// timeout. Clear removes them all. Random choices come from Seed's
// generator, so a schedule can be replayed.
package faultnet

import (
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"
)

// Direction is a direction of the bytes through a proxy.
type Direction uint8

const (
	// Forward is from the dialer to the target.
	Forward Direction = 1 << iota
	// Backward is from the target back to the dialer.
	Backward
	// Both is either direction.
	Both = Forward | Backward
)

func (d Direction) String() string {
	switch d {
	case Forward:
		return "forward"
	case Backward:
		return "backward"
	case Both:
		return "both"
	}
	return "none"
}

// faults are the faults of one direction.
type faults struct {
	blackhole       bool
	latency, jitter time.Duration
	drop            float64
}

// Proxy forwards connections from Addr to a target address.
type Proxy struct {
	target string
	ln     net.Listener

	mu    sync.Mutex
	cut   bool
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
	// dir holds the faults of Forward ([0]) and Backward ([1]).
	dir [2]faults
	rng *rand.Rand
	// accepted counts the connections accepted.
	accepted int
}

// Start starts a proxy to target; it is closed at the test's cleanup.
func Start(t testing.TB, target string) *Proxy {
	t.Helper()
	p, err := New(target)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// New starts a proxy to target on a free loopback port.
func New(target string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{target: target, ln: ln, conns: map[net.Conn]struct{}{}, rng: rand.New(rand.NewPCG(1, 2))}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the address to connect to instead of the target.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut closes every proxied connection and refuses new ones until Heal.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for c := range p.conns {
		_ = c.Close()
	}
}

// Heal lets connections through again.
func (p *Proxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// Seed reseeds the generator of Delay's jitter and Drop's losses.
func (p *Proxy) Seed(seed uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
}

// set applies fn to the faults of each direction in d.
func (p *Proxy) set(d Direction, fn func(*faults)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, dd := range []Direction{Forward, Backward} {
		if d&dd != 0 {
			fn(&p.dir[i])
		}
	}
}

// Blackhole discards the bytes flowing in d, on live connections and new
// ones (which are still accepted), until Clear or Unblackhole.
func (p *Proxy) Blackhole(d Direction) { p.set(d, func(f *faults) { f.blackhole = true }) }

// Unblackhole lets the bytes in d through again.
func (p *Proxy) Unblackhole(d Direction) { p.set(d, func(f *faults) { f.blackhole = false }) }

// Delay holds every chunk flowing in d for latency plus a uniformly random
// extra of up to jitter (order is kept). Zero latency and jitter remove it.
func (p *Proxy) Delay(d Direction, latency, jitter time.Duration) {
	p.set(d, func(f *faults) { f.latency, f.jitter = latency, jitter })
}

// Drop loses each chunk flowing in d with probability prob (0 removes it).
func (p *Proxy) Drop(d Direction, prob float64) { p.set(d, func(f *faults) { f.drop = prob }) }

// Clear removes every fault set by Blackhole, Delay and Drop (not a Cut).
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dir = [2]faults{}
}

// decide returns what happens to the next chunk flowing in direction i:
// dropped (blackholed or lost), and its delay.
func (p *Proxy) decide(i int) (drop bool, delay time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f := p.dir[i]
	if f.blackhole || (f.drop > 0 && p.rng.Float64() < f.drop) {
		return true, 0
	}
	delay = f.latency
	if f.jitter > 0 {
		delay += time.Duration(p.rng.Int64N(int64(f.jitter) + 1))
	}
	return false, delay
}

// Close stops the proxy and closes every connection.
func (p *Proxy) Close() {
	_ = p.ln.Close()
	p.Cut()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(in)
	}
}

// Accepted is the number of connections the proxy accepted and
// forwarded (a test can check that traffic does go through it).
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) serve(in net.Conn) {
	defer p.wg.Done()
	if !p.track(in) {
		_ = in.Close()
		return
	}
	p.mu.Lock()
	p.accepted++
	p.mu.Unlock()
	defer p.untrack(in)
	out, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(out) {
		_ = out.Close()
		return
	}
	defer p.untrack(out)
	done := make(chan struct{}, 2)
	go func() { p.pipe(0, out, in); done <- struct{}{} }()
	go func() { p.pipe(1, in, out); done <- struct{}{} }()
	<-done
	<-done
}

// chunk is bytes read from one side, due to be written at due.
type chunk struct {
	b   []byte
	due time.Time
}

// pipe copies src to dst through the faults of direction i; whichever
// way it ends, both connections are closed.
func (p *Proxy) pipe(i int, dst, src net.Conn) {
	defer func() {
		_ = dst.Close()
		_ = src.Close()
	}()
	q := make(chan chunk, 256)
	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		defer func() { _ = dst.Close(); _ = src.Close() }()
		var t *time.Timer
		for c := range q {
			if wait := time.Until(c.due); wait > 0 {
				if t == nil {
					t = time.NewTimer(wait)
				} else {
					t.Reset(wait)
				}
				<-t.C
			}
			if _, err := dst.Write(c.b); err != nil {
				// Closing src stops the reader, which then closes q.
				_ = dst.Close()
				_ = src.Close()
				for range q {
				}
				return
			}
		}
	}()
	defer func() { close(q); <-writerDone }()
	lost := false
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			drop, delay := p.decide(i)
			switch {
			case drop:
				lost = true
			case lost:
				return // the stream lost bytes: reset it, as TCP would give up
			default:
				q <- chunk{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(delay)}
			}
		}
		if err != nil {
			return
		}
	}
}
