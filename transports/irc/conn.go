package irc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"math/bits"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ergochat/irc-go/ircmsg"
	"github.com/ergochat/irc-go/ircutils"
	"golang.org/x/time/rate"

	"transportd/internal/workers"
)

// The IRC connection: dialling, registration (CAP LS 302, SASL PLAIN,
// NICK/USER with a fallback nick), then reading by the poller (or a
// reader goroutine where there is none), which parses lines and hands
// them on, answers PING itself and PINGs the server after a silence, and
// a writer goroutine, while lines wait, that applies flood control.

const (
	// maxLine is the longest line without tags (RFC 1459, CR LF included).
	maxLine = 512
	// maxRead is the longest line read: tags (8191) plus a line.
	maxRead = 8191 + maxLine
	// outQueue is how many lines may wait for the flood limiter (a 64 KiB
	// body is about 170 lines).
	outQueue = 256
	// prioQueue is how many urgent lines (PONG, PING, QUIT) may wait.
	prioQueue = 64
	// nickTries is how many times "_" is appended to a nick in use
	// during registration before giving up.
	nickTries = 4
)

// wantCaps are the IRCv3 capabilities requested when the server offers
// them ("sasl" is added when a SASL password is configured).
var wantCaps = []string{
	"message-tags", "server-time", "echo-message", "labeled-response", "batch",
	"away-notify", "account-notify", "extended-join", "multi-prefix",
	"userhost-in-names", "cap-notify", "chghost", "invite-notify",
	"account-tag", "draft/chathistory", "chathistory", "extended-monitor",
}

// capSet is a set of the capabilities the transport knows (wantCaps and
// "sasl"), one bit each: every connection keeps its set, and those are
// the only ones it asks for or looks up.
type capSet uint32

// capNames are the capabilities of capSet, by bit.
var capNames = append(slices.Clip(wantCaps), "sasl")

func capBit(name string) capSet {
	if i := slices.Index(capNames, name); i >= 0 {
		return 1 << i
	}
	return 0
}

func (s capSet) has(name string) bool { b := capBit(name); return b != 0 && s&b != 0 }
func (s *capSet) add(name string)     { *s |= capBit(name) }
func (s *capSet) del(name string)     { *s &^= capBit(name) }
func (s capSet) len() int             { return bits.OnesCount32(uint32(s)) }

// names are the capabilities in the set, in capNames' order.
func (s capSet) names() []string {
	var out []string
	for i, name := range capNames {
		if s&(1<<i) != 0 {
			out = append(out, name)
		}
	}
	return out
}

var (
	errQueueFull = errors.New("too many lines waiting to be sent to the IRC server")
	errClosed    = errors.New("not connected to the IRC server")
	errLineLong  = errors.New("IRC line too long")
)

// dialConfig is what a connection attempt needs.
type dialConfig struct {
	server      string // host name, for TLS and messages
	addr        string // host:port
	tls         bool
	tlsInsecure bool
	// tlsTrusted is the SHA-256 fingerprint of a certificate accepted
	// though no authority the system trusts signed it; nil if none.
	tlsTrusted []byte
	nick       string
	username   string
	realname   string
	saslUser   string
	saslPass   string // SASL PLAIN when not empty
	serverPass string // sent with PASS before registering, when not empty
	timeout    time.Duration
	floodBurst int
	floodRate  float64
	pingEvery  time.Duration
	pingWait   time.Duration
	charsets   *lineCharsets // nil: UTF-8
	// ident is what the ident server answers for the connection (the
	// user's identName); "" when none runs.
	ident string
	// bind is the local address to connect from; invalid for the
	// system's choice.
	bind  netip.Addr
	log   *slog.Logger // for the wire trace, which names the server
	trace bool
	// dial, when set, replaces net.Dialer (tests).
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
}

// welcome is what registration learned.
type welcome struct {
	nick     string
	user     string // our user and host as the server shows them, if known
	host     string
	caps     capSet // acknowledged capabilities
	isupport map[string]string
	account  string // SASL account, if logged in
}

// connError is a failed connection attempt or a lost connection.
type connError struct {
	permanent bool // retrying with the same settings will fail again
	auth      bool // the credentials were refused
	nickInUse bool // every nick tried was taken
	text      string
	err       error
}

func (e *connError) Error() string {
	if e.err != nil && e.text == "" {
		return e.err.Error()
	}
	return e.text
}

func (e *connError) Unwrap() error { return e.err }

// panicError ends a connection whose reading panicked (recovered by the
// poller); the connection's onClose reports it (reportPanic).
type panicError struct {
	v     any
	stack []byte
}

func (e *panicError) Error() string { return "internal error" }

// conn is one registered connection.
type conn struct {
	nc     net.Conn
	rbuf   []byte // what a connection the poller does not read reads into
	part   []byte // the start of a line the last read cut
	log    *slog.Logger
	server string

	lim *rate.Limiter

	pingEvery, pingWait time.Duration
	ident               *identKey // the ident server's entry; nil if none (a pointer: most gateways run none, and the key is 56 bytes)
	// charsets: nil when UTF-8; swapped by the session while the
	// connection reads and writes (netConfig.lineCharsets).
	charsets atomic.Pointer[lineCharsets]

	// backlog holds lines read during registration after it ended; the
	// reader hands them on first.
	backlog []inLine
	// reg is the registration in progress, while the poller reads it
	// (registering, below, says the same to the keepalive sweep).
	reg *registrar

	onLine     func(m inLine, wait bool) bool
	onClose    func(error)
	closedOnce sync.Once // onClose is called once
	token      int32     // the poller's name for the connection (poll_linux.go)

	// Read by the poller (poll_linux.go) rather than a goroutine: lines
	// are then cut from src, what the poller read, and a read finding
	// src empty returns errWouldBlock. Only one of the poller and catchUp
	// reads at a time (catchUp runs while the connection is out of the
	// set).
	raw         syscall.RawConn
	src         []byte
	registering atomic.Bool
	polled      bool
	viaTLS      bool // polled through crypto/tls (pollableConn)
	trace       bool
	stalled     *inLine // a line the session could not take at once
	// Keepalive of a polled connection: times on monoNow's scale.
	readAt atomic.Int64 // last read
	upAt   int64        // unix seconds registration ended (the session's drain)
	pingAt atomic.Int64 // our PING waiting for an answer, or 0

	// The output queue, in order. No goroutine waits on an idle
	// connection: one is started when a line is queued and ends when the
	// queue is empty.
	mu      sync.Mutex
	q       []outLine
	nUrgent int  // urgent lines in q
	writing bool // a writer goroutine runs
	// kick wakes a writer waiting for the flood limiter to an urgent
	// line; made while one waits (waitFlood). done is closed once the
	// connection is closed; made for a goroutine that waits for that
	// (doneChan). Neither is kept by an idle connection: two channels
	// were some 200 bytes of every user's.
	kick chan struct{}
	done chan struct{}

	closed    atomic.Bool
	closeOnce sync.Once
}

// outLine is a serialised line waiting for the writer. An urgent line
// (PONG, PING, QUIT) skips the flood limiter: it is written in its turn,
// or before lines the limiter holds back. grp, if set, is told what
// became of the line.
type outLine struct {
	b      []byte
	urgent bool
	paid   bool // owes the limiter nothing: it let it through already (flush put it back), or a fence
	grp    *lineGroup
}

