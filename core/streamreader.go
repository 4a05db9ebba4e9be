package core

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"unicode/utf8"
)

// streamReader reads the component stream's stanzas straight from the
// connection's bytes into Elements.
//
// Written by hand, not encoding/xml: for each relayed message, encoding/xml
// (behind mellium's token reader) was about a fifth of the gateway's CPU:
// it reads a byte at a time through an interface, makes a token and a
// string per name, attribute and piece of text, keeps namespaces in a map,
// and readElement then copied all of it into the tree. This reader looks at
// a whole token in its buffer and builds the tree directly, interning names
// and namespaces.
//
// It accepts what encoding/xml's strict decoder accepts, and gives the same
// tree for it (FuzzStreamReader compares the two), with the rules mellium's
// stream reader added on top: no comments, processing instructions or
// directives; whitespace only between stanzas; a stream error or the
// stream's end closes the stream.
//
// Before the stream is up, mellium reads the handshake through ReadByte and
// Read, so no byte the server sent after the handshake is left in a decoder
// this reader cannot see.
type streamReader struct {
	src  io.Reader
	buf  []byte
	r, w int   // unread bytes are buf[r:w]
	base int64 // stream offset of buf[0]
	err  error // the source's error, returned once the buffer is empty

	lim  Limits
	hard int64 // one stanza larger than this ends the connection

	scope  []nsDecl // namespace declarations in scope, innermost last
	frames []frame  // open elements of the stanza being read
	attrs  []rawAttr
	text   []byte // scratch for unescaping
	names  map[string]string
}

type nsDecl struct{ prefix, uri string }

// rawAttr is an attribute as written: prefix and local name, unescaped value.
type rawAttr struct {
	prefix, local, value string
}

type frame struct {
	el    *Element // nil once the stanza is being skipped
	qname string   // as written, to match the end tag
	scope int      // len(scope) before the element's declarations
}

const (
	nsAccept  = "jabber:component:accept"
	nsStreams = "http://etherx.jabber.org/streams"
	nsXML     = "http://www.w3.org/XML/1998/namespace"
)

// errShort is internal: the token at r is not all in the buffer yet.
var errShort = errors.New("token continues past the buffer")

// errStreamEnd is returned by next at the server's </stream:stream>.
var errStreamEnd = errors.New("stream closed by the server")

func newStreamReader(src io.Reader, lim Limits) *streamReader {
	s := &streamReader{src: src, buf: make([]byte, 16<<10), lim: lim}
	if lim.MaxBytes > 0 {
		s.hard = int64(lim.MaxBytes) * 16
	}
	s.scope = []nsDecl{{"", nsAccept}, {"stream", nsStreams}}
	s.names = make(map[string]string, len(commonNames))
	for _, n := range commonNames {
		s.names[n] = n
	}
	return s
}

// commonNames are interned from the start: what most stanzas are made of.
var commonNames = []string{
	"message", "presence", "iq", "body", "subject", "thread", "x", "query",
	"error", "text", "show", "status", "priority", "item", "delay", "c",
	"from", "to", "id", "type", "by", "stamp", "xmlns", "lang", "node", "ver",
	"hash", "jid", "nick", "role", "affiliation", "code", "stanza-id",
	"origin-id", "active", "composing", "paused", "inactive", "gone",
	"request", "received", "markable", "displayed", "store", "no-store",
	"chat", "groupchat", "normal", "headline", "get", "set", "result",
	"unavailable", "subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe",
	"away", "xa", "dnd", "en",
	nsAccept, nsStreams, nsXML,
	"jabber:client", "jabber:iq:version", "jabber:iq:register", "jabber:iq:roster",
	"urn:xmpp:delay", "urn:xmpp:sid:0", "urn:xmpp:ping", "urn:xmpp:receipts",
	"urn:xmpp:chat-markers:0", "urn:xmpp:hints", "urn:xmpp:time",
	"http://jabber.org/protocol/chatstates", "http://jabber.org/protocol/muc",
	"http://jabber.org/protocol/muc#user", "http://jabber.org/protocol/caps",
	"http://jabber.org/protocol/disco#info", "http://jabber.org/protocol/disco#items",
	"http://jabber.org/protocol/commands", "urn:ietf:params:xml:ns:xmpp-stanzas",
	"jabber:x:data", "vcard-temp:x:update",
}

// maxInterned bounds the names learnt from the stream, so that a peer
// sending ever new names cannot grow the table.
const maxInterned = 1024

