package irc

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/ergochat/irc-go/ircmsg"
	"golang.org/x/time/rate"
	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/internal/idring"
	"transportd/internal/queue"
	"transportd/internal/workers"
)

// session is one account's IRC side: a connection per server, the
// channels the user is in, what waits to be sent. One goroutine at a time
// owns all of it (drain, started while there are events to handle, see
// post); everything else posts events.
type session struct {
	t     *Transport
	acct  *core.Account
	sink  core.Sink
	rooms core.RoomSink // nopRooms if core's sink has no group chats
	opts  *options      // shared with other sessions: read only
	// records are the send records (nil without a state store).
	records *sendRecords

	// events holds at most eventQueue events (lines, connection news,
	// Send's requests); an idle session holds no array.
	events queue.Bounded[event]
	// ctl holds the requests of core's user goroutine (join, leave, nick,
	// subject), unbounded, so posting them never waits: that goroutine may
	// be what the session waits for (a full queue of core's user while the
	// session reports to it), and both would wait for a time-out. Drains
	// take them before the events. Network settings (the Configure
	// network command) go here too, so that a join made after them uses
	// them; and SendAsync's messages, so core's stanza reader never waits
	// either. ctlClosed: the session ended, nothing is taken any more.
	ctlMu sync.Mutex
	ctl   []event
	// done is closed when the session ended (shut down, or a drain
	// panicked); Run returns then, and onEnd (Start's done) is called.
	done    queue.Done
	onEnd   func()
	stopCtx func() bool // undoes Start's AfterFunc
	// active is true while a goroutine owns the state: Start's first
	// drain, then others. Whoever sets it from false to true starts a drain.
	active    atomic.Bool
	ctlClosed bool // with ctlMu (here, it fills active's word)

	// Owned by the active goroutine.
	ctx       context.Context
	nets      netList
	netConf   map[string]netSettings
	netPass   map[string]string // per-network passwords and commands, by sealed-state key
	state     core.State
	stateText string
	tick      *time.Timer // evTick, timing.tick after armTick
	started   bool
	stopped   bool // shut down: events are only answered
	ticking   bool // tick is set
	// relayHeld: a SendAsync message failed temporarily; the later ones
	// fail too until core sends from its outbox (core.AsyncSender).
	relayHeld bool
	// inline: sendNow is writing a message from core's stanza reader.
	inline bool
	// echoed are the user's last messages reflected at once
	// (network.reflect; noteEchoed).
	echoed idring.Ring

	// watch: the contacts to watch, nicks by server (monitor.go).
	watch map[string][]string

	// replays holds the servers whose connection replays a channel's
	// history on join (network.noteReplays), for core's goroutines
	// (RoomReplaysHistory); guarded by ctlMu (a lock of its own was 8
	// bytes of every session, for a map read on joins).
	replays map[string]bool
}

type event interface{}

type (
	evJoin struct {
		room, nick, password string
		hist                 core.HistoryRequest
	}
	evLeave    struct{ room string }
	evNickReq  struct{ room, nick string }
	evTopicReq struct{ room, subject string }
	evInvite   struct{ room, contact string }
	evModerate struct {
		room  string
		items []core.RoomChange
	}
	evSend      struct{ req *sendRequest }
	evNetConfig struct {
		server   string
		ns       netSettings
		password string // "": unchanged
		clearPw  bool
		commands string // "": unchanged
		clearCmd bool
	}
	evConnected struct {
		n   *network
		gen int
		c   *conn
		w   *welcome
	}
	evConnFailed struct {
		n   *network
		gen int
		err error
	}
	evLine struct {
		n   *network
		gen int
		msg inLine
	}
	evClosed struct {
		n   *network
		gen int
		err error
	}
	evRetry struct {
		n   *network
		gen int
	}
	evTick    struct{}
	evStop    struct{}
	evWritten struct {
		n       *network
		c       *conn
		req     *sendRequest
		ps      *pendingSend // nil for raw commands
		written int          // lines written (the first ones)
		total   int
	}
)

// sendRequest is a message from the XMPP user waiting for the session.
type sendRequest struct {
	m     *core.Message
	reply chan sendResult // buffered: answer never blocks; nil with done
	// done, if not nil, is called with the answer instead (SendAsync),
	// once: answered tells; through async's answerAsync when set.
	done     func(id string, err error)
	async    *session
	answered atomic.Bool
	since    time.Time
	// state is reqNew until the session hands the message to the
	// connection (reqHanded) or Send gives up waiting (reqAbandoned),
	// whichever comes first.
	state atomic.Int32
}

const (
	reqNew = iota
	reqHanded
	reqAbandoned
)

// claim is called right before the lines are handed to the connection;
// false means Send gave up and nothing may be sent.
func (r *sendRequest) claim() bool { return r.state.CompareAndSwap(reqNew, reqHanded) }

func (r *sendRequest) answer(id string, err error) {
	if r.done != nil {
		if r.answered.CompareAndSwap(false, true) {
			if r.async != nil {
				r.async.answerAsync(r.done, id, err)
			} else {
				r.done(id, err)
			}
		}
		return
	}
	select {
	case r.reply <- sendResult{id, err}:
	default: // answered already
	}
}

type sendResult struct {
	id  string
	err error
}

// logger is the account's logger, asked of core each time (which makes
// it on demand: see core.Sink's Logger).
func (s *session) logger() *slog.Logger {
	if s.sink == nil {
		return slog.Default()
	}
	if l := s.sink.Logger(); l != nil {
		return l
	}
	return slog.Default()
}

func newSession(t *Transport, a *core.Account, sink core.Sink) *session {
	s := &session{
		t:      t,
		acct:   a,
		sink:   sink,
		opts:   t.sessionOptions(a.Defaults),
		events: queue.Bounded[event]{Max: eventQueue},
		state:  -1, // netConf and netPass are made when needed
	}
	s.records = newSendRecords(sink.Store())
	s.rooms = nopRooms{}
	if rs, ok := sink.(core.RoomSink); ok {
		s.rooms = rs
	}
	// Start's first drain owns the state first: events posted before it are
	// handled after it.
	s.active.Store(true)
	return s
}

