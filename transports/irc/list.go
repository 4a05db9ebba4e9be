package irc

import (
	"cmp"
	"context"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ergochat/irc-go/ircmsg"
	"mellium.im/xmpp/stanza"

	"transportd/core"
)

// Channel lists (IRC LIST), for core's disco#items on a server's JID:
// biboumi's way of letting clients browse a network's channels.

// maxListed bounds a list kept in memory (large networks have tens of
// thousands of channels).
const maxListed = 10000

type listResult struct {
	rooms []core.RoomItem
	err   error
}

// listReq is one ListRooms waiting for its answer.
type listReq struct{ reply chan listResult }

// listing is a LIST in progress on a connection; every request that
// came before it started gets its result.
type listing struct {
	reqs  []*listReq
	rooms []core.RoomItem
}

type evList struct {
	server string
	req    *listReq
}

// ListRooms implements core.RoomLister: the channels of an IRC server,
// the most populated first. It connects to the server if needed (the
// connection is kept a while, as for a private chat).
func (s *session) ListRooms(ctx context.Context, server string) ([]core.RoomItem, error) {
	req := &listReq{reply: make(chan listResult, 1)}
	r, err := await(ctx, s, evList{server: server, req: req}, req.reply, "the IRC server "+server+" did not send its channel list in time")
	if err != nil {
		return nil, err
	}
	return r.rooms, r.err
}

// await posts a request to the session's drain and waits for its answer
// on reply; late is the error text when ctx ends first.
func await[T any](ctx context.Context, s *session, ev event, reply <-chan T, late string) (T, error) {
	var zero T
	if err := s.postCtx(ctx, ev); err != nil {
		return zero, err
	}
	select {
	case r := <-reply:
		return r, nil
	case <-ctx.Done():
		return zero, core.NewError(stanza.RemoteServerTimeout, late)
	case <-s.done.Chan():
		return zero, core.Temporary(errClosed)
	}
}

func (s *session) list(server string, req *listReq) {
	if !s.opts.allowedServer(server) {
		req.reply <- listResult{err: core.NewError(stanza.NotAllowed, "this gateway does not connect to "+server+"; allowed IRC servers: "+s.allowedText())}
		return
	}
	n := s.network(server, "")
	n.lastPrivate = monoNow()
	r := n.rare()
	r.listWaiting = append(r.listWaiting, req)
	if n.conn != nil {
		n.startList()
		return
	}
	n.ensureConnected()
}

// startList sends LIST for the requests waiting, unless one runs.
func (n *network) startList() {
	if n.netRare == nil || n.listing != nil || len(n.listWaiting) == 0 || n.conn == nil {
		return
	}
	n.listing = &listing{reqs: n.listWaiting}
	n.listWaiting = nil
	if err := n.conn.send(ircmsg.MakeMessage(nil, "", "LIST")); err != nil {
		n.endList(core.Temporary(err))
	}
}

// listed takes an RPL_LIST: me channel visible :topic.
func (n *network) listed(msg inLine) {
	if n.netRare == nil {
		return
	}
	l := n.listing
	if l == nil || len(msg.Params) < 3 || len(l.rooms) >= maxListed || !n.isChannel(msg.Params[1]) {
		return
	}
	users, _ := strconv.Atoi(msg.Params[2])
	topic := ""
	if len(msg.Params) >= 4 {
		topic = plainText(msg.Params[3])
	}
	l.rooms = append(l.rooms, core.RoomItem{Address: msg.Params[1] + "%" + n.server, Name: plainText(msg.Params[1]), Users: users, Topic: topic})
}

// endList answers the requests of the LIST in progress, then starts the
// next one.
func (n *network) endList(err error) {
	if n.netRare == nil {
		return
	}
	l := n.listing
	n.listing = nil
	if l == nil {
		return
	}
	sort.SliceStable(l.rooms, func(i, j int) bool {
		if l.rooms[i].Users != l.rooms[j].Users {
			return l.rooms[i].Users > l.rooms[j].Users
		}
		return l.rooms[i].Name < l.rooms[j].Name
	})
	for _, r := range l.reqs {
		r.reply <- listResult{rooms: l.rooms, err: err}
	}
	n.startList()
}

