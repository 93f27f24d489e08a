package bench

import (
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := l.Accept()
		accepted <- c
	}()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// The delay line delivers what the remote end wrote no earlier than the
// delay after it arrived, in order; the other direction is not delayed;
// a delay of 0 passes data through; Close ends a pending Read and the
// reader goroutine.
func TestDelayLine(t *testing.T) {
	const d = 80 * time.Millisecond
	line := &delayLine{}
	line.set(d)
	raw, server := tcpPair(t)
	c := line.wrap(raw)

	sent := time.Now()
	if _, err := server.Write([]byte("hello ")); err != nil {
		t.Fatal(err)
	}
	if _, err := server.Write([]byte("world")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 11)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if got := time.Since(sent); got < d {
		t.Errorf("read after %v, before the delay %v", got, d)
	}
	if string(buf) != "hello world" {
		t.Errorf("read %q", buf)
	}

	// The other direction goes straight through.
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(server, buf[:4]); err != nil || string(buf[:4]) != "ping" {
		t.Fatalf("server read %q, %v", buf[:4], err)
	}

	line.set(0)
	if _, err := server.Write([]byte("now")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, buf[:3]); err != nil || string(buf[:3]) != "now" {
		t.Fatalf("read %q, %v", buf[:3], err)
	}

	done := make(chan error, 1)
	go func() {
		_, err := c.Read(buf)
		done <- err
	}()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Errorf("pending read after Close: %v, want net.ErrClosed", err)
	}
}

// The remote end's close reaches the reader after the queued data.
func TestDelayLineEOF(t *testing.T) {
	line := &delayLine{}
	line.set(10 * time.Millisecond)
	raw, server := tcpPair(t)
	c := line.wrap(raw)
	defer c.Close()
	if _, err := server.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	server.Close()
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "bye" {
		t.Fatalf("ReadAll = %q, %v", b, err)
	}
}
