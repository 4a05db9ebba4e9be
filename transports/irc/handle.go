package irc

import (
	"cmp"
	"maps"
	"sort"
	"strings"
	"time"

	"github.com/ergochat/irc-go/ircmsg"
	"golang.org/x/time/rate"
	"mellium.im/xmpp/stanza"

	"transportd/core"
)

// handle turns one line from the server into what the user sees. label is
// the labeled-response label of the batch the line came in, if any.
func (n *network) handle(msg inLine, label string) {
	if _, l := msg.GetTag("label"); l != "" {
		label = l
	}
	if ok, id := msg.GetTag("batch"); ok && msg.Command != "BATCH" {
		if b := n.batches[id]; b != nil {
			if len(b.lines) < maxBatchLines {
				b.lines = append(b.lines, msg)
			}
			return
		}
	}
	p := msg.Params
	src := msg.Nick()
	switch msg.Command {
	case "BATCH":
		n.handleBatch(msg)
	case "PRIVMSG", "NOTICE":
		if len(p) >= 2 {
			n.handleText(msg, label, false)
		}
	case "JOIN":
		if len(p) >= 1 {
			n.handleJoin(msg)
		}
	case "PART":
		if len(p) >= 1 {
			n.handlePart(src, p[0], argOr(p, 1))
		}
	case "KICK":
		if len(p) >= 2 {
			n.handleKick(src, p[0], p[1], argOr(p, 2))
		}
	case "QUIT":
		n.handleQuit(src, argOr(p, 0))
	case "NICK":
		if len(p) >= 1 {
			n.handleNick(src, p[0])
		}
	case "TOPIC":
		if len(p) >= 2 {
			if ch := n.channels.get(n.fold(p[0])); ch != nil {
				ch.topic, ch.topicBy = plainText(p[1]), plainText(src)
				if ch.reported {
					n.s.rooms.RoomSubject(ch.room, ch.topic, ch.topicBy)
				}
			}
		}
	case "TAGMSG":
		n.handleTagmsg(msg)
	case "MODE":
		if len(p) >= 2 && n.isChannel(p[0]) {
			n.handleMode(src, p[0], p[1], p[2:])
		}
	case "AWAY":
		n.setAway(src, len(p) > 0, argOr(p, 0))
		n.monitorAway(src, len(p) > 0, argOr(p, 0))
	case "ACCOUNT":
		if len(p) >= 1 {
			n.eachMember(src, func(_ *channel, m *member) bool { m.account = intern(p[0]); return false })
		}
	case "CHGHOST":
		if len(p) >= 2 {
			if n.isMe(src) {
				n.me.user, n.me.host = p[0], p[1]
			}
			n.eachMember(src, func(_ *channel, m *member) bool { m.user, m.host = intern(p[0]), intern(p[1]); return false })
		}
	case "INVITE":
		if len(p) >= 2 && n.isMe(p[0]) && validNick(src) {
			m := &core.Message{Contact: n.nickAddress(src), Nick: plainText(src), LegacyID: newID(),
				Body: "[invite] " + plainText(src) + " invites you to " + plainText(p[1]) + " (join " + plainText(p[1]) + "%" + n.server + " here)"}
			if validChannel(p[1]) && n.isChannel(p[1]) {
				m.Invite = p[1] + "%" + n.server // a XEP-0249 invitation the client offers to accept
			}
			n.s.deliver(m)
		}
	case "PONG": // server PONG token: an answer to a ping to its JID, or a fence
		if len(p) > 0 {
			if t, ok := strings.CutPrefix(last(p), fenceToken); ok {
				n.fenced(t)
				break
			}
			n.ponged("", last(p))
		}
	case "ACK": // labeled-response: a labelled line with no reply (no echo)
		if label != "" {
			n.matchPending(label, "")
		}
	case "CAP":
		n.handleCap(p)
	case "ERROR":
		n.rare().errorMsg = plainText(argOr(p, 0))
	case "FAIL":
		if pl := n.matchPending(label, ""); pl != nil {
			n.fail(pl, plainText(last(p)))
		}
	case "322": // RPL_LIST: me channel visible :topic
		n.listed(msg)
		return
	case "323": // RPL_LISTEND
		n.endList(nil)
		return
	case "005":
		// A 005 after registration: the map may be shared (shareISupport).
		m := maps.Clone(n.feat.m)
		if m == nil {
			m = map[string]string{}
		}
		parseISupport(p, m)
		n.feat = shareISupport(n.server, m)
		n.applyISupport()
	case "332": // RPL_TOPIC: me channel :topic
		if len(p) >= 3 {
			if ch := n.channels.get(n.fold(p[1])); ch != nil {
				ch.topic = plainText(p[2])
			}
		}
	case "333": // RPL_TOPICWHOTIME: me channel who time
		if len(p) >= 3 {
			if ch := n.channels.get(n.fold(p[1])); ch != nil {
				who, _ := ircmsg.ParseNUH(p[2])
				ch.topicBy = plainText(who.Name)
			}
		}
	case "331": // RPL_NOTOPIC
		if len(p) >= 2 {
			if ch := n.channels.get(n.fold(p[1])); ch != nil {
				ch.topic = ""
			}
		}
	case "353": // RPL_NAMREPLY: me symbol channel :names
		if len(p) >= 4 {
			n.handleNames(p[2], p[3])
		}
	case "366": // RPL_ENDOFNAMES: me channel
		if len(p) >= 2 {
			n.endOfNames(p[1])
		}
	case "352": // RPL_WHOREPLY: me channel user host server nick flags :hops realname
		if len(p) >= 7 {
			n.handleWho(p[1], p[2], p[3], p[5], p[6])
		}
	case "302": // RPL_USERHOST: me :nick=+user@host ...
		if len(p) >= 2 {
			n.userhostReply(p[len(p)-1])
		}
	case "730", "731": // RPL_MONONLINE, RPL_MONOFFLINE: me :targets
		if len(p) >= 2 {
			n.monitorReply(msg.Command == "730", p[len(p)-1])
		}
	case "301": // RPL_AWAY: me nick :message
		if len(p) >= 3 {
			n.setAway(p[1], true, p[2])
		}
	case "396": // RPL_VISIBLEHOST: me host :text
		if len(p) >= 2 {
			n.me.host = p[1]
		}
	case "433", "432", "436", "437": // nick change refused
		if len(p) >= 2 {
			room := ""
			if n.netRare != nil {
				room = n.nickRoom
			}
			n.wantNick = n.me.nick
			if ch := n.channelOfRoom(room); ch != nil && ch.reported {
				text := "cannot change your nick to " + plainText(p[1]) + ": " + plainText(last(p))
				cond := stanza.Conflict
				if msg.Command == "432" {
					cond = stanza.NotAcceptable
				}
				// A presence error to the resources where core shows room
				// errors of joined rooms; a line in the room where not.
				n.s.roomError(room, core.NewError(cond, text))
				n.s.roomNotice(room, "C"+text[1:])
			}
		}
	case "401", "404", "406": // no such nick, cannot send to channel, was no such nick
		if len(p) >= 2 && msg.Command != "404" {
			n.failCTCP(p[1], core.NewError(stanza.ItemNotFound, "no one is named "+plainText(p[1])+" on "+n.server+" now"))
		}
		if len(p) >= 2 {
			if pl := n.matchPending(label, p[1]); pl != nil {
				n.fail(pl, plainText(last(p)))
			}
		}
	case "351": // RPL_VERSION: me version server :comments
		n.versioned("", serverVersion(p))
	case "324": // RPL_CHANNELMODEIS: me channel modes [params...]
		n.gotModes(p)
	case "367": // RPL_BANLIST: me channel mask [who [time]]
		n.banned(p)
	case "368": // RPL_ENDOFBANLIST: me channel
		if len(p) >= 2 {
			n.endBans(p[1], nil)
		}
	case "403", "405", "471", "473", "474", "475", "476", "477", "479", "489", "520":
		if len(p) >= 2 {
			n.endBans(p[1], core.NewError(stanza.NotAcceptable, plainText(last(p))))
			n.endModes(p[1], core.RoomConfig{}, core.NewError(stanza.NotAcceptable, plainText(last(p))))
			n.joinFailed(msg.Command, p[1], plainText(last(p)))
		}
	default:
		if isNumeric(msg.Command) && msg.Command[0] >= '4' && msg.Command[0] <= '5' && len(p) >= 2 {
			// Other errors: shown in the room they are about, if any.
			if ch := n.channels.get(n.fold(p[1])); ch != nil && ch.reported {
				n.s.roomNotice(ch.room, "[error] "+plainText(last(p)))
			}
			if msg.Command == "482" || msg.Command == "442" {
				// A server that shows the ban list to channel operators
				// only, or to those in the channel.
				n.endBans(p[1], core.NewError(stanza.Forbidden, plainText(last(p))))
			}
			if msg.Command == "442" {
				// Asking a channel's modes needs no operator: a 482 is
				// about a change, and must not end a query waiting.
				n.endModes(p[1], core.RoomConfig{}, core.NewError(stanza.Forbidden, plainText(last(p))))
			}
		}
	}
}

