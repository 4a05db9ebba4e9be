package registration

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

func TestValidateValues(t *testing.T) {
	s := sampleSchema()
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	defaults := Values{
		"imap_host": "imap.example.org", "imap_port": "993", "security": "tls",
		"notify": "false", "app_token": "default-token-secret", "sid": "s1",
	}
	with := func(kv ...string) Values {
		v := maps.Clone(defaults)
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(v, kv[i])
			} else {
				v[kv[i]] = kv[i+1]
			}
		}
		return v
	}
	for i, tc := range []struct {
		in   string
		want Values
	}{
		0: {submitQuery("email", "a@example.org", "password", "pw"),
			with("email", "a@example.org", "password", "pw")},
		// Text is trimmed, except private text.
		1: {submitQuery("email", "  a@example.org\n", "password", " pw "),
			with("email", "a@example.org", "password", " pw ")},
		2: {submitQuery("email", "a", "password", "p", "imap_port", "143", "security", "starttls", "imap_host", "mail.example.com"),
			with("email", "a", "password", "p", "imap_port", "143", "security", "starttls", "imap_host", "mail.example.com")},
		// A JID is stored bare and normalised.
		3: {submitQuery("email", "a", "password", "p", "forward_to", " Juliet@Example.COM/balcony "),
			with("email", "a", "password", "p", "forward_to", "juliet@example.com")},
		// Empty optional values fall back to their defaults.
		4: {submitQuery("email", "a", "password", "p", "imap_host", "  ", "security", ""),
			with("email", "a", "password", "p")},
		// Unknown fields are ignored.
		5: {submitQuery("email", "a", "password", "p", "bogus", "x"),
			with("email", "a", "password", "p")},
		// Tab is allowed; exactly MaxLen bytes is allowed.
		6: {submitQuery("email", "a", "password", "p\tq", "signature", strings.Repeat("s", 20)),
			with("email", "a", "password", "p\tq", "signature", strings.Repeat("s", 20))},
		// A secret given overrides its default.
		7: {submitQuery("email", "a", "password", "p", "app_token", "tok"),
			with("email", "a", "password", "p", "app_token", "tok")},
	} {
		sub, err := parseQueryString(tc.in)
		if err != nil {
			t.Fatalf("%d: ParseQuery: %v", i, err)
		}
		got, err := s.Validate(sub)
		if err != nil {
			t.Fatalf("%d: Validate: %v", i, err)
		}
		if !maps.Equal(got, tc.want) {
			t.Errorf("%d: got %v\nwant %v", i, got, tc.want)
		}
	}
}

func TestValidateErrors(t *testing.T) {
	s := sampleSchema()
	ok := []string{"email", "a@example.org", "password", "pw"}
	plus := func(kv ...string) string { return submitQuery(append(append([]string{}, ok...), kv...)...) }
	for i, tc := range []struct {
		in    string
		field string
		cond  string
	}{
		0: {submitQuery("password", "pw"), "email", CondBadRequest},
		1: {submitQuery("email", "a"), "password", CondBadRequest},
		2: {submitQuery("email", "   ", "password", "pw"), "email", CondBadRequest},
		3: {plus("security", "ssl3"), "security", CondNotAcceptable},
		4: {plus("imap_port", "0"), "imap_port", CondNotAcceptable},
		5: {plus("imap_port", "http"), "imap_port", CondNotAcceptable},
		6: {plus("signature", strings.Repeat("s", 21)), "signature", CondNotAcceptable},
		7: {plus("imap_host", strings.Repeat("h", DefaultMaxLen+1)), "imap_host", CondNotAcceptable},
		8: {plus("notify", "yes"), "notify", CondBadRequest},
		9: {plus("forward_to", "@@not a jid"), "forward_to", CondBadRequest},
		// Line breaks and NUL in text bound for protocol lines.
		10: {submitQuery("email", "a\r\nRCPT TO:<x>", "password", "pw"), "email", CondNotAcceptable},
		11: {submitQuery("email", "a", "password", "pw\nQUIT"), "password", CondNotAcceptable},
		12: {submitQuery("email", "a", "password", "pw\r"), "password", CondNotAcceptable},
		13: {plus("imap_host", "a\rb"), "imap_host", CondNotAcceptable},
		14: {plus("sid", "s\n1"), "sid", CondNotAcceptable},
		// Two values for a single-valued field.
		15: {`<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>` +
			`<field var='email'><value>a</value><value>b</value></field>` +
			`<field var='password'><value>p</value></field></x></query>`, "email", CondBadRequest},
	} {
		sub, err := parseQueryString(tc.in)
		if err != nil {
			t.Fatalf("%d: ParseQuery: %v", i, err)
		}
		_, err = s.Validate(sub)
		fe := checkFieldError(t, s, err, tc.field, tc.cond)
		if strings.Contains(fe.Text, "RCPT") || strings.Contains(fe.Text, "QUIT") || strings.Contains(fe.Text, "ssl3") {
			t.Errorf("%d: error %q echoes the value", i, fe.Text)
		}
	}
}

