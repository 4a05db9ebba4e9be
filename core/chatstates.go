package core

import "slices"

// Chat states (XEP-0085): a client's "is typing" both ways, for networks
// that have it (IRCv3's +typing tag). They are not durable: sent as they
// come, never through the outbox, marked no-store.

const (
	nsChatStates = "http://jabber.org/protocol/chatstates"
	nsHints      = "urn:xmpp:hints"
)

// chatStates are XEP-0085's states.
var chatStates = []string{"active", "composing", "paused", "inactive", "gone"}

// ChatStateSender is implemented by a Session whose network can show
// that the user is typing. Core hands it the chat states of the user's
// bodiless messages.
type ChatStateSender interface {
	// SendChatState passes on the user's state toward m's contact or room
	// (m's Contact, Groupchat and Nick address it as for Send): one of
	// active, composing, paused, inactive, gone. It must not wait: it is
	// called from the stanza reader; a state it cannot pass on now is
	// dropped.
	SendChatState(m Message, state string)
}

// ChatStateSink is implemented by core's Sink: a session tells the user
// that a contact or a room occupant is typing.
type ChatStateSink interface {
	// ChatState shows a state (as for SendChatState) of m's contact, or
	// of m's Nick in m's room (Groupchat), as for Deliver. It does not
	// wait; states of rooms no resource is in are dropped.
	ChatState(m Message, state string)
}

// chatState is the chat state an XMPP message carries, or "".
func chatState(el *Element) string {
	for _, ch := range el.Children {
		if ch.Name.Space == nsChatStates && slices.Contains(chatStates, ch.Name.Local) {
			return ch.Name.Local
		}
	}
	return ""
}

// relayChatState hands a bodiless message's chat state to the user's
// session, addressed as its message would be.
func (u *user) relayChatState(m Message, state string) {
	ls := u.live.Load()
	if ls == nil {
		return
	}
	if cs, ok := ls.s.(ChatStateSender); ok {
		cs.SendChatState(m, state)
	}
}

// ChatState implements ChatStateSink.
func (s *sink) ChatState(m Message, state string) {
	if !slices.Contains(chatStates, state) || m.Contact == "" {
		return
	}
	u := s.u
	msg := func(from, to, typ string) *Element {
		el := NewElement("", "message", "from", from, "to", to, "type", typ)
		el.Add(NewElement(nsChatStates, state))
		return el.Add(NewElement(nsHints, "no-store"))
	}
	if !m.Groupchat {
		from := u.c.local(u.label, m.Contact) + "@" + u.c.jid.Domainpart()
		_ = u.c.send(msg(from, u.bare, "chat"))
		return
	}
	if m.Nick == "" {
		return
	}
	rv, ok := u.roomView(m.Contact)
	if !ok || rv.joining {
		return // not in the room, or a resource is still getting its state
	}
	res := rv.res
	from := u.roomJID(m.Contact, m.Nick)
	for _, r := range res {
		_ = u.c.send(msg(from, u.bare+"/"+r, "groupchat"))
	}
}
