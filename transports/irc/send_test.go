package irc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"transportd/core"
)

// At most once: what the user sent reaches IRC once or not at all, never
// twice, whatever happens around Send.

// A stanza written to IRC and then retried by the outbox (the gateway
// died before the outbox recorded the send) is not written again by the
// next session.
func TestSendNotRepeatedAfterRestart(t *testing.T) {
	srv := newFakeServer(t, allCaps...)
	s1, rec1 := startSession(t, srv, nil, nil)
	ctx := context.Background()
	room := "#once%127.0.0.1"
	_ = s1.JoinRoom(ctx, room, "me", "")
	c1 := srv.nextConn()
	rec1.next(t, "joined", isJoined(room))
	// From the outbox: a crash before it is marked sent makes core send it again.
	m := &core.Message{Contact: room, Groupchat: true, Body: "only once", XMPPID: "st1", UserResource: "phone", FromOutbox: true}
	if _, err := s1.Send(ctx, m); err != nil {
		t.Fatal(err)
	}
	if got := c1.expect(t, "PRIVMSG"); last(got.Params) != "only once" {
		t.Fatalf("first PRIVMSG = %q", got.Params)
	}

	// The next session of the account (same state), as after a restart:
	// the outbox hands it the same stanza again, then the next one.
	rec2 := newRecorder(t)
	rec2.store = rec1.store
	s2, _ := startSessionRec(t, srv, rec2, nil, s1.acct.Defaults)
	_ = s2.JoinRoom(ctx, room, "me2", "")
	c2 := srv.nextConn()
	rec2.next(t, "joined", isJoined(room))
	// Not sent again, and no receipt: whether it reached IRC is not known.
	if _, err := s2.Send(ctx, m); !errors.Is(err, core.ErrUnconfirmed) {
		t.Fatalf("the retried stanza: %v, want core.ErrUnconfirmed", err)
	}
	if _, err := s2.Send(ctx, &core.Message{Contact: room, Groupchat: true, Body: "next", XMPPID: "st2", UserResource: "phone", FromOutbox: true}); err != nil {
		t.Fatal(err)
	}
	if got := c2.expect(t, "PRIVMSG"); last(got.Params) != "next" {
		t.Fatalf("after the restart IRC got %q first, want \"next\"", last(got.Params))
	}
	// A new stanza with the same text is a new message.
	if _, err := s2.Send(ctx, &core.Message{Contact: room, Groupchat: true, Body: "next", XMPPID: "st3", UserResource: "phone", FromOutbox: true}); err != nil {
		t.Fatal(err)
	}
	if got := c2.expect(t, "PRIVMSG"); last(got.Params) != "next" {
		t.Fatalf("the repeated text: %q", last(got.Params))
	}
}

// A connection lost in the middle of a long message: Send reports what
// was sent, and the error is not one the outbox retries.
func TestSendLostMidMessage(t *testing.T) {
	srv := newFakeServer(t, allCaps...)
	s, rec := startSession(t, srv, nil, map[string]string{dFloodBurst: "3", dFloodRate: "4"})
	ctx := context.Background()
	room := "#cut%127.0.0.1"
	_ = s.JoinRoom(ctx, room, "me", "")
	c := srv.nextConn()
	rec.next(t, "joined", isJoined(room))
	time.Sleep(time.Second) // the JOIN's token comes back
	errc := make(chan error, 1)
	go func() {
		_, err := s.Send(ctx, &core.Message{Contact: room, Groupchat: true, Body: strings.Repeat("line\n", 13), XMPPID: "long"})
		errc <- err
	}()
	for i := 0; i < 3; i++ {
		c.expect(t, "PRIVMSG")
	}
	c.close()
	var err error
	select {
	case err = <-errc:
	case <-time.After(wait):
		t.Fatal("Send did not return after the connection was lost")
	}
	if err == nil || errors.Is(err, core.ErrTemporary) {
		t.Fatalf("Send = %v, want a failure that is not retried", err)
	}
	if !strings.Contains(err.Error(), "after 3 of the 13 lines") {
		t.Errorf("Send = %v, want it to say how much was sent", err)
	}
}

