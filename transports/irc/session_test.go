package irc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"maps"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/core/store"
	"transportd/registration"
)

var allCaps = []string{"message-tags", "server-time", "echo-message", "labeled-response", "batch",
	"away-notify", "account-notify", "extended-join", "multi-prefix", "userhost-in-names", "cap-notify"}

func isJoined(room string) func(any) bool {
	return func(ev any) bool { j, ok := ev.(recJoined); return ok && j.room == room }
}

func TestJoinTalkAndEvents(t *testing.T) {
	srv := newFakeServer(t, allCaps...)
	srv.set(func() {
		srv.names["#chan"] = "@op!o@h %+voiced!v@h ~owner!w@h plain!p@h"
		srv.topic["#chan"] = "the \x02topic\x02"
	})
	s, rec := startSession(t, srv, nil, nil)
	const room = "#chan%127.0.0.1"
	ctx := context.Background()
	if err := s.JoinRoom(ctx, room, "me", ""); err != nil {
		t.Fatal(err)
	}
	c := srv.nextConn()
	if !c.caps["echo-message"] || !c.caps["labeled-response"] || !c.caps["server-time"] {
		t.Errorf("caps negotiated: %v", c.caps)
	}
	if j := c.expect(t, "JOIN"); j.Params[0] != "#chan" {
		t.Errorf("JOIN %v", j.Params)
	}
	j := rec.next(t, "RoomJoined", isJoined(room)).(recJoined)
	if j.self.Nick != "me" || j.subject != "the topic" {
		t.Errorf("joined: %+v", j)
	}
	roles := map[string]string{}
	for _, o := range j.occupants {
		roles[o.Nick] = o.Role + "/" + o.Affiliation
	}
	want := map[string]string{"op": "moderator/admin", "voiced": "moderator/member", "owner": "moderator/owner", "plain": "participant/none"}
	for n, r := range want {
		if roles[n] != r {
			t.Errorf("%s is %s, want %s (all: %v)", n, roles[n], r, roles)
		}
	}

	// XMPP → IRC, with the reflection carrying the user's id once the
	// server echoed every line.
	id, err := s.Send(ctx, &core.Message{Contact: room, Groupchat: true, Body: "hello\n/me waves", XMPPID: "x1"})
	if err != nil || id == "" {
		t.Fatalf("Send: %q %v", id, err)
	}
	if m := c.expect(t, "PRIVMSG"); m.Params[1] != "hello" || !m.HasTag("label") {
		t.Errorf("first line %v", m)
	}
	if m := c.expect(t, "PRIVMSG"); m.Params[1] != "\x01ACTION waves\x01" {
		t.Errorf("second line %q", m.Params[1])
	}
	refl := rec.message(t, "reflection", func(m *core.Message) bool { return m.XMPPID == "x1" })
	if refl.Body != "hello\n/me waves" || refl.Nick != "me" || !strings.HasPrefix(refl.LegacyID, "m") {
		t.Errorf("reflection %+v", refl)
	}

	// IRC → XMPP.
	c.send("@time=2020-01-01T00:00:00.000Z;msgid=abc :op!o@h PRIVMSG #chan :\x02hi\x02 there")
	m := rec.message(t, "channel message", func(m *core.Message) bool { return m.Nick == "op" })
	if m.Body != "*hi* there" || m.LegacyID != "abc" || !m.Groupchat || m.Contact != room || m.Time.Year() != 2020 {
		t.Errorf("message %+v", m)
	}
	c.send(":op!o@h PRIVMSG #chan :\x01ACTION dances\x01")
	if m := rec.message(t, "action", func(m *core.Message) bool { return m.Nick == "op" }); m.Body != "/me dances" {
		t.Errorf("action %q", m.Body)
	}
	c.send(":op!o@h NOTICE #chan :caf\xe9 closes")
	if m := rec.message(t, "notice", func(m *core.Message) bool { return m.Nick == "op" }); m.Body != "[notice] café closes" {
		t.Errorf("notice %q", m.Body)
	}
	// Private messages both ways; the echo is not shown as from the contact.
	c.send(":Plain!p@h PRIVMSG me :psst")
	if m := rec.message(t, "private", func(m *core.Message) bool { return !m.Groupchat }); m.Contact != "plain%127.0.0.1" || m.Body != "psst" || m.Nick != "Plain" {
		t.Errorf("private %+v", m)
	}
	if _, err := s.Send(ctx, &core.Message{Contact: "plain%127.0.0.1", Body: "back"}); err != nil {
		t.Fatal(err)
	}
	if m := c.expect(t, "PRIVMSG"); m.Params[0] != "plain" || m.Params[1] != "back" {
		t.Errorf("private out %v", m.Params)
	}
	// A private message to an occupant, from the room.
	if _, err := s.Send(ctx, &core.Message{Contact: room, Nick: "op", Body: "hey op"}); err != nil {
		t.Fatal(err)
	}
	if m := c.expect(t, "PRIVMSG"); m.Params[0] != "op" {
		t.Errorf("occupant PM went to %v", m.Params)
	}
	// CTCP VERSION is answered.
	c.send(":op!o@h PRIVMSG me :\x01VERSION\x01")
	if m := c.expect(t, "NOTICE"); !strings.HasPrefix(m.Params[1], "\x01VERSION transportd") {
		t.Errorf("VERSION reply %q", m.Params[1])
	}

	// Room events.
	c.send(":new!n@h JOIN #chan")
	if p := rec.next(t, "join presence", func(ev any) bool { p, ok := ev.(recPresence); return ok && p.o.Nick == "new" }).(recPresence); p.o.Role != "participant" {
		t.Errorf("new occupant %+v", p.o)
	}
	c.send(":op!o@h MODE #chan +o-v new voiced")
	rec.next(t, "mode new", func(ev any) bool {
		p, ok := ev.(recPresence)
		return ok && p.o.Nick == "new" && p.o.Role == "moderator" && p.o.Affiliation == "admin"
	})
	rec.next(t, "mode voiced", func(ev any) bool {
		p, ok := ev.(recPresence)
		return ok && p.o.Nick == "voiced" && p.o.Role == "moderator" && p.o.Affiliation == "member" // still +h
	})
	c.send(":new!n@h AWAY :lunch")
	rec.next(t, "away", func(ev any) bool {
		p, ok := ev.(recPresence)
		return ok && p.o.Nick == "new" && p.o.Show == "away" && p.o.Status == "lunch"
	})
	c.send(":new!n@h NICK newer")
	rec.next(t, "nick", func(ev any) bool { n, ok := ev.(recNick); return ok && n.old == "new" && n.new == "newer" })
	c.send(":op!o@h KICK #chan newer :behave")
	rec.next(t, "kick", func(ev any) bool {
		l, ok := ev.(recLeft)
		return ok && l.nick == "newer" && l.kicked && l.reason == "behave"
	})
	c.send(":plain!p@h PART #chan :bye")
	rec.next(t, "part", func(ev any) bool { l, ok := ev.(recLeft); return ok && l.nick == "plain" && !l.kicked })
	c.send(":owner!w@h QUIT :Quit: gone")
	rec.next(t, "quit", func(ev any) bool { l, ok := ev.(recLeft); return ok && l.nick == "owner" && l.reason == "Quit: gone" })
	c.send(":op!o@h TOPIC #chan :new \x0304topic")
	rec.next(t, "topic", func(ev any) bool { x, ok := ev.(recSubject); return ok && x.subject == "new topic" && x.by == "op" })

	// The user's actions.
	if err := s.SetSubject(ctx, room, "line1\r\nKICK #chan op"); err != nil {
		t.Fatal(err)
	}
	if m := c.expect(t, "TOPIC"); m.Params[1] != "line1 KICK #chan op" {
		t.Errorf("TOPIC %q", m.Params)
	}
	if err := s.ChangeNick(ctx, room, "me2"); err != nil {
		t.Fatal(err)
	}
	c.expect(t, "NICK")
	rec.next(t, "own nick", func(ev any) bool { n, ok := ev.(recNick); return ok && n.old == "me" && n.new == "me2" })
	if err := s.ChangeNick(ctx, room, "bad nick"); err == nil {
		t.Error("a nick with a space was accepted")
	}
	srv.set(func() { srv.taken["busy"] = true })
	_ = s.ChangeNick(ctx, room, "busy")
	ne := rec.next(t, "refused nick change", func(ev any) bool { _, ok := ev.(recError); return ok }).(recError)
	var nce *core.Error
	if !errors.As(ne.err, &nce) || nce.Condition != stanza.Conflict || ne.room != room {
		t.Errorf("refused nick change: %+v", ne)
	}
	rec.message(t, "refusal notice", func(m *core.Message) bool { return strings.HasPrefix(m.Body, "Cannot change your nick to busy") })
	// Kicked ourselves: out of the room.
	c.send(":op!o@h KICK #chan me2 :out")
	rec.next(t, "self kick", func(ev any) bool { l, ok := ev.(recLeft); return ok && l.nick == "me2" && l.kicked })

	// Nothing the user sent reached the wire with a raw CR or LF.
	for _, l := range c.rawLines() {
		if strings.Count(l, "\n") != 1 || strings.Count(l, "\r") > 1 || strings.Contains(l, "\x00") {
			t.Errorf("raw line %q", l)
		}
	}
}

