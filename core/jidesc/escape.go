package jidesc

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// MaxLocalpartBytes is the longest localpart RFC 7622 allows, in bytes.
const MaxLocalpartBytes = 1023

// Errors returned by Valid and EscapeLocal.
var (
	ErrEmpty       = errors.New("jidesc: empty localpart")
	ErrEdgeSpace   = errors.New("jidesc: localpart must not begin or end with a space")
	ErrTooLong     = errors.New("jidesc: escaped localpart is longer than 1023 bytes")
	ErrInvalidUTF8 = errors.New("jidesc: localpart is not valid UTF-8")
	ErrUnescaped   = errors.New(`jidesc: localpart contains a character that must be escaped (space " & ' / : < > @)`)
)

// escapes maps each character XEP-0106 §3.2 escapes to its escape sequence.
var escapes = [256]string{
	' ':  `\20`,
	'"':  `\22`,
	'&':  `\26`,
	'\'': `\27`,
	'/':  `\2f`,
	':':  `\3a`,
	'<':  `\3c`,
	'>':  `\3e`,
	'@':  `\40`,
	'\\': `\5c`,
}

// unescapeAt reports whether s[i:] begins with one of the ten XEP-0106
// escape sequences and returns the character it stands for. The XEP writes
// the hex digits in lower case; upper case is accepted as well.
func unescapeAt(s string, i int) (byte, bool) {
	if i+2 >= len(s) || s[i] != '\\' {
		return 0, false
	}
	hi, lo := s[i+1], s[i+2]|0x20 // |0x20 lower-cases A-F and leaves digits alone
	switch hi {
	case '2':
		switch lo {
		case '0':
			return ' ', true
		case '2':
			return '"', true
		case '6':
			return '&', true
		case '7':
			return '\'', true
		case 'f':
			return '/', true
		}
	case '3':
		switch lo {
		case 'a':
			return ':', true
		case 'c':
			return '<', true
		case 'e':
			return '>', true
		}
	case '4':
		if lo == '0' {
			return '@', true
		}
	case '5':
		if lo == 'c' {
			return '\\', true
		}
	}
	return 0, false
}

// Escape applies XEP-0106 escaping to s, meant to become a JID localpart:
// space " & ' / : < > @ are replaced by their escape sequences, and a
// backslash is escaped (as \5c) only when it begins something Unescape
// would read as an escape sequence; any other backslash is kept as is
// (XEP-0106 §4.2). Unescape(Escape(s)) == s for every s.
//
// Escape does not check the result; use EscapeLocal for that.
func Escape(s string) string {
	if !needsEscape(s) {
		return s // most addresses: no allocation
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '\\' {
			if _, ok := unescapeAt(s, i); ok {
				b.WriteString(`\5c`)
			} else {
				b.WriteByte(c)
			}
			continue
		}
		if e := escapes[c]; e != "" {
			b.WriteString(e)
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// needsEscape reports whether Escape would change s.
func needsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if escapes[c] != "" {
			return true
		}
		if c == '\\' {
			if _, ok := unescapeAt(s, i); ok {
				return true
			}
		}
	}
	return false
}

// Unescape reverses Escape: it replaces exactly the ten XEP-0106 escape
// sequences (\20 \22 \26 \27 \2f \3a \3c \3e \40 \5c, hex digits in either
// case) and leaves every other backslash alone. It never fails or panics;
// if s is valid UTF-8 so is the result.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if c, ok := unescapeAt(s, i); ok {
			b.WriteByte(c)
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Valid reports whether local is a well-formed escaped localpart: not
// empty, valid UTF-8, at most MaxLocalpartBytes bytes, free of the raw
// characters XEP-0106 escapes, and not beginning or ending with an escaped
// space (\20), which XEP-0106 §4.2 forbids. It does not apply the PRECIS
// profile; jid.New does that.
func Valid(local string) error {
	switch {
	case local == "":
		return ErrEmpty
	case !utf8.ValidString(local):
		return ErrInvalidUTF8
	case len(local) > MaxLocalpartBytes:
		return ErrTooLong
	case strings.ContainsAny(local, ` "&'/:<>@`):
		return ErrUnescaped
	}
	if c, ok := unescapeAt(local, 0); ok && c == ' ' {
		return ErrEdgeSpace
	}
	if n := len(local) - 3; n >= 0 {
		if c, ok := unescapeAt(local, n); ok && c == ' ' {
			return ErrEdgeSpace
		}
	}
	return nil
}

// EscapeLocal escapes s with Escape and checks the result with Valid, so
// it rejects an empty s, an s with a leading or trailing space, invalid
// UTF-8, and results longer than MaxLocalpartBytes.
func EscapeLocal(s string) (string, error) {
	local := Escape(s)
	if err := Valid(local); err != nil {
		return "", err
	}
	return local, nil
}
