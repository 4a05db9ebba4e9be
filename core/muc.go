package core

import (
	"cmp"
	"context"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	xmppcomponent "mellium.im/xmpp/component"
	"mellium.im/xmpp/disco"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/version"

	"transportd/core/store"
	"transportd/internal/memtrim"
)

// Group chats (XEP-0045) for networks that have them (IRC channels). Core
// plays the MUC service: it tracks which of the user's resources joined
// which room with which nick, renders occupants, subjects and messages,
// and asks the legacy session to join, leave and speak. The transport only
// says what happened on its network.

const (
	nsMUC     = "http://jabber.org/protocol/muc"
	nsMUCUser = "http://jabber.org/protocol/muc#user"
)

// GroupChats is implemented by transports whose network has group chats.
type GroupChats interface {
	// IsRoom reports whether a legacy address (from Address) names a group
	// chat rather than a person.
	IsRoom(address string) bool
}

// RoomAddresser is implemented by a GroupChats transport that can tell
// Address's address and IsRoom of it from one parse: the stanza reader
// needs both for every message, and parsing an IRC address twice more
// was some 6 % of the gateway's CPU relaying a private message.
type RoomAddresser interface {
	// RoomAddress is Address(local) and IsRoom of the result.
	RoomAddress(local string) (addr string, room bool, err error)
}

// OccupantContacts is implemented by a GroupChats transport whose room
// occupants are also contacts (an IRC nick is nick%server): their
// presence in a room then names that contact's JID (XEP-0045's real JID
// in a non-anonymous room), so clients can write to them directly and
// ban them by JID.
type OccupantContacts interface {
	// OccupantContact is the legacy address of the occupant of room with
	// this nick, or "".
	OccupantContact(room, nick string) string
}

// GroupSession is implemented by the Session of a GroupChats transport.
// Its methods return quickly (they queue work); outcomes come back through
// the RoomSink the session's Sink also implements.
type GroupSession interface {
	// JoinRoom joins a room with a nick (and password, if the room has
	// one). The session answers with RoomJoined, or RoomError (a nick
	// already taken is an Error with stanza.Conflict).
	JoinRoom(ctx context.Context, room, nick, password string) error
	// LeaveRoom leaves a room: the user's last resource in it left.
	LeaveRoom(ctx context.Context, room string) error
	// ChangeNick asks for a new nick in a room; the network's answer comes
	// as RoomNick (or RoomError).
	ChangeNick(ctx context.Context, room, nick string) error
	// SetSubject asks to change a room's subject; the network's answer
	// comes as RoomSubject.
	SetSubject(ctx context.Context, room, subject string) error
}

// RoomModerator is implemented by a GroupSession whose network lets the
// user moderate its rooms: kick, op, voice and ban occupants from the
// client's occupant menu (XEP-0045 §8 and §9, a muc#admin set).
type RoomModerator interface {
	// ModerateRoom asks the network to apply the changes in order. It
	// returns once they are queued; the network's refusals (not a
	// channel operator) come back as room notices.
	ModerateRoom(ctx context.Context, room string, items []RoomChange) error
}

// RoomInviter is implemented by a GroupSession whose network has
// invitations (IRC's INVITE).
type RoomInviter interface {
	// InviteToRoom invites a contact (legacy address) to a room the user
	// is in. It returns once the invitation is queued.
	InviteToRoom(ctx context.Context, room, contact, reason string) error
}

// RoomBanLister is implemented by a GroupSession whose network keeps ban
// lists (IRC's MODE +b): core answers the client's request for a room's
// ban list (a muc#admin get of the outcasts, XEP-0045 §9.2) with them.
type RoomBanLister interface {
	// RoomBans asks the network for a room's ban list and waits for it
	// (or ctx).
	RoomBans(ctx context.Context, room string) ([]RoomBan, error)
}

// RoomBan is one entry of a room's ban list.
type RoomBan struct {
	Mask string    // the network's pattern (IRC: nick!user@host with wildcards)
	By   string    // who set it, "" if the network does not say
	At   time.Time // when, zero if the network does not say
}

// RoomChange is one change of a muc#admin set, naming the occupant by
// nick, or a ban list's pattern by Mask.
type RoomChange struct {
	Nick string
	// Mask is a pattern of the network's ban list rather than an
	// occupant, for affiliation outcast (ban) or none (unban): the item
	// named a JID outside the gateway's domain (a client's ban list shows
	// an IRC mask such as *!*@host.example as that JID, and takes one
	// typed in so), or the room's JID with the pattern as resource (how a
	// pattern that is no JID is listed).
	Mask        string
	contact     string // the occupant's legacy address, when the item named a JID
	Role        string // none (kick), visitor, participant, moderator; "" unchanged
	Affiliation string // outcast (ban), none, member, admin, owner; "" unchanged
	Reason      string
}

// Occupant is someone in a room, as XEP-0045 shows them.
type Occupant struct {
	Nick        string
	Role        string // moderator, participant, visitor
	Affiliation string // owner, admin, member, none
	Show        string // "", away, xa, dnd, chat
	Status      string
}

// RoomSink is implemented by the Sink core gives a GroupChats session.
// Sessions type-assert their Sink to it.
type RoomSink interface {
	// RoomJoined reports that the user is in a room, with the occupants
	// (the user included, as self) and the subject.
	RoomJoined(room string, self Occupant, occupants []Occupant, subject string)
	// RoomError reports that joining (or staying in) a room failed.
	RoomError(room string, err error)
	// RoomPresence reports that an occupant joined or changed (role, show).
	RoomPresence(room string, o Occupant)
	// RoomLeft reports that an occupant left; kicked says they were
	// removed by someone (status 307) and reason is shown. If nick is the
	// user's own, the user is out of the room.
	RoomLeft(room, nick, reason string, kicked bool)
	// RoomNick reports an occupant's nick change (status 303).
	RoomNick(room, oldNick, newNick string)
	// RoomSubject reports the room's subject.
	RoomSubject(room, subject, by string)
}

