package irc

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ergochat/irc-go/ircmsg"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// Test doubles: a fake IRC server on a real loopback listener, and a
// sink that records what the session tells core.

const wait = 5 * time.Second

// fakeServer is a scriptable IRC server. It registers clients by itself
// (CAP, SASL PLAIN, NICK/USER with 433 for taken nicks) and answers JOIN
// and PRIVMSG the way a server with echo-message does; tests see every
// line through conn.expect and push lines with conn.send.
type fakeServer struct {
	t        testing.TB
	ln       net.Listener
	caps     []string // advertised
	sasl     string   // accepted SASL password ("" = no SASL)
	taken    map[string]bool
	names    map[string]string // channel → extra NAMES entries
	topic    map[string]string
	history  map[string][]string // channel → lines sent in a chathistory batch
	banned   map[string]bool     // channels that answer JOIN with 474
	isupport string
	// afterWelcome: lines sent right after the end of the MOTD, in the
	// same write (and so, over TLS, the same record).
	afterWelcome string
	conns        chan *fakeConn
	// readHold, while a test holds it, stops the connections' reading
	// (their sockets then fill up).
	readHold sync.Mutex
	// holdWelcome, when set, holds every registration's welcome until it
	// is closed (a server looking the client up); held is told of each
	// connection held.
	holdWelcome chan struct{}
	held        chan *fakeConn
	mu          sync.Mutex
	msgid       int
}

func newFakeServer(t testing.TB, caps ...string) *fakeServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveFake(t, ln, caps)
}

// newFakeTLSServer is a fakeServer on TLS, with a certificate of its own
// (sessions need tls_insecure: fakeTLS).
func newFakeTLSServer(t testing.TB, caps ...string) *fakeServer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	// Full records from the first byte (16 KB, as InspIRCd's TLS
	// modules write), not Go's small first ones: a record then holds more
	// than one read of the client takes.
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
		DynamicRecordSizingDisabled: true})
	if err != nil {
		t.Fatal(err)
	}
	return serveFake(t, ln, caps)
}

// fakeTLS are the defaults for a session of a newFakeTLSServer.
var fakeTLS = map[string]string{dTLS: "true", dTLSInsecure: "true"}

func serveFake(t testing.TB, ln net.Listener, caps []string) *fakeServer {
	s := &fakeServer{t: t, ln: ln, caps: caps, taken: map[string]bool{}, names: map[string]string{},
		topic: map[string]string{}, history: map[string][]string{}, banned: map[string]bool{},
		isupport: "CHANTYPES=#& PREFIX=(qaohv)~&@%+ CASEMAPPING=rfc1459 STATUSMSG=@+ CHANMODES=b,k,l,imnpst TOPICLEN=300",
		conns:    make(chan *fakeConn, 16)}
	t.Cleanup(func() { ln.Close() })
	go s.accept()
	return s
}

// set changes the server's settings (names, topic, banned, taken, sasl) while
// connections may read them.
func (s *fakeServer) set(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

func (s *fakeServer) port() int { return s.ln.Addr().(*net.TCPAddr).Port }

func (s *fakeServer) accept() {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		fc := &fakeConn{s: s, c: c, r: bufio.NewReader(c), lines: make(chan ircmsg.Message, 1000), caps: map[string]bool{}}
		go fc.serve()
	}
}

// nextConn waits for a client to finish registering.
func (s *fakeServer) nextConn() *fakeConn {
	s.t.Helper()
	select {
	case c := <-s.conns:
		return c
	case <-time.After(wait):
		s.t.Fatal("no client registered with the fake IRC server")
		return nil
	}
}

type fakeConn struct {
	s     *fakeServer
	c     net.Conn
	r     *bufio.Reader
	wmu   sync.Mutex
	lines chan ircmsg.Message
	caps  map[string]bool
	nick  string
	quiet bool // do not answer PING (ping timeout tests); set through fakeServer.set
	raw   []string
	rawMu sync.Mutex
}

func (c *fakeConn) send(format string, args ...any) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	fmt.Fprintf(c.c, format+"\r\n", args...)
}

func (c *fakeConn) close() { c.c.Close() }

func (c *fakeConn) rawLines() []string {
	c.rawMu.Lock()
	defer c.rawMu.Unlock()
	return append([]string(nil), c.raw...)
}