func TestNickInUseFallsBack(t *testing.T) {
	srv := newFakeServer(t)
	srv.set(func() { srv.taken["taken"] = true })
	s, rec := startSession(t, srv, nil, nil)
	if err := s.JoinRoom(context.Background(), "#x%127.0.0.1", "taken", ""); err != nil {
		t.Fatal(err)
	}
	srv.nextConn()
	j := rec.next(t, "joined", isJoined("#x%127.0.0.1")).(recJoined)
	if j.self.Nick != "taken_" {
		t.Errorf("self = %+v, want the fallback taken_", j.self)
	}
	// All fallbacks taken: a conflict.
	srv2 := newFakeServer(t)
	for _, n := range []string{"busy", "busy_", "busy__", "busy___", "busy____"} {
		srv2.set(func() { srv2.taken[n] = true })
	}
	s2, rec2 := startSession(t, srv2, nil, nil)
	_ = s2.JoinRoom(context.Background(), "#x%127.0.0.1", "busy", "")
	e := rec2.next(t, "conflict", func(ev any) bool { _, ok := ev.(recError); return ok }).(recError)
	var ce *core.Error
	if !errors.As(e.err, &ce) || ce.Condition != stanza.Conflict {
		t.Errorf("error = %v", e.err)
	}
}

func TestSASL(t *testing.T) {
	srv := newFakeServer(t, append([]string{"sasl=PLAIN"}, allCaps...)...)
	srv.set(func() { srv.sasl = "s3cret" })
	values := map[string]string{fNetwork: "127.0.0.1", fAuth: authSASL, fPassword: "s3cret", fNick: "acct"}
	s, rec := startSession(t, srv, values, nil)
	_ = s.JoinRoom(context.Background(), "#x%127.0.0.1", "acct", "")
	c := srv.nextConn()
	if !c.caps["sasl"] {
		t.Error("sasl not requested")
	}
	rec.next(t, "joined", isJoined("#x%127.0.0.1"))
	for _, l := range c.rawLines() {
		if strings.Contains(l, "s3cret") {
			t.Errorf("password in clear on the wire: %q", l)
		}
	}

	// A wrong password: the join fails with not-authorized, the session
	// shows bad credentials, and nothing is retried.
	srv2 := newFakeServer(t, "sasl")
	srv2.set(func() { srv2.sasl = "right" })
	values2 := map[string]string{fNetwork: "127.0.0.1", fAuth: authSASL, fPassword: "wrong"}
	s2, rec2 := startSession(t, srv2, values2, nil)
	_ = s2.JoinRoom(context.Background(), "#x%127.0.0.1", "acct", "")
	e := rec2.next(t, "auth error", func(ev any) bool { _, ok := ev.(recError); return ok }).(recError)
	var ce *core.Error
	if !errors.As(e.err, &ce) || ce.Condition != stanza.NotAuthorized {
		t.Errorf("error = %v", e.err)
	}
	rec2.next(t, "bad credentials", func(ev any) bool { st, ok := ev.(recState); return ok && st.st == core.StateBadCredentials })

	// Verify checks the password the same way.
	tr := New()
	d := map[string]string{dAllowedServers: "127.0.0.1", dPort: strconv.Itoa(srv2.port()), dTLS: "false"}
	err := tr.Verify(context.Background(), &core.Account{Values: values2, Defaults: d})
	if !errors.As(err, &ce) || ce.Condition != stanza.NotAuthorized {
		t.Errorf("Verify with a wrong password: %v", err)
	}
	values2[fPassword] = "right"
	if err := tr.Verify(context.Background(), &core.Account{Values: values2, Defaults: d}); err != nil {
		t.Errorf("Verify with the right password: %v", err)
	}
}

// The server password goes first, before CAP LS, NICK and USER: some
// servers and bouncers read PASS only as the first line.
func TestServerPasswordFirst(t *testing.T) {
	srv := newFakeServer(t, allCaps...)
	values := map[string]string{fNetwork: "127.0.0.1", fAuth: authPass, fPassword: "me/libera:s3cret"}
	s, rec := startSession(t, srv, values, nil)
	_ = s.JoinRoom(context.Background(), "#x%127.0.0.1", "me", "")
	c := srv.nextConn()
	rec.next(t, "joined", isJoined("#x%127.0.0.1"))
	if lines := c.rawLines(); len(lines) == 0 || lines[0] != "PASS me/libera:s3cret\r\n" {
		t.Errorf("first lines %q, want PASS first", lines[:min(len(lines), 3)])
	}
}

func TestChathistoryAndBacklog(t *testing.T) {
	srv := newFakeServer(t, "batch", "server-time", "message-tags", "draft/chathistory", "echo-message")
	srv.set(func() {
		srv.history["#h"] = []string{
			"time=2021-05-01T10:00:00.000Z;msgid=h1 :alice!a@h PRIVMSG #h :earlier",
			"time=2021-05-01T10:01:00.000Z;msgid=h2 :bob!b@h PRIVMSG #h :\x01ACTION later\x01",
		}
	})
	s, rec := startSession(t, srv, nil, nil)
	_ = s.JoinRoom(context.Background(), "#h%127.0.0.1", "me", "")
	c := srv.nextConn()
	rec.next(t, "joined", isJoined("#h%127.0.0.1"))
	if m := c.expect(t, "CHATHISTORY"); m.Params[0] != "LATEST" || m.Params[1] != "#h" {
		t.Errorf("CHATHISTORY %v", m.Params)
	}
	h1 := rec.message(t, "history 1", func(m *core.Message) bool { return m.LegacyID == "h1" })
	h2 := rec.message(t, "history 2", func(m *core.Message) bool { return m.LegacyID == "h2" })
	if h1.Body != "earlier" || h1.Time.IsZero() || h2.Body != "/me later" || h2.Time.Minute() != 1 {
		t.Errorf("history: %+v %+v", h1, h2)
	}
}

