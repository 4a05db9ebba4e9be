package core

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"transportd/core/store"
	"transportd/internal/idring"
)

// The relay path, for transports whose network acknowledges nothing
// (Info.Relay, IRC): a message is handed to the other side at once instead
// of being committed to the outbox first, as long as both sides are up and
// nothing of that account waits in the outbox (which keeps the order).
//
// Why this loses nothing the outbox would keep: the outbox commits a
// message some milliseconds after the gateway read it, and a crash before
// the commit loses it; the relay writes it to the other side's socket in
// about the same time, and what the kernel took survives a crash of the
// gateway. What the outbox adds is waiting while a side is down, and the
// confirmation by the XMPP server: both are kept.
//
//   - Toward XMPP, a relayed stanza stays in memory until a ping sent
//     behind it is answered (one ping per burst). If the link ends first,
//     it goes to the outbox, to be sent again once the link is back (the
//     allowed redelivery). Its idempotency key is recorded as delivered
//     (a batch per commit, behind the hot path), so a replay by the
//     network (IRC CHATHISTORY) is still recognised. Messages with a time
//     stamp (history, backlog) always take the outbox, which deduplicates.
//   - Toward the network, a message goes to a per-account queue served by
//     one goroutine, in order; if the session is not connected or Send
//     fails temporarily, it and everything behind it is committed to the
//     outbox, in order, and the account's next messages follow it there
//     until the outbox has sent them all. A session that is an AsyncSender
//     gets each message at once instead, without a goroutine waiting on
//     it; a temporary failure reported for one moves it to the outbox, and
//     the session fails the ones behind it the same way (AsyncSender's
//     contract). Messages that arrive while a previous session still has
//     some in flight wait behind them and go to the outbox.
//
// A user's message is acknowledged as before: a receipt or the room's
// reflection once the network took it; one lost in a crash before that is
// never acknowledged. The message id mappings are not stored (the relay
// remembers the last ids of each account for Sink.Failed): a Relay
// transport has no read state or corrections that need them.

// relayKept is how many sent messages an account remembers for Failed.
const relayKept = 16

// userRelay is an account's relay state toward its network.
type userRelay struct {
	mu sync.Mutex
	// legacyQueued says the outbox may hold messages of the account toward
	// the network: new ones then go there too until the store says none
	// is left. Starts true (the store was not asked yet).
	legacyQueued bool
	sending      bool
	queue        []Message
	sent         []sentRef // ring of the last relayKept sends
	// recent holds the keys (legacyIdemKey) of the last relayRecent
	// messages sent: a client sending one again (a stream resumed
	// without its acknowledgement) is not sent twice. Kept in memory
	// only: writing each to the database was a tenth of the CPU of
	// relaying a message. As hashes (idring): 512 bytes, where the
	// strings took some 5 KB per user who talked.
	recent idring.Ring

	// AsyncSender sessions: messages handed over and not yet answered,
	// the session generation they went to, and messages held behind
	// those of an earlier session (they go to the outbox once all are
	// answered).
	inflight    int
	inflightGen int
	held        []Message

	// xmppQueued is legacyQueued toward XMPP (set by every outbox write
	// toward XMPP for the account).
	xmppQueued atomic.Bool
}

// sentRef is what Failed needs of a message the relay sent.
type sentRef struct{ legacyID, xmppID, resource string }

func newUserRelay() *userRelay {
	r := &userRelay{legacyQueued: true}
	r.xmppQueued.Store(true)
	return r
}

// relayed is a stanza written toward XMPP but not yet confirmed.
type relayed struct {
	seq uint64
	u   *user
	env envelope
}

// compRelay is a component's relay state toward XMPP.
type compRelay struct {
	mu          sync.Mutex
	seq         uint64
	unconfirmed []relayed
	delivered   []store.DeliveredKey // to be recorded
	kick        chan struct{}
}

// maxDeliveredBacklog bounds the keys waiting to be recorded if the store
// keeps failing (they only serve deduplication).
const maxDeliveredBacklog = 10000

func (r *compRelay) wake() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

