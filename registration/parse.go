package registration

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// Submission is what a user sent: a parsed <query xmlns='jabber:iq:register'/>
// of an IQ set, or a bare data form. It is raw: check it with
// Schema.Validate before using any value.
type Submission struct {
	// Remove is set when the query holds <remove/> (unregister).
	Remove bool
	// Form is set when a jabber:x:data form of type submit was present
	// (a form without a type is taken as submit).
	Form bool
	// Cancel is set when the data form was of type cancel.
	Cancel bool
	// FormType is the value of the form's hidden FORM_TYPE field, if any.
	// It is not in Raw.
	FormType string
	// Raw maps each field var of the form to its values, as sent (an empty
	// slice for a field sent without <value/>). Nil when no form was sent.
	Raw map[string][]string
	// Legacy maps the XEP-0077 elements of the query (username, password,
	// email, ...) to their text, as sent. Schema.Validate maps them to
	// fields through Field.Legacy when no form was sent.
	Legacy map[string]string
}

// ParseQuery decodes a jabber:iq:register <query/> element. The reader
// yields the start element of the query first (leading comments, processing
// instructions and whitespace are skipped), then its content, then its end;
// ParseQuery reads nothing after that end.
//
// It refuses, with a *FieldError: another root element, malformed XML, more
// than one data form, a form of a type other than submit or cancel, a field
// var or legacy element given twice, elements inside a value, NUL, other C0
// controls except tab, CR and LF, or invalid UTF-8 in a value (all
// bad-request); more than MaxFields fields and legacy elements, a value
// longer than MaxValueLen or more than MaxTotal bytes in all
// (not-acceptable). Elements it does not know are skipped, and counted.
func ParseQuery(r xml.TokenReader) (*Submission, error) {
	p := &parser{r: r}
	start, err := p.root()
	if err != nil {
		return nil, err
	}
	if start.Name.Local != "query" || nameSpace(start, "") != NS {
		return nil, badRequest("", "expected a <query xmlns='%s'/> element", NS)
	}
	sub := &Submission{}
	sawForm := false
	for {
		tok, err := p.next()
		if err != nil {
			return nil, err
		}
		t, ok := tok.(xml.StartElement)
		if !ok {
			if _, end := tok.(xml.EndElement); end {
				return sub, nil
			}
			continue
		}
		ns := nameSpace(t, NS)
		switch {
		case ns == NSData && t.Name.Local == "x":
			if sawForm {
				return nil, badRequest("", "more than one data form in the query")
			}
			sawForm = true
			if err := p.form(t, sub); err != nil {
				return nil, err
			}
		case ns != NS:
			err = p.skip()
		case t.Name.Local == "remove":
			sub.Remove = true
			err = p.skip()
		case legacyNames[t.Name.Local]:
			err = p.legacy(t, sub)
		default:
			err = p.skip()
		}
		if err != nil {
			return nil, err
		}
	}
}

// ParseForm decodes a bare <x xmlns='jabber:x:data'/> element of type
// submit or cancel, as found in an XEP-0050 command. The reader and the
// limits are as for ParseQuery.
func ParseForm(r xml.TokenReader) (*Submission, error) {
	p := &parser{r: r}
	start, err := p.root()
	if err != nil {
		return nil, err
	}
	if start.Name.Local != "x" || nameSpace(start, "") != NSData {
		return nil, badRequest("", "expected an <x xmlns='%s'/> element", NSData)
	}
	sub := &Submission{}
	if err := p.form(start, sub); err != nil {
		return nil, err
	}
	return sub, nil
}

// parser reads tokens and keeps count of what it read, for the limits.
type parser struct {
	r      xml.TokenReader
	err    error // sticky error of the reader, returned after its token
	total  int
	fields int
	empty  int // consecutive (nil, nil) from the reader
}

// next returns the next token, or a *FieldError: for a reader error or when
// MaxTotal is exceeded.
func (p *parser) next() (xml.Token, error) {
	for {
		if p.err != nil {
			return nil, p.readErr(p.err)
		}
		tok, err := p.r.Token()
		if err != nil {
			p.err = err
		}
		if tok == nil {
			if err == nil {
				// A reader that makes no progress would loop forever.
				if p.empty++; p.empty > 100 {
					p.err = io.ErrNoProgress
				}
			}
			continue
		}
		p.empty = 0
		switch t := tok.(type) {
		case xml.StartElement:
			p.total += len(t.Name.Space) + len(t.Name.Local)
			for _, a := range t.Attr {
				p.total += len(a.Name.Space) + len(a.Name.Local) + len(a.Value)
			}
		case xml.CharData:
			p.total += len(t)
		case xml.Comment:
			p.total += len(t)
		case xml.ProcInst:
			p.total += len(t.Target) + len(t.Inst)
		case xml.Directive:
			p.total += len(t)
		}
		if p.total > MaxTotal {
			p.err = notAcceptable("", "the submission is larger than %d bytes", MaxTotal)
			return nil, p.err
		}
		return tok, nil
	}
}

// readErr turns an error of the reader into a *FieldError. The text of a
// syntax error is not passed on: it may quote the input.
func (p *parser) readErr(err error) error {
	var fe *FieldError
	var se *xml.SyntaxError
	switch {
	case errors.As(err, &fe):
		return fe
	case errors.Is(err, io.EOF):
		return badRequest("", "malformed XML: unexpected end")
	case errors.As(err, &se):
		return &FieldError{Condition: CondBadRequest, Text: fmt.Sprintf("malformed XML at line %d", se.Line)}
	}
	return &FieldError{Condition: CondBadRequest, Text: "reading XML: " + err.Error(), err: err}
}