func argOr(p []string, i int) string {
	if i < len(p) {
		return p[i]
	}
	return ""
}

// nickAddress is a user's contact address: nick%server, lower-cased as
// JIDs are.
func (n *network) nickAddress(nick string) string {
	return strings.ToLower(plainText(nick)) + "%" + n.server
}

func (n *network) channelOfRoom(room string) *channel {
	if room == "" {
		return nil
	}
	for _, ch := range n.channels {
		if ch.room == room {
			return ch
		}
	}
	return nil
}

// eachMember calls f for every channel member with this nick; f returns
// true when the member changed in a way rooms must see.
func (n *network) eachMember(nick string, f func(*channel, *member) bool) {
	key := n.fold(nick)
	for _, ch := range n.sortedChannels() {
		if m := ch.members.get(key); m != nil && f(ch, m) && ch.reported {
			n.s.rooms.RoomPresence(ch.room, n.occupant(m))
		}
	}
}

func (n *network) setAway(nick string, away bool, text string) {
	text = strings.Clone(text)
	n.eachMember(nick, func(_ *channel, m *member) bool {
		changed := m.away != away || (away && m.awayMsg != text)
		m.away, m.awayMsg = away, text
		if !away {
			m.awayMsg = ""
		}
		return changed
	})
}

// Messages.

