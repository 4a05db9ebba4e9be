package core

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"mellium.im/xmpp/commands"
	"mellium.im/xmpp/disco"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/version"
)

const (
	nsRegister = "jabber:iq:register"
	nsGateway  = "jabber:iq:gateway"
	nsReceipts = "urn:xmpp:receipts"
	nsDelay    = "urn:xmpp:delay"
	nsStanzaID = "urn:xmpp:sid:0"
	nsNick     = "http://jabber.org/protocol/nick"
	nsOOB      = "jabber:x:oob"
	nsData     = "jabber:x:data"
	nsMarkers  = "urn:xmpp:chat-markers:0"
	capsNode   = "https://transportd.invalid/caps"
)

// iqReply answers one IQ get/set exactly once.
type iqReply struct {
	c    *component
	el   *Element
	done bool
}

func (r *iqReply) result(payload *Element) {
	if r.done {
		r.c.log.Error("second answer to an IQ suppressed", "id", r.el.Get("id"))
		return
	}
	r.done = true
	res := NewElement("", "iq", "type", "result", "id", r.el.Get("id"), "to", r.el.Get("from"), "from", r.el.Get("to"))
	res.Add(payload)
	if err := r.c.send(res); err != nil {
		r.c.log.Debug("IQ result not sent", "error", err)
	}
}

func (r *iqReply) error(err error) {
	if r.done {
		r.c.log.Error("second answer to an IQ suppressed", "id", r.el.Get("id"))
		return
	}
	r.done = true
	r.c.replyError(r.el, err)
}

func (c *component) handleIQ(el *Element) {
	typ := el.Get("type")
	switch typ {
	case "result", "error":
		if ch, ok := c.pending.LoadAndDelete(el.Get("id")); ok {
			ch.(chan *Element) <- el
		}
		return
	case "get", "set":
	default:
		c.replyError(el, NewError(stanza.BadRequest, "invalid IQ type "+quote(typ)))
		return
	}
	if el.Get("id") == "" {
		c.replyError(el, NewError(stanza.BadRequest, "IQ without id"))
		return
	}
	payload := el.FirstChild()
	if payload == nil || len(el.Children) != 1 {
		c.replyError(el, NewError(stanza.BadRequest, "an IQ get or set must have exactly one payload"))
		return
	}
	from, to, ok := c.addresses(el)
	if !ok {
		return
	}
	r := &iqReply{c: c, el: el}
	key := typ + " " + payload.Name.Space + " " + payload.Name.Local
	if addr, isRoom := c.roomAddress(to); isRoom {
		switch {
		case to.Resourcepart() != "":
			c.occupantIQ(r, key, from, to, addr)
		case key == "set "+nsMUCAdmin+" query":
			c.roomAdminIQ(r, from, to, addr, payload)
		case key == "get "+nsMUCAdmin+" query":
			c.roomAdminGet(r, from, to, addr, payload)
		case key == "get "+nsMUCOwner+" query", key == "set "+nsMUCOwner+" query":
			c.roomOwnerIQ(r, typ, from, to, addr, payload)
		case key == "get "+disco.NSInfo+" query" && payload.Get("node") == "":
			c.roomInfoIQ(r, from, to, addr)
		case key == "get "+nsMAM+" query", key == "set "+nsMAM+" query", key == "get "+nsMAM+" metadata":
			c.roomMAM(r, typ, from, to, addr, payload)
		case key == "set "+commands.NS+" command":
			c.cmds.handle(r, from, to, cmdTarget{room: addr}, payload)
		case key == "get "+disco.NSItems+" query" && payload.Get("node") == commands.NS:
			q := NewElement(disco.NSItems, "query", "node", commands.NS)
			for _, cmd := range c.cmds.visible(from, cmdTarget{room: addr}) {
				q.Add(NewElement("", "item", "jid", to.Bare().String(), "node", cmd.Node, "name", cmd.Name))
			}
			r.result(q)
		default:
			c.handleRoomIQ(r, key, addr)
		}
		return
	}
	if to.Localpart() != "" {
		c.handleContactIQ(r, key, from, to, payload)
		return
	}
	switch key {
	case "get " + disco.NSInfo + " query":
		c.discoInfo(r, from, payload.Get("node"))
	case "get " + disco.NSItems + " query":
		c.discoItems(r, from, payload.Get("node"))
	case "get " + version.NS + " query":
		q := NewElement(version.NS, "query")
		q.AddText("", "name", "transportd")
		q.AddText("", "version", Version)
		q.AddText("", "os", runtime.GOOS)
		r.result(q)
	case "get " + ping.NS + " ping":
		r.result(nil)
	case "get " + nsRegister + " query", "set " + nsRegister + " query":
		c.handleRegister(r, from, payload)
	case "get " + nsGateway + " query", "set " + nsGateway + " query":
		c.handleGateway(r, from, payload)
	case "set " + commands.NS + " command":
		c.cmds.handle(r, from, to, cmdTarget{}, payload)
	default:
		r.error(NewError(stanza.ServiceUnavailable, "not supported: "+payload.Name.Space+" "+payload.Name.Local))
	}
}

