package registration

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestParseQuery(t *testing.T) {
	for i, tc := range []struct {
		in   string
		want Submission
	}{
		0: {`<query xmlns='jabber:iq:register'/>`, Submission{}},
		1: {`<query xmlns='jabber:iq:register'><remove/></query>`, Submission{Remove: true}},
		2: {`<?xml version='1.0'?>  <!-- hi --><query xmlns='jabber:iq:register'><username>u</username><password>p w</password></query>`,
			Submission{Legacy: map[string]string{"username": "u", "password": "p w"}}},
		3: {submitQuery("a", "1", "b", ""), Submission{Form: true, FormType: NS, Raw: map[string][]string{"a": {"1"}, "b": {""}}}},
		4: {`<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='cancel'/></query>`,
			Submission{Cancel: true, Raw: map[string][]string{}}},
		// A form without a type is taken as submitted; a field without
		// <value/> is kept with no values; fixed fields without var dropped;
		// unknown elements skipped, also inside fields.
		5: {`<query xmlns='jabber:iq:register'><instructions>i</instructions><registered/>` +
			`<other xmlns='urn:example'><username>no</username></other>` +
			`<x xmlns='jabber:x:data'><title>T</title><field type='fixed'><value>Heading</value></field>` +
			`<field var='e'/><field var='m'><desc>d</desc><value>1</value><value>2</value><option><value>z</value></option></field></x>` +
			`<x xmlns='jabber:x:oob'><url>http://x</url></x></query>`,
			Submission{Form: true, Raw: map[string][]string{"e": {}, "m": {"1", "2"}}}},
		// Prefixed namespaces.
		6: {`<r:query xmlns:r='jabber:iq:register'><d:x xmlns:d='jabber:x:data' type='submit'><d:field var='a'><d:value>v</d:value></d:field></d:x></r:query>`,
			Submission{Form: true, Raw: map[string][]string{"a": {"v"}}}},
		// Entities and CDATA.
		7: {`<query xmlns='jabber:iq:register'><password>&lt;&amp;&#x41;<![CDATA[<x>]]></password></query>`,
			Submission{Legacy: map[string]string{"password": "<&A<x>"}}},
	} {
		got, err := parseQueryString(tc.in)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if !equalSub(got, &tc.want) {
			t.Errorf("%d: got %+v\nwant %+v", i, got, tc.want)
		}
	}
}

func equalSub(a, b *Submission) bool {
	return a.Remove == b.Remove && a.Form == b.Form && a.Cancel == b.Cancel && a.FormType == b.FormType &&
		(a.Raw == nil) == (b.Raw == nil) && maps.EqualFunc(a.Raw, b.Raw, slices.Equal) &&
		maps.Equal(a.Legacy, b.Legacy)
}

func TestParseQueryErrors(t *testing.T) {
	form := func(body string) string {
		return `<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>` + body + `</x></query>`
	}
	for i, tc := range []struct {
		in    string
		field string
		cond  string
	}{
		0:  {`<query xmlns='jabber:iq:auth'/>`, "", CondBadRequest},
		1:  {`<x xmlns='jabber:x:data' type='submit'/>`, "", CondBadRequest},
		2:  {`<query xmlns='jabber:iq:register'><username>a</username>`, "", CondBadRequest},
		3:  {`<query xmlns='jabber:iq:register'><username>a</password></query>`, "", CondBadRequest},
		4:  {``, "", CondBadRequest},
		5:  {`text<query xmlns='jabber:iq:register'/>`, "", CondBadRequest},
		6:  {`<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'/><x xmlns='jabber:x:data' type='submit'/></query>`, "", CondBadRequest},
		7:  {`<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='form'/></query>`, "", CondBadRequest},
		8:  {`<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='result'/></query>`, "", CondBadRequest},
		9:  {form(`<field var='a'><value>1</value></field><field var='a'><value>2</value></field>`), "a", CondBadRequest},
		10: {`<query xmlns='jabber:iq:register'><username>a</username><username>b</username></query>`, "username", CondBadRequest},
		11: {form(`<field var='a'><value>1<b>2</b></value></field>`), "a", CondBadRequest},
		12: {`<query xmlns='jabber:iq:register'><password>a<b/></password></query>`, "password", CondBadRequest},
		13: {form(`<field var='` + strings.Repeat("v", 300) + `'/>`), "", CondBadRequest},
	} {
		_, err := parseQueryString(tc.in)
		fe := checkFieldError(t, nil, err, tc.field, tc.cond)
		if tc.field == "" && fe.Text == "" {
			t.Errorf("%d: empty text", i)
		}
	}
}

func TestParseForm(t *testing.T) {
	sub, err := ParseForm(xml.NewDecoder(strings.NewReader(
		`<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>urn:example:cmd</value></field><field var='a'><value>1</value></field></x>`)))
	if err != nil {
		t.Fatal(err)
	}
	if !sub.Form || sub.FormType != "urn:example:cmd" || !slices.Equal(sub.Raw["a"], []string{"1"}) || len(sub.Raw) != 1 {
		t.Errorf("got %+v", sub)
	}
	sub, err = ParseForm(xml.NewDecoder(strings.NewReader(`<x xmlns='jabber:x:data' type='cancel'/>`)))
	if err != nil || !sub.Cancel || sub.Form {
		t.Errorf("cancel: got %+v, %v", sub, err)
	}
	_, err = ParseForm(xml.NewDecoder(strings.NewReader(`<query xmlns='jabber:iq:register'/>`)))
	checkFieldError(t, nil, err, "", CondBadRequest)
}

