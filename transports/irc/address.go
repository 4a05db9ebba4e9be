package irc

import (
	"errors"
	"strings"
	"unicode"
	"unicode/utf8"

	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/core/jidesc"
)

// An address is what core calls a legacy address: the JID localpart,
// XEP-0106-unescaped. Its forms (biboumi's):
//
//	#chan%irc.example.org   a channel on a server
//	nick%irc.example.org    a user on a server
//	irc.example.org         the server itself
//	#chan, nick             on the domain's default_server
//
// The server is everything after the last '%' (channel names may contain
// '%', host names cannot), lower-cased. The form a user chose is kept as is:
// core renders JIDs from it, so it must round-trip through Localpart.

type addrKind int

const (
	kindChannel addrKind = iota + 1
	kindNick
	kindServer
)

type address struct {
	kind   addrKind
	name   string // channel or nick; "" for a server
	server string // lower-case host; "" when omitted (the default server)
}

func (a address) String() string {
	switch {
	case a.kind == kindServer:
		return a.server
	case a.server == "":
		return a.name
	}
	return a.name + "%" + a.server
}

// is reports whether s is a's String, without making it (Address is
// called for every message and presence; most come in this form).
func (a address) is(s string) bool {
	switch {
	case a.kind == kindServer:
		return s == a.server
	case a.server == "":
		return s == a.name
	}
	n := len(a.name)
	return len(s) == n+1+len(a.server) && s[:n] == a.name && s[n] == '%' && s[n+1:] == a.server
}

// defaultChanTypes are the channel prefixes assumed for a server whose
// ISUPPORT CHANTYPES is not known yet.
const defaultChanTypes = "#&"

// maxNameLen bounds channel names and nicks in addresses (servers cut
// them shorter; this only keeps hostile input small).
const maxNameLen = 200

var (
	errNoServer = errors.New("no IRC server in the address")
	errBadHost  = errors.New("not a valid IRC server host name")
	errBadName  = errors.New("not a valid IRC channel or nick")
)

// parseAddress reads an (unescaped) address. chanTypes says which prefixes
// make a channel on that server (ISUPPORT CHANTYPES; "" for the default).
func parseAddress(s string, chanTypes func(server string) string) (address, error) {
	if !utf8.ValidString(s) || s == "" || len(s) > 1023 {
		return address{}, errBadName
	}
	local, server, hasServer := s, "", false
	if i := strings.LastIndexByte(s, '%'); i >= 0 {
		local, server, hasServer = s[:i], strings.ToLower(s[i+1:]), true
		if !validHost(server) {
			return address{}, errBadHost
		}
	}
	if local == "" {
		if hasServer {
			return address{}, errBadName // "%server": use "server" for the server itself
		}
		return address{}, errBadName
	}
	if !hasServer && strings.Contains(local, ".") && validHost(strings.ToLower(local)) && !isChanPrefix(local[0], defaultChanTypes+"+!") {
		return address{kind: kindServer, server: strings.ToLower(local)}, nil
	}
	types := defaultChanTypes
	if chanTypes != nil {
		if t := chanTypes(server); t != "" {
			types = t
		}
	}
	if isChanPrefix(local[0], types) {
		if !validChannel(local) {
			return address{}, errBadName
		}
		return address{kind: kindChannel, name: local, server: server}, nil
	}
	if !validNick(local) {
		return address{}, errBadName
	}
	return address{kind: kindNick, name: local, server: server}, nil
}

func isChanPrefix(c byte, types string) bool {
	return strings.IndexByte(types, c) >= 0
}

// validHost accepts DNS names and IPv4 literals: letters, digits, '-',
// '_' and dots, no empty label.
func validHost(h string) bool {
	if h == "" || len(h) > 253 || h[0] == '.' || h[len(h)-1] == '.' || strings.Contains(h, "..") {
		return false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '.', c == '_':
		default:
			return false
		}
	}
	return h[0] != '-'
}

// validChannel refuses what cannot be a channel name on any server (RFC
// 2812: no space, comma, BEL, colon... and nothing an IRC line cannot
// carry) and what XML cannot carry.
func validChannel(c string) bool {
	if len(c) < 2 || len(c) > maxNameLen {
		return false
	}
	for _, r := range c {
		if r == ' ' || r == ',' || r == ':' || r == utf8.RuneError || !printable(r) {
			return false
		}
	}
	return true
}

// validNick is a permissive check of a nick: servers refuse more (432),
// and relay what they accepted (a leading digit, on some); nothing
// accepted here can break a line or an address, or be taken for a
// channel or a server.
func validNick(n string) bool {
	if n == "" || len(n) > maxNameLen {
		return false
	}
	switch n[0] {
	case '+', '#', '&', '~', '$', ':', '!', '@', '%':
		return false
	}
	for _, r := range n {
		switch {
		case r == ' ', r == ',', r == '*', r == '?', r == '!', r == '@', r == '.', r == '%', r == ':', r == '/':
			return false
		case r == utf8.RuneError || !printable(r):
			return false
		}
	}
	return true
}

// printable: not a control character and something XML can carry.
func printable(r rune) bool {
	return !unicode.IsControl(r) && r != 0xFFFE && r != 0xFFFF && !(r >= 0xD800 && r <= 0xDFFF) && r != 0x2028 && r != 0x2029
}

// localpart is Transport.Localpart: XEP-0106 escaping of the address.
func localpart(address string) string { return jidesc.Escape(address) }

// addressError is the stanza error for an address that does not parse.
func addressError(err error) error {
	switch {
	case errors.Is(err, errBadHost):
		return core.WrapError(stanza.JIDMalformed, "not a valid IRC server name: write #channel%irc.example.org or nick%irc.example.org", err)
	case errors.Is(err, errNoServer):
		return core.WrapError(stanza.JIDMalformed, "no IRC server given and this gateway has no default server: write #channel%irc.example.org or nick%irc.example.org", err)
	}
	return core.WrapError(stanza.JIDMalformed, "not a valid IRC channel or nick: write #channel%irc.example.org or nick%irc.example.org", err)
}