// A live line is marked replayable (core then records it as delivered)
// only if it has a msgid and the server offers chathistory: no other
// replay could show it again.
func TestReplayableOnlyWithChathistory(t *testing.T) {
	for _, tc := range []struct {
		caps []string
		want bool
	}{
		{[]string{"batch", "server-time", "message-tags", "draft/chathistory"}, true},
		{[]string{"batch", "server-time", "message-tags"}, false},
	} {
		srv := newFakeServer(t, tc.caps...)
		s, rec := startSession(t, srv, nil, nil)
		room := "#p%127.0.0.1"
		_ = s.JoinRoom(context.Background(), room, "me", "")
		c := srv.nextConn()
		rec.next(t, "joined", isJoined(room))
		c.send("@msgid=p1 :alice!a@h PRIVMSG #p :with an id")
		c.send(":alice!a@h PRIVMSG #p :without")
		if m := rec.message(t, "with a msgid", func(m *core.Message) bool { return m.Body == "with an id" }); m.Replayable != tc.want {
			t.Errorf("caps %v: a line with a msgid: Replayable %v, want %v", tc.caps, m.Replayable, tc.want)
		}
		// Core sends no history of its archive where the server replays it.
		if got := s.RoomReplaysHistory(room); got != tc.want {
			t.Errorf("caps %v: RoomReplaysHistory %v, want %v", tc.caps, got, tc.want)
		}
		if m := rec.message(t, "without", func(m *core.Message) bool { return m.Body == "without" }); m.Replayable {
			t.Errorf("caps %v: a line without a msgid is marked replayable", tc.caps)
		}
	}
}

// The user's own message, reflected once, is not shown again when the
// server replays the channel's history on a rejoin.
func TestHistoryReplaySkipsOwnEcho(t *testing.T) {
	srv := newFakeServer(t, "batch", "server-time", "message-tags", "draft/chathistory", "echo-message")
	s, rec := startSession(t, srv, nil, nil)
	ctx := context.Background()
	room := "#r%127.0.0.1"
	_ = s.JoinRoom(ctx, room, "me", "")
	c := srv.nextConn()
	rec.next(t, "joined", isJoined(room))
	if _, err := s.Send(ctx, &core.Message{Contact: room, Groupchat: true, Body: "mine", XMPPID: "x1"}); err != nil {
		t.Fatal(err)
	}
	own := rec.message(t, "reflection", func(m *core.Message) bool { return m.XMPPID == "x1" })
	if !own.Replayable {
		t.Error("the reflection, with a msgid from a server with chathistory, is not marked replayable: core would not record it")
	}
	srv.mu.Lock()
	srv.history["#r"] = []string{
		"time=2021-05-01T10:00:00.000Z;msgid=" + own.LegacyID + " :me!u@h PRIVMSG #r :mine",
		"time=2021-05-01T10:01:00.000Z;msgid=a1 :alice!a@h PRIVMSG #r :theirs",
	}
	srv.mu.Unlock()
	_ = s.LeaveRoom(ctx, room)
	c.expect(t, "PART")
	_ = s.JoinRoom(ctx, room, "me", "")
	rec.next(t, "joined again", isJoined(room))
	rec.message(t, "history", func(m *core.Message) bool { return m.LegacyID == "a1" })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	n := 0
	for _, ev := range rec.events {
		if m, ok := ev.(*core.Message); ok && m.Body == "mine" {
			n++
		}
	}
	if n != 0 { // the reflection was taken above
		t.Errorf("the user's message was shown %d more times: %s", n, dumpEvents(rec.events))
	}
}

func TestNoEchoReflectsAtOnce(t *testing.T) {
	srv := newFakeServer(t) // no CAP at all
	s, rec := startSession(t, srv, nil, nil)
	ctx := context.Background()
	_ = s.JoinRoom(ctx, "#n%127.0.0.1", "me", "")
	c := srv.nextConn()
	rec.next(t, "joined", isJoined("#n%127.0.0.1"))
	// The refusal below comes before the PONG to the fence behind the
	// message, as a server's would (TestNoEchoFence).
	srv.set(func() { c.quiet = true })
	if _, err := s.Send(ctx, &core.Message{Contact: "#n%127.0.0.1", Groupchat: true, Body: "hi", XMPPID: "q"}); err != nil {
		t.Fatal(err)
	}
	rec.message(t, "reflection", func(m *core.Message) bool { return m.XMPPID == "q" && m.Body == "hi" })
	if m := c.expect(t, "PRIVMSG"); m.HasTag("label") {
		t.Error("label sent without labeled-response")
	}
	// Without labels, a refusal is matched by target.
	c.send(":irc.fake 404 me #n :Cannot send to channel (+m)")
	f := rec.next(t, "failure", func(ev any) bool { _, ok := ev.(recFailed); return ok }).(recFailed)
	if f.contact != "#n%127.0.0.1" || !strings.Contains(errorText(f.err), "+m") {
		t.Errorf("failure %+v", f)
	}
}

// noEchoRoom joins room on a fake server without any CAP, which does not
// answer PINGs (the test answers the fences). send sends a message to the
// room and waits for its PRIVMSG; it returns Send's id.
func noEchoRoom(t *testing.T, room string) (rec *recorder, c *fakeConn, send func(body string) string) {
	t.Helper()
	srv := newFakeServer(t)
	s, rec := startSession(t, srv, nil, nil)
	ctx := context.Background()
	_ = s.JoinRoom(ctx, room, "me", "")
	c = srv.nextConn()
	rec.next(t, "joined", isJoined(room))
	srv.set(func() { c.quiet = true })
	send = func(body string) string {
		t.Helper()
		id, err := s.Send(ctx, &core.Message{Contact: room, Groupchat: true, Body: body, XMPPID: "x" + body})
		if err != nil {
			t.Fatal(err)
		}
		if m := c.expect(t, "PRIVMSG"); m.Params[1] != body {
			t.Fatalf("IRC got %v, want %q", m.Params, body)
		}
		return id
	}
	return rec, c, send
}

// TestNoEchoFence: a server that neither echoes nor labels is sent a PING
// behind the user's lines; once it is answered, a refusal can no longer be
// about those lines. A refusal then is for a message sent after it, never
// for one the server relayed long before (it used to go to the oldest
// message to the same target sent in the last minute).
func TestNoEchoFence(t *testing.T) {
	const room = "#n%127.0.0.1"
	rec, c, send := noEchoRoom(t, room)
	idA := send("a")
	fenceA := c.expect(t, "PING")
	if !strings.HasPrefix(last(fenceA.Params), fenceToken) {
		t.Fatalf("after a message, PING %v, want a fence", fenceA.Params)
	}
	idB := send("b") // while a's fence is out: no fence of its own yet
	c.send(":irc.fake PONG irc.fake :%s", last(fenceA.Params))
	fenceB := c.expect(t, "PING")
	if last(fenceB.Params) == last(fenceA.Params) || !strings.HasPrefix(last(fenceB.Params), fenceToken) {
		t.Fatalf("after a's fence came back, PING %v, want a new fence for b (a's was %v)", fenceB.Params, fenceA.Params)
	}
	c.send(":irc.fake 404 me #n :Cannot send to channel (+m)")
	f := rec.next(t, "failure", func(ev any) bool { _, ok := ev.(recFailed); return ok }).(recFailed)
	if f.legacyID != idB || f.contact != room {
		t.Errorf("the refusal went to %+v, want b's message %q (a's is %q)", f, idB, idA)
	}
	// b's fence answered too: a refusal now is no message's.
	c.send(":irc.fake PONG irc.fake :%s", last(fenceB.Params))
	c.send(":irc.fake 404 me #n :Cannot send to channel (+m)")
	c.send(":other!o@h PRIVMSG #n :after")
	rec.message(t, "a message after the refusals", func(m *core.Message) bool { return m.Body == "after" })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	n := 0
	for _, ev := range rec.events {
		if _, ok := ev.(recFailed); ok {
			n++
		}
	}
	if n != 0 { // b's was taken above
		t.Errorf("%d more failures, want only b's: %s", n, dumpEvents(rec.events))
	}
}