// handleText delivers a PRIVMSG or NOTICE; history says it comes from a
// chathistory batch.
func (n *network) handleText(msg inLine, label string, history bool) {
	target, text := msg.Params[0], msg.Params[1]
	src := msg.Nick()
	notice := msg.Command == "NOTICE"
	_, msgid := msg.GetTag("msgid")
	msgid = safeMsgID(msgid)
	when := serverTime(msg)
	fromMe := n.isMe(src)
	if history && fromMe && msgid != "" && n.wasEchoed(msgid) {
		return // reflected already
	}

	body := ""
	if strings.HasPrefix(text, "\x01") {
		cmd, args := parseCTCP(text)
		switch {
		case cmd == "ACTION":
			body = "/me " + styledText(args)
		case notice && cmd == "PING" && !history:
			n.ponged(src, args)
			return
		case notice && cmd == "VERSION" && !history:
			n.versioned(src, args)
			return
		case notice || fromMe || history:
			return // CTCP replies and our own requests are not shown
		default:
			n.answerCTCP(src, cmd, args)
			return
		}
	} else {
		body = styledText(text)
		if notice {
			body = "[notice] " + body
		}
	}
	if strings.TrimSpace(body) == "" {
		return
	}
	if !history && !when.IsZero() && time.Since(when) < 30*time.Second {
		when = time.Time{} // live: no delay stamp
	}
	// STATUSMSG: "@#chan" is to the channel's ops.
	chanTarget := strings.TrimLeft(target, n.feat.m["STATUSMSG"])
	if chanTarget == "" {
		chanTarget = target
	}
	if n.isChannel(chanTarget) {
		ch := n.channels.get(n.fold(chanTarget))
		if ch == nil {
			return
		}
		if fromMe && !history {
			if pl := n.matchPending(label, chanTarget); pl != nil {
				pl.ps.remaining--
				if pl.ps.remaining <= 0 && !pl.ps.failed && pl.ps.room != "" {
					n.reflect(pl.ps, msgid, time.Time{})
				}
				return
			}
		}
		id := msgid
		if id == "" {
			id = newID()
		}
		m := &core.Message{Contact: ch.room, Groupchat: true, Nick: plainText(src), Body: body, LegacyID: id, Time: when, Replayable: n.replayable(msgid)}
		if !ch.reported && !history && n.s.archived() {
			// Core archives the room: it gives these with the room's
			// history when the user joins. Under the address the user
			// last joined it by, or the one a LIST or an invitation gives.
			if m.Contact == "" {
				m.Contact = ch.name + "%" + n.server
			}
			n.s.deliver(m)
			return
		}
		if !ch.reported {
			if n.s.opts.historyLines > 0 && !history {
				if m.Time.IsZero() {
					m.Time = time.Now()
				}
				ch.backlog = append(ch.backlog, m)
				if len(ch.backlog) > n.s.opts.historyLines {
					ch.backlog = ch.backlog[len(ch.backlog)-n.s.opts.historyLines:]
				}
			}
			return
		}
		n.s.deliver(m)
		return
	}
	if fromMe {
		// The echo of a private message (or a message to ourselves).
		if !history {
			n.matchPending(label, target)
		}
		return
	}
	id := msgid
	if id == "" {
		id = newID()
	}
	if src == "" || (strings.Contains(src, ".") && !strings.Contains(msg.Source, "!")) {
		// From the server itself.
		n.s.deliver(&core.Message{Contact: n.server, Body: body, LegacyID: id, Time: when, Replayable: n.replayable(msgid)})
		return
	}
	if !validNick(src) {
		// A nick no address can carry: shown as from the server.
		n.s.deliver(&core.Message{Contact: n.server, Body: "<" + plainText(src) + "> " + body, LegacyID: id, Time: when, Replayable: n.replayable(msgid)})
		return
	}
	n.lastPrivate = monoNow()
	n.s.deliver(&core.Message{Contact: n.nickAddress(src), Nick: plainText(src), Body: body, LegacyID: id, Time: when, Replayable: n.replayable(msgid)})
}