// lineGroup is the lines of one message. Once every line was either
// written to the socket or dropped (the connection closed first), done is
// called, once, from the writer, with how many were written; lines are
// written in order, so those are the first ones.
type lineGroup struct {
	left, written int
	done          func(written int)
}

func (g *lineGroup) settle(written bool) {
	if g == nil {
		return
	}
	if written {
		g.written++
	}
	if g.left--; g.left == 0 {
		g.done(g.written)
	}
}

// dialIRC connects and registers, then calls done once with the
// outcome, from a goroutine that may wait (for the session's queue). The
// conn done gets is not started.
//
// A goroutine dials (and shakes hands, with TLS); the registration, which
// takes a second or more on most networks (the server looks the client's
// host and ident up first), is then read by the poller, as the
// connection is once registered: a storm of reconnections keeps no
// goroutine per user waiting for the servers' welcome. Go never frees a
// goroutine's struct and keeps the stacks of many that ended: 200 users
// joining at once left some 0.4 MB of them behind (JoinedUsers). Where
// there is no poller (or the connection is not a TCP one), the goroutine
// reads the registration itself.
func dialIRC(ctx context.Context, cfg dialConfig, done func(*conn, *welcome, error)) {
	go dialAndRegister(ctx, cfg, done)
}

// dialIRCWait is dialIRC waiting for the outcome.
func dialIRCWait(ctx context.Context, cfg dialConfig) (*conn, *welcome, error) {
	type outcome struct {
		c   *conn
		w   *welcome
		err error
	}
	ch := make(chan outcome, 1)
	dialIRC(ctx, cfg, func(c *conn, w *welcome, err error) { ch <- outcome{c, w, err} })
	o := <-ch
	return o.c, o.w, o.err
}

func dialAndRegister(parent context.Context, cfg dialConfig, done func(*conn, *welcome, error)) {
	deadline := time.Now().Add(cfg.timeout)
	// Not context.WithTimeout(parent): deriving a context from core's
	// session context makes it build a Done channel the user would keep.
	ctx, cancel := context.WithDeadline(context.WithoutCancel(parent), deadline)
	defer cancel()
	defer afterFunc(parent, cancel)()
	dial := cfg.dial
	if dial == nil {
		d := &net.Dialer{KeepAlive: 30 * time.Second}
		if cfg.bind.IsValid() {
			d.LocalAddr = &net.TCPAddr{IP: cfg.bind.AsSlice()}
		}
		dial = d.DialContext
	}
	nc, err := dial(ctx, "tcp", cfg.addr)
	if err != nil {
		done(nil, nil, &connError{text: "cannot connect to " + cfg.server + ": " + netErrText(err), err: err})
		return
	}
	var ik *identKey
	if cfg.ident != "" {
		// Before the first line: the server asks as soon as it accepts.
		if k, ok := identKeyOf(nc); ok {
			ik = &k
			addIdent(k, cfg.ident)
		}
	}
	if cfg.tls {
		tc := tls.Client(pollableBase(nc), sharedTLSConfig(cfg))
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			delIdent(ik)
			var ue *untrustedError
			if errors.As(err, &ue) {
				done(nil, nil, &connError{permanent: true, text: ue.Error(), err: err})
				return
			}
			done(nil, nil, &connError{text: "TLS with " + cfg.server + " failed: " + err.Error(), err: err})
			return
		}
		nc = tc
	}
	c := &conn{
		nc:        nc,
		log:       cfg.log,
		trace:     cfg.trace,
		server:    cfg.server,
		lim:       rate.NewLimiter(rate.Limit(cfg.floodRate), cfg.floodBurst),
		pingEvery: cfg.pingEvery,
		pingWait:  cfg.pingWait,
		ident:     ik,
	}
	c.charsets.Store(cfg.charsets)
	r := newRegistrar(c, cfg)
	if p := thePoller(); p != nil && c.makePollable() {
		r.poll(p, parent, deadline, done)
		return
	}
	_ = nc.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = nc.SetDeadline(time.Now()) })
	w, err := r.run()
	stop()
	if err != nil {
		nc.Close()
		delIdent(ik)
		if ctx.Err() != nil && !isConnError(err) {
			err = errRegistrationTime(cfg.server, err)
		}
		done(nil, nil, err)
		return
	}
	_ = nc.SetDeadline(time.Time{})
	done(c, w, nil)
}

// tlsConfigs are the TLS configurations made, by server, checking and
// trusted certificate: a connection keeps its tls.Config (some 470
// bytes), the same for every user of a server but those who trust a
// certificate of their own. Emptied when it holds maxTLSConfigs.
var tlsConfigs struct {
	sync.Mutex
	m map[tlsConfigKey]*tls.Config
}

type tlsConfigKey struct {
	server, trusted  string
	pinned, insecure bool
}

const maxTLSConfigs = 256

// sharedTLSConfig is tlsConfig(cfg), made once for all the connections
// that would get the same.
func sharedTLSConfig(cfg dialConfig) *tls.Config {
	k := tlsConfigKey{server: cfg.server, trusted: string(cfg.tlsTrusted), pinned: cfg.tlsTrusted != nil, insecure: cfg.tlsInsecure}
	tlsConfigs.Lock()
	defer tlsConfigs.Unlock()
	if c := tlsConfigs.m[k]; c != nil {
		return c
	}
	if tlsConfigs.m == nil || len(tlsConfigs.m) >= maxTLSConfigs {
		tlsConfigs.m = map[tlsConfigKey]*tls.Config{}
	}
	c := tlsConfig(cfg.server, cfg.tlsInsecure, bytes.Clone(cfg.tlsTrusted))
	tlsConfigs.m[k] = c
	return c
}

// tlsConfig checks the server's certificate as crypto/tls would, and
// accepts one that fails the check if its SHA-256 fingerprint is the one
// the user trusts. A certificate that is refused is reported with its
// fingerprint, for the user to compare and trust (untrustedError).
// trusted is nil when the user trusts no certificate of their own.
func tlsConfig(server string, insecure bool, trusted []byte) *tls.Config {
	if insecure {
		return &tls.Config{ServerName: server, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}
	}
	return &tls.Config{
		ServerName:         server,
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified below, as crypto/tls does, with the exception
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("the server sent no certificate")
			}
			leaf := cs.PeerCertificates[0]
			opts := x509.VerifyOptions{DNSName: cs.ServerName, Intermediates: x509.NewCertPool()}
			for _, c := range cs.PeerCertificates[1:] {
				opts.Intermediates.AddCert(c)
			}
			_, err := leaf.Verify(opts)
			if err == nil {
				return nil
			}
			fp := sha256.Sum256(leaf.Raw)
			if trusted != nil && bytes.Equal(fp[:], trusted) {
				return nil
			}
			return &untrustedError{server: server, fingerprint: fp[:], why: err, pinned: trusted != nil}
		},
	}
}

// untrustedError is a server certificate refused: no trusted authority
// signed it (or it names another host, or expired) and it is not the one
// the user trusts.
type untrustedError struct {
	server      string
	fingerprint []byte
	why         error
	pinned      bool // the user trusts another certificate for this server
}

