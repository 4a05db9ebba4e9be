package registration

import (
	"encoding/xml"
	"io"
	"strings"
)

// secretSetNote is added to the description of a secret field that is set.
const (
	secretSetNote     = "A value is set; leave this empty to keep it."
	secretSetNoteShow = "A value is set."
)

// Render returns the <query xmlns='jabber:iq:register'/> payload of the IQ
// result to a registration get: <instructions/>, <registered/> when
// registered, the legacy elements of fields with Legacy set, and a data form
// of type form (see RenderForm) whose FORM_TYPE is jabber:iq:register.
//
// current holds the user's current values, secrets included or not:
// non-secret fields show their current value, else their default. Secret
// fields never show a value; one that is set in current is not marked
// required and its description says it is set.
//
// The query element has Name.Space NS and the form NSData, so the encoder
// writes their xmlns; other elements leave Space empty and inherit it.
func (s *Schema) Render(current Values, registered bool) xml.TokenReader {
	var b builder
	b.start(NS, "query")
	if s.Instructions != "" {
		b.elem("instructions", s.Instructions)
	}
	if registered {
		b.elem("registered", "")
	}
	for i := range s.Fields {
		if f := &s.Fields[i]; f.Legacy != "" {
			b.elem(f.Legacy, f.shown(current))
		}
	}
	s.form(&b, current, NS)
	b.end()
	return b.reader()
}

// RenderForm returns just the <x xmlns='jabber:x:data' type='form'/>
// element, with the title, instructions and every field (type, var, label,
// description, required, the current value or default, options), for
// XEP-0050 commands. Secret fields are treated as in Render.
func (s *Schema) RenderForm(current Values) xml.TokenReader {
	var b builder
	s.form(&b, current, "")
	return b.reader()
}

func (s *Schema) form(b *builder, current Values, formType string) {
	b.start(NSData, "x", xml.Attr{Name: xml.Name{Local: "type"}, Value: "form"})
	if s.Title != "" {
		b.elem("title", s.Title)
	}
	if s.Instructions != "" {
		b.elem("instructions", s.Instructions)
	}
	if formType != "" {
		b.start("", "field", attrs("type", string(Hidden), "var", "FORM_TYPE")...)
		b.elem("value", formType)
		b.end()
	}
	for i := range s.Fields {
		f := &s.Fields[i]
		set := f.Secret && current[f.Var] != ""
		b.start("", "field", attrs("type", string(f.Type), "var", f.Var, "label", f.Label)...)
		desc := f.Desc
		if set {
			desc = join(desc, secretSetNote)
		}
		if desc != "" {
			b.elem("desc", desc)
		}
		if f.Required && !set && f.Type != Fixed {
			b.elem("required", "")
		}
		if v := f.shown(current); v != "" && f.Type == TextMulti {
			for _, line := range strings.Split(v, "\n") {
				b.elem("value", line)
			}
		} else if v != "" {
			b.elem("value", v)
		}
		for _, o := range f.Options {
			b.start("", "option", attrs("label", o.Label)...)
			b.elem("value", o.Value)
			b.end()
		}
		b.end()
	}
	b.end()
}

// ResultForm returns a data form of type result showing values for the
// given fields, e.g. the status of an account in a command's answer. Fixed
// fields show their Default; secret fields show no value, only a note that
// one is set.
func ResultForm(title string, fields []Field, values Values) xml.TokenReader {
	var b builder
	b.start(NSData, "x", xml.Attr{Name: xml.Name{Local: "type"}, Value: "result"})
	if title != "" {
		b.elem("title", title)
	}
	for i := range fields {
		f := &fields[i]
		b.start("", "field", attrs("type", string(f.Type), "var", f.Var, "label", f.Label)...)
		desc := f.Desc
		if f.Secret && values[f.Var] != "" {
			desc = join(desc, secretSetNoteShow)
		}
		if desc != "" {
			b.elem("desc", desc)
		}
		switch {
		case f.Secret:
		case f.Type == Fixed:
			if f.Default != "" {
				b.elem("value", f.Default)
			}
		case values[f.Var] != "":
			b.elem("value", values[f.Var])
		}
		b.end()
	}
	b.end()
	return b.reader()
}

// shown is the value a form shows for f: never a secret.
func (f *Field) shown(current Values) string {
	switch {
	case f.Secret:
		return ""
	case f.Type == Fixed:
		return f.Default
	}
	if v, ok := current[f.Var]; ok {
		return v
	}
	return f.Default
}

func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + " " + b
}

// attrs builds attributes from name, value pairs, leaving out empty values.
func attrs(kv ...string) []xml.Attr {
	var out []xml.Attr
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			out = append(out, xml.Attr{Name: xml.Name{Local: kv[i]}, Value: kv[i+1]})
		}
	}
	return out
}

// builder collects the tokens of a payload.
type builder struct {
	toks  []xml.Token
	stack []xml.Name
}

func (b *builder) start(space, local string, attr ...xml.Attr) {
	name := xml.Name{Space: space, Local: local}
	b.toks = append(b.toks, xml.StartElement{Name: name, Attr: attr})
	b.stack = append(b.stack, name)
}

func (b *builder) end() {
	name := b.stack[len(b.stack)-1]
	b.stack = b.stack[:len(b.stack)-1]
	b.toks = append(b.toks, xml.EndElement{Name: name})
}

// elem writes <local>text</local>, or <local/> for empty text.
func (b *builder) elem(local, text string) {
	b.start("", local)
	if text != "" {
		b.toks = append(b.toks, xml.CharData(text))
	}
	b.end()
}

func (b *builder) reader() xml.TokenReader {
	return &sliceReader{toks: b.toks}
}

// sliceReader yields its tokens, then io.EOF.
type sliceReader struct {
	toks []xml.Token
}

func (r *sliceReader) Token() (xml.Token, error) {
	if len(r.toks) == 0 {
		return nil, io.EOF
	}
	t := r.toks[0]
	r.toks = r.toks[1:]
	return xml.CopyToken(t), nil
}