// Room messages are delivered with Sink.Deliver and Message.Groupchat set:
// Contact is the room, Nick the speaker. A message the user sent, reflected
// by the network, carries the XMPPID of the user's stanza.

// RoomEchoer is implemented by the Sink core gives a GroupChats session.
// RoomEcho reflects a message the user sent to a room, once the network
// took it, to the user's resources in the room (Contact the room, Nick the
// user's nick, XMPPID the user's stanza id).
//
// Unlike Deliver it writes at once, outside the outbox: it echoes what the
// user just sent, so it needs no commit (nothing from the network is lost
// if it is), and the outbox's round trip to the store would double the
// cost of every message the user sends to a room. It goes through the
// outbox (Deliver) when the XMPP link is down, when no resource of the
// user is in the room yet, or when a write fails. What that gives up: a
// crash between the network's echo and the write loses the reflection
// (the message itself was sent), the network's message id is not recorded
// as delivered (a transport that replays history must skip its own echoes
// itself), and the echo can overtake room messages that still wait in the
// outbox (only while the link was down or the outbox is behind).
type RoomEchoer interface {
	RoomEcho(ctx context.Context, m Message) error
}

// RoomLister is implemented by GroupSessions that can list the rooms of
// a server (IRC's LIST): core answers disco#items on the server's contact
// JID with them, paged with XEP-0059 when asked, as biboumi does. The list
// comes ordered as it is to be shown.
type RoomLister interface {
	ListRooms(ctx context.Context, server string) ([]RoomItem, error)
}

// RoomItem is one room of such a list.
type RoomItem struct {
	Address string // the room's address on the network
	Name    string
	Users   int
	Topic   string
}

// nsRSM is XEP-0059, Result Set Management.
const nsRSM = "http://jabber.org/protocol/rsm"

// maxRoomPage bounds one page of a room list.
const maxRoomPage = 1000

// listRooms answers disco#items on a server contact's JID with its rooms.
func (c *component) listRooms(r *iqReply, from jid.JID, label, server string, payload *Element) {
	max, after := maxRoomPage, ""
	if set := payload.Child(nsRSM, "set"); set != nil {
		if v, err := strconv.Atoi(set.ChildText("", "max")); err == nil && v >= 0 && v < max {
			max = v
		}
		after = set.ChildText("", "after")
	}
	c.g.goWork("list-rooms", time.Minute, func(ctx context.Context) {
		lister, err := c.roomLister(ctx, from.Bare().String(), label)
		if err != nil {
			r.error(err)
			return
		}
		rooms, err := lister.ListRooms(ctx, server)
		if err != nil {
			r.error(err)
			return
		}
		q := NewElement(disco.NSItems, "query")
		start := 0
		jids := make([]string, len(rooms))
		for i, rm := range rooms {
			jids[i] = c.local(label, rm.Address) + "@" + c.jid.Domainpart()
			if jids[i] == after {
				start = i + 1
			}
		}
		end := min(start+max, len(rooms))
		for i := start; i < end; i++ {
			rm := rooms[i]
			name := rm.Name + " (" + strconv.Itoa(rm.Users) + ")"
			if rm.Topic != "" {
				name += ": " + rm.Topic
			}
			if len(name) > 200 {
				name = strings.ToValidUTF8(name[:200], "") + "…"
			}
			q.Add(NewElement("", "item", "jid", jids[i], "name", name))
		}
		set := NewElement(nsRSM, "set")
		if end > start {
			first := NewElement("", "first", "index", strconv.Itoa(start))
			first.Text = jids[start]
			set.Add(first)
			set.AddText("", "last", jids[end-1])
		}
		set.AddText("", "count", strconv.Itoa(len(rooms)))
		q.Add(set)
		r.result(q)
	})
}

// browseFor is how long a session started to list rooms runs after the
// last listing, when nothing else (a room, a resource online) wants it.
// A variable for tests.
var browseFor = 2 * time.Minute

// evBrowse asks for the user's session to list rooms with, starting it
// if none runs (a user who has not joined a room yet browses a server's
// rooms, as biboumi lets them).
type evBrowse struct{ reply chan GroupSession }

// evBrowseEnd: browseFor may have passed since the last listing.
type evBrowseEnd struct{}

// roomLister is the user's session, for a room listing: started for it
// when none runs (registering the user first where that is optional, as
// a room join does).
func (c *component) roomLister(ctx context.Context, bare, label string) (RoomLister, error) {
	u := c.lookupLabel(bare, label)
	if u == nil && label == "" {
		var err error
		if u, err = c.autoRegister(bare); err != nil {
			return nil, err
		}
	}
	if u == nil {
		return nil, NewError(stanza.ItemNotFound, "you have no account named "+quote(label)+" on "+c.jid.String())
	}
	if u.disabled.Load() {
		return nil, errDisabled
	}
	gs := u.groupSession()
	if gs == nil {
		reply := make(chan GroupSession, 1)
		u.post(evBrowse{reply: reply})
		select {
		case gs = <-reply:
		case <-u.done.Chan():
		case <-ctx.Done():
		}
	} else {
		u.post(evBrowse{}) // the session stays a while for the next page
	}
	lister, _ := gs.(RoomLister)
	if lister == nil {
		return nil, NewError(stanza.ServiceUnavailable, "rooms cannot be listed now: the gateway could not start your session")
	}
	return lister, nil
}