func (s *streamReader) intern(b []byte) string {
	if v, ok := s.names[string(b)]; ok {
		return v
	}
	v := string(b)
	if len(s.names) < maxInterned {
		s.names[v] = v
	}
	return v
}

// ReadByte and Read serve mellium's handshake from the same buffer.
func (s *streamReader) ReadByte() (byte, error) {
	if s.r == s.w {
		if err := s.more(s.r); err != nil {
			return 0, err
		}
	}
	c := s.buf[s.r]
	s.r++
	return c, nil
}

func (s *streamReader) Read(p []byte) (int, error) {
	if s.r == s.w {
		if err := s.more(s.r); err != nil {
			return 0, err
		}
	}
	n := copy(p, s.buf[s.r:s.w])
	s.r += n
	return n, nil
}

// more reads from the source, keeping the bytes from keep on.
func (s *streamReader) more(keep int) error {
	if s.err != nil {
		return s.err
	}
	if keep > 0 {
		n := copy(s.buf, s.buf[keep:s.w])
		s.base += int64(keep)
		s.r -= keep
		s.w = n
	}
	if s.w == len(s.buf) {
		nb := make([]byte, 2*len(s.buf))
		copy(nb, s.buf[:s.w])
		s.buf = nb
	}
	for {
		n, err := s.src.Read(s.buf[s.w:])
		s.w += n
		if n > 0 {
			return nil
		}
		if err != nil {
			s.err = err
			return err
		}
	}
}

// readerConn hands a connection to mellium with its reads served by a
// streamReader.
type readerConn struct {
	net.Conn
	sr *streamReader
}

func (c readerConn) Read(p []byte) (int, error) { return c.sr.Read(p) }
func (c readerConn) ReadByte() (byte, error)    { return c.sr.ReadByte() }