// failLists answers every list request of the network with err.
func (n *network) failLists(err error) {
	if n.netRare == nil {
		return
	}
	n.failBans(err)
	n.endModes("", core.RoomConfig{}, err)
	n.failCTCP("", err)
	n.endList(err)
	for _, r := range n.listWaiting {
		r.reply <- listResult{err: err}
	}
	n.listWaiting = nil
}

// Ban lists (MODE #channel b, answered by 367 RPL_BANLIST lines and 368
// RPL_ENDOFBANLIST), for core's muc#admin get of a room's outcasts.

// maxBans bounds a ban list kept in memory (servers cap theirs at some
// hundreds: InspIRCd 100 by default, Libera 500).
const maxBans = 1000

type banResult struct {
	bans []core.RoomBan
	err  error
}

// banReq is one RoomBans waiting for its channel's list.
type banReq struct{ reply chan banResult }

// banListing is a channel's ban list being received; every request that
// came while it runs gets its result.
type banListing struct {
	reqs []*banReq
	bans []core.RoomBan
	at   time.Time // MODE b sent
}

// banWait is how long a ban list is waited for before it is asked again
// (a server that never ends one would otherwise hold every later request).
const banWait = 30 * time.Second

type evBans struct {
	room string
	req  *banReq
}

// RoomBans implements core.RoomBanLister.
func (s *session) RoomBans(ctx context.Context, room string) ([]core.RoomBan, error) {
	req := &banReq{reply: make(chan banResult, 1)}
	r, err := await(ctx, s, evBans{room: room, req: req}, req.reply, "the IRC server did not send the channel's ban list in time")
	if err != nil {
		return nil, err
	}
	return r.bans, r.err
}

// askBans sends MODE #channel b for a request, unless the channel's list
// is being received already.
func (s *session) askBans(room string, req *banReq) {
	n, ch := s.joinedChannel(room)
	if ch == nil {
		req.reply <- banResult{err: core.NewError(stanza.NotAcceptable, "not in this channel on IRC now: join the room again")}
		return
	}
	reqs := []*banReq{req}
	r := n.rare()
	if bl := r.banLists[ch.folded]; bl != nil {
		if time.Since(bl.at) < banWait {
			bl.reqs = append(bl.reqs, req)
			return
		}
		reqs = append(bl.reqs, req) // asked again, for all
	}
	if err := n.send(ircmsg.MakeMessage(nil, "", "MODE", ch.name, "b")); err != nil {
		req.reply <- banResult{err: core.Temporary(err)}
		return
	}
	if r.banLists == nil {
		r.banLists = map[string]*banListing{}
	}
	r.banLists[ch.folded] = &banListing{reqs: reqs, at: time.Now()}
}

// banned takes a 367 line: me channel mask [who [time]].
func (n *network) banned(p []string) {
	if len(p) < 3 || n.netRare == nil {
		return
	}
	bl := n.banLists[n.fold(p[1])]
	if bl == nil || len(bl.bans) >= maxBans || !validMask(p[2]) || strings.ContainsFunc(p[2], func(r rune) bool { return !printable(r) }) {
		return // full, or a mask no MODE -b could name back
	}
	b := core.RoomBan{Mask: p[2]}
	if len(p) >= 4 {
		who, _ := ircmsg.ParseNUH(p[3])
		b.By = plainText(cmp.Or(who.Name, p[3]))
	}
	if len(p) >= 5 {
		if t, err := strconv.ParseInt(p[4], 10, 64); err == nil && t > 0 {
			b.At = time.Unix(t, 0)
		}
	}
	bl.bans = append(bl.bans, b)
}

// endBans answers the requests for a channel's ban list: with the list
// (368), or with err (the server refused it).
func (n *network) endBans(channel string, err error) {
	if n.netRare == nil {
		return
	}
	key := n.fold(channel)
	bl := n.banLists[key]
	if bl == nil {
		return
	}
	delete(n.banLists, key)
	if len(n.banLists) == 0 {
		n.banLists = nil
	}
	for _, r := range bl.reqs {
		r.reply <- banResult{bans: bl.bans, err: err}
	}
}

// failBans answers every ban list request of the network with err.
func (n *network) failBans(err error) {
	if n.netRare == nil {
		return
	}
	for key := range n.banLists {
		n.endBans(key, err)
	}
}