// browse handles evBrowse (loop only).
func (u *user) browse(ev evBrowse) {
	u.browseUntil = time.Now().Add(browseFor).UnixNano()
	if u.browseTimer == nil {
		u.browseTimer = time.AfterFunc(browseFor, func() { u.post(evBrowseEnd{}) })
	}
	if u.reconcileSession() {
		u.sendPresence()
	}
	if ev.reply != nil {
		ev.reply <- u.groupSession()
	}
}

// browseEnd handles evBrowseEnd (loop only).
func (u *user) browseEnd() {
	if d := time.Until(time.Unix(0, u.browseUntil)); d > 0 {
		u.browseTimer.Reset(d)
		return
	}
	u.browseTimer, u.browseUntil = nil, 0
	if u.reconcileSession() {
		u.sendPresence()
	}
}

// roomList is a user's rooms. A slice, not a map by address: a Go map
// holds eight slots at least (some 250 bytes for a user's one room), and
// a user is in a few rooms.
type roomList []*room

// get returns the room of an address, or nil.
func (l roomList) get(addr string) *room {
	for _, r := range l {
		if r.address == addr {
			return r
		}
	}
	return nil
}

// del forgets the room of an address.
func (l *roomList) del(addr string) {
	for i, r := range *l {
		if r.address == addr {
			*l = slices.Delete(*l, i, i+1)
			return
		}
	}
}

type room struct {
	address   string
	nick      string  // the user's nick in the room
	wanted    string  // nick the user asked for
	password  string  //
	resources nameSet // joined resources (full JID resource parts)
	pending   nameSet // resources waiting for the join to complete
	joined    bool    // the network confirmed
	occupants occupantList
	subject   string
	// hist: the history each pending resource asked for with its join.
	hist []resourceHistory
}

// resourceHistory is the history a resource asked for when it joined.
type resourceHistory struct {
	resource string
	h        HistoryRequest
}

// takeHist returns (and forgets) the history resource asked for.
func (r *room) takeHist(resource string) HistoryRequest {
	for i, rh := range r.hist {
		if rh.resource == resource {
			if r.hist = slices.Delete(r.hist, i, i+1); len(r.hist) == 0 {
				r.hist = nil // a joined room keeps no array
			}
			return rh.h
		}
	}
	return HistoryRequest{}
}

// A user's rooms hold a few resources each and, on IRC, a channel's
// members: kept in slices, not maps. A Go map allocates eight slots at
// least: a room's one occupant took 800 bytes in a map, 80 here; a large
// channel takes less than half. Looking a nick up in a channel of
// thousands costs a few microseconds, once per join, part or nick change.

// nameSet is a small set of strings, in the order added.
type nameSet []string

func (s nameSet) has(name string) bool { return slices.Contains(s, name) }

func (s *nameSet) add(name string) {
	if !s.has(name) {
		*s = append(*s, name)
	}
}

func (s *nameSet) del(name string) {
	if i := slices.Index(*s, name); i >= 0 {
		*s = slices.Delete(*s, i, i+1)
	}
}

// churnOccupants is the size of a room whose join runs the collector
// often (memtrim.Churn).
const churnOccupants = 100

// occupantList is a room's occupants, one per nick, kept compact: a
// user's room of an IRC channel holds every member of the channel, in
// every user's rooms. 40 bytes an occupant where an Occupant is 80 (role,
// affiliation and show as indexes into occValues); the list grows by an
// eighth rather than doubling.
type occupantList []roomOccupant

type roomOccupant struct {
	nick, status    string
	role, aff, show uint8
}

// occValues are the roles, affiliations and shows XEP-0045 and RFC 6121
// know, then any other value a transport gave (added copy-on-write,
// shared by all rooms; past 256 values, a new one is kept as "").
var occValues struct {
	sync.Mutex // adding
	t          atomic.Pointer[occTable]
}

type occTable struct {
	list  []string
	index map[string]uint8
}

func init() {
	t := &occTable{list: []string{"", "none", "participant", "moderator", "visitor", "owner", "admin", "member", "outcast", "away", "xa", "dnd", "chat"}, index: map[string]uint8{}}
	for i, v := range t.list {
		t.index[v] = uint8(i)
	}
	occValues.t.Store(t)
}

func occIndex(v string) uint8 {
	if i, ok := occValues.t.Load().index[v]; ok {
		return i
	}
	occValues.Lock()
	defer occValues.Unlock()
	t := occValues.t.Load()
	if i, ok := t.index[v]; ok {
		return i
	}
	if len(t.list) >= 256 {
		return 0
	}
	nt := &occTable{list: append(slices.Clip(t.list), strings.Clone(v)), index: maps.Clone(t.index)}
	nt.index[v] = uint8(len(t.list))
	occValues.t.Store(nt)
	return uint8(len(t.list))
}

func occValue(i uint8) string { return occValues.t.Load().list[i] }

func compactOccupant(o Occupant) roomOccupant {
	return roomOccupant{nick: o.Nick, status: o.Status, role: occIndex(o.Role), aff: occIndex(o.Affiliation), show: occIndex(o.Show)}
}

func (o roomOccupant) occupant() Occupant {
	return Occupant{Nick: o.nick, Role: occValue(o.role), Affiliation: occValue(o.aff), Show: occValue(o.show), Status: o.status}
}