// serverTime reads the server-time tag.
func serverTime(msg inLine) time.Time {
	if ok, v := msg.GetTag("time"); ok {
		if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
			return t
		}
	}
	return time.Time{}
}

// parseCTCP splits "\x01CMD args\x01".
func parseCTCP(text string) (cmd, args string) {
	text = strings.TrimPrefix(text, "\x01")
	text = strings.TrimSuffix(text, "\x01")
	cmd, args, _ = strings.Cut(text, " ")
	return strings.ToUpper(cmd), args
}

func (n *network) answerCTCP(src, cmd, args string) {
	if n.conn == nil || src == "" || !validNick(src) || !n.ctcpAllowed() {
		return
	}
	var reply string
	switch cmd {
	case "VERSION":
		reply = "transportd " + core.Version + " (XMPP gateway)"
	case "PING":
		reply = args
	case "TIME":
		reply = time.Now().UTC().Format(time.RFC1123)
	case "CLIENTINFO":
		reply = "ACTION CLIENTINFO PING TIME VERSION"
	default:
		return
	}
	if msg, err := ctcpReply(src, cmd, reply); err == nil {
		_ = n.send(msg)
	}
}

// ctcpAllowed says whether a CTCP request may be answered now: at most
// 3 at once and one per 2 s after that.
func (n *network) ctcpAllowed() bool {
	r := n.rare()
	if r.ctcp == nil {
		r.ctcp = rate.NewLimiter(rate.Every(2*time.Second), 3)
	}
	return r.ctcp.Allow()
}

func (n *network) fail(pl *pendingLine, text string) {
	if pl.ps.failed {
		return
	}
	pl.ps.failed = true
	n.s.failed(pl.ps.contact, pl.ps.legacyID, core.NewError(stanza.NotAcceptable, "IRC refused the message: "+text))
}

// Batches.

func (n *network) handleBatch(msg inLine) {
	p := msg.Params
	if len(p) < 1 || len(p[0]) < 2 {
		return
	}
	id := p[0][1:]
	if p[0][0] == '+' {
		if len(n.batches) >= maxBatches || len(p) < 2 {
			return
		}
		b := &batch{typ: p[1], params: p[2:]}
		if ok, l := msg.GetTag("label"); ok {
			b.label = l
		}
		if ok, parent := msg.GetTag("batch"); ok {
			b.parent = n.batches[parent]
		}
		if n.batches == nil {
			n.batches = map[string]*batch{}
		}
		n.batches[id] = b
		return
	}
	b := n.batches[id]
	if b == nil {
		return
	}
	delete(n.batches, id)
	if b.typ == "chathistory" || b.typ == "draft/chathistory" {
		for _, m := range b.lines {
			if (m.Command == "PRIVMSG" || m.Command == "NOTICE") && len(m.Params) >= 2 {
				n.handleText(m, "", true)
			}
		}
		return
	}
	if b.parent != nil {
		b.parent.lines = append(b.parent.lines, b.lines...)
		return
	}
	for _, m := range b.lines {
		m.DeleteTag("batch")
		n.handle(m, b.label)
	}
}

