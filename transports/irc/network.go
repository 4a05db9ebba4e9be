package irc

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unique"

	"github.com/ergochat/irc-go/ircmsg"
	"golang.org/x/time/rate"
	"mellium.im/xmpp/stanza"

	"transportd/core"
)

// netList is a session's networks, one per server host: a slice, as
// users are on one or a few (a map of one took some 220 bytes).
type netList []*network

func (l netList) get(server string) *network {
	for _, n := range l {
		if n.server == server {
			return n
		}
	}
	return nil
}

// del removes a server's network into a new slice: the session's loops
// over its networks (tick, shutdown) may drop one as they go.
func (l *netList) del(server string) {
	if l.get(server) != nil {
		*l = slices.DeleteFunc(slices.Clone(*l), func(n *network) bool { return n.server == server })
	}
}

// network is the session's side of one IRC server: its connection (or
// the attempt to get one), the channels, the messages waiting for their
// echo. Owned by the session goroutine.
type network struct {
	s      *session
	server string
	cfg    netConfig
	// *watchState: the contacts' presence on this network (monitor.go);
	// nil while the network has no contacts to watch.
	*watchState

	conn     *conn
	gen      int // connection attempt; events of older ones are stale
	dialing  bool
	everUp   bool   // registered at least once: failures are retried
	held     bool   // lines queued for the drain's flush (conn.enqueue)
	labelSeq uint32 // the last pending line's seq (and label)
	// fenceAt is the seq the fence PING out covers (0: none out; see
	// fence).
	fenceAt  uint32
	caps     capSet
	failures int32 // consecutive failed attempts (backoff)
	retry    *time.Timer

	me       self
	wantNick string    // nick to register with / asked for
	feat     *features // ISUPPORT: shared, read only

	channels chanList
	batches  map[string]*batch
	pending  []*pendingLine // sent lines waiting for an echo or an error
	waiting  []*sendRequest // messages waiting for the connection

	// lastPrivate is when a private chat or a list last used the
	// connection (monoNow; 0: never, or long enough ago).
	lastPrivate int64
	// *netRare: what users seldom ask of a network; nil until asked
	// (rare), so that every user's network stays in the 512-byte size
	// class (it was 704 with these fields).
	*netRare
}

// netRare is a network's state for its lists, ban lists, CTCP requests,
// mode requests, join histories, nick changes, ERROR lines and failures.
type netRare struct {
	lastErr  string        // why the connection was lost, for the user (lastError)
	authErr  string        // credentials refused: no retry (authError)
	errorMsg string        // text of the server's last ERROR line
	nickRoom string        // room the last nick change came from
	ctcp     *rate.Limiter // made at the first CTCP request

	// listWaiting wait for a LIST; listing is the LIST in progress.
	listWaiting []*listReq
	listing     *listing
	// banLists are the channels' ban lists being received, by folded
	// name; nil while none.
	banLists map[string]*banListing
	// ctcpWait are CTCP PINGs and VERSIONs waiting for an answer (ping.go).
	ctcpWait []*ctcpReq
	// modeReqs wait for their channel's modes (roomconfig.go).
	modeReqs []*modeReq
	// joinHist is the history asked for by the joins of rooms not yet
	// reported, by folded channel name; nil while none (setJoinHistory).
	joinHist map[string]core.HistoryRequest
}

// tidyRare drops the network's netRare when it holds nothing.
func (n *network) tidyRare() {
	r := n.netRare
	if r != nil && r.lastErr == "" && r.authErr == "" && r.errorMsg == "" && r.nickRoom == "" && r.ctcp == nil && r.listWaiting == nil && r.listing == nil &&
		r.banLists == nil && r.ctcpWait == nil && r.modeReqs == nil && r.joinHist == nil {
		n.netRare = nil
	}
}

// rare is the network's netRare, made if need be: for writing. Readers
// check n.netRare for nil.
// lastError is why the connection was lost or refused, for the user; ""
// while it is up.
func (n *network) lastError() string {
	if n.netRare == nil {
		return ""
	}
	return n.netRare.lastErr
}

// authError is the refusal of the network's credentials; "" if none.
func (n *network) authError() string {
	if n.netRare == nil {
		return ""
	}
	return n.netRare.authErr
}

func (n *network) rare() *netRare {
	if n.netRare == nil {
		n.netRare = &netRare{}
	}
	return n.netRare
}

// chanList is a network's channels. A slice, not a map by folded name:
// a Go map holds eight slots at least, some 250 bytes for a user's one
// channel; finding a name among a user's channels is a few string
// comparisons per line.
type chanList []*channel

// get returns the channel of a folded name, or nil.
func (l chanList) get(key string) *channel {
	for _, ch := range l {
		if ch.folded == key {
			return ch
		}
	}
	return nil
}

// del forgets the channel of a folded name.
func (l *chanList) del(key string) {
	for i, ch := range *l {
		if ch.folded == key {
			*l = slices.Delete(*l, i, i+1)
			return
		}
	}
}