func (l occupantList) get(nick string) (Occupant, bool) {
	for _, o := range l {
		if o.nick == nick {
			return o.occupant(), true
		}
	}
	return Occupant{}, false
}

func (l *occupantList) set(o Occupant) {
	c := compactOccupant(o)
	for i := range *l {
		if (*l)[i].nick == o.Nick {
			(*l)[i] = c
			return
		}
	}
	if len(*l) == cap(*l) {
		*l = slices.Grow(*l, len(*l)/8+1)
	}
	*l = append(*l, c)
}

func (l *occupantList) del(nick string) {
	*l = slices.DeleteFunc(*l, func(o roomOccupant) bool { return o.nick == nick })
}

type (
	evRoomJoin struct {
		resource, room, nick, password string
		hist                           HistoryRequest
	}
	evRoomLeave struct {
		resource, room string
	}
	evRoomSubjectSet struct {
		room, subject string
	}
	// evRoomAdmin is a muc#admin set from one of the user's resources.
	evRoomAdmin struct {
		reply          *iqReply
		resource, room string
		items          []RoomChange
	}
	// evRoomAdminGet is a muc#admin get (a list of the room's
	// occupants by role or affiliation) from one of the user's resources.
	evRoomAdminGet struct {
		reply             *iqReply
		resource, room    string
		roomJID           jid.JID
		role, affiliation string
	}
	// evRoomInvite is an invitation from one of the user's resources.
	evRoomInvite struct {
		resource, room, contact, reason string
		el                              *Element // for an error
	}
	// evRoomIQ is an IQ from one of the user's resources to an occupant.
	evRoomIQ struct {
		reply                *iqReply
		key                  string // type, namespace, name
		resource, room, nick string
	}
	evRoomJoined struct {
		gen       int
		room      string
		self      Occupant
		occupants []Occupant
		subject   string
	}
	evRoomError struct {
		gen  int
		room string
		err  error
	}
	evRoomPresence struct {
		gen  int
		room string
		o    Occupant
	}
	evRoomLeft struct {
		gen                int
		room, nick, reason string
		kicked             bool
	}
	evRoomNick struct {
		gen                   int
		room, oldNick, newNic string
	}
	evRoomSubject struct {
		gen               int
		room, subject, by string
	}
)

// RoomSink methods of core's sink: they post to the user (its drain).
func (s *sink) RoomJoined(r string, self Occupant, occ []Occupant, subject string) {
	s.u.post(evRoomJoined{gen: s.gen, room: r, self: self, occupants: occ, subject: subject})
}
func (s *sink) RoomError(r string, err error) { s.u.post(evRoomError{gen: s.gen, room: r, err: err}) }
func (s *sink) RoomPresence(r string, o Occupant) {
	s.u.post(evRoomPresence{gen: s.gen, room: r, o: o})
}
func (s *sink) RoomLeft(r, nick, reason string, kicked bool) {
	s.u.post(evRoomLeft{gen: s.gen, room: r, nick: nick, reason: reason, kicked: kicked})
}
func (s *sink) RoomNick(r, oldNick, newNick string) {
	s.u.post(evRoomNick{gen: s.gen, room: r, oldNick: oldNick, newNic: newNick})
}
func (s *sink) RoomSubject(r, subject, by string) {
	s.u.post(evRoomSubject{gen: s.gen, room: r, subject: subject, by: by})
}

func (s *sink) RoomEcho(ctx context.Context, m Message) error {
	c := s.u.c
	s.u.stampRoomMessage(&m)
	if s.u.relay != nil {
		return c.relayToXMPP(ctx, s.u, envelope{Kind: kindMessage, Msg: m})
	}
	if c.link.up.Load() {
		els, _, _ := c.renderRoomMessage(&store.Account{ID: s.acctID, JID: s.u.bare, Label: s.u.label}, m)
		sent := len(els) > 0
		for _, el := range els {
			if err := c.send(el); err != nil {
				sent = false
				break
			}
		}
		if sent {
			c.counters.toXMPP.Inc()
			c.stats.toXMPP.Add(1)
			return nil
		}
	}
	held := m // only this path keeps a pointer: m itself stays off the heap
	return s.Deliver(ctx, &held)
}

// groupSession returns the live session as a GroupSession, or nil.
func (u *user) groupSession() GroupSession {
	if l := u.live.Load(); l != nil {
		gs, _ := l.s.(GroupSession)
		return gs
	}
	return nil
}

// publishRooms updates the snapshot the outbox uses to fan room messages
// out to joined resources.
func (u *user) publishRooms() { u.publishView(nil) }

// publishView is publishRooms with one room shown as joining while its
// new resources get the room's state (settling): its resources may write
// to it, but the messages for it wait (outbox, relay) until the state is
// written and the room is published again. A live message written in
// between would reach a resource before its self-presence, history and
// subject (XEP-0045 puts live messages after them; a client may drop
// it), or overtake the history the archive is still reading.
func (u *user) publishView(settling *room) {
	view := make([]roomView, 0, len(u.rooms))
	for _, r := range u.rooms {
		addr := r.address
		if !r.joined {
			if len(r.pending) > 0 {
				view = append(view, roomView{addr: addr, res: []string{}, joining: true}) // room messages wait for it
			}
			continue
		}
		res := slices.Clone([]string(r.resources))
		sort.Strings(res)
		view = append(view, roomView{addr: addr, res: res, joining: r == settling})
	}
	u.roomsView.Store(&view)
}

