package core_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// relayTransport is echoTransport marked Relay (a network that
// acknowledges nothing, like IRC): core hands messages over at once. Its
// sessions are reachable by the tests (relaySessions) to deliver on demand
// and to make sends fail for a while.
type relayTransport struct{ echoTransport }

func init() {
	core.Register("relayecho", func() core.Transport { return relayTransport{} })
}

func (relayTransport) Info() core.Info {
	return core.Info{Name: "relayecho", DisplayName: "Relay echo", DiscoType: "irc", Policy: core.Persistent, Relay: true}
}

var relaySessions sync.Map // account JID -> *relaySession

func (relayTransport) NewSession(a *core.Account, sink core.Sink) core.Session {
	s := &relaySession{a: a, sink: sink}
	relaySessions.Store(a.JID, s)
	return s
}

type relaySession struct {
	a    *core.Account
	sink core.Sink

	mu       sync.Mutex
	sent     []string // bodies Send took, in order
	failFor  int      // failFor Sends fail temporarily
	failFrom int      // once failFrom were taken
}

func (s *relaySession) Run(ctx context.Context) {
	s.sink.State(core.StateConnected, "")
	<-ctx.Done()
}

func (s *relaySession) Send(ctx context.Context, m *core.Message) (string, error) {
	s.mu.Lock()
	if s.failFor > 0 && len(s.sent) >= s.failFrom {
		s.failFor--
		s.mu.Unlock()
		return "", core.Temporary(errors.New("the network is busy"))
	}
	s.sent = append(s.sent, m.Body)
	n := len(s.sent)
	s.mu.Unlock()
	id := fmt.Sprintf("relay-%d", n)
	return id, s.sink.Deliver(ctx, &core.Message{Contact: m.Contact, Body: "re: " + m.Body, LegacyID: id + "-re"})
}

// relayAsyncTransport is relayTransport whose sessions are
// core.AsyncSenders, as IRC's are: one goroutine works through what
// SendAsync and Send hand over, in order, and after a temporary failure
// fails the SendAsync messages behind it until Send brings one from the
// outbox (the AsyncSender contract).
type relayAsyncTransport struct{ relayTransport }

func init() {
	core.Register("relayasync", func() core.Transport { return relayAsyncTransport{} })
}

func (relayAsyncTransport) Info() core.Info {
	i := relayTransport{}.Info()
	i.Name = "relayasync"
	return i
}

func (relayAsyncTransport) NewSession(a *core.Account, sink core.Sink) core.Session {
	s := &asyncRelaySession{relaySession: &relaySession{a: a, sink: sink}}
	relaySessions.Store(a.JID, s.relaySession)
	return s
}

type asyncRelaySession struct {
	*relaySession
	qmu     sync.Mutex
	q       []asyncReq
	working bool
	held    bool // owned by work
}

type asyncReq struct {
	m     *core.Message
	async bool
	done  func(string, error)
}

func (s *asyncRelaySession) SendAsync(m *core.Message, done func(string, error)) {
	s.hand(asyncReq{m: m, async: true, done: done})
}

func (s *asyncRelaySession) Send(ctx context.Context, m *core.Message) (string, error) {
	type res struct {
		id  string
		err error
	}
	ch := make(chan res, 1)
	s.hand(asyncReq{m: m, done: func(id string, err error) { ch <- res{id, err} }})
	select {
	case r := <-ch:
		return r.id, r.err
	case <-ctx.Done():
		return "", core.Temporary(ctx.Err())
	}
}

func (s *asyncRelaySession) hand(r asyncReq) {
	s.qmu.Lock()
	defer s.qmu.Unlock()
	s.q = append(s.q, r)
	if !s.working {
		s.working = true
		go s.work()
	}
}

