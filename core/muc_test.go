package core_test

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"transportd/core"
	"transportd/internal/xmpptest"
)

const nsMUCUser = "http://jabber.org/protocol/muc#user"

func statusCodes(el *core.Element) map[string]bool {
	codes := map[string]bool{}
	for _, c := range el.Child(nsMUCUser, "x").Children {
		if c.Name.Local == "status" {
			codes[c.Get("code")] = true
		}
	}
	return codes
}

// TestGroupChat joins a room of a group-chat transport from a real client
// without registering first, and checks what XEP-0045 clients rely on.
func TestGroupChat(t *testing.T) {
	env := xmpptest.Prosody(t)
	testGatewayWith(t, env, "echoroom", "echo5", "")
	const room = "#test@echo5.a.test"
	c := xmpptest.Dial(t, env, "user9@a.test", false)
	info := waitConnected(t, c, "echo5.a.test")
	if !contains(featureList(info), "http://jabber.org/protocol/muc") {
		t.Errorf("gateway does not advertise MUC: %s", info)
	}

	join := core.NewElement("", "presence", "to", room+"/me")
	join.Add(core.NewElement("http://jabber.org/protocol/muc", "x"))
	c.Send(join)
	bob := c.Expect(wait, "bob's presence", xmpptest.IsFrom("presence", room+"/bob", ""))
	if item := bob.Child(nsMUCUser, "x").Child("", "item"); item.Get("role") != "moderator" || item.Get("affiliation") != "admin" {
		t.Errorf("bob = %s", bob)
	}
	c.Expect(wait, "alice's presence", xmpptest.IsFrom("presence", room+"/alice", ""))
	self := c.Expect(wait, "self-presence", xmpptest.IsFrom("presence", room+"/me", ""))
	if !statusCodes(self)["110"] {
		t.Errorf("self-presence without status 110: %s", self)
	}
	subj := c.Expect(wait, "subject", xmpptest.IsFrom("message", room, "groupchat"))
	if subj.ChildText("", "subject") != "Welcome to #test" {
		t.Errorf("subject = %s", subj)
	}

	// Self-ping (XEP-0410): in the room, the room answers for the
	// client's own nick and for the legacy users; an unknown nick is
	// item-not-found; a room not joined says "join again".
	selfPing := func(to string) *core.Element {
		t.Helper()
		p := core.NewElement("", "iq", "type", "get", "to", to)
		p.Add(core.NewElement("urn:xmpp:ping", "ping"))
		return c.IQ(p)
	}
	for _, to := range []string{room + "/me", room + "/bob"} {
		if res := selfPing(to); res.Get("type") != "result" {
			t.Errorf("ping %s while joined = %s, want a result", to, res)
		}
	}
	if res := selfPing(room + "/nobody"); xmpptest.Condition(res) != "item-not-found" {
		t.Errorf("ping to a nick not in the room = %s, want item-not-found", res)
	}
	if res := selfPing("#other@echo5.a.test/me"); xmpptest.Condition(res) != "not-acceptable" || res.Child("", "error").Get("type") != "modify" {
		t.Errorf("self-ping to a room not joined = %s, want a not-acceptable (modify) error", res)
	}
	// The user's other client, which did not join, is not in the room.
	c2 := xmpptest.Dial(t, env, "user9@a.test", true)
	p2 := core.NewElement("", "iq", "type", "get", "to", room+"/me")
	p2.Add(core.NewElement("urn:xmpp:ping", "ping"))
	if res := c2.IQ(p2); xmpptest.Condition(res) != "not-acceptable" {
		t.Errorf("self-ping from a resource that did not join = %s, want not-acceptable", res)
	}
	c2.Close()

	msg := core.NewElement("", "message", "to", room, "type", "groupchat", "id", "g1")
	msg.AddText("", "body", "hello room")
	c.Send(msg)
	refl := c.Expect(wait, "reflection", xmpptest.IsFrom("message", room+"/me", "groupchat"))
	if refl.Get("id") != "g1" || refl.ChildText("", "body") != "hello room" {
		t.Errorf("reflection = %s", refl)
	}
	ans := c.Expect(wait, "alice's answer", xmpptest.IsFrom("message", room+"/alice", "groupchat"))
	if ans.ChildText("", "body") != "alice heard: hello room" {
		t.Errorf("answer = %s", ans)
	}

	// Nick change: 303 then the new nick.
	c.Send(core.NewElement("", "presence", "to", room+"/me2"))
	gone := c.Expect(wait, "nick change", xmpptest.IsFrom("presence", room+"/me", "unavailable"))
	codes := statusCodes(gone)
	if !codes["303"] || !codes["110"] || gone.Child(nsMUCUser, "x").Child("", "item").Get("nick") != "me2" {
		t.Errorf("nick change presence = %s", gone)
	}
	c.Expect(wait, "new nick", xmpptest.IsFrom("presence", room+"/me2", ""))

	// Subject change goes through the network.
	s := core.NewElement("", "message", "to", room, "type", "groupchat")
	s.AddText("", "subject", "new topic")
	c.Send(s)
	ns := c.Expect(wait, "new subject", func(el *core.Element) bool {
		return xmpptest.IsFrom("message", room, "groupchat")(el) && el.ChildText("", "subject") == "new topic"
	})
	if ns.Get("from") != room+"/bob" {
		t.Errorf("subject change from %q, want the occupant who set it", ns.Get("from"))
	}

	// A taken nick: the MUC conflict error clients understand.
	other := core.NewElement("", "presence", "to", "#other@echo5.a.test/taken")
	other.Add(core.NewElement("http://jabber.org/protocol/muc", "x"))
	c.Send(other)
	e := c.Expect(wait, "conflict", xmpptest.IsFrom("presence", "#other@echo5.a.test/taken", "error"))
	if xmpptest.Condition(e) != "conflict" {
		t.Errorf("taken nick: %s", e)
	}

	// Writing to a room one has not joined is refused.
	w := core.NewElement("", "message", "to", "#other@echo5.a.test", "type", "groupchat")
	w.AddText("", "body", "x")
	c.Send(w)
	if e := c.Expect(wait, "not joined", xmpptest.IsFrom("message", "#other@echo5.a.test", "error")); xmpptest.Condition(e) != "not-acceptable" {
		t.Errorf("message to a room not joined: %s", e)
	}

	// Leaving.
	c.Send(core.NewElement("", "presence", "to", room+"/me2", "type", "unavailable"))
	left := c.Expect(wait, "leave", xmpptest.IsFrom("presence", room+"/me2", "unavailable"))
	if !statusCodes(left)["110"] {
		t.Errorf("leave presence = %s", left)
	}
	// A client that believes it is still in (its leave lost, the gateway
	// restarted) learns from its self-ping that it must join again.
	if res := selfPing(room + "/me2"); xmpptest.Condition(res) != "not-acceptable" {
		t.Errorf("self-ping after leaving = %s, want not-acceptable", res)
	}

	// disco#info on the room.
	q := core.NewElement("", "iq", "type", "get", "to", room)
	q.Add(core.NewElement(nsDiscoI, "query"))
	res := c.IQ(q)
	if id := res.Child(nsDiscoI, "query").Child("", "identity"); id.Get("category") != "conference" {
		t.Errorf("room disco = %s", res)
	}
	if !contains(featureList(res), "http://jabber.org/protocol/muc#self-ping-optimization") {
		t.Errorf("room disco does not say it answers self-pings: %s", res)
	}
}

