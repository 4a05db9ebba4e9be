package registration

import (
	"encoding/xml"
	"maps"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	s := sampleSchema()
	got := encode(t, s.Render(nil, false))
	for _, want := range []string{
		`<query xmlns="jabber:iq:register"><instructions>Give the address and password of your mailbox.</instructions>`,
		`<username></username><password></password><x xmlns="jabber:x:data" type="form">`,
		`<title>Register a mailbox</title><instructions>Give the address and password of your mailbox.</instructions>`,
		`<field type="hidden" var="FORM_TYPE"><value>jabber:iq:register</value></field>`,
		`<field type="text-single" var="email" label="E-mail address"><required></required></field>`,
		`<field type="text-private" var="password" label="Password"><required></required></field>`,
		`<field type="fixed"><value>Servers</value></field>`,
		`<field type="text-single" var="imap_port" label="IMAP port"><value>993</value></field>`,
		`<field type="list-single" var="security" label="Security"><value>tls</value>` +
			`<option label="TLS"><value>tls</value></option><option label="STARTTLS"><value>starttls</value></option></field>`,
		`<field type="boolean" var="notify" label="Notify on new mail"></field>`,
		`<field type="jid-single" var="forward_to" label="Forward to"></field>`,
		`<field type="hidden" var="sid"><value>s1</value></field>`,
		`</x></query>`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %s\nin %s", want, got)
		}
	}
	if strings.Contains(got, "registered") {
		t.Error("rendered <registered/> for a new user")
	}
	// The default of a secret is never shown either.
	if strings.Contains(got, "default-token-secret") {
		t.Error("rendered the default of a secret field")
	}
}

func TestRenderRegistered(t *testing.T) {
	s := sampleSchema()
	current := Values{"email": "a@example.org", "password": "hunter2", "app_token": "tok-XYZ", "imap_port": "143", "notify": "true"}
	got := encode(t, s.Render(current, true))
	for _, secret := range []string{"hunter2", "tok-XYZ", "default-token-secret"} {
		if strings.Contains(got, secret) {
			t.Errorf("secret %q rendered in %s", secret, got)
		}
	}
	for _, want := range []string{
		`<registered></registered>`,
		`<username>a@example.org</username><password></password>`,
		`<field type="text-single" var="email" label="E-mail address"><required></required><value>a@example.org</value></field>`,
		// Set secrets: not required, described as set.
		`<field type="text-private" var="password" label="Password"><desc>` + secretSetNote + `</desc></field>`,
		`<field type="text-single" var="imap_port" label="IMAP port"><value>143</value></field>`,
		`<field type="boolean" var="notify" label="Notify on new mail"><value>true</value></field>`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %s\nin %s", want, got)
		}
	}
	form := encode(t, s.RenderForm(current))
	if !strings.HasPrefix(form, `<x xmlns="jabber:x:data" type="form"><title>`) || strings.Contains(form, "FORM_TYPE") ||
		strings.Contains(form, "hunter2") || !strings.HasSuffix(form, "</x>") {
		t.Errorf("RenderForm: %s", form)
	}
}

func TestResultForm(t *testing.T) {
	s := sampleSchema()
	got := encode(t, ResultForm("Status", s.Fields, Values{"email": "a@example.org", "password": "hunter2", "notify": "false"}))
	for _, want := range []string{
		`<x xmlns="jabber:x:data" type="result"><title>Status</title>`,
		`<field type="text-single" var="email" label="E-mail address"><value>a@example.org</value></field>`,
		`<field type="text-private" var="password" label="Password"><desc>` + secretSetNoteShow + `</desc></field>`,
		`<field type="boolean" var="notify" label="Notify on new mail"><value>false</value></field>`,
		`<field type="fixed"><value>Servers</value></field>`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %s\nin %s", want, got)
		}
	}
	if strings.Contains(got, "hunter2") || strings.Contains(got, "required") {
		t.Errorf("result form: %s", got)
	}
}

// Rendered into a stream with another default namespace, the payload keeps
// its own namespaces.
func TestRenderInStream(t *testing.T) {
	var b strings.Builder
	e := xml.NewEncoder(&b)
	iq := xml.StartElement{Name: xml.Name{Local: "iq"}, Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: "jabber:component:accept"}}}
	e.EncodeToken(iq)
	r := sampleSchema().Render(nil, false)
	for tok, err := r.Token(); err == nil; tok, err = r.Token() {
		e.EncodeToken(tok)
	}
	e.EncodeToken(iq.End())
	e.Flush()
	// Decode it back: the names must resolve to the right namespaces.
	d := xml.NewDecoder(strings.NewReader(b.String()))
	seen := map[string]string{}
	for tok, err := d.Token(); err == nil; tok, err = d.Token() {
		if se, ok := tok.(xml.StartElement); ok {
			if _, dup := seen[se.Name.Local]; !dup {
				seen[se.Name.Local] = se.Name.Space
			}
		}
	}
	want := map[string]string{"query": NS, "username": NS, "instructions": NS, "x": NSData, "field": NSData, "value": NSData, "option": NSData, "required": NSData, "title": NSData}
	for k, v := range want {
		if seen[k] != v {
			t.Errorf("<%s> in namespace %q, want %q", k, seen[k], v)
		}
	}
}

