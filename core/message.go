package core

import (
	"context"
	"strings"
	"time"
	"unicode/utf8"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// maxBody caps a message body accepted from XMPP. Larger bodies are refused
// with an error rather than truncated.
const maxBody = 64 << 10

// handleMessage takes a user's message for a legacy contact and commits it
// to the outbox before anything else happens: from then on it survives a
// crash or an outage of either side.
func (c *component) handleMessage(el *Element) {
	typ := el.Get("type")
	from, to, ok := c.addresses(el)
	if !ok {
		return
	}
	if from.Resourcepart() == "" && strings.HasPrefix(el.Get("id"), carbonPrefix) {
		// Our own sent carbon, routed back by the server: already shown.
		return
	}
	var err error
	bare := from.Bare().String()
	local := to.Localpart() // each call makes a string
	label, rest := splitLabel(local)
	u := c.lookupLabel(bare, label)
	// The address, parsed once for all that follows.
	var (
		addr, roomAddr string
		isRoom         bool
		addrErr        error
	)
	if local != "" {
		addr, isRoom, addrErr = c.addressKind(rest)
		if addrErr == nil && isRoom {
			roomAddr = addr
		}
	}
	if u == nil && label != "" {
		c.replyError(el, NewError(stanza.ItemNotFound, "you have no account named "+quote(label)+" on "+c.jid.String()))
		return
	}
	if u == nil && c.info.RegistrationOptional && local != "" {
		u, err = c.autoRegister(bare)
		if err != nil {
			c.replyError(el, err)
			return
		}
	}
	if u == nil {
		c.replyError(el, NewError(stanza.RegistrationRequired, "register with "+c.jid.String()+" first"))
		return
	}
	if u.disabled.Load() {
		c.replyError(el, errDisabled)
		return
	}
	body, hasBody := "", el.Child("", "body") != nil
	if hasBody {
		body = el.ChildText("", "body")
	}
	if local == "" {
		u = c.lookupUser(bare)
		if hasBody {
			c.replyError(el, NewError(stanza.ServiceUnavailable, "this is the "+c.info.DisplayName+" gateway: write to contacts at "+c.jid.String()+", and use its commands for settings"))
		}
		return
	}
	if isRoom && typ == "groupchat" {
		if !contains(u.roomResources(roomAddr), from.Resourcepart()) {
			c.replyError(el, NewError(stanza.NotAcceptable, "join the room before writing to it"))
			return
		}
		if subj := el.Child("", "subject"); subj != nil && !hasBody {
			u.post(evRoomSubjectSet{room: roomAddr, subject: subj.Text})
			return
		}
	}
	if room, contact, reason, ok := c.invitation(el, to, roomAddr, isRoom); ok {
		if contact == "" {
			c.replyError(el, NewError(stanza.NotAcceptable, "only users of this network can be invited from here: give others the room's address"))
			return
		}
		u.post(evRoomInvite{resource: from.Resourcepart(), room: room, contact: contact, reason: reason, el: el})
		return
	}
	if !hasBody || strings.TrimSpace(body) == "" {
		// Chat states, markers and receipts without a body. A chat state
		// goes to networks that show typing; a displayed marker
		// (XEP-0333) or a receipt (XEP-0184) marks the message read where
		// the network has read state.
		if st := chatState(el); st != "" {
			m := Message{Contact: roomAddr, UserResource: from.Resourcepart()}
			switch {
			case isRoom && typ == "groupchat":
				m.Groupchat = true
			case isRoom:
				m.Nick = to.Resourcepart()
			default:
				if addrErr == nil {
					m.Contact = addr
				}
			}
			if m.Contact != "" {
				u.relayChatState(m, st)
			}
		}
		if !isRoom {
			for _, m := range []struct{ ns, name string }{{nsMarkers, "displayed"}, {nsReceipts, "received"}} {
				if d := el.Child(m.ns, m.name); d != nil && d.Get("id") != "" {
					c.markRead(u, local, d.Get("id"))
					break
				}
			}
		}
		return
	}
	if len(body) > maxBody {
		c.replyError(el, NewError(stanza.NotAcceptable, "message too long: the limit is 64 KiB"))
		return
	}
	if !utf8.ValidString(body) {
		c.replyError(el, NewError(stanza.BadRequest, "message body is not valid UTF-8"))
		return
	}
	if addrErr != nil {
		c.replyError(el, addrErr)
		return
	}
	m := Message{
		Contact:      addr,
		Body:         body,
		Subject:      el.ChildText("", "subject"),
		Thread:       el.ChildText("", "thread"),
		XMPPID:       el.Get("id"),
		Receipt:      el.Child(nsReceipts, "request") != nil,
		UserResource: from.Resourcepart(),
	}
	if isRoom {
		m.Contact = roomAddr
		if typ == "groupchat" {
			m.Groupchat = true
		} else {
			// A private message to an occupant.
			m.Nick = to.Resourcepart()
		}
	}
	if u.relay != nil {
		err = c.relayToLegacy(u, &m)
	} else {
		ctx, cancel := c.g.workCtx(10 * time.Second)
		err = c.g.outbox.enqueueToLegacy(ctx, u, m)
		cancel()
	}
	if err != nil {
		c.log.Error("outbox commit failed", "error", err)
		c.replyError(el, Temporary(err))
		return
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// markRead hands a displayed marker to the session, if its network has
// read state.
func (c *component) markRead(u *user, local, xmppID string) {
	l := u.live.Load()
	if l == nil {
		return
	}
	mk, ok := l.s.(Marker)
	if !ok {
		return
	}
	_, addr, err := c.address(local)
	if err != nil {
		return
	}
	c.g.goWork("marker", 30*time.Second, func(ctx context.Context) {
		legacyID, err := c.g.store.LegacyID(ctx, u.acctID(), xmppID)
		if err != nil {
			return // not a message we delivered, or too old
		}
		if err := mk.MarkRead(ctx, addr, legacyID); err != nil {
			u.logger().Info("marking read failed", "error", err)
		}
	})
}

// invitation reads an invitation to one of the gateway's rooms: mediated
// (XEP-0045 §7.8.2: to the room, naming the invitee) or direct (XEP-0249:
// to the invitee, naming the room). contact is the invitee's legacy
// address, "" when the invitee is not a contact at this gateway.
func (c *component) invitation(el *Element, to jid.JID, roomAddr string, isRoom bool) (room, contact, reason string, ok bool) {
	var invitee string
	switch {
	case isRoom && to.Resourcepart() == "":
		inv := el.Child(nsMUCUser, "x").Child("", "invite")
		if inv == nil {
			return "", "", "", false
		}
		room, invitee, reason = roomAddr, inv.Get("to"), inv.ChildText("", "reason")
	case !isRoom:
		x := el.Child(nsConference, "x")
		if x == nil {
			return "", "", "", false
		}
		rj, err := jid.Parse(x.Get("jid"))
		if err != nil || !rj.Domain().Equal(c.jid.Domain()) {
			return "", "", "", false // another service's room: a message like any other
		}
		r, isRoom := c.roomAddress(rj)
		if !isRoom {
			return "", "", "", false
		}
		room, invitee, reason = r, to.String(), x.Get("reason")
	default:
		return "", "", "", false
	}
	ij, err := jid.Parse(invitee)
	if err != nil || !ij.Domain().Equal(c.jid.Domain()) || ij.Localpart() == "" {
		return room, "", reason, true
	}
	if _, addr, err := c.address(ij.Localpart()); err == nil {
		if _, isRoom := c.roomAddress(ij.Bare()); !isRoom {
			contact = addr
		}
	}
	return room, contact, reason, true
}
