package irc

import (
	"crypto/sha256"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ergochat/irc-go/ircmsg"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// TestChannel drives one channel through everything a MUC user does and
// sees, with a real XMPP client on one side and raw IRC clients on
// InspIRCd on the other.
func TestChannel(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), nil)
	const (
		ch   = "#it-chan"
		room = "#it-chan%127.0.0.1@" + gwJID
	)
	op := dialRaw(t, e.irc, "rawop")
	op.join(ch)
	op.send("TOPIC", ch, "Hello \x02topic\x02")
	op.expect("TOPIC", cmdFrom("TOPIC", "rawop"))
	voiced := dialRaw(t, e.irc, "rawv")
	voiced.join(ch)
	op.send("MODE", ch, "+v", "rawv")
	op.expect("MODE", cmdFrom("MODE", "rawop"))

	c := onlineUser(t, e, "user20@b.test")
	self := joinRoom(t, c, room, "xuser")
	if self.Get("type") == "error" {
		t.Fatalf("join refused: %s", self)
	}
	// The occupants came before the self-presence, with their roles.
	opP := c.Expect(xwait, "rawop", xmpptest.IsFrom("presence", room+"/rawop", ""))
	if it := item(opP); it.Get("role") != "moderator" || it.Get("affiliation") != "admin" {
		t.Errorf("rawop = %s", opP)
	}
	vP := c.Expect(xwait, "rawv", xmpptest.IsFrom("presence", room+"/rawv", ""))
	if it := item(vP); it.Get("role") != "participant" || it.Get("affiliation") != "member" {
		t.Errorf("rawv = %s", vP)
	}
	subj := c.Expect(xwait, "subject", func(el *core.Element) bool {
		return xmpptest.IsFrom("message", room, "groupchat")(el) && el.Child("", "subject") != nil
	})
	if subj.ChildText("", "subject") != "Hello topic" {
		t.Errorf("subject = %s", subj)
	}
	op.expect("xuser's JOIN", cmdFrom("JOIN", "xuser"))

	// XMPP → IRC, with the reflection.
	m := groupchat(room, "hello irc")
	c.Send(m)
	if got := op.expect("PRIVMSG", cmdFrom("PRIVMSG", "xuser")); got.Params[0] != ch || got.Params[1] != "hello irc" {
		t.Errorf("IRC got %v", got.Params)
	}
	refl := c.Expect(xwait, "reflection", isGroupchatFrom(room+"/xuser", "hello irc"))
	if refl.Get("id") != m.Get("id") {
		t.Errorf("reflection id %q, want %q", refl.Get("id"), m.Get("id"))
	}
	c.Send(groupchat(room, "line one\nline two\n/me waves"))
	for _, want := range []string{"line one", "line two", "\x01ACTION waves\x01"} {
		if got := op.expect("PRIVMSG", cmdFrom("PRIVMSG", "xuser")); got.Params[1] != want {
			t.Errorf("IRC got %q, want %q", got.Params[1], want)
		}
	}
	long := strings.Repeat("ünïcödé ", 150)
	c.Send(groupchat(room, long))
	var pieces []string
	for len(strings.Join(pieces, "")) < len(long)-1 {
		pieces = append(pieces, op.expect("long PRIVMSG", cmdFrom("PRIVMSG", "xuser")).Params[1])
	}
	if strings.Join(pieces, "") != strings.TrimRight(long, " ") || len(pieces) < 3 {
		t.Errorf("long message arrived in %d pieces, rejoined equal: %v", len(pieces), strings.Join(pieces, "") == strings.TrimRight(long, " "))
	}

	// IRC → XMPP.
	op.send("PRIVMSG", ch, "\x02bold\x02 and \x0304colour")
	if got := c.Expect(xwait, "message from rawop", isGroupchatFrom(room+"/rawop", "")); got.ChildText("", "body") != "*bold* and colour" {
		t.Errorf("body = %q", got.ChildText("", "body"))
	}
	op.send("PRIVMSG", ch, "\x01ACTION dances\x01")
	c.Expect(xwait, "action", isGroupchatFrom(room+"/rawop", "/me dances"))
	op.send("NOTICE", ch, "maintenance soon")
	c.Expect(xwait, "notice", isGroupchatFrom(room+"/rawop", "[notice] maintenance soon"))

	// Presence: nick change, mode, topic, kick, part, quit.
	voiced.send("NICK", "rawv2")
	gone := c.Expect(xwait, "303", xmpptest.IsFrom("presence", room+"/rawv", "unavailable"))
	if !statusCodes(gone)["303"] || item(gone).Get("nick") != "rawv2" {
		t.Errorf("nick change = %s", gone)
	}
	c.Expect(xwait, "new nick", xmpptest.IsFrom("presence", room+"/rawv2", ""))
	op.send("MODE", ch, "+o", "rawv2")
	c.Expect(xwait, "op'd", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", room+"/rawv2", "")(el) && item(el).Get("role") == "moderator" && item(el).Get("affiliation") == "admin"
	})
	op.send("TOPIC", ch, "Second topic")
	c.Expect(xwait, "topic change", func(el *core.Element) bool {
		return xmpptest.IsFrom("message", room+"/rawop", "groupchat")(el) && el.ChildText("", "subject") == "Second topic"
	})
	op.send("KICK", ch, "rawv2", "enough")
	k := c.Expect(xwait, "kick", xmpptest.IsFrom("presence", room+"/rawv2", "unavailable"))
	if !statusCodes(k)["307"] || !strings.Contains(k.String(), "enough") {
		t.Errorf("kick = %s", k)
	}
	p := dialRaw(t, e.irc, "rawpart")
	p.join(ch)
	c.Expect(xwait, "rawpart joins", xmpptest.IsFrom("presence", room+"/rawpart", ""))
	p.send("PART", ch, "see you")
	if pp := c.Expect(xwait, "part", xmpptest.IsFrom("presence", room+"/rawpart", "unavailable")); statusCodes(pp)["307"] {
		t.Errorf("part shown as a kick: %s", pp)
	}
	q := dialRaw(t, e.irc, "rawquit")
	q.join(ch)
	c.Expect(xwait, "rawquit joins", xmpptest.IsFrom("presence", room+"/rawquit", ""))
	q.send("QUIT", "off to bed")
	if qq := c.Expect(xwait, "quit", xmpptest.IsFrom("presence", room+"/rawquit", "unavailable")); !strings.Contains(qq.ChildText("", "status"), "off to bed") {
		t.Errorf("quit = %s", qq)
	}

	// Away (away-notify) shows as the occupant's show.
	op.send("AWAY", "lunch")
	c.Expect(xwait, "away", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", room+"/rawop", "")(el) && el.ChildText("", "show") == "away" && el.ChildText("", "status") == "lunch"
	})
	op.send("AWAY")
	c.Expect(xwait, "back", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", room+"/rawop", "")(el) && el.Child("", "show") == nil
	})

	// Private messages both ways.
	op.send("PRIVMSG", "xuser", "psst")
	pm := c.Expect(xwait, "private message", xmpptest.IsFrom("message", "rawop%127.0.0.1@"+gwJID, "chat"))
	if pm.ChildText("", "body") != "psst" {
		t.Errorf("private = %s", pm)
	}
	// IRC has no read state: no receipt or marker is asked of the
	// client, which would answer each message with a stanza of its own.
	if pm.Child("urn:xmpp:receipts", "request") != nil || pm.Child("urn:xmpp:chat-markers:0", "markable") != nil {
		t.Errorf("private message asks for a receipt or marker: %s", pm)
	}
	reply := core.NewElement("", "message", "to", "rawop%127.0.0.1@"+gwJID, "type", "chat", "id", "pm1")
	reply.AddText("", "body", "psst back")
	c.Send(reply)
	if got := op.expect("private PRIVMSG", func(m ircmsg.Message) bool { return m.Command == "PRIVMSG" && m.Params[0] == "rawop" }); got.Params[1] != "psst back" {
		t.Errorf("IRC got %v", got.Params)
	}

	// A burst in one write from the client, private and room messages
	// mixed, read by the gateway together: the first written by the
	// stanza reader itself, the rest queued behind it for the session.
	// Every line arrives, in order, and each private message asking for a
	// receipt gets it (once its line was written).
	var burst strings.Builder
	for i := 0; i < 20; i++ {
		if i%2 == 0 {
			fmt.Fprintf(&burst, `<message to='rawop%%127.0.0.1@%s' type='chat' id='burst%d'><body>burst %d</body><request xmlns='urn:xmpp:receipts'/></message>`, gwJID, i, i)
		} else {
			fmt.Fprintf(&burst, `<message to='%s' type='groupchat' id='burst%d'><body>burst %d</body></message>`, room, i, i)
		}
	}
	if err := c.SendRaw(burst.String()); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		target := ch
		if i%2 == 0 {
			target = "rawop"
		}
		if got := op.expect("burst PRIVMSG", cmdFrom("PRIVMSG", "xuser")); got.Params[0] != target || got.Params[1] != fmt.Sprintf("burst %d", i) {
			t.Errorf("burst line %d: IRC got %v", i, got.Params)
		}
	}
	for i := 0; i < 20; i += 2 {
		id := fmt.Sprintf("burst%d", i)
		c.Expect(xwait, "receipt for "+id, func(el *core.Element) bool {
			r := el.Child("urn:xmpp:receipts", "received")
			return xmpptest.IsFrom("message", "rawop%127.0.0.1@"+gwJID, "*")(el) && r != nil && r.Get("id") == id
		})
	}

	// Injection: CR/LF in a body and a subject never reach the wire raw
	// (the XML decoder turns &#13; into a real CR).
	if err := c.SendRaw(`<message to='` + room + `' type='groupchat' id='inj'><body>evil&#13;&#10;QUIT :pwned&#13;PRIVMSG #it-chan :smuggled&#10;KICK #it-chan rawop</body></message>`); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := 0; i < 4; i++ {
		got = append(got, op.expect("injected lines", cmdFrom("PRIVMSG", "xuser")).Params[1])
	}
	if strings.Join(got, "|") != "evil|QUIT :pwned|PRIVMSG #it-chan :smuggled|KICK #it-chan rawop" {
		t.Errorf("injection arrived as %q", got)
	}
	// Topics need ops here (+t): first the refusal, shown in the room.
	ts := core.NewElement("", "message", "to", room, "type", "groupchat")
	ts.AddText("", "subject", "mine now")
	c.Send(ts)
	if n := c.Expect(xwait, "refusal", isGroupchatFrom(room, "")); !strings.Contains(n.ChildText("", "body"), "channel op") {
		t.Errorf("topic refusal = %s", n)
	}
	op.send("MODE", ch, "+o", "xuser")
	c.Expect(xwait, "xuser op'd", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", room+"/xuser", "")(el) && item(el).Get("role") == "moderator" && statusCodes(el)["110"]
	})
	if err := c.SendRaw(`<message to='` + room + `' type='groupchat'><subject>new&#13;&#10;KICK #it-chan rawop :x</subject></message>`); err != nil {
		t.Fatal(err)
	}
	if tp := op.expect("TOPIC", cmdFrom("TOPIC", "xuser")); tp.Params[1] != "new KICK #it-chan rawop :x" {
		t.Errorf("TOPIC = %q", tp.Params)
	}
	// A nick with CR/LF: Prosody or the gateway refuse it; nothing reaches IRC.
	if err := c.SendRaw(`<presence to='` + room + `/evil&#13;&#10;QUIT :x'/>`); err != nil {
		t.Fatal(err)
	}
	if !op.quiet(time.Second, func(m ircmsg.Message) bool { return m.Command == "KICK" || m.Command == "QUIT" || m.Command == "NICK" }) {
		t.Error("an injected command reached IRC")
	}

	// Nick change from XMPP.
	c.Send(core.NewElement("", "presence", "to", room+"/xuser2"))
	op.expect("NICK", cmdFrom("NICK", "xuser"))
	nc := c.Expect(xwait, "own 303", xmpptest.IsFrom("presence", room+"/xuser", "unavailable"))
	if !statusCodes(nc)["303"] || !statusCodes(nc)["110"] {
		t.Errorf("own nick change = %s", nc)
	}

	// Leaving the room parts the channel; going offline quits.
	c.Send(core.NewElement("", "presence", "to", room+"/xuser2", "type", "unavailable"))
	op.expect("PART", cmdFrom("PART", "xuser2"))
	// Not in a channel with rawop any more, so QUIT is not relayed to it:
	// ask the server whether xuser2 is still online.
	deadline := time.Now().Add(xwait)
	for {
		op.send("ISON", "xuser2")
		ison := op.expect("ISON reply", func(m ircmsg.Message) bool { return m.Command == "303" })
		if strings.TrimSpace(last(ison.Params)) == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("xuser2 still connected after leaving the last room")
		}
		time.Sleep(100 * time.Millisecond)
	}

	for _, l := range op.allRaw() {
		if strings.Count(l, "\n") != 1 || strings.Index(l, "\r") < len(l)-2 {
			t.Errorf("raw line with an inner CR or LF: %q", l)
		}
	}
}