const (
	// confirmEvery paces the confirming pings: at most one per interval
	// (a ping per message cost about as much as the message).
	confirmEvery = 20 * time.Millisecond
	// Delivered keys are committed once recordBatch wait, or recordEvery
	// after the first of them (a commit per message took a third of the
	// relay's CPU). A crash loses at most that second of keys: a history
	// replay may then show those lines again.
	recordEvery = time.Second
	recordBatch = 512
)

// run confirms relayed stanzas with a ping and records delivered keys,
// until ctx is done; then it moves what is unconfirmed to the outbox.
func (r *compRelay) run(ctx context.Context, c *component) {
	record := func(ctx context.Context) {
		r.mu.Lock()
		keys := r.delivered
		r.delivered = nil
		r.mu.Unlock()
		c.recordDelivered(ctx, keys)
	}
	defer func() {
		ctx := context.WithoutCancel(ctx)
		r.mu.Lock()
		r.flushLocked(ctx, c, ^uint64(0))
		r.mu.Unlock()
		record(ctx)
	}()
	var (
		lastPing  time.Time
		recordDue <-chan time.Time
	)
	for {
		select {
		case <-ctx.Done():
			return
		case <-recordDue:
			recordDue = nil
			record(ctx)
			continue
		case <-r.kick:
		}
		r.mu.Lock()
		pending := len(r.unconfirmed) > 0
		r.mu.Unlock()
		if pending {
			if d := confirmEvery - time.Since(lastPing); d > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(d):
				}
			}
			lastPing = time.Now()
			r.confirmSent(ctx, c)
		}
		r.mu.Lock()
		waiting := len(r.delivered)
		r.mu.Unlock()
		switch {
		case waiting >= recordBatch:
			recordDue = nil
			record(ctx)
		case waiting > 0 && recordDue == nil:
			recordDue = time.After(recordEvery)
		}
	}
}

// confirmSent pings the server behind what was relayed so far: on the
// answer those stanzas are delivered, without one they go to the outbox.
func (r *compRelay) confirmSent(ctx context.Context, c *component) {
	r.mu.Lock()
	var upTo uint64
	if n := len(r.unconfirmed); n > 0 {
		upTo = r.unconfirmed[n-1].seq
	}
	r.mu.Unlock()
	if upTo == 0 {
		return
	}
	err := c.confirm(ctx)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			c.log.Warn("server did not confirm relayed stanzas; they go to the outbox", "error", err)
		}
		r.flushLocked(context.WithoutCancel(ctx), c, upTo)
	} else {
		i := 0
		for i < len(r.unconfirmed) && r.unconfirmed[i].seq <= upTo {
			e := r.unconfirmed[i]
			// Recorded: what the network may hand over again (a
			// replayed message, and so its error), so that it is not
			// shown twice. Not a receipt: the same receipt twice changes
			// nothing a client shows, and the record cost more CPU than
			// the rest of relaying a message (a database write each).
			if k := xmppIdemKey(e.env); k != "" && e.env.Kind != kindReceipt && (e.env.Kind == kindError || e.env.Msg.Replayable) {
				r.delivered = append(r.delivered, store.DeliveredKey{AccountID: e.u.id, Direction: store.ToXMPP, IdemKey: k})
			}
			i++
		}
		r.unconfirmed = append(r.unconfirmed[:0], r.unconfirmed[i:]...)
	}
	if len(r.unconfirmed) > 0 {
		r.wake()
	}
}

// flushLocked commits the unconfirmed stanzas up to seq upTo to the
// outbox, in order. r.mu is held: a relay toward XMPP waits, so nothing
// overtakes them.
func (r *compRelay) flushLocked(ctx context.Context, c *component, upTo uint64) {
	i := 0
	for i < len(r.unconfirmed) && r.unconfirmed[i].seq <= upTo {
		e := r.unconfirmed[i]
		if err := c.g.outbox.enqueueToXMPP(ctx, e.u, e.env); err != nil {
			c.log.Error("relayed stanza lost: outbox commit failed", "error", err)
		}
		i++
	}
	r.unconfirmed = append(r.unconfirmed[:0], r.unconfirmed[i:]...)
}