// TestNoEchoLostConnection: when the connection to a server that does not
// echo is lost, a message sent since the last answered fence is reported
// as perhaps not sent (as one not yet echoed is, where the server
// echoes); one before the fence is not.
func TestNoEchoLostConnection(t *testing.T) {
	const room = "#n%127.0.0.1"
	rec, c, send := noEchoRoom(t, room)
	send("delivered")
	fence := c.expect(t, "PING")
	c.send(":irc.fake PONG irc.fake :%s", last(fence.Params))
	unsure := send("unsure")
	c.expect(t, "PING") // its fence, never answered
	rec.message(t, "unsure reflected", func(m *core.Message) bool { return m.Body == "unsure" })
	c.close()
	f := rec.next(t, "failure", func(ev any) bool { _, ok := ev.(recFailed); return ok }).(recFailed)
	if f.legacyID != unsure || !strings.Contains(errorText(f.err), "may not have been sent") {
		t.Errorf("after the connection was lost: %+v, want the unsure message (%q) reported", f, unsure)
	}
	rec.message(t, "disconnected notice", func(m *core.Message) bool { return strings.HasPrefix(m.Body, "Disconnected from IRC") })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ev := range rec.events {
		if f, ok := ev.(recFailed); ok {
			t.Errorf("another failure: %+v (the delivered message's fence was answered)", f)
		}
	}
}

func TestReconnectRejoins(t *testing.T) {
	srv := newFakeServer(t, allCaps...)
	srv.set(func() { srv.names["#r"] = "stays!s@h goes!g@h" })
	s, rec := startSession(t, srv, nil, nil)
	const room = "#r%127.0.0.1"
	_ = s.JoinRoom(context.Background(), room, "me", "")
	c := srv.nextConn()
	rec.next(t, "joined", isJoined(room))
	srv.set(func() { srv.names["#r"] = "stays!s@h comes!c@h" })
	c.close()
	rec.message(t, "disconnected notice", func(m *core.Message) bool {
		return m.Nick == "" && strings.HasPrefix(m.Body, "Disconnected from IRC") && strings.Contains(m.Body, "reconnecting")
	})
	rec.next(t, "transient failure", func(ev any) bool { st, ok := ev.(recState); return ok && st.st == core.StateTransientFail })
	// A message sent meanwhile waits for the channel.
	sent := make(chan error, 1)
	go func() {
		_, err := s.Send(context.Background(), &core.Message{Contact: room, Groupchat: true, Body: "during the outage", XMPPID: "o1"})
		sent <- err
	}()
	c2 := srv.nextConn()
	c2.expect(t, "JOIN")
	if m := c2.expect(t, "PRIVMSG"); m.Params[1] != "during the outage" {
		t.Errorf("after the rejoin: %v", m.Params)
	}
	if err := <-sent; err != nil {
		t.Errorf("Send during the outage: %v", err)
	}
	rec.next(t, "goes left", func(ev any) bool { l, ok := ev.(recLeft); return ok && l.nick == "goes" })
	rec.next(t, "comes joined", func(ev any) bool { p, ok := ev.(recPresence); return ok && p.o.Nick == "comes" })
	rec.message(t, "reconnected notice", func(m *core.Message) bool { return m.Nick == "" && m.Body == "Reconnected to IRC" })
	rec.next(t, "connected", func(ev any) bool { st, ok := ev.(recState); return ok && st.st == core.StateConnected })
}

func TestPingTimeout(t *testing.T) {
	srv := newFakeServer(t)
	s, rec := startSession(t, srv, nil, map[string]string{dPingInterval: "150ms", dPingTimeout: "150ms"})
	_ = s.JoinRoom(context.Background(), "#p%127.0.0.1", "me", "")
	c := srv.nextConn()
	srv.set(func() { c.quiet = true })
	rec.next(t, "joined", isJoined("#p%127.0.0.1"))
	start := time.Now()
	c.expect(t, "PING")
	rec.message(t, "ping timeout", func(m *core.Message) bool { return strings.Contains(m.Body, "ping timeout") })
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("timeout noticed after %v", d)
	}
	srv.nextConn() // and back
}

// TestKeepalive: a silent connection PINGs the server and takes its
// PONG (with a server-time tag) as the answer, round after round, without
// showing it to the user; the server's own PING gets a PONG with its
// parameters; the connection stays up throughout.
func TestKeepalive(t *testing.T) {
	srv := newFakeServer(t)
	s, rec := startSession(t, srv, nil, map[string]string{dPingInterval: "150ms", dPingTimeout: "150ms"})
	_ = s.JoinRoom(context.Background(), "#k%127.0.0.1", "me", "")
	c := srv.nextConn()
	rec.next(t, "joined", isJoined("#k%127.0.0.1"))
	for i := range 4 {
		p := c.expect(t, "PING")
		if len(p.Params) != 1 || !strings.HasPrefix(p.Params[0], keepaliveToken) {
			t.Fatalf("keepalive PING %d: %v", i, p.Params)
		}
		// The fake server answers; with a tag, as InspIRCd does.
		c.send("@time=2026-12-07T10:00:00.000Z :irc.fake PONG irc.fake :%s", p.Params[0])
	}
	c.send("@time=2026-12-07T10:00:00.000Z :irc.fake PING :irc.fake-42")
	if m := c.expect(t, "PONG"); len(m.Params) != 1 || m.Params[0] != "irc.fake-42" {
		t.Errorf("PONG to the server's PING: %v", m.Params)
	}
	c.send(":irc.fake PING irc.fake two")
	if m := c.expect(t, "PONG"); len(m.Params) != 2 || m.Params[0] != "irc.fake" || m.Params[1] != "two" {
		t.Errorf("PONG to a PING of two parameters: %v", m.Params)
	}
	c.send(":other!u@h PRIVMSG #k :still here")
	rec.message(t, "a message after the keepalives", func(m *core.Message) bool { return m.Body == "still here" })
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for _, ev := range rec.events {
		if m, ok := ev.(*core.Message); ok && (strings.Contains(m.Body, "ping timeout") || strings.Contains(m.Body, keepaliveToken) || strings.Contains(m.Body, "PONG")) {
			t.Errorf("the keepalive reached the user: %+v", *m)
		}
		if st, ok := ev.(recState); ok && st.st != core.StateConnected {
			t.Errorf("the connection went %v during the keepalives", st)
		}
	}
}

func TestFloodControl(t *testing.T) {
	srv := newFakeServer(t)
	s, rec := startSession(t, srv, nil, map[string]string{dFloodBurst: "3", dFloodRate: "20"})
	ctx := context.Background()
	_ = s.JoinRoom(ctx, "#f%127.0.0.1", "me", "")
	c := srv.nextConn()
	rec.next(t, "joined", isJoined("#f%127.0.0.1"))
	time.Sleep(200 * time.Millisecond) // the JOIN's token comes back
	start := time.Now()
	// Send returns once every line is written: 3 at once, then 10 at
	// 20/s, about 0.5 s.
	if _, err := s.Send(ctx, &core.Message{Contact: "#f%127.0.0.1", Groupchat: true, Body: strings.Repeat("line\n", 13)}); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 400*time.Millisecond || d > 2*time.Second {
		t.Errorf("13 lines with burst 3 and rate 20/s took %v", d)
	}
	for i := 0; i < 13; i++ {
		c.expect(t, "PRIVMSG")
	}
}