func TestValidateErrorText(t *testing.T) {
	s := sampleSchema()
	sub, _ := parseQueryString(submitQuery("email", "a", "password", "p", "imap_port", "99999"))
	_, err := s.Validate(sub)
	const want = `field "IMAP port" (imap_port): must be a number between 1 and 65535`
	if err == nil || err.Error() != want {
		t.Fatalf("got %v, want %s", err, want)
	}
	if errors.Unwrap(err) == nil {
		t.Error("the Validate function's error is not wrapped")
	}
}

// NUL and controls in a hand-made submission (the XML decoder refuses them
// before they get this far) are refused by Validate too.
func TestValidateControlCharacters(t *testing.T) {
	s := sampleSchema()
	for _, v := range []string{"a\x00b", "a\x01b", "a\x1bb", "a\nb"} {
		for _, field := range []string{"email", "password"} {
			sub := &Submission{Form: true, Raw: map[string][]string{"email": {"e"}, "password": {"p"}}}
			sub.Raw[field] = []string{v}
			_, err := s.Validate(sub)
			checkFieldError(t, s, err, field, CondNotAcceptable)
		}
	}
	sub := &Submission{Form: true, Raw: map[string][]string{"email": {"\xff"}, "password": {"p"}}}
	_, err := s.Validate(sub)
	checkFieldError(t, s, err, "email", CondBadRequest)
}

func TestBooleans(t *testing.T) {
	s := &Schema{Fields: []Field{
		{Var: "b", Label: "Flag", Type: Boolean},
		{Var: "d", Label: "Defaulted", Type: Boolean, Default: "1"},
	}}
	if err := s.Check(); err != nil {
		t.Fatal(err)
	}
	for i, tc := range []struct {
		field string // XML of the field b, or "" for none
		want  string
		err   bool
	}{
		0:  {`<field var='b'><value>1</value></field>`, "true", false},
		1:  {`<field var='b'><value>true</value></field>`, "true", false},
		2:  {`<field var='b' type='boolean'><value>TRUE</value></field>`, "true", false},
		3:  {`<field var='b'><value> true </value></field>`, "true", false},
		4:  {`<field var='b'><value>0</value></field>`, "false", false},
		5:  {`<field var='b'><value>false</value></field>`, "false", false},
		6:  {`<field var='b'><value>False</value></field>`, "false", false},
		7:  {`<field var='b'><value></value></field>`, "false", false},
		8:  {`<field var='b'><value/></field>`, "false", false},
		9:  {`<field var='b'/>`, "false", false},
		10: {``, "false", false},
		11: {`<field var='b'><value>yes</value></field>`, "", true},
		12: {`<field var='b'><value>2</value></field>`, "", true},
	} {
		in := `<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>` + tc.field + `</x></query>`
		sub, err := parseQueryString(in)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		got, err := s.Validate(sub)
		if tc.err {
			checkFieldError(t, s, err, "b", CondBadRequest)
			continue
		}
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if got["b"] != tc.want || got["d"] != "true" {
			t.Errorf("%d: got %v, want b=%s d=true", i, got, tc.want)
		}
	}
	// A required boolean must be sent.
	req := &Schema{Fields: []Field{{Var: "tos", Label: "Accept", Type: Boolean, Required: true}}}
	sub, _ := parseQueryString(submitQuery())
	_, err := req.Validate(sub)
	checkFieldError(t, req, err, "tos", CondBadRequest)
}

