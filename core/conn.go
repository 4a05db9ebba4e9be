package core

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"mellium.im/xmpp"
	xmppcomponent "mellium.im/xmpp/component"
	"mellium.im/xmpp/jid"

	"transportd/internal/rawio"
)

// errNotConnected is returned by send while the component link is down.
var errNotConnected = Temporary(errors.New("component not connected to the XMPP server"))

// link is one XEP-0114 connection of a component, re-dialled for ever with
// capped exponential backoff and jitter. mellium sessions are single-use, so
// a link owns a new session per connection; handlers and state live in the
// component, outside it.
//
// The read loop is ours, not mellium's Serve: Serve ends the stream on any
// handler error and on a payload-less IQ (see MELLIUM.md). Ours reads one
// whole stanza into an Element under size and depth limits, hands it to the
// component's dispatcher, and never lets a handler end the stream.
type link struct {
	addr     string
	jid      jid.JID
	secret   []byte
	min, max time.Duration
	limits   Limits
	dispatch func(*Element)
	// onState is called with true after each successful handshake and with
	// false after each loss.
	onState func(up bool, err error)
	logf    func(msg string, args ...any)

	mu   sync.Mutex
	sess *xmpp.Session
	conn net.Conn
	out  *linkWriter   // writes the stanzas of the connection now up
	gone chan struct{} // closed when the connection now up ends
	up   atomic.Bool
}

// lost returns a channel closed when the connection now up ends (already
// closed when none is up): who waits for an answer on it stops waiting.
func (l *link) lost() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.gone == nil {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	return l.gone
}