// Channel membership.

func (n *network) handleJoin(msg inLine) {
	name := strings.Clone(msg.Params[0])
	nuh, _ := cloneNUH(msg.NUH())
	if n.isMe(nuh.Name) {
		n.me.user, n.me.host = nuh.User, nuh.Host
		ch := n.channelFor(name)
		ch.name = name
		ch.joining = true
		ch.parting = false
		ch.next = &memberSet{}
		ch.next.set(n.fold(n.me.nick), &member{nick: intern(n.me.nick), user: intern(nuh.User), host: intern(nuh.Host)})
		return
	}
	ch := n.channels.get(n.fold(name))
	if ch == nil || !(ch.joined || ch.joining) {
		return
	}
	m := &member{nick: intern(nuh.Name), user: intern(nuh.User), host: intern(nuh.Host)}
	if len(msg.Params) >= 2 && msg.Params[1] != "*" {
		m.account = intern(msg.Params[1])
	}
	if ch.joining && ch.next != nil {
		ch.next.set(n.fold(m.nick.String()), m)
		return
	}
	ch.members.set(n.fold(m.nick.String()), m)
	if ch.reported {
		n.s.rooms.RoomPresence(ch.room, n.occupant(m))
	}
}

func (n *network) handleNames(name, names string) {
	ch := n.channels.get(n.fold(name))
	if ch == nil {
		return
	}
	if ch.next == nil {
		ch.next = &memberSet{}
	}
	for _, entry := range strings.Fields(names) {
		modes := ""
		for entry != "" && strings.IndexByte(n.feat.prefixS, entry[0]) >= 0 {
			modes += string(n.feat.prefixM[strings.IndexByte(n.feat.prefixS, entry[0])])
			entry = entry[1:]
		}
		nuh, err := ircmsg.ParseNUH(entry)
		if err != nil || nuh.Name == "" {
			continue
		}
		// The key from the interned nick: the same bytes when folding
		// changes nothing.
		nick := intern(nuh.Name)
		key := n.fold(nick.String())
		m := ch.next.get(key)
		if m == nil {
			m = &member{nick: nick}
			ch.next.set(key, m)
		}
		m.modes = modes
		if nuh.User != "" {
			m.user, m.host = intern(nuh.User), intern(nuh.Host)
		}
		if n.isMe(nuh.Name) && nuh.Host != "" {
			n.me.user, n.me.host = strings.Clone(nuh.User), strings.Clone(nuh.Host)
		}
	}
}

// endOfNames completes a JOIN: the first time the user asked for the room
// core learns the occupants; after a reconnection, what changed.
func (n *network) endOfNames(name string) {
	ch := n.channels.get(n.fold(name))
	if ch == nil || ch.next == nil {
		return
	}
	old := ch.members
	ch.members = *ch.next
	ch.next = nil
	for k, m := range old.all() {
		// Keep what NAMES does not say (away, account).
		if nm := ch.members.get(k); nm != nil {
			nm.away, nm.awayMsg, nm.account = m.away, m.awayMsg, m.account
		}
	}
	wasJoining := ch.joining
	ch.joined, ch.joining = true, false
	if !wasJoining {
		return // a NAMES reply the user asked for
	}
	if n.hasCap("away-notify") {
		_ = n.send(ircmsg.MakeMessage(nil, "", "WHO", ch.name))
	}
	switch {
	case ch.reported && ch.lost:
		n.reportRejoin(ch, &old)
	case ch.xmpp:
		n.reportJoined(ch)
	}
	ch.lost = false
	n.flushParked() // messages that waited for this channel
}

// reportRejoin shows a room what changed while the gateway was away.
func (n *network) reportRejoin(ch *channel, old *memberSet) {
	rooms := n.s.rooms
	if ch.selfWas != "" && ch.selfWas != n.me.nick {
		rooms.RoomNick(ch.room, ch.selfWas, n.me.nick)
		old.del(n.fold(ch.selfWas))
	}
	ch.selfWas = ""
	selfKey := n.fold(n.me.nick)
	for k, m := range old.all() {
		if k == selfKey {
			continue
		}
		if ch.members.get(k) == nil {
			rooms.RoomLeft(ch.room, plainText(m.nick.String()), "left while the gateway was disconnected", false)
		}
	}
	keys := make([]string, 0, ch.members.len())
	for k := range ch.members.all() {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		m := ch.members.get(k)
		if o := old.get(k); o == nil || o.modes != m.modes {
			rooms.RoomPresence(ch.room, n.occupant(m))
		}
	}
	n.s.roomNotice(ch.room, "Reconnected to IRC")
}