// root returns the first start element, skipping what may precede it.
func (p *parser) root() (xml.StartElement, error) {
	for {
		tok, err := p.next()
		if err != nil {
			return xml.StartElement{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t, nil
		case xml.CharData:
			if strings.TrimSpace(string(t)) != "" {
				return xml.StartElement{}, badRequest("", "malformed XML: text before the element")
			}
		case xml.EndElement:
			return xml.StartElement{}, badRequest("", "malformed XML: end before the element")
		}
	}
}

// skip reads up to and including the end of the element just started.
func (p *parser) skip() error {
	depth := 1
	for depth > 0 {
		tok, err := p.next()
		if err != nil {
			return err
		}
		switch tok.(type) {
		case xml.StartElement:
			depth++
		case xml.EndElement:
			depth--
		}
	}
	return nil
}

// text reads the text content of the element just started, up to its end.
// what names it in errors.
func (p *parser) text(what, field string) (string, error) {
	var b strings.Builder
	for {
		tok, err := p.next()
		if err != nil {
			return "", err
		}
		switch t := tok.(type) {
		case xml.CharData:
			if b.Len()+len(t) > MaxValueLen {
				return "", notAcceptable(field, "%s: value longer than %d bytes", what, MaxValueLen)
			}
			b.Write(t)
		case xml.StartElement:
			return "", badRequest(field, "%s: unexpected element inside a value", what)
		case xml.EndElement:
			s := b.String()
			if !validText(s) {
				return "", badRequest(field, "%s: contains a control character or invalid UTF-8", what)
			}
			return s, nil
		}
	}
}

func (p *parser) countField() error {
	if p.fields++; p.fields > MaxFields {
		return notAcceptable("", "the submission has more than %d fields", MaxFields)
	}
	return nil
}

// legacy reads an XEP-0077 element such as <username/>.
func (p *parser) legacy(start xml.StartElement, sub *Submission) error {
	name := start.Name.Local
	what := "element <" + name + ">"
	if err := p.countField(); err != nil {
		return err
	}
	if _, dup := sub.Legacy[name]; dup {
		return badRequest(name, "%s appears twice", what)
	}
	v, err := p.text(what, name)
	if err != nil {
		return err
	}
	if sub.Legacy == nil {
		sub.Legacy = map[string]string{}
	}
	sub.Legacy[name] = v
	return nil
}

// form reads a data form whose start element was just read.
func (p *parser) form(start xml.StartElement, sub *Submission) error {
	switch attr(start, "type") {
	case "submit", "":
		sub.Form = true
	case "cancel":
		sub.Cancel = true
	default:
		return badRequest("", "the data form must be of type submit or cancel")
	}
	sub.Raw = map[string][]string{}
	for {
		tok, err := p.next()
		if err != nil {
			return err
		}
		switch t := tok.(type) {
		case xml.EndElement:
			return nil
		case xml.StartElement:
			if t.Name.Local == "field" && nameSpace(t, NSData) == NSData {
				err = p.field(t, sub)
			} else {
				err = p.skip()
			}
			if err != nil {
				return err
			}
		}
	}
}

// field reads a <field/> of a data form.
func (p *parser) field(start xml.StartElement, sub *Submission) error {
	if err := p.countField(); err != nil {
		return err
	}
	v := attr(start, "var")
	if len(v) > maxVarLen || !validText(v) {
		return badRequest("", "a field has a var longer than %d bytes or with a control character", maxVarLen)
	}
	what := fmt.Sprintf("field %q", v)
	vals := []string{}
	for {
		tok, err := p.next()
		if err != nil {
			return err
		}
		if _, end := tok.(xml.EndElement); end {
			break
		}
		t, ok := tok.(xml.StartElement)
		if !ok {
			continue
		}
		if t.Name.Local == "value" && nameSpace(t, NSData) == NSData {
			s, err := p.text(what, v)
			if err != nil {
				return err
			}
			vals = append(vals, s)
		} else if err := p.skip(); err != nil {
			return err
		}
	}
	switch {
	case v == "":
		// Only fixed fields may lack a var; nothing to keep.
	case v == "FORM_TYPE":
		if len(vals) > 0 {
			sub.FormType = vals[0]
		}
	default:
		if _, dup := sub.Raw[v]; dup {
			return badRequest(v, "%s appears twice", what)
		}
		sub.Raw[v] = vals
	}
	return nil
}

// nameSpace is the namespace of an element: its resolved Name.Space, else
// an xmlns attribute (tokens from a raw reader), else the parent's.
func nameSpace(t xml.StartElement, parent string) string {
	if t.Name.Space != "" {
		return t.Name.Space
	}
	for _, a := range t.Attr {
		if a.Name.Space == "" && a.Name.Local == "xmlns" {
			return a.Value
		}
	}
	return parent
}

func attr(t xml.StartElement, local string) string {
	for _, a := range t.Attr {
		if a.Name.Space == "" && a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// validText refuses invalid UTF-8, NUL and the other C0 controls except
// tab, LF and CR.
func validText(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
			return false
		}
	}
	return true
}