// roomView is a room's entry in user.roomsView.
type roomView struct {
	addr    string
	res     []string // joined resources, sorted; empty while joining
	joining bool     // messages for the room wait (see publishView)
}

// lookupView finds a room in the published view.
func (u *user) lookupView(room string) (res []string, ok bool) {
	rv, ok := u.roomView(room)
	return rv.res, ok
}

func (u *user) roomView(room string) (roomView, bool) {
	if v := u.roomsView.Load(); v != nil {
		for _, rv := range *v {
			if rv.addr == room {
				return rv, true
			}
		}
	}
	return roomView{}, false
}

// roomResources returns the resources joined to a room (any goroutine).
func (u *user) roomResources(room string) []string {
	res, _ := u.lookupView(room)
	return res
}

func (u *user) handleRoom(ev userEvent) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	switch ev := ev.(type) {
	case evRoomJoin:
		r := u.rooms.get(ev.room)
		if r == nil {
			r = &room{address: ev.room, wanted: ev.nick, nick: ev.nick, password: ev.password}
			u.rooms = append(u.rooms, r)
		}
		if r.resources.has(ev.resource) {
			// Already in: a presence update, or a nick change.
			if ev.nick != r.nick {
				r.wanted = ev.nick
				if gs := u.groupSession(); gs != nil {
					if err := gs.ChangeNick(ctx, ev.room, ev.nick); err != nil {
						u.sendRoomError(ev.room, ev.nick, ev.resource, err)
					}
				}
			}
			return
		}
		u.reconcileSession()
		if r.joined {
			// Another resource joins a room the user is in: show it the room.
			r.resources.add(ev.resource)
			u.publishView(r)
			u.sendRoomState(r, ev.resource, ev.nick != r.nick, ev.hist)
			u.publishRooms()
			return
		}
		r.takeHist(ev.resource)
		r.hist = append(r.hist, resourceHistory{ev.resource, ev.hist})
		r.pending.add(ev.resource)
		u.publishRooms()
		if len(r.pending) == 1 {
			gs := u.groupSession()
			if gs == nil {
				u.sendRoomError(ev.room, ev.nick, ev.resource, NewError(stanza.ServiceUnavailable, "this gateway has no group chats"))
				u.rooms.del(ev.room)
				return
			}
			var err error
			if hj, ok := gs.(HistoryJoiner); ok && ev.hist.Limited() {
				err = hj.JoinRoomHistory(ctx, ev.room, ev.nick, ev.password, ev.hist)
			} else {
				err = gs.JoinRoom(ctx, ev.room, ev.nick, ev.password)
			}
			if err != nil {
				u.failRoom(r, err)
			}
		}
	case evRoomLeave:
		r := u.rooms.get(ev.room)
		if r == nil {
			return
		}
		wasJoined := r.resources.has(ev.resource)
		r.resources.del(ev.resource)
		r.pending.del(ev.resource)
		r.takeHist(ev.resource)
		if wasJoined {
			p := u.roomPresence(r, r.nick, ev.resource, "unavailable", Occupant{Nick: r.nick, Role: "none", Affiliation: "none"}, "110")
			_ = u.c.send(p)
		}
		if len(r.resources) == 0 && len(r.pending) == 0 {
			if gs := u.groupSession(); gs != nil {
				_ = gs.LeaveRoom(ctx, ev.room)
			}
			u.rooms.del(ev.room)
		}
		u.publishRooms()
		u.reconcileSession()
	case evRoomIQ:
		u.occupantIQ(ev)
	case evRoomAdmin:
		u.roomAdmin(ctx, ev)
	case evRoomAdminGet:
		u.roomAdminGet(ev)
	case evRoomOwner:
		u.roomOwner(ev)
	case evRoomInfo:
		u.roomInfo(ev)
	case evRoomInvite:
		u.roomInvite(ctx, ev)
	case evRoomSubjectSet:
		if gs := u.groupSession(); gs != nil {
			_ = gs.SetSubject(ctx, ev.room, ev.subject)
		}
	case evRoomJoined:
		r := u.rooms.get(ev.room)
		if ev.gen != u.gen || r == nil {
			return
		}
		if len(ev.occupants) >= churnOccupants {
			// The occupants of a large room (and, on IRC, the channel's
			// members) are long-lived state built among the garbage of
			// the join: see package memtrim. Not for every room: joins
			// come all the time on a busy gateway, and each would keep
			// the collector busy for a second.
			memtrim.Churn()
		}
		r.joined = true
		r.nick = ev.self.Nick
		r.subject = ev.subject
		r.occupants = make(occupantList, 0, len(ev.occupants)+1)
		for _, o := range ev.occupants {
			r.occupants.set(o)
		}
		r.occupants.set(ev.self)
		for _, res := range r.pending {
			r.resources.add(res)
		}
		pending := r.pending
		r.pending = nil
		u.publishView(r)
		for _, res := range pending {
			u.sendRoomState(r, res, r.nick != r.wanted, r.takeHist(res))
		}
		u.publishRooms()
	case evRoomError:
		r := u.rooms.get(ev.room)
		if ev.gen != u.gen || r == nil {
			return
		}
		if r.joined && len(r.pending) == 0 {
			// About a room the user is in (a refused nick change): the
			// resources are told, from the nick they asked for, and stay.
			for _, res := range r.resources {
				u.sendRoomError(r.address, r.wanted, res, ev.err)
			}
			r.wanted = r.nick
			return
		}
		u.failRoom(r, ev.err)
	case evRoomPresence:
		r := u.rooms.get(ev.room)
		if ev.gen != u.gen || r == nil || !r.joined {
			return
		}
		r.occupants.set(ev.o)
		u.broadcastRoom(r, func(res string) outgoing {
			codes := []string(nil)
			if ev.o.Nick == r.nick {
				codes = []string{"110"}
			}
			return u.roomPresence(r, ev.o.Nick, res, "", ev.o, codes...)
		})
	case evRoomLeft:
		r := u.rooms.get(ev.room)
		if ev.gen != u.gen || r == nil || !r.joined {
			return
		}
		o, _ := r.occupants.get(ev.nick)
		o.Nick, o.Role = ev.nick, "none"
		r.occupants.del(ev.nick)
		self := ev.nick == r.nick
		u.broadcastRoom(r, func(res string) outgoing {
			var codes []string
			if ev.kicked {
				codes = append(codes, "307")
			}
			if self {
				codes = append(codes, "110")
			}
			p := u.roomPresence(r, ev.nick, res, "unavailable", o, codes...)
			p.reason = ev.reason
			return p
		})
		if self {
			u.rooms.del(ev.room)
			u.publishRooms()
			u.reconcileSession()
		}
	case evRoomNick:
		r := u.rooms.get(ev.room)
		if ev.gen != u.gen || r == nil || !r.joined {
			return
		}
		o, ok := r.occupants.get(ev.oldNick)
		if !ok {
			o = Occupant{Role: "participant", Affiliation: "none"}
		}
		r.occupants.del(ev.oldNick)
		self := ev.oldNick == r.nick
		u.broadcastRoom(r, func(res string) outgoing {
			codes := []string{"303"}
			if self {
				codes = append(codes, "110")
			}
			p := u.roomPresence(r, ev.oldNick, res, "unavailable", o, codes...)
			p.newNick = ev.newNic
			return p
		})
		o.Nick = ev.newNic
		r.occupants.set(o)
		if self {
			r.nick = ev.newNic
		}
		u.broadcastRoom(r, func(res string) outgoing {
			var codes []string
			if self {
				codes = []string{"110"}
			}
			return u.roomPresence(r, ev.newNic, res, "", o, codes...)
		})
	case evRoomSubject:
		r := u.rooms.get(ev.room)
		if ev.gen != u.gen || r == nil || !r.joined {
			return
		}
		r.subject = ev.subject
		u.broadcastRoom(r, func(res string) outgoing { return u.subjectMessage(r, res, ev.by) })
	}
}