func featureList(info *core.Element) []string {
	var out []string
	for _, f := range info.Child(nsDiscoI, "query").Children {
		if f.Name.Local == "feature" {
			out = append(out, f.Get("var"))
		}
	}
	return out
}

// A room message the network could not take at once waits in the outbox;
// if the user leaves the room before it goes out, it is not sent (that
// would put the user back in the room on the network, or speak for them
// where they no longer are): the client gets an error for it instead.
func TestRoomMessageNotSentAfterLeave(t *testing.T) {
	env := xmpptest.Prosody(t)
	testGatewayWith(t, env, "echoroom", "echo6", "")
	const room = "#late@echo6.a.test"
	c := xmpptest.Dial(t, env, "user10@a.test", false)
	waitConnected(t, c, "echo6.a.test")
	join := core.NewElement("", "presence", "to", room+"/me")
	join.Add(core.NewElement("http://jabber.org/protocol/muc", "x"))
	c.Send(join)
	c.Expect(wait, "self-presence", xmpptest.IsFrom("presence", room+"/me", ""))
	c.Expect(wait, "subject", xmpptest.IsFrom("message", room, "groupchat"))

	msg := core.NewElement("", "message", "to", room, "type", "groupchat", "id", "late1")
	msg.AddText("", "body", "later: are you there?")
	c.Send(msg)
	c.Send(core.NewElement("", "presence", "to", room+"/me", "type", "unavailable"))
	c.Expect(wait, "leave", xmpptest.IsFrom("presence", room+"/me", "unavailable"))
	// The session ended with the last room; joining another starts it
	// again, and the outbox tries the message once more.
	other := core.NewElement("", "presence", "to", "#elsewhere@echo6.a.test/me")
	other.Add(core.NewElement("http://jabber.org/protocol/muc", "x"))
	c.Send(other)
	c.Expect(wait, "self-presence elsewhere", xmpptest.IsFrom("presence", "#elsewhere@echo6.a.test/me", ""))

	e := c.Expect(15*time.Second, "an error for the message", xmpptest.IsFrom("message", room, "error"))
	if e.Get("id") != "late1" || xmpptest.Condition(e) != "not-acceptable" {
		t.Errorf("error = %s, want not-acceptable for late1", e)
	}
	if el, err := c.Next(2*time.Second, func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Get("type") == "groupchat" && el.ChildText("", "body") != ""
	}); err == nil {
		t.Errorf("the message went to the room after the user left: %s", el)
	}
}