// handleContactIQ answers IQs addressed to a legacy contact's JID.
func (c *component) handleContactIQ(r *iqReply, key string, from, to jid.JID, payload *Element) {
	label, addr, err := c.address(to.Localpart())
	if err != nil {
		r.error(err)
		return
	}
	switch key {
	case "get " + nsVCard + " vCard":
		c.g.goWork("vcard", 10*time.Second, func(ctx context.Context) {
			c.vcard(ctx, r, from.Bare().String(), label, addr)
		})
	case "get " + disco.NSInfo + " query":
		q := NewElement(disco.NSInfo, "query")
		if n := payload.Get("node"); n != "" {
			q.SetAttr("node", n)
		}
		q.Add(NewElement("", "identity", "category", "client", "type", "pc", "name", to.Localpart()))
		features := []string{disco.NSInfo, nsReceipts, nsVCard}
		if c.cmds != nil && c.cmds.hasContact(addr) {
			features = append(features, commands.NS)
		}
		// What the user's session relays to the contact's client.
		s := c.liveSession(from.Bare().String(), label)
		if _, ok := s.(ContactPinger); ok {
			features = append(features, ping.NS)
		}
		if _, ok := s.(ContactVersioner); ok {
			features = append(features, version.NS)
		}
		if _, ok := s.(ChatStateSender); ok {
			features = append(features, nsChatStates)
		}
		for _, f := range features {
			q.Add(NewElement("", "feature", "var", f))
		}
		r.result(q)
	case "get " + ping.NS + " ping":
		p, _ := c.liveSession(from.Bare().String(), label).(ContactPinger)
		c.pingContact(r, p, addr)
	case "get " + version.NS + " query":
		v, _ := c.liveSession(from.Bare().String(), label).(ContactVersioner)
		c.contactVersion(r, v, addr)
	case "get " + disco.NSItems + " query":
		if _, rooms := c.t.(GroupChats); rooms && payload.Get("node") == "" {
			c.listRooms(r, from, label, addr, payload)
			return
		}
		if payload.Get("node") == commands.NS {
			q := NewElement(disco.NSItems, "query", "node", commands.NS)
			for _, cmd := range c.cmds.visible(from, cmdTarget{contact: addr}) {
				q.Add(NewElement("", "item", "jid", to.Bare().String(), "node", cmd.Node, "name", cmd.Name))
			}
			r.result(q)
			return
		}
		r.error(NewError(stanza.ServiceUnavailable, "not supported by legacy contacts"))
	case "set " + commands.NS + " command":
		c.cmds.handle(r, from, to, cmdTarget{contact: addr}, payload)
	default:
		r.error(NewError(stanza.ServiceUnavailable, "not supported by legacy contacts"))
	}
}

// liveSession is the running session of a user's account (by label),
// or nil.
func (c *component) liveSession(bare, label string) Session {
	if u := c.lookupLabel(bare, label); u != nil {
		if ls := u.live.Load(); ls != nil {
			return ls.s
		}
	}
	return nil
}

// contactVersion answers a software version request to a contact (a
// room occupant's included) with theirs, asked by v, the user's session.
func (c *component) contactVersion(r *iqReply, v ContactVersioner, addr string) {
	if v == nil || addr == "" {
		r.error(NewError(stanza.ServiceUnavailable, "cannot ask this contact's client now (not connected to the network)"))
		return
	}
	c.g.goWork("contact-version", contactPingWait, func(ctx context.Context) {
		sv, err := v.ContactVersion(ctx, addr)
		if err != nil {
			r.error(err)
			return
		}
		q := NewElement(version.NS, "query")
		q.AddText("", "name", sv.Name)
		q.AddText("", "version", sv.Version)
		if sv.OS != "" {
			q.AddText("", "os", sv.OS)
		}
		r.result(q)
	})
}