const (
	// eventQueue is how many events may wait for the session; posting
	// blocks beyond (back-pressure on the connection's reader and on
	// sends). core's requests do not wait here (ctl).
	eventQueue = 32
)

// post hands an event to the session, starting a drain if none runs; it
// gives up (false) once Run has returned.
func (s *session) post(ev event) bool {
	if !s.events.Put(ev, &s.done, nil) {
		return false
	}
	s.wake()
	return true
}

// tryPost is post that does not wait: false if the queue is full.
func (s *session) tryPost(ev event) bool {
	if s.done.Closed() {
		return true // dropped, as post does
	}
	if !s.events.TryPut(ev) {
		return false
	}
	s.wake()
	return true
}

// wake starts a drain for an event just queued, unless one runs.
func (s *session) wake() {
	if s.active.CompareAndSwap(false, true) {
		workers.Go(s.drainEvents)
	}
}

// drain owns the session's state: it runs first (if not nil), then
// handles the queued events, and ends when there are none left. A session
// keeps no goroutine of its own while idle (a goroutine's stack keeps the
// size its deepest work needed: handling events goes through the store
// and core's outbox), so one is started for each burst of events, as the
// connection's writer is; at most one runs at a time (active).
func (s *session) drainEvents() { s.drain(nil) }

func (s *session) drain(first func()) {
	defer func() {
		if r := recover(); r != nil {
			s.panicked(r, debug.Stack())
		}
	}()
	if first != nil {
		first()
	}
	s.drainLoop()
}

// panicked ends the session after its owner panicked; active stays
// true: no drain starts again.
func (s *session) panicked(r any, stack []byte) {
	// As core's recovery of a panicking Run: the session ends.
	if pr, ok := s.sink.(core.PanicReporter); ok {
		pr.Panicked("irc session", r, stack)
	} else {
		s.logger().Error("panic recovered", "where", "irc session", "panic", fmt.Sprint(r), "stack", string(stack))
	}
	s.end()
	for ev, ok := s.takeCtl(); ok; ev, ok = s.takeCtl() {
		s.afterStop(ev)
	}
}

func (s *session) drainLoop() {
	for {
		if ev, ok := s.takeCtl(); ok {
			s.handle(ev)
			s.armTick()
			continue
		}
		if ev, ok := s.events.Take(); ok {
			s.handle(ev)
			s.armTick()
			continue
		}
		if s.flushHeld() {
			continue // what was written may have reports to handle
		}
		if !s.keepOwning() {
			return
		}
	}
}

// keepOwning gives the session up, unless an event was posted meanwhile
// (its poster found active still true and started no drain): then the
// caller owns the session again (true) and handles it, unless that
// poster started a new drain after all.
func (s *session) keepOwning() bool {
	s.active.Store(false)
	return (s.events.Len() > 0 || s.ctlLen() > 0) && s.active.CompareAndSwap(false, true)
}

// flushHeld writes what the drain queued on its connections (see
// conn.flush); false if nothing was queued.
func (s *session) flushHeld() bool {
	flushed := false
	for _, n := range s.nets {
		if n.held {
			n.held, flushed = false, true
			if n.conn != nil {
				n.conn.flush()
			}
		}
	}
	return flushed
}

// Run implements core.Session: Start, then wait until the session ended.
func (s *session) Run(ctx context.Context) {
	ended := make(chan struct{})
	s.Start(ctx, func() { close(ended) })
	<-ended
}

// Start implements core.SessionStarter. The work is done by drains (see drain):
// Start starts the session; when ctx ends, a drain shuts it down, and
// done is called once it has ended (or a drain panicked). No goroutine
// waits meanwhile.
func (s *session) Start(ctx context.Context, done func()) {
	s.ctx = ctx
	s.onEnd = done
	stop := func() { s.post(evStop{}) } // false if a drain panicked meanwhile
	s.stopCtx = afterFunc(ctx, stop)
	go s.drain(s.start)
}

// afterFunc is context.AfterFunc, calling core's session context's own
// AfterFunc directly: context.AfterFunc would wrap the call in a context
// of its own (some 200 bytes per user) and ask ctx for its Done channel,
// which core's session context makes only when asked (another 100).
func afterFunc(ctx context.Context, f func()) (stop func() bool) {
	if af, ok := ctx.(interface{ AfterFunc(func()) func() bool }); ok {
		return af.AfterFunc(f)
	}
	return context.AfterFunc(ctx, f)
}

// end ends the session: Run returns, Start's done is called. Called once, by the drain that
// shut the session down or panicked.
func (s *session) end() {
	if s.stopCtx != nil {
		s.stopCtx()
	}
	s.t.forget(s)
	// Nothing joins ctl after this: the drain that ends the session
	// answers what is in it (afterStop), so every SendAsync is answered.
	s.ctlMu.Lock()
	s.ctlClosed = true
	s.ctlMu.Unlock()
	s.done.Close()
	if s.onEnd != nil {
		s.onEnd()
	}
}

// start loads the settings and joins what is joined on connect.
func (s *session) start() {
	// Without the session's cancellation: database/sql asks a context
	// for its Done channel, which core's session context makes only when
	// asked (some 130 bytes per user, kept). A local read is quick.
	s.loadNetConfig(context.WithoutCancel(s.ctx))
	s.started = true
	s.updateState()
	s.autojoin()
}

// armTick sets the tick if something waits to expire: an idle session
// has no timer firing (200 idle users ticking every 5 s were 40 drains a
// second, and the garbage they made).
func (s *session) armTick() {
	if s.ticking || s.stopped || !s.started {
		return
	}
	for _, n := range s.nets {
		if len(n.pending) > 0 || len(n.waiting) > 0 || (n.conn != nil && n.lastPrivate != 0) || n.polled() {
			s.ticking = true
			if s.tick == nil {
				s.tick = time.AfterFunc(s.t.timing.tick, func() { s.post(evTick{}) })
			} else {
				s.tick.Reset(s.t.timing.tick)
			}
			return
		}
	}
}