// TestNickConflict: a nick taken on IRC gets the fallback nick, which the
// client learns from status 210.
func TestNickConflictAndDisallowed(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), map[string]string{"default_server": "127.0.0.1"})
	dialRaw(t, e.irc, "taken")
	c := onlineUser(t, e, "user21@b.test")
	const room = "#it-conflict%127.0.0.1@" + gwJID
	self := joinRoom(t, c, room, "taken")
	if self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	if self.Get("from") != room+"/taken_" || !statusCodes(self)["210"] {
		t.Errorf("self-presence = %s, want taken_ with status 210", self)
	}

	// Without %server: the default server.
	def := joinRoom(t, c, "#it-default@"+gwJID, "taken")
	if def.Get("type") == "error" || def.Get("from") != "#it-default@"+gwJID+"/taken_" {
		t.Errorf("join on the default server: %s", def)
	}
	gq := core.NewElement("", "iq", "type", "set", "to", gwJID)
	gq.Add(core.NewElement("jabber:iq:gateway", "query").AddText("", "prompt", "#Chan"))
	if res := c.IQ(gq); res.Child("jabber:iq:gateway", "query").ChildText("", "jid") != "#chan%127.0.0.1@"+gwJID {
		t.Errorf("jabber:iq:gateway: %s", res)
	}

	// A server the operator did not allow.
	bad := joinRoom(t, c, "#x%irc.libera.chat@"+gwJID, "me")
	if bad.Get("type") != "error" || xmpptest.Condition(bad) != "not-allowed" || !strings.Contains(xmpptest.ErrorText(bad), "127.0.0.1") {
		t.Errorf("disallowed server: %s", bad)
	}
}

