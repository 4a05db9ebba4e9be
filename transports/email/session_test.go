package email

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// fakeSink is core's side of a session, in memory.
type fakeSink struct {
	mu       sync.Mutex
	st       *memState
	msgs     []*core.Message
	states   []core.State
	texts    []string
	notify   chan struct{}
	log      *slog.Logger
	deliverE error
}

func newFakeSink(t testing.TB) *fakeSink {
	return &fakeSink{st: newMemState(), notify: make(chan struct{}, 1), log: slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))}
}

func (f *fakeSink) poke() {
	select {
	case f.notify <- struct{}{}:
	default:
	}
}

func (f *fakeSink) State(s core.State, text string) {
	f.mu.Lock()
	f.states, f.texts = append(f.states, s), append(f.texts, text)
	f.mu.Unlock()
	f.poke()
}

func (f *fakeSink) Deliver(ctx context.Context, m *core.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.deliverE != nil {
		return f.deliverE
	}
	for _, old := range f.msgs {
		if old.LegacyID == m.LegacyID {
			return nil // core's dedupe
		}
	}
	f.msgs = append(f.msgs, m)
	f.poke()
	return nil
}

func (f *fakeSink) Receipt(context.Context, string, string) error       { return nil }
func (f *fakeSink) Failed(context.Context, string, string, error) error { return nil }
func (f *fakeSink) Store() core.StateStore                              { return f.st }
func (f *fakeSink) Logger() *slog.Logger                                { return f.log }

// waitFor waits until cond holds (checked under the lock).
func (f *fakeSink) waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(d)
	for {
		f.mu.Lock()
		ok := cond()
		f.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-f.notify:
		case <-time.After(50 * time.Millisecond):
		case <-deadline:
			t.Fatalf("waiting for %s", what)
		}
	}
}

func (f *fakeSink) state() core.State {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.states) == 0 {
		return core.StateDisconnected
	}
	return f.states[len(f.states)-1]
}

func testAccount(e mailEnv, id int64, addr string, extra map[string]string) *core.Account {
	ih, ip, _ := net.SplitHostPort(e.imap)
	sh, sp, _ := net.SplitHostPort(e.smtp)
	a := &core.Account{
		ID: id, Domain: "a.test", Transport: "email", JID: addr,
		Values: map[string]string{fEmail: addr, fPassword: e.password},
		Defaults: map[string]string{
			fIMAPHost: ih, fIMAPPort: ip, fIMAPSecurity: secPlain,
			fSMTPHost: sh, fSMTPPort: sp, fSMTPSecurity: secPlain,
			dAllowPlaintext: "true", dSMTPAuth: "none", dDiscover: "false",
		},
	}
	for k, v := range extra {
		a.Values[k] = v
	}
	return a
}

// startSession runs a session for addr; it stops at the end of the test.
func startSession(t testing.TB, e mailEnv, tr *Transport, id int64, addr string, extra map[string]string, sink *fakeSink) *session {
	s := newSession(tr, testAccount(e, id, addr, extra), sink)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	sink.waitFor(t, wait, "connected", func() bool { return len(sink.states) > 0 && sink.states[len(sink.states)-1] == core.StateConnected })
	return s
}