func (c *fakeConn) serve() {
	defer c.c.Close()
	var user, pass bool
	capEnd := true
	for {
		if c.r.Buffered() == 0 {
			c.s.readHold.Lock() // a test holding it: nothing more is read
			c.s.readHold.Unlock()
		}
		line, err := c.r.ReadString('\n')
		if err != nil {
			close(c.lines)
			return
		}
		c.rawMu.Lock()
		c.raw = append(c.raw, line)
		c.rawMu.Unlock()
		line = strings.TrimRight(line, "\r\n")
		m, err := ircmsg.ParseLine(line)
		if err != nil {
			c.s.t.Errorf("fake server: unparsable line %q: %v", line, err)
			continue
		}
		p := m.Params
		switch m.Command {
		case "CAP":
			switch p[0] {
			case "LS":
				capEnd = false
				c.send(":irc.fake CAP * LS :%s", strings.Join(c.s.caps, " "))
			case "REQ":
				for _, cp := range strings.Fields(p[1]) {
					c.caps[cp] = true
				}
				c.send(":irc.fake CAP * ACK :%s", p[1])
			case "END":
				capEnd = true
			}
		case "AUTHENTICATE":
			if p[0] == "PLAIN" {
				c.send("AUTHENTICATE +")
				continue
			}
			dec, _ := base64.StdEncoding.DecodeString(p[0])
			parts := strings.Split(string(dec), "\x00")
			c.s.mu.Lock()
			sasl := c.s.sasl
			c.s.mu.Unlock()
			if len(parts) == 3 && parts[2] == sasl {
				c.send(":irc.fake 900 * x!x@x %s :You are now logged in", parts[1])
				c.send(":irc.fake 903 * :SASL authentication successful")
			} else {
				c.send(":irc.fake 904 * :SASL authentication failed")
			}
			pass = true
		case "NICK":
			c.s.mu.Lock()
			taken := c.s.taken[strings.ToLower(p[0])]
			c.s.mu.Unlock()
			if taken {
				c.send(":irc.fake 433 * %s :Nickname is already in use", p[0])
				continue
			}
			if c.nick != "" && user && capEnd {
				c.send(":%s!u@h NICK %s", c.nick, p[0])
			}
			c.nick = p[0]
		case "USER":
			user = true
		case "PING":
			c.s.mu.Lock()
			quiet := c.quiet
			c.s.mu.Unlock()
			if !quiet {
				c.send(":irc.fake PONG irc.fake :%s", p[0])
			}
		}
		_ = pass
		if !c.registered() && user && c.nick != "" && capEnd {
			c.s.mu.Lock()
			h, held := c.s.holdWelcome, c.s.held
			c.s.mu.Unlock()
			if h != nil {
				held <- c
				<-h
			}
			c.markRegistered()
			welcome := fmt.Sprintf(":irc.fake 001 %s :Welcome to the fake network %s!u@h\r\n", c.nick, c.nick) +
				fmt.Sprintf(":irc.fake 005 %s %s :are supported\r\n", c.nick, c.s.isupport) +
				fmt.Sprintf(":irc.fake 376 %s :End of MOTD", c.nick)
			c.s.mu.Lock()
			after := c.s.afterWelcome
			c.s.mu.Unlock()
			if after != "" {
				welcome += "\r\n" + after // in the same write
			}
			c.send("%s", welcome)
			c.s.conns <- c
			continue
		}
		if !c.registered() {
			continue
		}
		c.auto(m)
		select {
		case c.lines <- m:
		default:
		}
	}
}

var regMu sync.Mutex

func (c *fakeConn) registered() bool {
	regMu.Lock()
	defer regMu.Unlock()
	return c.nick != "" && c.caps["\x00registered"]
}

func (c *fakeConn) markRegistered() {
	regMu.Lock()
	defer regMu.Unlock()
	c.caps["\x00registered"] = true
}

// tags returns the tags a server with these caps puts on a relayed line.
func (c *fakeConn) tags(m ircmsg.Message) string {
	var t []string
	if c.caps["server-time"] {
		t = append(t, "time="+time.Now().UTC().Format("2006-01-02T15:04:05.000Z"))
	}
	if c.caps["message-tags"] {
		c.s.mu.Lock()
		c.s.msgid++
		t = append(t, "msgid=m"+strconv.Itoa(c.s.msgid))
		c.s.mu.Unlock()
	}
	if ok, l := m.GetTag("label"); ok && c.caps["labeled-response"] {
		t = append(t, "label="+l)
	}
	if len(t) == 0 {
		return ""
	}
	return "@" + strings.Join(t, ";") + " "
}

