package core

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Element is one XML element read from, or to be written to, the component
// stream: a small tree that handlers can inspect after the whole stanza has
// been read, so that nothing slow ever runs while the stream is mid-element.
// Mixed content is not kept in order (XMPP payloads core handles have none):
// Text holds the concatenated character data directly inside the element.
type Element struct {
	Name     xml.Name
	Attr     []xml.Attr
	Children []*Element
	Text     string
}

// Limits bound what one stanza may cost to read.
type Limits struct {
	MaxDepth int // nesting depth including the stanza element itself
	MaxBytes int // bytes of one stanza as written, see streamReader
}

// errLimit marks a stanza that broke a limit; the connection is closed
// because the stream cannot be resynchronised mid-element.
var errLimit = errors.New("stanza exceeds limits")

// readElement reads the element whose start token was already read, up to and
// including its end token. Namespace declarations are dropped from Attr
// (Name.Space already carries the resolved namespace).
func readElement(r xml.TokenReader, start xml.StartElement, lim Limits) (*Element, error) {
	root := newElement(start)
	var stackArr [8]*Element
	stack := append(stackArr[:0], root)
	for len(stack) > 0 {
		tok, err := r.Token()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if lim.MaxDepth > 0 && len(stack) >= lim.MaxDepth {
				return nil, fmt.Errorf("%w: deeper than %d elements", errLimit, lim.MaxDepth)
			}
			child := newElement(t)
			parent := stack[len(stack)-1]
			parent.Children = append(parent.Children, child)
			stack = append(stack, child)
		case xml.EndElement:
			stack = stack[:len(stack)-1]
		case xml.CharData:
			// Usually one piece per element: copied once, no builder.
			top := stack[len(stack)-1]
			top.Text += string(t)
		default:
			// mellium's stream reader already turns comments, processing
			// instructions and directives into a stream error; this is the
			// second line of defence.
			return nil, fmt.Errorf("%w: %T not allowed in a stanza", errLimit, tok)
		}
	}
	return root, nil
}

func newElement(start xml.StartElement) *Element {
	e := &Element{Name: start.Name}
	for i, a := range start.Attr {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		if e.Attr == nil {
			e.Attr = make([]xml.Attr, 0, len(start.Attr)-i)
		}
		e.Attr = append(e.Attr, a)
	}
	return e
}

// NewElement returns an element with the given namespace and local name and
// attributes given as name/value pairs.
func NewElement(space, local string, attrs ...string) *Element {
	e := &Element{Name: xml.Name{Space: space, Local: local}}
	if len(attrs) > 1 {
		// Room for a few more (type, id): growing one at a time was a
		// fifth of what relaying a message allocated.
		e.Attr = make([]xml.Attr, 0, len(attrs)/2+2)
	}
	for i := 0; i+1 < len(attrs); i += 2 {
		e.SetAttr(attrs[i], attrs[i+1])
	}
	return e
}