// failRoom tells the resources waiting to join that it failed.
func (u *user) failRoom(r *room, err error) {
	for _, res := range r.pending {
		u.sendRoomError(r.address, r.wanted, res, err)
	}
	r.pending, r.hist = nil, nil
	if len(r.resources) == 0 {
		u.rooms.del(r.address)
	}
	u.publishRooms()
	u.reconcileSession()
}

func (u *user) roomJID(room, nick string) string {
	j := u.c.local(u.label, room) + "@" + u.c.jid.Domainpart()
	if nick != "" {
		j += "/" + nick
	}
	return j
}

func (u *user) sendRoomError(room, nick, resource string, err error) {
	se := toStanzaError(err)
	p := u.c.stanza("presence", u.c.local(u.label, room), nick, u.bare+"/"+resource, "error")
	p.Add(NewElement(nsMUC, "x"))
	p.Add(se.element())
	_ = u.c.send(p)
}

// roomPresence renders an occupant's presence for one resource.
func (u *user) roomPresence(r *room, nick, resource, typ string, o Occupant, codes ...string) *occupantPresence {
	p := &occupantPresence{room: u.roomJID(r.address, ""), to: u.bare + "/" + resource, typ: typ, codes: codes}
	u.setOccupant(p, r, nick, o)
	return p
}

// setOccupant fills p with the occupant's nick, show, status, role,
// affiliation and item jid: the user's own resource for its own
// presence (status 110), else the occupant's contact, if the transport
// names one.
func (u *user) setOccupant(p *occupantPresence, r *room, nick string, o Occupant) {
	p.nick, p.show, p.status = nick, "", ""
	if p.typ == "" {
		p.show, p.status = o.Show, o.Status
	}
	p.role, p.affiliation = o.Role, o.Affiliation
	if p.role == "" {
		p.role = "participant"
	}
	if p.affiliation == "" {
		p.affiliation = "none"
	}
	p.jid = ""
	if slices.Contains(p.codes, "110") {
		p.jid = p.to
	} else if oc, ok := u.c.t.(OccupantContacts); ok {
		if addr := oc.OccupantContact(r.address, nick); addr != "" {
			p.jid = u.c.local(u.label, addr) + "@" + u.c.jid.Domainpart()
		}
	}
}

// occupantPresence is an occupant's presence to one resource, written
// without an element tree (see outgoing): joining a channel sends one
// for every member, and their trees (four elements, their attributes and
// the from) were most of what joining a busy channel allocated.
type occupantPresence struct {
	room, nick, to    string // from is room/nick
	typ               string // "" (available) or "unavailable"
	show, status      string // available only
	affiliation, role string
	jid               string   // the item's jid, if known
	newNick           string   // the item's nick: the new one (303)
	reason            string   // the item's reason, and the presence's status (a kick's, a part's)
	codes             []string // status codes
}

// stanzaHeader gives the room's bare JID as the from: link.send checks
// its domain, and room/nick would be made for that alone.
func (p *occupantPresence) stanzaHeader() (name, from, to string) { return "presence", p.room, p.to }

