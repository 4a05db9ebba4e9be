package core

import (
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

const testStreamHeader = `<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' id='s1' from='c.a.test'>`

// refStanzas reads stanzas the way the link did before streamReader:
// encoding/xml behind mellium's stream rules, then readElement.
func refStanzas(in string, max int) ([]*Element, error) {
	d := xml.NewDecoder(strings.NewReader(testStreamHeader + in))
	for {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		if st, ok := tok.(xml.StartElement); ok && st.Name.Local == "stream" {
			break
		}
	}
	var els []*Element
	for len(els) < max {
		tok, err := d.Token()
		if err != nil {
			return els, err
		}
		switch t := tok.(type) {
		case xml.CharData:
			if strings.Trim(string(t), " \t\r\n") != "" {
				return els, errors.New("text at the top")
			}
		case xml.StartElement:
			el, err := readElement(d, t, Limits{})
			if err != nil {
				return els, err
			}
			if el.Name.Space == nsStreams && el.Name.Local != "error" {
				return els, errors.New("unknown stream element")
			}
			els = append(els, el)
		case xml.EndElement:
			return els, errStreamEnd
		default:
			return els, errors.New("not allowed on a stream")
		}
	}
	return els, nil
}

func readerStanzas(r io.Reader, lim Limits, max int) ([]*Element, error) {
	sr := newStreamReader(r, lim)
	var els []*Element
	for len(els) < max {
		el, err := sr.next()
		if err != nil {
			return els, err
		}
		els = append(els, el)
	}
	return els, nil
}

func sameElement(a, b *Element) bool {
	if a.Name != b.Name || a.Text != b.Text || len(a.Attr) != len(b.Attr) || len(a.Children) != len(b.Children) {
		return false
	}
	for i := range a.Attr {
		if a.Attr[i] != b.Attr[i] {
			return false
		}
	}
	for i := range a.Children {
		if !sameElement(a.Children[i], b.Children[i]) {
			return false
		}
	}
	return true
}

func dump(el *Element) string {
	var b strings.Builder
	var walk func(e *Element, depth int)
	walk = func(e *Element, depth int) {
		b.WriteString(strings.Repeat("  ", depth))
		b.WriteString("{" + e.Name.Space + "}" + e.Name.Local)
		for _, a := range e.Attr {
			b.WriteString(" {" + a.Name.Space + "}" + a.Name.Local + "=" + strconvQuote(a.Value))
		}
		if e.Text != "" {
			b.WriteString(" text=" + strconvQuote(e.Text))
		}
		b.WriteString("\n")
		for _, c := range e.Children {
			walk(c, depth+1)
		}
	}
	walk(el, 0)
	return b.String()
}

func strconvQuote(s string) string { return "\"" + strings.ReplaceAll(s, "\"", "\\\"") + "\"" }

// checkAgainstReference fails when streamReader and encoding/xml disagree on
// the input: different stanzas, or one accepting what the other refuses.
func checkAgainstReference(t *testing.T, in string) {
	t.Helper()
	const max = 8
	want, wantErr := refStanzas(in, max)
	for _, mode := range []string{"whole", "byte at a time"} {
		var r io.Reader = strings.NewReader(in)
		if mode != "whole" {
			r = iotest.OneByteReader(r)
		}
		got, gotErr := readerStanzas(r, Limits{}, max)
		n := min(len(got), len(want))
		for i := 0; i < n; i++ {
			if !sameElement(got[i], want[i]) {
				t.Fatalf("%s: %q: stanza %d:\ngot\n%swant\n%s", mode, in, i, dump(got[i]), dump(want[i]))
			}
		}
		if len(got) != len(want) {
			// The only difference allowed: text or a CDATA section at
			// the top of the stream, refused here even when it is
			// whitespace written as references.
			if len(got) < len(want) && gotErr != nil && (strings.Contains(gotErr.Error(), "top of the stream") || strings.Contains(gotErr.Error(), "directives")) {
				continue
			}
			t.Fatalf("%s: %q: %d stanzas (error %v), encoding/xml read %d (error %v)", mode, in, len(got), gotErr, len(want), wantErr)
		}
		if (gotErr == errStreamEnd) != (wantErr == errStreamEnd) {
			t.Fatalf("%s: %q: ended with %v, encoding/xml with %v", mode, in, gotErr, wantErr)
		}
	}
}

var streamSamples = []string{
	`<message from='u@a.test/r' to='#c%irc.x@irc.a.test' type='groupchat' id='m1'><body>hi &amp; bye &lt;3</body><origin-id xmlns='urn:xmpp:sid:0' id='o1'/></message>`,
	`<presence from='u@a.test/r' to='r@irc.a.test/nick'><x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x><c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='n' ver='v='/></presence>`,
	` <iq type='get' id='a1' from='u@a.test/r' to='c.a.test'><query xmlns='jabber:iq:version'/></iq>
	`,
	`<message xml:lang='de' to='x@c.a.test' from='u@a.test'><body xml:lang="en">a
b` + "\r\n" + `c` + "\r" + `d</body><p:x xmlns:p='urn:p' p:a='1' q:b='2'><p:y/><z xmlns=''/></p:x></message>`,
	`<message to='x@c.a.test' from='u@a.test'><body>&#65;&#x42;&#x1F600;&quot;&apos;&gt;<![CDATA[<raw> & ]]]]>text</body></message>`,
	`<message to='x@c.a.test'><body>bad &foo; entity</body></message>`,
	`<message to='x@c.a.test'><body>nul &#0; ref</body></message>`,
	`<message to='x@c.a.test'><body>surrogate &#xD800; ref</body></message>`,
	`<message to='x@c.a.test'><body>]]> in text</body></message>`,
	`<message to='x@c.a.test' a='<'/>`,
	`<message to='x@c.a.test' a=unquoted/>`,
	`<message to='x@c.a.test'><body></bodyx></message>`,
	`<message to='x@c.a.test'><!-- comment --></message>`,
	`<message to='x@c.a.test'><?pi x?></message>`,
	`<a:b:c/>`,
	`<:a :b='1' c:='2'/>`,
	`<xmlns/><xmlns:x/>`,
	`<é à='1'><ü/></é>`,
	`<a b='1'c='2' / >`,
	`<a b='1'c='2'></a >`,
	`<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>`,
	`<stream:features/>`,
	`<iq/></stream:stream>`,
	`<iq/></stream:other>`,
	`text<iq/>`,
	"<message><body>\xff</body></message>",
	"<message><body>\x01</body></message>",
	"<message a='\xc3'/>",
	`<m xmlns:p='urn:1'><p:n xmlns:p='urn:2' p:a='x'/><p:n/></m>`,
	`<m xmlns='urn:1'><n xmlns='urn:2'/><n/></m>`,
	`<m xmlns:xml='urn:bad' xml:lang='en'/>`,
	`<m xmlns:xmlns='urn:bad' xmlns:a='urn:a' a:x='1' b:y='2'/>`,
	`<m>&#x;&#;</m>`,
	`<m>&#X41;</m>`,
	`<m>&#1114112;</m>`,
	`<m>&#00000000000000000000065;</m>`,
	`<m a='&#13;&#10;'>&#13;</m>`,
	`<m>&amp</m>`,
	`<m a="'" b='"'/>`,
	"<m>\t \n</m>  \n <n/>",
	`<m><![CDATA[x]]><![CDATA[]]>y</m>`,
	`<m><![CDAT[x]]></m>`,
	`<![CDATA[ ]]><m/>`,
	`&#32;<m/>`,
}

func TestStreamReaderAgreesWithEncodingXML(t *testing.T) {
	for _, in := range streamSamples {
		checkAgainstReference(t, in)
	}
}

func FuzzStreamReader(f *testing.F) {
	for _, in := range streamSamples {
		f.Add(in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		checkAgainstReference(t, in)
	})
}

func TestStreamReaderStanzas(t *testing.T) {
	in := `<message from='u@a.test/r' to='#c%irc.x@irc.a.test' type='groupchat' id='m1'><body>one` + "\r\n" + `two &amp; <![CDATA[<three>]]></body></message>` +
		"\n  " + `<presence xmlns='jabber:client' from='u@a.test/r' to='r@c/n'><x xmlns='http://jabber.org/protocol/muc'/></presence></stream:stream>`
	sr := newStreamReader(iotest.HalfReader(strings.NewReader(in)), Limits{MaxDepth: 8, MaxBytes: 10000})
	msg, err := sr.next()
	if err != nil {
		t.Fatal(err)
	}
	if msg.Name != (xml.Name{Space: nsAccept, Local: "message"}) || msg.Get("type") != "groupchat" || msg.Get("id") != "m1" {
		t.Errorf("message: %s", dump(msg))
	}
	if body := msg.Child(nsAccept, "body"); body == nil || body.Text != "one\ntwo & <three>" {
		t.Errorf("body: %s", dump(msg))
	}
	pres, err := sr.next()
	if err != nil {
		t.Fatal(err)
	}
	if pres.Name.Space != "jabber:client" || len(pres.Children) != 1 || pres.Children[0].Name.Space != "http://jabber.org/protocol/muc" || len(pres.Attr) != 2 {
		t.Errorf("presence: %s", dump(pres))
	}
	if _, err := sr.next(); err != errStreamEnd {
		t.Errorf("after </stream:stream>: %v, want the stream's end", err)
	}
}

func TestStreamReaderLimits(t *testing.T) {
	deep := `<iq id='d' from='u@a.test/r'>` + strings.Repeat("<x>", 20) + strings.Repeat("</x>", 20) + `</iq>`
	big := `<iq id='b' from='u@a.test/r'><q>` + strings.Repeat("<x a='1'>aaaaaaaaaa</x>", 1000) + `</q></iq>`
	after := `<iq id='next'/>`
	sr := newStreamReader(strings.NewReader(deep+big+after), Limits{MaxDepth: 8, MaxBytes: 10000})
	for _, want := range []struct{ id, err string }{{"d", "deeper than 8"}, {"b", "larger than 10000 bytes"}} {
		el, err := sr.next()
		if !errors.Is(err, errLimit) || !strings.Contains(err.Error(), want.err) {
			t.Fatalf("stanza %s: %v, want a limit error %q", want.id, err, want.err)
		}
		// What a refusal needs: the stanza's name and attributes, no payload.
		if el.Name.Local != "iq" || el.Get("id") != want.id || el.Get("from") != "u@a.test/r" || len(el.Children) != 0 {
			t.Errorf("refused stanza: %s", dump(el))
		}
	}
	el, err := sr.next()
	if err != nil || el.Get("id") != "next" {
		t.Fatalf("the stanza after refused ones: %v %v", el, err)
	}

	// Past sixteen times the limit the stream ends: the reader would have
	// to buffer a token of any size.
	huge := `<iq id='h'><q a='` + strings.Repeat("a", 200000) + `'/></iq>`
	sr = newStreamReader(iotest.HalfReader(strings.NewReader(huge+after)), Limits{MaxDepth: 8, MaxBytes: 10000})
	if _, err := sr.next(); err == nil || errors.Is(err, errLimit) {
		t.Fatalf("a 200 kB token with a 10 kB limit: %v, want the stream to end", err)
	}
}

func TestStreamReaderServesHandshake(t *testing.T) {
	// mellium reads the handshake through ReadByte; what the server sent
	// right behind it must still reach next.
	in := `<handshake/><message to='x@c' id='m'/>`
	sr := newStreamReader(strings.NewReader(in), Limits{})
	d := xml.NewDecoder(readerConn{sr: sr})
	tok, err := d.Token()
	if err != nil || tok.(xml.StartElement).Name.Local != "handshake" {
		t.Fatalf("handshake: %v %v", tok, err)
	}
	if err := d.Skip(); err != nil {
		t.Fatal(err)
	}
	el, err := sr.next()
	if err != nil || el.Get("id") != "m" {
		t.Fatalf("stanza after the handshake: %v %v", el, err)
	}
}

// loopReader serves the same bytes for ever.
type loopReader struct {
	b []byte
	i int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c := copy(p[n:], l.b[l.i:])
		n += c
		l.i = (l.i + c) % len(l.b)
	}
	return n, nil
}