func (e *untrustedError) Error() string {
	what := "if it is the server's, trust it: the Trusted TLS certificate field of the registration or of the Configure network command"
	if e.pinned {
		what = "it is not the one you trust for it: if the server changed its certificate, trust the new one (the Trusted TLS certificate field of the registration or of the Configure network command)"
	}
	return fmt.Sprintf("the TLS certificate of %s is not trusted (%v); its SHA-256 fingerprint is %s: %s", e.server, e.why, fingerprintText(e.fingerprint), what)
}

func errRegistrationTime(server string, err error) error {
	return &connError{text: server + " did not complete the registration in time", err: err}
}

func isConnError(err error) bool {
	var ce *connError
	return errors.As(err, &ce)
}

// netErrText is a short text for a dial error.
func netErrText(err error) string {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

// registrar is a registration in progress: CAP negotiation, SASL,
// NICK/USER until the end of the MOTD. feed takes the server's lines one
// by one, from the goroutine that dialled (run) or from the poller
// (poll).
type registrar struct {
	c          *conn
	cfg        dialConfig
	w          *welcome
	nick       string
	tries      int
	advertised map[string]string
	capDone    bool
	registered bool
	saslDone   bool

	// Polled registrations: over is set by the first of the end, a
	// failure, the time-out and the session's end, which reports.
	over atomic.Bool
	p    *poller
	done func(*conn, *welcome, error)
	// mu: the time-out and the session's end may fire while poll sets
	// them up (a dial that took the whole connect_timeout).
	mu         sync.Mutex
	timer      *time.Timer
	stopParent func() bool
}

func newRegistrar(c *conn, cfg dialConfig) *registrar {
	return &registrar{c: c, cfg: cfg, w: &welcome{isupport: map[string]string{}}, nick: cfg.nick, advertised: map[string]string{}}
}

// begin writes the registration's first lines.
func (r *registrar) begin() error {
	user := r.cfg.username
	if user == "" {
		user = "transportd"
	}
	realname := r.cfg.realname
	if realname == "" {
		realname = r.nick
	}
	lines := []ircmsg.Message{
		ircmsg.MakeMessage(nil, "", "CAP", "LS", "302"),
		ircmsg.MakeMessage(nil, "", "NICK", r.nick),
		ircmsg.MakeMessage(nil, "", "USER", user, "0", "*", realname),
	}
	if r.cfg.serverPass != "" {
		// Before anything else, as RFC 1459 asks: some servers read it
		// only as the first line.
		lines = slices.Insert(lines, 0, ircmsg.MakeMessage(nil, "", "PASS", oneLine(r.cfg.serverPass)))
	}
	for _, m := range lines {
		if err := r.c.writeNow(m); err != nil {
			return err
		}
	}
	return nil
}

// run registers, reading on this goroutine.
func (r *registrar) run() (*welcome, error) {
	if err := r.begin(); err != nil {
		return nil, err
	}
	for {
		line, err := r.c.readLine()
		if err != nil {
			return nil, r.lostErr(err)
		}
		if w, err := r.feed(line); err != nil || w != nil {
			return w, err
		}
	}
}

func (r *registrar) lostErr(err error) error {
	return &connError{text: "connection to " + r.cfg.server + " lost during registration: " + netErrText(err), err: err}
}

// poll registers with the poller reading: the lines are written, the
// connection joins the poller's set, and this goroutine returns. done is
// called from another goroutine once registration ended, failed, took
// longer than the deadline, or parent (the session) ended.
func (r *registrar) poll(p *poller, parent context.Context, deadline time.Time, done func(*conn, *welcome, error)) {
	c := r.c
	r.p, r.done = p, done
	c.reg = r
	c.registering.Store(true)
	if err := r.begin(); err != nil {
		r.fail(err)
		return
	}
	r.mu.Lock()
	r.timer = time.AfterFunc(time.Until(deadline), func() {
		r.fail(errRegistrationTime(r.cfg.server, context.DeadlineExceeded))
	})
	r.stopParent = afterFunc(parent, func() {
		r.fail(&connError{text: "connection to " + r.cfg.server + " given up: the session ended", err: context.Canceled})
	})
	r.mu.Unlock()
	if c.viaTLS {
		// crypto/tls may hold bytes it read from the socket with the
		// handshake; the poller hears only of bytes to come.
		registered, err := c.drainTLS(r.pump)
		if registered {
			return
		}
		if err != nil {
			if !isConnError(err) {
				err = r.lostErr(err)
			}
			r.fail(err)
			return
		}
	}
	if err := p.add(c); err != nil {
		r.fail(r.lostErr(err))
	}
}

// regWriteWait bounds a write during a polled registration (writeNow): a
// server that does not read would hold the poller up. The registration's
// lines are a few hundred bytes, which a new socket takes at once; such a
// server also sent some thousand PINGs.
const regWriteWait = 2 * time.Second

// pump feeds the lines in src (the poller's bytes): true once the
// registration ended (finish was called).
func (r *registrar) pump() (bool, error) {
	for {
		line, err := r.c.readLine()
		if errors.Is(err, errWouldBlock) {
			return false, nil
		}
		if err != nil {
			return false, r.lostErr(err)
		}
		w, err := r.feed(line)
		if err != nil {
			return false, err
		}
		if w != nil {
			r.finish(w)
			return true, nil
		}
	}
}

// finish ends a polled registration that succeeded: the connection
// leaves the poller's set until start, with what was read after the
// welcome kept.
func (r *registrar) finish(w *welcome) {
	if !r.over.CompareAndSwap(false, true) {
		return // timed out meanwhile: closed
	}
	r.stop()
	c := r.c
	r.p.remove(c)
	c.reg = nil
	c.registering.Store(false)
	if len(c.src) > 0 {
		c.src = append([]byte(nil), c.src...) // the poller's buffer
	} else {
		c.src = nil
	}
	_ = c.nc.SetWriteDeadline(time.Time{})
	workers.Go(func() { r.done(c, w, nil) })
}

// fail ends a polled registration that failed: the connection is closed.
// Called from the poller, the timer, or when the session ends.
func (r *registrar) fail(err error) {
	if !r.over.CompareAndSwap(false, true) {
		return
	}
	r.stop()
	if r.p != nil {
		r.p.remove(r.c)
	}
	_ = r.c.nc.Close()
	delIdent(r.c.ident)
	workers.Go(func() { r.done(nil, nil, err) })
}

func (r *registrar) stop() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.timer != nil {
		r.timer.Stop()
	}
	if r.stopParent != nil {
		r.stopParent()
	}
}

