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

// XMPP pings to IRC users (a contact's JID, or a room occupant's),
// relayed as CTCP PING and answered when the user's client answers, as
// biboumi does (core.ContactPinger); to a server's JID, an IRC PING
// answered by its PONG.

// maxPings bounds the pings waiting for an answer on one connection;
// one waits a minute at most (core gives up sooner).
const (
	maxPings = 16
	pingKeep = time.Minute
)

// pingReq is one PingContact waiting for the CTCP PING's answer.
type pingReq struct {
	nick  string // folded by the server's case mapping
	token string
	at    time.Time
	reply chan error
}

type evPing struct {
	contact string
	req     *pingReq
}

// PingContact implements core.ContactPinger.
func (s *session) PingContact(ctx context.Context, contact string) error {
	req := &pingReq{reply: make(chan error, 1)}
	answer, err := await(ctx, s, evPing{contact: contact, req: req}, req.reply, "no answer to the ping (a CTCP PING on IRC; not every IRC client answers one)")
	if err != nil {
		return err
	}
	return answer
}

// ping sends a CTCP PING for a request.
func (s *session) ping(contact string, req *pingReq) {
	a, server, err := s.resolve(contact)
	if err != nil {
		req.reply <- err
		return
	}
	if a.kind == kindChannel {
		req.reply <- nil // the gateway answers for a room
		return
	}
	n := s.nets.get(server)
	if n == nil || n.conn == nil {
		req.reply <- core.NewError(stanza.RecipientUnavailable, "not connected to "+server+" now: join a room there first")
		return
	}
	now := time.Now()
	n.pings = slices.DeleteFunc(n.pings, func(p *pingReq) bool { return now.Sub(p.at) > pingKeep })
	if len(n.pings) >= maxPings {
		req.reply <- core.NewError(stanza.ResourceConstraint, "too many pings waiting for an answer on "+server)
		return
	}
	req.nick, req.at = n.fold(a.name), now
	req.token = strconv.FormatInt(now.UnixMilli(), 10) + "." + newID()[4:12]
	line := ircmsg.MakeMessage(nil, "", "PRIVMSG", a.name, "\x01PING "+req.token+"\x01")
	if a.kind == kindServer {
		// The server itself: PING, answered by PONG (the round trip
		// through the flood limiter, as the user's lines take it).
		req.nick, line = "", ircmsg.MakeMessage(nil, "", "PING", req.token)
	}
	if err := n.send(line); err != nil {
		req.reply <- core.Temporary(err)
		return
	}
	n.pings = append(n.pings, req)
}

// ponged takes a CTCP PING answer (a NOTICE) from nick, or the server's
// PONG (nick "").
func (n *network) ponged(nick, args string) {
	key, token := n.fold(nick), strings.TrimSpace(args)
	for i, p := range n.pings {
		if p.nick == key && p.token == token {
			p.reply <- nil
			n.pings = slices.Delete(n.pings, i, i+1)
			return
		}
	}
}

// failPings answers the pings to nick ("" for all) with err.
func (n *network) failPings(nick string, err error) {
	key := n.fold(nick)
	n.pings = slices.DeleteFunc(n.pings, func(p *pingReq) bool {
		if nick == "" || p.nick == key {
			p.reply <- err
			return true
		}
		return false
	})
	if len(n.pings) == 0 {
		n.pings = nil
	}
}