func (n *network) handlePart(src, name, reason string) {
	ch := n.channels.get(n.fold(name))
	if ch == nil {
		return
	}
	if n.isMe(src) {
		wasParting := ch.parting
		ch.joined, ch.joining, ch.parting = false, false, false
		ch.members = memberSet{}
		if ch.xmpp && wasParting {
			n.join(ch) // the user joined the room again meanwhile
			return
		}
		if ch.reported {
			n.s.rooms.RoomLeft(ch.room, n.me.nick, plainText(reason), false)
		}
		ch.xmpp, ch.reported = false, false
		n.channels.del(n.fold(name))
		n.maybeQuit()
		return
	}
	n.removeMember(ch, src, reason, false)
}

func (n *network) removeMember(ch *channel, nick, reason string, kicked bool) {
	key := n.fold(nick)
	m := ch.members.get(key)
	if m == nil {
		return
	}
	ch.members.del(key)
	if ch.reported {
		n.s.rooms.RoomLeft(ch.room, plainText(m.nick.String()), plainText(reason), kicked)
	}
}

func (n *network) handleKick(src, name, victim, reason string) {
	ch := n.channels.get(n.fold(name))
	if ch == nil {
		return
	}
	if n.isMe(victim) {
		if ch.reported {
			text := plainText(reason)
			if src != "" {
				text = strings.TrimSpace("by " + plainText(src) + ": " + text)
			}
			n.s.rooms.RoomLeft(ch.room, n.me.nick, text, true)
		}
		n.channels.del(n.fold(name))
		n.maybeQuit()
		return
	}
	n.removeMember(ch, victim, reason, true)
}

func (n *network) handleQuit(src, reason string) {
	if n.isMe(src) {
		return
	}
	for _, ch := range n.sortedChannels() {
		n.removeMember(ch, src, reason, false)
	}
}

func (n *network) handleNick(src, nick string) {
	interned := intern(nick)
	nick = interned.String()
	oldKey, newKey := n.fold(src), n.fold(nick)
	me := n.isMe(src)
	if me {
		n.me.nick = nick
		n.wantNick = nick
	}
	for _, ch := range n.sortedChannels() {
		m := ch.members.get(oldKey)
		if m == nil {
			continue
		}
		ch.members.del(oldKey)
		old := m.nick.String()
		m.nick = interned
		ch.members.set(newKey, m)
		if ch.reported {
			n.s.rooms.RoomNick(ch.room, plainText(old), plainText(nick))
		}
	}
}

// cloneNUH copies the parts of a source, which otherwise keep the whole
// line they were cut from alive as long as a channel member is known.
func cloneNUH(nuh ircmsg.NUH, err error) (ircmsg.NUH, error) {
	return ircmsg.NUH{Name: strings.Clone(nuh.Name), User: strings.Clone(nuh.User), Host: strings.Clone(nuh.Host)}, err
}

func (n *network) handleWho(name, user, host, nick, flags string) {
	user, host = strings.Clone(user), strings.Clone(host)
	if n.isMe(nick) {
		n.me.user, n.me.host = user, host
	}
	ch := n.channels.get(n.fold(name))
	if ch == nil {
		return
	}
	m := ch.members.get(n.fold(nick))
	if m == nil {
		return
	}
	m.user, m.host = intern(user), intern(host)
	away := strings.HasPrefix(flags, "G")
	if away != m.away {
		m.away = away
		if !away {
			m.awayMsg = ""
		}
		if ch.reported {
			n.s.rooms.RoomPresence(ch.room, n.occupant(m))
		}
	}
}

