package registration

import (
	"bytes"
	"encoding/xml"
	"errors"
	"strings"
	"testing"
)

var fuzzSeeds = []string{
	`<query xmlns='jabber:iq:register'/>`,
	`<query xmlns='jabber:iq:register'><remove/></query>`,
	`<query xmlns='jabber:iq:register'><username>alice@example.org</username><password>pw</password></query>`,
	`<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='cancel'/></query>`,
	`<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>` +
		`<field var='FORM_TYPE' type='hidden'><value>jabber:iq:register</value></field>` +
		`<field var='email'><value>alice@example.org</value></field>` +
		`<field var='password' type='text-private'><value>pw</value></field>` +
		`<field var='imap_port'><value>993</value></field>` +
		`<field var='security'><value>starttls</value></field>` +
		`<field var='notify'><value>1</value></field>` +
		`<field var='forward_to'><value>Juliet@Example.com/r</value></field>` +
		`<field var='signature'><value/></field>` +
		`</x></query>`,
	`<r:query xmlns:r='jabber:iq:register'><d:x xmlns:d='jabber:x:data'><d:field var='email'><d:value>a</d:value><d:value>b</d:value></d:field></d:x></r:query>`,
}

// fuzzCheck validates anything accepted against the sample schema, with
// and without current values, and checks what comes out.
func fuzzCheck(t *testing.T, sub *Submission, err error) {
	if err != nil {
		var fe *FieldError
		if !errors.As(err, &fe) {
			t.Fatalf("error %v is a %T, not a *FieldError", err, err)
		}
		return
	}
	s := sampleSchema()
	s.Unknown(sub)
	for _, current := range []Values{nil, {"password": "old", "email": "e"}} {
		v, err := s.ValidateWith(sub, current)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Condition == "" || fe.Text == "" {
				t.Fatalf("validation error %#v", err)
			}
			continue
		}
		for k, val := range v {
			f := s.Field(k)
			if f == nil {
				t.Fatalf("value for unknown var %q", k)
			}
			if strings.ContainsAny(val, "\r\n\x00") {
				t.Fatalf("%s: value %q has a line break or NUL", k, val)
			}
		}
		s.Split(v)
	}
}

func FuzzParseQuery(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sub, err := ParseQuery(xml.NewDecoder(bytes.NewReader(data)))
		fuzzCheck(t, sub, err)
	})
}

func FuzzParseForm(f *testing.F) {
	for _, s := range fuzzSeeds {
		if i := strings.Index(s, "<x "); i >= 0 {
			j := strings.LastIndex(s, "</query>")
			f.Add([]byte(s[i:j]))
		}
	}
	f.Add([]byte(`<x xmlns='jabber:x:data' type='submit'><field var='notify'><value>true</value></field></x>`))
	f.Fuzz(func(t *testing.T, data []byte) {
		sub, err := ParseForm(xml.NewDecoder(bytes.NewReader(data)))
		fuzzCheck(t, sub, err)
	})
}

// FuzzValidate feeds values straight to Validate, past the XML decoder,
// to reach the type checks (booleans, JIDs, options) with any string.
func FuzzValidate(f *testing.F) {
	for _, s := range []string{"", "1", "false", " x ", "juliet@example.com/balcony", "\\5c@x", "a\x00b", "\xff", "starttls", "65535"} {
		f.Add(s, s)
	}
	s := sampleSchema()
	f.Fuzz(func(t *testing.T, a, b string) {
		for _, fl := range s.Fields {
			sub := &Submission{Form: true, Raw: map[string][]string{"email": {a}, "password": {b}, fl.Var: {a}}}
			fuzzCheck(t, sub, nil)
			fuzzCheck(t, &Submission{Legacy: map[string]string{"username": a, "password": b}}, nil)
		}
	})
}