// next returns the next stanza. Past the stanza limits it returns an element
// with only the stanza's name and attributes and an error wrapping errLimit:
// the rest of the stanza was read and dropped, the stream goes on. Any other
// error ends the stream: errStreamEnd, a stream error from the server, a
// read error, or XML that is not well-formed.
func (s *streamReader) next() (*Element, error) {
	// Between stanzas: whitespace (keepalives) or the stream's end.
	for {
		if s.r == s.w {
			if err := s.more(s.r); err != nil {
				if err == io.EOF {
					return nil, errors.New("connection closed by the server without ending the stream")
				}
				return nil, err
			}
			continue
		}
		c := s.buf[s.r]
		if c == ' ' || c == '\n' || c == '\t' || c == '\r' {
			s.r++
			continue
		}
		if c != '<' {
			return nil, errors.New("xml: text at the top of the stream")
		}
		break
	}
	start := s.base + int64(s.r)
	var root *Element
	var limErr error
	frames := s.frames[:0]
	defer func() { s.frames = frames[:0] }()
	for {
		n, err := s.token(&frames, &root, &limErr)
		if err == errShort {
			if err := s.moreFor(start); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		s.r += n
		if root == nil {
			// The stream's end tag.
			return nil, errStreamEnd
		}
		size := s.base + int64(s.r) - start
		if limErr == nil && s.lim.MaxBytes > 0 && size > int64(s.lim.MaxBytes) {
			limErr = fmt.Errorf("%w: larger than %d bytes", errLimit, s.lim.MaxBytes)
			skip(frames)
		}
		if len(frames) == 0 {
			break
		}
	}
	if root.Name.Space == nsStreams && root.Name.Local != "error" {
		return nil, fmt.Errorf("xml: unknown stream element <%s>", root.Name.Local)
	}
	if limErr != nil {
		return &Element{Name: root.Name, Attr: root.Attr}, limErr
	}
	return root, nil
}

// moreFor reads until the token at r may be complete: text ends at a '<',
// any other token at a '>'. Parsing it again only then keeps a token that
// arrives in many small reads from costing its length squared.
func (s *streamReader) moreFor(start int64) error {
	stop := byte('>')
	if s.r < s.w && s.buf[s.r] != '<' {
		stop = '<'
	}
	for {
		if s.hard > 0 && s.base+int64(s.w)-start > s.hard {
			return fmt.Errorf("stanza larger than %d bytes: closing the stream", s.hard)
		}
		seen := s.w - s.r
		if err := s.more(s.r); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if seen == 0 || bytes.IndexByte(s.buf[s.r+seen:s.w], stop) >= 0 {
			return nil
		}
	}
}

// skip stops building the stanza: the rest is read and checked, not kept.
func skip(frames []frame) {
	for i := range frames {
		frames[i].el = nil
	}
}

// token reads the token at r: it returns the bytes it took, or errShort
// when the token is not all in the buffer (nothing was changed then).
func (s *streamReader) token(frames *[]frame, root **Element, limErr *error) (int, error) {
	b := s.buf[s.r:s.w]
	if len(b) == 0 {
		return 0, errShort
	}
	if b[0] != '<' {
		// Text, up to the next tag.
		i := bytes.IndexByte(b, '<')
		if i < 0 {
			return 0, errShort
		}
		top := (*frames)[len(*frames)-1].el
		if err := s.chars(b[:i], -1, top); err != nil {
			return 0, err
		}
		return i, nil
	}
	if len(b) < 2 {
		return 0, errShort
	}
	switch b[1] {
	case '/':
		return s.endTag(b, frames)
	case '!':
		const cdata = "<![CDATA["
		if len(b) < len(cdata) && bytes.HasPrefix([]byte(cdata), b) {
			return 0, errShort
		}
		if !bytes.HasPrefix(b, []byte(cdata)) || len(*frames) == 0 {
			return 0, errors.New("xml: comments and directives are not allowed in a stream")
		}
		end := bytes.Index(b[len(cdata):], []byte("]]>"))
		if end < 0 {
			return 0, errShort
		}
		top := (*frames)[len(*frames)-1].el
		if err := s.chars(b[len(cdata):len(cdata)+end], -2, top); err != nil {
			return 0, err
		}
		return len(cdata) + end + 3, nil
	case '?':
		return 0, errors.New("xml: processing instructions are not allowed in a stream")
	}
	return s.startTag(b, frames, root, limErr)
}

func (s *streamReader) endTag(b []byte, frames *[]frame) (int, error) {
	i, err := nameEnd(b, 2)
	if err != nil {
		return 0, err
	}
	qname := b[2:i]
	i = skipSpace(b, i)
	if i >= len(b) {
		return 0, errShort
	}
	if b[i] != '>' {
		return 0, fmt.Errorf("xml: invalid characters between </%s and >", qname)
	}
	if len(*frames) == 0 {
		// Between stanzas: only the stream's own end is allowed.
		if string(qname) != "stream:stream" {
			return 0, fmt.Errorf("xml: unexpected end element </%s>", qname)
		}
		return i + 1, nil
	}
	top := (*frames)[len(*frames)-1]
	if string(qname) != top.qname {
		return 0, fmt.Errorf("xml: element <%s> closed by </%s>", top.qname, qname)
	}
	s.scope = s.scope[:top.scope]
	*frames = (*frames)[:len(*frames)-1]
	return i + 1, nil
}

func (s *streamReader) startTag(b []byte, frames *[]frame, root **Element, limErr *error) (int, error) {
	i, err := nameEnd(b, 1)
	if err != nil {
		return 0, err
	}
	qn := b[1:i]
	prefix, local, err := s.splitName(qn)
	if err != nil {
		return 0, err
	}
	s.attrs = s.attrs[:0] // grown in place, kept for the next tag
	empty := false
	decls := 0
	for {
		i = skipSpace(b, i)
		if i >= len(b) {
			return 0, errShort
		}
		if b[i] == '/' {
			if i+1 >= len(b) {
				return 0, errShort
			}
			if b[i+1] != '>' {
				return 0, errors.New("xml: expected /> in element")
			}
			empty = true
			i += 2
			break
		}
		if b[i] == '>' {
			i++
			break
		}
		j, err := nameEnd(b, i)
		if err != nil {
			if err == errNoName {
				return 0, errors.New("xml: expected attribute name in element")
			}
			return 0, err
		}
		ap, al, err := s.splitName(b[i:j])
		if err != nil {
			return 0, err
		}
		i = skipSpace(b, j)
		if i >= len(b) {
			return 0, errShort
		}
		if b[i] != '=' {
			return 0, errors.New("xml: attribute name without = in element")
		}
		i = skipSpace(b, i+1)
		if i >= len(b) {
			return 0, errShort
		}
		q := b[i]
		if q != '"' && q != '\'' {
			return 0, errors.New("xml: unquoted or missing attribute value in element")
		}
		end := bytes.IndexByte(b[i+1:], q)
		if end < 0 {
			return 0, errShort
		}
		raw := b[i+1 : i+1+end]
		i += end + 2
		v, err := s.value(raw, int(q))
		if err != nil {
			return 0, err
		}
		if ap == "xmlns" || (ap == "" && al == "xmlns") {
			decls++
		}
		s.attrs = append(s.attrs, rawAttr{ap, al, v})
	}

	// The whole tag was read: from here on nothing returns errShort.
	mark := len(s.scope)
	if decls > 0 {
		for _, a := range s.attrs {
			if a.prefix == "xmlns" {
				s.scope = append(s.scope, nsDecl{a.local, a.value})
			} else if a.prefix == "" && a.local == "xmlns" {
				s.scope = append(s.scope, nsDecl{"", a.value})
			}
		}
	}
	building := len(*frames) == 0 || (*frames)[len(*frames)-1].el != nil
	if building && s.lim.MaxDepth > 0 && len(*frames) >= s.lim.MaxDepth {
		*limErr = fmt.Errorf("%w: deeper than %d elements", errLimit, s.lim.MaxDepth)
		skip(*frames)
		building = false
	}
	var el *Element
	if building {
		el = &Element{Name: xml.Name{Space: s.resolve(prefix, local, true), Local: local}}
		if n := len(s.attrs) - decls; n > 0 {
			el.Attr = make([]xml.Attr, 0, n)
			for _, a := range s.attrs {
				if a.prefix == "xmlns" || (a.prefix == "" && a.local == "xmlns") {
					continue
				}
				el.Attr = append(el.Attr, xml.Attr{Name: xml.Name{Space: s.resolve(a.prefix, a.local, false), Local: a.local}, Value: a.value})
			}
		}
		if len(*frames) == 0 {
			*root = el
		} else {
			parent := (*frames)[len(*frames)-1].el
			parent.Children = append(parent.Children, el)
		}
	}
	if empty {
		s.scope = s.scope[:mark]
		return i, nil
	}
	var qname string
	if prefix == "" {
		qname = local
	} else {
		qname = s.intern(qn)
	}
	*frames = append(*frames, frame{el: el, qname: qname, scope: mark})
	return i, nil
}

// resolve gives the namespace of a name, as encoding/xml's translate does
// (including its quirks: an unknown prefix stands for itself; the prefixes
// xmlns and xml are fixed; an unprefixed attribute has no namespace).
func (s *streamReader) resolve(prefix, local string, element bool) string {
	switch {
	case prefix == "xmlns":
		return prefix
	case prefix == "" && !element:
		return ""
	case prefix == "xml":
		return nsXML
	case prefix == "" && local == "xmlns":
		return ""
	}
	for i := len(s.scope) - 1; i >= 0; i-- {
		if s.scope[i].prefix == prefix {
			return s.scope[i].uri
		}
	}
	return prefix
}

var errNoName = errors.New("xml: expected element name after <")

// nameEnd returns where the name starting at b[i] ends, as encoding/xml
// reads names: every byte that is an ASCII name byte or not ASCII.
func nameEnd(b []byte, i int) (int, error) {
	j := i
	for j < len(b) && (b[j] >= utf8.RuneSelf || isNameByte(b[j])) {
		j++
	}
	if j == len(b) {
		return 0, errShort
	}
	if j == i {
		return 0, errNoName
	}
	if !validName(b[i:j]) {
		return 0, fmt.Errorf("xml: invalid XML name: %s", b[i:j])
	}
	return j, nil
}

// splitName splits prefix:local the way encoding/xml does: more than one
// colon is an error; an empty side leaves the whole as the local name.
func (s *streamReader) splitName(qn []byte) (prefix, local string, err error) {
	c := bytes.IndexByte(qn, ':')
	if c < 0 {
		return "", s.intern(qn), nil
	}
	if bytes.IndexByte(qn[c+1:], ':') >= 0 {
		return "", "", fmt.Errorf("xml: invalid name %s", qn)
	}
	if c == 0 || c == len(qn)-1 {
		return "", s.intern(qn), nil
	}
	return s.intern(qn[:c]), s.intern(qn[c+1:]), nil
}

func isNameByte(c byte) bool {
	return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
		c == '_' || c == ':' || c == '.' || c == '-'
}

// validName checks an XML name: ASCII names here, others (rare) by
// encoding/xml itself, whose Unicode tables are not exported.
func validName(b []byte) bool {
	ascii := true
	for _, c := range b {
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		c := b[0]
		return 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || c == '_' || c == ':'
	}
	d := xml.NewDecoder(bytes.NewReader(append(append([]byte("<"), b...), "/>"...)))
	_, err := d.RawToken()
	return err == nil
}

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
		i++
	}
	return i
}