func TestParseLimits(t *testing.T) {
	fields := func(n int) string {
		var b strings.Builder
		for i := range n {
			fmt.Fprintf(&b, `<field var='f%d'><value>v</value></field>`, i)
		}
		return `<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>` + b.String() + `</x></query>`
	}
	legacy := func(n int) string {
		names := slices.Sorted(maps.Keys(legacyNames))
		var b strings.Builder
		b.WriteString(`<query xmlns='jabber:iq:register'>`)
		for _, name := range names[:n] {
			fmt.Fprintf(&b, `<%s>v</%[1]s>`, name)
		}
		b.WriteString(`<x xmlns='jabber:x:data' type='submit'>`)
		for i := range MaxFields - n + 1 {
			fmt.Fprintf(&b, `<field var='f%d'/>`, i)
		}
		return b.String() + `</x></query>`
	}
	value := func(n int) string {
		return `<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='big'><value>` +
			strings.Repeat("x", n) + `</value></field></x></query>`
	}
	legacyValue := func(n int) string {
		return `<query xmlns='jabber:iq:register'><password>` + strings.Repeat("&amp;", n) + `</password></query>`
	}
	for i, tc := range []struct {
		in    string
		field string
		cond  string // "" for accepted
	}{
		0: {fields(MaxFields), "", ""},
		1: {fields(MaxFields + 1), "", CondNotAcceptable},
		2: {legacy(10), "", CondNotAcceptable}, // legacy elements count as fields
		3: {value(MaxValueLen), "", ""},
		4: {value(MaxValueLen + 1), "big", CondNotAcceptable},
		5: {legacyValue(MaxValueLen), "", ""},
		6: {legacyValue(MaxValueLen + 1), "password", CondNotAcceptable},
		// Many fields of acceptable size, too much in all.
		7: {strings.Replace(fields(20), "<value>v</value>", "<value>"+strings.Repeat("y", 4000)+"</value>", -1), "", CondNotAcceptable},
		// Bulk in skipped elements counts too.
		8: {`<query xmlns='jabber:iq:register'><junk>` + strings.Repeat("<a>zzzzzzzz</a>", 10000) + `</junk></query>`, "", CondNotAcceptable},
	} {
		_, err := parseQueryString(tc.in)
		if tc.cond == "" {
			if err != nil {
				t.Errorf("%d: %v", i, err)
			}
			continue
		}
		fe := checkFieldError(t, nil, err, tc.field, tc.cond)
		if strings.Contains(fe.Text, "xxxx") {
			t.Errorf("%d: error echoes the value", i)
		}
	}
}

// Tokens from a reader other than encoding/xml's decoder may carry what
// the decoder refuses.
func TestParseControlCharacters(t *testing.T) {
	x := xml.Name{Space: NSData, Local: "x"}
	q := xml.Name{Space: NS, Local: "query"}
	toks := func(value string) []xml.Token {
		return []xml.Token{
			xml.StartElement{Name: q},
			xml.StartElement{Name: x, Attr: []xml.Attr{{Name: xml.Name{Local: "type"}, Value: "submit"}}},
			xml.StartElement{Name: xml.Name{Local: "field"}, Attr: []xml.Attr{{Name: xml.Name{Local: "var"}, Value: "a"}}},
			xml.StartElement{Name: xml.Name{Local: "value"}},
			xml.CharData(value),
			xml.EndElement{Name: xml.Name{Local: "value"}},
			xml.EndElement{Name: xml.Name{Local: "field"}},
			xml.EndElement{Name: x},
			xml.EndElement{Name: q},
		}
	}
	for i, tc := range []struct {
		value string
		ok    bool
	}{
		0: {"a\tb\r\nc", true}, // allowed here; Validate refuses CR/LF in single-line fields
		1: {"a\x00b", false},
		2: {"\x01", false},
		3: {"a\x1fb", false},
		4: {"\xff\xfe", false},
		5: {"\u2028ok\u00a0", true},
	} {
		sub, err := ParseQuery(&sliceReader{toks: toks(tc.value)})
		if tc.ok {
			if err != nil || sub.Raw["a"][0] != tc.value {
				t.Errorf("%d: got %+v, %v", i, sub, err)
			}
			continue
		}
		checkFieldError(t, nil, err, "a", CondBadRequest)
	}
}

// ParseQuery stops at the end of the query.
func TestParseQueryStopsAtEnd(t *testing.T) {
	d := xml.NewDecoder(strings.NewReader(`<iq type='set'><query xmlns='jabber:iq:register'><remove/></query><after/></iq>`))
	if _, err := d.Token(); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseQuery(d); err != nil {
		t.Fatal(err)
	}
	tok, err := d.Token()
	if se, ok := tok.(xml.StartElement); err != nil || !ok || se.Name.Local != "after" {
		t.Errorf("next token %#v, %v; want <after>", tok, err)
	}
}

type errReader struct{ err error }

func (r errReader) Token() (xml.Token, error) { return nil, r.err }

type stuckReader struct{}

func (stuckReader) Token() (xml.Token, error) { return nil, nil }

func TestParseReaderErrors(t *testing.T) {
	boom := errors.New("connection reset")
	_, err := ParseQuery(errReader{boom})
	checkFieldError(t, nil, err, "", CondBadRequest)
	if !errors.Is(err, boom) {
		t.Errorf("%v does not wrap the reader's error", err)
	}
	_, err = ParseQuery(errReader{io.EOF})
	checkFieldError(t, nil, err, "", CondBadRequest)
	_, err = ParseQuery(stuckReader{})
	checkFieldError(t, nil, err, "", CondBadRequest)
	// A syntax error's text is not passed on: it may quote the input.
	_, err = parseQueryString(`<query xmlns='jabber:iq:register'><password>&hunter2;</password></query>`)
	fe := checkFieldError(t, nil, err, "", CondBadRequest)
	if strings.Contains(fe.Text, "hunter2") {
		t.Errorf("error %q quotes the input", fe.Text)
	}
}
