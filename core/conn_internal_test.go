package core

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// writeStanza writes what a server accepts whatever the element carries:
// no attribute twice (a copied element keeps the xmlns attribute its
// decoder saw), the stanza in the component namespace, an id.
func TestWriteStanza(t *testing.T) {
	el := NewElement("", "message", "to", "u@a.test", "from", "c.a.test", "id", "")
	x := NewElement("jabber:x:data", "x", "xmlns", "jabber:x:data", "type", "form")
	x.Add(NewElement("jabber:x:data", "field", "var", "a<&\"b"))
	el.Add(x)
	el.AddText("", "body", "hi <there> & \x01")
	var b strings.Builder
	enc := xml.NewEncoder(&b)
	if err := writeStanza(enc, el); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	d := xml.NewDecoder(strings.NewReader(out))
	var start xml.StartElement
	n := 0
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		if s, ok := tok.(xml.StartElement); ok {
			if n == 0 {
				start = s
			}
			n++
			seen := map[xml.Name]bool{}
			for _, a := range s.Attr {
				if seen[a.Name] {
					t.Errorf("attribute %v twice in %s", a.Name, out)
				}
				seen[a.Name] = true
			}
		}
	}
	if n != 4 {
		t.Fatalf("%d elements read back from %s (not well-formed?)", n, out)
	}
	if start.Name.Space != "jabber:component:accept" {
		t.Errorf("stanza namespace %q", start.Name.Space)
	}
	id := ""
	for _, a := range start.Attr {
		if a.Name.Local == "id" {
			id = a.Value
		}
	}
	if id == "" {
		t.Errorf("no id: %s", out)
	}
}