// appendTo writes what appendStanza writes for the same presence built as
// an element (TestOccupantPresenceWrittenAsElement holds them together).
func (p *occupantPresence) appendTo(b []byte) ([]byte, bool) {
	b = append(b, `<presence xmlns="`+xmppcomponent.NSAccept+`" from="`...)
	b = appendEscaped(b, p.room, true)
	if p.nick != "" {
		b = append(b, '/')
		b = appendEscaped(b, p.nick, true)
	}
	b = append(b, '"')
	b = appendAttr(b, "to", p.to)
	b = appendAttr(b, "type", p.typ)
	b = append(b, ` id="`...)
	b = appendRandomID(b) // as the encoder adds to a stanza without one
	b = append(b, `">`...)
	if p.show != "" {
		b = appendTextElement(b, "show", p.show)
	}
	if p.status != "" {
		b = appendTextElement(b, "status", p.status)
	}
	b = append(b, `<x xmlns="`+nsMUCUser+`"><item`...)
	b = appendAttr(b, "affiliation", p.affiliation)
	b = appendAttr(b, "role", p.role)
	b = appendAttr(b, "jid", p.jid)
	b = appendAttr(b, "nick", p.newNick)
	b = append(b, '>')
	if p.reason != "" {
		b = appendTextElement(b, "reason", p.reason)
	}
	b = append(b, "</item>"...)
	for _, c := range p.codes {
		b = append(b, `<status`...)
		b = appendAttr(b, "code", c)
		b = append(b, "></status>"...)
	}
	b = append(b, "</x>"...)
	if p.reason != "" {
		b = appendTextElement(b, "status", p.reason)
	}
	return append(b, "</presence>"...), true
}

// appendTextElement appends <name>text</name> (a name of the parent's
// namespace).
func appendTextElement(b []byte, name, text string) []byte {
	b = append(b, '<')
	b = append(b, name...)
	b = append(b, '>')
	b = appendEscaped(b, text, false)
	b = append(b, "</"...)
	b = append(b, name...)
	return append(b, '>')
}

func (u *user) subjectMessage(r *room, resource, by string) *Element {
	m := u.c.stanza("message", u.c.local(u.label, r.address), by, u.bare+"/"+resource, "groupchat")
	m.SetAttr("id", randomID())
	subj := NewElement("", "subject")
	subj.Text = r.subject
	return m.Add(subj)
}

// sendRoomState shows a resource that just joined the occupants, itself
// (status 110, and 210 when the network gave another nick than asked),
// the history it asked for from the archive, and the subject, in
// XEP-0045's order.
func (u *user) sendRoomState(r *room, resource string, renamed bool, h HistoryRequest) {
	others := make([]Occupant, 0, len(r.occupants))
	for _, o := range r.occupants {
		if o.nick != r.nick {
			others = append(others, o.occupant())
		}
	}
	slices.SortFunc(others, func(a, b Occupant) int { return strings.Compare(a.Nick, b.Nick) })
	// One presence, refilled for each occupant: send has written it
	// when it returns.
	p := u.roomPresence(r, "", resource, "", Occupant{})
	for _, o := range others {
		u.setOccupant(p, r, o.Nick, o)
		_ = u.c.send(p)
	}
	codes := []string{"110"}
	if renamed {
		codes = append(codes, "210")
	}
	self, _ := r.occupants.get(r.nick)
	_ = u.c.send(u.roomPresence(r, r.nick, resource, "", self, codes...))
	u.sendArchiveHistory(r, resource, h)
	_ = u.c.send(u.subjectMessage(r, resource, ""))
}

func (u *user) broadcastRoom(r *room, render func(resource string) outgoing) {
	for _, res := range r.resources {
		_ = u.c.send(render(res))
	}
}

// occupantIQ answers an IQ from one of the user's resources to an occupant
// of a room. A resource that is not in the room (or still joining it)
// gets not-acceptable: to a self-ping, "join again". In the room, a ping
// is answered for the occupant (the gateway's own or a legacy user, who
// has no XMPP client to answer), item-not-found when no occupant has
// that nick (XEP-0410: the client's nick changed); other IQs are not
// relayed to the legacy network.
func (u *user) occupantIQ(ev evRoomIQ) {
	r := u.rooms.get(ev.room)
	if r == nil || !r.joined || !r.resources.has(ev.resource) {
		ev.reply.error(errNotInRoom)
		return
	}
	isVersion := ev.key == "get "+version.NS+" query"
	if ev.key != "get "+ping.NS+" ping" && !isVersion {
		ev.reply.error(NewError(stanza.ServiceUnavailable, "not supported by this room's occupants"))
		return
	}
	if ev.nick == r.nick && isVersion {
		// The user's own client answers for itself.
		ev.reply.error(NewError(stanza.ServiceUnavailable, "that is you: ask your own client"))
		return
	}
	if ev.nick == r.nick {
		ev.reply.result(nil) // a self-ping (XEP-0410): the resource is in
		return
	}
	if _, ok := r.occupants.get(ev.nick); !ok {
		ev.reply.error(NewError(stanza.ItemNotFound, "no occupant of this room is named "+quote(ev.nick)))
		return
	}
	// Another occupant: the ping or version request goes to them where
	// the network can (as a MUC service forwards it to the occupant's
	// client).
	addr := ""
	if oc, ok := u.c.t.(OccupantContacts); ok {
		addr = oc.OccupantContact(r.address, ev.nick)
	}
	if isVersion {
		v, _ := u.groupSession().(ContactVersioner)
		u.c.contactVersion(ev.reply, v, addr)
		return
	}
	p, _ := u.groupSession().(ContactPinger)
	if addr == "" {
		p = nil
	}
	u.c.pingContact(ev.reply, p, addr)
}

