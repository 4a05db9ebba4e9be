package irc

import (
	"bytes"
	"context"
	"errors"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/ergochat/irc-go/ircmsg"
	"mellium.im/xmpp/jid"

	"transportd/core"
	"transportd/core/jidesc"
)

// fuzzSession is a session with one registered network (no socket: what
// it would send is dropped) and a joined, reported channel #c.
func fuzzSession(t testing.TB) (*session, *network, *recorder) {
	rec := newRecorder(quietTB{t})
	tr := New()
	s := newSession(tr, &core.Account{JID: "u@a.test", Defaults: map[string]string{dAllowedServers: ""}}, rec)
	s.ctx = context.Background()
	rec.logger = discard
	n := s.network("irc.example.org", "me")
	n.me = self{nick: "me", user: "u", host: "h"}
	for _, c := range []string{"echo-message", "batch", "labeled-response", "message-tags", "server-time", "away-notify"} {
		n.caps.add(c)
	}
	n.feat = newFeatures(map[string]string{"CHANTYPES": "#&+", "PREFIX": "(qaohv)~&@%+", "STATUSMSG": "@+", "CHANMODES": "b,k,l,imnpst"})
	n.applyISupport()
	ch := n.channelFor("#c")
	ch.room, ch.xmpp, ch.reported, ch.joined = "#c%irc.example.org", true, true, true
	ch.members.set("me", &member{nick: intern("me")})
	ch.members.set("op", &member{nick: intern("op"), modes: "o"})
	ch.members.set("v", &member{nick: intern("v"), modes: "v"})
	// A pending message, for echoes and errors to match.
	n.pending = append(n.pending, &pendingLine{label: "t1", target: "#c", ps: &pendingSend{room: ch.room, contact: ch.room, xmppID: "x", legacyID: "l", body: "hi", remaining: 1}})
	return s, n, rec
}