// clientForm is how a client sees a data form.
type clientForm struct {
	XMLName xml.Name      `xml:"jabber:x:data x"`
	Type    string        `xml:"type,attr"`
	Title   string        `xml:"title"`
	Fields  []clientField `xml:"field"`
}

type clientField struct {
	Var      string    `xml:"var,attr,omitempty"`
	Type     string    `xml:"type,attr,omitempty"`
	Label    string    `xml:"label,attr,omitempty"`
	Required *struct{} `xml:"required"`
	Values   []string  `xml:"value"`
	Options  []struct {
		Value string `xml:"value"`
	} `xml:"option"`
}

type clientQuery struct {
	XMLName  xml.Name    `xml:"jabber:iq:register query"`
	Username *string     `xml:"username"`
	Password *string     `xml:"password"`
	Form     *clientForm `xml:"jabber:x:data x"`
}

// A client gets the form, fills it in and submits it; what it filled in
// comes out of Validate.
func TestRoundTrip(t *testing.T) {
	s := sampleSchema()
	var q clientQuery
	if err := xml.Unmarshal([]byte(encode(t, s.Render(nil, false))), &q); err != nil {
		t.Fatal(err)
	}
	if q.Form == nil || q.Form.Type != "form" || q.Username == nil || q.Password == nil {
		t.Fatalf("client sees %+v", q)
	}
	fill := map[string]string{
		"email":      "alice@example.org",
		"password":   "  pass word  ",
		"imap_port":  "1993",
		"notify":     "1",
		"forward_to": "alice@example.net/phone",
		"security":   "starttls",
	}
	// Like many clients, send every field back without its type, and
	// leave fixed fields out.
	var out []clientField
	for _, f := range q.Form.Fields {
		if f.Type == "fixed" {
			continue
		}
		if f.Type == "list-single" && len(f.Options) != 2 {
			t.Errorf("list %s has options %v", f.Var, f.Options)
		}
		if v, ok := fill[f.Var]; ok {
			f.Values = []string{v}
		}
		f.Type, f.Label, f.Required, f.Options = "", "", nil, nil
		out = append(out, f)
	}
	q.Form = &clientForm{Type: "submit", Fields: out}
	q.Username, q.Password = nil, nil
	raw, err := xml.Marshal(q)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := ParseQuery(xml.NewDecoder(strings.NewReader(string(raw))))
	if err != nil {
		t.Fatalf("ParseQuery(%s): %v", raw, err)
	}
	if sub.FormType != NS || !sub.Form {
		t.Errorf("submission %+v", sub)
	}
	got, err := s.Validate(sub)
	if err != nil {
		t.Fatal(err)
	}
	want := Values{
		"email": "alice@example.org", "password": "  pass word  ", "imap_host": "imap.example.org",
		"imap_port": "1993", "security": "starttls", "notify": "true", "forward_to": "alice@example.net",
		"app_token": "default-token-secret", "sid": "s1",
	}
	if !maps.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	if u := s.Unknown(sub); len(u) != 0 {
		t.Errorf("Unknown = %v", u)
	}

	// The same through ParseForm, as an ad-hoc command would.
	raw, _ = xml.Marshal(q.Form)
	sub2, err := ParseForm(xml.NewDecoder(strings.NewReader(string(raw))))
	if err != nil {
		t.Fatal(err)
	}
	if got2, err := s.Validate(sub2); err != nil || !maps.Equal(got2, want) {
		t.Errorf("ParseForm: got %v, %v", got2, err)
	}

	// Re-registering: the rendered form for the stored values, submitted
	// unchanged, validates to the same values.
	fields, secrets := s.Split(got)
	current := maps.Clone(fields)
	maps.Copy(current, secrets)
	var q2 clientQuery
	if err := xml.Unmarshal([]byte(encode(t, s.Render(current, true))), &q2); err != nil {
		t.Fatal(err)
	}
	q2.Form.Type = "submit"
	raw, _ = xml.Marshal(q2)
	sub3, err := ParseQuery(xml.NewDecoder(strings.NewReader(string(raw))))
	if err != nil {
		t.Fatal(err)
	}
	if got3, err := s.ValidateWith(sub3, current); err != nil || !maps.Equal(got3, want) {
		t.Errorf("re-registration: got %v, %v\nwant %v", got3, err, want)
	}
}