// TestServerRestart restarts InspIRCd under a joined room: the user is
// told, the gateway reconnects with backoff and rejoins by itself.
func TestServerRestart(t *testing.T) {
	e := testIRCEnv(t)
	if e.script == "" {
		xmpptest.Missing(t, "TRANSPORTD_TEST_ENV_SCRIPT not set")
	}
	startGW(t, e.xmpp, port(e.irc), nil)
	c := onlineUser(t, e, "user22@b.test")
	const room = "#it-restart%127.0.0.1@" + gwJID
	if self := joinRoom(t, c, room, "survivor"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	restart := exec.Command(e.script, "restart", "inspircd")
	restart.Stdout, restart.Stderr = os.Stderr, os.Stderr
	if err := restart.Run(); err != nil {
		t.Fatalf("restart inspircd: %v", err)
	}
	down := c.Expect(xwait, "disconnected notice", func(el *core.Element) bool {
		return isGroupchatFrom(room, "")(el) && strings.HasPrefix(el.ChildText("", "body"), "Disconnected from IRC")
	})
	t.Logf("notice: %s", down.ChildText("", "body"))
	c.Expect(3*xwait, "reconnected notice", isGroupchatFrom(room, "Reconnected to IRC"))
	r := dialRaw(t, e.irc, "after")
	r.join("#it-restart")
	c.Expect(xwait, "a new occupant after the restart", xmpptest.IsFrom("presence", room+"/after", ""))
	c.Send(groupchat(room, "still here"))
	r.expect("message after the restart", func(m ircmsg.Message) bool { return m.Command == "PRIVMSG" && m.Params[1] == "still here" })
}

// TestNgircdRefusal: ngIRCd neither echoes a message nor labels its
// replies. Its refusal of a message (404: the channel turned +m) goes to
// that message, not to an earlier one it relayed (the fence behind the
// user's lines, network.fence).
func TestNgircdRefusal(t *testing.T) {
	e := testIRCEnv(t)
	if e.ngircd == "" {
		xmpptest.Missing(t, "ngIRCd not running")
	}
	startGW(t, e.xmpp, port(e.ngircd), nil)
	r := dialRaw(t, e.ngircd, "ngmod")
	r.join("#ngm")
	c := onlineUser(t, e, "user13@b.test")
	const room = "#ngm%127.0.0.1@" + gwJID
	if self := joinRoom(t, c, room, "ngq"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	first := groupchat(room, "first")
	c.Send(first)
	r.expect("first", func(m ircmsg.Message) bool { return m.Command == "PRIVMSG" && last(m.Params) == "first" })
	c.Expect(xwait, "first reflected", isGroupchatFrom(room+"/ngq", "first"))
	r.send("MODE", "#ngm", "+m")
	r.expect("+m", func(m ircmsg.Message) bool { return m.Command == "MODE" && len(m.Params) >= 2 && m.Params[1] == "+m" })
	second := groupchat(room, "second")
	c.Send(second)
	refusal := c.Expect(xwait, "refusal", xmpptest.IsFrom("message", room, "error"))
	if refusal.Get("id") != second.Get("id") || !strings.Contains(xmpptest.ErrorText(refusal), "Cannot send") {
		t.Errorf("refusal %s, want one for the second message (id %s; the first was %s)", refusal, second.Get("id"), first.Get("id"))
	}
}

// TestNgircd: the basics against the plainer server (no echo-message, no
// tags, CHANTYPES #&+).
func TestNgircd(t *testing.T) {
	e := testIRCEnv(t)
	if e.ngircd == "" {
		xmpptest.Missing(t, "ngIRCd not running")
	}
	startGW(t, e.xmpp, port(e.ngircd), nil)
	r := dialRaw(t, e.ngircd, "ngop")
	r.join("#ng")
	c := onlineUser(t, e, "user23@b.test")
	const room = "#ng%127.0.0.1@" + gwJID
	if self := joinRoom(t, c, room, "ngx"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	if p := c.Expect(xwait, "ngop", xmpptest.IsFrom("presence", room+"/ngop", "")); item(p).Get("role") != "moderator" {
		t.Errorf("ngop = %s", p)
	}
	m := groupchat(room, "hi ngircd\n/me waves")
	c.Send(m)
	if got := r.expect("PRIVMSG", cmdFrom("PRIVMSG", "ngx")); got.Params[1] != "hi ngircd" {
		t.Errorf("IRC got %v", got.Params)
	}
	r.expect("ACTION", cmdFrom("PRIVMSG", "ngx"))
	// No echo-message: the gateway reflects by itself.
	if refl := c.Expect(xwait, "reflection", isGroupchatFrom(room+"/ngx", "hi ngircd\n/me waves")); refl.Get("id") != m.Get("id") {
		t.Errorf("reflection = %s", refl)
	}
	r.send("PRIVMSG", "#ng", "caf\xe9 latin-1")
	c.Expect(xwait, "latin-1 decoded", isGroupchatFrom(room+"/ngop", "café latin-1"))
	// '+' channels exist on ngIRCd once its CHANTYPES is known.
	r.join("+modeless")
	if self := joinRoom(t, c, "+modeless%127.0.0.1@"+gwJID, "ngx"); self.Get("type") == "error" {
		t.Errorf("join +modeless: %s", self)
	}
	// The channel list (ngIRCd's LIST replies), '+' channels included.
	res := c.IQ(core.NewElement("", "iq", "type", "get", "to", "127.0.0.1@"+gwJID).Add(core.NewElement("http://jabber.org/protocol/disco#items", "query")))
	if res.Get("type") != "result" {
		t.Fatalf("disco#items: %s", res)
	}
	names := map[string]string{}
	for _, it := range res.FirstChild().Children {
		if it.Name.Local == "item" {
			names[it.Get("jid")] = it.Get("name")
		}
	}
	if n, ok := names[room]; !ok || !strings.Contains(n, "(2)") {
		t.Errorf("#ng listed as %q (listed: %v), want its 2 users", n, ok)
	}
	if _, ok := names["+modeless%127.0.0.1@"+gwJID]; !ok {
		t.Errorf("+modeless not listed: %v", names)
	}
}

// TestTLS joins over InspIRCd's TLS port and relays both ways, a burst
// of lines included: the poller reads TLS connections through crypto/tls,
// which holds whole records of lines decrypted between reads.
func TestTLS(t *testing.T) {
	e := testIRCEnv(t)
	if e.tls == "" {
		xmpptest.Missing(t, "no TLS port")
	}
	startGW(t, e.xmpp, port(e.tls), map[string]string{"tls": "true", "tls_insecure": "true"})
	const (
		ch   = "#it-tls"
		room = ch + "%127.0.0.1@" + gwJID
	)
	op := dialRaw(t, e.irc, "tlsop")
	op.join(ch)
	c := onlineUser(t, e, "user24@b.test")
	if self := joinRoom(t, c, room, "tlsuser"); self.Get("type") == "error" {
		t.Fatalf("join over TLS: %s", self)
	}
	op.expect("tlsuser's JOIN", cmdFrom("JOIN", "tlsuser"))
	c.Send(groupchat(room, "over tls"))
	if got := op.expect("PRIVMSG", cmdFrom("PRIVMSG", "tlsuser")); got.Params[1] != "over tls" {
		t.Errorf("IRC got %v", got.Params)
	}
	c.Expect(xwait, "reflection", isGroupchatFrom(room+"/tlsuser", "over tls"))
	// InspIRCd gives lines sent at once to a TLS client in few records.
	const n = 100
	for i := 0; i < n; i++ {
		op.send("PRIVMSG", ch, fmt.Sprintf("burst %d %s", i, strings.Repeat("x", 300)))
	}
	for i := 0; i < n; i++ {
		want := fmt.Sprintf("burst %d %s", i, strings.Repeat("x", 300))
		if got := c.Expect(xwait, fmt.Sprintf("burst line %d", i), isGroupchatFrom(room+"/tlsop", "")); got.ChildText("", "body") != want {
			t.Fatalf("line %d: got %.20q", i, got.ChildText("", "body"))
		}
	}
}

// TestRegistrationPersistence registers with a nick, a network, channels
// to join and the persistent setting: the gateway joins by itself, stays
// on IRC while the user is offline, and shows what was said meanwhile.
// Then the "Configure network" command changes that network's settings.
func TestRegistrationPersistence(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), nil)
	w := dialRaw(t, e.irc, "watcher")
	w.join("#it-persist")
	w.join("#it-cfg")

	c := onlineUser(t, e, "user25@b.test")
	get := core.NewElement("", "iq", "type", "get", "to", gwJID)
	get.Add(core.NewElement("jabber:iq:register", "query"))
	form := c.IQ(get).String()
	for _, f := range []string{"nick", "persistent", "network", "password", "autojoin"} {
		if !strings.Contains(form, "var=\""+f+"\"") && !strings.Contains(form, "var='"+f+"'") {
			t.Errorf("registration form lacks %s: %s", f, form)
		}
	}
	register(t, c, map[string]string{"nick": "persist", "persistent": "true", "network": "127.0.0.1", "autojoin": "#it-persist", "auth": "none"})
	w.expect("autojoin", func(m ircmsg.Message) bool {
		return m.Command == "JOIN" && m.Nick() == "persist" && m.Params[0] == "#it-persist"
	})

	c.Close()
	if !w.quiet(2*time.Second, cmdFrom("QUIT", "persist")) {
		t.Fatal("the persistent session quit when the user went offline")
	}
	w.send("PRIVMSG", "#it-persist", "while you were away")
	// Let the gateway take the line while the user is really away: a line
	// that arrives after the user is back is live, not backlog.
	if !w.quiet(500*time.Millisecond, cmdFrom("QUIT", "persist")) {
		t.Fatal("the persistent session quit when the user went offline")
	}

	c = xmpptest.Dial(t, e.xmpp, "user25@b.test", false)
	const room = "#it-persist%127.0.0.1@" + gwJID
	if self := joinRoom(t, c, room, "persist"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	c.Expect(xwait, "watcher", xmpptest.IsFrom("presence", room+"/watcher", ""))
	back := c.Expect(xwait, "backlog", isGroupchatFrom(room+"/watcher", "while you were away"))
	if back.Child("urn:xmpp:delay", "delay") == nil {
		t.Errorf("backlog without a delay stamp: %s", back)
	}
	// Leaving the room of a channel joined on connect keeps it joined.
	c.Send(core.NewElement("", "presence", "to", room+"/persist", "type", "unavailable"))
	if !w.quiet(time.Second, cmdFrom("PART", "persist")) {
		t.Error("left a channel joined on connect")
	}

	// What was said meanwhile comes as the join's <history/> asks
	// (XEP-0045 §7.2.14): none, since a time, the last n.
	away := func(lines ...string) {
		t.Helper()
		for _, l := range lines {
			w.send("PRIVMSG", "#it-persist", l)
		}
		w.send("PING", "sync")
		w.expect("PONG", func(m ircmsg.Message) bool { return m.Command == "PONG" })
		time.Sleep(300 * time.Millisecond) // the gateway read them
	}
	rejoin := func(history ...string) []string {
		t.Helper()
		if self := joinRoom(t, c, room, "persist", history...); self.Get("type") == "error" {
			t.Fatalf("join with history %v: %s", history, self)
		}
		var got []string
		for {
			m, err := c.Next(time.Second, xmpptest.IsFrom("message", room+"/watcher", "groupchat"))
			if err != nil {
				break
			}
			got = append(got, m.ChildText("", "body"))
		}
		c.Send(core.NewElement("", "presence", "to", room+"/persist", "type", "unavailable"))
		c.Expect(xwait, "left", xmpptest.IsFrom("presence", room+"/persist", "unavailable"))
		return got
	}
	away("old news")
	if got := rejoin("maxstanzas", "0"); len(got) != 0 {
		t.Errorf("history with maxstanzas 0: %q", got)
	}
	away("one")
	time.Sleep(time.Second)
	mark := time.Now().UTC().Format(time.RFC3339Nano)
	time.Sleep(100 * time.Millisecond)
	away("two", "three")
	if got := rejoin("since", mark); !slices.Equal(got, []string{"two", "three"}) {
		t.Errorf("history since %s: %q, want two, three", mark, got)
	}
	away("a", "b", "c")
	if got := rejoin("maxstanzas", "2"); !slices.Equal(got, []string{"b", "c"}) {
		t.Errorf("history with maxstanzas 2: %q, want b, c", got)
	}

	// Configure network: another nick and channel for 127.0.0.1.
	res := command(t, c, "configure-network", "", nil)
	sid := res.Child(nsCommands, "command").Get("sessionid")
	res = command(t, c, "configure-network", sid, map[string]string{"network": "127.0.0.1"})
	if !strings.Contains(res.String(), "IRC network 127.0.0.1") {
		t.Fatalf("second stage: %s", res)
	}
	res = command(t, c, "configure-network", sid, map[string]string{"nick": "cfgnick", "autojoin": "#it-cfg", "tls": "default", "encoding": "iso-8859-15"})
	if cmd := res.Child(nsCommands, "command"); cmd.Get("status") != "completed" {
		t.Fatalf("configure: %s", res)
	}
	// It applies from the next connection.
	command(t, c, "reconnect", "", nil)
	w.expect("configured autojoin", func(m ircmsg.Message) bool {
		return m.Command == "JOIN" && m.Nick() == "cfgnick" && m.Params[0] == "#it-cfg"
	})
	// The form shows what was set.
	sid = command(t, c, "configure-network", "", nil).Child(nsCommands, "command").Get("sessionid")
	res = command(t, c, "configure-network", sid, map[string]string{"network": "127.0.0.1"})
	for _, f := range res.Child(nsCommands, "command").Child("jabber:x:data", "x").Children {
		if f.Get("var") == "encoding" && f.ChildText("", "value") != "iso-8859-15" {
			t.Errorf("configure form's character set = %s", f)
		}
	}
	if !strings.Contains(res.String(), "ISO-8859-15") {
		t.Errorf("configure form without the character sets: %s", res)
	}

	// The same on the server's JID, as biboumi offers it: "Configure"
	// there shows the network's settings without asking which.
	const server = "127.0.0.1@" + gwJID
	info := c.IQ(core.NewElement("", "iq", "type", "get", "to", server).Add(core.NewElement(nsDiscI, "query")))
	if !strings.Contains(info.String(), `var="`+nsCommands+`"`) {
		t.Errorf("server JID's disco#info without commands: %s", info)
	}
	items := c.IQ(core.NewElement("", "iq", "type", "get", "to", server).Add(core.NewElement(nsDiscItems, "query", "node", nsCommands)))
	var nodes []string
	for _, it := range items.Child(nsDiscItems, "query").Children {
		nodes = append(nodes, it.Get("node"))
	}
	if !slices.Equal(nodes, []string{"configure"}) {
		t.Errorf("server JID's commands: %v (%s), want configure alone", nodes, items)
	}
	res = commandTo(t, c, server, "configure", "", nil)
	if !strings.Contains(res.String(), "IRC network 127.0.0.1") || !strings.Contains(res.String(), "cfgnick") {
		t.Fatalf("Configure on the server's JID: %s", res)
	}
	sid = res.Child(nsCommands, "command").Get("sessionid")
	res = commandTo(t, c, server, "configure", sid, map[string]string{"nick": "srvnick", "autojoin": "#it-cfg", "tls": "default", "encoding": "iso-8859-15"})
	if cmd := res.Child(nsCommands, "command"); cmd.Get("status") != "completed" {
		t.Fatalf("Configure on the server's JID, saving: %s", res)
	}
	command(t, c, "reconnect", "", nil)
	w.expect("autojoin with the nick set on the server's JID", func(m ircmsg.Message) bool {
		return m.Command == "JOIN" && m.Nick() == "srvnick" && m.Params[0] == "#it-cfg"
	})
	// Commands of another JID are not found there.
	for _, tc := range []struct{ to, node string }{{server, "configure-network"}, {"someone%127.0.0.1@" + gwJID, "configure"}} {
		iq := core.NewElement("", "iq", "type", "set", "to", tc.to).Add(core.NewElement(nsCommands, "command", "node", tc.node, "action", "execute"))
		if res := c.IQ(iq); !strings.Contains(res.String(), "item-not-found") {
			t.Errorf("command %s on %s: %s, want item-not-found", tc.node, tc.to, res)
		}
	}
}

const nsCommands = "http://jabber.org/protocol/commands"

// command runs one stage of an ad-hoc command on the gateway.
func command(t testing.TB, c *xmpptest.Client, node, sid string, fields map[string]string) *core.Element {
	t.Helper()
	return commandTo(t, c, gwJID, node, sid, fields)
}

// commandTo runs one stage of an ad-hoc command on a JID.
func commandTo(t testing.TB, c *xmpptest.Client, to, node, sid string, fields map[string]string) *core.Element {
	t.Helper()
	res := c.IQ(commandIQ(to, node, sid, fields))
	if res.Get("type") != "result" {
		t.Fatalf("command %s: %s", node, res)
	}
	return res
}

// commandIQ is the IQ of one stage of an ad-hoc command on a JID.
func commandIQ(to, node, sid string, fields map[string]string) *core.Element {
	iq := core.NewElement("", "iq", "type", "set", "to", to)
	cmd := core.NewElement(nsCommands, "command", "node", node, "action", "execute")
	if sid != "" {
		cmd.SetAttr("sessionid", sid)
		cmd.SetAttr("action", "complete")
	}
	if fields != nil {
		x := core.NewElement("jabber:x:data", "x", "type", "submit")
		for k, v := range fields {
			x.Add(core.NewElement("", "field", "var", k).AddText("", "value", v))
		}
		cmd.Add(x)
	}
	return iq.Add(cmd)
}

// register registers with the gateway and completes the XEP-0100
// subscription.
func register(t testing.TB, c *xmpptest.Client, fields map[string]string) {
	t.Helper()
	iq := core.NewElement("", "iq", "type", "set", "to", gwJID)
	q := core.NewElement("jabber:iq:register", "query")
	x := core.NewElement("jabber:x:data", "x", "type", "submit")
	x.Add(core.NewElement("", "field", "var", "FORM_TYPE", "type", "hidden").AddText("", "value", "jabber:iq:register"))
	for k, v := range fields {
		x.Add(core.NewElement("", "field", "var", k).AddText("", "value", v))
	}
	if res := c.IQ(iq.Add(q.Add(x))); res.Get("type") != "result" {
		t.Fatalf("registration: %s", res)
	}
	first := c.Expect(xwait, "subscription request or presence", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", gwJID, "subscribe")(el) || xmpptest.IsFrom("presence", gwJID, "")(el)
	})
	if first.Get("type") == "subscribe" {
		c.Send(core.NewElement("", "presence", "to", gwJID, "type", "subscribed"))
		c.Send(core.NewElement("", "presence", "to", gwJID, "type", "subscribe"))
	}
}

// TestXMPPOutage stops Prosody under a persistent IRC session: the IRC
// connection stays up through the outage (the channel never sees it quit),
// the component comes back by itself once Prosody accepts connections, and
// what was said in the channel meanwhile reaches the user, in order, when
// they join the room again.
func TestXMPPOutage(t *testing.T) {
	e := testIRCEnv(t)
	if e.script == "" {
		xmpptest.Missing(t, "TRANSPORTD_TEST_ENV_SCRIPT not set")
	}
	startGW(t, e.xmpp, port(e.irc), nil)
	w := dialRaw(t, e.irc, "outwatch")
	w.join("#it-outage")
	c := onlineUser(t, e, "user26@b.test")
	register(t, c, map[string]string{"nick": "steady", "persistent": "true", "network": "127.0.0.1", "autojoin": "#it-outage", "auth": "none"})
	w.expect("autojoin", func(m ircmsg.Message) bool {
		return m.Command == "JOIN" && m.Nick() == "steady" && m.Params[0] == "#it-outage"
	})
	c.Close()

	testenv := func(args ...string) {
		t.Helper()
		cmd := exec.Command(e.script, args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("testenv %v: %v", args, err)
		}
	}
	testenv("down", "prosody")
	down := true
	t.Cleanup(func() {
		if down {
			testenv("up", "prosody")
		}
	})
	left := func(m ircmsg.Message) bool {
		return (m.Command == "QUIT" || m.Command == "PART") && m.Nick() == "steady"
	}
	for i := range 3 {
		w.send("PRIVMSG", "#it-outage", fmt.Sprintf("said during the outage %d", i))
	}
	if !w.quiet(2*time.Second, left) {
		t.Fatal("the IRC session left while the XMPP server was down")
	}
	testenv("up", "prosody")
	down = false
	up := time.Now()
	c = xmpptest.Dial(t, e.xmpp, "user26@b.test", false)
	waitComponent(t, c)
	t.Logf("component back %v after Prosody accepted clients again", time.Since(up).Round(time.Millisecond))
	const room = "#it-outage%127.0.0.1@" + gwJID
	if self := joinRoom(t, c, room, "steady"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	for i := range 3 {
		want := fmt.Sprintf("said during the outage %d", i)
		el := c.Expect(xwait, want, func(el *core.Element) bool {
			return isGroupchatFrom(room+"/outwatch", "")(el) && strings.HasPrefix(el.ChildText("", "body"), "said during the outage")
		})
		if got := el.ChildText("", "body"); got != want {
			t.Fatalf("line %d: %q, want %q (lost or out of order)", i, got, want)
		}
		// Held through the outage, it says when it was said.
		if d := el.Child("urn:xmpp:delay", "delay"); d == nil {
			t.Errorf("line %d held through the outage without a delay stamp: %s", i, el)
		} else if at, err := time.Parse(time.RFC3339, d.Get("stamp")); err != nil || at.After(up) {
			t.Errorf("line %d: delay stamp %q, want a time before Prosody was back (%v)", i, d.Get("stamp"), up)
		}
	}
	if !w.quiet(time.Second, left) {
		t.Error("the IRC session left after the outage")
	}
}

// Browsing a server's channels (disco#items on the server's JID, as with
// biboumi): IRC's LIST, the most populated first, with topics, paged
// with XEP-0059; a server the operator does not allow is refused.
func TestListChannels(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), nil)
	a, b, c3 := dialRaw(t, e.irc, "lista"), dialRaw(t, e.irc, "listb"), dialRaw(t, e.irc, "listc")
	for _, r := range []*rawIRC{a, b, c3} {
		r.join("#list-big")
	}
	a.join("#list-one")
	a.send("TOPIC", "#list-one", "Topic \x02one\x02")
	a.expect("TOPIC", cmdFrom("TOPIC", "lista"))

	c := onlineUser(t, e, "user27@b.test")
	if self := joinRoom(t, c, "#list-mine%127.0.0.1@"+gwJID, "lister"); self.Get("type") == "error" {
		t.Fatalf("join refused: %s", self)
	}
	items := func(set *core.Element) (*core.Element, []*core.Element) {
		q := core.NewElement("http://jabber.org/protocol/disco#items", "query")
		if set != nil {
			q.Add(set)
		}
		res := c.IQ(core.NewElement("", "iq", "type", "get", "to", "127.0.0.1@"+gwJID).Add(q))
		if res.Get("type") != "result" {
			t.Fatalf("disco#items: %s", res)
		}
		var its []*core.Element
		for _, it := range res.FirstChild().Children {
			if it.Name.Local == "item" {
				its = append(its, it)
			}
		}
		return res.FirstChild().Child("http://jabber.org/protocol/rsm", "set"), its
	}
	_, all := items(nil)
	pos := map[string]int{}
	for i, it := range all {
		pos[it.Get("jid")] = i
	}
	big, one := "#list-big%127.0.0.1@"+gwJID, "#list-one%127.0.0.1@"+gwJID
	if _, ok := pos[big]; !ok {
		t.Fatalf("#list-big not listed: %v", all)
	}
	if _, ok := pos[one]; !ok {
		t.Fatalf("#list-one not listed: %v", all)
	}
	if pos[big] > pos[one] {
		t.Errorf("#list-big (3 users) after #list-one (1): %v", all)
	}
	if n := all[pos[big]].Get("name"); !strings.Contains(n, "(3)") {
		t.Errorf("#list-big's name %q does not say its 3 users", n)
	}
	if n := all[pos[one]].Get("name"); !strings.Contains(n, "Topic one") {
		t.Errorf("#list-one's name %q does not show its topic", n)
	}

	// Paged: one at a time.
	set1, page1 := items(core.NewElement("http://jabber.org/protocol/rsm", "set").AddText("", "max", "1"))
	if len(page1) != 1 || set1 == nil || set1.ChildText("", "count") != fmt.Sprint(len(all)) {
		t.Fatalf("page of 1: %v, set %v (want count %d)", page1, set1, len(all))
	}
	after := core.NewElement("http://jabber.org/protocol/rsm", "set").AddText("", "max", "1")
	after.AddText("", "after", set1.ChildText("", "last"))
	_, page2 := items(after)
	if len(page2) != 1 || page2[0].Get("jid") == page1[0].Get("jid") || page2[0].Get("jid") != all[1].Get("jid") {
		t.Errorf("second page %v, want %v", page2, all[1])
	}

	res := c.IQ(core.NewElement("", "iq", "type", "get", "to", "irc.example.org@"+gwJID).Add(core.NewElement("http://jabber.org/protocol/disco#items", "query")))
	if res.Get("type") != "error" || !strings.Contains(res.String(), "not-allowed") {
		t.Errorf("listing a server that is not allowed: %s, want not-allowed", res)
	}

	// A user who never joined a channel browses too (the gateway
	// connects for it, as biboumi does).
	fresh := xmpptest.Dial(t, e.xmpp, "user28@b.test", false)
	res = fresh.IQ(core.NewElement("", "iq", "type", "get", "to", "127.0.0.1@"+gwJID).Add(core.NewElement("http://jabber.org/protocol/disco#items", "query")))
	if res.Get("type") != "result" || !strings.Contains(res.String(), "#list-big%127.0.0.1@"+gwJID) {
		t.Errorf("listing by a user in no channel: %s", res)
	}
}