// chars adds character data to el (nil while skipping, when it is only
// checked). quote is -1 for text, -2 for a CDATA section.
func (s *streamReader) chars(raw []byte, quote int, el *Element) error {
	if quote == -1 && bytes.Contains(raw, []byte("]]>")) {
		return errors.New("xml: unescaped ]]> not in CDATA section")
	}
	v, err := s.unescape(raw, quote != -2)
	if err != nil {
		return err
	}
	if el != nil && len(v) > 0 {
		if el.Text == "" {
			el.Text = string(v)
		} else {
			el.Text += string(v)
		}
	}
	return nil
}

// value unescapes an attribute value.
func (s *streamReader) value(raw []byte, quote int) (string, error) {
	if bytes.IndexByte(raw, '<') >= 0 {
		return "", errors.New("xml: unescaped < inside quoted string")
	}
	v, err := s.unescape(raw, true)
	if err != nil {
		return "", err
	}
	if len(v) == 0 {
		return "", nil
	}
	if len(v) <= 16 {
		// Stanza types, languages and the like: mostly a few values.
		if n, ok := s.names[string(v)]; ok {
			return n, nil
		}
	}
	return string(v), nil
}

// unescape checks characters (valid UTF-8, allowed in XML), turns CR LF
// and lone CR into LF and, with entities, expands the predefined and
// numeric references. It returns raw itself when nothing changes, else
// the reader's scratch buffer.
func (s *streamReader) unescape(raw []byte, entities bool) ([]byte, error) {
	plain := true
	for i := 0; i < len(raw); {
		c := raw[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
				return nil, fmt.Errorf("xml: illegal character code %U", rune(c))
			}
			if c == '\r' || (c == '&' && entities) {
				plain = false
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(raw[i:])
		if r == utf8.RuneError && n == 1 {
			return nil, errors.New("xml: invalid UTF-8")
		}
		if !xmlChar(r) {
			return nil, fmt.Errorf("xml: illegal character code %U", r)
		}
		i += n
	}
	if plain {
		return raw, nil
	}
	out := s.text[:0]
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '\r':
			out = append(out, '\n')
			i++
			if i < len(raw) && raw[i] == '\n' {
				i++
			}
		case c == '&' && entities:
			r, n, err := entity(raw[i:])
			if err != nil {
				return nil, err
			}
			out = utf8.AppendRune(out, r)
			i += n
		default:
			out = append(out, c)
			i++
		}
	}
	s.text = out
	return out, nil
}