// checkText is what every string handed to core must satisfy.
func checkText(t *testing.T, what, s string) {
	if !utf8.ValidString(s) {
		t.Fatalf("%s is not valid UTF-8: %q", what, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == 0xFFFE || r == 0xFFFF {
			t.Fatalf("%s contains %U: %q", what, r, s)
		}
	}
}

func checkAddress(t *testing.T, what, addr string) {
	checkText(t, what, addr)
	if addr == "" {
		t.Fatalf("%s is empty", what)
	}
	if err := jidesc.Valid(localpart(addr)); err != nil {
		t.Fatalf("%s %q: localpart %q: %v", what, addr, localpart(addr), err)
	}
	if _, err := parseAddress(addr, nil); err != nil {
		if _, err2 := parseAddress(addr, func(string) string { return "#&+" }); err2 != nil {
			t.Fatalf("%s %q does not parse back: %v", what, addr, err)
		}
	}
}

// FuzzIRCToXMPP feeds arbitrary lines from a server through the session
// and checks what reaches core: no panic, valid UTF-8 without control
// characters, addresses that make valid JID localparts.
func FuzzIRCToXMPP(f *testing.F) {
	for _, seed := range []string{
		":op!o@h PRIVMSG #c :\x02hi\x02 \x0304there",
		"@time=2020-01-01T00:00:00Z;msgid=1 :x!y@z PRIVMSG #c :\x01ACTION waves\x01",
		":me!u@h PRIVMSG #c :hi",
		"@label=t1 :me!u@h PRIVMSG #c :hi",
		":Alice!a@h PRIVMSG me :caf\xe9\x93",
		":irc.example.org NOTICE me :*** server notice",
		":op!o@h MODE #c +ov-v v v v\n:v!v@h NICK w\n:w!v@h QUIT :bye",
		":op!o@h KICK #c me :out",
		"BATCH +b chathistory #c\n@batch=b;time=2020-01-01T00:00:00Z :x!y@z PRIVMSG #c :old\nBATCH -b",
		":irc 353 me = #c :@+op ~x!u@h %y\n:irc 366 me #c :end",
		":me!u@h JOIN #d\n:irc 332 me #d :topic\x00\n:irc 353 me = #d :me a b\n:irc 366 me #d :end",
		":a!b@c AWAY :gone\n:a!b@c INVITE me #x",
		":irc 404 me #c :no\n@label=t1 :irc 401 me x :no such nick",
		":op!o@h TOPIC #c :\x1f\x16new topic\xff",
		"PING :x\nERROR :bye\nCAP * NEW :echo-message",
		":irc 367 me #c *!*@h op!o@h 1600000000\n:irc 367 me #C $a:x\n:irc 368 me #c :end",
		":x!y@z NOTICE me :\x01PING t1\x01\n:irc PONG irc :t2\n:irc 401 me x :no such nick",
		":irc 324 me #C +ntkl key 20\n:irc 329 me #c 1600000000",
		"@+typing=active :x!y@z TAGMSG #c\n@+draft/typing=done :x!y@z TAGMSG me",
		":X!y@z NOTICE me :\x01VERSION irssi v1.4 - \x02Linux\x01\n:irc 351 me InspIRCd-4.0.0. irc :x",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, input string) {
		s, n, rec := fuzzSession(t)
		// A ban list and pings waiting for their answers.
		bans := &banReq{reply: make(chan banResult, 1)}
		n.rare().banLists = map[string]*banListing{"#c": {reqs: []*banReq{bans}, at: time.Now()}}
		n.rare().ctcpWait = []*ctcpReq{
			{cmd: "PING", nick: "x", token: "t1", at: time.Now(), reply: make(chan ctcpResult, 1)},
			{cmd: "PING", token: "t2", at: time.Now(), reply: make(chan ctcpResult, 1)},
			{cmd: "VERSION", nick: "x", at: time.Now(), reply: make(chan ctcpResult, 1)},
			{cmd: "VERSION", at: time.Now(), reply: make(chan ctcpResult, 1)},
		}
		ctcpReqs := slices.Clone(n.ctcpWait)
		modes := &modeReq{folded: "#c", at: time.Now(), reply: make(chan modeResult, 1)}
		n.rare().modeReqs = []*modeReq{modes}
		lines := strings.Split(input, "\n")
		if len(lines) > 30 {
			lines = lines[:30]
		}
		for _, l := range lines {
			m, err := parseLine(strings.TrimSuffix(l, "\r"))
			if err != nil {
				continue
			}
			n.handle(m, "")
		}
		_ = s
		select {
		case r := <-bans.reply:
			for _, b := range r.bans {
				checkText(t, "ban mask", b.Mask)
				checkText(t, "ban setter", b.By)
				if !validMask(b.Mask) {
					t.Fatalf("ban mask %q cannot be unbanned", b.Mask)
				}
			}
		default:
		}
		for _, r := range ctcpReqs {
			select {
			case a := <-r.reply:
				v := splitVersion(a.text)
				checkText(t, "version name", v.Name)
				checkText(t, "version", v.Version)
			default:
			}
		}
		select {
		case r := <-modes.reply:
			// What the form shows can be set back and cleared.
			checkText(t, "channel key", r.rc.Password)
			for _, l := range append(configLines(n.feat, "#c", core.RoomConfig{}, r.rc), configLines(n.feat, "#c", r.rc, core.RoomConfig{})...) {
				if _, err := l.Line(); err != nil {
					t.Fatalf("modes %+v: %v", r.rc, err)
				}
			}
		default:
		}
		rec.mu.Lock()
		defer rec.mu.Unlock()
		for _, ev := range rec.events {
			switch ev := ev.(type) {
			case recTyping:
				checkText(t, "typing nick", ev.m.Nick)
				if ev.m.Contact == "" || ev.m.Groupchat && ev.m.Nick == "" {
					t.Fatalf("chat state without an address: %+v", ev)
				}
			case *core.Message:
				checkText(t, "body", ev.Body)
				checkText(t, "nick", ev.Nick)
				checkText(t, "legacy id", ev.LegacyID)
				checkAddress(t, "contact", ev.Contact)
			case recJoined:
				checkText(t, "subject", ev.subject)
				checkText(t, "self", ev.self.Nick)
				for _, o := range ev.occupants {
					checkText(t, "occupant", o.Nick)
					checkText(t, "status", o.Status)
				}
				checkAddress(t, "room", ev.room)
			case recPresence:
				checkText(t, "occupant", ev.o.Nick)
				checkText(t, "status", ev.o.Status)
			case recLeft:
				checkText(t, "nick", ev.nick)
				checkText(t, "reason", ev.reason)
			case recNick:
				checkText(t, "old nick", ev.old)
				checkText(t, "new nick", ev.new)
			case recSubject:
				checkText(t, "subject", ev.subject)
				checkText(t, "by", ev.by)
			case recError:
				var ce *core.Error
				if errors.As(ev.err, &ce) {
					checkText(t, "error text", ce.Text)
				}
			case recFailed:
				var ce *core.Error
				if errors.As(ev.err, &ce) {
					checkText(t, "failure text", ce.Text)
				}
			}
		}
	})
}

