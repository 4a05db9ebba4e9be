//go:build !linux

package irc

import (
	"net"
	"sync/atomic"
	"syscall"
)

// poller is Linux's (poll_linux.go); elsewhere every connection has a
// reading goroutine.
type poller struct{}

func thePoller() *poller            { return nil }
func (p *poller) add(c *conn) error { return errClosed }
func (p *poller) remove(c *conn)    {}

// pollableConn is Linux's (poll_linux.go).
type pollableConn struct {
	net.Conn
	raw    syscall.RawConn
	polled atomic.Bool
}

func pollableBase(nc net.Conn) net.Conn { return nc }

func readNow(raw syscall.RawConn, b []byte) (int, error) { return 0, errSocketEmpty }

func writeNow(raw syscall.RawConn, bufs [][]byte) (int, error) { return 0, nil }

func pollableTCP(tc *net.TCPConn) (net.Conn, syscall.RawConn) {
	raw, err := tc.SyscallConn()
	if err != nil {
		return tc, nil
	}
	return tc, raw
}