// shutdown says QUIT on every connection, in parallel, briefly.
func (s *session) shutdown() {
	s.stopped = true
	if s.tick != nil {
		s.tick.Stop()
	}
	done := make(chan struct{}, len(s.nets))
	n := 0
	for _, nw := range s.nets {
		nw.gen++ // stale from now on
		if nw.retry != nil {
			nw.retry.Stop()
		}
		for _, r := range nw.waiting {
			r.answer("", core.Temporary(errNotWritten{errClosed}))
		}
		nw.failLists(core.Temporary(errClosed))
		nw.waiting = nil
		if c := nw.conn; c != nil {
			n++
			go func() {
				c.quit(s.opts.quitMessage, 2*time.Second)
				done <- struct{}{}
			}()
		}
	}
	for ; n > 0; n-- {
		<-done
	}
	// Requests that raced with the end, and the fate of lines written,
	// are answered by handle (stopped).
}

// afterStop answers the events that come after the shutdown: requests
// that raced with the end, and the fate of lines written.
func (s *session) afterStop(ev event) {
	switch e := ev.(type) {
	case evSend:
		e.req.answer("", core.Temporary(errNotWritten{errClosed}))
	case evAnswer:
		e.done(e.id, e.err)
	case evList:
		e.req.reply <- listResult{err: core.Temporary(errClosed)}
	case evBans:
		e.req.reply <- banResult{err: core.Temporary(errClosed)}
	case evRoomConfig:
		e.req.reply <- modeResult{err: core.Temporary(errClosed)}
	case evConfigure:
		e.reply <- core.Temporary(errClosed)
	case evCTCP:
		e.req.reply <- ctcpResult{err: core.Temporary(errClosed)}
	case evNetInfo:
		e.reply <- nil
	case evWritten:
		e.req.answer(e.verdict(false))
	case evConnected:
		e.c.close()
	}
}

func (s *session) handle(ev event) {
	if s.stopped {
		s.afterStop(ev)
		return
	}
	switch ev := ev.(type) {
	case evStop:
		s.shutdown()
		s.end()
	case evJoin:
		s.joinRoom(ev.room, ev.nick, ev.password, ev.hist)
	case evWatch:
		s.setWatch(ev.addrs)
	case evLeave:
		s.leaveRoom(ev.room)
	case evNickReq:
		s.changeNick(ev.room, ev.nick)
	case evTopicReq:
		s.setTopic(ev.room, ev.subject)
	case evModerate:
		s.moderate(ev.room, ev.items)
	case evInvite:
		s.invite(ev.room, ev.contact)
	case evSend:
		s.send(ev.req)
	case evAnswer:
		ev.done(ev.id, ev.err)
	case evList:
		s.list(ev.server, ev.req)
	case evBans:
		s.askBans(ev.room, ev.req)
	case evRoomConfig:
		s.askModes(ev.room, ev.req)
	case evConfigure:
		s.configure(ev)
	case evTyping:
		s.typing(ev)
	case evCTCP:
		s.ctcp(ev.contact, ev.req)
	case evNetInfo:
		ev.reply <- s.infos()
	case evDisconnect:
		s.disconnect(ev.server, ev.reason)
	case evNetConfig:
		s.setNetConf(ev.server, ev.ns)
		switch {
		case ev.clearPw:
			delete(s.netPass, netPasswordKey(ev.server))
		case ev.password != "":
			s.setNetPass(netPasswordKey(ev.server), ev.password)
		}
		switch {
		case ev.clearCmd:
			delete(s.netPass, netCommandsKey(ev.server))
		case ev.commands != "":
			s.setNetPass(netCommandsKey(ev.server), ev.commands)
		}
		if n := s.nets.get(ev.server); n != nil {
			n.cfg = s.configFor(ev.server)
			if n.conn != nil { // character sets and flood control apply at once
				n.conn.charsets.Store(n.cfg.lineCharsets())
				n.conn.lim.SetBurst(n.cfg.floodBurst)
				n.conn.lim.SetLimit(rate.Limit(n.cfg.floodRate))
			}
		}
	case evConnected:
		if ev.gen != ev.n.gen || s.nets.get(ev.n.server) != ev.n {
			ev.c.close()
			return
		}
		ev.n.connected(ev.c, ev.w)
	case evConnFailed:
		if ev.gen != ev.n.gen || s.nets.get(ev.n.server) != ev.n {
			return
		}
		ev.n.connectFailed(ev.err)
	case evLine:
		if ev.gen != ev.n.gen || s.nets.get(ev.n.server) != ev.n {
			return
		}
		ev.n.handle(ev.msg, "")
	case evClosed:
		if ev.gen != ev.n.gen || s.nets.get(ev.n.server) != ev.n {
			return
		}
		ev.n.closed(ev.err)
	case evRetry:
		if ev.gen != ev.n.gen || s.nets.get(ev.n.server) != ev.n {
			return
		}
		ev.n.connect()
	case evWritten:
		s.written(ev)
	case evTick:
		now := time.Now()
		s.ticking = false
		for _, n := range s.nets {
			n.tick(now)
		}
	}
}

// GroupSession: each method only queues work.

func (s *session) JoinRoom(ctx context.Context, room, nick, password string) error {
	return s.postCtl(evJoin{room: room, nick: nick, password: password})
}

// RoomReplaysHistory implements core.HistoryReplayer: a server that
// offers chathistory replays a channel's latest lines on every join.
func (s *session) RoomReplaysHistory(room string) bool {
	_, server, err := s.resolve(room)
	if err != nil {
		return false
	}
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	return s.replays[server]
}