// TestServerPassword connects to a closed server (a bouncer such as ZNC
// works the same way): InspIRCd's password port takes only clients whose
// PASS is right. A wrong password fails the join with a hint; registering
// the right one lets the user in, and the password never reaches the log
// (the wire trace is on in these tests).
func TestServerPassword(t *testing.T) {
	e := testIRCEnv(t)
	passAddr := os.Getenv("TRANSPORTD_TEST_IRC_PASS_ADDR")
	if passAddr == "" {
		xmpptest.Missing(t, "InspIRCd's password port not set up; run scripts/testenv.sh up inspircd")
	}
	gw := startGW(t, e.xmpp, port(passAddr), nil)
	w := dialRaw(t, e.irc, "pwatch") // the same server, through its open port
	w.join("#it-locked")
	c := onlineUser(t, e, "user29@b.test")
	const room = "#it-locked%127.0.0.1@" + gwJID

	register(t, c, map[string]string{"nick": "locked", "network": "127.0.0.1", "auth": "pass", "password": "wrong horse"})
	bad := joinRoom(t, c, room, "locked")
	if bad.Get("type") != "error" || !strings.Contains(xmpptest.ErrorText(bad), "server password") {
		t.Errorf("join with a wrong server password = %s, want an error that points at the password", bad)
	}

	register(t, c, map[string]string{"nick": "locked", "network": "127.0.0.1", "auth": "pass", "password": "letmein"})
	if self := joinRoom(t, c, room, "locked"); self.Get("type") == "error" {
		t.Fatalf("join with the right server password: %s", self)
	}
	w.expect("the gateway's JOIN", func(m ircmsg.Message) bool {
		return m.Command == "JOIN" && m.Nick() == "locked" && m.Params[0] == "#it-locked"
	})
	c.Send(groupchat(room, "through the locked door"))
	w.expect("the message", func(m ircmsg.Message) bool {
		return m.Command == "PRIVMSG" && m.Nick() == "locked" && last(m.Params) == "through the locked door"
	})
	logs := gw.logs.String()
	if !strings.Contains(logs, "PASS <redacted>") {
		t.Errorf("the wire trace does not show the PASS line (redacted)")
	}
	for _, pw := range []string{"letmein", "wrong horse"} {
		if strings.Contains(logs, pw) {
			t.Errorf("the server password %q is in the log", pw)
		}
	}
}

// TestTLSTrustedFingerprint connects over TLS to a server whose
// certificate no authority signed (InspIRCd's self-signed test
// certificate, as a bouncer or a small network has): refused, with the
// certificate's fingerprint in the error for the user to compare; once
// the user trusts that fingerprint, the same join goes through.
func TestTLSTrustedFingerprint(t *testing.T) {
	e := testIRCEnv(t)
	certFile := os.Getenv("TRANSPORTD_TEST_IRC_TLS_CERT")
	if e.tls == "" || certFile == "" {
		xmpptest.Missing(t, "no TLS port")
	}
	pemBytes, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatalf("%s: no PEM certificate", certFile)
	}
	sum := sha256.Sum256(block.Bytes)
	fp := fingerprintText(sum[:]) // AB:CD:..., as openssl x509 -fingerprint -sha256 shows it

	startGW(t, e.xmpp, port(e.tls), map[string]string{"tls": "true"})
	w := dialRaw(t, e.irc, "fpwatch")
	w.join("#it-pinned")
	c := onlineUser(t, e, "user30@b.test")
	const room = "#it-pinned%127.0.0.1@" + gwJID
	bad := joinRoom(t, c, room, "pinned")
	if bad.Get("type") != "error" || !strings.Contains(xmpptest.ErrorText(bad), fp) {
		t.Fatalf("join over TLS with an untrusted certificate = %s, want an error naming its fingerprint %s", bad, fp)
	}

	register(t, c, map[string]string{"nick": "pinned", "network": "127.0.0.1", "auth": "none", "fingerprint": strings.ToLower(fp)})
	if self := joinRoom(t, c, room, "pinned"); self.Get("type") == "error" {
		t.Fatalf("join with the certificate trusted: %s", self)
	}
	w.expect("the gateway's JOIN", func(m ircmsg.Message) bool {
		return m.Command == "JOIN" && m.Nick() == "pinned" && m.Params[0] == "#it-pinned"
	})

	// A malformed fingerprint is refused by the form, naming the field.
	iq := core.NewElement("", "iq", "type", "set", "to", gwJID)
	x := core.NewElement("jabber:x:data", "x", "type", "submit")
	x.Add(core.NewElement("", "field", "var", "FORM_TYPE", "type", "hidden").AddText("", "value", "jabber:iq:register"))
	x.Add(core.NewElement("", "field", "var", "network").AddText("", "value", "127.0.0.1"))
	x.Add(core.NewElement("", "field", "var", "fingerprint").AddText("", "value", "AB:CD"))
	res := c.IQ(iq.Add(core.NewElement("jabber:iq:register", "query").Add(x)))
	if xmpptest.Condition(res) != "not-acceptable" && xmpptest.Condition(res) != "bad-request" || !strings.Contains(xmpptest.ErrorText(res), "fingerprint") {
		t.Errorf("registration with a malformed fingerprint = %s", res)
	}
}