// FuzzSerialize builds every kind of line the user's actions become from
// arbitrary text: each line has no CR, LF or NUL inside, fits in 512
// bytes once relayed, and parses back into one message with the same
// command and parameters.
func FuzzSerialize(f *testing.F) {
	f.Add("hello\r\nQUIT :x", "nick", "topic\r\nKICK", "reason\x00", "#chan")
	f.Add("/me waves\n"+strings.Repeat("é", 600), "n\r\nick", "", "", "#c h")
	f.Add(strings.Repeat("a b ", 300), "[]\\`_^{|}", strings.Repeat("t", 600), strings.Repeat("r", 600), "&loc:al")
	me := self{nick: "somebodyverylongnick", user: "~user", host: "a.very.long.host.name.example.com"}
	f.Fuzz(func(t *testing.T, body, nick, topic, reason, channel string) {
		var msgs []ircmsg.Message
		add := func(m ircmsg.Message, err error) {
			if err == nil {
				msgs = append(msgs, m)
			}
		}
		if singleLine(body) {
			if got := bodyLines(body); len(got) != 1 || got[0] != body {
				t.Fatalf("singleLine(%q), but bodyLines = %q", body, got)
			}
		}
		if ms, err := textMessages("PRIVMSG", channel, body, me); err == nil {
			msgs = append(msgs, ms...)
		}
		if ms, err := textMessages("PRIVMSG", nick, body, me); err == nil {
			msgs = append(msgs, ms...)
		}
		add(nickMessage(nick))
		add(topicMessage(channel, topic, 0, me))
		add(topicMessage(channel, topic, 307, me))
		add(reasonMessage("PART", channel, reason))
		add(reasonMessage("QUIT", "", reason))
		add(joinMessage(channel, reason))
		add(ctcpReply(nick, "VERSION", reason))
		for _, m := range msgs {
			b, err := serialize(m)
			if err != nil {
				t.Fatalf("%s %q: built but not serialisable: %v", m.Command, m.Params, err)
			}
			line := string(b)
			if !strings.HasSuffix(line, "\r\n") {
				t.Fatalf("line %q does not end with CR LF", line)
			}
			inner := line[:len(line)-2]
			if strings.ContainsAny(inner, "\r\n\x00") {
				t.Fatalf("line %q has CR, LF or NUL inside", line)
			}
			relayed := ":" + me.nick + "!" + me.user + "@" + me.host + " " + inner
			if len(relayed)+2 > maxLine {
				t.Fatalf("relayed line is %d bytes: %q", len(relayed)+2, relayed)
			}
			back, err := ircmsg.ParseLine(line)
			if err != nil {
				t.Fatalf("line %q does not parse: %v", line, err)
			}
			if back.Command != m.Command || len(back.Params) != len(m.Params) {
				t.Fatalf("line %q parses as %s %q, sent %s %q", line, back.Command, back.Params, m.Command, m.Params)
			}
			for i := range m.Params {
				if back.Params[i] != m.Params[i] {
					t.Fatalf("param %d: sent %q, parsed %q", i, m.Params[i], back.Params[i])
				}
			}
		}
	})
}