// contactPingWait is how long a ping relayed to a contact waits for
// their answer: under the time clients give a ping (Gajim, Poezio and
// Conversations wait 30 s or more).
const contactPingWait = 20 * time.Second

// pingContact answers a ping to a contact (a room occupant's included):
// relayed by p, the user's session, when it can; by the gateway when not.
func (c *component) pingContact(r *iqReply, p ContactPinger, addr string) {
	if p == nil {
		r.result(nil)
		return
	}
	c.g.goWork("ping-contact", contactPingWait, func(ctx context.Context) {
		if err := p.PingContact(ctx, addr); err != nil {
			r.error(err)
			return
		}
		r.result(nil)
	})
}

// handleRoomIQ answers IQs to a room.
func (c *component) handleRoomIQ(r *iqReply, key, addr string) {
	switch key {
	case "get " + disco.NSInfo + " query":
		r.result(c.roomInfo(addr, nil, nil)) // with a node
	case "get " + disco.NSItems + " query":
		r.result(NewElement(disco.NSItems, "query"))
	case "get " + ping.NS + " ping":
		r.result(nil)
	default:
		r.error(NewError(stanza.ServiceUnavailable, "not supported by this room"))
	}
}

// nsSelfPing: a room answers its occupants' self-pings itself (XEP-0410
// §3.3), so a client learns in one round trip whether it is still in.
const nsSelfPing = "http://jabber.org/protocol/muc#self-ping-optimization"

// errNotInRoom answers an IQ to an occupant from a resource that is not in
// the room (not-acceptable, as XEP-0045 has a room answer a non-occupant's
// private message). To a self-ping (XEP-0410) it
// says "join again": a client whose join was lost, by a restart of the
// gateway or a connection to the IRC network that could not be restored,
// finds out and rejoins, instead of sitting in a room that no longer
// relays to it. Conversations pings before rejoining after a reconnect
// and skips the join if the answer is a result.
var errNotInRoom = NewError(stanza.NotAcceptable, "you are not in this room: join it again")

// occupantIQ answers an IQ to an occupant's JID: the user's drain knows
// whether the resource is in the room and who its occupants are.
func (c *component) occupantIQ(r *iqReply, key string, from, to jid.JID, addr string) {
	label, _ := splitLabel(to.Localpart())
	u := c.lookupLabel(from.Bare().String(), label)
	if u == nil || !u.post(evRoomIQ{reply: r, key: key, resource: from.Resourcepart(), room: addr, nick: to.Resourcepart()}) {
		r.error(errNotInRoom)
	}
}

const nsMUCAdmin = "http://jabber.org/protocol/muc#admin"