// run dials until ctx is done.
func (l *link) run(ctx context.Context) {
	delay := l.min
	for ctx.Err() == nil {
		start := time.Now()
		err := l.connectAndServe(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > 30*time.Second {
			// It was up for a while: the next attempt starts small again.
			delay = l.min
		}
		// Full jitter between delay/2 and delay, so a fleet of components
		// does not reconnect in lock step.
		wait := delay/2 + rand.N(delay/2+1)
		l.logf("component link down, retrying", "error", err, "retry_in", wait.Round(time.Millisecond))
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		delay *= 2
		if delay > l.max {
			delay = l.max
		}
	}
}

func (l *link) connectAndServe(ctx context.Context) (err error) {
	d := net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	raw, err := d.DialContext(ctx, "tcp", l.addr)
	if err != nil {
		return err
	}
	conn := newDeadlineConn(raw, sendTimeout)
	sr := newStreamReader(conn, l.limits)
	// mellium applies a context to the connection from a goroutine that
	// may run after the call returned, if the context ends just then: it
	// sets a deadline in the past under whatever read or write runs at
	// that moment (a burst of sends failed with "i/o timeout" and dropped
	// the link). So mellium only gets contexts that never end, and the
	// timeouts are the connection's own deadlines.
	_ = raw.SetDeadline(time.Now().Add(15 * time.Second))
	stopHS := context.AfterFunc(ctx, func() { raw.Close() })
	sess, err := xmppcomponent.NewSession(context.Background(), l.jid, l.secret, readerConn{Conn: conn, sr: sr})
	if !stopHS() && err == nil {
		err = ctx.Err()
	}
	_ = raw.SetDeadline(time.Time{})
	if err != nil {
		raw.Close()
		return fmt.Errorf("handshake: %w", err)
	}
	l.mu.Lock()
	l.sess, l.conn = sess, raw
	l.out = newLinkWriter(conn, l.logf)
	l.gone = make(chan struct{})
	l.mu.Unlock()
	l.up.Store(true)
	l.onState(true, nil)

	out := l.out
	// Stanzas sent before the stop (a goodbye to the users) are written
	// before the connection closes.
	stop := context.AfterFunc(ctx, func() { out.close(); raw.Close() })
	err = l.serve(sr)
	stop()

	l.up.Store(false)
	l.mu.Lock()
	l.sess, l.conn, l.out = nil, nil, nil
	close(l.gone)
	l.gone = nil
	l.mu.Unlock()
	out.close() // writes what was sent before the stream's end
	_ = sess.Close()
	raw.Close()
	l.onState(false, err)
	return err
}

// serve reads stanzas until the stream ends. A stanza past the size or
// depth limits is read and dropped, and answered with an error, so that one
// remote entity cannot disconnect every user by sending it; one larger than
// sixteen times the size limit ends the connection (the reader would
// otherwise buffer a token of any size).
func (l *link) serve(sr *streamReader) error {
	for {
		el, err := sr.next()
		if err != nil && !errors.Is(err, errLimit) {
			return err
		}
		if err != nil {
			l.logf("stanza refused", "error", err, "name", el.Name.Local, "from", el.Get("from"))
			el.SetAttr("transportd-limit", err.Error())
		}
		if el.Name.Local == "error" && el.Name.Space == nsStreams {
			return fmt.Errorf("stream error from server: %s", el.String())
		}
		l.dispatch(el)
	}
}

// send writes one stanza. Every stanza the component originates goes through
// here, which enforces a from at the component's domain and a non-empty to: a
// server closes the stream on a bad from.
func (l *link) send(el outgoing) error {
	// The from is built by the gateway: a cut at '@' and '/' finds its
	// domain (jid.Parse's PRECIS checks cost more than the rest of a
	// relayed message's rendering).
	_, from, to := el.stanzaHeader()
	if fromDomain(from) != l.jid.Domainpart() {
		return fmt.Errorf("refusing to send a stanza with from %q outside %s", from, l.jid)
	}
	if to == "" {
		return errors.New("refusing to send a stanza without to")
	}
	l.mu.Lock()
	out := l.out
	l.mu.Unlock()
	if out == nil {
		return errNotConnected
	}
	return out.send(el)
}

// linkWriter writes a connection's stanzas: send encodes a stanza into a
// buffer and a goroutine writes what has gathered, so a burst of stanzas
// takes a few system calls instead of one each (a write to the server's
// socket cost about as much CPU as the rest of relaying a message). The
// stanzas' delivery is confirmed by a ping behind them (outbox, relay),
// never by send returning: a write that fails closes the connection, and
// what it held is sent again on the next one.
type linkWriter struct {
	conn net.Conn // deadlineConn: each write has its deadline
	logf func(msg string, args ...any)

	mu   sync.Mutex
	room sync.Cond    // signalled when the buffer was taken or err set
	buf  chunks       // encoded, not yet taken by the writer
	enc  *xml.Encoder // into buf
	err  error        // the connection failed or is closing

	kick     chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{} // closed when the writer goroutine ended
}

// chunks holds the encoded bytes waiting for the writer in chunks of
// chunkSize from chunkPool: a burst (the occupants of a channel joined,
// some 300 bytes each) once grew one buffer by copying, up to the
// backlog's megabyte, and dropped it once written, which was a third of
// what joining a busy channel allocated. Stanzas may straddle chunks:
// the writer writes them in order, and takes them only between stanzas.
type chunks struct {
	full []*[]byte // filled, in order
	cur  *[]byte   // being filled
	n    int       // bytes in full and cur
}

const chunkSize = 32 << 10

var chunkPool = sync.Pool{New: func() any { b := make([]byte, 0, chunkSize); return &b }}

// free gives the chunk to append a stanza to: a new one when the
// current has less than a small stanza's room left (a larger stanza
// grows it, and that chunk is not pooled again).
func (c *chunks) free() []byte {
	if c.cur != nil && cap(*c.cur)-len(*c.cur) < 2048 {
		c.full = append(c.full, c.cur)
		c.cur = nil
	}
	if c.cur == nil {
		c.cur = chunkPool.Get().(*[]byte)
	}
	return *c.cur
}

// appended records the current chunk after an append to what free gave.
func (c *chunks) appended(b []byte) {
	c.n += len(b) - len(*c.cur)
	*c.cur = b
}

// Write is the encoder's target; what it writes straddles chunks rather
// than grow one.
func (c *chunks) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		b := c.free()
		k := min(cap(b)-len(b), len(p))
		c.appended(append(b, p[:k]...))
		p = p[k:]
	}
	return n, nil
}

// take gives what waits, in order, and empties c.
func (c *chunks) take() []*[]byte {
	out := c.full
	if c.cur != nil {
		out = append(out, c.cur)
		c.cur = nil
	}
	c.full, c.n = nil, 0
	return out
}

// release gives written chunks back to the pool.
func release(bufs []*[]byte) {
	for i, b := range bufs {
		if cap(*b) == chunkSize {
			*b = (*b)[:0]
			chunkPool.Put(b)
		}
		bufs[i] = nil
	}
}