func (s *asyncRelaySession) work() {
	for {
		s.qmu.Lock()
		if len(s.q) == 0 {
			s.working = false
			s.qmu.Unlock()
			return
		}
		r := s.q[0]
		s.q = s.q[1:]
		s.qmu.Unlock()
		var (
			id  string
			err error
		)
		if r.m.FromOutbox {
			s.held = false
		}
		if r.async && s.held {
			err = core.Temporary(errors.New("held behind a failed message"))
		} else {
			id, err = s.relaySession.Send(context.Background(), r.m)
		}
		if r.async && errors.Is(err, core.ErrTemporary) {
			s.held = true
		}
		r.done(id, err)
	}
}

func (s *relaySession) sentBodies() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.sent...)
}

func relaySessionOf(t *testing.T, jid string) *relaySession {
	t.Helper()
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		if v, ok := relaySessions.Load(jid); ok {
			return v.(*relaySession)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no session for %s", jid)
	return nil
}

// Relayed both ways through a real Prosody, with the network refusing
// sends for a while in the middle: every message reaches the network once
// and in order, every receipt comes, and the network's answers reach the
// user in order, though some took the outbox and most did not.
func TestRelayOrderThroughOutages(t *testing.T) {
	env := xmpptest.Prosody(t)
	// relayasync: the session takes each message at once (AsyncSender).
	for _, tr := range []string{"relayecho", "relayasync"} {
		t.Run(tr, func(t *testing.T) { relayOrderThroughOutages(t, env, tr) })
	}
}

func relayOrderThroughOutages(t *testing.T, env xmpptest.Env, transport string) {
	g := testGatewayWith(t, env, transport, "echo5", "")
	const gw = "echo5.a.test"
	c := xmpptest.Dial(t, env, "user7@a.test", false)
	waitConnected(t, c, gw)
	relaySessions.Delete("user7@a.test")
	register(t, c, gw, map[string]string{"username": "r", "password": "p"})
	s := relaySessionOf(t, "user7@a.test")

	const n = 30
	s.mu.Lock()
	s.failFrom, s.failFor = 10, 3 // messages 10.. wait in the outbox, and those behind them
	s.mu.Unlock()
	var want []string
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("m%02d", i)
		want = append(want, body)
		msg := core.NewElement("", "message", "to", "dora@"+gw, "type", "chat", "id", "id-"+body)
		msg.AddText("", "body", body)
		msg.Add(core.NewElement(nsReceipts, "request"))
		c.Send(msg)
	}
	receipts := map[string]bool{}
	var answers []string
	deadline := time.Now().Add(4 * wait)
	for (len(receipts) < n || len(answers) < n) && time.Now().Before(deadline) {
		el, err := c.Next(time.Until(deadline), func(el *core.Element) bool {
			return el.Name.Local == "message" && strings.HasPrefix(el.Get("from"), "dora@"+gw)
		})
		if err != nil {
			break
		}
		if r := el.Child(nsReceipts, "received"); r != nil {
			receipts[r.Get("id")] = true
		}
		if b := el.ChildText("", "body"); b != "" {
			answers = append(answers, strings.TrimPrefix(b, "re: "))
		}
	}
	if got := s.sentBodies(); strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("the network got\n%v\nwant\n%v", got, want)
	}
	if strings.Join(answers, " ") != strings.Join(want, " ") {
		t.Errorf("the user got the answers\n%v\nwant\n%v", answers, want)
	}
	for _, b := range want {
		if !receipts["id-"+b] {
			t.Errorf("no receipt for %s", b)
		}
	}
	if !strings.Contains(g.logs.String(), "the network is busy") {
		t.Error("the refused sends did not go through the outbox's retry")
	}
	waitOutboxEmpty(t, g)
	// The receipts of the messages relayed at once (m00-m09) are not
	// recorded as delivered (a database write per message, for a
	// duplicate no client would show); the outbox records what it sends.
	db, err := sql.Open("sqlite3", "file:"+g.dbPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var k int
	if err := db.QueryRow(`SELECT COUNT(*) FROM outbox_delivered WHERE idem_key LIKE 'receipt:id-m0%'`).Scan(&k); err != nil {
		t.Fatal(err)
	}
	if k != 0 {
		t.Errorf("%d receipts recorded as delivered", k)
	}
}