func TestServerRefusals(t *testing.T) {
	srv := newFakeServer(t, allCaps...)
	s, rec := startSession(t, srv, nil, nil)
	ctx := context.Background()
	// Not an allowed server.
	_ = s.JoinRoom(ctx, "#x%irc.elsewhere.example", "me", "")
	e := rec.next(t, "not allowed", func(ev any) bool { _, ok := ev.(recError); return ok }).(recError)
	var ce *core.Error
	if !errors.As(e.err, &ce) || ce.Condition != stanza.NotAllowed || !strings.Contains(ce.Text, "irc.elsewhere.example") {
		t.Errorf("error = %v", e.err)
	}
	// A banned channel.
	srv.set(func() { srv.banned["#closed"] = true })
	_ = s.JoinRoom(ctx, "#ok%127.0.0.1", "me", "")
	srv.nextConn()
	rec.next(t, "joined", isJoined("#ok%127.0.0.1"))
	_ = s.JoinRoom(ctx, "#closed%127.0.0.1", "me", "")
	e = rec.next(t, "banned", func(ev any) bool { x, ok := ev.(recError); return ok && x.room == "#closed%127.0.0.1" }).(recError)
	if !errors.As(e.err, &ce) || ce.Condition != stanza.Forbidden {
		t.Errorf("banned: %v", e.err)
	}
}

// secretRecorder is a recorder whose sink offers sealed state, as core's
// does when it implements core.SecretSink.
type secretRecorder struct {
	*recorder
	secrets *memStore
}

func (r secretRecorder) Secrets() core.StateStore { return r.secrets }

func submit(vals map[string]string) *registration.Submission {
	raw := map[string][]string{}
	for k, v := range vals {
		raw[k] = []string{v}
	}
	return &registration.Submission{Form: true, Raw: raw}
}

// TestConfigureNetwork runs the "Configure network" command: settings go
// to the account state, the password to the sealed state, and the next
// connection to that network uses them.
func TestConfigureNetwork(t *testing.T) {
	srv := newFakeServer(t, "sasl", "echo-message")
	srv.set(func() { srv.sasl = "netpass" })
	rec := newRecorder(t)
	sr := secretRecorder{recorder: rec, secrets: &memStore{m: map[string]string{}}}
	tr := New()
	d := map[string]string{dAllowedServers: "127.0.0.1", dPort: strconv.Itoa(srv.port()), dTLS: "false", dReconnectMin: "50ms"}
	s := tr.NewSession(&core.Account{ID: 1, JID: "cfg@a.test", Defaults: d}, sr).(*session)
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); <-s.done.Chan() }()
	go s.Run(ctx)

	acct := &store.Account{ID: 1, JID: "cfg@a.test"}
	run := func(stage int, state any, vals map[string]string) *core.CommandResponse {
		req := &core.CommandRequest{Account: acct, Stage: stage, State: state}
		if vals != nil {
			req.Form = submit(vals)
		}
		resp := tr.configureNetwork(ctx, req)
		if resp.Err != nil {
			t.Fatalf("stage %d: %v", stage, resp.Err)
		}
		return resp
	}
	run(0, nil, nil)
	r1 := run(1, nil, map[string]string{fNetwork: "127.0.0.1"})
	if r1.State != "127.0.0.1" || r1.Form == nil {
		t.Fatalf("stage 1: %+v", r1)
	}
	run(2, "127.0.0.1", map[string]string{fNick: "cfgnick", fAutojoin: "#a, #b", fAuth: authSASL, fPassword: "netpass", fTLS: "default"})
	if v, _, _ := sr.secrets.Get(ctx, netPasswordKey("127.0.0.1")); v != "netpass" {
		t.Errorf("sealed password = %q", v)
	}
	if v, _, _ := rec.store.Get(ctx, netStateKey("127.0.0.1")); strings.Contains(v, "netpass") || !strings.Contains(v, "cfgnick") {
		t.Errorf("account state = %q", v)
	}
	// The next connection: SASL with the stored password, the nick, the
	// channels.
	_ = s.JoinRoom(ctx, "#a%127.0.0.1", "ignored", "")
	c := srv.nextConn()
	if !c.caps["sasl"] || c.nick != "cfgnick" {
		t.Errorf("caps %v nick %q: the network's nick overrides the room's", c.caps, c.nick)
	}
	rec.next(t, "joined", isJoined("#a%127.0.0.1"))

	// A new session reads it all back from the stores.
	s2 := tr.NewSession(&core.Account{ID: 1, JID: "cfg@a.test", Defaults: d}, sr).(*session)
	s2.ctx = ctx
	s2.loadNetConfig(ctx)
	if cfg := s2.configFor("127.0.0.1"); cfg.nick != "cfgnick" || cfg.password != "netpass" || cfg.auth != authSASL || len(cfg.autojoin) != 2 {
		t.Errorf("config after reload: %+v", cfg)
	}
}

// Core's user goroutine asks for joins while the session may be waiting
// to report to it (core's queue full: here RoomJoined blocks). The joins
// must not wait for the session, or both wait until a time-out and the
// joins fail; with 40 rooms the session's event queue would be full.
func TestJoinsNeverWaitForTheSession(t *testing.T) {
	srv := newFakeServer(t, allCaps...)
	s, rec := startSession(t, srv, nil, nil)
	rec.holdJoined, rec.inJoined = make(chan struct{}), make(chan struct{}, 1)
	release := sync.OnceFunc(func() { close(rec.holdJoined) })
	t.Cleanup(release) // before the session's own cleanup waits for it
	ctx := context.Background()
	if err := s.JoinRoom(ctx, "#r0%127.0.0.1", "me", ""); err != nil {
		t.Fatal(err)
	}
	c := srv.nextConn()
	select {
	case <-rec.inJoined:
	case <-time.After(wait):
		t.Fatal("the first join never completed")
	}
	done := make(chan error, 1)
	go func() {
		for i := 1; i <= 40; i++ {
			jctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := s.JoinRoom(jctx, fmt.Sprintf("#r%d%%127.0.0.1", i), "me", "")
			cancel()
			if err != nil {
				done <- fmt.Errorf("join %d: %w", i, err)
				return
			}
		}
		done <- nil
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("a join waited for the blocked session: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("joins still waiting for the blocked session")
	}
	release()
	for i := 0; i <= 40; i++ {
		rec.next(t, "joined", isJoined(fmt.Sprintf("#r%d%%127.0.0.1", i)))
	}
	_ = c
}

// TestStartKeepsNoGoroutine: Start returns at once, the session works
// without a goroutine waiting in it, over TLS too (the poller reads both
// kinds of connection), and when ctx is done it says QUIT and calls done
// once.
func TestStartKeepsNoGoroutine(t *testing.T) {
	t.Run("plain", func(t *testing.T) { startKeepsNoGoroutine(t, newFakeServer(t), nil) })
	t.Run("tls", func(t *testing.T) { startKeepsNoGoroutine(t, newFakeTLSServer(t), fakeTLS) })
}

func startKeepsNoGoroutine(t *testing.T, srv *fakeServer, defaults map[string]string) {
	rec := newRecorder(t)
	d := map[string]string{dAllowedServers: "127.0.0.1", dPort: strconv.Itoa(srv.port()), dTLS: "false"}
	maps.Copy(d, defaults)
	s := New().NewSession(&core.Account{ID: 1, JID: "st@a.test", Defaults: d}, rec).(*session)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var calls atomic.Int32
	ended := make(chan struct{})
	s.Start(ctx, func() {
		if calls.Add(1) == 1 {
			close(ended)
		}
	})
	const room = "#st%127.0.0.1"
	if err := s.JoinRoom(ctx, room, "st", ""); err != nil {
		t.Fatal(err)
	}
	c := srv.nextConn()
	c.expect(t, "JOIN")
	rec.next(t, "joined", isJoined(room))
	// Idle: no goroutine is in the session's or the connection's code
	// (the poller reads the connection); tests do not run in parallel
	// here.
	for deadline := time.Now().Add(wait); ; {
		buf := make([]byte, 1<<20)
		all := string(buf[:runtime.Stack(buf, true)])
		var frames []string // not the "created by" lines
		for _, l := range strings.Split(all, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(l), "created by ") {
				frames = append(frames, l)
			}
		}
		if f := strings.Join(frames, "\n"); !strings.Contains(f, "irc.(*session).") && !strings.Contains(f, "irc.(*conn).") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a goroutine is still in the idle session:\n%s", all)
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case <-ended:
		t.Fatal("done called while ctx runs")
	default:
	}

	cancel()
	c.expect(t, "QUIT")
	select {
	case <-ended:
	case <-time.After(wait):
		t.Fatal("done not called after ctx was done")
	}
	select {
	case <-s.done.Chan():
	default:
		t.Error("done called before the session ended")
	}
	time.Sleep(50 * time.Millisecond)
	if n := calls.Load(); n != 1 {
		t.Errorf("done called %d times", n)
	}
}