// maxWriteBacklog bounds the bytes waiting for the writer: a sender waits
// while more wait (the server reads too slowly), at most the write
// deadline: then the connection fails.
const maxWriteBacklog = 1 << 20

func newLinkWriter(conn net.Conn, logf func(msg string, args ...any)) *linkWriter {
	w := &linkWriter{conn: conn, logf: logf, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	w.room.L = &w.mu
	w.enc = xml.NewEncoder(&w.buf)
	go w.run()
	return w
}

func (w *linkWriter) send(el outgoing) error {
	w.mu.Lock()
	for w.err == nil && w.buf.n > maxWriteBacklog {
		w.room.Wait()
	}
	if w.err != nil {
		w.mu.Unlock()
		return Temporary(fmt.Errorf("send: %w", w.err))
	}
	var err error
	if b, ok := el.appendTo(w.buf.free()); ok {
		w.buf.appended(b)
	} else if e, isElement := el.(*Element); isElement {
		err = writeStanza(w.enc, e)
	} else {
		err = fmt.Errorf("%T cannot be written", el)
	}
	if err != nil {
		// What was encoded of it may be in the buffer: the stream is
		// broken, the connection is closed and made anew.
		name, _, _ := el.stanzaHeader()
		w.failLocked(fmt.Errorf("encoding a <%s>: %w", name, err))
		w.mu.Unlock()
		return Temporary(fmt.Errorf("send: %w", err))
	}
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return nil
}

// failLocked ends the connection after a write or encoding error.
func (w *linkWriter) failLocked(err error) {
	if w.err == nil {
		if !errors.Is(err, net.ErrClosed) {
			w.logf("component link write failed, reconnecting", "error", err)
		}
		w.err = err
		w.conn.Close() // the read loop notices and reconnects
	}
	w.room.Broadcast()
}

func (w *linkWriter) run() {
	defer close(w.done)
	for {
		stopping := false
		select {
		case <-w.kick:
		case <-w.stop:
			stopping = true
		}
		for {
			w.mu.Lock()
			if w.buf.n == 0 || w.err != nil && !errors.Is(w.err, errLinkClosing) {
				w.mu.Unlock()
				break
			}
			bufs := w.buf.take()
			w.room.Broadcast()
			w.mu.Unlock()
			var err error
			for _, b := range bufs {
				if len(*b) == 0 {
					continue
				}
				if _, err = w.conn.Write(*b); err != nil {
					break
				}
			}
			release(bufs)
			if err != nil {
				w.mu.Lock()
				w.failLocked(err)
				w.mu.Unlock()
				return
			}
		}
		if stopping {
			return
		}
	}
}

var errLinkClosing = errors.New("the component link is closing")

// close refuses new stanzas, writes those already sent (unless the
// connection failed) and ends the writer.
func (w *linkWriter) close() {
	w.mu.Lock()
	if w.err == nil {
		w.err = errLinkClosing
	}
	w.room.Broadcast()
	w.mu.Unlock()
	w.stopOnce.Do(func() { close(w.stop) })
	<-w.done
}

// writeStanza encodes one stanza into enc and flushes it there. Stanzas
// are written with encoding/xml rather than mellium's Session.Send, which
// starts a goroutine (and wakes it again) for every stanza to watch its
// context: two goroutine hand-offs, the biggest cost of relaying a short
// message once the XML is built. It fixes the tokens up as mellium's
// stanza encoder does: the stanza in the stream's namespace, an empty id
// or from dropped, an id added if there is none, and no xmlns attribute
// beside a namespaced name (encoding/xml would write it twice, and the
// server would close the stream).
func writeStanza(enc *xml.Encoder, el *Element) error {
	toks := el.tokens()
	for i, t := range toks {
		switch tok := t.(type) {
		case xml.StartElement:
			attrs := tok.Attr[:0]
			hasID := false
			for _, a := range tok.Attr {
				switch {
				case a.Name.Local == "xmlns" && a.Name.Space == "" && (tok.Name.Space != "" || i == 0):
					continue
				case i == 0 && a.Name.Space == "" && (a.Name.Local == "id" || a.Name.Local == "from") && a.Value == "":
					continue
				case i == 0 && a.Name.Space == "" && a.Name.Local == "id":
					hasID = true
				}
				attrs = append(attrs, a)
			}
			if i == 0 {
				if tok.Name.Space == "" {
					tok.Name.Space = xmppcomponent.NSAccept
				}
				if !hasID {
					attrs = append(attrs, xml.Attr{Name: xml.Name{Local: "id"}, Value: randomID()})
				}
			}
			tok.Attr = attrs
			toks[i] = tok
		}
	}
	end := toks[len(toks)-1].(xml.EndElement)
	end.Name.Space = toks[0].(xml.StartElement).Name.Space
	toks[len(toks)-1] = end
	for _, t := range toks {
		if err := enc.EncodeToken(t); err != nil {
			return err
		}
	}
	return enc.Flush()
}

// sendTimeout is how long one write to the server may block.
const sendTimeout = 10 * time.Second

// fromDomain is the domain part of a JID string.
func fromDomain(s string) string {
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		s = s[i+1:]
	}
	return s
}