// auto answers the way a server would.
func (c *fakeConn) auto(m ircmsg.Message) {
	p := m.Params
	switch m.Command {
	case "JOIN":
		ch := p[0]
		c.s.mu.Lock() // tests change these meanwhile (fakeServer.set)
		banned, topic, names := c.s.banned[ch], c.s.topic[ch], c.s.names[ch]
		c.s.mu.Unlock()
		if banned {
			c.send(":irc.fake 474 %s %s :Cannot join channel (+b)", c.nick, ch)
			return
		}
		c.send(":%s!u@h JOIN %s", c.nick, ch)
		if topic != "" {
			c.send(":irc.fake 332 %s %s :%s", c.nick, ch, topic)
			c.send(":irc.fake 333 %s %s op!o@h 1700000000", c.nick, ch)
		}
		c.send(":irc.fake 353 %s = %s :%s %s", c.nick, ch, c.nick, names)
		c.send(":irc.fake 366 %s %s :End of NAMES", c.nick, ch)
	case "PRIVMSG", "NOTICE":
		if c.caps["echo-message"] && len(p) == 2 {
			c.send("%s:%s!u@h %s %s :%s", c.tags(m), c.nick, m.Command, p[0], p[1])
		}
	case "PART":
		c.send(":%s!u@h PART %s", c.nick, p[0])
	case "TOPIC":
		if len(p) == 2 {
			c.send(":%s!u@h TOPIC %s :%s", c.nick, p[0], p[1])
		}
	case "CHATHISTORY":
		if len(p) >= 2 {
			ch := p[1]
			c.send("BATCH +h1 chathistory %s", ch)
			c.s.mu.Lock()
			lines := append([]string(nil), c.s.history[ch]...)
			c.s.mu.Unlock()
			for _, l := range lines {
				c.send("@batch=h1;%s", l)
			}
			c.send("BATCH -h1")
		}
	case "QUIT":
		c.send("ERROR :Closing link")
		c.c.Close()
	}
}

// expect waits for a line with this command, skipping others.
func (c *fakeConn) expect(t testing.TB, cmd string) ircmsg.Message {
	t.Helper()
	deadline := time.After(wait)
	for {
		select {
		case m, ok := <-c.lines:
			if !ok {
				t.Fatalf("fake server: connection closed while waiting for %s", cmd)
			}
			if m.Command == cmd {
				return m
			}
		case <-deadline:
			t.Fatalf("fake server: no %s from the client", cmd)
		}
	}
}

// recorder is a core.Sink and core.RoomSink that records what it is told.
type recorder struct {
	t       testing.TB
	logger  *slog.Logger // default: the test log
	testLog *slog.Logger
	wait    time.Duration // how long next waits (default: wait)
	mu      sync.Mutex
	events  []any
	notify  chan struct{}
	store   *memStore
	// holdJoined, when set, makes RoomJoined wait until it is closed
	// (core's user queue full), telling inJoined that it waits.
	holdJoined, inJoined chan struct{}
	// holdDeliver, when set, makes Deliver wait until it is closed.
	holdDeliver chan struct{}
}

type (
	recState struct {
		st   core.State
		text string
	}
	recJoined struct {
		room      string
		self      core.Occupant
		occupants []core.Occupant
		subject   string
	}
	recError struct {
		room string
		err  error
	}
	recPresence struct {
		room string
		o    core.Occupant
	}
	recLeft struct {
		room, nick, reason string
		kicked             bool
	}
	recNick    struct{ room, old, new string }
	recSubject struct{ room, subject, by string }
	recFailed  struct {
		contact, legacyID string
		err               error
	}
)

func newRecorder(t testing.TB) *recorder {
	return &recorder{t: t, notify: make(chan struct{}, 1), store: &memStore{m: map[string]string{}}, testLog: xmpptest.Logger(t)}
}

func (r *recorder) add(ev any) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