// TestModeration: a channel operator moderates from the client's occupant
// menu (muc#admin sets, XEP-0045 §8): op, voice, kick with a reason and
// ban become MODE and KICK lines on InspIRCd, and the room shows them.
func TestModeration(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), nil)
	const (
		ch   = "#it-moderate"
		room = ch + "%127.0.0.1@" + gwJID
	)
	c := onlineUser(t, e, "user19@b.test")
	// The first in a channel is its operator.
	if self := joinRoom(t, c, room, "chanop"); self.Get("type") == "error" || item(self).Get("role") != "moderator" {
		t.Fatalf("join as the channel's operator: %s", self)
	} else if !strings.HasPrefix(item(self).Get("jid"), "user19@b.test/") {
		t.Errorf("self-presence item without the user's JID: %s", self)
	}
	v := dialRaw(t, e.irc, "victim")
	v.join(ch)
	w := dialRaw(t, e.irc, "watcher") // sees the channel's modes once victim is banned
	w.join(ch)
	// The room is non-anonymous: an IRC user's presence names their
	// contact JID (write to them, ban them), the user's own their JID.
	const victimJID = "victim%127.0.0.1@" + gwJID
	if p := c.Expect(xwait, "victim's presence", xmpptest.IsFrom("presence", room+"/victim", "")); item(p).Get("jid") != victimJID {
		t.Errorf("victim's presence item = %s, want jid %s", p, victimJID)
	}

	admin := func(items ...*core.Element) *core.Element {
		iq := core.NewElement("", "iq", "type", "set", "to", room)
		q := core.NewElement("http://jabber.org/protocol/muc#admin", "query")
		for _, it := range items {
			q.Add(it)
		}
		return c.IQ(iq.Add(q))
	}
	// Op, deop, voice: the MODE on IRC, then the occupant's new role or
	// affiliation in the room.
	for _, step := range []struct{ attr, value, mode, shownAttr, shown string }{
		{"role", "moderator", "+o", "role", "moderator"},
		{"role", "participant", "-o", "role", "participant"},
		{"affiliation", "member", "+v", "affiliation", "member"},
	} {
		if res := admin(core.NewElement("", "item", "nick", "victim", step.attr, step.value)); res.Get("type") != "result" {
			t.Fatalf("%s %s: %s", step.attr, step.value, res)
		}
		v.expect("MODE "+step.mode, func(m ircmsg.Message) bool {
			return m.Command == "MODE" && m.Nick() == "chanop" && len(m.Params) == 3 && m.Params[1] == step.mode && m.Params[2] == "victim"
		})
		c.Expect(xwait, "victim's "+step.shownAttr+" "+step.shown, func(el *core.Element) bool {
			return xmpptest.IsFrom("presence", room+"/victim", "")(el) && item(el).Get(step.shownAttr) == step.shown
		})
	}

	// Kick, with a reason: an injection attempt in it stays one line.
	kick := core.NewElement("", "item", "nick", "victim", "role", "none")
	kick.AddText("", "reason", "enough\r\nQUIT :gone")
	if res := admin(kick); res.Get("type") != "result" {
		t.Fatalf("kick: %s", res)
	}
	k := v.expect("KICK", func(m ircmsg.Message) bool { return m.Command == "KICK" && m.Params[1] == "victim" })
	if last(k.Params) != "enough QUIT :gone" {
		t.Errorf("kick reason on IRC = %q", last(k.Params))
	}
	gone := c.Expect(xwait, "victim kicked", xmpptest.IsFrom("presence", room+"/victim", "unavailable"))
	if !statusCodes(gone)["307"] {
		t.Errorf("kick presence without 307: %s", gone)
	}

	// Ban: the host is banned and the occupant kicked.
	v.join(ch)
	c.Expect(xwait, "victim back", xmpptest.IsFrom("presence", room+"/victim", ""))
	// By JID, as clients ban.
	if res := admin(core.NewElement("", "item", "jid", victimJID, "affiliation", "outcast")); res.Get("type") != "result" {
		t.Fatalf("ban: %s", res)
	}
	hostBan := v.expect("MODE +b", func(m ircmsg.Message) bool {
		return m.Command == "MODE" && len(m.Params) == 3 && m.Params[1] == "+b" && strings.HasPrefix(m.Params[2], "*!*@")
	}).Params[2]
	v.expect("KICK after the ban", func(m ircmsg.Message) bool { return m.Command == "KICK" && m.Params[1] == "victim" })
	// The room shows the ban as IRC clients do; it is no change of the
	// room's configuration (no status 104).
	banShown := c.Expect(xwait, "the ban in the room", func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Get("from") == room && strings.Contains(el.ChildText("", "body"), "sets mode +b")
	})
	if statusCodes(banShown)["104"] {
		t.Errorf("a ban marked as a configuration change: %s", banShown)
	}
	v.send("JOIN", ch)
	v.expect("banned", func(m ircmsg.Message) bool { return m.Command == "474" })

	// The ban list (a client's "banned" list): the channel's masks, an
	// IRC mask shown as the JID it reads as, who set it in the reason. A
	// mask typed in as a JID is banned, and unbanned from the list.
	if res := admin(core.NewElement("", "item", "jid", "*!*@spam.example", "affiliation", "outcast")); res.Get("type") != "result" {
		t.Fatalf("ban of a mask: %s", res)
	}
	w.expect("MODE +b of the mask", func(m ircmsg.Message) bool {
		return m.Command == "MODE" && len(m.Params) == 3 && m.Params[1] == "+b" && m.Params[2] == "*!*@spam.example"
	})
	list := func(attr, value string) map[string]*core.Element {
		t.Helper()
		iq := core.NewElement("", "iq", "type", "get", "to", room)
		iq.Add(core.NewElement("http://jabber.org/protocol/muc#admin", "query").Add(core.NewElement("", "item", attr, value)))
		res := c.IQ(iq)
		if res.Get("type") != "result" {
			t.Fatalf("list of %s %s: %s", attr, value, res)
		}
		out := map[string]*core.Element{}
		for _, it := range res.Child("http://jabber.org/protocol/muc#admin", "query").Children {
			if it.Get(attr) != value {
				t.Errorf("list of %s %s has %s", attr, value, it)
			}
			out[it.Get("jid")] = it
		}
		return out
	}
	bans := list("affiliation", "outcast")
	if it := bans["*!*@spam.example"]; it == nil || !strings.Contains(it.ChildText("", "reason"), "chanop") {
		t.Errorf("ban list %v: want *!*@spam.example set by chanop", bans)
	}
	if bans[hostBan] == nil && bans[room+"/"+hostBan] == nil {
		t.Errorf("ban list %v: want the victim's host %s", bans, hostBan)
	}
	if res := admin(core.NewElement("", "item", "jid", "*!*@spam.example", "affiliation", "none")); res.Get("type") != "result" {
		t.Fatalf("unban: %s", res)
	}
	w.expect("MODE -b of the mask", func(m ircmsg.Message) bool {
		return m.Command == "MODE" && len(m.Params) == 3 && m.Params[1] == "-b" && m.Params[2] == "*!*@spam.example"
	})
	if bans := list("affiliation", "outcast"); bans["*!*@spam.example"] != nil || len(bans) != 1 {
		t.Errorf("ban list after the unban: %v", bans)
	}
	// The other lists come from the occupants: the moderators are the
	// user alone (their own JID).
	if mods := list("role", "moderator"); len(mods) != 1 || mods["user19@b.test"] == nil || mods["user19@b.test"].Get("nick") != "chanop" {
		t.Errorf("moderator list = %v", mods)
	}

	bad := core.NewElement("", "iq", "type", "get", "to", room)
	bad.Add(core.NewElement("http://jabber.org/protocol/muc#admin", "query").Add(core.NewElement("", "item", "affiliation", "friend")))
	if res := c.IQ(bad); xmpptest.Condition(res) != "bad-request" || !strings.Contains(xmpptest.ErrorText(res), "friend") {
		t.Errorf("list of an unknown affiliation: %s", res)
	}

	// Errors: an unknown nick, an item without a nick, a room not joined,
	// a role for a mask.
	if res := admin(core.NewElement("", "item", "nick", "nobody", "role", "none")); xmpptest.Condition(res) != "item-not-found" {
		t.Errorf("kick of a nick not in the room: %s", res)
	}
	if res := admin(core.NewElement("", "item", "jid", "someone@example.org", "role", "none")); xmpptest.Condition(res) != "bad-request" {
		t.Errorf("kick of a JID that is not an occupant's: %s", res)
	}
	if res := admin(core.NewElement("", "item", "jid", "nobody%127.0.0.1@"+gwJID, "affiliation", "outcast")); xmpptest.Condition(res) != "item-not-found" {
		t.Errorf("ban of a contact not in the room: %s", res)
	}
	iq := core.NewElement("", "iq", "type", "set", "to", "#it-elsewhere%127.0.0.1@"+gwJID)
	iq.Add(core.NewElement("http://jabber.org/protocol/muc#admin", "query").Add(core.NewElement("", "item", "nick", "victim", "role", "none")))
	if res := c.IQ(iq); xmpptest.Condition(res) != "not-acceptable" {
		t.Errorf("moderating a room not joined: %s", res)
	}

	// An IRC INVITE is a XEP-0249 invitation the client offers to accept,
	// from the inviter, with the text for clients that do not know it.
	inv := dialRaw(t, e.irc, "inviter")
	inv.join("#it-invited")
	inv.send("INVITE", "chanop", "#it-invited")
	msg := c.Expect(xwait, "the invitation", xmpptest.IsFrom("message", "inviter%127.0.0.1@"+gwJID, "*"))
	x := msg.Child("jabber:x:conference", "x")
	if x == nil || x.Get("jid") != "#it-invited%127.0.0.1@"+gwJID || !strings.Contains(msg.ChildText("", "body"), "#it-invited") {
		t.Errorf("invitation = %s", msg)
	}

	// The user invites an IRC user to the room: mediated (XEP-0045, to
	// the room) and direct (XEP-0249, to the contact) both become INVITE.
	const inviterJID = "inviter%127.0.0.1@" + gwJID
	mediated := core.NewElement("", "message", "to", room)
	mediated.Add(core.NewElement(nsMUCU, "x").Add(core.NewElement("", "invite", "to", inviterJID)))
	c.Send(mediated)
	inv.expect("INVITE (mediated)", func(m ircmsg.Message) bool {
		return m.Command == "INVITE" && m.Nick() == "chanop" && m.Params[0] == "inviter" && m.Params[1] == ch
	})
	direct := core.NewElement("", "message", "to", inviterJID)
	direct.Add(core.NewElement("jabber:x:conference", "x", "jid", room))
	direct.AddText("", "body", "join us")
	c.Send(direct)
	inv.expect("INVITE (direct)", func(m ircmsg.Message) bool {
		return m.Command == "INVITE" && m.Nick() == "chanop" && m.Params[0] == "inviter" && m.Params[1] == ch
	})
	if !inv.quiet(500*time.Millisecond, cmdFrom("PRIVMSG", "chanop")) {
		t.Error("the direct invitation's body went to IRC as a message")
	}
	// Someone who is not on IRC cannot be invited from here.
	foreign := core.NewElement("", "message", "to", room, "id", "inv3")
	foreign.Add(core.NewElement(nsMUCU, "x").Add(core.NewElement("", "invite", "to", "user1@b.test")))
	c.Send(foreign)
	if e := c.Expect(xwait, "refused invitation", xmpptest.IsFrom("message", room, "error")); xmpptest.Condition(e) != "not-acceptable" {
		t.Errorf("invitation of an XMPP user: %s", e)
	}
}