// entity reads the reference at b[0] == '&': one of the five predefined
// entities or a character reference (&#NN; or &#xHH;) to a character XML
// allows.
func entity(b []byte) (rune, int, error) {
	semi := bytes.IndexByte(b, ';')
	bad := func() (rune, int, error) {
		e := b
		if semi >= 0 {
			e = b[:semi+1]
		} else if len(e) > 12 {
			e = e[:12]
		}
		return 0, 0, fmt.Errorf("xml: invalid character entity %s", e)
	}
	if semi < 0 {
		return bad()
	}
	name := b[1:semi]
	if len(name) > 0 && name[0] == '#' {
		digits, base := name[1:], rune(10)
		if len(digits) > 0 && digits[0] == 'x' {
			digits, base = digits[1:], 16
		}
		if len(digits) == 0 {
			return bad()
		}
		var r rune
		for _, c := range digits {
			var d rune
			switch {
			case '0' <= c && c <= '9':
				d = rune(c - '0')
			case base == 16 && 'a' <= c && c <= 'f':
				d = rune(c-'a') + 10
			case base == 16 && 'A' <= c && c <= 'F':
				d = rune(c-'A') + 10
			default:
				return bad()
			}
			r = r*base + d
			if r > utf8.MaxRune {
				return bad()
			}
		}
		// As encoding/xml: a surrogate becomes U+FFFD, then the
		// character itself must be one XML allows.
		if !utf8.ValidRune(r) {
			r = utf8.RuneError
		}
		if !xmlChar(r) {
			return 0, 0, fmt.Errorf("xml: illegal character code %U", r)
		}
		return r, semi + 1, nil
	}
	switch string(name) {
	case "lt":
		return '<', semi + 1, nil
	case "gt":
		return '>', semi + 1, nil
	case "amp":
		return '&', semi + 1, nil
	case "apos":
		return '\'', semi + 1, nil
	case "quot":
		return '"', semi + 1, nil
	}
	return bad()
}