// holdWelcomes makes srv hold every welcome until release (or the test's
// end).
func holdWelcomes(t *testing.T, srv *fakeServer) (release func()) {
	hold := make(chan struct{})
	srv.set(func() { srv.holdWelcome, srv.held = hold, make(chan *fakeConn, 16) })
	var once sync.Once
	release = func() { once.Do(func() { close(hold) }) }
	t.Cleanup(release)
	return release
}

func nextHeld(t *testing.T, srv *fakeServer) *fakeConn {
	t.Helper()
	select {
	case c := <-srv.held:
		return c
	case <-time.After(wait):
		t.Fatal("no registration reached the fake server")
		return nil
	}
}

// inIRCCode reports whether a goroutine runs (or waits) in this
// package's connection code: a dial, a registration, a connection.
func inIRCCode() (string, bool) {
	buf := make([]byte, 1<<20)
	all := string(buf[:runtime.Stack(buf, true)])
	for _, l := range strings.Split(all, "\n") {
		if strings.HasPrefix(strings.TrimSpace(l), "created by ") {
			continue
		}
		for _, f := range []string{"irc.dialAndRegister", "irc.(*registrar).", "irc.(*conn)."} {
			if strings.Contains(l, f) {
				return all, true
			}
		}
	}
	return "", false
}

// TestRegistrationKeepsNoGoroutine: while servers take their time to
// welcome the users' connections (on most networks, a second or more
// looking the client's host and ident up), no goroutine waits for each:
// the poller reads the registrations. Once welcomed, the rooms join.
func TestRegistrationKeepsNoGoroutine(t *testing.T) {
	t.Run("plain", func(t *testing.T) { registrationKeepsNoGoroutine(t, newFakeServer(t), nil) })
	t.Run("tls", func(t *testing.T) { registrationKeepsNoGoroutine(t, newFakeTLSServer(t), fakeTLS) })
}

func registrationKeepsNoGoroutine(t *testing.T, srv *fakeServer, defaults map[string]string) {
	release := holdWelcomes(t, srv)
	const n = 4
	var recs []*recorder
	for i := range n {
		s, rec := startSession(t, srv, nil, defaults)
		if err := s.JoinRoom(context.Background(), fmt.Sprintf("#r%d%%127.0.0.1", i), fmt.Sprintf("u%d", i), ""); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, rec)
	}
	for range n {
		nextHeld(t, srv)
	}
	// A second: the poller may be in registration code for a moment; a
	// goroutine per registration would wait for the welcome (until the
	// connect_timeout of 3 s).
	for deadline := time.Now().Add(time.Second); ; {
		all, busy := inIRCCode()
		if !busy {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a goroutine waits in a registration:\n%s", all)
		}
		time.Sleep(10 * time.Millisecond)
	}
	release()
	for i, rec := range recs {
		rec.next(t, "joined", isJoined(fmt.Sprintf("#r%d%%127.0.0.1", i)))
	}
}

// TestRegistrationTimeout: a server that never welcomes the connection
// within connect_timeout: the join fails with a time-out the user can
// read, and the connection is closed.
func TestRegistrationTimeout(t *testing.T) {
	for _, tc := range []struct {
		name     string
		srv      func(testing.TB, ...string) *fakeServer
		defaults map[string]string
	}{{"plain", newFakeServer, nil}, {"tls", newFakeTLSServer, fakeTLS}} {
		t.Run(tc.name, func(t *testing.T) {
			srv := tc.srv(t)
			holdWelcomes(t, srv)
			d := map[string]string{dConnectTimeout: "300ms"}
			maps.Copy(d, tc.defaults)
			s, rec := startSession(t, srv, nil, d)
			_ = s.JoinRoom(context.Background(), "#slow%127.0.0.1", "me", "")
			fc := nextHeld(t, srv)
			e := rec.next(t, "time-out", func(ev any) bool { _, ok := ev.(recError); return ok }).(recError)
			var ce *core.Error
			if !errors.As(e.err, &ce) || ce.Condition != stanza.RemoteServerTimeout || !strings.Contains(ce.Text, "did not complete the registration in time") {
				t.Errorf("error = %v", e.err)
			}
			_ = fc.c.SetReadDeadline(time.Now().Add(wait))
			if _, err := io.Copy(io.Discard, fc.r); err != nil {
				t.Errorf("the connection was not closed: %v", err)
			}
		})
	}
}

// TestSessionEndsDuringRegistration: a session that ends while its
// connection is being registered closes it, and ends.
func TestSessionEndsDuringRegistration(t *testing.T) {
	srv := newFakeServer(t)
	holdWelcomes(t, srv)
	s := New().NewSession(&core.Account{ID: 1, JID: "tester@a.test", Values: map[string]string{}, Defaults: fakeDefaults(srv, nil)}, newRecorder(t)).(*session)
	ctx, cancel := context.WithCancel(context.Background())
	go s.Run(ctx)
	_ = s.JoinRoom(context.Background(), "#r%127.0.0.1", "me", "")
	fc := nextHeld(t, srv)
	cancel()
	select {
	case <-s.done.Chan():
	case <-time.After(wait):
		t.Fatal("the session did not end")
	}
	_ = fc.c.SetReadDeadline(time.Now().Add(wait))
	if _, err := io.Copy(io.Discard, fc.r); err != nil {
		t.Errorf("the connection was not closed: %v", err)
	}
}

// TestTLSLinesReadWithRegistration: lines that came in the same TLS
// record as the end of registration, more than registration's read
// took, are handed on at once, not when the server next sends something
// (crypto/tls holds them decrypted, where the poller does not look).
func TestTLSLinesReadWithRegistration(t *testing.T) {
	srv := newFakeTLSServer(t)
	const n = 200
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, ":op!o@h PRIVMSG tester :early line %d\r\n", i)
	}
	srv.set(func() { srv.afterWelcome = strings.TrimSuffix(b.String(), "\r\n") })
	s, rec := startSession(t, srv, nil, fakeTLS)
	if _, err := s.Send(context.Background(), &core.Message{Contact: "op%127.0.0.1", Body: "hi"}); err != nil {
		t.Fatal(err)
	}
	srv.nextConn().expect(t, "PRIVMSG")
	for i := 0; i < n; i++ {
		m := rec.message(t, fmt.Sprintf("early line %d", i), func(m *core.Message) bool { return m.Contact == "op%127.0.0.1" })
		if want := fmt.Sprintf("early line %d", i); m.Body != want {
			t.Fatalf("got %q, want %q", m.Body, want)
		}
	}
}