// Get returns the value of the attribute with the given local name (no
// namespace), or "".
func (e *Element) Get(name string) string {
	if e == nil {
		return ""
	}
	for _, a := range e.Attr {
		if a.Name.Space == "" && a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// SetAttr sets (or, with an empty value, removes) an attribute.
func (e *Element) SetAttr(name, value string) *Element {
	for i, a := range e.Attr {
		if a.Name.Space == "" && a.Name.Local == name {
			if value == "" {
				e.Attr = append(e.Attr[:i], e.Attr[i+1:]...)
			} else {
				e.Attr[i].Value = value
			}
			return e
		}
	}
	if value != "" {
		e.Attr = append(e.Attr, xml.Attr{Name: xml.Name{Local: name}, Value: value})
	}
	return e
}

// Child returns the first child with the given namespace and local name; an
// empty space matches any namespace.
func (e *Element) Child(space, local string) *Element {
	if e == nil {
		return nil
	}
	for _, c := range e.Children {
		if c.Name.Local == local && (space == "" || c.Name.Space == space) {
			return c
		}
	}
	return nil
}

// ChildText returns the text of the first matching child, or "".
func (e *Element) ChildText(space, local string) string {
	if c := e.Child(space, local); c != nil {
		return c.Text
	}
	return ""
}

// Add appends children and returns e, for building.
func (e *Element) Add(children ...*Element) *Element {
	for _, c := range children {
		if c != nil {
			e.Children = append(e.Children, c)
		}
	}
	return e
}

// AddText appends a child element holding only text.
func (e *Element) AddText(space, local, text string) *Element {
	c := NewElement(space, local)
	c.Text = text
	return e.Add(c)
}

// FirstChild returns the first child element, or nil.
func (e *Element) FirstChild() *Element {
	if e == nil || len(e.Children) == 0 {
		return nil
	}
	return e.Children[0]
}

// TokenReader returns the element as a stream of tokens. Children inherit
// their parent's namespace when their own is empty.
func (e *Element) TokenReader() xml.TokenReader {
	return &sliceReader{toks: e.tokens()}
}

// tokens is the element as tokens, as TokenReader reads them.
func (e *Element) tokens() []xml.Token {
	var toks []xml.Token
	e.appendTokens(&toks, "", false)
	return toks
}

// appendTokens flattens the tree. With explicit, every element carries its
// (inherited) namespace, as encoding/xml's decoder wants; otherwise children
// in their parent's namespace leave it empty so the encoder does not repeat
// xmlns on every element.
func (e *Element) appendTokens(toks *[]xml.Token, parentSpace string, explicit bool) {
	start := xml.StartElement{Name: e.Name, Attr: append([]xml.Attr(nil), e.Attr...)}
	space := e.Name.Space
	if space == "" {
		space = parentSpace
	}
	if explicit {
		start.Name.Space = space
	} else if start.Name.Space == parentSpace {
		start.Name.Space = ""
	}
	*toks = append(*toks, start)
	if e.Text != "" {
		*toks = append(*toks, xml.CharData(e.Text))
	}
	for _, c := range e.Children {
		c.appendTokens(toks, space, explicit)
	}
	*toks = append(*toks, start.End())
}

// Decode decodes the element into v with encoding/xml.
func (e *Element) Decode(v any) error {
	return xml.NewTokenDecoder(e.ExplicitTokenReader()).Decode(v)
}

// ExplicitTokenReader is like TokenReader but every element carries its
// namespace, which is what decoders (and other packages' parsers) expect.
func (e *Element) ExplicitTokenReader() xml.TokenReader {
	var toks []xml.Token
	e.appendTokens(&toks, "", true)
	return &sliceReader{toks: toks}
}

// String renders the element as XML, for logs and tests.
func (e *Element) String() string {
	var b strings.Builder
	enc := xml.NewEncoder(&b)
	r := e.TokenReader()
	for {
		t, err := r.Token()
		if err != nil {
			break
		}
		if err := enc.EncodeToken(t); err != nil {
			return "<!" + err.Error() + ">"
		}
	}
	_ = enc.Flush()
	return b.String()
}

// ElementFromTokens reads one element from a token reader (for payloads that
// other packages render as tokens, such as registration forms).
func ElementFromTokens(r xml.TokenReader) (*Element, error) {
	r = &eofSplitter{r: r}
	for {
		tok, err := r.Token()
		if err != nil {
			return nil, err
		}
		if start, ok := tok.(xml.StartElement); ok {
			return readElement(r, start, Limits{})
		}
	}
}

// eofSplitter returns a token that came with io.EOF (which the
// xml.TokenReader contract allows, and xmlstream.Wrap does) on its own,
// and io.EOF on the next call.
type eofSplitter struct {
	r   xml.TokenReader
	eof bool
}

func (s *eofSplitter) Token() (xml.Token, error) {
	if s.eof {
		return nil, io.EOF
	}
	t, err := s.r.Token()
	if err == io.EOF && t != nil {
		s.eof = true
		return t, nil
	}
	return t, err
}

type sliceReader struct {
	toks []xml.Token
	i    int
}

func (r *sliceReader) Token() (xml.Token, error) {
	if r.i >= len(r.toks) {
		return nil, io.EOF
	}
	t := r.toks[r.i]
	r.i++
	return t, nil
}
