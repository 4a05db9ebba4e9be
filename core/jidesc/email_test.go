package jidesc

import (
	"errors"
	"strings"
	"testing"

	"mellium.im/xmpp/jid"
)

func TestEmailLocalpart(t *testing.T) {
	for i, tc := range []struct {
		addr, local string
	}{
		0: {"alice@example.org", `alice\40example.org`},
		1: {"Alice@Example.ORG", `alice\40example.org`}, // PRECIS lower-cases
		2: {"d'artagnan@example.com", `d\27artagnan\40example.com`},
		3: {"/.fanboy@example.com", `\2f.fanboy\40example.com`},
		4: {"at&t@example.com", `at\26t\40example.com`},
		5: {"john.doe+tag@example.com", `john.doe+tag\40example.com`},
		6: {"a%b@example.com", `a%b\40example.com`},
		7: {"x@[192.0.2.1]", `x\40[192.0.2.1]`},
	} {
		got, err := EmailLocalpart(tc.addr)
		if err != nil || got != tc.local {
			t.Errorf("%d: EmailLocalpart(%q) = %q, %v; want %q", i, tc.addr, got, err, tc.local)
			continue
		}
		j, err := jid.New(got, "email.example.net", "")
		if err != nil {
			t.Errorf("%d: jid.New(%q) rejected the localpart: %v", i, got, err)
		} else if j.Localpart() != got {
			t.Errorf("%d: jid.New changed the localpart %q to %q", i, got, j.Localpart())
		}
		back, err := EmailFromLocalpart(got)
		if err != nil || back != strings.ToLower(tc.addr) {
			t.Errorf("%d: EmailFromLocalpart(%q) = %q, %v; want %q", i, got, back, err, strings.ToLower(tc.addr))
		}
	}
}

func TestEmailLocalpartRejects(t *testing.T) {
	for i, addr := range []string{
		0:  "",
		1:  "alice",
		2:  "Alice <alice@example.org>",
		3:  "<alice@example.org>",
		4:  "alice@example.org (Alice)",
		5:  " alice@example.org",
		6:  "alice@example.org\r\nBcc: x@example.org",
		7:  "alice@exa\x00mple.org",
		8:  "alice\n@example.org",
		9:  `"john doe"@example.org`,
		10: "user@host@example.com",
		11: "a\uFF3C5c@example.org", // fullwidth backslash: PRECIS would map it onto an escape
		12: "a@b, c@d",
		13: strings.Repeat("a", 1020) + "@example.org",
	} {
		if got, err := EmailLocalpart(addr); err == nil || !errors.Is(err, ErrNotAddress) {
			t.Errorf("%d: EmailLocalpart(%q) = %q, %v; want an ErrNotAddress", i, addr, got, err)
		}
	}
}

func TestEmailFromLocalpart(t *testing.T) {
	for i, tc := range []struct {
		local, addr string
	}{
		0: {`alice\40example.org`, "alice@example.org"},
		1: {`alice%example.org`, "alice@example.org"},
		2: {`alice%bob%example.org`, "alice%bob@example.org"},
		3: {`alice%bob\40example.org`, "alice%bob@example.org"}, // the escaped @ wins
		4: {`d\27artagnan%example.com`, "d'artagnan@example.com"},
		5: {`alice\40EXAMPLE.org`, "alice@EXAMPLE.org"},
		6: {`\2f.fanboy\40example.com`, "/.fanboy@example.com"},
	} {
		got, err := EmailFromLocalpart(tc.local)
		if err != nil || got != tc.addr {
			t.Errorf("%d: EmailFromLocalpart(%q) = %q, %v; want %q", i, tc.local, got, err, tc.addr)
		}
	}
	for i, local := range []string{
		0: "",
		1: "alice",
		2: "alice@example.org",       // raw @ is not an escaped localpart
		3: `alice\40b\40example.org`, // two @
		4: `alice\40`,
		5: `%example.org`,
		6: `alice\20\40example.org`,
		7: `alice\3cx\3e\40example.org`,
		8: "alice\\40exa\x00mple.org",
		9: "alice\\40exa\rmple.org",
	} {
		if got, err := EmailFromLocalpart(local); !errors.Is(err, ErrNotAddress) {
			t.Errorf("%d: EmailFromLocalpart(%q) = %q, %v; want an ErrNotAddress", i, local, got, err)
		}
	}
}

func FuzzEmailLocalpart(f *testing.F) {
	for _, tc := range xep0106Examples {
		f.Add(tc.unescaped)
		f.Add(tc.escaped)
	}
	f.Add("alice@example.org")
	f.Add("Alice <alice@example.org>")
	f.Add("a\uFF3C5c@example.org")
	f.Add("alice%example.org")
	f.Fuzz(func(t *testing.T, s string) {
		local, err := EmailLocalpart(s)
		if err == nil {
			if _, err := jid.New(local, "email.example.net", ""); err != nil {
				t.Fatalf("EmailLocalpart(%q) = %q, which jid.New rejects: %v", s, local, err)
			}
			addr, err := EmailFromLocalpart(local)
			if err != nil {
				t.Fatalf("EmailFromLocalpart(EmailLocalpart(%q) = %q): %v", s, local, err)
			}
			if again, err := EmailLocalpart(addr); err != nil || again != local {
				t.Fatalf("EmailLocalpart(%q) = %q, %v; want %q (from %q)", addr, again, err, local, s)
			}
			if strings.ContainsAny(addr, "\r\n\x00") {
				t.Fatalf("address %q contains CR, LF or NUL", addr)
			}
		}
		// Any string may arrive as a localpart.
		if addr, err := EmailFromLocalpart(s); err == nil && strings.ContainsAny(addr, "\r\n\x00<>") {
			t.Fatalf("EmailFromLocalpart(%q) = %q", s, addr)
		}
	})
}