// feed takes one line of the server's: the welcome once registration
// ended, an error if it failed.
func (r *registrar) feed(line string) (*welcome, error) {
	c, cfg, w := r.c, r.cfg, r.w
	endCap := func() error {
		if r.capDone {
			return nil
		}
		r.capDone = true
		return c.writeNow(ircmsg.MakeMessage(nil, "", "CAP", "END"))
	}
	// Registration reads no tags; parseLine leaves them unparsed.
	msg, err := parseLine(line)
	if err != nil {
		return nil, nil
	}
	if r.registered && !isNumeric(msg.Command) {
		// A server that sends no MOTD end: registration is over.
		c.backlog = append(c.backlog, msg)
		return w, nil
	}
	p := msg.Params
	switch msg.Command {
	case "PING":
		if err := c.writeNow(ircmsg.MakeMessage(nil, "", "PONG", p...)); err != nil {
			return nil, err
		}
	case "CAP":
		if len(p) < 3 {
			return nil, nil
		}
		switch p[1] {
		case "LS":
			for _, tok := range strings.Fields(p[len(p)-1]) {
				name, val, _ := strings.Cut(tok, "=")
				r.advertised[name] = val
			}
			if len(p) >= 4 && p[2] == "*" {
				return nil, nil // more LS lines follow
			}
			var req []string
			for _, cp := range wantCaps {
				if _, ok := r.advertised[cp]; ok {
					req = append(req, cp)
				}
			}
			if _, ok := r.advertised["sasl"]; ok && cfg.saslPass != "" {
				req = append(req, "sasl")
			}
			if len(req) == 0 {
				if cfg.saslPass != "" {
					return nil, &connError{permanent: true, auth: true, text: cfg.server + " does not offer SASL: choose NickServ or no authentication"}
				}
				if err := endCap(); err != nil {
					return nil, err
				}
				return nil, nil
			}
			if err := c.writeNow(ircmsg.MakeMessage(nil, "", "CAP", "REQ", strings.Join(req, " "))); err != nil {
				return nil, err
			}
		case "ACK":
			for _, tok := range strings.Fields(p[len(p)-1]) {
				if strings.HasPrefix(tok, "-") {
					w.caps.del(tok[1:])
					return nil, nil
				}
				w.caps.add(tok)
			}
			if w.caps.has("sasl") && cfg.saslPass != "" {
				if err := c.writeNow(ircmsg.MakeMessage(nil, "", "AUTHENTICATE", "PLAIN")); err != nil {
					return nil, err
				}
				return nil, nil
			}
			if cfg.saslPass != "" {
				return nil, &connError{permanent: true, auth: true, text: cfg.server + " refused SASL: choose NickServ or no authentication"}
			}
			if err := endCap(); err != nil {
				return nil, err
			}
		case "NAK":
			if cfg.saslPass != "" {
				return nil, &connError{permanent: true, auth: true, text: cfg.server + " refused SASL: choose NickServ or no authentication"}
			}
			if err := endCap(); err != nil {
				return nil, err
			}
		}
	case "AUTHENTICATE":
		if len(p) == 0 || p[0] != "+" {
			return nil, nil
		}
		login := cfg.saslUser
		if login == "" {
			login = r.nick
		}
		for _, chunk := range ircutils.EncodeSASLResponse([]byte(login + "\x00" + login + "\x00" + cfg.saslPass)) {
			if err := c.writeNow(ircmsg.MakeMessage(nil, "", "AUTHENTICATE", chunk)); err != nil {
				return nil, err
			}
		}
	case "900": // RPL_LOGGEDIN
		if len(p) >= 3 {
			w.account = p[2]
		}
	case "903": // RPL_SASLSUCCESS
		r.saslDone = true
		if err := endCap(); err != nil {
			return nil, err
		}
	case "902", "904", "905", "906", "908": // nick locked, SASL failed, too long, aborted, mechanisms
		return nil, &connError{permanent: true, auth: true, text: cfg.server + " refused the SASL login: " + plainText(last(p))}
	case "433", "436", "437": // nick in use, collision, temporarily unavailable
		if r.registered {
			return nil, nil
		}
		r.tries++
		if r.tries > nickTries {
			return nil, &connError{permanent: true, nickInUse: true, text: "the nick " + cfg.nick + " is already in use on " + cfg.server}
		}
		r.nick += "_"
		if err := c.writeNow(ircmsg.MakeMessage(nil, "", "NICK", r.nick)); err != nil {
			return nil, err
		}
	case "432": // erroneous nickname
		if r.registered {
			return nil, nil
		}
		return nil, &connError{permanent: true, text: cfg.server + " refuses the nick " + r.nick + ": " + plainText(last(p))}
	case "464": // password incorrect
		return nil, &connError{permanent: true, auth: cfg.serverPass != "", text: cfg.server + " refused the connection: " + plainText(last(p))}
	case "465": // banned
		return nil, &connError{permanent: true, text: cfg.server + " refused the connection: " + plainText(last(p))}
	case "ERROR":
		text := cfg.server + " closed the connection: " + plainText(last(p))
		if cfg.serverPass != "" && !r.registered {
			// Many servers say only "Access denied" to a wrong password.
			text += " (is the server password right?)"
		}
		return nil, &connError{text: text}
	case "001":
		if cfg.saslPass != "" && !r.saslDone {
			// A server without CAP registers us without SASL.
			return nil, &connError{permanent: true, auth: true, text: cfg.server + " does not offer SASL: choose NickServ or no authentication"}
		}
		r.registered = true
		if len(p) > 0 {
			w.nick = strings.Clone(p[0])
		}
		// "Welcome to the Network nick!user@host"
		if f := strings.Fields(last(p)); len(f) > 0 {
			if nuh, err := ircmsg.ParseNUH(f[len(f)-1]); err == nil && nuh.Name == w.nick && nuh.Host != "" {
				w.user, w.host = strings.Clone(nuh.User), strings.Clone(nuh.Host)
			}
		}
		if !r.capDone {
			r.capDone = true // a server without CAP
		}
	case "005":
		parseISupport(p, w.isupport)
	case "376", "422": // end of MOTD, no MOTD
		if r.registered {
			return w, nil
		}
	}
	return nil, nil
}

func isNumeric(cmd string) bool {
	return len(cmd) == 3 && cmd[0] >= '0' && cmd[0] <= '9' && cmd[1] >= '0' && cmd[1] <= '9' && cmd[2] >= '0' && cmd[2] <= '9'
}

func last(p []string) string {
	if len(p) == 0 {
		return ""
	}
	return p[len(p)-1]
}

// usedISupport are the ISUPPORT tokens the transport reads; others are
// not kept (a server sends dozens, for every connection).
var usedISupport = map[string]bool{
	"CASEMAPPING": true, "CHANMODES": true, "CHANTYPES": true, "CHATHISTORY": true,
	"MODES": true, "MONITOR": true, "PREFIX": true, "STATUSMSG": true, "TOPICLEN": true,
}

// parseISupport adds the tokens of a 005 line (params: me, tokens...,
// text) that the transport uses to m; "-TOKEN" removes one. The strings
// are copied, so that the line is not kept alive with them.
func parseISupport(p []string, m map[string]string) {
	if len(p) < 3 {
		return
	}
	for _, tok := range p[1 : len(p)-1] {
		if strings.HasPrefix(tok, "-") {
			delete(m, tok[1:])
			continue
		}
		k, v, _ := strings.Cut(tok, "=")
		if usedISupport[k] {
			m[strings.Clone(k)] = strings.Clone(unescapeISupport(v))
		}
	}
}

// isupports holds, per server, the ISUPPORT tokens its last connection
// registered with: the connections of many users to one server share
// them (some 500 bytes each) while they are the same. Shared features
// are never written: a later 005 makes new ones.
var isupports struct {
	sync.Mutex
	by map[string]*features
}

