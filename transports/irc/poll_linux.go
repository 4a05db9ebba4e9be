package irc

import (
	"errors"
	"io"
	"net"
	"os"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"transportd/internal/rawio"
)

// poller reads the plain TCP connections of every session without a
// goroutine per connection: a goroutine blocked in a read keeps a stack
// of several KiB, the largest part of what an idle IRC user costs (one
// connection per user and server). One epoll set holds the connections;
// the Go runtime's own poller wakes the one goroutine that reads them
// when any is readable (the epoll descriptor is itself pollable), so no
// thread blocks in epoll_wait. TLS connections are read through
// crypto/tls over a pollableConn. Go's net package offers no readiness
// callback, hence this file.
type poller struct {
	epfd int
	rc   syscall.RawConn
	buf  []byte // read buffer, used by the polling goroutine only

	mu    sync.Mutex
	conns map[int32]*conn // by token
	next  int32

	sweep   atomic.Int64  // keepalive's interval (ns)
	shorter chan struct{} // told when sweep was shortened
}

var (
	pollerOnce sync.Once
	pollerP    *poller
)

// thePoller is the process's poller, started on first use; nil if the
// system refused one (connections then get a reading goroutine each).
func thePoller() *poller {
	pollerOnce.Do(func() {
		p, err := newPoller()
		if err != nil {
			return
		}
		pollerP = p
		go p.run()
		go p.keepalive()
	})
	return pollerP
}

func newPoller() (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return nil, err
	}
	// A non-blocking descriptor handed to os.NewFile joins the runtime's
	// poller, which is what lets run wait without a thread.
	f := os.NewFile(uintptr(epfd), "irc-epoll")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	p := &poller{epfd: epfd, rc: rc, buf: make([]byte, 64<<10), conns: map[int32]*conn{}, shorter: make(chan struct{}, 1)}
	p.sweep.Store(int64(maxSweep))
	return p, nil
}

// The keepalive sweep runs every maxSweep, or a quarter of the shortest
// ping interval or time-out of a connection added (never under
// minSweep): a PING goes out, and an unanswered one ends the connection,
// at most that late.
const (
	maxSweep = 5 * time.Second
	minSweep = 10 * time.Millisecond
)

// keepalive checks the keepalive of every polled connection each sweep:
// one goroutine for all, where a timer per connection was some 150
// bytes of every user's.
func (p *poller) keepalive() {
	var conns []*conn
	t := time.NewTimer(time.Duration(p.sweep.Load()))
	for {
		select {
		case <-t.C:
		case <-p.shorter:
			t.Reset(time.Duration(p.sweep.Load()))
			continue
		}
		t.Reset(time.Duration(p.sweep.Load()))
		p.mu.Lock()
		for _, c := range p.conns {
			conns = append(conns, c)
		}
		p.mu.Unlock()
		for _, c := range conns {
			c.pingCheck()
		}
		clear(conns)
		conns = conns[:0]
	}
}

// shortenSweep makes the sweep frequent enough for c's keepalive.
func (p *poller) shortenSweep(c *conn) {
	if c.pingEvery <= 0 {
		return // no keepalive
	}
	d := max(min(c.pingEvery, c.pingWait)/4, minSweep)
	for {
		cur := p.sweep.Load()
		if int64(d) >= cur {
			return
		}
		if p.sweep.CompareAndSwap(cur, int64(d)) {
			select {
			case p.shorter <- struct{}{}:
			default:
			}
			return
		}
	}
}

// run handles readable connections until the process ends.
func (p *poller) run() {
	evs := make([]unix.EpollEvent, 128)
	for {
		_ = p.rc.Read(func(fd uintptr) bool {
			for {
				n, err := sysEpollPoll(int(fd), evs)
				if err != nil || n <= 0 {
					// Nothing ready (or EINTR): wait for the runtime to
					// say the set is readable again.
					return false
				}
				more := n == len(evs)
				for _, ev := range evs[:n] {
					p.mu.Lock()
					c := p.conns[ev.Fd]
					p.mu.Unlock()
					if c != nil && p.readable(c, ev.Events) {
						more = true
					}
				}
				if !more {
					// Every connection reported was read empty: asking the
					// set again would find nothing, at a system call a
					// wake (one a relayed message). What arrives from now
					// on wakes the set's waiters, the runtime's poller
					// among them, even for a connection the
					// level-triggered set still lists as ready.
					return false
				}
			}
		})
	}
}