// TestAfterConnectCommands: the IRC commands a user registers are sent
// once connected, before the channels are joined (a login to QuakeNet's
// Q looks like the first one here); the password in it never reaches the
// log. The Configure network command replaces them for the next
// connection.
func TestAfterConnectCommands(t *testing.T) {
	e := testIRCEnv(t)
	gw := startGW(t, e.xmpp, port(e.irc), nil)
	w := dialRaw(t, e.irc, "cmdwatch")
	w.join("#it-cmds")
	c := onlineUser(t, e, "user18@b.test")
	register(t, c, map[string]string{"nick": "cmduser", "network": "127.0.0.1", "auth": "none",
		"commands": "/PRIVMSG cmdwatch :AUTH cmduser s3cretword"})
	const room = "#it-cmds%127.0.0.1@" + gwJID
	if self := joinRoom(t, c, room, "cmduser"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	auth := w.expect("the command", cmdFrom("PRIVMSG", "cmduser"))
	if auth.Params[0] != "cmdwatch" || auth.Params[1] != "AUTH cmduser s3cretword" {
		t.Errorf("after-connect command arrived as %v", auth.Params)
	}
	w.expect("then the JOIN", cmdFrom("JOIN", "cmduser"))
	if strings.Contains(gw.logs.String(), "s3cretword") {
		t.Error("the password of an after-connect command is in the log")
	}

	// A command the gateway handles itself is refused, naming the field.
	iq := core.NewElement("", "iq", "type", "set", "to", gwJID)
	x := core.NewElement("jabber:x:data", "x", "type", "submit")
	x.Add(core.NewElement("", "field", "var", "FORM_TYPE", "type", "hidden").AddText("", "value", "jabber:iq:register"))
	x.Add(core.NewElement("", "field", "var", "network").AddText("", "value", "127.0.0.1"))
	x.Add(core.NewElement("", "field", "var", "commands").AddText("", "value", "QUIT :bye"))
	if res := c.IQ(iq.Add(core.NewElement("jabber:iq:register", "query").Add(x))); res.Get("type") != "error" || !strings.Contains(xmpptest.ErrorText(res), "IRC commands") {
		t.Errorf("registration with QUIT as a command = %s", res)
	}

	res := command(t, c, "configure-network", "", nil)
	sid := res.Child(nsCommands, "command").Get("sessionid")
	command(t, c, "configure-network", sid, map[string]string{"network": "127.0.0.1"})
	res = command(t, c, "configure-network", sid, map[string]string{"commands": "PRIVMSG cmdwatch :configured", "tls": "default"})
	if cmd := res.Child(nsCommands, "command"); cmd.Get("status") != "completed" {
		t.Fatalf("configure: %s", res)
	}
	command(t, c, "reconnect", "", nil)
	w.expect("the configured command", func(m ircmsg.Message) bool {
		return m.Command == "PRIVMSG" && m.Nick() == "cmduser" && last(m.Params) == "configured"
	})
}

// An XMPP ping to an IRC user, as a contact or as an occupant, is a CTCP
// PING answered when their client answers; a self-ping is answered at
// once, a ping to a nick not on the network is item-not-found, one to the
// server's JID is answered by its PONG.
func TestContactPing(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), nil)
	const (
		ch   = "#it-ping"
		room = ch + "%127.0.0.1@" + gwJID
	)
	c := onlineUser(t, e, "user19@b.test")
	if self := joinRoom(t, c, room, "pinger"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	p := dialRaw(t, e.irc, "pongy")
	p.join(ch)
	c.Expect(xwait, "pongy's presence", xmpptest.IsFrom("presence", room+"/pongy", ""))

	ping := func(to string) string {
		id := xmpptest.RandomID()
		c.Send(core.NewElement("", "iq", "type", "get", "to", to, "id", id).Add(core.NewElement("urn:xmpp:ping", "ping")))
		return id
	}
	answer := func(id string) *core.Element {
		t.Helper()
		return c.Expect(xwait, "the answer to ping "+id, func(el *core.Element) bool {
			return el.Name.Local == "iq" && el.Get("id") == id
		})
	}
	for _, to := range []string{room + "/pongy", "pongy%127.0.0.1@" + gwJID} {
		id := ping(to)
		req := p.expect("CTCP PING", func(m ircmsg.Message) bool {
			return m.Command == "PRIVMSG" && m.Nick() == "pinger" && len(m.Params) == 2 && strings.HasPrefix(m.Params[1], "\x01PING ")
		})
		// An answer with another token is not this ping's.
		p.send("NOTICE", "pinger", "\x01PING 12345\x01")
		if m, err := c.Next(300*time.Millisecond, func(el *core.Element) bool { return el.Get("id") == id }); err == nil {
			t.Errorf("ping to %s answered before pongy did: %s", to, m)
		}
		p.send("NOTICE", "pinger", req.Params[1])
		if res := answer(id); res.Get("type") != "result" {
			t.Errorf("ping to %s: %s", to, res)
		}
	}
	// A self-ping (XEP-0410) does not reach IRC.
	if res := answer(ping(room + "/pinger")); res.Get("type") != "result" {
		t.Errorf("self-ping: %s", res)
	}
	if !p.quiet(300*time.Millisecond, cmdFrom("PRIVMSG", "pinger")) {
		t.Error("a self-ping went to IRC")
	}
	if res := answer(ping("nobody%127.0.0.1@" + gwJID)); xmpptest.Condition(res) != "item-not-found" {
		t.Errorf("ping to a nick not on IRC: %s", res)
	}
	// The server's JID: an IRC PING, answered by its PONG.
	if res := answer(ping("127.0.0.1@" + gwJID)); res.Get("type") != "result" {
		t.Errorf("ping to the server: %s", res)
	}

	// Software version (XEP-0092), to the occupant and to the contact: a
	// CTCP VERSION, answered with what pongy's client says (formatting
	// stripped); to the user's own occupant JID it stays off IRC.
	version := func(to string) string {
		id := xmpptest.RandomID()
		c.Send(core.NewElement("", "iq", "type", "get", "to", to, "id", id).Add(core.NewElement("jabber:iq:version", "query")))
		return id
	}
	for _, to := range []string{room + "/pongy", "pongy%127.0.0.1@" + gwJID} {
		id := version(to)
		p.expect("CTCP VERSION", func(m ircmsg.Message) bool {
			return m.Command == "PRIVMSG" && m.Nick() == "pinger" && len(m.Params) == 2 && m.Params[1] == "\x01VERSION\x01"
		})
		p.send("NOTICE", "pinger", "\x01VERSION irssi \x02v1.4.5\x02 - running on Linux\x01")
		res := answer(id)
		q := res.Child("jabber:iq:version", "query")
		if res.Get("type") != "result" || q == nil || q.ChildText("", "name") != "irssi" || q.ChildText("", "version") != "v1.4.5 - running on Linux" {
			t.Errorf("version of %s: %s", to, res)
		}
	}
	if res := answer(version(room + "/pinger")); xmpptest.Condition(res) != "service-unavailable" {
		t.Errorf("version of the user's own occupant JID: %s", res)
	}
	if res := answer(version("nobody%127.0.0.1@" + gwJID)); xmpptest.Condition(res) != "item-not-found" {
		t.Errorf("version of a nick not on IRC: %s", res)
	}
	// The server's: its 351 (InspIRCd and its version).
	res := answer(version("127.0.0.1@" + gwJID))
	if q := res.Child("jabber:iq:version", "query"); q == nil || !strings.Contains(q.ChildText("", "name"), "InspIRCd") {
		t.Errorf("version of the server: %s", res)
	}
	if !p.quiet(300*time.Millisecond, cmdFrom("PRIVMSG", "pinger")) {
		t.Error("a version request went to IRC that should not have")
	}
	// The contact's disco#info says what is relayed to their client.
	info := c.IQ(core.NewElement("", "iq", "type", "get", "to", "pongy%127.0.0.1@"+gwJID).Add(core.NewElement("http://jabber.org/protocol/disco#info", "query")))
	for _, want := range []string{"urn:xmpp:ping", "jabber:iq:version", "http://jabber.org/protocol/chatstates"} {
		if !strings.Contains(info.String(), `"`+want+`"`) {
			t.Errorf("contact's disco#info without %s: %s", want, info)
		}
	}
}

// A network registered with a character set (a Cyrillic network on
// Windows-1251): its users' lines read right, the user's are written in
// it, and a UTF-8 line from the network still reads as UTF-8.
func TestNetworkCharset(t *testing.T) {
	e := testIRCEnv(t)
	gw := startGW(t, e.xmpp, port(e.irc), nil)
	const (
		ch   = "#it-charset"
		room = ch + "%127.0.0.1@" + gwJID
	)
	c := onlineUser(t, e, "user19@b.test")
	register(t, c, map[string]string{"nick": "cyr", "network": "127.0.0.1", "auth": "none", "encoding": "windows-1251"})
	if self := joinRoom(t, c, room, "cyr"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	r := dialRaw(t, e.irc, "ivan")
	r.join(ch)
	c.Expect(xwait, "ivan's presence", xmpptest.IsFrom("presence", room+"/ivan", ""))

	r.send("PRIVMSG", ch, "\xcf\xf0\xe8\xe2\xe5\xf2") // Привет in Windows-1251
	if m := c.Expect(xwait, "ivan's Windows-1251 line", xmpptest.IsFrom("message", room+"/ivan", "groupchat")); m.ChildText("", "body") != "Привет" {
		t.Errorf("Windows-1251 line read as %q", m.ChildText("", "body"))
	}
	r.send("PRIVMSG", ch, "héllo ☺")
	if m := c.Expect(xwait, "ivan's UTF-8 line", xmpptest.IsFrom("message", room+"/ivan", "groupchat")); m.ChildText("", "body") != "héllo ☺" {
		t.Errorf("UTF-8 line read as %q", m.ChildText("", "body"))
	}
	msg := core.NewElement("", "message", "to", room, "type", "groupchat", "id", xmpptest.RandomID())
	c.Send(msg.AddText("", "body", "Да, мир € 日"))
	got := r.expect("cyr's line", cmdFrom("PRIVMSG", "cyr"))
	if want := "\xc4\xe0, \xec\xe8\xf0 \x88 ?"; last(got.Params) != want {
		t.Errorf("line written as %q, want %q (Windows-1251)", last(got.Params), want)
	}
	// The wire trace (on in these tests) shows both ways as text.
	logs := gw.logs.String()
	for _, want := range []string{"Привет", "Да, мир € ?"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the wire trace does not show %q as text", want)
		}
	}
}