// FuzzAddress: every address that parses becomes a valid JID localpart
// that comes back as the same address; nothing panics on any localpart;
// RoomAddress agrees with Address and IsRoom.
func FuzzAddress(f *testing.F) {
	for _, s := range []string{"#chan%irc.example.org", "&a'b%x.org", "nick%x.org", "irc.example.org", "#50%off%x.org",
		`\26chan%x.org`, `#a\5cb%x.org`, "[m]%x.org", "#ch@n/x:y%x.org", "#c h%x", "%x.org", "#é%x.org", `a\20b%x.org`} {
		f.Add(s)
	}
	tr := New()
	f.Fuzz(func(t *testing.T, s string) {
		// s as a legacy address.
		if a, err := parseAddress(s, nil); err == nil {
			addr := a.String()
			if a.is(s) != (addr == s) || !a.is(addr) {
				t.Fatalf("address %q: is(%q) = %v, String %q", s, s, a.is(s), addr)
			}
			l := localpart(addr)
			if err := jidesc.Valid(l); err != nil {
				t.Fatalf("address %q: localpart %q: %v", addr, l, err)
			}
			back, err := tr.Address(l)
			if a.server == "" && a.kind != kindServer {
				if err == nil {
					t.Fatalf("address %q without server accepted with no default server", addr)
				}
			} else if err != nil || back != addr {
				t.Fatalf("Address(Localpart(%q)) = %q, %v", addr, back, err)
			}
			if j, err := jid.New(l, "irc.b.test", ""); err == nil {
				// What a JID keeps of it still parses (PRECIS may fold case).
				if _, err := parseAddress(jidesc.Unescape(j.Localpart()), nil); err != nil {
					t.Fatalf("JID localpart %q of %q does not parse: %v", j.Localpart(), addr, err)
				}
			}
		}
		// s as a JID localpart.
		if addr, err := tr.Address(s); err == nil {
			if !utf8.ValidString(addr) {
				t.Fatalf("Address(%q) = %q: invalid UTF-8", s, addr)
			}
			if again, err := tr.Address(localpart(addr)); err != nil || again != addr {
				t.Fatalf("Address(Localpart(Address(%q))) = %q, %v; want %q", s, again, err, addr)
			}
			// RoomAddress, the one parse the stanza reader makes, says
			// what Address and IsRoom say.
			if raddr, room, err := tr.RoomAddress(s); err != nil || raddr != addr || room != tr.IsRoom(addr) {
				t.Fatalf("RoomAddress(%q) = %q, %v, %v; want %q, %v", s, raddr, room, err, addr, tr.IsRoom(addr))
			}
		} else if _, _, rerr := tr.RoomAddress(s); rerr == nil || rerr.Error() != err.Error() {
			t.Fatalf("RoomAddress(%q) error %v, Address's %v", s, rerr, err)
		}
	})
}

type quietTB struct{ testing.TB }

func (quietTB) Logf(string, ...any) {}

// wireRecorder is a connection that keeps what is written to it.
type wireRecorder struct {
	net.Conn
	b bytes.Buffer
}

func (w *wireRecorder) Write(p []byte) (int, error) { return w.b.Write(p) }