// A message the client sends again with the same id (a resumed stream
// that lost its acknowledgement) is not sent to the network twice; the
// client gets its receipt again.
func TestRelayDropsResentMessage(t *testing.T) {
	env := xmpptest.Prosody(t)
	for _, tr := range []string{"relayecho", "relayasync"} {
		t.Run(tr, func(t *testing.T) {
			testGatewayWith(t, env, tr, "echo5", "")
			const gw = "echo5.a.test"
			c := xmpptest.Dial(t, env, "user9@a.test", false)
			waitConnected(t, c, gw)
			relaySessions.Delete("user9@a.test")
			register(t, c, gw, map[string]string{"username": "r", "password": "p"})
			s := relaySessionOf(t, "user9@a.test")
			send := func(id, body string) {
				msg := core.NewElement("", "message", "to", "dora@"+gw, "type", "chat", "id", id)
				msg.AddText("", "body", body)
				msg.Add(core.NewElement(nsReceipts, "request"))
				c.Send(msg)
				c.Expect(wait, "receipt for "+id+" ("+body+")", func(el *core.Element) bool {
					r := el.Child(nsReceipts, "received")
					return r != nil && r.Get("id") == id
				})
			}
			send("dup-1", "once")
			send("dup-1", "once")
			send("dup-2", "twice")
			if got := strings.Join(s.sentBodies(), " "); got != "once twice" {
				t.Errorf("the network got %q, want \"once twice\"", got)
			}
		})
	}
}

