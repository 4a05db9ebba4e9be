package core

import (
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
	"time"
)

// handlePresence follows XEP-0100's presence flow for the gateway JID and
// approves subscriptions to legacy contacts.
func (c *component) handlePresence(el *Element) {
	typ := el.Get("type")
	from, to, ok := c.addresses(el)
	if !ok {
		return
	}
	bare := from.Bare().String()
	if to.Localpart() != "" {
		label, _ := splitLabel(to.Localpart())
		u := c.lookupLabel(bare, label)
		if addr, isRoom := c.roomAddress(to); isRoom {
			c.roomPresence(el, u, from, to, addr, typ)
			return
		}
		c.contactPresence(u, from, to, typ)
		return
	}
	// To the gateway itself: it concerns every account of the user.
	users := c.usersOf(bare)
	var u *user
	if len(users) > 0 {
		u = users[0]
	}
	switch typ {
	case "subscribe":
		if u == nil {
			_ = c.send(c.stanza("presence", "", "", bare, "unsubscribed"))
			return
		}
		_ = c.send(c.stanza("presence", "", "", bare, "subscribed"))
		u.post(evProbe{})
	case "probe":
		if u == nil {
			_ = c.send(c.stanza("presence", "", "", bare, "unsubscribed"))
			return
		}
		u.post(evProbe{})
	case "subscribed", "unsubscribe", "unsubscribed":
		// The user's client answering our subscription request, or removing
		// the gateway from the roster: registration is kept; <remove/>
		// (or the Unregister command) is how an account is deleted.
		if typ == "unsubscribe" {
			_ = c.send(c.stanza("presence", "", "", bare, "unsubscribed"))
		}
	case "", "unavailable":
		for _, u := range users {
			u.post(evPresence{resource: from.Resourcepart(), available: typ == ""})
		}
	}
}

// contactPresence handles presence addressed to a legacy contact's JID.
func (c *component) contactPresence(u *user, from, to jid.JID, typ string) {
	if u == nil {
		return
	}
	_, addr, err := c.address(to.Localpart())
	if err != nil {
		return
	}
	switch typ {
	case "subscribe":
		_ = c.send(c.stanza("presence", to.Localpart(), "", from.Bare().String(), "subscribed"))
		c.subscribed(u, addr)
	case "unsubscribe":
		_ = c.send(c.stanza("presence", to.Localpart(), "", from.Bare().String(), "unsubscribed"))
		c.unsubscribed(u, addr)
	case "probe":
		u.post(evContactProbe{addr: addr})
	}
}

// roomAddress reports whether a JID at the gateway is a group chat, and its
// legacy address.
func (c *component) roomAddress(to jid.JID) (string, bool) {
	return c.localRoomAddress(to.Localpart())
}

// localRoomAddress is roomAddress of a JID's localpart.
func (c *component) localRoomAddress(local string) (string, bool) {
	if local == "" {
		return "", false
	}
	_, rest := splitLabel(local)
	addr, room, err := c.addressKind(rest)
	if err != nil || !room {
		return "", false
	}
	return addr, true
}

// addressKind is the transport's Address of a localpart without its
// label, and whether that address is a room (one parse when the
// transport is a RoomAddresser).
func (c *component) addressKind(rest string) (addr string, room bool, err error) {
	if ra, ok := c.t.(RoomAddresser); ok {
		return ra.RoomAddress(rest)
	}
	if addr, err = c.t.Address(rest); err != nil {
		return "", false, err
	}
	gc, ok := c.t.(GroupChats)
	return addr, ok && gc.IsRoom(addr), nil
}

// roomPresence handles a user's presence to a room occupant JID: joining,
// changing nick, leaving.
func (c *component) roomPresence(el *Element, u *user, from, to jid.JID, addr, typ string) {
	switch typ {
	case "", "unavailable":
	default:
		return // subscriptions to rooms mean nothing
	}
	if to.Resourcepart() == "" {
		if typ == "" {
			c.replyError(el, NewError(stanza.JIDMalformed, "join a room with a nick: room@service/nick"))
		}
		return
	}
	if u == nil && typ == "" {
		var err error
		u, err = c.autoRegister(from.Bare().String())
		if err != nil {
			c.replyError(el, err)
			return
		}
	}
	if u == nil {
		return
	}
	if u.disabled.Load() && typ == "" {
		c.replyError(el, errDisabled)
		return
	}
	if typ == "unavailable" {
		u.post(evRoomLeave{resource: from.Resourcepart(), room: addr})
		return
	}
	password := ""
	var hist HistoryRequest
	if x := el.Child(nsMUC, "x"); x != nil {
		password = x.ChildText("", "password")
		hist = parseHistory(x.Child("", "history"), time.Now())
	}
	u.post(evRoomJoin{resource: from.Resourcepart(), room: addr, nick: to.Resourcepart(), password: password, hist: hist})
}