// A message whose Send gave up before the connection was ready is never
// sent later: the outbox retries it instead.
func TestSendAbandonedIsNotSentLate(t *testing.T) {
	srv := newFakeServer(t, allCaps...)
	// A slow way to the server: registration completes a second late.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer in.Close()
				time.Sleep(time.Second)
				out, err := net.Dial("tcp", srv.ln.Addr().String())
				if err != nil {
					return
				}
				defer out.Close()
				go func() { _, _ = io.Copy(out, in) }()
				_, _ = io.Copy(in, out)
			}()
		}
	}()
	s, rec := startSession(t, srv, nil, map[string]string{dPort: strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)})
	room := "#late%127.0.0.1"
	_ = s.JoinRoom(context.Background(), room, "me", "")
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	_, err = s.Send(ctx, &core.Message{Contact: room, Groupchat: true, Body: "too late", XMPPID: "late1"})
	cancel()
	if !errors.Is(err, core.ErrTemporary) {
		t.Fatalf("Send = %v, want a temporary error (retried by the outbox)", err)
	}
	c := srv.nextConn()
	rec.next(t, "joined", isJoined(room))
	// The outbox's retry goes out, once.
	if _, err := s.Send(context.Background(), &core.Message{Contact: room, Groupchat: true, Body: "too late", XMPPID: "late1"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(context.Background(), &core.Message{Contact: room, Groupchat: true, Body: "then this", XMPPID: "late2"}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := 0; i < 2; i++ {
		got = append(got, last(c.expect(t, "PRIVMSG").Params))
	}
	if strings.Join(got, "|") != "too late|then this" {
		t.Errorf("IRC got %q", got)
	}
}

// Messages relayed while the server reads nothing fill the socket (both
// ends' buffers made small); what the socket did not take is written once
// it has room again: every line whole, once, in order, and every message
// answered without an error. The session writes lines itself when the
// socket takes them at once (conn.flush): a line it wrote in part must be
// finished before any other.
func TestFullSocketKeepsLines(t *testing.T) {
	small := func(opt int) func(string, string, syscall.RawConn) error {
		return func(_, _ string, rc syscall.RawConn) error {
			var serr error
			if err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, opt, 4096) }); err != nil {
				return err
			}
			return serr
		}
	}
	ln, err := (&net.ListenConfig{Control: small(syscall.SO_RCVBUF)}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := serveFake(t, ln, nil)
	tr := New()
	tr.dial = (&net.Dialer{Control: small(syscall.SO_SNDBUF)}).DialContext
	s, rec := startSessionOn(t, tr, newRecorder(t), nil, fakeDefaults(srv, map[string]string{dTrace: "false"}))
	room := "#full%127.0.0.1"
	_ = s.JoinRoom(context.Background(), room, "me", "")
	c := srv.nextConn()
	rec.next(t, "joined", isJoined(room))

	srv.readHold.Lock()
	// 40 messages of 5 lines: 80 KB, many times what both buffers hold,
	// under the 256 lines that may wait.
	const n, lines = 40, 5
	answers := make(chan error, n)
	pad := strings.Repeat("x", 380)
	line := func(i, j int) string { return fmt.Sprintf("%03d-%d %s", i, j, pad) }
	for i := 0; i < n; i++ {
		var body []string
		for j := 0; j < lines; j++ {
			body = append(body, line(i, j))
		}
		s.SendAsync(&core.Message{Contact: room, Groupchat: true, Body: strings.Join(body, "\n"), XMPPID: fmt.Sprint("full", i)},
			func(_ string, err error) { answers <- err })
		// One at a time, mostly: each drain ends having written the
		// message itself, until the socket is full.
		time.Sleep(2 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	srv.readHold.Unlock()
	for i := 0; i < n; i++ {
		for j := 0; j < lines; j++ {
			m := c.expect(t, "PRIVMSG")
			if want := line(i, j); last(m.Params) != want {
				t.Fatalf("line %d of message %d = %.20q… (%d bytes), want %.20q…", j, i, last(m.Params), len(last(m.Params)), want)
			}
		}
	}
	for i := 0; i < n; i++ {
		select {
		case err := <-answers:
			if err != nil {
				t.Errorf("a message was answered %v", err)
			}
		case <-time.After(wait):
			t.Fatalf("%d of %d messages answered", i, n)
		}
	}
}

// SendAsync keeps core.AsyncSender's contract when it writes a message
// itself (sendNow, from core's stanza reader): it never calls done before
// it returns (core holds its relay lock meanwhile, which done takes), and
// every message is answered once, an empty body's (answered at once)
// too. Every written line reaches IRC, in order.
func TestSendAsyncAnswersAfterReturning(t *testing.T) {
	srv := newFakeServer(t, allCaps...)
	s, rec := startSession(t, srv, nil, nil)
	room := "#later%127.0.0.1"
	_ = s.JoinRoom(context.Background(), room, "me", "")
	c := srv.nextConn()
	rec.next(t, "joined", isJoined(room))

	bodies := []string{"one", "", "two", "three\nfour", "", "five", "pm", "six"}
	to := func(i int) (contact, nick string) {
		switch i {
		case 6:
			return "friend%127.0.0.1", "" // a private message
		case 7:
			return room, "friend" // to an occupant, privately
		}
		return room, ""
	}
	var relayMu sync.Mutex // as core's relay lock
	answers := make(chan int, len(bodies))
	errs := make(chan error, len(bodies))
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i, body := range bodies {
			relayMu.Lock()
			contact, nick := to(i)
			s.SendAsync(&core.Message{Contact: contact, Groupchat: contact == room && nick == "", Nick: nick, Body: body, XMPPID: fmt.Sprint("later", i)},
				func(_ string, err error) {
					// As core, which would wait for good; given up after
					// a while here, so that the test ends.
					for deadline := time.Now().Add(wait); !relayMu.TryLock(); time.Sleep(time.Millisecond) {
						if time.Now().After(deadline) {
							answers <- i
							errs <- errors.New("done called inside SendAsync, with core's relay lock held")
							return
						}
					}
					answers <- i
					errs <- err
					relayMu.Unlock()
				})
			relayMu.Unlock()
			if i%2 == 1 {
				time.Sleep(5 * time.Millisecond) // idle between some: the reader writes those itself
			}
		}
	}()
	select {
	case <-sent:
	case <-time.After(2 * wait):
		t.Fatal("SendAsync did not return")
	}
	// An empty body is answered at once, which may be before a message
	// ahead of it is written (as it was when drains did all the writing):
	// the order is that of the messages that had lines.
	var order []int
	for k := range bodies {
		select {
		case got := <-answers:
			if err := <-errs; err != nil {
				t.Errorf("message %d answered %v", got, err)
			}
			if bodies[got] != "" {
				order = append(order, got)
			}
		case <-time.After(wait):
			t.Fatalf("%d of %d messages answered", k, len(bodies))
		}
	}
	if fmt.Sprint(order) != "[0 2 3 5 6 7]" {
		t.Errorf("messages with lines answered in the order %v", order)
	}
	var got []string
	for range 7 {
		m := c.expect(t, "PRIVMSG")
		got = append(got, m.Params[0]+" "+last(m.Params))
	}
	if strings.Join(got, "|") != "#later one|#later two|#later three|#later four|#later five|friend pm|friend six" {
		t.Errorf("IRC got %q", got)
	}
}