// JoinRoomHistory implements core.HistoryJoiner: what was said while the
// user was away and the server's chathistory are limited to the request.
func (s *session) JoinRoomHistory(ctx context.Context, room, nick, password string, h core.HistoryRequest) error {
	return s.postCtl(evJoin{room: room, nick: nick, password: password, hist: h})
}

func (s *session) LeaveRoom(ctx context.Context, room string) error {
	return s.postCtl(evLeave{room: room})
}

func (s *session) ChangeNick(ctx context.Context, room, nick string) error {
	if !validNick(nick) {
		return core.NewError(stanza.NotAcceptable, "not a valid IRC nick: no spaces, and none of , * ? ! @ . % : /")
	}
	return s.postCtl(evNickReq{room: room, nick: nick})
}

func (s *session) SetSubject(ctx context.Context, room, subject string) error {
	return s.postCtl(evTopicReq{room: room, subject: subject})
}

// InviteToRoom implements core.RoomInviter.
func (s *session) InviteToRoom(ctx context.Context, room, contact, reason string) error {
	return s.postCtl(evInvite{room: room, contact: contact})
}

// ModerateRoom implements core.RoomModerator.
func (s *session) ModerateRoom(ctx context.Context, room string, items []core.RoomChange) error {
	for _, it := range items {
		if it.Mask != "" && !validMask(it.Mask) {
			return core.NewError(stanza.BadRequest, "not an IRC ban mask (one word, no commas): "+strconv.Quote(it.Mask))
		}
	}
	return s.postCtl(evModerate{room: room, items: items})
}

// postCtl queues a request of core's user goroutine (see ctl); it never
// waits.
func (s *session) postCtl(ev event) error {
	s.ctlMu.Lock()
	if s.ctlClosed {
		s.ctlMu.Unlock()
		return core.Temporary(errClosed)
	}
	s.ctl = append(s.ctl, ev)
	s.ctlMu.Unlock()
	s.wake()
	return nil
}

// takeCtl takes the oldest queued request of core's user goroutine.
func (s *session) takeCtl() (event, bool) {
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	if len(s.ctl) == 0 {
		return nil, false
	}
	ev := s.ctl[0]
	s.ctl[0] = nil
	s.ctl = s.ctl[1:]
	if len(s.ctl) == 0 {
		s.ctl = nil
	}
	return ev, true
}

func (s *session) ctlLen() int {
	s.ctlMu.Lock()
	defer s.ctlMu.Unlock()
	return len(s.ctl)
}

func (s *session) postCtx(ctx context.Context, ev event) error {
	if s.events.Put(ev, &s.done, ctx.Done()) {
		s.wake()
		return nil
	}
	if s.done.Closed() {
		return core.Temporary(errClosed)
	}
	return core.Temporary(ctx.Err())
}

// Send implements core.Session. It returns once every line of the
// message was written to the IRC connection (the server's socket took
// it), or with an error.
//
// IRC lines carry no ID and get no acknowledgement, so a line written
// twice is seen twice: the transport sends at most once, never twice.
//   - A temporary error (which core's outbox retries) is returned only
//     while no line of the message was handed to the connection; after
//     that, a lost connection is reported as a failure, not retried.
//   - If Send's context ends first, a message not yet handed over is
//     never sent (it is retried by the outbox); one already handed over
//     is waited for.
//   - Across a crash (messages from core's outbox, FromOutbox; a message
//     core relays at once is never sent again): before anything is handed
//     over, the stanza (the user's resource and stanza id) is recorded in
//     the account's state as its conversation's send in progress
//     (sendRecords). The outbox
//     retries an item it had not marked done after a restart, and sends
//     one item per conversation at a time, in order: finding its own
//     record, Send returns success without sending. The record is dropped
//     again when nothing was written. A stanza without an id has no key
//     to record: a crash between the write and the outbox's commit can
//     send it a second time.
//   - A crash after Send's write and before the server read the line
//     loses it, and the user may have got a receipt for it: "written" is
//     all the gateway can know.
func (s *session) Send(ctx context.Context, m *core.Message) (string, error) {
	rec := s.records
	if !m.FromOutbox {
		rec = nil // relayed at once by core: never sent again
	}
	if rec != nil {
		again, err := rec.begin(ctx, m)
		if err != nil {
			return "", core.Temporary(err)
		}
		if again {
			// Handed to IRC before the restart, or about to be: it is not
			// sent again, and the user gets no receipt for it (nothing
			// tells whether its line reached the server).
			s.logger().Info("an interrupted send was handed to IRC before the restart; not sending it again", "contact", m.Contact)
			return "", core.ErrUnconfirmed
		}
	}
	r, err := s.send1(ctx, m)
	if rec != nil && errors.As(err, new(errNotWritten)) {
		rec.undo(context.WithoutCancel(ctx), m)
	}
	return r, err
}

// errRelayHeld fails a SendAsync message behind one that failed.
var errRelayHeld = errors.New("behind a message that waits to be sent again")

// SendAsync implements core.AsyncSender: the message is queued for the
// session's drain (behind core's other requests, never blocking), or
// written at once when nothing else holds the session (sendNow); done
// gets what Send would have returned, from a drain. A temporary failure
// holds the relay: later SendAsync messages fail the same way until core
// sends one from its outbox (relayHeld), so that none overtakes the one
// that failed.
func (s *session) SendAsync(m *core.Message, done func(string, error)) {
	// The session in the request rather than a closure over it: one
	// allocation less a relayed message.
	req := &sendRequest{m: m, since: time.Now(), done: done, async: s}
	owned, err := s.postCtlOrOwn(evSend{req: req})
	if err != nil {
		// The session ended: no drain answers any more.
		go done("", core.Temporary(errNotWritten{err}))
		return
	}
	if owned {
		s.sendNow(req)
	}
}