// encoded is writeStanza's output for el.
func encoded(t testing.TB, el *Element) string {
	var b strings.Builder
	if err := writeStanza(xml.NewEncoder(&b), el); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// appendStanza writes what writeStanza writes, byte for byte.
func TestAppendStanzaAsEncoder(t *testing.T) {
	withID := func(el *Element) *Element { el.SetAttr("id", "fixed"); return el }
	msg := withID(NewElement("", "message", "to", "u@a.test", "from", "", "type", "groupchat"))
	msg.AddText("", "body", "line 1\nline 2\ttab \r cr <&> \"q\" 'a' \x01 \xff é 😀")
	x := NewElement("jabber:x:data", "x", "xmlns", "jabber:x:data", "type", "form")
	x.Add(NewElement("jabber:x:data", "field", "var", "a<&\"b\nc", "xmlns", "jabber:x:data"))
	x.Add(NewElement("", "field", "xmlns", "urn:other", "var", "inherits"))
	msg.Add(x)
	msg.Add(NewElement("urn:xmpp:delay", "delay", "stamp", "2020-01-01T00:00:00Z"))
	pres := NewElement("jabber:component:accept", "presence", "id", "p1", "xmlns", "jabber:component:accept")
	pres.Add(NewElement("jabber:component:accept", "show").AddText("", "x", ""))
	for _, el := range []*Element{msg, pres, withID(NewElement("", "iq", "type", "result")), withID(NewElement("jabber:client", "message"))} {
		want := encoded(t, el)
		got, ok := appendStanza(nil, el)
		if !ok {
			t.Fatalf("appendStanza declined %s", want)
		}
		if string(got) != want {
			t.Errorf("appendStanza:\n%s\nencoder:\n%s", got, want)
		}
	}
	// Without an id, one is added.
	got, _ := appendStanza(nil, NewElement("", "message", "id", ""))
	if !strings.Contains(string(got), ` id="`) || strings.Contains(string(got), `id=""`) {
		t.Errorf("no id added: %s", got)
	}
	// A prefixed attribute is left to the encoder.
	lang := NewElement("", "message", "id", "x")
	lang.Attr = append(lang.Attr, xml.Attr{Name: xml.Name{Space: "http://www.w3.org/XML/1998/namespace", Local: "lang"}, Value: "en"})
	if _, ok := appendStanza(nil, lang); ok {
		t.Error("appendStanza took a prefixed attribute")
	}
}

func FuzzAppendStanza(f *testing.F) {
	f.Add("u@a.test", "hello\n<there>", "jabber:x:data", "v&\"\t", "")
	f.Add("", "\x00\xff\r", "", "", "urn:a")
	f.Fuzz(func(t *testing.T, to, text, space, attr, childSpace string) {
		el := NewElement("", "message", "to", to, "id", "fixed", "type", attr)
		el.AddText("", "body", text)
		c := NewElement(space, "x", "xmlns", space, "a", attr)
		c.Add(NewElement(childSpace, "y", "xmlns", childSpace).AddText("", "z", text))
		el.Add(c)
		var b strings.Builder
		if err := writeStanza(xml.NewEncoder(&b), el); err != nil {
			return
		}
		got, ok := appendStanza(nil, el)
		if !ok || string(got) != b.String() {
			t.Errorf("appendStanza:\n%q\nencoder:\n%q", got, b.String())
		}
	})
}

// readElement keeps an element's text whole however the decoder hands it
// over (entities, CDATA, text around children) and leaves namespace
// declarations out of the attributes.
func TestReadElement(t *testing.T) {
	const in = `<message xmlns="jabber:client" xmlns:x="urn:x" to="a@b" type="chat">` +
		`<body>one &amp; <![CDATA[<two>]]> three</body>` +
		`<x:data a="1">before<inner/>after</x:data>` +
		`<empty/></message>`
	d := xml.NewDecoder(strings.NewReader(in))
	tok, err := d.Token()
	if err != nil {
		t.Fatal(err)
	}
	el, err := readElement(d, tok.(xml.StartElement), Limits{MaxDepth: 8})
	if err != nil {
		t.Fatal(err)
	}
	if len(el.Attr) != 2 || el.Get("to") != "a@b" || el.Get("type") != "chat" {
		t.Errorf("attributes = %v", el.Attr)
	}
	if got := el.ChildText("jabber:client", "body"); got != "one & <two> three" {
		t.Errorf("body = %q", got)
	}
	x := el.Child("urn:x", "data")
	if x == nil || x.Text != "beforeafter" || x.Get("a") != "1" || len(x.Children) != 1 || x.Children[0].Name.Local != "inner" {
		t.Errorf("x:data = %+v", x)
	}
	if e := el.Child("jabber:client", "empty"); e == nil || e.Text != "" || e.Attr != nil {
		t.Errorf("empty = %+v", e)
	}
	// Too deep: refused.
	d = xml.NewDecoder(strings.NewReader(`<a><b><c><d/></c></b></a>`))
	tok, _ = d.Token()
	if _, err := readElement(d, tok.(xml.StartElement), Limits{MaxDepth: 3}); !errors.Is(err, errLimit) {
		t.Errorf("4 deep with a limit of 3: %v", err)
	}
}

// roomElement builds the element a roomStanza stands for, as the element
// path would (c.stanza, AddText, Add).
func roomElement(s *roomStanza) *Element {
	el := NewElement("", "message", "from", s.from, "to", s.to)
	el.SetAttr("type", "groupchat")
	el.SetAttr("id", s.id)
	el.AddText("", "body", s.body)
	if s.stamp != "" {
		el.Add(NewElement(nsDelay, "delay", "from", s.delayFrom, "stamp", s.stamp))
	}
	if s.sid != "" {
		el.Add(NewElement(nsStanzaID, "stanza-id", "id", s.sid, "by", s.sidBy))
	}
	if s.configChanged {
		x := NewElement(nsMUCUser, "x")
		x.Add(NewElement("", "status", "code", "104"))
		el.Add(x)
	}
	return el
}

// A room message written without its element tree is, byte for byte,
// what the encoder writes for the tree: a client sees the same stanza.
func TestRoomStanzaWrittenAsElement(t *testing.T) {
	for _, s := range []roomStanza{
		{from: "#c%irc.example.org@irc.a.test/nick", to: "u@a.test/res", id: "i1", body: "hello"},
		{from: "#c%irc.example.org@irc.a.test/n<&>\"'", to: "u@a.test/r\né", id: "i&2", body: "line 1\nline 2\ttab \r cr <&> \"q\" 'a' \x01 \xff é 😀]]>",
			delayFrom: "irc.a.test", stamp: "2026-12-05T18:00:00Z", sid: "msg<id>&", sidBy: "#c%irc.example.org@irc.a.test"},
		{from: "irc.a.test", to: "u@a.test/r", id: "i3", body: "", sid: "x", sidBy: "y"},
		{from: "r@irc.a.test", to: "u@a.test/r", id: "i4", body: "only a delay", delayFrom: "irc.a.test", stamp: "2000-01-01T00:00:00Z"},
		{from: "#c%irc.example.org@irc.a.test", to: "u@a.test/r", id: "i5", body: "op sets mode +k key", sid: "s", sidBy: "#c%irc.example.org@irc.a.test", configChanged: true},
	} {
		want := encoded(t, roomElement(&s))
		got, ok := s.appendTo(nil)
		if !ok || string(got) != want {
			t.Errorf("roomStanza:\n%s\nencoder:\n%s", got, want)
		}
		if name, from, to := s.stanzaHeader(); name != "message" || from != s.from || to != s.to {
			t.Errorf("stanzaHeader = %q %q %q", name, from, to)
		}
	}
	// Without an id (never so from renderRoomMessage), one is made.
	got, _ := (&roomStanza{from: "a", to: "b"}).appendTo(nil)
	if !strings.Contains(string(got), ` id="`) || strings.Contains(string(got), `id=""`) {
		t.Errorf("no id added: %s", got)
	}
}

func FuzzRoomStanza(f *testing.F) {
	f.Add("#c%irc.example.org@irc.a.test/nick", "u@a.test/r", "id", "body\n<&>", "2026-12-05T18:00:00Z", "msgid", false)
	f.Add("a", "b", "\x00", "\xff\r\t", "", "", true)
	f.Fuzz(func(t *testing.T, from, to, id, body, stamp, sid string, configChanged bool) {
		if id == "" {
			id = "fixed" // else each side makes its own
		}
		s := roomStanza{from: from, to: to, id: id, body: body, delayFrom: "irc.a.test", stamp: stamp, sid: sid, sidBy: from, configChanged: configChanged}
		var b strings.Builder
		if err := writeStanza(xml.NewEncoder(&b), roomElement(&s)); err != nil {
			return
		}
		got, ok := s.appendTo(nil)
		if !ok || string(got) != b.String() {
			t.Errorf("roomStanza:\n%q\nencoder:\n%q", got, b.String())
		}
	})
}

// occupantElement builds as an element tree what occupantPresence writes
// (as roomPresence did before it wrote without a tree).
func occupantElement(p *occupantPresence) *Element {
	from := p.room
	if p.nick != "" {
		from += "/" + p.nick
	}
	el := NewElement("", "presence", "from", from, "to", p.to)
	if p.typ != "" {
		el.SetAttr("type", p.typ)
	}
	if p.show != "" {
		el.AddText("", "show", p.show)
	}
	if p.status != "" {
		el.AddText("", "status", p.status)
	}
	it := NewElement("", "item", "affiliation", p.affiliation, "role", p.role)
	if p.jid != "" {
		it.SetAttr("jid", p.jid)
	}
	if p.newNick != "" {
		it.SetAttr("nick", p.newNick)
	}
	if p.reason != "" {
		it.AddText("", "reason", p.reason)
	}
	x := NewElement(nsMUCUser, "x").Add(it)
	for _, c := range p.codes {
		x.Add(NewElement("", "status", "code", c))
	}
	el.Add(x)
	if p.reason != "" {
		el.AddText("", "status", p.reason)
	}
	return el
}

// An occupant's presence written without its element tree is, byte for
// byte, what the encoder writes for the tree.
func TestOccupantPresenceWrittenAsElement(t *testing.T) {
	room := "#c%irc.example.org@irc.a.test"
	for _, p := range []occupantPresence{
		{room: room, nick: "alice", to: "u@a.test/res", affiliation: "none", role: "participant", jid: "alice%irc.example.org@irc.a.test"},
		{room: room, nick: "n<&>\"'", to: "u@a.test/r\né", show: "away", status: "gone <for> \"lunch\" & 😀 \xff\r\n", affiliation: "admin", role: "moderator"},
		{room: room, nick: "me", to: "u@a.test/r", affiliation: "none", role: "participant", jid: "u@a.test/r", codes: []string{"110", "210"}},
		{room: room, nick: "bob", to: "u@a.test/r", typ: "unavailable", affiliation: "none", role: "none", reason: "flooding <spam>\n", codes: []string{"307"}},
		{room: room, nick: "old", to: "u@a.test/r", typ: "unavailable", affiliation: "member", role: "none", newNick: "new&", codes: []string{"303", "110"}},
		{room: room, to: "u@a.test/r", affiliation: "none", role: "participant"},
	} {
		want := encoded(t, occupantElement(&p))
		gotb, ok := p.appendTo(nil)
		got := sameID(string(gotb), want)
		if !ok || got != want {
			t.Errorf("occupantPresence:\n%s\nencoder:\n%s", got, want)
		}
		if name, from, to := p.stanzaHeader(); name != "presence" || from != room || to != p.to {
			t.Errorf("stanzaHeader = %q %q %q", name, from, to)
		}
	}
}

func FuzzOccupantPresence(f *testing.F) {
	f.Add("#c%irc.example.org@irc.a.test", "nick", "u@a.test/r", "", "away", "status <&>", "admin", "moderator", "j@irc.a.test", "", "", "110")
	f.Add("a", "\x00", "b", "unavailable", "", "", "", "", "", "new\xff", "reason\r\n", "")
	f.Fuzz(func(t *testing.T, room, nick, to, typ, show, status, aff, role, jid, newNick, reason, code string) {
		p := occupantPresence{room: room, nick: nick, to: to, typ: typ, show: show, status: status, affiliation: aff, role: role, jid: jid, newNick: newNick, reason: reason}
		if code != "" {
			p.codes = []string{code}
		}
		var b strings.Builder
		if err := writeStanza(xml.NewEncoder(&b), occupantElement(&p)); err != nil {
			return
		}
		gotb, ok := p.appendTo(nil)
		if got := sameID(string(gotb), b.String()); !ok || got != b.String() {
			t.Errorf("occupantPresence:\n%q\nencoder:\n%q", got, b.String())
		}
	})
}

// sameID gives got with its stanza's id attribute replaced by want's
// (each side makes its own random one), or got unchanged if either has
// none where a stanza's attributes end.
func sameID(got, want string) string {
	idOf := func(s string) (int, int) {
		end := strings.IndexByte(s, '>')
		i := strings.Index(s[:max(end, 0)], ` id="`)
		if i < 0 {
			return -1, -1
		}
		j := strings.IndexByte(s[i+5:], '"')
		if j < 0 {
			return -1, -1
		}
		return i + 5, i + 5 + j
	}
	gi, gj := idOf(got)
	wi, wj := idOf(want)
	if gi < 0 || wi < 0 || gj-gi != 24 {
		return got
	}
	return got[:gi] + want[wi:wj] + got[gj:]
}

// The link writer writes every stanza whole and in order, small ones,
// ones larger than a chunk and ones the encoder writes, however the
// writer's takes fall between them, and then holds no chunk.
func TestLinkWriterChunks(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	var got strings.Builder
	read := make(chan struct{})
	go func() {
		defer close(read)
		_, _ = io.Copy(&got, server)
	}()
	w := newLinkWriter(client, t.Logf)
	var want strings.Builder
	for i := 0; i < 3000; i++ {
		var el outgoing
		switch {
		case i%500 == 7:
			// Larger than a chunk: grows one.
			el = &roomStanza{from: "r@irc.a.test/n", to: "u@a.test/r", id: fmt.Sprint("big", i), body: strings.Repeat("é<", chunkSize/2+i)}
		case i%3 == 0:
			// Through the encoder (a prefixed attribute).
			e := NewElement("", "message", "from", "r@irc.a.test", "to", "u@a.test/r", "id", fmt.Sprint("e", i))
			e.Attr = append(e.Attr, xml.Attr{Name: xml.Name{Space: "xml", Local: "lang"}, Value: "en"})
			e.AddText("", "body", strings.Repeat("x", i))
			el = e
		default:
			el = &roomStanza{from: "r@irc.a.test/n", to: "u@a.test/r", id: fmt.Sprint("s", i), body: fmt.Sprint("message ", i)}
		}
		if e, ok := el.(*Element); ok {
			want.WriteString(encoded(t, e))
		} else {
			b, _ := el.appendTo(nil)
			want.Write(b)
		}
		if err := w.send(el); err != nil {
			t.Fatal(err)
		}
		if i%700 == 0 {
			time.Sleep(time.Millisecond) // let the writer take some
		}
	}
	w.close()
	client.Close()
	<-read
	if got.String() != want.String() {
		g, wn := got.String(), want.String()
		i := 0
		for i < len(g) && i < len(wn) && g[i] == wn[i] {
			i++
		}
		t.Fatalf("written %d bytes, want %d; first difference at %d: %q", len(g), len(wn), i, g[i:min(len(g), i+80)])
	}
	if w.buf.n != 0 || w.buf.cur != nil || len(w.buf.full) != 0 {
		t.Errorf("the writer holds %d bytes, chunk %v, %d full chunks after close", w.buf.n, w.buf.cur != nil, len(w.buf.full))
	}
}