func TestLegacy(t *testing.T) {
	s := sampleSchema()
	sub, err := parseQueryString(`<query xmlns='jabber:iq:register'>
		<username> alice@example.org </username><password>s3cret </password><email>x@y</email>
	</query>`)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Form || sub.Raw != nil {
		t.Fatalf("no form was sent: %+v", sub)
	}
	got, err := s.Validate(sub)
	if err != nil {
		t.Fatal(err)
	}
	if got["email"] != "alice@example.org" || got["password"] != "s3cret " || got["imap_port"] != "993" {
		t.Errorf("got %v", got)
	}
	if u := s.Unknown(sub); len(u) != 1 || u[0] != "email" {
		t.Errorf("Unknown = %v, want [email]", u)
	}

	// Missing legacy element.
	sub, _ = parseQueryString(`<query xmlns='jabber:iq:register'><username>a</username></query>`)
	_, err = s.Validate(sub)
	checkFieldError(t, s, err, "password", CondBadRequest)

	// A required field without a legacy element cannot be given without the form.
	s.Fields = append(s.Fields, Field{Var: "smtp_host", Label: "SMTP server", Type: TextSingle, Required: true})
	sub, _ = parseQueryString(`<query xmlns='jabber:iq:register'><username>a</username><password>p</password></query>`)
	_, err = s.Validate(sub)
	fe := checkFieldError(t, s, err, "smtp_host", CondBadRequest)
	if !strings.Contains(fe.Text, "data form") {
		t.Errorf("error %q does not tell the user to use the data form", fe.Text)
	}

	// When a form is sent, the legacy elements are ignored.
	sub, _ = parseQueryString(`<query xmlns='jabber:iq:register'><username>legacy</username><password>lp</password>` +
		`<x xmlns='jabber:x:data' type='submit'><field var='email'><value>form</value></field>` +
		`<field var='password'><value>fp</value></field><field var='smtp_host'><value>smtp</value></field></x></query>`)
	got, err = s.Validate(sub)
	if err != nil {
		t.Fatal(err)
	}
	if got["email"] != "form" || got["password"] != "fp" {
		t.Errorf("got %v, want the form's values", got)
	}
}