// A relayed stanza the server never confirmed (no answer to the ping
// behind it, then the connection ends) is sent again on the next
// connection; one it confirmed is recorded as delivered, so the network
// replaying it as history does not show it twice. The fake server is
// needed: a real one always answers the ping.
func TestRelayResendsUnconfirmed(t *testing.T) {
	srv := newFakeServer(t, "s7")
	g := relayFakeGateway(t, srv.ln.Addr().String(), "s7")
	c1 := srv.next(t)
	// Register (relayecho is persistent: the session starts at once).
	relaySessions.Delete("u@a.test")
	fmt.Fprint(c1, `<iq type='set' id='reg1' from='u@a.test/r' to='echo5.a.test'><query xmlns='jabber:iq:register'><username>u</username><password>p</password></query></iq>`)
	if res := c1.readIQ(t, "reg1"); res.Get("type") != "result" {
		t.Fatalf("registration: %s", res)
	}
	s := relaySessionOf(t, "u@a.test")
	waitConnectedState(t, g)

	ctx := context.Background()
	if err := s.sink.Deliver(ctx, &core.Message{Contact: "bob", Body: "unconfirmed", LegacyID: "L1"}); err != nil {
		t.Fatal(err)
	}
	p1 := pumpOf(c1, false)
	p1.body(t, "unconfirmed")
	// The ping behind it: not answered; the connection ends.
	p1.ping(t)
	c1.Close()

	c2 := srv.next(t)
	p2 := pumpOf(c2, true)
	p2.body(t, "unconfirmed")

	if err := s.sink.Deliver(ctx, &core.Message{Contact: "bob", Body: "confirmed", LegacyID: "L2", Replayable: true}); err != nil {
		t.Fatal(err)
	}
	p2.body(t, "confirmed")
	// Recorded once the server answered the ping behind it.
	db, err := sql.Open("sqlite3", "file:"+g.dbPath+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	deadline := time.Now().Add(wait)
	for {
		var k int
		_ = db.QueryRow(`SELECT COUNT(*) FROM outbox_delivered WHERE idem_key = 'message:L2'`).Scan(&k)
		if k == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the confirmed relayed message was never recorded as delivered")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The network replays it as history, then says something new.
	if err := s.sink.Deliver(ctx, &core.Message{Contact: "bob", Body: "confirmed", LegacyID: "L2", Time: time.Now().Add(-time.Minute), Replayable: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.sink.Deliver(ctx, &core.Message{Contact: "bob", Body: "new", LegacyID: "L3"}); err != nil {
		t.Fatal(err)
	}
	if b := p2.body(t, ""); b != "new" {
		t.Fatalf("after the replay the user got %q, want \"new\" (the replay is a duplicate)", b)
	}

	// Relayed at once (the outbox is empty): one the network cannot
	// replay is not recorded (nothing to recognise later), one it can
	// (IRC: a msgid from a server with CHATHISTORY) is.
	waitOutboxEmpty(t, g)
	for _, m := range []*core.Message{{Contact: "bob", Body: "once", LegacyID: "L4"}, {Contact: "bob", Body: "again", LegacyID: "L5", Replayable: true}} {
		if err := s.sink.Deliver(ctx, m); err != nil {
			t.Fatal(err)
		}
		p2.body(t, m.Body)
	}
	for {
		var k int
		_ = db.QueryRow(`SELECT COUNT(*) FROM outbox_delivered WHERE idem_key = 'message:L5'`).Scan(&k)
		if k == 1 {
			break
		}
		if time.Now().After(deadline.Add(wait)) {
			t.Fatal("the replayable relayed message was never recorded as delivered")
		}
		time.Sleep(20 * time.Millisecond)
	}
	var k4 int
	_ = db.QueryRow(`SELECT COUNT(*) FROM outbox_delivered WHERE idem_key = 'message:L4'`).Scan(&k4)
	if k4 != 0 {
		t.Error("a relayed message the network cannot replay was recorded as delivered")
	}
}

// relayFakeGateway is fakeGateway serving relayecho.
func relayFakeGateway(t *testing.T, addr, secret string) *gateway {
	t.Helper()
	return fakeGatewayWith(t, addr, secret, "relayecho")
}

// waitConnectedState waits until core logged a session connected.
func waitConnectedState(t *testing.T, g *gateway) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !strings.Contains(g.logs.String(), "legacy session state") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
}

// pump reads c in the background, answering pings when answer is set,
// and hands the other stanzas on.
type pump struct {
	els chan *core.Element
}

func pumpOf(c *fakeConn, answer bool) *pump {
	p := &pump{els: make(chan *core.Element, 64)}
	go func() {
		defer close(p.els)
		for {
			_ = c.SetReadDeadline(time.Now().Add(time.Minute))
			el, err := core.ElementFromTokens(c.dec)
			if err != nil {
				return
			}
			if el.Name.Local == "iq" && el.Child("urn:xmpp:ping", "ping") != nil {
				if answer {
					fmt.Fprintf(c, "<iq type='result' id='%s' from='%s' to='%s'/>", el.Get("id"), el.Get("to"), el.Get("from"))
					continue
				}
			}
			p.els <- el
		}
	}()
	return p
}

// next waits for a stanza f accepts; what says what it waits for.
func (p *pump) next(t *testing.T, what string, f func(*core.Element) bool) *core.Element {
	t.Helper()
	timeout := time.After(wait)
	for {
		select {
		case el, ok := <-p.els:
			if !ok {
				t.Fatalf("the connection ended before %s", what)
			}
			if f(el) {
				return el
			}
		case <-timeout:
			t.Fatalf("no %s", what)
		}
	}
}

// body waits for a message with a body, which must be want (if not ""),
// and returns the body.
func (p *pump) body(t *testing.T, want string) string {
	t.Helper()
	el := p.next(t, fmt.Sprintf("message %q", want), func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Child("", "body") != nil
	})
	b := el.ChildText("", "body")
	if want != "" && b != want {
		t.Fatalf("message %q, want %q", b, want)
	}
	return b
}

// ping waits for an (unanswered) ping.
func (p *pump) ping(t *testing.T) {
	t.Helper()
	p.next(t, "ping", func(el *core.Element) bool {
		return el.Name.Local == "iq" && el.Child("urn:xmpp:ping", "ping") != nil
	})
}