func TestSessionMailbox(t *testing.T) {
	e := testMailEnv(t)
	run := xmpptest.RandomID()[:6]
	const addr = "user15@a.test"
	// Mail that is there before registration, unread: two of them are
	// asked for.
	for i := 0; i < 3; i++ {
		raw := crlf(fmt.Sprintf("From: old@example.org\nSubject: old %s %d\n\nold\n", run, i))
		if err := lmtpDeliver(e.lmtp, addr, raw); err != nil {
			t.Fatal(err)
		}
	}
	tr := New()
	sink := newFakeSink(t)
	s := startSession(t, e, tr, 1, addr, map[string]string{fInitialUnread: "2"}, sink)
	sink.waitFor(t, wait, "the 2 latest unread", func() bool { return len(sink.msgs) >= 2 })
	time.Sleep(300 * time.Millisecond)
	sink.mu.Lock()
	if len(sink.msgs) != 2 || sink.msgs[0].Subject != "old "+run+" 1" || sink.msgs[1].Subject != "old "+run+" 2" {
		t.Errorf("initial unread: %d messages, first %q", len(sink.msgs), sink.msgs[0].Subject)
	}
	sink.msgs = nil
	sink.mu.Unlock()

	// New mail arrives within a second, from the sender, as a chat message.
	start := time.Now()
	raw := crlf("From: \"Jane Doe\" <jane@example.org>\nSubject: new " + run + "\nMessage-ID: <new-" + run + "@example.org>\n\nhello\n")
	if err := lmtpDeliver(e.lmtp, addr, raw); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, wait, "the new mail", func() bool { return len(sink.msgs) == 1 })
	if d := time.Since(start); d > time.Second {
		t.Errorf("delivered after %v", d)
	}
	m := sink.msgs[0]
	if m.Contact != "jane@example.org" || m.Nick != "Jane Doe" || m.Body != "hello" || m.Thread != threadHash("new-"+run+"@example.org") || m.Normal {
		t.Errorf("message %+v", m)
	}
	folder, uv, uid, ok := parseLegacyID(m.LegacyID)
	if !ok || folder != "INBOX" {
		t.Fatalf("legacy id %q", m.LegacyID)
	}

	// A read marker sets \Seen.
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if err := s.MarkRead(ctx, m.Contact, m.LegacyID); err != nil {
		t.Fatal(err)
	}
	ic := imapDial(t, e, addr)
	sel, err := ic.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil || sel.UIDValidity != uv {
		t.Fatal(err, sel)
	}
	msgs, err := ic.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatal(err)
	}
	seen := false
	for _, f := range msgs[0].Flags {
		seen = seen || f == imap.FlagSeen
	}
	if !seen {
		t.Errorf("flags after MarkRead: %v", msgs[0].Flags)
	}

	// A permanent refusal (unknown recipient: 550) is not temporary and
	// says what the server said.
	_, err = s.Send(ctx, &core.Message{Contact: "nobody-" + run + "@a.test", Body: "hi", XMPPID: "x1-" + run})
	var ce *core.Error
	if !errors.As(err, &ce) || ce.Condition != stanza.ItemNotFound || errors.Is(err, core.ErrTemporary) || !strings.Contains(ce.Text, "550") {
		t.Errorf("unknown recipient: %v", err)
	}
	// The same stanza sent twice (a resend after a crash) goes out once.
	msg := &core.Message{Contact: "user14@a.test", Subject: "once " + run, Body: "only once", XMPPID: "x2-" + run, UserResource: "phone"}
	id1, err := s.Send(ctx, msg)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := s.Send(ctx, msg)
	if err != nil || id1 != id2 {
		t.Fatalf("resend: %q %q %v", id1, id2, err)
	}
	rc := imapDial(t, e, "user14@a.test")
	deadline := time.Now().Add(wait)
	for {
		n := len(findMail(t, rc, "INBOX", "once "+run))
		if n == 1 {
			break
		}
		if n > 1 || time.Now().After(deadline) {
			t.Fatalf("%d copies received", n)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// A failing Deliver does not advance the UID: the mail comes again.
	sink.mu.Lock()
	sink.deliverE = errors.New("store down")
	sink.msgs = nil
	sink.mu.Unlock()
	raw = crlf("From: jane@example.org\nSubject: retry " + run + "\n\nagain\n")
	if err := lmtpDeliver(e.lmtp, addr, raw); err != nil {
		t.Fatal(err)
	}
	sink.waitFor(t, wait, "a transient failure", func() bool { return sink.states[len(sink.states)-1] == core.StateTransientFail })
	sink.mu.Lock()
	sink.deliverE = nil
	sink.mu.Unlock()
	sink.waitFor(t, 2*wait, "the mail after the failure", func() bool { return len(sink.msgs) == 1 && sink.msgs[0].Subject == "retry "+run })
}

func TestSessionBadPassword(t *testing.T) {
	e := testMailEnv(t)
	sink := newFakeSink(t)
	a := testAccount(e, 2, "user15@a.test", map[string]string{fPassword: "wrong"})
	s := newSession(New(), a, sink)
	done := make(chan struct{})
	go func() { defer close(done); s.Run(context.Background()) }()
	select {
	case <-done:
	case <-time.After(wait):
		t.Fatal("Run did not return on a refused login")
	}
	if sink.state() != core.StateBadCredentials {
		t.Errorf("states %v", sink.states)
	}
}

var _ io.Writer = logWriter{}