// FuzzRegistration feeds a server's lines, as they come, to a
// registration (SASL on): it never panics, and what it answers on the
// wire is whole lines, none broken by a CR, LF or NUL from the server.
func FuzzRegistration(f *testing.F) {
	f.Add(":irc.x CAP * LS :sasl server-time echo-message\n:irc.x CAP * ACK :sasl server-time\nAUTHENTICATE +\n:irc.x 900 * a!b@c acct :logged\n:irc.x 903 * :ok\n:irc.x 001 me :Welcome me!u@h\n:irc.x 005 me CHANTYPES=# PREFIX=(ov)@+ :are\n:irc.x 376 me :end")
	f.Add("PING :abc\n:irc.x 433 * me :taken\n:irc.x 433 * me_ :taken\n:irc.x CAP * NAK :sasl\n")
	f.Add(":irc.x CAP * LS * :a b=c\n:irc.x CAP * LS :d\n:irc.x 001 me :w\n:op PRIVMSG me :early\n")
	f.Add("@a=b :irc.x 001 me :w\n:irc.x 432 * x :bad\nERROR :closing\n")
	f.Fuzz(func(t *testing.T, data string) {
		wr := &wireRecorder{}
		c := &conn{nc: wr, server: "irc.x"}
		r := newRegistrar(c, dialConfig{server: "irc.x", nick: "me", username: "u", realname: "R", saslPass: "pw"})
		if err := r.begin(); err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(data, "\n") {
			w, err := r.feed(strings.TrimSuffix(line, "\r"))
			if err != nil {
				var ce *connError
				if !errors.As(err, &ce) || ce.text == "" {
					t.Fatalf("error without a text for the user: %v", err)
				}
				break
			}
			if w != nil {
				break
			}
		}
		out := wr.b.String()
		if !strings.HasSuffix(out, "\r\n") {
			t.Fatalf("wire does not end a line: %q", out)
		}
		for _, l := range strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n") {
			if l == "" || strings.ContainsAny(l, "\r\n\x00") {
				t.Fatalf("line %q on the wire", l)
			}
			if len(l) > maxLine {
				t.Fatalf("line of %d bytes on the wire", len(l))
			}
		}
	})
}

// FuzzCommands: after-connect commands come from a form. Whatever is
// accepted is at most maxCommands lines the gateway does not handle
// itself, each serialised as one line with no CR, LF or NUL; the trace
// redaction copes with each.
func FuzzCommands(f *testing.F) {
	f.Add("/MODE me +x\nPRIVMSG Q@CServe.quakenet.org :AUTH me pw")
	f.Add("JOIN #a\r\n\n  OPER root test")
	f.Add("QUIT :x\nCAP END")
	f.Add("@t=1 :src PRIVMSG a :b")
	f.Fuzz(func(t *testing.T, v string) {
		msgs, err := parseCommands(v)
		if err != nil {
			if checkCommands(v) == nil {
				t.Fatalf("checkCommands accepts what parseCommands refuses: %v", err)
			}
			return
		}
		if len(msgs) > maxCommands {
			t.Fatalf("%d commands accepted", len(msgs))
		}
		for _, m := range msgs {
			if refusedRaw[m.Command] {
				t.Fatalf("%s accepted", m.Command)
			}
			b, err := serialize(m)
			if err != nil {
				continue // refused when sent, as a too long line is
			}
			l := strings.TrimSuffix(string(b), "\r\n")
			if strings.ContainsAny(l, "\r\n\x00") {
				t.Fatalf("line %q", l)
			}
			_ = redactLine(l)
		}
	})
}

