package core

import (
	"regexp"
	"strings"

	"mellium.im/xmpp/stanza"

	"transportd/core/jidesc"
)

// Several accounts on one transport (two mailboxes, two phone numbers).
//
// A user's first account is their main account; each further one has a
// short label they choose at registration ("work"). Contacts of the main
// account have the plain JIDs (jane\40example.org@email.example.net);
// contacts of a labelled account carry the label and an escaped colon in
// front (work\3ajane\40example.org@email.example.net, which clients that
// unescape show as work:jane@example.org@...). A colon cannot occur in any
// transport's own localparts (e-mail addresses without quoting, E.164
// numbers, IRC nicks and channel names), so the split is unambiguous, and
// every client handles it: it is an ordinary localpart.

const (
	// labelSep separates an account label from the contact's localpart:
	// the XEP-0106 escape of ':'.
	labelSep = `\3a`
	// fieldAccount is the registration form field naming the account.
	fieldAccount = "core_account"
)

var labelRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,15}$`)

func validLabel(s string) error {
	if !labelRE.MatchString(s) {
		return NewError(stanza.NotAcceptable, `account name: up to 16 lower-case letters, digits, "-" or "_"`)
	}
	return nil
}

// local is the JID localpart of a contact of an account.
func (c *component) local(label, address string) string {
	l := c.t.Localpart(address)
	if label == "" {
		return l
	}
	return jidesc.Escape(label) + labelSep + l
}

// splitLabel splits a contact localpart into account label and the
// transport's own localpart.
func splitLabel(local string) (label, rest string) {
	if i := strings.Index(local, labelSep); i > 0 {
		return jidesc.Unescape(local[:i]), local[i+len(labelSep):]
	}
	return "", local
}

// address parses a contact localpart into account label and legacy
// address.
func (c *component) address(local string) (label, addr string, err error) {
	label, rest := splitLabel(local)
	addr, err = c.t.Address(rest)
	return label, addr, err
}