// TestSlowSessionHoldsUpNoOther: a session that cannot keep up (core
// does not take its messages) stops reading its own connection only: the
// poller reads the other sessions' connections meanwhile, and the slow
// one's lines all arrive, in order, once it catches up. Over TLS, the
// lines come in records of many lines, which crypto/tls holds decrypted
// while the session is behind.
func TestSlowSessionHoldsUpNoOther(t *testing.T) {
	t.Run("plain", func(t *testing.T) { slowSessionHoldsUpNoOther(t, newFakeServer(t), nil) })
	t.Run("tls", func(t *testing.T) { slowSessionHoldsUpNoOther(t, newFakeTLSServer(t), fakeTLS) })
}

func slowSessionHoldsUpNoOther(t *testing.T, srv *fakeServer, defaults map[string]string) {
	ctx := context.Background()
	slow, slowRec := startSession(t, srv, nil, defaults)
	slowRec.holdDeliver = make(chan struct{})
	const slowRoom, fastRoom = "#slow%127.0.0.1", "#fast%127.0.0.1"
	if err := slow.JoinRoom(ctx, slowRoom, "slow", ""); err != nil {
		t.Fatal(err)
	}
	sc := srv.nextConn()
	sc.expect(t, "JOIN")
	slowRec.next(t, "slow joined", isJoined(slowRoom))
	fast, fastRec := startSession(t, srv, nil, defaults)
	if err := fast.JoinRoom(ctx, fastRoom, "fast", ""); err != nil {
		t.Fatal(err)
	}
	fc := srv.nextConn()
	fc.expect(t, "JOIN")
	fastRec.next(t, "fast joined", isJoined(fastRoom))

	// Far more lines, in one write, than a session queues.
	const n = 500
	var b strings.Builder
	for i := 0; i < n; i++ {
		fmt.Fprintf(&b, ":op!o@h PRIVMSG #slow :line %d\r\n", i)
	}
	sc.send("%s", strings.TrimSuffix(b.String(), "\r\n"))
	time.Sleep(100 * time.Millisecond) // the poller meets the full queue
	fc.send(":op!o@h PRIVMSG #fast :still read")
	if m := fastRec.message(t, "the other session's message", func(m *core.Message) bool { return m.Contact == fastRoom }); m.Body != "still read" {
		t.Errorf("fast session got %q", m.Body)
	}
	close(slowRec.holdDeliver)
	for i := 0; i < n; i++ {
		m := slowRec.message(t, fmt.Sprintf("line %d", i), func(m *core.Message) bool { return m.Contact == slowRoom })
		if want := fmt.Sprintf("line %d", i); m.Body != want {
			t.Fatalf("got %q, want %q", m.Body, want)
		}
	}
}

// TestPrivateIdleQuits: a connection used only for private chats says
// QUIT once no private message went either way for timing.privateIdle; the
// session's tick, which is set only while something waits to expire,
// does it.
func TestPrivateIdleQuits(t *testing.T) {
	tr := New()
	tr.timing.privateIdle, tr.timing.tick = 300*time.Millisecond, 50*time.Millisecond
	srv := newFakeServer(t)
	s, _ := startSessionOn(t, tr, newRecorder(t), nil, fakeDefaults(srv, nil))
	start := time.Now()
	if _, err := s.Send(context.Background(), &core.Message{Contact: "plain%127.0.0.1", Body: "hi"}); err != nil {
		t.Fatal(err)
	}
	c := srv.nextConn()
	if m := c.expect(t, "PRIVMSG"); m.Params[0] != "plain" {
		t.Errorf("PRIVMSG %v", m.Params)
	}
	c.expect(t, "QUIT")
	if d := time.Since(start); d < tr.timing.privateIdle {
		t.Errorf("QUIT after %v, before the %v of idleness", d, tr.timing.privateIdle)
	}
}

func TestParseFingerprint(t *testing.T) {
	sum := sha256.Sum256([]byte("a certificate"))
	text := fingerprintText(sum[:])
	if len(text) != 95 || strings.ToUpper(text) != text {
		t.Fatalf("fingerprintText = %q, want 32 upper-case hex pairs with colons", text)
	}
	for _, in := range []string{text, strings.ToLower(text), strings.ReplaceAll(text, ":", ""), strings.ReplaceAll(text, ":", " "), " " + text + "\n"} {
		got, ok := parseFingerprint(in)
		if !ok || !bytes.Equal(got, sum[:]) {
			t.Errorf("parseFingerprint(%q) = %x, %v", in, got, ok)
		}
	}
	for _, in := range []string{"", "AB:CD", text + ":00", strings.Replace(text, "A", "G", 1), strings.Repeat("0", 63)} {
		if _, ok := parseFingerprint(in); ok && in != text {
			t.Errorf("parseFingerprint(%q) accepted", in)
		}
		if checkFingerprint(in) == nil && in != text {
			t.Errorf("checkFingerprint(%q) accepted", in)
		}
	}
}

func TestModerationLines(t *testing.T) {
	host := func(h string) *member { m := &member{modes: "ov"}; m.host = intern(h); return m }
	lines := func(it core.RoomChange, m *member) []string {
		var out []string
		for _, l := range moderationLines("#c", it, m, "qaohv") {
			s, err := l.Line()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, strings.TrimRight(s, "\r\n"))
		}
		return out
	}
	for _, tc := range []struct {
		it   core.RoomChange
		m    *member
		want []string
	}{
		{core.RoomChange{Nick: "bob", Role: "none", Reason: "spam\nQUIT"}, nil, []string{"KICK #c bob :spam QUIT"}},
		{core.RoomChange{Nick: "bob", Role: "none"}, nil, []string{"KICK #c bob"}},
		{core.RoomChange{Nick: "bob", Role: "moderator"}, nil, []string{"MODE #c +o bob"}},
		{core.RoomChange{Nick: "bob", Role: "participant"}, host("h"), []string{"MODE #c -o bob"}},
		{core.RoomChange{Nick: "bob", Role: "participant"}, nil, nil},
		{core.RoomChange{Nick: "bob", Role: "visitor"}, host("h"), []string{"MODE #c -o bob", "MODE #c -v bob"}},
		{core.RoomChange{Nick: "bob", Affiliation: "member"}, nil, []string{"MODE #c +v bob"}},
		{core.RoomChange{Nick: "bob", Affiliation: "admin", Role: "moderator"}, nil, []string{"MODE #c +o bob"}},
		{core.RoomChange{Nick: "bob", Affiliation: "outcast"}, host("evil.example"), []string{"MODE #c +b *!*@evil.example", "KICK #c bob"}},
		{core.RoomChange{Nick: "bob", Affiliation: "outcast"}, nil, []string{"MODE #c +b bob!*@*", "KICK #c bob"}},
		{core.RoomChange{Nick: "bad nick\r\nQUIT", Role: "none"}, nil, nil},
		// Ban list patterns: banned and unbanned as they are.
		{core.RoomChange{Mask: "*!*@spam.example", Affiliation: "outcast"}, nil, []string{"MODE #c +b *!*@spam.example"}},
		{core.RoomChange{Mask: "*!*@spam.example", Affiliation: "none"}, nil, []string{"MODE #c -b *!*@spam.example"}},
		{core.RoomChange{Mask: "$a:troll", Affiliation: "none"}, nil, []string{"MODE #c -b $a:troll"}},
		{core.RoomChange{Mask: "a b", Affiliation: "outcast"}, nil, nil},
		{core.RoomChange{Mask: ":x", Affiliation: "outcast"}, nil, nil},
		{core.RoomChange{Mask: "x\r\nQUIT", Affiliation: "outcast"}, nil, nil},
	} {
		if got := lines(tc.it, tc.m); !slices.Equal(got, tc.want) {
			t.Errorf("%+v: %q, want %q", tc.it, got, tc.want)
		}
	}
}

