package email

import (
	"net/mail"
	"strings"
	"unicode"
	"unicode/utf8"

	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/core/jidesc"
)

// unknownSender is the contact of a mail whose From cannot be carried in a
// JID (missing, a group, characters PRECIS refuses). The raw From is then
// shown in the body. The .invalid TLD is reserved (RFC 2606): nobody can be
// written to there.
const unknownSender = "unknown-sender@invalid"

// maxNick is the longest display name passed on as a nickname, in bytes.
const maxNick = 128

// localpart maps an e-mail address to the JID localpart that stands for
// it (XEP-0106: jane@example.org → jane\40example.org). Addresses that a
// JID cannot carry map to the unknown sender; the inbound path never hands
// such an address to core, so this is a last resort.
func localpart(address string) string {
	l, err := jidesc.EmailLocalpart(strings.ToLower(address))
	if err != nil {
		l, _ = jidesc.EmailLocalpart(unknownSender)
	}
	return l
}

// addressOf maps a JID localpart back to an e-mail address. Both
// jane\40example.org and jane%example.org are accepted.
func addressOf(local string) (string, error) {
	addr, err := jidesc.EmailFromLocalpart(local)
	if err != nil {
		return "", core.WrapError(stanza.JIDMalformed, "not an e-mail address: write to jane\\40example.org@ (or jane%example.org@) this gateway", err)
	}
	if !validAddress(addr) {
		return "", core.NewError(stanza.JIDMalformed, "this e-mail address cannot be written to (too long, or characters SMTP does not carry)")
	}
	if addr == unknownSender {
		return "", core.NewError(stanza.ItemNotFound, "this sender's address is unknown: the mail cannot be answered from here")
	}
	return addr, nil
}

// contactAddress turns a bare address found in a mail into the contact
// address delivered to core: lower-cased, and one a JID can carry.
func contactAddress(addr string) (string, bool) {
	addr = strings.ToLower(strings.TrimSpace(addr))
	if addr == "" || !headerSafe(addr) || !validAddress(addr) {
		// Only addresses the gateway can also write back to become
		// contacts; the rest show as the unknown sender.
		return "", false
	}
	local, err := jidesc.EmailLocalpart(addr)
	if err != nil {
		return "", false
	}
	if back, err := addressOf(local); err != nil || back != addr {
		// The JID's normalization (PRECIS) would change the address, e.g.
		// a CJK compatibility ideograph into its unified form: an answer
		// would go to another address.
		return "", false
	}
	return addr, true
}

// validAddress checks an address bound for an SMTP command or a header: a
// bare addr-spec that net/mail parses back to itself, without CR, LF, NUL
// or other control characters, and without angle brackets.
func validAddress(addr string) bool {
	if addr == "" || len(addr) > 320 || !headerSafe(addr) || strings.ContainsAny(addr, "<> ") {
		return false
	}
	a, err := mail.ParseAddress(addr)
	return err == nil && a.Name == "" && a.Address == addr
}

// headerSafe reports whether s can go into a header or an SMTP command
// unchanged: valid UTF-8 and no control characters at all (CR, LF and NUL
// included).
func headerSafe(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == '\u2028' || r == '\u2029' {
			return false
		}
	}
	return true
}

// oneLine folds text bound for a header onto one line: every run of
// control characters (CR, LF, NUL, tabs...) and line or paragraph
// separators becomes a single space, invalid UTF-8 is replaced, and the
// result is trimmed and cut at max bytes on a rune boundary.
func oneLine(s string, max int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	space := false
	for _, r := range s {
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || unicode.IsSpace(r) {
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	return truncateRunes(b.String(), max)
}

// truncateRunes cuts s to at most max bytes without splitting a rune.
func truncateRunes(s string, max int) string {
	if max <= 0 || len(s) <= max {
		return s
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i]
}

// translateAddress turns what a user types ("Jane <jane@example.org>",
// " jane@example.org ") into a bare address.
func translateAddress(input string) (string, error) {
	input = strings.TrimSpace(input)
	if !headerSafe(input) {
		return "", core.NewError(stanza.BadRequest, "an e-mail address is one line of text")
	}
	a, err := mail.ParseAddress(input)
	if err != nil {
		return "", core.NewError(stanza.NotAcceptable, "not an e-mail address (expected jane@example.org)")
	}
	addr, ok := contactAddress(a.Address)
	if !ok {
		return "", core.NewError(stanza.NotAcceptable, "this e-mail address cannot be written to through XMPP")
	}
	return addr, nil
}
