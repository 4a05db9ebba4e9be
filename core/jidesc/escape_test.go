package jidesc

import (
	"errors"
	"strings"
	"testing"
	"unicode/utf8"

	"mellium.im/xmpp/jid"
)

// xep0106Examples is the table of XEP-0106 §5 ("Examples"): full JIDs,
// unescaped and escaped. Only the localpart (before the last @) is escaped.
var xep0106Examples = []struct {
	unescaped, escaped string
}{
	0:  {`space cadet@example.com`, `space\20cadet@example.com`},
	1:  {`call me "ishmael"@example.com`, `call\20me\20\22ishmael\22@example.com`},
	2:  {`at&t guy@example.com`, `at\26t\20guy@example.com`},
	3:  {`d'artagnan@example.com`, `d\27artagnan@example.com`},
	4:  {`/.fanboy@example.com`, `\2f.fanboy@example.com`},
	5:  {`::foo::@example.com`, `\3a\3afoo\3a\3a@example.com`},
	6:  {`<foo>@example.com`, `\3cfoo\3e@example.com`},
	7:  {`user@host@example.com`, `user\40host@example.com`},
	8:  {`c:\net@example.com`, `c\3a\net@example.com`},
	9:  {`c:\\net@example.com`, `c\3a\\net@example.com`},
	10: {`c:\cool stuff@example.com`, `c\3a\cool\20stuff@example.com`},
	11: {`c:\5commas@example.com`, `c\3a\5c5commas@example.com`},
}

func splitLast(s string) (local, domain string) {
	i := strings.LastIndexByte(s, '@')
	return s[:i], s[i:]
}

func TestXEP0106Examples(t *testing.T) {
	for i, tc := range xep0106Examples {
		local, domain := splitLast(tc.unescaped)
		if got := Escape(local) + domain; got != tc.escaped {
			t.Errorf("%d: Escape(%q)+domain = %q, want %q", i, local, got, tc.escaped)
		}
		elocal, edomain := splitLast(tc.escaped)
		if got := Unescape(elocal) + edomain; got != tc.unescaped {
			t.Errorf("%d: Unescape(%q)+domain = %q, want %q", i, elocal, got, tc.unescaped)
		}
		if got, err := EscapeLocal(local); err != nil || got != elocal {
			t.Errorf("%d: EscapeLocal(%q) = %q, %v; want %q", i, local, got, err, elocal)
		}
		if j, err := jid.New(elocal, "example.com", ""); err != nil || j.String() != tc.escaped {
			t.Errorf("%d: jid.New(%q) = %v, %v; want %s", i, elocal, j, err, tc.escaped)
		}
	}
}