// handleMode applies channel mode changes; prefix modes change roles.
// A change of the channel's own modes or lists (+m, +k, +b...) is shown
// in the room as a line from it, as IRC clients show it.
func (n *network) handleMode(src, name, modes string, args []string) {
	ch := n.channels.get(n.fold(name))
	if ch == nil {
		return
	}
	add := true
	changed := map[string]*member{}
	if ch.reported && strings.ContainsFunc(modes, func(r rune) bool { return r != '+' && r != '-' && !strings.ContainsRune(n.feat.prefixM, r) }) {
		line := plainText(strings.Join(append([]string{modes}, args...), " "))
		// A change of what the configuration form and the room's
		// disco#info show (readModes) is marked as one (status 104), so
		// that clients read them again; a ban is not.
		n.s.deliver(&core.Message{Contact: ch.room, Groupchat: true, LegacyID: newID(),
			Body: cmp.Or(plainText(src), n.server) + " sets mode " + line, ConfigChanged: strings.ContainsAny(modes, configModes)})
	}
	for i := 0; i < len(modes); i++ {
		c := modes[i]
		switch {
		case c == '+':
			add = true
			continue
		case c == '-':
			add = false
			continue
		}
		takesArg := false
		isPrefix := strings.IndexByte(n.feat.prefixM, c) >= 0
		switch {
		case isPrefix, strings.IndexByte(n.feat.chanM[0], c) >= 0, strings.IndexByte(n.feat.chanM[1], c) >= 0:
			takesArg = true
		case strings.IndexByte(n.feat.chanM[2], c) >= 0:
			takesArg = add
		}
		if !takesArg {
			continue
		}
		if len(args) == 0 {
			return
		}
		arg := args[0]
		args = args[1:]
		if !isPrefix {
			continue
		}
		m := ch.members.get(n.fold(arg))
		if m == nil {
			continue
		}
		had := strings.IndexByte(m.modes, c) >= 0
		switch {
		case add && !had:
			m.modes += string(c)
		case !add && had:
			m.modes = strings.ReplaceAll(m.modes, string(c), "")
		default:
			continue
		}
		changed[n.fold(arg)] = m
	}
	if !ch.reported {
		return
	}
	keys := make([]string, 0, len(changed))
	for k := range changed {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		n.s.rooms.RoomPresence(ch.room, n.occupant(changed[k]))
	}
}

func (n *network) joinFailed(code, name, text string) {
	ch := n.channels.get(n.fold(name))
	if ch == nil || !ch.joining {
		return
	}
	ch.joining = false
	n.setJoinHistory(ch, core.HistoryRequest{})
	cond := stanza.NotAllowed
	switch code {
	case "403", "476", "479":
		cond = stanza.ItemNotFound
	case "471", "405":
		cond = stanza.ServiceUnavailable
	case "473", "477":
		cond = stanza.RegistrationRequired
	case "474":
		cond = stanza.Forbidden
	case "475":
		cond = stanza.NotAuthorized
	}
	switch {
	case ch.xmpp && !ch.reported:
		n.s.roomError(ch.room, core.NewError(cond, "cannot join "+plainText(name)+": "+text))
	case ch.reported:
		// A rejoin after a reconnection failed: the user is out.
		n.s.roomNotice(ch.room, "Cannot join "+plainText(name)+" again: "+text)
		n.s.rooms.RoomLeft(ch.room, n.me.nick, text, false)
	}
	ch.xmpp, ch.reported = false, false
	n.channels.del(n.fold(name))
	n.maybeQuit()
}

func (n *network) handleCap(p []string) {
	if len(p) < 3 {
		return
	}
	switch p[1] {
	case "NEW":
		var req []string
		for _, tok := range strings.Fields(last(p)) {
			name, _, _ := strings.Cut(tok, "=")
			for _, w := range wantCaps {
				if w == name && !n.hasCap(name) {
					req = append(req, name)
				}
			}
		}
		if len(req) > 0 && n.conn != nil {
			_ = n.send(ircmsg.MakeMessage(nil, "", "CAP", "REQ", strings.Join(req, " ")))
		}
	case "ACK":
		for _, tok := range strings.Fields(last(p)) {
			if strings.HasPrefix(tok, "-") {
				n.caps.del(tok[1:])
			} else {
				n.caps.add(tok)
			}
		}
		n.noteReplays()
	case "DEL":
		for _, tok := range strings.Fields(last(p)) {
			n.caps.del(tok)
		}
		n.noteReplays()
	}
}

// safeMsgID keeps a server's msgid tag only if it is a short run of
// printable ASCII: it becomes a legacy ID and a stanza-id attribute.
func safeMsgID(id string) string {
	if len(id) == 0 || len(id) > 128 {
		return ""
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= 0x20 || id[i] >= 0x7f {
			return ""
		}
	}
	return id
}