// answerAsync gives core a SendAsync answer (see sendRequest.answer).
func (s *session) answerAsync(done func(string, error), id string, err error) {
	// Answers come from the session's drains, which own relayHeld.
	if errors.Is(err, core.ErrTemporary) {
		s.relayHeld = true
	}
	if s.inline {
		// Answered while SendAsync runs (sendNow), which must not
		// call done: a drain answers it, after the rest.
		if s.postCtl(evAnswer{done: done, id: id, err: err}) == nil {
			return
		}
		go done(id, err)
		return
	}
	done(id, err)
}

// evAnswer is a SendAsync answer given while sendNow ran, for a drain to
// pass on.
type evAnswer struct {
	done func(string, error)
	id   string
	err  error
}

// postCtlOrOwn is postCtl, except that a message to a session nothing
// else owns, with none of core's requests ahead of it, is not queued: the
// caller then owns the session (true) and sends it itself.
func (s *session) postCtlOrOwn(ev evSend) (owned bool, err error) {
	s.ctlMu.Lock()
	if s.ctlClosed {
		s.ctlMu.Unlock()
		return false, core.Temporary(errClosed)
	}
	// Under ctlMu: a request of core queued after this one is behind it.
	if len(s.ctl) == 0 && s.active.CompareAndSwap(false, true) {
		s.ctlMu.Unlock()
		return true, nil
	}
	s.ctl = append(s.ctl, ev)
	s.ctlMu.Unlock()
	s.wake()
	return false, nil
}

// sendNow writes a message from core's stanza reader, which owns the
// session (postCtlOrOwn): only the write, when the channel is joined (or
// the network connected, for a private message) and the socket takes it
// at once. The rest (Send's answer once written, a reflection, what was
// posted meanwhile) goes to a drain, started here if there is any.
// Relaying toward IRC went from the reader to a drain's goroutine and
// then to the socket; written here, a message reaches IRC some 80 µs
// sooner at the p50 and a burst goes a third faster (README, "The stanza
// reader's write"). core holds its relay lock while SendAsync runs, so
// nothing here may call core: answers wait for the drain (inline,
// evAnswer), and any other case (not joined, not connected, held) takes
// the usual way.
func (s *session) sendNow(req *sendRequest) {
	defer func() {
		if r := recover(); r != nil {
			stack := debug.Stack()
			s.inline = false
			// Not here: ending the session calls core.
			workers.Go(func() { s.panicked(r, stack) })
		}
	}()
	if a, server, ok := s.writable(req.m); ok {
		s.inline = true
		s.sendTo(req, a, server)
		s.flushHeld()
		s.armTick()
		s.inline = false
	} else {
		s.ctlMu.Lock()
		s.ctl = append(s.ctl, evSend{req: req})
		s.ctlMu.Unlock()
	}
	// A drain for whatever is queued.
	if s.keepOwning() {
		workers.Go(s.drainEvents)
	}
}

// writable says whether m can be written without anything but the
// write: the session runs, nothing is held (so send's checks before its
// resolve pass), and m goes to a channel joined on a connection or
// privately to a nick on one (not raw commands to the server). It
// returns m's resolved address for sendTo.
func (s *session) writable(m *core.Message) (a address, server string, ok bool) {
	if !s.started || s.stopped || s.relayHeld || m.FromOutbox {
		return a, "", false
	}
	a, server, err := s.resolve(m.Contact)
	if err != nil {
		return a, "", false
	}
	n := s.nets.get(server)
	if n == nil || n.conn == nil {
		return a, "", false
	}
	switch {
	case m.Groupchat:
		if a.kind != kindChannel {
			return a, "", false
		}
		ch := n.channels.get(n.fold(a.name))
		ok = ch != nil && ch.xmpp && ch.joined
	case a.kind == kindNick, a.kind == kindChannel && m.Nick != "":
		ok = n.authError() == ""
	}
	return a, server, ok
}

func (s *session) send1(ctx context.Context, m *core.Message) (string, error) {
	req := &sendRequest{m: m, reply: make(chan sendResult, 1), since: time.Now()}
	if err := s.postCtx(ctx, evSend{req: req}); err != nil {
		return "", errNotWritten{err}
	}
	select {
	case r := <-req.reply:
		return r.id, r.err
	case <-s.done.Chan():
	case <-ctx.Done():
	}
	if req.state.CompareAndSwap(reqNew, reqAbandoned) {
		select {
		case r := <-req.reply: // answered without being handed over
			return r.id, r.err
		default:
		}
		if ctx.Err() != nil {
			return "", core.Temporary(errNotWritten{ctx.Err()})
		}
		return "", core.Temporary(errNotWritten{errClosed})
	}
	// Handed to the connection: its answer comes once the writer wrote
	// or dropped the lines.
	r := <-req.reply
	return r.id, r.err
}

// written: the writer is done with a message's lines. Send gets its
// answer, and a message to a server that does not echo is reflected.
func (s *session) written(ev evWritten) {
	ps := ev.ps
	lost := false
	if ps != nil {
		lost = ev.c.isClosed() && ev.n.echo() && ps.room != "" && ps.remaining > 0
	}
	id, err := ev.verdict(lost)
	if ps != nil {
		ps.settled = true
		if err != nil {
			ps.failed = true
		} else if ps.reflect {
			ev.n.reflect(ps, "", time.Time{})
		}
	}
	ev.req.answer(id, err)
}

// Per-network settings, stored in the account's state.

const netIndexKey = "networks"

func (s *session) loadNetConfig(ctx context.Context) {
	st := s.sink.Store()
	if st == nil {
		return
	}
	v, ok, err := st.Get(ctx, netIndexKey)
	if err != nil || !ok {
		return
	}
	var hosts []string
	if json.Unmarshal([]byte(v), &hosts) != nil {
		return
	}
	sec := s.secrets()
	for _, h := range hosts {
		if raw, ok, err := st.Get(ctx, netStateKey(h)); err == nil && ok {
			if ns, err := decodeNetSettings(raw); err == nil {
				s.setNetConf(h, ns)
			}
		}
		if sec != nil {
			for _, key := range []string{netPasswordKey(h), netCommandsKey(h)} {
				if v, ok, err := sec.Get(ctx, key); err == nil && ok {
					s.setNetPass(key, v)
				} else if err != nil {
					s.logger().Warn("cannot open a network's stored password or commands", "irc_server", h, "error", err)
				}
			}
		}
	}
}