// channel is an IRC channel the user is in (on XMPP, on IRC, or both).
type channel struct {
	name     string // as the server spells it (or as asked, before the JOIN)
	folded   string // name folded by the server's case mapping
	room     string // core's address for it; "" until the user joins the room
	key      string // the channel's key (password)
	xmpp     bool   // the user is in the room: core called JoinRoom, not LeaveRoom
	reported bool   // RoomJoined was sent since xmpp became true
	autojoin bool
	joined   bool // on IRC
	joining  bool // JOIN sent, end of NAMES not seen
	parting  bool
	lost     bool // the connection was lost while joined: report differences on rejoin
	selfWas  string

	members memberSet  // by folded nick
	next    *memberSet // NAMES being received
	topic   string
	topicBy string
	backlog []*core.Message // lines received while the user is not in the room
}

type member struct {
	nick    istr
	user    istr
	host    istr
	account istr
	modes   string // prefix modes held
	away    bool
	awayMsg string
}

// istr is an interned string (package unique), "" when zero: a channel's
// members are the same people in every user's view of the channel, and
// their nicks, user names and hosts are then kept once, where each user's
// connection kept its own copy (some 50 bytes of every member of every
// channel of every user). The member keeps the handle, which keeps the
// one copy: a string taken from it would let the unique map forget it,
// and the next user's view make another.
type istr struct{ h unique.Handle[string] }

func intern(s string) istr {
	if s == "" {
		return istr{}
	}
	return istr{unique.Make(s)}
}

func (s istr) String() string {
	if s.h == (unique.Handle[string]{}) {
		return ""
	}
	return s.h.Value()
}

// batch is an IRCv3 batch being received.
type batch struct {
	typ    string
	params []string
	label  string
	parent *batch
	lines  []inLine
}

// pendingSend is one message from the XMPP user, sent as one or more lines.
type pendingSend struct {
	room      string // channel messages: core's room address (reflected)
	contact   string // for failures
	xmppID    string
	legacyID  string
	body      string
	remaining int  // echoes still expected
	reflect   bool // reflected once written (the server does not echo)
	settled   bool // the writer is done with its lines and Send was answered
	failed    bool
}

type pendingLine struct {
	label  string
	target string // folded
	ps     *pendingSend
	sent   int64  // monoNow
	seq    uint32 // in the order sent (network.labelSeq)
}

const (
	maxBatches    = 32
	maxBatchLines = 5000
	pendingTTL    = time.Minute
	parkTTL       = 30 * time.Second
)

func newNetwork(s *session, server string, cfg netConfig) *network {
	n := &network{
		s:        s,
		server:   server,
		cfg:      cfg,
		wantNick: cfg.nick,
		feat:     noFeatures,
	}
	n.applyISupport()
	return n
}

// channelFor returns the channel of a name, creating it.
func (n *network) channelFor(name string) *channel {
	key := n.fold(name)
	if ch := n.channels.get(key); ch != nil {
		return ch
	}
	ch := &channel{name: name, folded: key} // members made when the first arrives
	n.channels = append(n.channels, ch)
	return ch
}

// dropChannelIfUnused forgets a channel nobody needs.
func (n *network) dropChannelIfUnused(ch *channel) {
	if !ch.xmpp && !ch.autojoin && !ch.joined && !ch.joining {
		n.channels.del(n.fold(ch.name))
	}
}

// ISUPPORT.

// applyISupport makes the server's channel types known to the
// transport (n.feat changed).
func (n *network) applyISupport() {
	n.s.t.learnChanTypes(n.server, n.feat.chanTyps)
}

// features are what a server said in ISUPPORT (the tokens this package
// reads), and what follows from them.
type features struct {
	m        map[string]string
	casemap  string
	chanTyps string
	prefixM  string // prefix modes, highest first ("qaohv")
	prefixS  string // their symbols ("~&@%+")
	chanM    [4]string
}

// noFeatures are a server's before it said anything.
var noFeatures = newFeatures(nil)

func newFeatures(m map[string]string) *features {
	f := &features{m: m}
	f.casemap = strings.ToLower(m["CASEMAPPING"])
	f.chanTyps = m["CHANTYPES"]
	if _, ok := m["CHANTYPES"]; !ok {
		f.chanTyps = defaultChanTypes
	}
	f.prefixM, f.prefixS = "ov", "@+"
	if p, ok := m["PREFIX"]; ok {
		if strings.HasPrefix(p, "(") {
			if i := strings.IndexByte(p, ')'); i > 0 && len(p)-i-1 == i-1 {
				f.prefixM, f.prefixS = p[1:i], p[i+1:]
			}
		} else if p == "" {
			f.prefixM, f.prefixS = "", ""
		}
	}
	f.chanM = [4]string{"beI", "k", "l", "imnpst"}
	if cm, ok := m["CHANMODES"]; ok {
		parts := strings.SplitN(cm, ",", 4)
		for i := range f.chanM {
			f.chanM[i] = ""
			if i < len(parts) {
				f.chanM[i] = parts[i]
			}
		}
	}
	return f
}

// fold is the server's case mapping (ISUPPORT CASEMAPPING; rfc1459 when
// not said).
func (n *network) fold(s string) string {
	i := 0
	for i < len(s) && !n.folds(s[i]) {
		i++
	}
	if i == len(s) {
		return s // no copy: most nicks and channel names are folded already
	}
	b := []byte(s)
	for ; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= 'A' && c <= 'Z':
			b[i] = c + 32
		case n.feat.casemap == "ascii":
		case c == '[':
			b[i] = '{'
		case c == ']':
			b[i] = '}'
		case c == '\\':
			b[i] = '|'
		case c == '~' && n.feat.casemap != "rfc1459-strict":
			b[i] = '^'
		}
	}
	return string(b)
}

