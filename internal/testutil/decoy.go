package testutil

import (
	"sync"
	"sync/atomic"
	"testing"
)

// Decoy is a loopback listener that must receive nothing: it accepts
// connections, counts them and closes them at once. Tests hand its address
// to code that must not dial it (an attacker's address) and check Accepted
// is 0 at the end; a closed connection also makes an unwanted dial fail
// fast instead of hanging.
type Decoy struct {
	Addr     string
	accepted atomic.Int64
}

// Accepted returns the number of connections the decoy accepted so far.
func (d *Decoy) Accepted() int64 { return d.accepted.Load() }

// NewDecoy starts a decoy on 127.0.0.1; it stops when the test ends.
func NewDecoy(t testing.TB) *Decoy {
	t.Helper()
	l := Listen(t)
	d := &Decoy{Addr: l.Addr().String()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			d.accepted.Add(1)
			_ = c.Close()
		}
	}()
	t.Cleanup(func() {
		_ = l.Close()
		wg.Wait()
	})
	return d
}