// setNetConf and setNetPass make their maps on first use: most users
// have no per-network settings.
func (s *session) setNetConf(server string, ns netSettings) {
	if s.netConf == nil {
		s.netConf = map[string]netSettings{}
	}
	s.netConf[server] = ns
}

func (s *session) setNetPass(key, v string) {
	if s.netPass == nil {
		s.netPass = map[string]string{}
	}
	s.netPass[key] = v
}

// secretSink is core's sealed account state, where core offers it.
type secretSink interface {
	Secrets() core.StateStore
}

// secrets returns the account's sealed state, or nil.
func (s *session) secrets() core.StateStore {
	if ss, ok := s.sink.(secretSink); ok {
		return ss.Secrets()
	}
	return nil
}

func (s *session) configFor(server string) netConfig {
	return configFor(s.opts, s.acct.Values, server, s.netConf[server], s.netPass[netPasswordKey(server)], s.netPass[netCommandsKey(server)])
}

// autojoin connects to the networks with channels to join on connect.
func (s *session) autojoin() {
	servers := map[string]bool{}
	if h := strings.ToLower(s.acct.Values[fNetwork]); h != "" {
		servers[h] = true
	}
	for h := range s.netConf {
		servers[h] = true
	}
	for _, h := range slices.Sorted(maps.Keys(servers)) {
		cfg := s.configFor(h)
		if len(cfg.autojoin) == 0 || !s.opts.allowedServer(h) {
			continue
		}
		n := s.network(h, "")
		for _, c := range cfg.autojoin {
			ch := n.channelFor(c)
			ch.autojoin = true
		}
		n.ensureConnected()
	}
}

// network returns the network of a server, creating it (not connected).
func (s *session) network(server, nick string) *network {
	if n := s.nets.get(server); n != nil {
		return n
	}
	n := newNetwork(s, server, s.configFor(server))
	if n.wantNick == "" {
		n.wantNick = nick // the room nick, unless the network has its own
	}
	s.nets = append(s.nets, n)
	return n
}

// resolve finds the server of an address (the default server when it
// names none) and checks that users may reach it.
func (s *session) resolve(addr string) (address, string, error) {
	a, err := parseAddress(addr, s.t.chanTypesOf)
	if err != nil {
		return a, "", addressError(err)
	}
	server := a.server
	if server == "" {
		server = s.opts.defaultServer
	}
	if server == "" {
		return a, "", addressError(errNoServer)
	}
	if !s.opts.allowedServer(server) {
		return a, "", core.NewError(stanza.NotAllowed, "this gateway does not connect to "+server+"; allowed IRC servers: "+s.allowedText())
	}
	return a, server, nil
}

func (s *session) allowedText() string {
	if s.opts.allowed == nil {
		return "any"
	}
	return strings.Join(s.opts.allowed, ", ")
}

func (s *session) joinRoom(room, nick, password string, hist core.HistoryRequest) {
	a, server, err := s.resolve(room)
	if err == nil && a.kind != kindChannel {
		err = core.NewError(stanza.ItemNotFound, "not an IRC channel")
	}
	if err != nil {
		s.roomError(room, err)
		return
	}
	n := s.network(server, nick)
	if n.authError() != "" {
		s.roomError(room, core.NewError(stanza.NotAuthorized, n.authError()+" (register again with the right password)"))
		return
	}
	ch := n.channelFor(a.name)
	ch.room = room
	ch.key = password
	n.setJoinHistory(ch, hist)
	ch.xmpp = true
	ch.reported = false
	if n.conn == nil && !n.dialing && n.cfg.nick == "" {
		// This join opens the connection: with the room nick.
		if !validNick(nick) {
			s.roomError(room, core.NewError(stanza.JIDMalformed, "not a valid IRC nick: no spaces, and none of , * ? ! @ . % : /"))
			ch.xmpp = false
			n.dropChannelIfUnused(ch)
			return
		}
		n.wantNick = nick
	}
	switch {
	case n.conn == nil:
		n.ensureConnected()
	case ch.joined:
		n.reportJoined(ch)
	case !ch.joining && !ch.parting:
		n.join(ch)
	}
}

func (s *session) leaveRoom(room string) {
	a, server, err := s.resolve(room)
	if err != nil || a.kind != kindChannel {
		return
	}
	n := s.nets.get(server)
	if n == nil {
		return
	}
	ch := n.channels.get(n.fold(a.name))
	if ch == nil {
		return
	}
	ch.xmpp, ch.reported, ch.backlog = false, false, nil
	n.setJoinHistory(ch, core.HistoryRequest{})
	if ch.autojoin && n.conn != nil {
		return // stays joined on IRC while the session runs
	}
	n.part(ch)
	n.maybeQuit()
}

func (s *session) changeNick(room, nick string) {
	_, server, err := s.resolve(room)
	if err != nil {
		return
	}
	n := s.nets.get(server)
	if n == nil {
		return
	}
	n.wantNick = nick
	n.rare().nickRoom = room
	if n.conn == nil {
		return
	}
	if msg, err := nickMessage(nick); err == nil {
		_ = n.send(msg)
	}
}

// joinedChannel finds a room's channel where the network is connected
// and the channel joined; nil otherwise.
func (s *session) joinedChannel(room string) (*network, *channel) {
	a, server, err := s.resolve(room)
	if err != nil {
		return nil, nil
	}
	n := s.nets.get(server)
	if n == nil || n.conn == nil {
		return nil, nil
	}
	ch := n.channels.get(n.fold(a.name))
	if ch == nil || !ch.joined {
		return nil, nil
	}
	return n, ch
}