// roomAdminIQ takes a muc#admin set (XEP-0045 §8, §9: kick, voice,
// op, ban) to a room: each item names an occupant by nick (the rooms show
// no real JIDs) and a role or affiliation; the user's drain checks the
// sender is in the room and hands the changes to the session.
func (c *component) roomAdminIQ(r *iqReply, from, to jid.JID, addr string, q *Element) {
	var items []RoomChange
	for _, it := range q.Children {
		if it.Name.Local != "item" {
			continue
		}
		ri := RoomChange{Nick: it.Get("nick"), Role: it.Get("role"), Affiliation: it.Get("affiliation"), Reason: it.ChildText("", "reason")}
		if ri.Nick == "" && it.Get("jid") != "" {
			// By JID: an occupant's contact JID (how clients ban from the
			// occupant list), or a pattern of the ban list (see banJID).
			ij, err := jid.Parse(it.Get("jid"))
			switch {
			case err != nil:
			case ij.Domain().Equal(c.jid.Domain()) && ij.Localpart() != "" && ij.Resourcepart() != "" && ij.Bare().Equal(to.Bare()):
				ri.Mask = ij.Resourcepart()
			case ij.Domain().Equal(c.jid.Domain()) && ij.Localpart() != "":
				if _, addr, err := c.address(ij.Localpart()); err == nil {
					ri.contact = addr
				}
			case !ij.Domain().Equal(c.jid.Domain()):
				ri.Mask = it.Get("jid")
			}
			if ri.contact == "" && ri.Mask == "" {
				r.error(NewError(stanza.BadRequest, "not the JID of an occupant of this room: "+quote(it.Get("jid"))))
				return
			}
		}
		switch {
		case ri.Nick == "" && ri.contact == "" && ri.Mask == "":
			r.error(NewError(stanza.BadRequest, "name the occupant by nick or by the JID the room shows"))
			return
		case ri.Mask != "" && (ri.Role != "" || !oneOf(ri.Affiliation, "outcast", "none")):
			r.error(NewError(stanza.BadRequest, quote(ri.Mask)+" is not an occupant of this room: a pattern can only be banned (affiliation outcast) or unbanned (none)"))
			return
		case !oneOf(ri.Role, "", "none", "visitor", "participant", "moderator"):
			r.error(NewError(stanza.BadRequest, "unknown role "+quote(ri.Role)))
			return
		case !oneOf(ri.Affiliation, "", "outcast", "none", "member", "admin", "owner"):
			r.error(NewError(stanza.BadRequest, "unknown affiliation "+quote(ri.Affiliation)))
			return
		case ri.Role == "" && ri.Affiliation == "":
			r.error(NewError(stanza.BadRequest, "an item needs a role or an affiliation"))
			return
		}
		items = append(items, ri)
	}
	if len(items) == 0 {
		r.error(NewError(stanza.BadRequest, "no item to change"))
		return
	}
	label, _ := splitLabel(to.Localpart())
	u := c.lookupLabel(from.Bare().String(), label)
	if u == nil || !u.post(evRoomAdmin{reply: r, resource: from.Resourcepart(), room: addr, items: items}) {
		r.error(NewError(stanza.NotAcceptable, "join the room before moderating it"))
	}
}

func oneOf(v string, set ...string) bool { return slices.Contains(set, v) }

// roomAdminGet answers a muc#admin get (XEP-0045 §9.2, §9.5, §9.8, §10.5,
// §10.8): the room's ban list (affiliation outcast) from the network, the
// other lists from the occupants the user's drain knows.
func (c *component) roomAdminGet(r *iqReply, from, to jid.JID, addr string, q *Element) {
	var items []*Element
	for _, it := range q.Children {
		if it.Name.Local == "item" {
			items = append(items, it)
		}
	}
	if len(items) != 1 {
		r.error(NewError(stanza.BadRequest, "ask for one list: one item with a role or an affiliation"))
		return
	}
	role, aff := items[0].Get("role"), items[0].Get("affiliation")
	switch {
	case (role == "") == (aff == ""):
		r.error(NewError(stanza.BadRequest, "ask for one list: one item with a role or an affiliation"))
		return
	case role != "" && !oneOf(role, "visitor", "participant", "moderator"):
		r.error(NewError(stanza.BadRequest, "unknown role "+quote(role)))
		return
	case aff != "" && !oneOf(aff, "outcast", "none", "member", "admin", "owner"):
		r.error(NewError(stanza.BadRequest, "unknown affiliation "+quote(aff)))
		return
	}
	label, _ := splitLabel(to.Localpart())
	u := c.lookupLabel(from.Bare().String(), label)
	if u == nil || !u.post(evRoomAdminGet{reply: r, resource: from.Resourcepart(), room: addr, roomJID: to.Bare(), role: role, affiliation: aff}) {
		r.error(NewError(stanza.NotAcceptable, "join the room before asking for its lists"))
	}
}

// features lists what the gateway JID supports, sorted (made once, in
// newComponent: the presence every user gets carries their hash).
func (c *component) features() []string { return c.feats }

func (c *component) makeFeatures() []string {
	fs := []string{
		disco.NSInfo, disco.NSItems, nsRegister, nsGateway, version.NS, ping.NS,
		commands.NS, nsReceipts, disco.NSCaps, nsMarkers,
	}
	fs = append(fs, c.info.Features...)
	if _, ok := c.t.(GroupChats); ok {
		fs = append(fs, nsMUC)
	}
	sort.Strings(fs)
	out := fs[:0]
	for i, f := range fs {
		if i == 0 || f != fs[i-1] {
			out = append(out, f)
		}
	}
	return out
}