func (c *component) recordDelivered(ctx context.Context, keys []store.DeliveredKey) {
	if len(keys) == 0 {
		return
	}
	if err := c.g.store.RecordDelivered(ctx, keys); err != nil {
		c.log.Warn("recording relayed message keys", "error", err)
		c.relay.mu.Lock()
		if len(c.relay.delivered)+len(keys) <= maxDeliveredBacklog {
			c.relay.delivered = append(keys, c.relay.delivered...)
		}
		c.relay.mu.Unlock()
	}
}

// relayToXMPP writes an envelope for u at once when it can, else commits
// it to the outbox (see the top of this file).
func (c *component) relayToXMPP(ctx context.Context, u *user, env envelope) error {
	if u.relay == nil || (env.Kind == kindMessage && !env.Msg.Time.IsZero()) || env.Kind == kindSent {
		return c.g.outbox.enqueueToXMPP(ctx, u, env)
	}
	r := &c.relay
	r.mu.Lock()
	defer r.mu.Unlock()
	if !c.link.up.Load() {
		r.flushLocked(ctx, c, ^uint64(0))
		return c.g.outbox.enqueueToXMPP(ctx, u, env)
	}
	if u.relay.xmppQueued.Load() {
		n, err := c.g.store.Pending(ctx, u.id, store.ToXMPP)
		if err != nil || n > 0 {
			return c.g.outbox.enqueueToXMPP(ctx, u, env)
		}
		u.relay.xmppQueued.Store(false)
	}
	a := &store.Account{ID: u.id, JID: u.bare, Label: u.label}
	if !env.Msg.Groupchat && env.Kind == kindMessage && !c.seenRecently(u.id, env.Msg.Contact, env.Msg.Nick) {
		// The contact may be new: rendering records it, which needs the
		// account's settings (roster on or off).
		if full, err := c.g.store.GetAccountByID(ctx, u.id); err == nil {
			a = full
		}
	}
	els, _, wait := c.renderToXMPP(a, env)
	if wait {
		return c.g.outbox.enqueueToXMPP(ctx, u, env) // waits for the join
	}
	if len(els) == 0 {
		return nil // nobody is in the room: dropped, as the outbox does
	}
	for _, el := range els {
		if err := c.send(el); err != nil {
			r.flushLocked(ctx, c, ^uint64(0))
			return c.g.outbox.enqueueToXMPP(ctx, u, env)
		}
	}
	r.seq++
	r.unconfirmed = append(r.unconfirmed, relayed{seq: r.seq, u: u, env: env})
	r.wake()
	c.counters.toXMPP.Inc()
	c.stats.toXMPP.Add(1)
	return nil
}

// relayRecent is how many sent messages a user's relay remembers.
const relayRecent = 64

// relayToLegacy takes a user's message for the network (from the stanza
// reader: it never blocks on the network).
//
// A message relayed at once touches no database: the context for the
// outbox is made only on the way there (a timer per message was a tenth
// of what relaying one allocated).
func (c *component) relayToLegacy(u *user, m *Message) error {
	toOutbox := func() error {
		ctx, cancel := c.g.workCtx(10 * time.Second)
		defer cancel()
		return c.g.outbox.enqueueToLegacy(ctx, u, *m)
	}
	r := u.relay
	r.mu.Lock()
	defer r.mu.Unlock()
	if m.XMPPID != "" && r.recent.Has(m.UserResource, '/', m.XMPPID) {
		c.log.Debug("message sent again by the client; already sent", "id", m.XMPPID)
		if m.Receipt {
			c.g.goSafe("relay-receipt", func() {
				_ = c.relayToXMPP(context.Background(), u, envelope{Kind: kindReceipt, Msg: Message{Contact: m.Contact, XMPPID: m.XMPPID, UserResource: m.UserResource}})
			})
		}
		return nil
	}
	if r.inflight > 0 && (r.legacyQueued || len(r.held) > 0) {
		// Behind messages an AsyncSender has not answered yet, which may
		// still go to the outbox: held until they are answered.
		r.held = append(r.held, *m)
		return nil
	}
	if r.legacyQueued {
		ctx, cancel := c.g.workCtx(10 * time.Second)
		n, err := c.g.store.Pending(ctx, u.id, store.ToLegacy)
		cancel()
		if err != nil || n > 0 {
			return toOutbox()
		}
		r.legacyQueued = false
	}
	if len(r.queue) == 0 && !r.sending && r.inflight == 0 && len(r.held) == 0 && !u.connected() {
		r.legacyQueued = true
		return toOutbox()
	}
	if live := u.live.Load(); len(r.queue) == 0 && !r.sending && (r.inflight > 0 || live != nil) {
		var as AsyncSender
		gen := 0
		if live != nil {
			as, _ = live.s.(AsyncSender)
			gen = live.gen
		}
		if as != nil || r.inflight > 0 {
			c.relayAsync(u, gen, as, m)
			return nil
		}
	}
	r.queue = append(r.queue, *m)
	if !r.sending {
		r.sending = true
		c.g.goSafe("relay-send", func() { c.relaySend(u) })
	}
	return nil
}

