package jidesc

import (
	"errors"
	"fmt"
	"net/mail"
	"strings"

	"mellium.im/xmpp/jid"
)

// ErrNotAddress is wrapped by the errors EmailLocalpart and
// EmailFromLocalpart return for input that is not a bare e-mail address.
var ErrNotAddress = errors.New("jidesc: not a bare e-mail address")

// probeDomain is the domainpart used to run a localpart through
// mellium's jid.New (PRECIS UsernameCaseMapped and the RFC 7622 checks).
const probeDomain = "email.transportd.invalid"

// EmailLocalpart maps an e-mail address to the JID localpart that stands
// for it: alice@example.org → alice\40example.org.
//
// addr must be a bare addr-spec as net/mail parses it (no display name, no
// angle brackets, no comments, no CR, LF or NUL). The result is in the
// canonical form a JID holds, i.e. after mellium's PRECIS
// UsernameCaseMapped profile (which lower-cases it), so it can be compared
// with the localpart of any parsed JID. EmailFromLocalpart of the result
// yields the address again, lower-cased. Addresses that cannot be carried
// in a localpart (too long, characters PRECIS rejects, or characters that
// PRECIS maps onto an escape sequence) are rejected.
func EmailLocalpart(addr string) (string, error) {
	if err := checkAddress(addr); err != nil {
		return "", err
	}
	local, err := EscapeLocal(addr)
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotAddress, err)
	}
	j, err := jid.New(local, probeDomain, "")
	if err != nil {
		return "", fmt.Errorf("%w: cannot be a JID localpart: %w", ErrNotAddress, err)
	}
	local = j.Localpart()
	// PRECIS width mapping can turn e.g. U+FF3C FULLWIDTH REVERSE SOLIDUS
	// into a backslash and so create an escape sequence; make sure the
	// canonical localpart still names a valid address.
	if _, err := EmailFromLocalpart(local); err != nil {
		return "", err
	}
	return local, nil
}

// EmailFromLocalpart maps a JID localpart back to the e-mail address it
// stands for. Two forms are accepted:
//
//   - the XEP-0106 escaped form, alice\40example.org;
//   - the percent form, alice%example.org, where the last % becomes @
//     (used only when the unescaped localpart contains no @).
//
// The result is checked like EmailLocalpart's input.
func EmailFromLocalpart(local string) (string, error) {
	if err := Valid(local); err != nil {
		return "", fmt.Errorf("%w: %w", ErrNotAddress, err)
	}
	addr := Unescape(local)
	if !strings.Contains(addr, "@") {
		i := strings.LastIndexByte(addr, '%')
		if i < 0 {
			return "", fmt.Errorf("%w: localpart has neither \\40 nor %%", ErrNotAddress)
		}
		addr = addr[:i] + "@" + addr[i+1:]
	}
	if err := checkAddress(addr); err != nil {
		return "", err
	}
	return addr, nil
}

// checkAddress accepts exactly the strings net/mail parses as a bare
// addr-spec and gives back unchanged.
func checkAddress(addr string) error {
	if strings.ContainsAny(addr, "\r\n\x00") {
		return fmt.Errorf("%w: contains CR, LF or NUL", ErrNotAddress)
	}
	a, err := mail.ParseAddress(addr)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrNotAddress, err)
	}
	if a.Name != "" || a.Address != addr {
		return fmt.Errorf("%w: has a display name, angle brackets, comments or quoting", ErrNotAddress)
	}
	return nil
}