// FuzzCharset: a line from a network set to any charset decodes to valid
// UTF-8 (or stays as it was, for decodeIRC's fallback), and the user's
// line encoded for it gains no line break or NUL.
func FuzzCharset(f *testing.F) {
	f.Add([]byte("PRIVMSG #c :\xcf\xf0\xe8\xe2\xe5\xf2"), "Да, мир € 日")
	f.Add([]byte("\x82\xa0\x81\x7f\xff\xfe"), "ｶﾀｶﾅ 한국어 中文")
	f.Fuzz(func(t *testing.T, in []byte, out string) {
		out = strings.ToValidUTF8(out, "")
		clean := !strings.ContainsAny(out, "\r\n\x00")
		for _, c := range charsets {
			if d := decodeLine(c.enc, in); !utf8.Valid(d) && !bytes.Equal(d, in) {
				t.Errorf("%s: decoded %q to invalid UTF-8 %q", c.name, in, d)
			}
			e := encodeLine(c.enc, []byte(out))
			if clean && bytes.ContainsAny(e, "\r\n\x00") {
				t.Errorf("%s: %q encoded with a line break or NUL: %q", c.name, out, e)
			}
			if len(e) > len(out) {
				t.Errorf("%s: %q encoded longer than its UTF-8: %q", c.name, out, e)
			}
		}
		// A channel set apart: the line's channel is found without a
		// panic, and the result keeps the rules above.
		l := newLineCharsets("windows-1252", map[string]string{"#c": "koi8-r", "#u": charsetUTF8})
		if d := l.decode(in); !utf8.Valid(d) && !bytes.Equal(d, in) {
			t.Errorf("channels: decoded %q to invalid UTF-8 %q", in, d)
		}
		for _, line := range []string{"PRIVMSG #c :" + out, "PRIVMSG #u :" + out, out} {
			e := l.encode([]byte(line))
			if clean && bytes.ContainsAny(e, "\r\n\x00") || len(e) > len(line) {
				t.Errorf("channels: %q encoded as %q", line, e)
			}
		}
	})
}

// FuzzKeepaliveLine: what keepaliveLine recognises, ircmsg reads the same
// way: a PONG whose last parameter is a keepalive token (dropped), or a
// PING, whose PONG is one line carrying the PING's parameters.
func FuzzKeepaliveLine(f *testing.F) {
	for _, s := range []string{"PING :irc.example.org", "@time=2026-12-07T10:00:00.000Z :irc.x PONG irc.x :transportd-17",
		"PONG transportd-1", ":s PING a b", "PONG :x", "@a PING", "ping x", ":s  PONG x :transportd-1", "PING :a\x00b",
		"PING :", ":s PONG s :transportd-1 x", "@t=1;u :s PING :with spaces in it", "PING a :", "PONG a  :transportd-2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(line, "\r\n") {
			return // lines come cut (nextLine)
		}
		drop, pong := keepaliveLine([]byte(line))
		if !drop {
			if pong != nil {
				t.Fatalf("%q: a PONG for a line not taken", line)
			}
			return
		}
		m, err := parseLine(line)
		if err != nil {
			t.Fatalf("%q taken as a keepalive; ircmsg: %v", line, err)
		}
		switch m.Command {
		case "PONG":
			if pong != nil || len(m.Params) == 0 || !strings.HasPrefix(last(m.Params), keepaliveToken) {
				t.Fatalf("%q dropped; ircmsg reads %q %q", line, m.Command, m.Params)
			}
		case "PING":
			if pong == nil || !bytes.HasSuffix(pong, []byte("\r\n")) || bytes.Count(pong, []byte("\n")) != 1 || bytes.ContainsAny(pong[:len(pong)-2], "\r\x00") {
				t.Fatalf("%q: PONG line %q", line, pong)
			}
			p, err := parseLine(string(pong[:len(pong)-2]))
			if err != nil || p.Command != "PONG" || p.Source != "" || len(p.AllTags()) > 0 || !slices.Equal(p.Params, m.Params) {
				t.Fatalf("%q (params %q): PONG %q reads %q %q, %v", line, m.Params, pong, p.Command, p.Params, err)
			}
		default:
			t.Fatalf("%q taken as a keepalive; ircmsg reads %q", line, m.Command)
		}
	})
}

// FuzzTags: parseLine reads every line as ircmsg would (tags included:
// see inLine), and never panics.
func FuzzTags(f *testing.F) {
	for _, s := range tagLines {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		if strings.ContainsAny(line, "\n") {
			return // lines come cut (nextLine)
		}
		sameAsLibrary(t, line)
		m, err := parseLine(line)
		if err == nil {
			m.DeleteTag("batch")
			if m.HasTag("batch") {
				t.Fatalf("%q: batch kept after DeleteTag", line)
			}
		}
	})
}
