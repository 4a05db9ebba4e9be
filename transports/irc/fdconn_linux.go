package irc

import (
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// fdConn is a plain TCP connection the poller reads, held as its bare
// socket: the net.TCPConn it was dialled as is closed once its
// descriptor is duplicated (detachTCP). The Go runtime keeps for every
// connection it polls a poll descriptor and a finalizer record outside
// the heap, and net a file descriptor struct and both addresses in it:
// some 1 KB of resident memory a connection (1000 connections dialled
// and kept: 1.5 MB as net.TCPConn, 0.5 MB as bare sockets), one
// connection per user and IRC server, where a user's whole idle state is
// some 6 KB. The poller needs none of it: it reads and writes without
// waiting (readNow, writeNow) and learns of readiness from its own epoll
// set. Only a write that finds the socket full waits (the writer
// goroutine, rarely): it waits on a runtime-polled duplicate of the
// descriptor made for that wait (waitReady), so no thread blocks.
//
// Go's net package has no way to give a socket up to the caller (its
// netFD owns the descriptor), hence this file.
type fdConn struct {
	// mu is read-held for every use of fd (one system call, never a
	// wait), so that Close never closes a descriptor in use, whose
	// number the system could give to another connection at once.
	mu sync.RWMutex
	fd int // -1 once closed
	// Deadlines in Unix nanoseconds, 0 for none.
	rdl, wdl atomic.Int64
}

var (
	_ net.Conn        = (*fdConn)(nil)
	_ syscall.RawConn = (*fdRaw)(nil)
)

// detachTCP takes tc's socket from the runtime: tc is closed, the
// returned fdConn holds a duplicate of its descriptor (non-blocking, as
// the runtime made it: the flag belongs to the socket). On failure tc is
// left as it was.
func detachTCP(tc *net.TCPConn) (*fdConn, error) {
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd, derr := -1, error(nil)
	if err := rc.Control(func(fd uintptr) {
		nfd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("fcntl", derr)
	}
	// Set again, though the runtime set it: the reads and writes are
	// raw system calls (rawio), which must never block.
	if err := unix.SetNonblock(nfd, true); err != nil {
		unix.Close(nfd)
		return nil, os.NewSyscallError("fcntl", err)
	}
	// Closing one of two descriptors of a socket neither shuts it down
	// nor sends anything: the duplicate keeps the connection.
	_ = tc.Close()
	return &fdConn{fd: nfd}, nil
}

// pollableTCP is a plain TCP connection as the poller reads it: an
// fdConn (or tc itself, should its descriptor not duplicate) and the raw
// access to it.
func pollableTCP(tc *net.TCPConn) (net.Conn, syscall.RawConn) {
	if fc, err := detachTCP(tc); err == nil {
		return fc, (*fdRaw)(fc)
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return tc, nil
	}
	return tc, raw
}

// use runs f with the descriptor, net.ErrClosed once closed.
func (c *fdConn) use(f func(fd int)) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fd < 0 {
		return net.ErrClosed
	}
	f(c.fd)
	return nil
}

func (c *fdConn) Read(b []byte) (int, error) {
	for {
		var n int
		var rerr error
		if err := c.use(func(fd int) { n, rerr = sysRead(fd, b) }); err != nil {
			return 0, err
		}
		switch {
		case rerr == unix.EINTR:
			continue
		case rerr == unix.EAGAIN:
			if err := c.waitReady(false); err != nil {
				return 0, err
			}
			continue
		case rerr != nil:
			return 0, os.NewSyscallError("read", rerr)
		case n == 0 && len(b) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// Write is WriteBuffers of one buffer.
func (c *fdConn) Write(b []byte) (int, error) { return c.WriteBuffers([][]byte{b}) }

// WriteBuffers writes bufs with writev (one system call when the socket
// takes them), waiting for room as Write does; it consumes bufs.
// net.Buffers.WriteTo would write an fdConn one Write, so one system
// call, per line: net's writev is for its own connections.
func (c *fdConn) WriteBuffers(bufs [][]byte) (int, error) {
	total := 0
	for len(bufs) > 0 {
		if len(bufs[0]) == 0 {
			bufs = bufs[1:]
			continue
		}
		var n int
		var werr error
		if err := c.use(func(fd int) { n, werr = sysWritev(fd, bufs) }); err != nil {
			return total, err
		}
		switch {
		case werr == unix.EINTR:
			continue
		case werr == unix.EAGAIN:
			if err := c.waitReady(true); err != nil {
				return total, err
			}
			continue
		case werr != nil:
			return total, os.NewSyscallError("writev", werr)
		}
		total += n
		for len(bufs) > 0 && n >= len(bufs[0]) {
			n -= len(bufs[0])
			bufs = bufs[1:]
		}
		if n > 0 {
			bufs[0] = bufs[0][n:]
		}
	}
	return total, nil
}

// waitReady waits until the socket can be written (or read), up to the
// deadline: through a duplicate of the descriptor that the runtime's
// poller watches (net.FileConn), closed after. A Close meanwhile shuts
// the socket down, which ends the wait.
func (c *fdConn) waitReady(write bool) error {
	dl := c.rdl.Load()
	if write {
		dl = c.wdl.Load()
	}
	if dl != 0 && time.Now().UnixNano() >= dl {
		return os.ErrDeadlineExceeded
	}
	var f *os.File
	var derr error
	if err := c.use(func(fd int) {
		var nfd int
		nfd, derr = unix.FcntlInt(uintptr(fd), unix.F_DUPFD_CLOEXEC, 0)
		if derr == nil {
			f = os.NewFile(uintptr(nfd), "irc")
		}
	}); err != nil {
		return err
	}
	if derr != nil {
		return os.NewSyscallError("fcntl", derr)
	}
	nc, err := net.FileConn(f) // a duplicate of the duplicate, polled
	f.Close()
	if err != nil {
		return err
	}
	defer nc.Close()
	if dl != 0 {
		_ = nc.SetDeadline(time.Unix(0, dl))
	}
	rc, err := nc.(syscall.Conn).SyscallConn()
	if err != nil {
		return err
	}
	// The runtime forgets readiness it heard of before it calls ready
	// (it waits for the next edge), so ready asks the socket itself
	// (poll without waiting): one that became ready before it joined the
	// poller would otherwise never be reported again.
	events := int16(unix.POLLIN)
	if write {
		events = unix.POLLOUT
	}
	ready := func(fd uintptr) bool {
		pfd := []unix.PollFd{{Fd: int32(fd), Events: events}}
		for {
			n, err := unix.Poll(pfd, 0)
			if err != unix.EINTR {
				return n != 0 || err != nil // ready, or an error the next call reports
			}
		}
	}
	if write {
		err = rc.Write(ready)
	} else {
		err = rc.Read(ready)
	}
	if err == nil && c.closed() {
		return net.ErrClosed
	}
	return err
}

func (c *fdConn) closed() bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.fd < 0
}

// Close shuts the socket down, which ends a wait on a duplicate
// (waitReady), and closes the descriptor once no call uses it.
func (c *fdConn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return net.ErrClosed
	}
	_ = unix.Shutdown(c.fd, unix.SHUT_RDWR)
	err := unix.Close(c.fd)
	c.fd = -1
	if err != nil {
		return os.NewSyscallError("close", err)
	}
	return nil
}

// LocalAddr and RemoteAddr ask the system: an fdConn keeps no address
// (nil once closed).
func (c *fdConn) LocalAddr() net.Addr { return c.addr(unix.Getsockname) }

func (c *fdConn) RemoteAddr() net.Addr { return c.addr(unix.Getpeername) }

func (c *fdConn) addr(get func(int) (unix.Sockaddr, error)) net.Addr {
	var sa unix.Sockaddr
	if c.use(func(fd int) { sa, _ = get(fd) }) != nil {
		return nil
	}
	switch sa := sa.(type) {
	case *unix.SockaddrInet4:
		return &net.TCPAddr{IP: net.IP(sa.Addr[:]).To16(), Port: sa.Port}
	case *unix.SockaddrInet6:
		a := &net.TCPAddr{IP: net.IP(sa.Addr[:]), Port: sa.Port}
		if sa.ZoneId != 0 {
			if ifc, err := net.InterfaceByIndex(int(sa.ZoneId)); err == nil {
				a.Zone = ifc.Name
			}
		}
		return a
	}
	return nil
}

func (c *fdConn) SetDeadline(t time.Time) error {
	_ = c.SetReadDeadline(t)
	return c.SetWriteDeadline(t)
}

func (c *fdConn) SetReadDeadline(t time.Time) error {
	c.rdl.Store(deadlineNanos(t))
	return nil
}

func (c *fdConn) SetWriteDeadline(t time.Time) error {
	c.wdl.Store(deadlineNanos(t))
	return nil
}

func deadlineNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return max(t.UnixNano(), 1)
}

// fdRaw is an fdConn as the poller uses it (Control for its epoll set,
// Read and Write for readNow and writeNow). Unlike the runtime's
// RawConn, Read and Write call f once and never wait, whatever it
// returns: the poller's calls never wait.
type fdRaw fdConn

func (r *fdRaw) Control(f func(fd uintptr)) error {
	return (*fdConn)(r).use(func(fd int) { f(uintptr(fd)) })
}

func (r *fdRaw) Read(f func(fd uintptr) bool) error {
	return (*fdConn)(r).use(func(fd int) { f(uintptr(fd)) })
}

func (r *fdRaw) Write(f func(fd uintptr) bool) error {
	return (*fdConn)(r).use(func(fd int) { f(uintptr(fd)) })
}

// read is Read with sysRead as f, without a callback: err is
// net.ErrClosed once closed, rerr the system call's.
func (r *fdRaw) read(b []byte) (n int, rerr, err error) {
	c := (*fdConn)(r)
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fd < 0 {
		return 0, nil, net.ErrClosed
	}
	n, rerr = sysRead(c.fd, b)
	return n, rerr, nil
}

// writev is Write with sysWritev as f (again on EINTR), without a
// callback.
func (r *fdRaw) writev(bufs [][]byte) (n int, werr, err error) {
	c := (*fdConn)(r)
	c.mu.RLock()
	defer c.mu.RUnlock()
	if c.fd < 0 {
		return 0, nil, net.ErrClosed
	}
	for {
		n, werr = sysWritev(c.fd, bufs)
		if werr != unix.EINTR {
			return n, werr, nil
		}
	}
}