func TestEscape(t *testing.T) {
	for i, tc := range []struct{ in, want string }{
		0:  {"", ""},
		1:  {"plain", "plain"},
		2:  {`\`, `\`},
		3:  {`\\`, `\\`},
		4:  {`\5c`, `\5c5c`},
		5:  {`\5C`, `\5c5C`}, // Unescape accepts upper case, so this must be escaped too
		6:  {`\2F`, `\5c2F`},
		7:  {`\41`, `\41`}, // not one of the ten sequences
		8:  {`\2`, `\2`},
		9:  {`\ `, `\\20`},
		10: {"héllo wörld", `héllo\20wörld`},
		11: {`a@b@c`, `a\40b\40c`},
	} {
		if got := Escape(tc.in); got != tc.want {
			t.Errorf("%d: Escape(%q) = %q, want %q", i, tc.in, got, tc.want)
		}
		if got := Unescape(Escape(tc.in)); got != tc.in {
			t.Errorf("%d: Unescape(Escape(%q)) = %q", i, tc.in, got)
		}
	}
}

func TestUnescape(t *testing.T) {
	for i, tc := range []struct{ in, want string }{
		0: {`john.doe\40example.com`, "john.doe@example.com"}, // mellium v0.23.0 corrupts this
		1: {`ab\5c`, `ab\`},                                   // mellium v0.23.0 panics on this
		2: {`abcdefgh\40`, `abcdefgh@`},                       // and on this
		3: {`\2F\3A\3C\3E\5C`, `/:<>\`},
		4: {`\`, `\`},
		5: {`\4`, `\4`},
		6: {`\41\zz\`, `\41\zz\`},
		7: {`\5c40`, `\40`}, // one pass only
		8: {`\\40`, `\@`},
	} {
		if got := Unescape(tc.in); got != tc.want {
			t.Errorf("%d: Unescape(%q) = %q, want %q", i, tc.in, got, tc.want)
		}
	}
}

func TestEscapeLocal(t *testing.T) {
	for i, tc := range []struct {
		in   string
		want string
		err  error
	}{
		0: {"", "", ErrEmpty},
		1: {" alice", "", ErrEdgeSpace},
		2: {"alice ", "", ErrEdgeSpace},
		3: {" ", "", ErrEdgeSpace},
		4: {"a b", `a\20b`, nil},
		5: {strings.Repeat("a", 1023), strings.Repeat("a", 1023), nil},
		6: {strings.Repeat("a", 1024), "", ErrTooLong},
		7: {strings.Repeat("@", 341), "", ErrTooLong}, // 341*3 = 1023 is fine, but:
		8: {strings.Repeat("@", 342), "", ErrTooLong},
		9: {"\xff", "", ErrInvalidUTF8},
	} {
		if i == 7 {
			tc.want, tc.err = strings.Repeat(`\40`, 341), nil
		}
		got, err := EscapeLocal(tc.in)
		if !errors.Is(err, tc.err) || got != tc.want {
			t.Errorf("%d: EscapeLocal(%.20q) = %.20q, %v; want %.20q, %v", i, tc.in, got, err, tc.want, tc.err)
		}
	}
}

func TestValid(t *testing.T) {
	for i, tc := range []struct {
		in  string
		err error
	}{
		0: {`alice\40example.org`, nil},
		1: {`alice%example.org`, nil},
		2: {`alice@example.org`, ErrUnescaped},
		3: {`a b`, ErrUnescaped},
		4: {`\20a`, ErrEdgeSpace},
		5: {`a\20`, ErrEdgeSpace},
		6: {`\\20`, ErrEdgeSpace}, // decodes to `\ `
		7: {`a\5c20`, nil},        // decodes to `a\20`, no space
		8: {``, ErrEmpty},
	} {
		if err := Valid(tc.in); !errors.Is(err, tc.err) {
			t.Errorf("%d: Valid(%q) = %v, want %v", i, tc.in, err, tc.err)
		}
	}
}

func FuzzEscapeRoundTrip(f *testing.F) {
	for _, tc := range xep0106Examples {
		local, _ := splitLast(tc.unescaped)
		f.Add(local)
		f.Add(tc.unescaped)
	}
	f.Add(`\5C\2F\\\`)
	f.Fuzz(func(t *testing.T, s string) {
		e := Escape(s)
		if got := Unescape(e); got != s {
			t.Fatalf("Unescape(Escape(%q)) = %q (escaped %q)", s, got, e)
		}
		if strings.ContainsAny(e, ` "&'/:<>@`) {
			t.Fatalf("Escape(%q) = %q still contains a character that must be escaped", s, e)
		}
		if utf8.ValidString(s) != utf8.ValidString(e) {
			t.Fatalf("Escape(%q) = %q changed UTF-8 validity", s, e)
		}
		if local, err := EscapeLocal(s); err == nil {
			if local != e || Valid(local) != nil {
				t.Fatalf("EscapeLocal(%q) = %q, Escape = %q", s, local, e)
			}
			if s == "" || s[0] == ' ' || s[len(s)-1] == ' ' || len(local) > MaxLocalpartBytes {
				t.Fatalf("EscapeLocal(%q) accepted a localpart it must reject", s)
			}
		}
	})
}

func FuzzUnescape(f *testing.F) {
	for _, tc := range xep0106Examples {
		f.Add(tc.escaped)
		f.Add(tc.unescaped)
	}
	f.Add(`ab\5c`)
	f.Add(`abcdefgh\40`)
	f.Add(`\`)
	f.Add(`\5`)
	f.Add("\\\xff40")
	f.Fuzz(func(t *testing.T, s string) {
		u := Unescape(s)
		if utf8.ValidString(s) && !utf8.ValidString(u) {
			t.Fatalf("Unescape(%q) = %q is not valid UTF-8", s, u)
		}
		if len(u) > len(s) {
			t.Fatalf("Unescape(%q) = %q grew", s, u)
		}
		_ = Valid(s)
	})
}
