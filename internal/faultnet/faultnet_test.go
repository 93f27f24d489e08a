package faultnet

import (
	"bufio"
	"net"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo serves one echo server on loopback until the test ends.
func echo(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				for {
					line, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if _, err := c.Write([]byte(line)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func roundTrip(c net.Conn) error {
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err := bufio.NewReader(c).ReadString('\n')
	return err
}

// TestCutAndHeal: a cut closes live connections and refuses new ones; a
// heal lets new ones through.
func TestCutAndHeal(t *testing.T) {
	p := Start(t, echo(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := roundTrip(c); err != nil {
		t.Fatalf("through the proxy: %v", err)
	}
	p.Cut()
	if err := roundTrip(c); err == nil {
		t.Fatal("a live connection survived the cut")
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err == nil {
		if err := roundTrip(c2); err == nil {
			t.Fatal("a new connection got through a cut link")
		}
		c2.Close()
	}
	p.Heal()
	c3, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c3.Close()
	if err := roundTrip(c3); err != nil {
		t.Fatalf("after heal: %v", err)
	}
}

// TestDirectionalFaults: a one-way blackhole stops the round trip on a
// live connection without closing it, Clear resets the connection that
// lost bytes, a delay slows the round trip, and a certain drop loses it.
func TestDirectionalFaults(t *testing.T) {
	p := Start(t, echo(t))
	p.Seed(7)
	defer func() {
		if p.Accepted() == 0 {
			t.Error("Accepted counted no connection")
		}
	}()
	dial := func() net.Conn {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	for _, d := range []Direction{Forward, Backward} {
		t.Run(d.String(), func(t *testing.T) {
			c := dial()
			if err := roundTrip(c); err != nil {
				t.Fatalf("before: %v", err)
			}
			p.Blackhole(d)
			_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
			_, _ = c.Write([]byte("lost\n"))
			if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
				t.Fatalf("a round trip through a %v blackhole succeeded", d)
			} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
				t.Fatalf("blackholed connection: %v, want a timeout (it stays open)", err)
			}
			p.Clear()
			// The connection that lost bytes is reset; a new one works.
			if err := roundTrip(c); err == nil {
				t.Fatal("a connection that lost bytes was not reset")
			}
			if err := roundTrip(dial()); err != nil {
				t.Fatalf("after Clear: %v", err)
			}
		})
	}
	t.Run("delay", func(t *testing.T) {
		p.Delay(Backward, 150*time.Millisecond, 50*time.Millisecond)
		defer p.Clear()
		c := dial()
		start := time.Now()
		if err := roundTrip(c); err != nil {
			t.Fatal(err)
		}
		if rtt := time.Since(start); rtt < 150*time.Millisecond {
			t.Fatalf("round trip %v through a 150 ms delay", rtt)
		}
	})
	t.Run("drop", func(t *testing.T) {
		p.Drop(Forward, 1)
		defer p.Clear()
		c := dial()
		_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
		_, _ = c.Write([]byte("lost\n"))
		if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			t.Fatal("a round trip with every chunk dropped succeeded")
		}
	})
}