const benchStanza = `<message from='user1@a.test/phone' to='#chan%127.0.0.1@irc.a.test' type='groupchat' id='5f0c2a9e-1'><body>hello there, this is a line of chat of ordinary length</body><origin-id xmlns='urn:xmpp:sid:0' id='5f0c2a9e-1'/><active xmlns='http://jabber.org/protocol/chatstates'/></message>`

// BenchmarkStanzaRead compares reading a groupchat message from the stream
// with streamReader and with encoding/xml plus readElement (the path before).
func BenchmarkStanzaRead(b *testing.B) {
	b.Run("streamReader", func(b *testing.B) {
		sr := newStreamReader(&loopReader{b: []byte(benchStanza)}, Limits{MaxDepth: 32, MaxBytes: 262144})
		b.ReportAllocs()
		for b.Loop() {
			if _, err := sr.next(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoding-xml", func(b *testing.B) {
		d := xml.NewDecoder(io.MultiReader(strings.NewReader(testStreamHeader), &loopReader{b: []byte(benchStanza)}))
		if _, err := d.Token(); err != nil {
			b.Fatal(err)
		}
		if _, err := d.Token(); err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		for b.Loop() {
			tok, err := d.Token()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := readElement(d, tok.(xml.StartElement), Limits{MaxDepth: 32}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