// relayAsync hands m to an AsyncSender session; u.relay.mu is held. m is
// passed along by pointer from the stanza reader: each copy of a Message
// escaping was some 150 bytes per relayed message.
func (c *component) relayAsync(u *user, gen int, as AsyncSender, m *Message) {
	r := u.relay
	if len(r.held) > 0 || r.inflight > 0 && (as == nil || r.inflightGen != gen || !u.connected()) {
		// Behind messages not answered yet, which the session cannot
		// take now: they go to the outbox once all are answered.
		r.held = append(r.held, *m)
		return
	}
	r.inflight++
	r.inflightGen = gen
	c.g.work.Add(1) // the gateway's shutdown waits for the answer
	as.SendAsync(m, func(legacyID string, err error) {
		defer c.g.work.Done()
		c.relayAnswered(u, *m, legacyID, err)
	})
}

// relayAnswered is what becomes of a message handed to an AsyncSender.
func (c *component) relayAnswered(u *user, m Message, legacyID string, err error) {
	r := u.relay
	bg := context.Background()
	if err != nil && errors.Is(err, ErrTemporary) && !errors.Is(err, ErrUnconfirmed) {
		// Nothing was handed to the network: to the outbox, behind
		// what failed before it; the account's next messages follow.
		r.mu.Lock()
		r.legacyQueued = true
		c.relayToOutbox(bg, u, m)
		r.mu.Unlock()
	} else {
		c.relayResult(bg, u, m, legacyID, err)
	}
	r.mu.Lock()
	if r.inflight--; r.inflight == 0 && len(r.held) > 0 {
		held := r.held
		r.held = nil
		r.legacyQueued = true
		for _, m := range held {
			c.relayToOutbox(bg, u, m)
		}
	}
	r.mu.Unlock()
}

// relayToOutbox commits a relayed message to the outbox; if that fails
// the user is told it was not sent.
func (c *component) relayToOutbox(ctx context.Context, u *user, m Message) {
	if err := c.g.outbox.enqueueToLegacy(ctx, u, m); err != nil {
		c.log.Error("message lost: outbox commit failed", "error", err)
		_ = c.relayToXMPP(ctx, u, envelope{Kind: kindError, Msg: Message{Contact: m.Contact, XMPPID: m.XMPPID, UserResource: m.UserResource, LegacyID: "err:" + randomID()}, ErrCond: "internal-server-error", ErrText: "not sent: the gateway could not queue it"})
	}
}

// relayResult acts on a send that did not fail temporarily.
func (c *component) relayResult(ctx context.Context, u *user, m Message, legacyID string, err error) {
	switch {
	case err == nil:
		c.relaySent(ctx, u, m, legacyID)
	case errors.Is(err, ErrUnconfirmed):
		c.log.Info("not sent again: an interrupted attempt may have reached the network; no receipt")
	default:
		se := toStanzaError(err)
		c.log.Info("message not sent", "error", err)
		_ = c.relayToXMPP(ctx, u, envelope{Kind: kindError, Msg: Message{Contact: m.Contact, XMPPID: m.XMPPID, UserResource: m.UserResource, LegacyID: "err:" + randomID()}, ErrCond: string(se.Condition), ErrText: se.Text})
	}
}

