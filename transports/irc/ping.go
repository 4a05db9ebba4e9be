package irc

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ergochat/irc-go/ircmsg"
	"mellium.im/xmpp/stanza"

	"transportd/core"
)

// XMPP pings and software version requests to IRC users (a contact's
// JID, or a room occupant's), relayed as CTCP PING and CTCP VERSION and
// answered when the user's client answers, as biboumi does
// (core.ContactPinger, core.ContactVersioner); to a server's JID, an IRC
// PING answered by its PONG, and VERSION by 351 RPL_VERSION.

// maxCTCP bounds the requests waiting for an answer on one connection;
// one waits a minute at most (core gives up sooner).
const (
	maxCTCP  = 16
	ctcpKeep = time.Minute
)

// ctcpReq is one request waiting for its answer.
type ctcpReq struct {
	cmd   string // PING or VERSION
	nick  string // folded by the server's case mapping; "" for the server
	token string // PING's
	at    time.Time
	reply chan ctcpResult
}

// ctcpResult is the answer's text (VERSION's), or why there is none.
type ctcpResult struct {
	text string
	err  error
}

type evCTCP struct {
	contact string
	req     *ctcpReq
}

// PingContact implements core.ContactPinger.
func (s *session) PingContact(ctx context.Context, contact string) error {
	req := &ctcpReq{cmd: "PING", reply: make(chan ctcpResult, 1)}
	r, err := await(ctx, s, evCTCP{contact: contact, req: req}, req.reply, "no answer to the ping (a CTCP PING on IRC; not every IRC client answers one)")
	if err != nil {
		return err
	}
	return r.err
}

// ContactVersion implements core.ContactVersioner.
func (s *session) ContactVersion(ctx context.Context, contact string) (core.SoftwareVersion, error) {
	req := &ctcpReq{cmd: "VERSION", reply: make(chan ctcpResult, 1)}
	r, err := await(ctx, s, evCTCP{contact: contact, req: req}, req.reply, "no answer to the version request (a CTCP VERSION on IRC; not every IRC client answers one)")
	if err == nil {
		err = r.err
	}
	if err != nil {
		return core.SoftwareVersion{}, err
	}
	return splitVersion(r.text), nil
}

// splitVersion reads a CTCP VERSION answer, free text such as "irssi
// v1.4.5 - running on Linux x86_64": its first word as the name, the rest
// as the version, so that a client showing "name version" shows it all.
func splitVersion(text string) core.SoftwareVersion {
	text = strings.TrimSpace(plainText(text))
	name, ver, _ := strings.Cut(text, " ")
	return core.SoftwareVersion{Name: name, Version: strings.TrimSpace(ver)}
}

// ctcp sends the CTCP request (or, to a server, PING or VERSION).
func (s *session) ctcp(contact string, req *ctcpReq) {
	a, server, err := s.resolve(contact)
	if err != nil {
		req.reply <- ctcpResult{err: err}
		return
	}
	if a.kind == kindChannel {
		req.reply <- ctcpResult{err: core.NewError(stanza.ServiceUnavailable, "a channel has no client to answer")}
		return
	}
	n := s.nets.get(server)
	if n == nil || n.conn == nil {
		req.reply <- ctcpResult{err: core.NewError(stanza.RecipientUnavailable, "not connected to "+server+" now: join a room there first")}
		return
	}
	now := time.Now()
	r := n.rare()
	r.ctcpWait = slices.DeleteFunc(r.ctcpWait, func(p *ctcpReq) bool { return now.Sub(p.at) > ctcpKeep })
	if len(r.ctcpWait) >= maxCTCP {
		req.reply <- ctcpResult{err: core.NewError(stanza.ResourceConstraint, "too many requests waiting for an answer on "+server)}
		return
	}
	req.nick, req.at = n.fold(a.name), now
	line := ircmsg.MakeMessage(nil, "", "PRIVMSG", a.name, "\x01VERSION\x01")
	if req.cmd == "PING" {
		req.token = strconv.FormatInt(now.UnixMilli(), 10) + "." + newID()[4:12]
		line = ircmsg.MakeMessage(nil, "", "PRIVMSG", a.name, "\x01PING "+req.token+"\x01")
	}
	if a.kind == kindServer {
		// The server itself: PING answered by PONG (the round trip
		// through the flood limiter, as the user's lines take it), or
		// VERSION by 351.
		req.nick, line = "", ircmsg.MakeMessage(nil, "", "VERSION")
		if req.cmd == "PING" {
			line = ircmsg.MakeMessage(nil, "", "PING", req.token)
		}
	}
	if err := n.send(line); err != nil {
		req.reply <- ctcpResult{err: core.Temporary(err)}
		return
	}
	r.ctcpWait = append(r.ctcpWait, req)
}

// ponged takes a CTCP PING answer (a NOTICE) from nick, or the server's
// PONG (nick "").
func (n *network) ponged(nick, args string) {
	token := strings.TrimSpace(args)
	n.answerCTCPReq(nick, func(r *ctcpReq) bool { return r.cmd == "PING" && r.token == token }, "")
}

// versioned takes a CTCP VERSION answer from nick, or the server's 351
// (nick "").
func (n *network) versioned(nick, text string) {
	n.answerCTCPReq(nick, func(r *ctcpReq) bool { return r.cmd == "VERSION" }, text)
}

// answerCTCPReq answers the oldest request to nick that match takes.
func (n *network) answerCTCPReq(nick string, match func(*ctcpReq) bool, text string) {
	if n.netRare == nil {
		return
	}
	key := n.fold(nick)
	for i, r := range n.ctcpWait {
		if r.nick == key && match(r) {
			r.reply <- ctcpResult{text: text}
			n.ctcpWait = slices.Delete(n.ctcpWait, i, i+1)
			if len(n.ctcpWait) == 0 {
				n.ctcpWait = nil
			}
			return
		}
	}
}

// serverVersion reads a 351 line (me version server :comments) as the
// text of a VERSION answer: "InspIRCd-4.0.0. irc.example :comments" as
// "InspIRCd 4.0.0".
func serverVersion(p []string) string {
	if len(p) < 2 {
		return ""
	}
	v := strings.TrimSuffix(p[1], ".")
	if name, ver, ok := strings.Cut(v, "-"); ok && name != "" {
		return name + " " + ver
	}
	return v
}

// failCTCP answers the requests to nick ("" for all) with err.
func (n *network) failCTCP(nick string, err error) {
	if n.netRare == nil {
		return
	}
	key := n.fold(nick)
	n.ctcpWait = slices.DeleteFunc(n.ctcpWait, func(r *ctcpReq) bool {
		if nick == "" || r.nick == key {
			r.reply <- ctcpResult{err: err}
			return true
		}
		return false
	})
	if len(n.ctcpWait) == 0 {
		n.ctcpWait = nil
	}
}