func (c *component) identity() (category, typ, name string) {
	return "gateway", c.info.DiscoType, c.info.DisplayName
}

// capsVer is the XEP-0115 verification string of the gateway's disco
// info. Made once: hashing it for each user's presence was 2 KB of
// garbage a user that came online.
func (c *component) capsVer() string { return c.caps }

func (c *component) makeCapsVer() string {
	cat, typ, name := c.identity()
	ids := []string{cat + "/" + typ + "//" + name}
	if _, ok := c.t.(GroupChats); ok {
		ids = append(ids, "conference/"+typ+"//"+name)
	}
	sort.Strings(ids)
	var b strings.Builder
	for _, id := range ids {
		b.WriteString(id + "<")
	}
	for _, f := range c.features() {
		b.WriteString(f + "<")
	}
	h := sha1.Sum([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(h[:])
}

func (c *component) capsElement() *Element {
	return NewElement(disco.NSCaps, "c", "hash", "sha-1", "node", capsNode, "ver", c.capsVer())
}

func (c *component) discoInfo(r *iqReply, from jid.JID, node string) {
	q := NewElement(disco.NSInfo, "query")
	switch {
	case node == "" || node == capsNode+"#"+c.capsVer():
		if node != "" {
			q.SetAttr("node", node)
		}
		cat, typ, name := c.identity()
		q.Add(NewElement("", "identity", "category", cat, "type", typ, "name", name))
		if _, ok := c.t.(GroupChats); ok {
			q.Add(NewElement("", "identity", "category", "conference", "type", typ, "name", name))
		}
		for _, f := range c.features() {
			q.Add(NewElement("", "feature", "var", f))
		}
	case node == commands.NS:
		q.SetAttr("node", node)
		q.Add(NewElement("", "identity", "category", "automation", "type", "command-list", "name", "Commands"))
	default:
		cmd := c.cmds.lookup(node, cmdTarget{})
		if cmd == nil {
			r.error(NewError(stanza.ItemNotFound, "no such node"))
			return
		}
		q.SetAttr("node", node)
		q.Add(NewElement("", "identity", "category", "automation", "type", "command-node", "name", cmd.Name))
		q.Add(NewElement("", "feature", "var", commands.NS))
		q.Add(NewElement("", "feature", "var", nsData))
	}
	r.result(q)
}

func (c *component) discoItems(r *iqReply, from jid.JID, node string) {
	q := NewElement(disco.NSItems, "query")
	switch node {
	case "":
	case commands.NS:
		q.SetAttr("node", node)
		for _, cmd := range c.cmds.visible(from, cmdTarget{}) {
			q.Add(NewElement("", "item", "jid", c.jid.String(), "node", cmd.Node, "name", cmd.Name))
		}
	default:
		r.error(NewError(stanza.ItemNotFound, "no such node"))
		return
	}
	r.result(q)
}

// handleGateway is XEP-0100's jabber:iq:gateway: a prompt, and the
// translation of what the user typed into a contact JID.
func (c *component) handleGateway(r *iqReply, from jid.JID, payload *Element) {
	gw, ok := c.t.(Gatewayer)
	if !ok {
		r.error(NewError(stanza.ServiceUnavailable, "this gateway has no address prompt"))
		return
	}
	desc, prompt := gw.GatewayPrompt()
	if r.el.Get("type") == "get" {
		q := NewElement(nsGateway, "query")
		q.AddText("", "desc", desc)
		q.AddText("", "prompt", prompt)
		r.result(q)
		return
	}
	input := strings.TrimSpace(payload.ChildText("", "prompt"))
	if input == "" {
		r.error(NewError(stanza.BadRequest, "prompt: an address is required"))
		return
	}
	addr, err := gw.TranslateAddress(input, c.tcfg().Defaults)
	if err != nil {
		r.error(err)
		return
	}
	j, err := jid.New(c.t.Localpart(addr), c.jid.Domainpart(), "")
	if err != nil {
		r.error(NewError(stanza.JIDMalformed, "prompt: this address cannot be written as a JID"))
		return
	}
	q := NewElement(nsGateway, "query")
	q.AddText("", "jid", j.String())
	q.AddText("", "prompt", j.String()) // pre-XEP-0100 1.0 clients read <prompt/>
	r.result(q)
}

func quote(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return "'" + s + "'"
}