// Configure channel sets one channel apart from its network (a KOI8-R
// channel on a UTF-8 network): its lines read right and the user's are
// written in KOI8-R, at once, while the other channel keeps the
// network's; Configure network keeps the setting; "As the network" undoes
// it.
func TestChannelCharset(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), nil)
	const (
		cyr, other = "#it-chancyr", "#it-chanother"
		roomCyr    = cyr + "%127.0.0.1@" + gwJID
		roomOther  = other + "%127.0.0.1@" + gwJID
		koi        = "\xf0\xd2\xc9\xd7\xc5\xd4" // Привет in KOI8-R
	)
	c := onlineUser(t, e, "user7@b.test")
	register(t, c, map[string]string{"nick": "chcs", "network": "127.0.0.1", "auth": "none"})
	for _, room := range []string{roomCyr, roomOther} {
		if self := joinRoom(t, c, room, "chcs"); self.Get("type") == "error" {
			t.Fatalf("join %s: %s", room, self)
		}
	}
	r := dialRaw(t, e.irc, "olga")
	r.join(cyr)
	r.join(other)
	c.Expect(xwait, "olga's presence", xmpptest.IsFrom("presence", roomCyr+"/olga", ""))
	c.Expect(xwait, "olga's presence", xmpptest.IsFrom("presence", roomOther+"/olga", ""))

	body := func(room, what string) string {
		return c.Expect(xwait, what, xmpptest.IsFrom("message", room+"/olga", "groupchat")).ChildText("", "body")
	}
	say := func(room, text string) string {
		msg := core.NewElement("", "message", "to", room, "type", "groupchat", "id", xmpptest.RandomID())
		c.Send(msg.AddText("", "body", text))
		return last(r.expect("chcs's line to "+room, cmdFrom("PRIVMSG", "chcs")).Params)
	}
	configure := func(fields map[string]string) *core.Element {
		t.Helper()
		sid := command(t, c, "configure-channel", "", nil).Child(nsCommands, "command").Get("sessionid")
		res := command(t, c, "configure-channel", sid, map[string]string{"channel": "#it-chanCyr%127.0.0.1"}) // any case
		if !strings.Contains(res.String(), "As the network (UTF-8)") || !strings.Contains(res.String(), "KOI8-R") {
			t.Fatalf("channel form: %s", res)
		}
		form := res
		res = command(t, c, "configure-channel", sid, fields)
		if cmd := res.Child(nsCommands, "command"); cmd.Get("status") != "completed" {
			t.Fatalf("configure channel: %s", res)
		}
		return form
	}

	// Before: the network's UTF-8, with Windows-1252 for what is not.
	r.send("PRIVMSG", cyr, koi)
	if got := body(roomCyr, "olga's line before"); got == "Привет" {
		t.Fatalf("read as KOI8-R before the channel was set: %q", got)
	}
	configure(map[string]string{"encoding": "koi8-r"})
	r.send("PRIVMSG", cyr, koi)
	if got := body(roomCyr, "olga's KOI8-R line"); got != "Привет" {
		t.Errorf("KOI8-R line in %s read as %q", cyr, got)
	}
	r.send("PRIVMSG", cyr, "héllo ☺")
	if got := body(roomCyr, "olga's UTF-8 line"); got != "héllo ☺" {
		t.Errorf("UTF-8 line in %s read as %q", cyr, got)
	}
	r.send("PRIVMSG", other, koi)
	if got := body(roomOther, "olga's line in the other channel"); got == "Привет" || got == "" {
		t.Errorf("the other channel read KOI8-R: %q", got)
	}
	if got := say(roomCyr, "Да, мир"); got != "\xe4\xc1, \xcd\xc9\xd2" {
		t.Errorf("line to %s written as %q, want KOI8-R", cyr, got)
	}
	if got := say(roomOther, "Да, мир"); got != "Да, мир" {
		t.Errorf("line to %s written as %q, want UTF-8", other, got)
	}
	info := command(t, c, "irc-connections", "", nil).Child(nsCommands, "command").ChildText("", "note")
	if !strings.Contains(info, "(channels: #it-chancyr koi8-r)") {
		t.Errorf("IRC connections does not show the channel's character set: %q", info)
	}

	// Configure network, saved again, keeps it; the form shows it.
	sid := command(t, c, "configure-network", "", nil).Child(nsCommands, "command").Get("sessionid")
	command(t, c, "configure-network", sid, map[string]string{"network": "127.0.0.1"})
	if res := command(t, c, "configure-network", sid, map[string]string{"nick": "chcs", "tls": "default", "encoding": "default"}); res.Child(nsCommands, "command").Get("status") != "completed" {
		t.Fatalf("configure network: %s", res)
	}
	form := configure(map[string]string{"encoding": "default"})
	for _, f := range form.Child(nsCommands, "command").Child("jabber:x:data", "x").Children {
		if f.Get("var") == "encoding" && f.ChildText("", "value") != "koi8-r" {
			t.Errorf("channel form's character set after Configure network = %s", f)
		}
	}
	// Back to the network's.
	r.send("PRIVMSG", cyr, koi)
	if got := body(roomCyr, "olga's line after"); got == "Привет" {
		t.Errorf("still read as KOI8-R after going back to the network's: %q", got)
	}
	if got := say(roomCyr, "Да"); got != "Да" {
		t.Errorf("line written as %q after going back, want UTF-8", got)
	}

	// Configure on the other channel's room JID, as with biboumi: the
	// room lists it and runs it without asking which channel.
	info2 := c.IQ(core.NewElement("", "iq", "type", "get", "to", roomOther).Add(core.NewElement("http://jabber.org/protocol/disco#info", "query")))
	if !strings.Contains(info2.String(), `var="`+nsCommands+`"`) {
		t.Errorf("the room's disco#info lacks commands: %s", info2)
	}
	items := c.IQ(core.NewElement("", "iq", "type", "get", "to", roomOther).Add(core.NewElement("http://jabber.org/protocol/disco#items", "query", "node", nsCommands)))
	if !strings.Contains(items.String(), `node="configure"`) || strings.Contains(items.String(), "configure-network") {
		t.Errorf("the room's commands: %s", items)
	}
	res := commandTo(t, c, roomOther, "configure", "", nil)
	sid = res.Child(nsCommands, "command").Get("sessionid")
	if !strings.Contains(res.String(), "IRC channel "+other+" on 127.0.0.1") {
		t.Fatalf("the room's Configure: %s", res)
	}
	if res := commandTo(t, c, roomOther, "configure", sid, map[string]string{"encoding": "koi8-r"}); res.Child(nsCommands, "command").Get("status") != "completed" {
		t.Fatalf("the room's Configure: %s", res)
	}
	r.send("PRIVMSG", other, koi)
	if got := body(roomOther, "olga's KOI8-R line in the other channel"); got != "Привет" {
		t.Errorf("KOI8-R line in %s read as %q after the room's Configure", other, got)
	}
	// A command of the gateway's is not run on a room's JID.
	iq0 := core.NewElement("", "iq", "type", "set", "to", roomOther)
	if res := c.IQ(iq0.Add(core.NewElement(nsCommands, "command", "node", "configure-network", "action", "execute"))); res.Get("type") != "error" || !strings.Contains(res.String(), "item-not-found") {
		t.Errorf("configure-network on a room: %s", res)
	}

	// Bad input is refused naming the field.
	sid = command(t, c, "configure-channel", "", nil).Child(nsCommands, "command").Get("sessionid")
	iq := core.NewElement("", "iq", "type", "set", "to", gwJID)
	x := core.NewElement("jabber:x:data", "x", "type", "submit").Add(core.NewElement("", "field", "var", "channel").AddText("", "value", "nochan"))
	res = c.IQ(iq.Add(core.NewElement(nsCommands, "command", "node", "configure-channel", "sessionid", sid, "action", "complete").Add(x)))
	if res.Get("type") != "error" || !strings.Contains(res.String(), "channel") || !strings.Contains(res.String(), "bad-request") && !strings.Contains(res.String(), "not-acceptable") {
		t.Errorf("a bad channel's error: %s", res)
	}
}

// The "IRC connections" command shows each network's connection (nick,
// channels, capabilities); "Disconnect from a network" leaves its rooms
// and quits with the user's message.
func TestConnectionCommands(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), nil)
	const (
		ch   = "#it-conninfo"
		room = ch + "%127.0.0.1@" + gwJID
	)
	c := onlineUser(t, e, "user19@b.test")
	if self := joinRoom(t, c, room, "infonick"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	w := dialRaw(t, e.irc, "witness")
	w.join(ch)
	note := func(res *core.Element) string { return res.Child(nsCommands, "command").ChildText("", "note") }

	info := note(command(t, c, "irc-connections", "", nil))
	for _, want := range []string{"127.0.0.1, port", "Connected since", "Nick: infonick", "Channels: " + ch, "IRCv3: ", "server-time"} {
		if !strings.Contains(info, want) {
			t.Errorf("IRC connections: %q lacks %q", info, want)
		}
	}

	res := command(t, c, "irc-disconnect", "", nil)
	sid := res.Child(nsCommands, "command").Get("sessionid")
	if !strings.Contains(res.String(), "127.0.0.1 ("+ch+")") {
		t.Errorf("disconnect form does not offer the network with its channel: %s", res)
	}
	res = command(t, c, "irc-disconnect", sid, map[string]string{"network": "127.0.0.1", "reason": "off to lunch"})
	if cmd := res.Child(nsCommands, "command"); cmd.Get("status") != "completed" {
		t.Fatalf("disconnect: %s", res)
	}
	q := w.expect("QUIT", cmdFrom("QUIT", "infonick"))
	if !strings.Contains(last(q.Params), "off to lunch") {
		t.Errorf("quit message = %q", last(q.Params))
	}
	c.Expect(xwait, "out of the room", xmpptest.IsFrom("presence", room+"/infonick", "unavailable"))
	// Joining again connects again.
	if self := joinRoom(t, c, room, "infonick"); self.Get("type") == "error" {
		t.Fatalf("join after the disconnect: %s", self)
	}
	w.expect("JOIN again", cmdFrom("JOIN", "infonick"))
}

