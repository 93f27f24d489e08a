package testutil

import (
	"fmt"
	"hash/fnv"
	"net"
	"testing"
)

// LoopbackHost is a loopback address of the test's own, 127.x.y.z derived
// from its name (never 127.0.0.1). A port found free and then released
// (for a child process or a server that must be given an address) can be
// taken on 127.0.0.1 by any other test's ephemeral port before it is
// bound — seen in CI as "address already in use" — but hardly on an
// address no one else uses. One host for all of a test's addresses, as a
// node's addresses must share one host.
func LoopbackHost(t testing.TB) string {
	h := fnv.New32a()
	_, _ = h.Write([]byte(t.Name()))
	n := h.Sum32()
	return fmt.Sprintf("127.%d.%d.%d", 1+n%254, (n>>8)%256, 1+(n>>16)%254)
}

// FreeAddr is host:port on LoopbackHost(t) with a port that was free a
// moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", LoopbackHost(t)+":0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
