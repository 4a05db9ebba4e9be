package irc

import (
	"github.com/ergochat/irc-go/ircmsg"

	"transportd/core"
)

// Typing notifications: XMPP chat states (XEP-0085) as IRCv3's +typing
// client tag on TAGMSG (the message-tags capability), both ways. The
// user's composing is +typing=active, paused is paused, and the other
// states (a cleared input, a closed chat) done; an IRC user's active
// shows as composing.

// maxQueuedStates: a chat state is dropped rather than queued behind
// this many requests of core's (the session is busy; typing is stale
// by the time it would go).
const maxQueuedStates = 32

type evTyping struct {
	m   core.Message
	tag string // +typing's value
}

// SendChatState implements core.ChatStateSender.
func (s *session) SendChatState(m core.Message, state string) {
	tag := "done"
	switch state {
	case "composing":
		tag = "active"
	case "paused":
		tag = "paused"
	}
	if s.ctlLen() >= maxQueuedStates {
		return
	}
	_ = s.postCtl(evTyping{m: m, tag: tag})
}

// typing sends a TAGMSG with the user's +typing, where the server takes
// client tags and the user is in the channel or the nick is valid.
func (s *session) typing(ev evTyping) {
	a, server, err := s.resolve(ev.m.Contact)
	if err != nil {
		return
	}
	n := s.nets.get(server)
	if n == nil || n.conn == nil || !n.caps.has("message-tags") {
		return
	}
	target := ""
	switch {
	case ev.m.Groupchat && a.kind == kindChannel:
		if ch := n.channels.get(n.fold(a.name)); ch != nil && ch.joined {
			target = ch.name
		}
	case ev.m.Nick != "" && a.kind == kindChannel:
		target = ev.m.Nick
	case a.kind == kindNick:
		target = a.name
	}
	if target == "" || !n.isChannel(target) && !validNick(target) {
		return
	}
	_ = n.send(ircmsg.MakeMessage(map[string]string{"+typing": ev.tag}, "", "TAGMSG", target))
}

// handleTagmsg shows an IRC user's +typing (or the older +draft/typing)
// in the room or the private chat it is sent to.
func (n *network) handleTagmsg(msg inLine) {
	ok, v := msg.GetTag("+typing")
	if !ok {
		ok, v = msg.GetTag("+draft/typing")
	}
	src := msg.Nick()
	if !ok || len(msg.Params) < 1 || src == "" || n.isMe(src) || !validNick(src) {
		return
	}
	state := ""
	switch v {
	case "active":
		state = "composing"
	case "paused":
		state = "paused"
	case "done":
		state = "active"
	default:
		return
	}
	cs, ok := n.s.sink.(core.ChatStateSink)
	if !ok {
		return
	}
	target := msg.Params[0]
	if n.isChannel(target) {
		if ch := n.channels.get(n.fold(target)); ch != nil && ch.reported {
			cs.ChatState(core.Message{Contact: ch.room, Groupchat: true, Nick: src}, state)
		}
		return
	}
	if n.isMe(target) {
		cs.ChatState(core.Message{Contact: n.nickAddress(src), Nick: src}, state)
	}
}