func TestValidateWithCurrent(t *testing.T) {
	s := sampleSchema()
	current := Values{"email": "old@example.org", "password": "oldpw", "imap_host": "old.example.org", "app_token": "oldtok"}
	// A registered user re-submits the form: secrets left empty are kept;
	// a non-secret cleared falls to its default; one not sent is kept.
	sub, _ := parseQueryString(`<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>` +
		`<field var='email'><value>new@example.org</value></field>` +
		`<field var='password'><value></value></field><field var='app_token'/>` +
		`<field var='security'><value/></field></x></query>`)
	got, err := s.ValidateWith(sub, current)
	if err != nil {
		t.Fatal(err)
	}
	want := Values{"email": "new@example.org", "password": "oldpw", "app_token": "oldtok", "imap_host": "old.example.org",
		"imap_port": "993", "security": "tls", "notify": "false", "sid": "s1"}
	if !maps.Equal(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	// Without current values the secret is required again.
	_, err = s.Validate(sub)
	checkFieldError(t, s, err, "password", CondBadRequest)
}

func TestValidateRefusals(t *testing.T) {
	s := sampleSchema()
	for i, sub := range []*Submission{nil, {Cancel: true}, {Remove: true}} {
		_, err := s.Validate(sub)
		var fe *FieldError
		if !errors.As(err, &fe) || fe.Condition != CondBadRequest {
			t.Errorf("%d: got %v, want bad-request", i, err)
		}
	}
}

func TestUnknown(t *testing.T) {
	s := sampleSchema()
	sub, _ := parseQueryString(submitQuery("zz", "1", "email", "a", "aa", "2"))
	if got := s.Unknown(sub); strings.Join(got, ",") != "aa,zz" {
		t.Errorf("Unknown = %v", got)
	}
}

func TestSplit(t *testing.T) {
	s := sampleSchema()
	fields, secrets := s.Split(Values{"email": "a", "password": "p", "app_token": "t", "notify": "true", "stray": "x"})
	if !maps.Equal(fields, map[string]string{"email": "a", "notify": "true"}) {
		t.Errorf("fields = %v", fields)
	}
	if !maps.Equal(secrets, map[string]string{"password": "p", "app_token": "t"}) {
		t.Errorf("secrets = %v", secrets)
	}
}

func TestCheck(t *testing.T) {
	ok := Field{Var: "a", Type: TextSingle}
	for i, tc := range []struct {
		fields []Field
		want   string // in the error; "" for none
	}{
		0:  {[]Field{ok, {Type: Fixed, Default: "Heading"}}, ""},
		1:  {[]Field{{Type: TextSingle}}, "missing var"},
		2:  {[]Field{ok, ok}, "duplicate var"},
		3:  {[]Field{{Var: "a", Type: "list-multi"}}, "unknown type"},
		4:  {[]Field{{Var: "a", Type: ListSingle}}, "without options"},
		5:  {[]Field{{Var: "a", Type: TextSingle, Options: []Option{{Value: "x"}}}}, "options on"},
		6:  {[]Field{{Var: "a", Type: TextSingle, Legacy: "login"}}, "unknown legacy"},
		7:  {[]Field{{Var: "a", Type: TextSingle, Legacy: "username"}, {Var: "b", Type: TextSingle, Legacy: "username"}}, "already mapped"},
		8:  {[]Field{{Var: "a", Type: ListSingle, Default: "z", Options: []Option{{Value: "x"}}}}, "default"},
		9:  {[]Field{{Var: "a", Type: Boolean, Default: "yes"}}, "default"},
		10: {[]Field{{Var: "a", Type: JIDSingle, Default: "@"}}, "default"},
		11: {[]Field{{Var: "a", Type: TextSingle, Default: "x\ny"}}, "default"},
		12: {[]Field{{Var: "a", Type: TextSingle, MaxLen: MaxValueLen + 1}}, "MaxLen"},
		13: {[]Field{{Var: "FORM_TYPE", Type: Hidden}}, "reserved"},
		14: {[]Field{{Var: "a", Type: ListSingle, Default: "x", Options: []Option{{Value: "x"}}}}, ""},
	} {
		err := (&Schema{Fields: tc.fields}).Check()
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%d: unexpected error %v", i, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%d: got %v, want an error about %q", i, err, tc.want)
		}
	}
}

func TestTextMulti(t *testing.T) {
	s := Schema{Fields: []Field{{Var: "msg", Label: "Message", Type: TextMulti, Required: true}}}
	v, err := s.Validate(&Submission{Form: true, Raw: map[string][]string{"msg": {"line one", "line two"}}})
	if err != nil || v["msg"] != "line one\nline two" {
		t.Fatalf("multi-line value = %q, %v", v["msg"], err)
	}
	v, err = s.Validate(&Submission{Form: true, Raw: map[string][]string{"msg": {"a\r\nb\rc"}}})
	if err != nil || v["msg"] != "a\nb\nc" {
		t.Fatalf("line ends not normalised: %q, %v", v["msg"], err)
	}
	if _, err := s.Validate(&Submission{Form: true, Raw: map[string][]string{"msg": {"a\x00b"}}}); err == nil {
		t.Fatal("NUL accepted in a text-multi field")
	}
}