func TestParseCommands(t *testing.T) {
	msgs, err := parseCommands("/MODE me +x\n\n  PRIVMSG Q@CServe.quakenet.org :AUTH me pw  \r\nJOIN #a")
	if err != nil || len(msgs) != 3 || msgs[0].Command != "MODE" || msgs[1].Params[1] != "AUTH me pw" || msgs[2].Command != "JOIN" {
		t.Errorf("parseCommands = %v, %v", msgs, err)
	}
	for _, bad := range []string{"QUIT :bye", "CAP REQ :sasl", ":src PRIVMSG a :b", "@tag=1 PRIVMSG a :b", strings.Repeat("PING x\n", maxCommands+1)} {
		if _, err := parseCommands(bad); err == nil {
			t.Errorf("parseCommands(%q) accepted", bad)
		}
	}
	if msgs, err := parseCommands(" - "); err != nil || len(msgs) != 0 {
		t.Errorf(`"-" (remove them) = %v, %v; want no command (a registration storing it must not send "-")`, msgs, err)
	}
	for line, want := range map[string]string{
		"PRIVMSG Q@CServe.quakenet.org :AUTH me pw": "PRIVMSG Q@CServe.quakenet.org :<redacted>",
		"PRIVMSG X :login me pw":                    "PRIVMSG X :<redacted>",
		"PRIVMSG #chan :authentic text":             "PRIVMSG #chan :authentic text",
	} {
		if got := redactLine(line); got != want {
			t.Errorf("redactLine(%q) = %q, want %q", line, got, want)
		}
	}
}

// TestConfigLines: a room configuration change is the MODE lines between
// two sets of modes, as many changes a line as the server's MODES says;
// a 324 line reads back as the configuration it set.
func TestConfigLines(t *testing.T) {
	inspircd := newFeatures(map[string]string{"CHANMODES": "IXbeg,k,FHJLfjl,ABCDKMNOPQRSTcimnprstuz", "MODES": "20", "PREFIX": "(qaohv)~&@%+"})
	twoAtOnce := newFeatures(map[string]string{"CHANMODES": "b,k,l,imnst", "MODES": "2"})
	lines := func(f *features, old, new core.RoomConfig) []string {
		var out []string
		for _, l := range configLines(f, "#c", old, new) {
			s, err := l.Line()
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, strings.TrimRight(s, "\r\n"))
		}
		return out
	}
	open := core.RoomConfig{}
	closed := core.RoomConfig{Moderated: true, MembersOnly: true, Hidden: true, LockedSubject: true, Password: "k1", MaxUsers: 10}
	for _, tc := range []struct {
		f        *features
		old, new core.RoomConfig
		want     []string
	}{
		{inspircd, open, closed, []string{"MODE #c +mistkl k1 10"}},
		{inspircd, closed, open, []string{"MODE #c -misptkl k1"}},
		{inspircd, closed, closed, nil},
		// A new key: the old one is named to remove it first.
		{inspircd, core.RoomConfig{Password: "k1"}, core.RoomConfig{Password: "k2"}, []string{"MODE #c -k+k k1 k2"}},
		{inspircd, core.RoomConfig{MaxUsers: 5}, core.RoomConfig{MaxUsers: 50}, []string{"MODE #c +l 50"}},
		// No +p on this server, and two changes a line.
		{twoAtOnce, closed, open, []string{"MODE #c -mi", "MODE #c -st", "MODE #c -kl k1"}},
	} {
		if got := lines(tc.f, tc.old, tc.new); !slices.Equal(got, tc.want) {
			t.Errorf("%+v -> %+v: %q, want %q", tc.old, tc.new, got, tc.want)
		}
	}
	if rc := readModes(inspircd, "+ntklm", []string{"k1", "10"}); rc != (core.RoomConfig{Moderated: true, LockedSubject: true, Password: "k1", MaxUsers: 10}) {
		t.Errorf("readModes +ntklm k1 10 = %+v", rc)
	}
	// Modes with parameters the form does not show are skipped over.
	if rc := readModes(inspircd, "+fjsl", []string{"5:10", "3:5", "9"}); rc != (core.RoomConfig{Hidden: true, MaxUsers: 9}) {
		t.Errorf("readModes +fjsl = %+v", rc)
	}
	if rc := readModes(inspircd, "+kl", nil); rc != (core.RoomConfig{}) {
		t.Errorf("readModes without parameters = %+v", rc)
	}
}

// TestChathistoryLatest: the CHATHISTORY a join sends, within the
// server's and the client's limits, after the client's since.
func TestChathistoryLatest(t *testing.T) {
	since := time.Date(2026, 12, 6, 11, 0, 0, 500e6, time.UTC)
	for _, tc := range []struct {
		serverMax int
		h         core.HistoryRequest
		want      string
	}{
		{0, core.HistoryRequest{}, "CHATHISTORY LATEST #c * 50"},
		{20, core.HistoryRequest{}, "CHATHISTORY LATEST #c * 20"},
		{0, core.HistoryRequest{Max: 5}, "CHATHISTORY LATEST #c * 5"},
		{0, core.HistoryRequest{Since: since, Max: 80}, "CHATHISTORY LATEST #c timestamp=2026-12-06T11:00:00.500Z 50"},
	} {
		m := chathistoryLatest("#c", tc.serverMax, tc.h)
		l, err := m.Line()
		if err != nil || strings.TrimRight(l, "\r\n") != tc.want {
			t.Errorf("%d %+v: %q %v, want %q", tc.serverMax, tc.h, l, err, tc.want)
		}
	}
}

// TestModeQueryAnswers: a channel's modes asked for are answered by the
// 324, or ended by a refusal of the query itself (442), not by a 482
// about a change sent meanwhile.
func TestModeQueryAnswers(t *testing.T) {
	_, n, _ := fuzzSession(t)
	req := &modeReq{folded: "#c", at: time.Now(), reply: make(chan modeResult, 1)}
	n.rare().modeReqs = []*modeReq{req}
	feed := func(line string) {
		m, err := parseLine(line)
		if err != nil {
			t.Fatal(err)
		}
		n.handle(m, "")
	}
	feed(":irc 482 me #c :You must be a channel operator")
	select {
	case r := <-req.reply:
		t.Fatalf("a 482 answered the mode query: %+v", r)
	default:
	}
	feed(":irc 324 me #C +ntl 30")
	select {
	case r := <-req.reply:
		if r.err != nil || r.rc != (core.RoomConfig{LockedSubject: true, MaxUsers: 30}) {
			t.Errorf("324 answered %+v", r)
		}
	default:
		t.Fatal("the 324 did not answer the mode query")
	}
	req = &modeReq{folded: "#c", at: time.Now(), reply: make(chan modeResult, 1)}
	n.rare().modeReqs = []*modeReq{req}
	feed(":irc 442 me #c :You're not on that channel")
	if r := <-req.reply; r.err == nil {
		t.Error("a 442 did not end the mode query")
	}
	if n.netRare != nil && n.modeReqs != nil {
		t.Errorf("requests left: %v", n.modeReqs)
	}
}