// A user who joined no room yet browses a server's rooms (disco#items on
// its JID): the session starts for it, answers, and stops a while after
// the last listing when nothing else wants it.
func TestBrowseRoomsWithoutARoom(t *testing.T) {
	defer core.SetBrowseFor(time.Second)()
	env := xmpptest.Prosody(t)
	testGatewayWith(t, env, "echoroom", "echo5", "")
	c := xmpptest.Dial(t, env, "user11@a.test", false)
	waitConnected(t, c, "echo5.a.test")
	if n := roomSessions("user11@a.test"); n != 0 {
		t.Fatalf("%d sessions before the listing", n)
	}
	res := c.IQ(core.NewElement("", "iq", "type", "get", "to", "srv@echo5.a.test").Add(core.NewElement("http://jabber.org/protocol/disco#items", "query")))
	if res.Get("type") != "result" {
		t.Fatalf("disco#items: %s", res)
	}
	var names []string
	for _, it := range res.FirstChild().Children {
		if it.Name.Local == "item" {
			names = append(names, it.Get("jid")+" "+it.Get("name"))
		}
	}
	if len(names) != 2 || !strings.Contains(names[0], "(2): on srv") {
		t.Fatalf("rooms listed: %q", names)
	}
	if n := roomSessions("user11@a.test"); n != 1 {
		t.Fatalf("%d sessions while browsing, want 1", n)
	}
	deadline := time.Now().Add(wait)
	for roomSessions("user11@a.test") != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the session started for the listing never stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestJoinBusyRoom joins a room that is talking (alice says a line every
// few milliseconds from the moment the network reports the join) from
// one client, then from a second client of the same user while it talks
// on. Each client gets the room's state first (XEP-0045: occupants,
// self-presence, history, subject, then live messages: a client may
// drop a message from a room it does not know it is in), and from then on
// every line in order, none twice, none missing. Before the fix, a line
// written while the state was on its way reached the client ahead of its
// self-presence, or overtook the history.
func TestJoinBusyRoom(t *testing.T) {
	env := xmpptest.Prosody(t)
	testGatewayWith(t, env, "echoroom", "echo5", "")
	const room = "#busy@echo5.a.test"
	join := func(c *xmpptest.Client) {
		p := core.NewElement("", "presence", "to", room+"/me")
		p.Add(core.NewElement("http://jabber.org/protocol/muc", "x"))
		c.Send(p)
	}
	// follow reads what the room sends c, in order, and checks it until
	// the line `until`; it returns the first line number c got. from: the
	// line c must get next, -1 for c's first join (it gets the room's
	// state first).
	follow := func(c *xmpptest.Client, name string, from, until int) int {
		t.Helper()
		var (
			self, subject = from >= 0, from >= 0
			first, next   = -1, from
		)
		for next <= until {
			el := c.Expect(wait, name+": the room's next stanza (line "+strconv.Itoa(next)+")", func(el *core.Element) bool {
				from := el.Get("from")
				return from == room || strings.HasPrefix(from, room+"/")
			})
			switch {
			case el.Name.Local == "presence":
				if el.Get("from") == room+"/me" && statusCodes(el)["110"] {
					self = true
				}
			case el.Name.Local == "message" && el.Child("", "subject") != nil:
				if !self {
					t.Fatalf("%s: the subject before the self-presence: %s", name, el)
				}
				subject = true
			case el.Name.Local == "message" && el.Get("type") == "groupchat":
				body := el.ChildText("", "body")
				n, err := strconv.Atoi(strings.TrimPrefix(body, "chatter "))
				if err != nil {
					t.Fatalf("%s: unexpected room message %s", name, el)
				}
				history := el.Child("urn:xmpp:delay", "delay") != nil
				switch {
				case !self:
					t.Fatalf("%s: %q before the self-presence", name, body)
				case !history && !subject:
					t.Fatalf("%s: live %q before the subject", name, body)
				case history && subject:
					t.Fatalf("%s: history %q after the subject", name, body)
				case next >= 0 && n != next:
					t.Fatalf("%s: %q after line %d (lost, repeated or out of order)", name, body, next-1)
				}
				if first < 0 {
					first = n
				}
				next = n + 1
			}
		}
		return first
	}

	c := xmpptest.Dial(t, env, "user18@a.test", false)
	waitConnected(t, c, "echo5.a.test")
	join(c)
	if first := follow(c, "first client", -1, 40); first != 0 {
		t.Errorf("first client: the room's lines began at %d, want 0", first)
	}
	c2 := xmpptest.Dial(t, env, "user18@a.test", false)
	join(c2)
	first2 := follow(c2, "second client", -1, busyLines-1)
	t.Logf("the second client joined at line %d", first2)
	follow(c, "first client, on", 41, busyLines-1)
}