// deadlineConn gives each write its deadline. On a TCP connection
// (where package rawio is supported), reads and writes are its raw
// system calls: see rawio for the CPU that saves a relayed message.
// Waiting (EAGAIN), deadlines and closing stay the runtime's, through
// the connection's RawConn.
type deadlineConn struct {
	net.Conn
	writeTimeout time.Duration

	raw syscall.RawConn // nil: the connection's own Read and Write
	// The raw calls' arguments and results, and the callbacks made
	// once (a closure per call allocated, for every stanza), under
	// rmu and wmu.
	rmu, wmu        sync.Mutex
	rp, wp          []byte
	rn, wn          int
	rerr, werr      rawio.Errno
	wshort          bool // a write of nothing
	readFn, writeFn func(fd uintptr) bool
}

func newDeadlineConn(nc net.Conn, writeTimeout time.Duration) *deadlineConn {
	c := &deadlineConn{Conn: nc, writeTimeout: writeTimeout}
	if tc, ok := nc.(*net.TCPConn); ok && rawio.Supported {
		if rc, err := tc.SyscallConn(); err == nil {
			c.raw = rc
			c.readFn, c.writeFn = c.readRaw, c.writeRaw
		}
	}
	return c
}

func (c *deadlineConn) Write(p []byte) (int, error) {
	if c.writeTimeout > 0 {
		_ = c.Conn.SetWriteDeadline(time.Now().Add(c.writeTimeout))
	}
	if c.raw == nil || len(p) == 0 {
		return c.Conn.Write(p)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.wp, c.wn, c.werr, c.wshort = p, 0, 0, false
	err := c.raw.Write(c.writeFn)
	n, errno := c.wn, c.werr
	c.wp = nil
	if err == nil && errno != 0 {
		err = os.NewSyscallError("write", errno)
	}
	if err == nil && c.wshort {
		return n, io.ErrUnexpectedEOF
	}
	if err != nil {
		return n, &net.OpError{Op: "write", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	return n, nil
}

// writeRaw writes c.wp on, until all of it is written (true), the
// socket is full (false: the runtime waits, then calls it again) or an
// error.
func (c *deadlineConn) writeRaw(fd uintptr) bool {
	for c.wn < len(c.wp) {
		n, e := rawio.Write(int(fd), c.wp[c.wn:])
		switch e {
		case 0:
			if n == 0 {
				c.wshort = true // io.ErrUnexpectedEOF, as package net says
				return true
			}
			c.wn += n
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.werr = e
			return true
		}
	}
	return true
}

func (c *deadlineConn) Read(p []byte) (int, error) {
	if c.raw == nil || len(p) == 0 {
		return c.Conn.Read(p)
	}
	c.rmu.Lock()
	defer c.rmu.Unlock()
	c.rp, c.rn, c.rerr = p, 0, 0
	err := c.raw.Read(c.readFn)
	n, errno := c.rn, c.rerr
	c.rp = nil
	if err == nil && errno != 0 {
		err = os.NewSyscallError("read", errno)
	}
	if err != nil {
		return n, &net.OpError{Op: "read", Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// readRaw reads into c.rp: false when there is nothing to read yet (the
// runtime waits, then calls it again).
func (c *deadlineConn) readRaw(fd uintptr) bool {
	for {
		n, e := rawio.Read(int(fd), c.rp)
		switch e {
		case 0:
			c.rn = n
			return true
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false
		default:
			c.rerr = e
			return true
		}
	}
}

// appendStanza is writeStanza writing the XML itself: the same bytes
// (TestAppendStanzaAsEncoder, FuzzAppendStanza), without turning the tree
// into tokens and each token through encoding/xml's printer, which was
// about a tenth of what relaying a message allocated. It declines (false)
// a tree with a prefixed attribute (xml:lang, ...): writeStanza handles
// those.
// outgoing is a stanza for link.send: an *Element, or a message written
// straight into the link's buffer without an element tree (roomStanza:
// group chat messages are most of what the gateway writes, and their
// trees were a quarter of what relaying one allocated).
type outgoing interface {
	// stanzaHeader gives the stanza's name, from and to, which link.send
	// checks.
	stanzaHeader() (name, from, to string)
	// appendTo appends the stanza as it goes on the stream; false if only
	// the encoder can write it (an *Element: writeStanza).
	appendTo(b []byte) ([]byte, bool)
}

func (e *Element) stanzaHeader() (name, from, to string) {
	return e.Name.Local, e.Get("from"), e.Get("to")
}

func (e *Element) appendTo(b []byte) ([]byte, bool) { return appendStanza(b, e) }

func appendStanza(b []byte, el *Element) ([]byte, bool) {
	if !plainTree(el) {
		return b, false
	}
	return appendElement(b, el, "", true), true
}

func plainTree(e *Element) bool {
	if e.Name.Local == "" {
		return false
	}
	for _, a := range e.Attr {
		if a.Name.Space != "" {
			return false
		}
	}
	for _, c := range e.Children {
		if !plainTree(c) {
			return false
		}
	}
	return true
}

func appendElement(b []byte, e *Element, parentSpace string, root bool) []byte {
	space := e.Name.Space
	if space == "" {
		space = parentSpace
	}
	outSpace := e.Name.Space // as appendTokens: not repeated from the parent
	if outSpace == parentSpace {
		outSpace = ""
	}
	dropXmlns := outSpace != "" || root
	if root && outSpace == "" {
		outSpace = xmppcomponent.NSAccept
	}
	b = append(b, '<')
	b = append(b, e.Name.Local...)
	if outSpace != "" {
		b = append(b, ` xmlns="`...)
		b = appendEscaped(b, outSpace, true)
		b = append(b, '"')
	}
	hasID := false
	for _, a := range e.Attr {
		switch {
		case a.Name.Local == "":
			continue
		case a.Name.Local == "xmlns" && dropXmlns:
			continue
		case root && (a.Name.Local == "id" || a.Name.Local == "from") && a.Value == "":
			continue
		case root && a.Name.Local == "id":
			hasID = true
		}
		b = append(b, ' ')
		b = append(b, a.Name.Local...)
		b = append(b, `="`...)
		b = appendEscaped(b, a.Value, true)
		b = append(b, '"')
	}
	if root && !hasID {
		b = append(b, ` id="`...)
		b = append(b, randomID()...)
		b = append(b, '"')
	}
	b = append(b, '>')
	if e.Text != "" {
		b = appendEscaped(b, e.Text, false)
	}
	for _, c := range e.Children {
		b = appendElement(b, c, space, false)
	}
	b = append(b, "</"...)
	b = append(b, e.Name.Local...)
	return append(b, '>')
}

// appendEscaped escapes as encoding/xml does: attribute values
// (newlines too) and character data (newlines kept).
func appendEscaped(b []byte, s string, newline bool) []byte {
	last := 0
	for i := 0; i < len(s); {
		r, width := utf8.DecodeRuneInString(s[i:])
		i += width
		var esc string
		switch r {
		case '"':
			esc = "&#34;"
		case '\'':
			esc = "&#39;"
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '\t':
			esc = "&#x9;"
		case '\n':
			if !newline {
				continue
			}
			esc = "&#xA;"
		case '\r':
			esc = "&#xD;"
		default:
			if !xmlChar(r) || (r == utf8.RuneError && width == 1) {
				esc = "\uFFFD"
				break
			}
			continue
		}
		b = append(b, s[last:i-width]...)
		b = append(b, esc...)
		last = i
	}
	return append(b, s[last:]...)
}

// xmlChar is encoding/xml's isInCharacterRange.
func xmlChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}