func (r *recorder) State(s core.State, text string) { r.add(recState{s, text}) }
func (r *recorder) Deliver(ctx context.Context, m *core.Message) error {
	if r.holdDeliver != nil {
		<-r.holdDeliver
	}
	c := *m
	r.add(&c)
	return nil
}
func (r *recorder) Receipt(ctx context.Context, contact, legacyID string) error { return nil }
func (r *recorder) Failed(ctx context.Context, contact, legacyID string, err error) error {
	r.add(recFailed{contact, legacyID, err})
	return nil
}
func (r *recorder) Store() core.StateStore { return r.store }
func (r *recorder) Logger() *slog.Logger {
	if r.logger != nil {
		return r.logger
	}
	return r.testLog
}
func (r *recorder) RoomJoined(room string, self core.Occupant, occ []core.Occupant, subject string) {
	if r.holdJoined != nil {
		select {
		case r.inJoined <- struct{}{}:
		default:
		}
		<-r.holdJoined
	}
	r.add(recJoined{room, self, occ, subject})
}
func (r *recorder) RoomError(room string, err error)          { r.add(recError{room, err}) }
func (r *recorder) RoomPresence(room string, o core.Occupant) { r.add(recPresence{room, o}) }
func (r *recorder) RoomLeft(room, nick, reason string, kicked bool) {
	r.add(recLeft{room, nick, reason, kicked})
}
func (r *recorder) RoomNick(room, old, new string) { r.add(recNick{room, old, new}) }

// recTyping is a chat state the session showed (core.ChatStateSink).
type recTyping struct {
	m     core.Message
	state string
}

func (r *recorder) ChatState(m core.Message, state string) { r.add(recTyping{m, state}) }
func (r *recorder) RoomSubject(room, subject, by string)   { r.add(recSubject{room, subject, by}) }

// next waits for the first recorded event f accepts and removes it.
func (r *recorder) next(t testing.TB, what string, f func(any) bool) any {
	t.Helper()
	d := r.wait
	if d == 0 {
		d = wait
	}
	deadline := time.After(d)
	for {
		r.mu.Lock()
		for i, ev := range r.events {
			if f(ev) {
				r.events = append(r.events[:i:i], r.events[i+1:]...)
				r.mu.Unlock()
				return ev
			}
		}
		r.mu.Unlock()
		select {
		case <-r.notify:
		case <-deadline:
			r.mu.Lock()
			defer r.mu.Unlock()
			t.Fatalf("waiting for %s; recorded: %s", what, dumpEvents(r.events))
			return nil
		}
	}
}

func dumpEvents(evs []any) string {
	var b strings.Builder
	for _, ev := range evs {
		if m, ok := ev.(*core.Message); ok {
			fmt.Fprintf(&b, "\n  message %+v", *m)
			continue
		}
		fmt.Fprintf(&b, "\n  %T %+v", ev, ev)
	}
	return b.String()
}

func (r *recorder) message(t testing.TB, what string, f func(*core.Message) bool) *core.Message {
	t.Helper()
	return r.next(t, what, func(ev any) bool {
		m, ok := ev.(*core.Message)
		return ok && f(m)
	}).(*core.Message)
}

type memStore struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *memStore) Get(ctx context.Context, key string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[key]
	return v, ok, nil
}
func (s *memStore) Set(ctx context.Context, key, value string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[key] = value
	return nil
}
func (s *memStore) Delete(ctx context.Context, key string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
	return nil
}

var discard = slog.New(slog.DiscardHandler)

// startSession runs a session against a fake server.
func startSession(t testing.TB, srv *fakeServer, values, defaults map[string]string) (*session, *recorder) {
	t.Helper()
	return startSessionRec(t, srv, newRecorder(t), values, fakeDefaults(srv, defaults))
}

// fakeDefaults are the operator's settings of startSession's sessions,
// with defaults over them.
func fakeDefaults(srv *fakeServer, defaults map[string]string) map[string]string {
	d := map[string]string{
		dAllowedServers: "127.0.0.1", dPort: strconv.Itoa(srv.port()), dTLS: "false",
		dReconnectMin: "50ms", dReconnectMax: "200ms", dConnectTimeout: "3s", dTrace: "true",
		dFloodBurst: "100", dFloodRate: "1000",
	}
	for k, v := range defaults {
		d[k] = v
	}
	return d
}

// startSessionRec runs a session with a given recorder (and so its
// state store) and the defaults as given.
func startSessionRec(t testing.TB, srv *fakeServer, rec *recorder, values, d map[string]string) (*session, *recorder) {
	t.Helper()
	return startSessionOn(t, New(), rec, values, d)
}

// startSessionOn is startSessionRec on a given transport.
func startSessionOn(t testing.TB, tr *Transport, rec *recorder, values, d map[string]string) (*session, *recorder) {
	t.Helper()
	if values == nil {
		values = map[string]string{}
	}
	s := tr.NewSession(&core.Account{ID: 1, JID: "tester@a.test", Values: values, Defaults: d}, rec).(*session)
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	t.Cleanup(func() {
		cancel()
		<-s.done.Chan()
	})
	return s, rec
}