// TestRoomConfig: a channel operator's room configuration (XEP-0045
// §10.2, muc#owner) is the channel's modes on InspIRCd: the form shows
// them, a submitted form becomes MODE lines a member sees, and someone
// who is no operator is refused.
func TestRoomConfig(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), nil)
	const (
		ch   = "#it-roomconfig"
		room = ch + "%127.0.0.1@" + gwJID
		nsO  = "http://jabber.org/protocol/muc#owner"
	)
	c := onlineUser(t, e, "user19@b.test")
	if self := joinRoom(t, c, room, "cfgop"); item(self).Get("role") != "moderator" {
		t.Fatalf("join as the channel's operator: %s", self)
	}
	w := dialRaw(t, e.irc, "cfgwatch")
	w.join(ch)
	c.Expect(xwait, "cfgwatch's presence", xmpptest.IsFrom("presence", room+"/cfgwatch", ""))

	get := func() map[string]string {
		t.Helper()
		iq := core.NewElement("", "iq", "type", "get", "to", room)
		res := c.IQ(iq.Add(core.NewElement(nsO, "query")))
		x := res.Child(nsO, "query")
		if res.Get("type") != "result" || x == nil || x.Child("jabber:x:data", "x") == nil {
			t.Fatalf("room configuration form: %s", res)
		}
		out := map[string]string{}
		for _, f := range x.Child("jabber:x:data", "x").Children {
			if f.Name.Local == "field" {
				out[f.Get("var")] = f.ChildText("", "value")
			}
		}
		return out
	}
	set := func(fields map[string]string) *core.Element {
		t.Helper()
		x := core.NewElement("jabber:x:data", "x", "type", "submit")
		x.Add(core.NewElement("", "field", "var", "FORM_TYPE").AddText("", "value", "http://jabber.org/protocol/muc#roomconfig"))
		for k, v := range fields {
			x.Add(core.NewElement("", "field", "var", k).AddText("", "value", v))
		}
		iq := core.NewElement("", "iq", "type", "set", "to", room)
		return c.IQ(iq.Add(core.NewElement(nsO, "query").Add(x)))
	}
	// A channel InspIRCd made is +nt: the subject is locked, the rest off.
	f := get()
	if f["FORM_TYPE"] != "http://jabber.org/protocol/muc#roomconfig" || f["muc#roomconfig_changesubject"] != "false" ||
		f["muc#roomconfig_moderatedroom"] != "false" || f["muc#roomconfig_publicroom"] != "true" ||
		f["muc#roomconfig_passwordprotectedroom"] != "false" || f["muc#roomconfig_maxusers"] != "" {
		t.Errorf("form of a new channel: %v", f)
	}

	// Moderated, a password, at most 25, subject open to all: one MODE
	// line (InspIRCd takes 20 changes a line) the member sees.
	res := set(map[string]string{
		"muc#roomconfig_moderatedroom":         "1",
		"muc#roomconfig_passwordprotectedroom": "1",
		"muc#roomconfig_roomsecret":            "s3cret",
		"muc#roomconfig_maxusers":              "25",
		"muc#roomconfig_changesubject":         "true",
	})
	if res.Get("type") != "result" {
		t.Fatalf("submitted form: %s", res)
	}
	mode := w.expect("MODE", func(m ircmsg.Message) bool { return m.Command == "MODE" && m.Nick() == "cfgop" })
	got := strings.Join(mode.Params[1:], " ")
	for _, want := range []string{"m", "k", "l", "-t", "s3cret", "25"} {
		if !strings.Contains(got, want) {
			t.Errorf("MODE %s: want %q in it", got, want)
		}
	}
	// The room shows the change, as IRC clients do.
	shown := c.Expect(xwait, "the mode change in the room", func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Get("from") == room && strings.Contains(el.ChildText("", "body"), "sets mode")
	})
	if body := shown.ChildText("", "body"); body != "cfgop sets mode "+got {
		t.Errorf("room shows %q, want %q", body, "cfgop sets mode "+got)
	}
	// Marked as a change of the room's configuration (status 104), on
	// which clients read its disco#info again.
	if !statusCodes(shown)["104"] {
		t.Errorf("mode change without status 104: %s", shown)
	}
	f = get()
	if f["muc#roomconfig_moderatedroom"] != "true" || f["muc#roomconfig_roomsecret"] != "s3cret" ||
		f["muc#roomconfig_maxusers"] != "25" || f["muc#roomconfig_changesubject"] != "true" || f["muc#roomconfig_passwordprotectedroom"] != "true" {
		t.Errorf("form after the change: %v", f)
	}
	// The room's information says so too, to the user in it: features
	// and the muc#roominfo form (two occupants, the topic InspIRCd has
	// none of).
	info := c.IQ(core.NewElement("", "iq", "type", "get", "to", room).Add(core.NewElement("http://jabber.org/protocol/disco#info", "query")))
	features := map[string]bool{}
	roominfo := map[string]string{}
	for _, el := range info.Child("http://jabber.org/protocol/disco#info", "query").Children {
		if el.Name.Local == "feature" {
			features[el.Get("var")] = true
		}
		if el.Name.Local == "x" {
			for _, f := range el.Children {
				roominfo[f.Get("var")] = f.ChildText("", "value")
			}
		}
	}
	for _, want := range []string{"muc_passwordprotected", "muc_moderated", "muc_open", "muc_public", "http://jabber.org/protocol/muc"} {
		if !features[want] {
			t.Errorf("room information without %s: %s", want, info)
		}
	}
	if features["muc_unsecured"] || roominfo["FORM_TYPE"] != "http://jabber.org/protocol/muc#roominfo" || roominfo["muc#roominfo_occupants"] != "2" || roominfo["muc#roomconfig_maxusers"] != "25" {
		t.Errorf("room information: %s", info)
	}
	// The password is needed on IRC now.
	x := dialRaw(t, e.irc, "cfgnokey")
	x.send("JOIN", ch)
	x.expect("475 bad key", func(m ircmsg.Message) bool { return m.Command == "475" })

	// Refusals: a password box without a password, a word for a number,
	// a password that would be two IRC parameters or lines, destroying
	// the room. None reaches IRC.
	for _, bad := range []struct {
		fields map[string]string
		cond   string
	}{
		{map[string]string{"muc#roomconfig_passwordprotectedroom": "1", "muc#roomconfig_roomsecret": ""}, "bad-request"},
		{map[string]string{"muc#roomconfig_maxusers": "many"}, "not-acceptable"},
		{map[string]string{"muc#roomconfig_roomsecret": "two words"}, "not-acceptable"},
		{map[string]string{"muc#roomconfig_roomsecret": "a\r\nQUIT :x"}, "not-acceptable"},
	} {
		if res := set(bad.fields); res.Get("type") != "error" || xmpptest.Condition(res) != bad.cond {
			t.Errorf("form %v: %s, want %s", bad.fields, res, bad.cond)
		}
	}
	destroy := core.NewElement("", "iq", "type", "set", "to", room)
	if res := c.IQ(destroy.Add(core.NewElement(nsO, "query").Add(core.NewElement("", "destroy")))); xmpptest.Condition(res) != "not-allowed" {
		t.Errorf("destroy: %s", res)
	}
	if !w.quiet(500*time.Millisecond, cmdFrom("MODE", "cfgop")) {
		t.Error("a refused form reached IRC")
	}

	// Password off, the rest as it was: -k naming the key.
	if res := set(map[string]string{"muc#roomconfig_passwordprotectedroom": "0"}); res.Get("type") != "result" {
		t.Fatalf("password off: %s", res)
	}
	mode = w.expect("MODE -k", func(m ircmsg.Message) bool { return m.Command == "MODE" && m.Nick() == "cfgop" })
	if got := strings.Join(mode.Params[1:], " "); got != "-k s3cret" {
		t.Errorf("MODE %s, want -k s3cret", got)
	}

	// No longer an operator: the form is shown, a change refused.
	deop := core.NewElement("", "iq", "type", "set", "to", room)
	deop.Add(core.NewElement("http://jabber.org/protocol/muc#admin", "query").Add(core.NewElement("", "item", "nick", "cfgop", "role", "participant")))
	if res := c.IQ(deop); res.Get("type") != "result" {
		t.Fatalf("deop self: %s", res)
	}
	c.Expect(xwait, "own role participant", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", room+"/cfgop", "")(el) && item(el).Get("role") == "participant"
	})
	get()
	if res := set(map[string]string{"muc#roomconfig_moderatedroom": "0"}); xmpptest.Condition(res) != "forbidden" {
		t.Errorf("change by a non-operator: %s, want forbidden", res)
	}
}

// TestTyping: chat states (XEP-0085) and IRCv3's +typing (TAGMSG, to a
// client that asked for message-tags on InspIRCd), both ways, in a room
// and in a private chat.
func TestTyping(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), nil)
	const (
		ch      = "#it-typing"
		room    = ch + "%127.0.0.1@" + gwJID
		nsCS    = "http://jabber.org/protocol/chatstates"
		typist  = "typist%127.0.0.1@" + gwJID
		typerIn = room + "/typist"
	)
	c := onlineUser(t, e, "user19@b.test")
	if self := joinRoom(t, c, room, "typer"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	r := dialRaw(t, e.irc, "typist")
	r.send("CAP", "REQ", "message-tags")
	r.expect("CAP ACK", func(m ircmsg.Message) bool { return m.Command == "CAP" && len(m.Params) >= 2 && m.Params[1] == "ACK" })
	r.join(ch)
	c.Expect(xwait, "typist's presence", xmpptest.IsFrom("presence", typerIn, ""))

	// The user types: +typing on TAGMSG to the channel, and to a nick.
	state := func(to, typ, st string) {
		c.Send(core.NewElement("", "message", "to", to, "type", typ).Add(core.NewElement(nsCS, st)))
	}
	tagmsg := func(target, want string) {
		t.Helper()
		m := r.expect("TAGMSG +typing="+want+" to "+target, func(m ircmsg.Message) bool {
			return m.Command == "TAGMSG" && m.Nick() == "typer" && len(m.Params) == 1 && m.Params[0] == target
		})
		if _, v := m.GetTag("+typing"); v != want {
			t.Errorf("TAGMSG to %s: +typing=%q, want %q", target, v, want)
		}
	}
	for _, step := range []struct{ st, tag string }{{"composing", "active"}, {"paused", "paused"}, {"active", "done"}} {
		state(room, "groupchat", step.st)
		tagmsg(ch, step.tag)
	}
	state(typist, "chat", "composing")
	tagmsg("typist", "active")

	// The IRC user types: a bodiless message with the state, from the
	// occupant (to the room's resource) or from the contact.
	rawLine := func(line string) {
		if _, err := r.c.Write([]byte(line + "\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	shown := func(from, typ, want string) {
		t.Helper()
		m := c.Expect(xwait, want+" from "+from, xmpptest.IsFrom("message", from, typ))
		if m.Child(nsCS, want) == nil || m.Child("", "body") != nil {
			t.Errorf("chat state from %s: %s, want %s without a body", from, m, want)
		}
	}
	rawLine("@+typing=active TAGMSG " + ch)
	shown(typerIn, "groupchat", "composing")
	rawLine("@+typing=paused TAGMSG typer")
	shown(typist, "chat", "paused")
	rawLine("@+typing=done TAGMSG typer")
	shown(typist, "chat", "active")
	// A message still comes as one.
	r.send("PRIVMSG", ch, "done typing")
	if m := c.Expect(xwait, "typist's message", xmpptest.IsFrom("message", typerIn, "groupchat")); m.ChildText("", "body") != "done typing" {
		t.Errorf("message after typing: %s", m)
	}
}
