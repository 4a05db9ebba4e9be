// Package tcptest has helpers for tests that need real TCP connections.
package tcptest

import (
	"net"
	"testing"
)

// Pair is a TCP connection on loopback and its far end, both closed
// when the test ends (closing one already closed does nothing).
func Pair(t testing.TB) (near, far net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	near, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	far, err = ln.Accept()
	if err != nil {
		near.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { near.Close(); far.Close() })
	return near, far
}