// connected says whether u's session is up.
func (u *user) connected() bool {
	return u.live.Load() != nil && u.stateNow.Load().State == StateConnected
}

// relaySend sends u's relay queue in order, until it is empty or a send
// must wait (then the rest goes to the outbox).
func (c *component) relaySend(u *user) {
	r := u.relay
	for {
		r.mu.Lock()
		if len(r.queue) == 0 {
			r.sending = false
			r.queue = nil
			r.mu.Unlock()
			return
		}
		m := r.queue[0]
		r.queue[0] = Message{}
		r.queue = r.queue[1:]
		r.mu.Unlock()

		ctx, cancel := c.g.workCtx(2 * time.Minute)
		var (
			legacyID string
			err      error
		)
		live := u.live.Load()
		if live == nil || !u.connected() {
			err = Temporary(errors.New("session not connected"))
		} else {
			legacyID, err = live.s.Send(ctx, &m)
		}
		cancel()
		bg := context.Background()
		if err != nil && errors.Is(err, ErrTemporary) && !errors.Is(err, ErrUnconfirmed) {
			// Nothing was handed to the network (Send's contract for a
			// temporary error), also when the gateway is stopping.
			// This message and all behind it wait in the outbox, in order.
			r.mu.Lock()
			rest := append([]Message{m}, r.queue...)
			r.queue, r.sending, r.legacyQueued = nil, false, true
			for _, m := range rest {
				c.relayToOutbox(bg, u, m)
			}
			r.mu.Unlock()
			return
		}
		c.relayResult(bg, u, m, legacyID, err)
	}
}

// relaySent does what the outbox does after a successful Send.
func (c *component) relaySent(ctx context.Context, u *user, m Message, legacyID string) {
	r := u.relay
	if legacyID != "" {
		r.mu.Lock()
		if len(r.sent) == relayKept {
			copy(r.sent, r.sent[1:])
			r.sent = r.sent[:relayKept-1]
		}
		r.sent = append(r.sent, sentRef{legacyID: legacyID, xmppID: m.XMPPID, resource: m.UserResource})
		r.mu.Unlock()
	}
	if !m.Groupchat && m.Nick == "" && !c.seenRecently(u.id, m.Contact, "") {
		if a, err := c.g.store.GetAccountByID(ctx, u.id); err == nil {
			c.noteContact(ctx, a, m.Contact, "")
		}
	}
	if m.Receipt {
		_ = c.relayToXMPP(ctx, u, envelope{Kind: kindReceipt, Msg: Message{Contact: m.Contact, XMPPID: m.XMPPID, UserResource: m.UserResource}})
	}
	if m.XMPPID != "" {
		r.mu.Lock()
		r.recent.Add(relayRecent, m.UserResource, '/', m.XMPPID)
		r.mu.Unlock()
	}
	c.counters.toLegacy.Inc()
	c.stats.toLegacy.Add(1)
}

// xmppIdemKey and legacyIdemKey are the outbox's idempotency keys; ""
// when the message has none (a random key).
func xmppIdemKey(env envelope) string {
	switch {
	case env.Kind == kindReceipt:
		return "receipt:" + env.Msg.XMPPID
	case env.Msg.LegacyID == "":
		return ""
	}
	return env.Kind + ":" + env.Msg.LegacyID
}

func legacyIdemKey(m Message) string {
	if m.XMPPID == "" {
		return ""
	}
	return m.UserResource + "/" + m.XMPPID
}

// sentByRelay returns what the relay remembers of a message it sent.
func (r *userRelay) sentByRelay(legacyID string) (sentRef, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.sent) - 1; i >= 0; i-- {
		if r.sent[i].legacyID == legacyID {
			return r.sent[i], true
		}
	}
	return sentRef{}, false
}