func (s *session) setTopic(room, subject string) {
	n, ch := s.joinedChannel(room)
	if ch == nil {
		return
	}
	msg, err := topicMessage(ch.name, subject, atoi(n.feat.m["TOPICLEN"]), n.me)
	if err == nil {
		_ = n.send(msg)
	}
}

// invite sends INVITE for a contact of the room's network (IRC has no
// reason in an INVITE; the server's refusals show in the room).
func (s *session) invite(room, contact string) {
	n, ch := s.joinedChannel(room)
	if ch == nil {
		return
	}
	a, server, err := s.resolve(contact)
	if err != nil || server != n.server || !validNick(a.name) {
		s.roomNotice(room, "Cannot invite "+contact+": only users of "+n.server+" can be invited to this room")
		return
	}
	_ = n.send(ircmsg.MakeMessage(nil, "", "INVITE", a.name, ch.name))
}

// moderate turns a room's muc#admin changes into KICK and MODE lines, as
// biboumi does: role none kicks; moderator (or affiliation admin or owner)
// is +o; participant takes +o back; visitor takes every prefix mode
// back; affiliation member is +v, none takes them back, and outcast bans
// the occupant's host (their nick where the host is unknown) and kicks.
// The server refuses what the user may not do (482, shown in the room).
func (s *session) moderate(room string, items []core.RoomChange) {
	n, ch := s.joinedChannel(room)
	if ch == nil {
		return
	}
	for _, it := range items {
		for _, m := range moderationLines(ch.name, it, ch.members.get(n.fold(it.Nick)), n.feat.prefixM) {
			_ = n.send(m)
		}
	}
}

// moderationLines are the lines for one change; m is the member, nil if
// the channel does not know them. prefixModes are the server's prefix
// modes (PREFIX), highest first.
func moderationLines(channel string, it core.RoomChange, m *member, prefixModes string) []ircmsg.Message {
	if it.Mask != "" {
		// A pattern of the ban list, banned or unbanned as it is.
		if !validMask(it.Mask) {
			return nil
		}
		sign := "+b"
		if it.Affiliation == "none" {
			sign = "-b"
		}
		return []ircmsg.Message{ircmsg.MakeMessage(nil, "", "MODE", channel, sign, it.Mask)}
	}
	nick := it.Nick
	if !validNick(nick) {
		return nil
	}
	held := ""
	if m != nil {
		held = m.modes
	}
	mode := func(sign byte, modes string) []ircmsg.Message {
		var out []ircmsg.Message
		for i := 0; i < len(modes); i++ {
			if strings.IndexByte(prefixModes, modes[i]) >= 0 {
				out = append(out, ircmsg.MakeMessage(nil, "", "MODE", channel, string([]byte{sign, modes[i]}), nick))
			}
		}
		return out
	}
	kick := func() ircmsg.Message {
		if r := oneLine(it.Reason); r != "" {
			return ircmsg.MakeMessage(nil, "", "KICK", channel, nick, r)
		}
		return ircmsg.MakeMessage(nil, "", "KICK", channel, nick)
	}
	var out []ircmsg.Message
	switch it.Affiliation {
	case "outcast":
		mask := nick + "!*@*"
		if m != nil && m.host.String() != "" {
			mask = "*!*@" + m.host.String()
		}
		return append(out, ircmsg.MakeMessage(nil, "", "MODE", channel, "+b", mask), kick())
	case "admin", "owner":
		out = append(out, mode('+', "o")...)
	case "member":
		out = append(out, mode('+', "v")...)
	case "none":
		out = append(out, mode('-', held)...)
		held = ""
	}
	switch it.Role {
	case "none":
		out = append(out, kick())
	case "moderator":
		if it.Affiliation != "admin" && it.Affiliation != "owner" {
			out = append(out, mode('+', "o")...)
		}
	case "participant":
		if strings.IndexByte(held, 'o') >= 0 {
			out = append(out, mode('-', "o")...)
		}
	case "visitor":
		out = append(out, mode('-', held)...)
	}
	return out
}

// validMask reports whether a ban mask can be a MODE parameter: one
// word, no control characters, not read as a trailing parameter.
func validMask(s string) bool {
	if s == "" || len(s) > 300 || s[0] == ':' || !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == ',' {
			return false
		}
	}
	return true
}

// send sends one message from the XMPP user, or parks it until its
// network is connected and its channel joined.
func (s *session) send(req *sendRequest) {
	m := req.m
	reply := req.answer
	switch {
	case req.done != nil && s.relayHeld:
		reply("", core.Temporary(errNotWritten{errRelayHeld}))
		return
	case m.FromOutbox:
		s.relayHeld = false // core now sends from its outbox, in order
	}
	a, server, err := s.resolve(m.Contact)
	if err != nil {
		reply("", err)
		return
	}
	s.sendTo(req, a, server)
}

// sendTo is send once the message's address is resolved (by send, or by
// writable for sendNow: one parse of it per message, not two).
func (s *session) sendTo(req *sendRequest, a address, server string) {
	m := req.m
	reply := req.answer
	n := s.nets.get(server)
	if m.Groupchat {
		if a.kind != kindChannel {
			reply("", core.NewError(stanza.BadRequest, "not an IRC channel"))
			return
		}
		var ch *channel
		if n != nil {
			ch = n.channels.get(n.fold(a.name))
		}
		if ch == nil || !ch.xmpp {
			// Core thinks the user is in this room but this session does
			// not know it (the session was restarted): join it again.
			nick := ""
			if n != nil {
				nick = n.me.nick
			}
			if nick == "" {
				nick = s.defaultNick()
			}
			s.joinRoom(m.Contact, nick, "", core.HistoryRequest{})
			if n = s.nets.get(server); n == nil {
				reply("", core.NewError(stanza.NotAcceptable, "you are not in this IRC channel"))
				return
			}
			ch = n.channels.get(n.fold(a.name))
			if ch == nil {
				reply("", core.NewError(stanza.NotAcceptable, "you are not in this IRC channel"))
				return
			}
		}
		if n.conn == nil || !ch.joined {
			n.park(req)
			return
		}
		n.sendText(req, ch)
		return
	}
	// A private message: to nick%server, to an occupant of a room (Nick
	// set), or raw commands to the server itself.
	nick := ""
	switch {
	case m.Nick != "" && a.kind == kindChannel:
		nick = m.Nick
	case a.kind == kindNick:
		nick = a.name
	case a.kind == kindServer:
	default:
		reply("", core.NewError(stanza.BadRequest, "write to a nick: nick%"+server))
		return
	}
	if n == nil {
		n = s.network(server, s.defaultNick())
	}
	if n.authError() != "" {
		reply("", core.NewError(stanza.NotAuthorized, n.authError()))
		return
	}
	n.lastPrivate = monoNow()
	if n.conn == nil {
		n.ensureConnected()
		n.park(req)
		return
	}
	if nick == "" {
		n.sendRaw(req)
		return
	}
	n.sendPrivate(req, nick)
}