// add puts a connection in the set. A closed connection is refused (its
// close may already have run remove).
func (p *poller) add(c *conn) error {
	p.mu.Lock()
	if c.isClosed() {
		p.mu.Unlock()
		return errClosed
	}
	p.next++
	if p.next <= 0 {
		p.next = 1
	}
	for p.conns[p.next] != nil {
		p.next++
	}
	// tok, not c.token, below: once in the epoll set, the connection may
	// be read, leave the set and be added again (a registration ends)
	// before this returns.
	tok := p.next
	c.token = tok
	p.conns[tok] = c
	p.mu.Unlock()
	p.shortenSweep(c)
	var err error
	cerr := c.raw.Control(func(fd uintptr) {
		// Level-triggered: a connection with more to read than one read
		// takes is reported again.
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP, Fd: tok})
	})
	if err == nil {
		err = cerr
	}
	if err != nil {
		p.remove(c)
		return err
	}
	return nil
}

// remove takes a connection out of the set (a closed descriptor leaves
// the set by itself; its events still queued find no token).
func (p *poller) remove(c *conn) {
	p.mu.Lock()
	if c.token == 0 || p.conns[c.token] != c {
		p.mu.Unlock()
		return
	}
	delete(p.conns, c.token)
	p.mu.Unlock()
	_ = c.raw.Control(func(fd uintptr) {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}

// readable reads what one connection has and hands its lines on. When
// the session cannot take a line without waiting, the connection leaves
// the set and a goroutine waits for the session, then puts it back: one
// slow session never holds up the others. more tells that the
// connection may hold more than was read: a read filled the buffer, or
// the peer's end or an error was reported with the data.
func (p *poller) readable(c *conn, events uint32) (more bool) {
	defer func() {
		if r := recover(); r != nil {
			// The connection ends; its close reports the panic to core
			// (counted with core's own: reportPanic).
			p.remove(c)
			c.lost(&panicError{v: r, stack: debug.Stack()})
		}
	}()
	for first := true; ; first = false {
		n, rerr := c.readPolled(p.buf)
		if n > 0 {
			c.readAt.Store(monoNow())
			c.src = p.buf[:n]
			if !p.handOn(c) {
				return
			}
		}
		switch {
		case rerr == nil && c.viaTLS:
			continue // see readPolled
		case rerr == nil:
			// Level-triggered: more is reported again. A read short of
			// the buffer took all there was, but not the end of the
			// stream the peer sent with it (reported, and no wake to
			// come): it is read next.
			return n == len(p.buf) || events&(unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0
		case errors.Is(rerr, errSocketEmpty):
			if !first || n > 0 || events&(unix.EPOLLERR|unix.EPOLLHUP) == 0 {
				return
			}
			rerr = errors.New("connection reset")
		}
		p.remove(c)
		c.lost(rerr)
		return
	}
}

// handOn hands on the lines just read into src: false if the connection
// left the set (lost, registered, or its session cannot take a line now).
func (p *poller) handOn(c *conn) bool {
	if r := c.reg; r != nil {
		registered, err := r.pump()
		if registered {
			return false // out of the set until started
		}
		c.src = nil
		if err != nil {
			r.fail(err)
			return false
		}
		return true
	}
	ok, err := c.pump(false)
	if err != nil {
		c.src = nil
		p.remove(c)
		c.lost(err)
		return false
	}
	if !ok {
		c.src = append([]byte(nil), c.src...) // p.buf is read into again
		p.remove(c)
		go c.catchUp(p)
		return false
	}
	c.src = nil
	return true
}

// readNow reads what a socket holds, without waiting: errSocketEmpty if
// nothing.
func readNow(raw syscall.RawConn, b []byte) (int, error) {
	var n int
	var rerr, err error
	if fr, ok := raw.(*fdRaw); ok {
		n, rerr, err = fr.read(b)
	} else {
		n, rerr, err = readRaw(raw, b)
	}
	if err != nil {
		return 0, err // closed here meanwhile
	}
	switch {
	case errors.Is(rerr, unix.EAGAIN) || errors.Is(rerr, unix.EINTR):
		return 0, errSocketEmpty
	case rerr != nil:
		return 0, rerr
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// writeNow writes what the socket takes at once, with one system call:
// n is 0 when it is full.
func writeNow(raw syscall.RawConn, bufs [][]byte) (int, error) {
	var n int
	var werr, err error
	if fr, ok := raw.(*fdRaw); ok {
		n, werr, err = fr.writev(bufs)
	} else {
		// A copy: bufs itself (the caller's array on its stack) would
		// escape with the callback, for every write.
		n, werr, err = writeRaw(raw, slices.Clone(bufs))
	}
	if err != nil {
		return 0, err // closed meanwhile
	}
	if errors.Is(werr, unix.EAGAIN) {
		return 0, nil
	}
	if werr != nil {
		return max(n, 0), werr
	}
	return n, nil
}

// sysRead, sysWritev and sysEpollPoll are unix.Read, unix.Writev and
// unix.EpollWait (not waiting) made raw: see package rawio, for the CPU
// they save a relayed message.
func sysRead(fd int, b []byte) (int, error) {
	n, e := rawio.Read(fd, b)
	if e != 0 {
		return 0, e
	}
	return n, nil
}

func sysWritev(fd int, bufs [][]byte) (int, error) {
	n, e := rawio.Writev(fd, bufs)
	if e != 0 {
		return 0, e
	}
	return n, nil
}

func sysEpollPoll(epfd int, evs []unix.EpollEvent) (int, error) {
	n, e := rawio.EpollPoll(epfd, evs)
	if e != 0 {
		return 0, e
	}
	return n, nil
}

// readRaw and writeRaw are readNow's and writeNow's system calls through
// a RawConn the runtime made (a TLS connection's socket). An fdRaw is
// called directly (fdRaw.read, fdRaw.writev): through its RawConn
// methods, each read and write allocated the callback and its results
// (four or five small objects a message relayed).
func readRaw(raw syscall.RawConn, b []byte) (n int, rerr, err error) {
	err = raw.Read(func(fd uintptr) bool {
		n, rerr = sysRead(int(fd), b)
		return true
	})
	return n, rerr, err
}

func writeRaw(raw syscall.RawConn, bufs [][]byte) (n int, werr, err error) {
	err = raw.Write(func(fd uintptr) bool {
		for {
			n, werr = sysWritev(int(fd), bufs)
			if !errors.Is(werr, unix.EINTR) {
				return true
			}
		}
	})
	return n, werr, err
}

// pollableConn is the TCP connection under a TLS one, so that the poller
// reads TLS connections too. Once polled, a read that finds the socket
// empty returns errSocketEmpty at once instead of waiting: crypto/tls
// hands a temporary error back and keeps its state (a record half read
// stays in its buffer for the next read). Registration, before, reads
// as any connection does.
//
// One case can hold the poller up: a server's TLS 1.3 KeyUpdate makes
// crypto/tls answer from within the read, and the answer waits for a
// write in progress, which a full socket holds up to its write deadline.
// Servers seldom send it (InspIRCd does not).
type pollableConn struct {
	*net.TCPConn
	raw    syscall.RawConn
	polled atomic.Bool
}

func (pc *pollableConn) Read(b []byte) (int, error) {
	if !pc.polled.Load() {
		return pc.TCPConn.Read(b)
	}
	return readNow(pc.raw, b)
}

// pollableBase wraps a TCP connection TLS will run over, so that the
// poller can read it (start); any other connection is left as it is.
func pollableBase(nc net.Conn) net.Conn {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nc
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return nc
	}
	return &pollableConn{TCPConn: tc, raw: raw}
}
