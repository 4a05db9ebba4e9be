package registration

import (
	"encoding/xml"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// sampleSchema looks like what the e-mail transport declares.
func sampleSchema() *Schema {
	return &Schema{
		Title:        "Register a mailbox",
		Instructions: "Give the address and password of your mailbox.",
		Fields: []Field{
			{Var: "email", Label: "E-mail address", Type: TextSingle, Required: true, Legacy: "username"},
			{Var: "password", Label: "Password", Type: TextPrivate, Required: true, Secret: true, Legacy: "password"},
			{Type: Fixed, Default: "Servers"},
			{Var: "imap_host", Label: "IMAP server", Type: TextSingle, Default: "imap.example.org"},
			{Var: "imap_port", Label: "IMAP port", Type: TextSingle, Default: "993", Validate: portNumber},
			{Var: "security", Label: "Security", Type: ListSingle, Default: "tls", Options: []Option{
				{Label: "TLS", Value: "tls"}, {Label: "STARTTLS", Value: "starttls"},
			}},
			{Var: "notify", Label: "Notify on new mail", Type: Boolean},
			{Var: "forward_to", Label: "Forward to", Type: JIDSingle},
			{Var: "signature", Label: "Signature", Type: TextSingle, MaxLen: 20},
			{Var: "app_token", Label: "App token", Type: TextPrivate, Secret: true, Default: "default-token-secret"},
			{Var: "sid", Type: Hidden, Default: "s1"},
		},
	}
}

func portNumber(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 || n > 65535 {
		return errors.New("must be a number between 1 and 65535")
	}
	return nil
}

// encode writes a token stream as a string, as the XMPP session would.
func encode(t testing.TB, r xml.TokenReader) string {
	t.Helper()
	var b strings.Builder
	e := xml.NewEncoder(&b)
	for {
		tok, err := r.Token()
		if err != nil {
			break
		}
		if err := e.EncodeToken(tok); err != nil {
			t.Fatalf("encoding token %#v: %v", tok, err)
		}
	}
	if err := e.Flush(); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func parseQueryString(s string) (*Submission, error) {
	return ParseQuery(xml.NewDecoder(strings.NewReader(s)))
}

// submitQuery builds a query with a submitted form from var, value pairs.
func submitQuery(kv ...string) string {
	var b strings.Builder
	b.WriteString(`<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>`)
	b.WriteString(`<field var='FORM_TYPE' type='hidden'><value>jabber:iq:register</value></field>`)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, `<field var='%s'><value>%s</value></field>`, kv[i], escape(kv[i+1]))
	}
	b.WriteString(`</x></query>`)
	return b.String()
}

func escape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

// checkFieldError checks err is a *FieldError with the condition, about the
// field, naming it in its text.
func checkFieldError(t *testing.T, s *Schema, err error, field, cond string) *FieldError {
	t.Helper()
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("error %v (%T), want a *FieldError", err, err)
	}
	if fe.Condition != cond || fe.Field != field {
		t.Fatalf("error %q: condition %q field %q, want %q %q", fe.Text, fe.Condition, fe.Field, cond, field)
	}
	if field != "" && !strings.Contains(fe.Text, field) {
		t.Errorf("error %q does not name var %q", fe.Text, field)
	}
	if s == nil {
		return fe
	}
	if f := s.Field(field); f != nil && f.Label != "" && !strings.Contains(fe.Text, f.Label) {
		t.Errorf("error %q does not name label %q", fe.Text, f.Label)
	}
	if fe.Error() != fe.Text {
		t.Errorf("Error() = %q, want Text", fe.Error())
	}
	return fe
}