// folds reports whether fold changes a byte.
func (n *network) folds(c byte) bool {
	switch {
	case c >= 'A' && c <= 'Z':
		return true
	case n.feat.casemap == "ascii":
		return false
	case c == '[', c == ']', c == '\\':
		return true
	case c == '~':
		return n.feat.casemap != "rfc1459-strict"
	}
	return false
}

func (n *network) isChannel(target string) bool {
	return target != "" && strings.IndexByte(n.feat.chanTyps, target[0]) >= 0
}

func (n *network) isMe(nick string) bool {
	return nick != "" && n.fold(nick) == n.fold(n.me.nick)
}

// Connection life.

func (n *network) ensureConnected() {
	if n.conn != nil || n.dialing || n.authError() != "" {
		return
	}
	if n.retry != nil {
		n.retry.Stop()
		n.retry = nil
	}
	n.connect()
}

func (n *network) connect() {
	n.gen++
	n.dialing = true
	n.retry = nil
	gen := n.gen
	nick := n.wantNick
	if nick == "" {
		nick = n.s.defaultNick()
		n.wantNick = nick
	}
	cfg := dialConfig{
		server:      n.server,
		addr:        net.JoinHostPort(n.server, strconv.Itoa(n.cfg.port)),
		tls:         n.cfg.tls,
		tlsInsecure: n.s.opts.tlsInsecure,
		tlsTrusted:  n.cfg.fingerprint,
		charsets:    n.cfg.lineCharsets(),
		nick:        nick,
		username:    n.cfg.username,
		realname:    n.cfg.realname,
		timeout:     n.s.opts.connectTimeout,
		floodBurst:  n.cfg.floodBurst,
		floodRate:   n.cfg.floodRate,
		pingEvery:   n.s.opts.pingInterval,
		pingWait:    n.s.opts.pingTimeout,
		trace:       n.s.opts.trace,
		dial:        n.s.t.dial,
		bind:        n.s.opts.bind,
	}
	if cfg.trace {
		cfg.log = n.s.logger()
	}
	if n.s.opts.identd {
		cfg.ident = identName(n.s.acct.JID)
	}
	if cfg.username == "" {
		cfg.username = usernameFrom(nick)
	}
	if n.cfg.auth == authSASL && n.cfg.password != "" {
		cfg.saslPass = n.cfg.password
		cfg.saslUser = n.cfg.account
	}
	if n.cfg.auth == authPass {
		cfg.serverPass = n.cfg.password
	}
	s := n.s
	dialIRC(n.s.ctx, cfg, func(c *conn, w *welcome, err error) {
		if err != nil {
			reportPanic(s.sink, s.logger(), err) // a panic while the poller read the registration
			s.post(evConnFailed{n: n, gen: gen, err: err})
			return
		}
		if !s.post(evConnected{n: n, gen: gen, c: c, w: w}) {
			c.nc.Close() // the session ended meanwhile
		}
	})
}

// usernameFrom makes an ident from a nick: ASCII letters and digits.
func usernameFrom(nick string) string {
	var b strings.Builder
	for i := 0; i < len(nick) && b.Len() < 10; i++ {
		c := nick[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		}
	}
	if b.Len() == 0 {
		return "transportd"
	}
	return b.String()
}

func (n *network) connected(c *conn, w *welcome) {
	n.dialing = false
	n.conn = c
	c.charsets.Store(n.cfg.lineCharsets()) // changed while dialing
	c.upAt = time.Now().Unix()
	n.everUp = true
	n.failures = 0
	if n.netRare != nil {
		n.lastErr, n.errorMsg = "", ""
		n.tidyRare()
	}
	old := n.me.nick
	n.me = self{nick: w.nick, user: w.user, host: w.host}
	n.caps = w.caps
	n.noteReplays()
	n.feat = shareISupport(n.server, w.isupport)
	n.applyISupport()
	n.batches = nil
	n.pending, n.fenceAt = nil, 0
	s, gen := n.s, n.gen
	c.start(func(m inLine, wait bool) bool {
		if wait {
			s.post(evLine{n: n, gen: gen, msg: m})
			return true
		}
		return s.tryPost(evLine{n: n, gen: gen, msg: m})
	}, func(err error) {
		reportPanic(s.sink, s.logger(), err)
		s.post(evClosed{n: n, gen: gen, err: err})
	})
	s.logger().Info("connected to IRC", "irc_server", n.server, "nick", w.nick, "caps", w.caps.len())
	if n.cfg.auth == authNickServ && n.cfg.password != "" {
		_ = c.send(ircmsg.MakeMessage(nil, "", "PRIVMSG", "NickServ", "IDENTIFY "+oneLine(n.cfg.password)))
	}
	for _, m := range n.cfg.commands {
		_ = c.send(m)
	}
	// The nick changed across a reconnection: rooms learn it now.
	if old != "" && old != w.nick {
		for _, ch := range n.sortedChannels() {
			if ch.reported {
				ch.selfWas = old
			}
		}
	}
	for _, ch := range n.sortedChannels() {
		if (ch.xmpp || ch.autojoin) && !ch.joined && !ch.joining {
			n.join(ch)
		}
	}
	n.flushParked()
	n.startList()
	n.monitorLost() // a list of an earlier connection (none if it was closed)
	n.monitor()
	s.updateState()
}