// shareISupport returns the features held for server if their tokens
// equal m, else holds m's (m read-only from now on) and returns them.
func shareISupport(server string, m map[string]string) *features {
	isupports.Lock()
	defer isupports.Unlock()
	if held, ok := isupports.by[server]; ok && maps.Equal(held.m, m) {
		return held
	}
	if isupports.by == nil {
		isupports.by = map[string]*features{}
	}
	f := newFeatures(m)
	isupports.by[server] = f
	return f
}

func unescapeISupport(v string) string {
	if !strings.Contains(v, `\x`) {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+3 < len(v) && v[i+1] == 'x' {
			if n, err := strconv.ParseUint(v[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// readMsg reads and parses one line. A line whose tags do not parse
// loses them rather than being dropped (parseLine).
func (c *conn) readMsg() (inLine, error) {
	for {
		if len(c.backlog) > 0 {
			m := c.backlog[0]
			c.backlog = c.backlog[1:]
			if len(c.backlog) == 0 {
				c.backlog = nil // let the array go
			}
			return m, nil
		}
		b, err := c.nextLine()
		if err != nil {
			return inLine{}, err
		}
		// Only a polled connection: its keepalive is the arrival of a
		// line (readAt); the reader goroutine's is the line it reads.
		if c.polled && c.keepalive(b) {
			continue
		}
		m, err := parseLine(c.lineString(b))
		if err != nil {
			continue
		}
		return m, nil
	}
}

// keepalive answers the server's PING and drops its PONG to the
// connection's keepalive PING, without parsing either (keepaliveLine);
// true if b was one of them.
func (c *conn) keepalive(b []byte) bool {
	drop, pong := keepaliveLine(b)
	if !drop {
		return false
	}
	if c.trace {
		c.log.Debug("irc <-", "irc_server", c.server, "line", redactLine(string(b)))
	}
	if pong != nil {
		_ = c.sendUrgentLine(pong)
	}
	return true
}

// keepaliveToken starts the token of the connection's keepalive PINGs
// (then the Unix time).
const keepaliveToken = "transportd-"

// keepaliveLine recognises, without parsing the line, the two lines an
// idle connection gets: the server's PONG to a keepalive PING (its last
// parameter starts with keepaliveToken), which nothing needs but its
// arrival, and the server's PING, for which it returns the PONG to write
// (the PING's parameters as they came). Parsed by ircmsg, each made a
// tags map (server-time), a message and an event for the session's
// drain: with 200 idle users, some 300 KB of garbage every minute,
// resident until the next trim, a kilobyte a user in the idle memory
// figure. Hand-written for that reason only, and strict: a line with
// anything unusual (no command where expected, two spaces, a byte that
// is not printable ASCII, a lower-case command) is left to ircmsg, and
// FuzzKeepaliveLine holds what it recognises to ircmsg's reading of it.
func keepaliveLine(line []byte) (drop bool, pong []byte) {
	if bytes.IndexByte(line, 0) >= 0 || bytes.IndexByte(line, '\r') >= 0 {
		return false, nil // ircmsg refuses the line
	}
	rest := line
	if len(rest) > 0 && rest[0] == '@' {
		i := bytes.IndexByte(rest, ' ')
		if i < 0 {
			return false, nil
		}
		rest = rest[i+1:]
	}
	if len(rest) > 0 && rest[0] == ':' {
		i := bytes.IndexByte(rest, ' ')
		if i < 0 {
			return false, nil
		}
		rest = rest[i+1:]
	}
	var cmd string
	switch {
	case bytes.HasPrefix(rest, []byte("PING ")):
		cmd = "PING"
	case bytes.HasPrefix(rest, []byte("PONG ")):
		cmd = "PONG"
	default:
		return false, nil
	}
	params := rest[5:]
	if len(params) == 0 || params[0] == ' ' || params[len(params)-1] == ' ' || bytes.Contains(params, []byte("  ")) {
		return false, nil
	}
	for _, ch := range params {
		if ch < 0x20 || ch > 0x7e {
			return false, nil
		}
	}
	if cmd == "PING" {
		pong = make([]byte, 0, len(params)+7)
		pong = append(pong, "PONG "...)
		pong = append(pong, params...)
		return true, append(pong, "\r\n"...)
	}
	last := params
	if i := bytes.Index(params, []byte(" :")); i >= 0 {
		last = params[i+2:]
	} else if params[0] == ':' {
		last = params[1:]
	} else if i := bytes.LastIndexByte(params, ' '); i >= 0 {
		last = params[i+1:]
	}
	return bytes.HasPrefix(last, []byte(keepaliveToken)), nil
}

// keepalivePing is the line of a keepalive PING.
func keepalivePing() []byte {
	b := append(make([]byte, 0, 32), "PING "+keepaliveToken...)
	b = strconv.AppendInt(b, time.Now().Unix(), 10)
	return append(b, "\r\n"...)
}

// errSocketEmpty: a polled connection's socket has nothing to read now.
// A net.Error, temporary, so that crypto/tls keeps its state (see
// pollableConn).
var errSocketEmpty error = socketEmpty{}

type socketEmpty struct{}

func (socketEmpty) Error() string   { return "nothing to read yet" }
func (socketEmpty) Timeout() bool   { return true }
func (socketEmpty) Temporary() bool { return true }

// errWouldBlock: the poller's bytes are all taken.
var errWouldBlock = errors.New("no more bytes read")

// errLineTooLong: a server sent more than maxRead bytes without a newline.
var errLineTooLong = fmt.Errorf("line longer than %d bytes", maxRead)

// readLine reads one line.
func (c *conn) readLine() (string, error) {
	b, err := c.nextLine()
	if err != nil {
		return "", err
	}
	return c.lineString(b), nil
}

// lineString decodes a line read (the network's charset), for the trace
// too.
func (c *conn) lineString(b []byte) string {
	line := string(c.charsets.Load().decode(b))
	if c.trace {
		c.log.Debug("irc <-", "irc_server", c.server, "line", redactLine(line))
	}
	return line
}

// nextLine cuts the next line from src, reading more (into rbuf) when the
// connection is not polled. The returned bytes are valid until the next
// call.
//
// Written by hand rather than with ircreader: ircreader keeps a buffer
// per connection (512 bytes or more, for good), while a polled connection
// needs one only for a line cut in two by a read; lines come straight
// from the poller's buffer, shared by all connections.
func (c *conn) nextLine() ([]byte, error) {
	for {
		if i := bytes.IndexByte(c.src, '\n'); i >= 0 {
			line := c.src[:i]
			c.src = c.src[i+1:]
			if len(c.part) > 0 {
				line = append(c.part, line...)
				c.part = nil
			}
			if n := len(line); n > 0 && line[n-1] == '\r' {
				line = line[:n-1]
			}
			return line, nil
		}
		if len(c.src) > 0 {
			if len(c.part)+len(c.src) > maxRead {
				return nil, errLineTooLong
			}
			c.part = append(c.part, c.src...)
			c.src = nil
		}
		if c.polled {
			return nil, errWouldBlock
		}
		if c.rbuf == nil {
			c.rbuf = make([]byte, 2048)
		}
		n, err := c.nc.Read(c.rbuf)
		if n == 0 && err != nil {
			return nil, err
		}
		c.src = c.rbuf[:n]
	}
}

// serialize turns a message into a line, refusing anything the server
// would not read as this one message.
func serialize(m ircmsg.Message) ([]byte, error) {
	b, err := m.LineBytesStrict(true, 0)
	if err != nil {
		return nil, err
	}
	body := b
	if body[0] == '@' {
		body = body[strings.IndexByte(string(body), ' ')+1:]
	}
	if len(body) > maxLine {
		return nil, errLineLong
	}
	return b, nil
}

// traceOut logs a line written, for the wire trace. Lines are queued
// already encoded in the network's charset: the trace shows them decoded
// back, as the server's users read them, not as bytes the log's UTF-8
// would turn into replacement characters.
func (c *conn) traceOut(b []byte) {
	c.log.Debug("irc ->", "irc_server", c.server, "line", redactLine(strings.TrimRight(string(c.charsets.Load().decode(b)), "\r\n")))
}

// writeNow writes a line synchronously (registration only).
func (c *conn) writeNow(m ircmsg.Message) error {
	b, err := serialize(m)
	if err != nil {
		return err
	}
	if c.trace {
		c.traceOut(b)
	}
	b = c.charsets.Load().encode(b)
	if c.reg != nil && c.reg.p != nil {
		_ = c.nc.SetWriteDeadline(time.Now().Add(regWriteWait))
	}
	if _, err := c.nc.Write(b); err != nil {
		return &connError{text: "writing to " + c.server + ": " + netErrText(err), err: err}
	}
	return nil
}

// redactLine hides passwords from the wire trace.
func redactLine(line string) string {
	m, err := ircmsg.ParseLine(line)
	if err != nil {
		return line
	}
	switch m.Command {
	case "AUTHENTICATE":
		if len(m.Params) > 0 && m.Params[0] != "+" && m.Params[0] != "PLAIN" {
			return "AUTHENTICATE <redacted>"
		}
	case "PASS", "OPER":
		return m.Command + " <redacted>"
	case "PRIVMSG", "NS", "NICKSERV":
		// Anything for NickServ may hold a password (IDENTIFY, REGISTER,
		// SET PASSWORD...).
		if m.Command != "PRIVMSG" {
			return m.Command + " <redacted>"
		}
		if len(m.Params) == 2 && (strings.EqualFold(m.Params[0], "NickServ") || !strings.ContainsAny(m.Params[0][:min(1, len(m.Params[0]))], "#&!+") && loginText(m.Params[1])) {
			return "PRIVMSG " + m.Params[0] + " :<redacted>"
		}
	}
	return line
}

// loginText reports whether a message to a service (not a channel) logs in: IDENTIFY
// (NickServ and the like), AUTH (QuakeNet's Q, in after-connect
// commands), LOGIN.
func loginText(text string) bool {
	w, _, _ := strings.Cut(strings.TrimSpace(text), " ")
	switch strings.ToUpper(w) {
	case "IDENTIFY", "AUTH", "LOGIN":
		return true
	}
	return false
}

// start starts reading. onLine is called for every line in order;
// with wait false it must not block, and returns false if it cannot take
// the line now (it is offered again with wait true, from a goroutine).
// onClose is called once, when the connection is gone, with the reason.
// TCP connections, plain or TLS, are read by the poller, without a
// goroutine; others (where there is no poller) by a goroutine of their
// own. Writers come and go with the lines to write.
func (c *conn) start(onLine func(m inLine, wait bool) bool, onClose func(error)) {
	c.onLine, c.onClose = onLine, onClose
	if p := thePoller(); p != nil && (c.polled || c.makePollable()) {
		c.rbuf = nil // src may still hold lines read into it
		c.readAt.Store(monoNow())
		go c.catchUp(p) // what registration read, then the poller
		return
	}
	go c.reader()
}

// makePollable readies a TCP connection, plain or TLS, for the poller:
// false for any other.
func (c *conn) makePollable() bool {
	var raw syscall.RawConn
	switch nc := c.nc.(type) {
	case *net.TCPConn:
		c.nc, raw = pollableTCP(nc)
	case *tls.Conn:
		if pc, ok := nc.NetConn().(*pollableConn); ok {
			raw, c.viaTLS = pc.raw, true
			pc.polled.Store(true)
		}
	}
	if raw == nil {
		return false
	}
	c.raw, c.polled = raw, true
	return true
}

// readPolled reads what a polled connection has, without waiting:
// errSocketEmpty when there is nothing. A TLS connection may return
// bytes crypto/tls read from the socket earlier (a record holds more than
// one read takes): it is read until errSocketEmpty, or the poller, which
// hears only of bytes arriving on the socket, would never be told of
// them.
func (c *conn) readPolled(b []byte) (int, error) {
	if c.viaTLS {
		return c.nc.Read(b)
	}
	return readNow(c.raw, b)
}

var epoch = time.Now()

// monoNow is the connections' and networks' clock: monotonic nanoseconds
// since epoch, never 0. Eight bytes of every connection where a
// time.Time is 24.
func monoNow() int64 { return int64(time.Since(epoch)) + 1 }

// monoSince is how long ago a reading of the clock was: forever for 0
// (never).
func monoSince(t int64) time.Duration {
	if t == 0 {
		return math.MaxInt64
	}
	return time.Duration(monoNow() - t)
}

// deliver hands a line on; PINGs are answered here.
func (c *conn) deliver(m inLine, wait bool) bool {
	if m.Command == "PING" {
		_ = c.sendUrgent(ircmsg.MakeMessage(nil, "", "PONG", m.Params...))
		return true
	}
	return c.onLine(m, wait)
}

// pump hands on the lines buffered (backlog, c.r, src) until src is
// used up. It returns false if a line could not be taken without
// waiting (then stalled); an error if the server sent a line too long.
func (c *conn) pump(wait bool) (bool, error) {
	if c.stalled != nil {
		if !c.deliver(*c.stalled, wait) {
			return false, nil
		}
		c.stalled = nil
	}
	for {
		m, err := c.readMsg()
		if errors.Is(err, errWouldBlock) {
			return true, nil
		}
		if err != nil {
			return true, err
		}
		if !c.deliver(m, wait) {
			c.stalled = &m
			return false, nil
		}
	}
}

// catchUp hands on, waiting for the session, what was read and not yet
// taken, then puts the connection (back) in the poller's set.
func (c *conn) catchUp(p *poller) {
	_, err := c.pump(true)
	c.src = nil
	if err == nil && c.viaTLS {
		_, err = c.drainTLS(func() (bool, error) {
			_, err := c.pump(true)
			return false, err
		})
	}
	if err == nil {
		err = p.add(c)
	}
	if err != nil {
		c.lost(err)
	}
}

// drainTLS hands pump what a TLS connection can give without waiting
// (see readPolled), before the poller reads it: the session's lines
// (catchUp), or a registration's (registrar.poll). stopped: pump took
// the connection out of this (a registration ended), src as it left it.
func (c *conn) drainTLS(pump func() (stop bool, err error)) (stopped bool, err error) {
	buf := make([]byte, 4096)
	for {
		n, err := c.readPolled(buf)
		if n > 0 {
			c.readAt.Store(monoNow())
			c.src = buf[:n]
			stop, perr := pump()
			if stop {
				return true, nil
			}
			c.src = nil
			if perr != nil {
				return false, perr
			}
		}
		if errors.Is(err, errSocketEmpty) {
			return false, nil
		}
		if err != nil {
			return false, err
		}
	}
}

// lost closes a polled connection that failed, and tells the session.
func (c *conn) lost(err error) {
	if r := c.reg; r != nil {
		if _, ok := err.(*panicError); !ok {
			err = r.lostErr(err)
		}
		r.fail(err)
		return
	}
	c.closeWith(&connError{text: "connection to " + c.server + " lost: " + netErrText(err), err: err})
}

// notifyClosed calls onClose once, from a goroutine of its own: it may
// wait for the session, and is called from the poller and from the
// session itself (close).
func (c *conn) notifyClosed(err error) {
	c.closedOnce.Do(func() { go c.onClose(err) })
}

// pingCheck is a polled connection's keepalive, called by the poller's
// sweep: after pingEvery without a line, a PING; pingWait without an
// answer (any line), the end.
func (c *conn) pingCheck() {
	if c.isClosed() || c.pingEvery <= 0 || c.registering.Load() {
		return // registration has its own deadline
	}
	now, last := monoNow(), c.readAt.Load()
	if at := c.pingAt.Load(); at != 0 {
		if last < at {
			if time.Duration(now-at) >= c.pingWait {
				c.closeWith(&connError{text: fmt.Sprintf("no answer from %s for %v (ping timeout)", c.server, c.pingEvery+c.pingWait)})
			}
			return
		}
		c.pingAt.Store(0) // answered
	}
	if time.Duration(now-last) < c.pingEvery {
		return
	}
	c.pingAt.Store(now)
	_ = c.sendUrgentLine(keepalivePing())
}

// reader reads a connection the poller does not.
func (c *conn) reader() {
	onClose := c.onClose
	pinged := false
	for {
		wait := c.pingEvery
		if pinged {
			wait = c.pingWait
		}
		_ = c.nc.SetReadDeadline(time.Now().Add(wait))
		msg, err := c.readMsg()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !c.isClosed() {
				if pinged {
					c.close()
					onClose(&connError{text: fmt.Sprintf("no answer from %s for %v (ping timeout)", c.server, c.pingEvery+c.pingWait)})
					return
				}
				pinged = true
				_ = c.sendUrgentLine(keepalivePing())
				continue
			}
			c.close()
			onClose(&connError{text: "connection to " + c.server + " lost: " + netErrText(err), err: err})
			return
		}
		pinged = false
		c.deliver(msg, true)
	}
}

// enqueue adds lines to the queue and makes sure a writer runs. All of
// them or none: a message is never queued in part. held: the session's
// drain queues them and calls flush when it has nothing else to do, so
// that a few lines are written without a writer goroutine (see flush);
// a writer starts anyway once maxWriteLines wait.
func (c *conn) enqueue(urgent, held bool, lines ...outLine) error {
	if cs := c.charsets.Load(); cs != nil {
		for i := range lines {
			lines[i].b = cs.encode(lines[i].b)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.isClosed() {
		return errClosed
	}
	if urgent {
		if c.nUrgent+len(lines) > prioQueue {
			return errQueueFull
		}
		c.nUrgent += len(lines)
		for i := range lines {
			lines[i].urgent = true
		}
		if c.kick != nil {
			select {
			case c.kick <- struct{}{}:
			default:
			}
		}
	} else if len(c.q)-c.nUrgent+len(lines) > outQueue {
		return errQueueFull
	}
	c.q = append(c.q, lines...)
	if !c.writing && (!held || len(c.q) >= maxWriteLines) {
		c.writing = true
		workers.Go(c.writer)
	}
	return nil
}

// flush writes the lines the session's drain queued held, from the
// drain itself when the socket takes them at once; what it does not take,
// or what the flood limiter holds back, is left to a writer goroutine.
// Relaying a message toward IRC handed it from the drain to a writer
// goroutine, one more wake-up of another goroutine per message than
// writing it here. Only a plain connection read by the poller writes
// without waiting (a TLS connection cannot write part of a record and
// carry on): the others start a writer as before.
func (c *conn) flush() {
	c.mu.Lock()
	if c.writing || len(c.q) == 0 || c.isClosed() {
		c.mu.Unlock()
		return
	}
	c.writing = true
	if c.raw == nil || c.viaTLS || !(c.q[0].urgent || c.q[0].paid || c.lim.Allow()) {
		c.mu.Unlock()
		workers.Go(c.writer)
		return
	}
	batch := c.popBatchLocked()
	c.mu.Unlock()
	n, err := c.writeNoWait(batch)
	// As the writer: a line may have reached the server once the write
	// got past its first byte; a line written in part stays first.
	off, k := 0, 0
	for ; k < len(batch) && off+len(batch[k].b) <= n; k++ {
		off += len(batch[k].b)
		batch[k].grp.settle(true)
	}
	if err != nil {
		for _, l := range batch[k:] {
			l.grp.settle(n > off)
			off += len(l.b)
		}
		c.close()
		c.dropQueued()
		return
	}
	rest := batch[k:]
	if len(rest) > 0 {
		rest[0].b = rest[0].b[n-off:]
		for i := range rest {
			rest[i].paid = true
		}
	}
	c.mu.Lock()
	for _, l := range rest {
		if l.urgent {
			c.nUrgent++
		}
	}
	if len(rest) > 0 {
		c.q = append(rest, c.q...)
	}
	closed := c.isClosed()
	more := len(c.q) > 0 && !closed
	if !more && !closed {
		c.writing = false
	}
	c.mu.Unlock()
	switch {
	case closed:
		c.dropQueued()
	case more:
		workers.Go(c.writer)
	}
}

// writeNoWait writes lines with one system call without waiting for
// room in the socket: n may be short of them, and 0 when the socket is
// full.
func (c *conn) writeNoWait(batch []outLine) (int, error) {
	var arr [maxWriteLines][]byte
	bufs := arr[:0]
	for _, l := range batch {
		bufs = append(bufs, l.b)
		if c.trace {
			c.traceOut(l.b)
		}
	}
	return writeNow(c.raw, bufs)
}

// head returns the line to write next; ok is false when there is none,
// and the writer then ends (under the lock, so that a line queued
// meanwhile starts a new one).
func (c *conn) head() (l outLine, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.q) == 0 || c.isClosed() {
		c.writing = false
		return outLine{}, false
	}
	return c.q[0], true
}

// writer writes queued lines in order until there are none;
// flood-limited lines wait for the limiter, urgent ones never do.
func (c *conn) writer() {
	for {
		l, ok := c.head()
		if !ok {
			if c.isClosed() {
				c.dropQueued()
			}
			return
		}
		if !l.urgent && !l.paid {
			if d := c.lim.Reserve().Delay(); d > 0 && !c.waitFlood(d) {
				c.dropQueued()
				return
			}
		}
		batch := c.popBatch()
		var n int
		var err error
		if len(batch) == 1 {
			n, err = c.write(batch[0].b)
		} else {
			n, err = c.writeBatch(batch)
		}
		// A line may have reached the server if the write got past its
		// first byte.
		off := 0
		for _, l := range batch {
			l.grp.settle(n > off)
			off += len(l.b)
		}
		if err != nil {
			c.close()
			c.dropQueued()
			return
		}
	}
}

// Lines queued together are written with one system call, up to
// maxWriteLines or maxWriteBytes: during a burst a write per line cost
// more CPU than the rest of relaying the message. Larger batches were
// slower end to end: InspIRCd relayed a burst written 64 lines at a time
// at ~4500 lines/s, 8 at a time at ~7700 (one at a time: ~7000).
const (
	maxWriteLines = 8
	maxWriteBytes = 4096
)

// popBatch removes the head line (the limiter let it through) and the
// lines behind it that may go at once: urgent ones, and others while the
// flood limiter has tokens.
func (c *conn) popBatch() []outLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.popBatchLocked()
}

func (c *conn) popBatchLocked() []outLine {
	if len(c.q) == 0 {
		return nil
	}
	k, size := 1, len(c.q[0].b)
	for k < len(c.q) && k < maxWriteLines && size+len(c.q[k].b) <= maxWriteBytes {
		if !c.q[k].urgent && !c.q[k].paid && !c.lim.Allow() {
			break
		}
		size += len(c.q[k].b)
		k++
	}
	batch := make([]outLine, k)
	copy(batch, c.q[:k])
	for _, l := range batch {
		if l.urgent {
			c.nUrgent--
		}
	}
	clear(c.q[:k])
	c.q = c.q[k:]
	if len(c.q) == 0 {
		c.q = nil // let the backing array go
	}
	return batch
}

// writeBatch writes several lines with one system call (writev).
func (c *conn) writeBatch(batch []outLine) (int, error) {
	bufs := make(net.Buffers, len(batch))
	for i, l := range batch {
		bufs[i] = l.b
		if c.trace {
			c.traceOut(l.b)
		}
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if bw, ok := c.nc.(interface{ WriteBuffers([][]byte) (int, error) }); ok {
		return bw.WriteBuffers(bufs) // fdConn: one writev
	}
	n, err := bufs.WriteTo(c.nc)
	return int(n), err
}

// waitFlood waits d for the flood limiter, writing the urgent lines
// queued behind the head meanwhile; false if the connection closed.
func (c *conn) waitFlood(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	done := c.doneChan()
	c.mu.Lock()
	if c.kick == nil {
		c.kick = make(chan struct{}, 1)
	}
	kick := c.kick
	if c.nUrgent > 0 {
		kick <- struct{}{} // queued before the channel was
	}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.kick = nil
		c.mu.Unlock()
	}()
	for {
		select {
		case <-t.C:
			return true
		case <-done:
			return false
		case <-kick:
			c.mu.Lock()
			var urgent []outLine
			kept := c.q[:min(1, len(c.q))]
			for _, l := range c.q[len(kept):] {
				if l.urgent {
					urgent = append(urgent, l)
				} else {
					kept = append(kept, l)
				}
			}
			clear(c.q[len(kept):])
			c.q = kept
			c.nUrgent -= len(urgent)
			c.mu.Unlock()
			for _, l := range urgent {
				n, err := c.write(l.b)
				l.grp.settle(n > 0)
				if err != nil {
					c.close()
					return false
				}
			}
		}
	}
}

// write writes one line; n > 0 means some of it may have reached the
// server, even with an error.
func (c *conn) write(b []byte) (n int, err error) {
	if c.trace {
		c.traceOut(b)
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	return c.nc.Write(b)
}

// dropQueued empties the queue of a closed connection, telling the
// groups their remaining lines were never written.
func (c *conn) dropQueued() {
	c.mu.Lock()
	lines := c.q
	c.q, c.nUrgent = nil, 0
	c.writing = false
	c.mu.Unlock()
	for _, l := range lines {
		l.grp.settle(false)
	}
}

// send queues a line behind the flood limiter.
func (c *conn) send(m ircmsg.Message) error {
	b, err := serialize(m)
	if err != nil {
		return err
	}
	return c.enqueue(false, false, outLine{b: b})
}

// sendGroup queues serialised lines as one message, behind the flood
// limiter, all or none; done is called once every line was written or
// dropped (see lineGroup). When sendGroup returns an error, nothing was
// queued and done is never called.
func (c *conn) sendGroup(lines [][]byte, done func(written int)) error {
	if len(lines) == 0 {
		return nil
	}
	g := &lineGroup{left: len(lines), done: done}
	out := make([]outLine, len(lines))
	for i, b := range lines {
		out[i] = outLine{b: b, grp: g}
	}
	return c.enqueue(false, true, out...)
}

// sendUrgent queues a line that skips the flood limiter (PONG, PING,
// QUIT) and writes it at once when the socket takes it (flush). A
// writer goroutine for each used to write it: with 200 users idle,
// every keepalive round (our PINGs after a silent minute, the answers
// to the server's) started some 200 writers, whose stacks and garbage
// stayed resident until the next trim.
func (c *conn) sendUrgent(m ircmsg.Message) error {
	b, err := serialize(m)
	if err != nil {
		return err
	}
	return c.sendUrgentLine(b)
}

// sendUrgentLine is sendUrgent of a line already serialised.
func (c *conn) sendUrgentLine(b []byte) error {
	if err := c.enqueue(true, true, outLine{b: b}); err != nil {
		return err
	}
	c.flush()
	return nil
}

// queued is how many lines wait for the flood limiter.
func (c *conn) queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.q) - c.nUrgent
}

func (c *conn) isClosed() bool { return c.closed.Load() }

// doneChan returns a channel closed once the connection is.
func (c *conn) doneChan() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.closed.Load() {
			close(c.done)
		}
	}
	return c.done
}

// close closes the connection. Lines still queued are dropped by the
// writer, or here when none runs.
func (c *conn) close() { c.closeWith(nil) }

// closeWith is close telling the session why (a polled connection's).
// The session hears of it once the connection is marked closed.
func (c *conn) closeWith(why error) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed.Store(true)
		if c.done != nil {
			close(c.done)
		}
		c.mu.Unlock()
		if c.polled {
			if p := thePoller(); p != nil {
				p.remove(c)
			}
			// The reader learns of a close by its read failing; a
			// polled connection closed here (a failed write, the
			// session) is not read any more.
			if why == nil {
				why = &connError{text: "connection to " + c.server + " lost: closed", err: net.ErrClosed}
			}
			c.notifyClosed(why)
		}
		_ = c.nc.Close()
		delIdent(c.ident)
	})
	c.mu.Lock()
	idle := !c.writing
	c.mu.Unlock()
	if idle {
		c.dropQueued()
	}
}

// quit says goodbye and closes, waiting at most wait for the server to
// close the connection after reading QUIT.
func (c *conn) quit(reason string, wait time.Duration) {
	if err := c.sendUrgent(ircmsg.MakeMessage(nil, "", "QUIT", reason)); err == nil {
		t := time.NewTimer(wait)
		select {
		case <-c.doneChan():
		case <-t.C:
		}
		t.Stop()
	}
	c.close()
}