// defaultNick is the nick for connections no join asked for.
func (s *session) defaultNick() string {
	if v := s.acct.Values[fNick]; validNick(v) {
		return v
	}
	local, _, _ := strings.Cut(s.acct.JID, "@")
	var b strings.Builder
	for _, r := range local {
		if r < 0x80 && (r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_[]{}\\`^|", r)) {
			b.WriteRune(r)
		}
	}
	if n := b.String(); validNick(n) && len(n) <= 16 {
		return n
	}
	return "xmppuser"
}

// Reports to core.

// archived says whether core archives the user's rooms
// (core.RoomArchiver).
func (s *session) archived() bool {
	ra, ok := s.sink.(core.RoomArchiver)
	return ok && ra.ArchivesRooms()
}

func (s *session) deliver(m *core.Message) {
	if err := s.sink.Deliver(s.ctx, m); err != nil && s.ctx.Err() == nil {
		s.logger().Error("delivering an IRC message", "error", err)
	}
}

func (s *session) roomError(room string, err error) {
	s.rooms.RoomError(room, err)
}

func (s *session) failed(contact, legacyID string, err error) {
	if ferr := s.sink.Failed(s.ctx, contact, legacyID, err); ferr != nil && s.ctx.Err() == nil {
		s.logger().Error("reporting a failed IRC message", "error", ferr)
	}
}

func (s *session) persistent() bool {
	v, _ := strconv.ParseBool(s.acct.Values[fPersistent])
	return v
}

// nopRooms stands in for a sink without group chats.
type nopRooms struct{}

func (nopRooms) RoomJoined(string, core.Occupant, []core.Occupant, string) {}
func (nopRooms) RoomError(string, error)                                   {}
func (nopRooms) RoomPresence(string, core.Occupant)                        {}
func (nopRooms) RoomLeft(string, string, string, bool)                     {}
func (nopRooms) RoomNick(string, string, string)                           {}
func (nopRooms) RoomSubject(string, string, string)                        {}

// roomNotice is a message from the room itself (no nick): the gateway
// telling the user about the connection.
func (s *session) roomNotice(room, text string) {
	s.deliver(&core.Message{Contact: room, Groupchat: true, Body: text, LegacyID: newID()})
}

// updateState shows the worst network's state as the session's.
func (s *session) updateState() {
	if !s.started {
		return
	}
	st, text := core.StateConnected, ""
	var failing, auth []string
	up := 0
	nets := slices.Clone(s.nets)
	slices.SortFunc(nets, func(a, b *network) int { return strings.Compare(a.server, b.server) })
	for _, n := range nets {
		switch {
		case n.authError() != "":
			auth = append(auth, n.authError())
		case n.conn != nil:
			up++
		case n.everUp && n.lastError() != "":
			failing = append(failing, n.server+": "+n.lastError())
		}
	}
	switch {
	case len(auth) > 0:
		st, text = core.StateBadCredentials, strings.Join(auth, "; ")
	case len(failing) > 0 && up == 0:
		st, text = core.StateTransientFail, strings.Join(failing, "; ")
	}
	if st == s.state && text == s.stateText {
		return
	}
	s.state, s.stateText = st, text
	s.sink.State(st, text)
}

// backoff is the delay before reconnection attempt number failures+1.
func (s *session) backoff(failures int) time.Duration {
	d := s.opts.reconnectMin
	for i := 0; i < failures && d < s.opts.reconnectMax; i++ {
		d *= 2
	}
	d = min(d, s.opts.reconnectMax)
	// ±20% jitter, so many users do not reconnect in step.
	j := time.Duration(float64(d) * (rand.Float64()*0.4 - 0.2))
	return d + j
}

// newID is a unique id for messages that come without one.
func newID() string {
	var b [12]byte
	_, _ = crand.Read(b[:])
	return "irc-" + hex.EncodeToString(b[:])
}

func atoi(s string) int {
	n := 0
	for i := 0; i < len(s) && i < 9; i++ {
		if s[i] < '0' || s[i] > '9' {
			return n
		}
		n = n*10 + int(s[i]-'0')
	}
	return n
}

// errorText is the user-facing text of an error.
func errorText(err error) string {
	var ce *connError
	var e *core.Error
	switch {
	case errors.As(err, &ce):
		return ce.Error()
	case errors.As(err, &e):
		return e.Text
	case err == nil:
		return ""
	}
	return fmt.Sprint(err)
}

// reportPanic hands a recovered panic to core (transportd_panics_total,
// logged with its stack) when err carries one; false if it does not.
func reportPanic(sink core.Sink, log *slog.Logger, err error) bool {
	var pe *panicError
	if !errors.As(err, &pe) {
		return false
	}
	if pr, ok := sink.(core.PanicReporter); ok {
		pr.Panicked("irc poller", pe.v, pe.stack)
	} else {
		log.Error("panic recovered", "where", "irc poller", "panic", fmt.Sprint(pe.v), "stack", string(pe.stack))
	}
	return true
}