func (n *network) connectFailed(err error) {
	n.dialing = false
	text := errorText(err)
	ce, _ := err.(*connError)
	s := n.s
	s.logger().Info("IRC connection failed", "irc_server", n.server, "error", text)
	if ce != nil && ce.auth {
		n.rare().authErr = text
	}
	if !n.everUp || (ce != nil && ce.permanent) {
		// Never connected (or never will with these settings): the rooms
		// being joined fail; nothing is retried.
		var roomErr error
		switch {
		case ce != nil && ce.nickInUse:
			roomErr = core.NewError(stanza.Conflict, text)
		case ce != nil && ce.auth:
			roomErr = core.NewError(stanza.NotAuthorized, text)
		case ce != nil && ce.permanent:
			roomErr = core.NewError(stanza.NotAcceptable, text)
		case isTimeout(err):
			roomErr = core.NewError(stanza.RemoteServerTimeout, text)
		default:
			roomErr = core.NewError(stanza.RemoteServerNotFound, text)
		}
		for _, ch := range n.sortedChannels() {
			switch {
			case ch.xmpp && !ch.reported:
				s.roomError(ch.room, roomErr)
			case ch.reported:
				// Reconnecting will not work: the user is out of the room.
				s.roomNotice(ch.room, "Cannot reconnect to IRC: "+text)
				s.rooms.RoomLeft(ch.room, n.me.nick, text, false)
			}
			ch.xmpp, ch.reported = false, false
		}
		for _, r := range n.waiting {
			r.answer("", roomErr)
		}
		n.waiting = nil
		n.failLists(roomErr)
		if n.everUp || n.authError() != "" {
			// Kept, so the session shows the refusal and later joins
			// fail at once.
			n.rare().lastErr = text
			s.updateState()
			return
		}
		s.nets.del(n.server)
		n.gen++
		s.updateState()
		return
	}
	n.rare().lastErr = text
	n.scheduleRetry()
	s.updateState()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded)
}

// closed: the connection is gone. Rooms are told, and kept: the channels
// are joined again once reconnected.
func (n *network) closed(err error) {
	n.conn = nil
	n.monitorLost()
	text := errorText(err)
	if n.netRare != nil && n.errorMsg != "" {
		text = n.errorMsg
	}
	n.rare().lastErr = text
	n.s.logger().Info("IRC connection lost", "irc_server", n.server, "error", text)
	for _, ch := range n.sortedChannels() {
		if ch.joined || ch.joining {
			ch.lost = ch.joined || ch.lost
			ch.joined, ch.joining, ch.parting = false, false, false
			ch.next = nil
		}
		if ch.reported {
			n.s.roomNotice(ch.room, "Disconnected from IRC: "+text+"; reconnecting")
		}
		if !ch.xmpp && !ch.autojoin {
			n.channels.del(n.fold(ch.name))
		}
	}
	for _, pl := range n.pending {
		// A message whose lines the writer still holds is answered by
		// session.written instead.
		if pl.ps.settled && !pl.ps.failed && pl.ps.room != "" && pl.ps.remaining > 0 {
			// Sent but never echoed (or, from a server that does not
			// echo, not behind an answered fence): it may not have
			// reached the server.
			pl.ps.failed = true
			n.s.failed(pl.ps.contact, pl.ps.legacyID, core.NewError(stanza.RecipientUnavailable, "the IRC connection was lost; the message may not have been sent"))
		}
	}
	n.pending, n.fenceAt = nil, 0
	n.batches = nil
	n.failLists(core.NewError(stanza.RemoteServerTimeout, "the IRC connection was lost: "+text))
	if len(n.channels) == 0 && !n.s.persistent() && monoSince(n.lastPrivate) > n.s.t.timing.privateIdle {
		n.s.nets.del(n.server)
		n.gen++
		n.s.updateState()
		return
	}
	n.scheduleRetry()
	n.s.updateState()
}

func (n *network) scheduleRetry() {
	d := n.s.backoff(int(n.failures))
	n.failures++
	gen, s := n.gen, n.s
	if n.retry != nil {
		n.retry.Stop()
	}
	n.retry = time.AfterFunc(d, func() { s.post(evRetry{n: n, gen: gen}) })
	n.rare().lastErr = strings.TrimSuffix(n.lastError(), ".") + "; retrying in " + d.Round(time.Second).String()
}

// maybeQuit disconnects a network the user no longer uses.
func (n *network) maybeQuit() {
	if n.s.persistent() || monoSince(n.lastPrivate) < n.s.t.timing.privateIdle || len(n.waiting) > 0 || (n.netRare != nil && (n.listing != nil || len(n.listWaiting) > 0)) {
		return
	}
	for _, ch := range n.channels {
		if ch.xmpp || ch.autojoin || (ch.joining && !ch.parting) {
			return
		}
	}
	n.drop(n.s.opts.quitMessage)
}