// roomAdmin hands a moderation request (kick, voice, op, ban) from a
// resource in the room to the session, if its network takes them.
func (u *user) roomAdmin(ctx context.Context, ev evRoomAdmin) {
	r := u.rooms.get(ev.room)
	if r == nil || !r.joined || !r.resources.has(ev.resource) {
		ev.reply.error(NewError(stanza.NotAcceptable, "join the room before moderating it"))
		return
	}
	gs := u.groupSession()
	rm, ok := gs.(RoomModerator)
	if !ok {
		ev.reply.error(NewError(stanza.FeatureNotImplemented, "this network's rooms cannot be moderated from here"))
		return
	}
	for i, it := range ev.items {
		if it.Mask != "" {
			continue
		}
		if it.Nick == "" {
			// Named by JID: the occupant who is that contact.
			if oc, ok := u.c.t.(OccupantContacts); ok {
				for _, o := range r.occupants {
					if oc.OccupantContact(r.address, o.nick) == it.contact {
						ev.items[i].Nick = o.nick
						break
					}
				}
			}
			if ev.items[i].Nick == "" {
				ev.reply.error(NewError(stanza.ItemNotFound, "no occupant of this room has that JID"))
				return
			}
			continue
		}
		if _, ok := r.occupants.get(it.Nick); !ok && it.Nick != r.nick {
			ev.reply.error(NewError(stanza.ItemNotFound, "no occupant of this room is named "+quote(it.Nick)))
			return
		}
	}
	if err := rm.ModerateRoom(ctx, ev.room, ev.items); err != nil {
		ev.reply.error(err)
		return
	}
	ev.reply.result(nil)
}

// roomAdminGet answers a resource in the room with one of its lists: the
// occupants with a role or affiliation, or (outcast) the network's ban
// list, asked for off the drain.
func (u *user) roomAdminGet(ev evRoomAdminGet) {
	r := u.rooms.get(ev.room)
	if r == nil || !r.joined || !r.resources.has(ev.resource) {
		ev.reply.error(NewError(stanza.NotAcceptable, "join the room before asking for its lists"))
		return
	}
	q := NewElement(nsMUCAdmin, "query")
	if ev.affiliation != "outcast" {
		oc, _ := u.c.t.(OccupantContacts)
		add := func(o Occupant, self bool) {
			role, aff := cmp.Or(o.Role, "participant"), cmp.Or(o.Affiliation, "none")
			if (ev.role != "" && role != ev.role) || (ev.affiliation != "" && aff != ev.affiliation) {
				return
			}
			it := NewElement("", "item", "affiliation", aff, "role", role, "nick", o.Nick)
			if self {
				it.SetAttr("jid", u.bare)
			} else if oc != nil {
				if addr := oc.OccupantContact(r.address, o.Nick); addr != "" {
					it.SetAttr("jid", u.c.local(u.label, addr)+"@"+u.c.jid.Domainpart())
				}
			}
			q.Add(it)
		}
		self, ok := r.occupants.get(r.nick)
		if !ok {
			self = Occupant{Nick: r.nick}
		}
		add(self, true)
		for _, o := range r.occupants {
			if o.nick != r.nick {
				add(o.occupant(), false)
			}
		}
		ev.reply.result(q)
		return
	}
	bl, ok := u.groupSession().(RoomBanLister)
	if !ok {
		ev.reply.error(NewError(stanza.FeatureNotImplemented, "this network's rooms have no ban list"))
		return
	}
	u.c.g.goWork("room-bans", 30*time.Second, func(ctx context.Context) {
		bans, err := bl.RoomBans(ctx, ev.room)
		if err != nil {
			ev.reply.error(err)
			return
		}
		for _, b := range bans {
			it := NewElement("", "item", "affiliation", "outcast", "jid", banJID(ev.roomJID, b.Mask))
			var why []string
			if b.By != "" {
				why = append(why, "set by "+b.By)
			}
			if !b.At.IsZero() {
				why = append(why, "on "+b.At.UTC().Format("2006-01-02 15:04 MST"))
			}
			if len(why) > 0 {
				it.AddText("", "reason", strings.Join(why, " "))
			}
			q.Add(it)
		}
		ev.reply.result(q)
	})
}

// banJID is how a ban list shows a pattern: as itself where it reads as
// a JID the same way back (an IRC mask nick!user@host is a JID with
// localpart nick!user, as *!*@spam.example), else as the room's JID with
// the pattern as resource. A muc#admin set takes both back (roomAdminIQ).
func banJID(room jid.JID, mask string) string {
	if j, err := jid.Parse(mask); err == nil && j.String() == mask && j.Localpart() != "" && !j.Domain().Equal(room.Domain()) {
		return mask
	}
	return room.String() + "/" + mask
}

// roomInvite hands an invitation from a resource in the room to the
// session; a message error when it cannot go.
func (u *user) roomInvite(ctx context.Context, ev evRoomInvite) {
	r := u.rooms.get(ev.room)
	if r == nil || !r.joined || !r.resources.has(ev.resource) {
		u.c.replyError(ev.el, NewError(stanza.NotAcceptable, "join the room before inviting to it"))
		return
	}
	ri, ok := u.groupSession().(RoomInviter)
	if !ok {
		u.c.replyError(ev.el, NewError(stanza.FeatureNotImplemented, "this network has no invitations"))
		return
	}
	if err := ri.InviteToRoom(ctx, ev.room, ev.contact, ev.reason); err != nil {
		u.c.replyError(ev.el, err)
	}
}