// drop quits the network's connection, if any, with a message and
// forgets the network (its channels included).
func (n *network) drop(quitMessage string) {
	if c := n.conn; c != nil {
		go c.quit(quitMessage, 2*time.Second)
	}
	n.gen++
	if n.retry != nil {
		n.retry.Stop()
	}
	n.s.nets.del(n.server)
	n.s.updateState()
}

func (n *network) tick(now time.Time) {
	kept := n.pending[:0]
	for _, pl := range n.pending {
		if monoSince(pl.sent) < pendingTTL {
			kept = append(kept, pl)
		}
	}
	clear(n.pending[len(kept):])
	n.pending = kept
	waiting := n.waiting[:0]
	for _, r := range n.waiting {
		if now.Sub(r.since) > parkTTL {
			r.answer("", core.Temporary(errNotWritten{errClosed}))
			continue
		}
		waiting = append(waiting, r)
	}
	clear(n.waiting[len(waiting):])
	n.waiting = waiting
	if n.conn != nil && n.lastPrivate != 0 && monoSince(n.lastPrivate) > n.s.t.timing.privateIdle {
		n.lastPrivate = 0
		n.maybeQuit()
	}
	n.poll(now)
}

func (n *network) sortedChannels() []*channel {
	out := slices.Clone(n.channels)
	slices.SortFunc(out, func(a, b *channel) int { return strings.Compare(a.folded, b.folded) })
	return out
}

// Channels.

func (n *network) join(ch *channel) {
	msg, err := joinMessage(ch.name, ch.key)
	if err == nil {
		err = n.send(msg)
	}
	if err != nil {
		if ch.xmpp && !ch.reported {
			n.s.roomError(ch.room, core.WrapError(stanza.NotAcceptable, "cannot join "+ch.name+": "+err.Error(), err))
			ch.xmpp = false
			n.dropChannelIfUnused(ch)
		}
		return
	}
	ch.joining = true
}

func (n *network) part(ch *channel) {
	if !ch.joined && !ch.joining {
		n.dropChannelIfUnused(ch)
		return
	}
	if ch.parting || n.conn == nil {
		return
	}
	msg, err := reasonMessage("PART", ch.name, "")
	if err == nil && n.send(msg) == nil {
		ch.parting = true
	}
}

// reportJoined tells core the user is in the channel, then replays what
// was said while nobody was in the room.
func (n *network) reportJoined(ch *channel) {
	if !ch.xmpp || ch.reported {
		return
	}
	ch.reported = true
	selfKey := n.fold(n.me.nick)
	var occ []core.Occupant
	for k, m := range ch.members.all() {
		if k != selfKey {
			occ = append(occ, n.occupant(m))
		}
	}
	sort.Slice(occ, func(i, j int) bool { return occ[i].Nick < occ[j].Nick })
	me := ch.members.get(selfKey)
	if me == nil {
		me = &member{nick: intern(n.me.nick)}
	}
	n.s.rooms.RoomJoined(ch.room, n.occupant(me), occ, ch.topic)
	var hist core.HistoryRequest
	if n.netRare != nil {
		hist = n.joinHist[ch.folded]
		n.setJoinHistory(ch, core.HistoryRequest{})
	}
	for _, m := range hist.Filter(ch.backlog) {
		m.Contact = ch.room
		n.s.deliver(m)
	}
	ch.backlog = nil
	if n.replaysHistory() && !hist.None {
		_ = n.send(chathistoryLatest(ch.name, atoi(n.feat.m["CHATHISTORY"]), hist))
	}
}

// chathistoryLatest asks for a channel's latest messages on joining it:
// 50 at most (or the server's limit, or the client's), those after the
// client's since if it gave one.
func chathistoryLatest(channel string, serverMax int, hist core.HistoryRequest) ircmsg.Message {
	limit := 50
	if serverMax > 0 && serverMax < limit {
		limit = serverMax
	}
	if hist.Max > 0 && hist.Max < limit {
		limit = hist.Max
	}
	after := "*"
	if !hist.Since.IsZero() {
		after = "timestamp=" + hist.Since.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	return ircmsg.MakeMessage(nil, "", "CHATHISTORY", "LATEST", channel, after, strconv.Itoa(limit))
}

// setJoinHistory keeps the history a join of ch asked for until the room
// is reported (a zero request forgets it).
func (n *network) setJoinHistory(ch *channel, h core.HistoryRequest) {
	if !h.Limited() {
		if n.netRare == nil {
			return
		}
		delete(n.joinHist, ch.folded)
		if len(n.joinHist) == 0 {
			n.joinHist = nil
			n.tidyRare() // most joins ask for history: no netRare left for it
		}
		return
	}
	r := n.rare()
	if r.joinHist == nil {
		r.joinHist = map[string]core.HistoryRequest{}
	}
	r.joinHist[ch.folded] = h
}

func (n *network) hasCap(c string) bool { return n.caps.has(c) }

// replaysHistory says whether the server replays a channel's history on
// join: CHATHISTORY in a batch.
func (n *network) replaysHistory() bool {
	return (n.hasCap("draft/chathistory") || n.hasCap("chathistory")) && n.hasCap("batch")
}

// noteReplays publishes replaysHistory for other goroutines, after the
// capabilities changed.
func (n *network) noteReplays() {
	s, on := n.s, n.replaysHistory()
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	switch {
	case on && s.replays == nil:
		s.replays = map[string]bool{n.server: true}
	case on:
		s.replays[n.server] = true
	default:
		delete(s.replays, n.server)
	}
}

// replayable says whether a message with this msgid may come again in a
// CHATHISTORY replay (core.Message.Replayable): only with a msgid, from a
// server that offers chathistory.
func (n *network) replayable(msgid string) bool {
	return msgid != "" && (n.hasCap("draft/chathistory") || n.hasCap("chathistory"))
}

// occupant shows a member the way XEP-0045 does, with biboumi's mapping
// of channel modes: q/a owner, o admin (moderators), h member
// (moderator), v member (participant), others participants.
func (n *network) occupant(m *member) core.Occupant {
	o := core.Occupant{Nick: plainText(m.nick.String()), Role: "participant", Affiliation: "none"}
	for i := 0; i < len(n.feat.prefixM); i++ {
		if strings.IndexByte(m.modes, n.feat.prefixM[i]) < 0 {
			continue
		}
		switch n.feat.prefixM[i] {
		case 'q', 'a':
			o.Role, o.Affiliation = "moderator", "owner"
		case 'o':
			o.Role, o.Affiliation = "moderator", "admin"
		case 'h':
			o.Role, o.Affiliation = "moderator", "member"
		default:
			o.Affiliation = "member"
		}
		break
	}
	if m.away {
		o.Show = "away"
		o.Status = plainText(m.awayMsg)
	}
	return o
}

// park keeps a message until the network is connected and its channel
// joined (or parkTTL passed).
func (n *network) park(r *sendRequest) {
	n.waiting = append(n.waiting, r)
}

func (n *network) flushParked() {
	if n.conn == nil {
		return
	}
	waiting := n.waiting
	n.waiting = nil
	for _, r := range waiting {
		n.s.send(r)
	}
}

// Sending.

// send queues a line on the connection, if there is one.
func (n *network) send(m ircmsg.Message) error {
	if n.conn == nil {
		return errClosed
	}
	return n.conn.send(m)
}

func (n *network) queued() int {
	if n.conn == nil {
		return 0
	}
	return n.conn.queued()
}

// withLabel adds a label tag to a serialised line.
func withLabel(line []byte, label string) []byte {
	out := make([]byte, 0, len(line)+len(label)+8)
	out = append(append(out, "@label="...), label...)
	if len(line) > 0 && line[0] == '@' {
		return append(append(out, ';'), line[1:]...) // beside its other tags
	}
	return append(append(out, ' '), line...)
}

func (n *network) newLabel() string {
	n.labelSeq++
	return "t" + strconv.FormatUint(uint64(n.labelSeq), 10)
}

// hand gives the lines of one message from the user to the connection,
// all of them or none, and remembers them for their echo (or failure).
// The request is answered once the lines are written (see
// session.written), or at once when nothing was handed over. ps is nil
// for raw commands.
//
// At most once: an error that Send turns into a retry (core.Temporary)
// is only ever given while no byte of the message reached the socket;
// once a line is handed over, whatever happens to it is reported, never
// retried.
func (n *network) hand(req *sendRequest, msgs []ircmsg.Message, target string, ps *pendingSend) {
	c := n.conn
	if c == nil {
		req.answer("", core.Temporary(errNotWritten{errClosed}))
		return
	}
	labels := ps != nil && n.hasCap("labeled-response") && n.hasCap("batch")
	lines := make([][]byte, len(msgs))
	var pls []*pendingLine
	now := monoNow()
	for i, msg := range msgs {
		if ps != nil {
			pl := &pendingLine{target: n.fold(target), ps: ps, sent: now}
			if labels {
				pl.label = n.newLabel()
			} else {
				n.labelSeq++
			}
			pl.seq = n.labelSeq
			pls = append(pls, pl)
		}
		b, err := serialize(msg)
		if err != nil {
			req.answer("", core.WrapError(stanza.NotAcceptable, "cannot send this to IRC", err))
			return
		}
		if len(pls) > i && pls[i].label != "" {
			// The label tag written in front rather than with SetTag:
			// that makes a tag map per line (an eighth of what relaying
			// a message allocated). newLabel's values need no escaping.
			b = withLabel(b, pls[i].label)
		}
		lines[i] = b
	}
	if c.queued()+len(lines) > outQueue {
		req.answer("", core.Temporary(errNotWritten{errQueueFull}))
		return
	}
	if !req.claim() {
		return // Send gave up waiting: nothing is sent
	}
	s, total := n.s, len(lines)
	err := c.sendGroup(lines, func(written int) {
		// With ctl's requests, which never wait: this may be called by
		// the session's own drain (flush), which a full event queue
		// would leave waiting for itself.
		ev := evWritten{n: n, c: c, req: req, ps: ps, written: written, total: total}
		if s.postCtl(ev) != nil {
			// The session ended: answer without it.
			req.answer(ev.verdict(false))
		}
	})
	if err != nil {
		req.answer("", core.Temporary(errNotWritten{err}))
		return
	}
	n.held = true
	n.pending = append(n.pending, pls...)
	if ps != nil && !labels && !n.echo() {
		n.fence()
	}
}

// fenceToken starts the token of a fence PING (then the seq it covers).
// Not keepaliveToken: the connection drops the PONGs to those unread.
const fenceToken = "tdfence-"

// fence settles the lines sent to a server that neither echoes them nor
// labels its replies. Such a server says nothing of a message it relayed,
// only of one it refused (404, 401...), and that reply names the target
// alone. A PING written behind the lines is a fence: a server answers a
// client's lines in order, so once its PONG comes (fenced), any refusal
// of a line before it has come too, and those lines are done with.
// Without it they stayed pending a minute (pendingTTL): a refusal then
// went to the oldest message to the same target, one delivered long
// before, and a user sending fast kept a minute of lines in memory
// (10 to 23 MiB more resident in the relay benchmark). One
// fence is out at a time; the lines sent meanwhile get the next.
func (n *network) fence() {
	if n.fenceAt != 0 || n.conn == nil || n.labelSeq == 0 {
		return
	}
	n.fenceAt = n.labelSeq
	b, err := serialize(ircmsg.MakeMessage(nil, "", "PING", fenceToken+strconv.FormatUint(uint64(n.fenceAt), 10)))
	if err == nil {
		// Held, as the lines before it: written with them by the drain's
		// flush. In the queue's order, behind them, but taking none of
		// the flood limiter's tokens (paid): those are the user's.
		err = n.conn.enqueue(false, true, outLine{b: b, paid: true})
	}
	if err != nil {
		n.fenceAt = 0 // the queue is full or closed: the lines wait pendingTTL
		return
	}
	n.held = true
}

// fenced handles the PONG to a fence PING (token without fenceToken).
func (n *network) fenced(token string) {
	at, err := strconv.ParseUint(token, 10, 32)
	if err != nil || n.fenceAt == 0 || uint32(at) != n.fenceAt {
		return // not ours, or a connection's before
	}
	cover := n.fenceAt
	n.fenceAt = 0
	more := false
	n.pending = slices.DeleteFunc(n.pending, func(pl *pendingLine) bool {
		if pl.label != "" {
			return false
		}
		if int32(pl.seq-cover) <= 0 { // seq wraps
			return true
		}
		more = true
		return false
	})
	if len(n.pending) == 0 {
		n.pending = nil
	}
	if more && !n.echo() {
		n.fence()
	}
}

// errNotWritten wraps a send error that left every line of the message
// unwritten: Send may undo its send record and let the outbox retry.
type errNotWritten struct{ err error }

func (e errNotWritten) Error() string { return e.err.Error() }
func (e errNotWritten) Unwrap() error { return e.err }

// verdict is Send's answer once the writer is done with a message's
// lines. lost says the connection closed before the server echoed a
// message it was expected to echo.
func (ev evWritten) verdict(lost bool) (string, error) {
	id := ""
	if ev.ps != nil {
		id = ev.ps.legacyID
	}
	switch {
	case ev.written == 0:
		return "", core.Temporary(errNotWritten{errClosed})
	case ev.written < ev.total:
		return id, core.NewError(stanza.RecipientUnavailable, fmt.Sprintf("the IRC connection was lost after %d of the %d lines of this message; the rest was not sent", ev.written, ev.total))
	case lost:
		return id, core.NewError(stanza.RecipientUnavailable, "the IRC connection was lost; the message may not have been sent")
	}
	return id, nil
}

func (n *network) echo() bool { return n.hasCap("echo-message") }

// sendText sends a groupchat message; it is reflected when the server
// echoes it (echo-message), else once written.
func (n *network) sendText(req *sendRequest, ch *channel) {
	m := req.m
	msgs, err := textMessages("PRIVMSG", ch.name, m.Body, n.me)
	if err != nil {
		req.answer("", core.WrapError(stanza.NotAcceptable, "cannot send this to IRC: "+err.Error(), err))
		return
	}
	if len(msgs) == 0 {
		req.answer("", nil)
		return
	}
	ps := &pendingSend{room: ch.room, contact: m.Contact, xmppID: m.XMPPID, legacyID: newID(), body: m.Body, remaining: len(msgs), reflect: !n.echo()}
	n.hand(req, msgs, ch.name, ps)
}

// reflect shows the user's message in the room once IRC took it: at once
// where core offers it (RoomEcho), else through the outbox.
func (n *network) reflect(ps *pendingSend, msgid string, t time.Time) {
	id := msgid
	if id == "" {
		id = ps.legacyID
	}
	m := core.Message{Contact: ps.room, Groupchat: true, Nick: n.me.nick, Body: ps.body, XMPPID: ps.xmppID, LegacyID: id, Time: t, Replayable: n.replayable(msgid)}
	if msgid != "" {
		n.noteEchoed(msgid)
	}
	if e, ok := n.s.sink.(core.RoomEchoer); ok {
		// By value: a message per relayed line need not be on the heap.
		if err := e.RoomEcho(n.s.ctx, m); err != nil && n.s.ctx.Err() == nil {
			n.s.logger().Error("reflecting a room message", "error", err)
		}
		return
	}
	held := m
	n.s.deliver(&held)
}

// echoedKept is how many message ids of the user's own reflected
// messages a session remembers.
const echoedKept = 64

// noteEchoed remembers the id of one of the user's messages reflected
// outside the outbox, which therefore does not know it: a history replay
// (CHATHISTORY on a later join) must not show it again. Kept by the
// session, since the network goes when its last channel is left, as
// hashes of "server msgid" (idring: 512 bytes; a map of the strings was
// some 5 KB per user who talked).
func (n *network) noteEchoed(msgid string) { n.s.echoed.Add(echoedKept, n.server, ' ', msgid) }

func (n *network) wasEchoed(msgid string) bool { return n.s.echoed.Has(n.server, ' ', msgid) }

func (n *network) sendPrivate(req *sendRequest, nick string) {
	m := req.m
	if !validNick(nick) {
		req.answer("", core.NewError(stanza.JIDMalformed, "not a valid IRC nick"))
		return
	}
	msgs, err := textMessages("PRIVMSG", nick, m.Body, n.me)
	if err != nil {
		req.answer("", core.WrapError(stanza.NotAcceptable, "cannot send this to IRC: "+err.Error(), err))
		return
	}
	if len(msgs) == 0 {
		req.answer("", nil)
		return
	}
	ps := &pendingSend{contact: m.Contact, legacyID: newID(), remaining: len(msgs)}
	n.hand(req, msgs, nick, ps)
}

// refusedRaw are commands the server contact does not pass on: they
// would break the session's view of the connection.
var refusedRaw = map[string]bool{"CAP": true, "AUTHENTICATE": true, "PASS": true, "USER": true, "QUIT": true, "BATCH": true}

// sendRaw sends what the user wrote to the server contact: one IRC
// command per line, parsed and serialised again by ircmsg. Every line is
// checked before any is sent.
func (n *network) sendRaw(req *sendRequest) {
	var msgs []ircmsg.Message
	for _, line := range bodyLines(req.m.Body) {
		line = strings.TrimPrefix(line, "/")
		msg, err := ircmsg.ParseLine(line)
		if err != nil || msg.Source != "" || len(msg.AllTags()) > 0 {
			req.answer("", core.NewError(stanza.BadRequest, "write IRC commands to the server, one per line (like WHOIS nick)"))
			return
		}
		if refusedRaw[msg.Command] {
			req.answer("", core.NewError(stanza.NotAllowed, msg.Command+" is handled by the gateway"))
			return
		}
		msgs = append(msgs, msg)
	}
	if len(msgs) == 0 {
		req.answer("", nil)
		return
	}
	for _, msg := range msgs {
		if msg.Command == "NICK" && len(msg.Params) > 0 {
			n.wantNick = msg.Params[0]
		}
	}
	n.hand(req, msgs, "", nil)
}

// matchPending finds the line an echo or a reply is about: by label,
// else the oldest line to the same target.
func (n *network) matchPending(label, target string) *pendingLine {
	idx := -1
	for i, pl := range n.pending {
		if label != "" {
			if pl.label == label {
				idx = i
				break
			}
			continue
		}
		if target != "" && pl.target == n.fold(target) {
			idx = i
			break
		}
	}
	if idx < 0 {
		return nil
	}
	pl := n.pending[idx]
	n.pending = append(n.pending[:idx], n.pending[idx+1:]...)
	return pl
}

// memberSet is a channel's members by folded nick: a slice while there
// are few, a map beyond memberSliceMax. A Go map holds eight slots at
// least: a channel of one (the user alone in a channel, as in the side
// by side with biboumi) took some 330 bytes a user in a map, 24 in the
// slice; looking a nick up among memberSliceMax is a few comparisons.
type memberSet struct {
	few  []memberEntry
	many map[string]*member
}

type memberEntry struct {
	key string
	m   *member
}

const memberSliceMax = 16

func (s *memberSet) get(key string) *member {
	if s.many != nil {
		return s.many[key]
	}
	for _, e := range s.few {
		if e.key == key {
			return e.m
		}
	}
	return nil
}

func (s *memberSet) set(key string, m *member) {
	if s.many != nil {
		s.many[key] = m
		return
	}
	for i := range s.few {
		if s.few[i].key == key {
			s.few[i].m = m
			return
		}
	}
	if len(s.few) < memberSliceMax {
		s.few = append(s.few, memberEntry{key, m})
		return
	}
	s.many = make(map[string]*member, len(s.few)+1)
	for _, e := range s.few {
		s.many[e.key] = e.m
	}
	s.many[key] = m
	s.few = nil
}

func (s *memberSet) del(key string) {
	if s.many != nil {
		delete(s.many, key)
		return
	}
	for i, e := range s.few {
		if e.key == key {
			if s.few = slices.Delete(s.few, i, i+1); len(s.few) == 0 {
				s.few = nil
			}
			return
		}
	}
}

func (s *memberSet) len() int {
	if s.many != nil {
		return len(s.many)
	}
	return len(s.few)
}

// all yields the members and their keys, in no particular order.
func (s *memberSet) all() iter.Seq2[string, *member] {
	return func(yield func(string, *member) bool) {
		if s.many != nil {
			for k, m := range s.many {
				if !yield(k, m) {
					return
				}
			}
			return
		}
		for _, e := range s.few {
			if !yield(e.key, e.m) {
				return
			}
		}
	}
}
