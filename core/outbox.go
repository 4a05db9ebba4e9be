package core

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"time"

	xmppcomponent "mellium.im/xmpp/component"
	"mellium.im/xmpp/ping"
	"mellium.im/xmpp/stanza"

	"transportd/core/store"
)

// Envelope kinds in the outbox toward XMPP.
const (
	kindMessage = "message"
	kindReceipt = "receipt"
	kindError   = "error"
	kindSent    = "sent" // the user's own message sent elsewhere
)

// envelope is the outbox payload.
type envelope struct {
	Kind    string  `json:"kind"`
	Msg     Message `json:"msg"`
	ErrCond string  `json:"err_cond,omitempty"`
	ErrText string  `json:"err_text,omitempty"`
}

const (
	// giveUpAfter is how long an outgoing message waits for its account's
	// session before the user is told it was not sent.
	giveUpAfter = 48 * time.Hour
	// maxAttempts is how many temporary failures of the legacy network a
	// message survives.
	maxAttempts = 10
	// heldAfter: a message without a time of its own that waited longer
	// than this in the outbox toward XMPP gets the time it was queued,
	// as a delay stamp. Not every one: a room message waits some 100 ms
	// for the join of the room it is in, and clients take a delayed room
	// message for history.
	heldAfter = time.Second
)

// outbox moves committed messages in both directions. XEP-0114 has no stream
// management and servers queue nothing for a component that is down, so a
// message is only removed once the other side took it: toward XMPP after the
// server answered a ping sent behind it on the same stream, toward a legacy
// network after the transport's Send returned.
type outbox struct {
	g      *Gateway
	wakeCh chan struct{}

	mu       sync.Mutex
	inflight map[string]bool
	// finished records, per conversation, the sequence number of its last
	// completed send, so a list read before that completion is not used to
	// send the same item again.
	finished map[string]uint64
	seq      uint64
	sem      chan struct{}
}

func newOutbox(g *Gateway) *outbox {
	return &outbox{g: g, wakeCh: make(chan struct{}, 1), inflight: map[string]bool{}, finished: map[string]uint64{}, sem: make(chan struct{}, 16)}
}

func (o *outbox) wake() {
	select {
	case o.wakeCh <- struct{}{}:
	default:
	}
}

func randomID() string { return string(appendRandomID(make([]byte, 0, 24))) }

// appendRandomID appends 24 random hex digits.
func appendRandomID(b []byte) []byte {
	var r [12]byte
	_, _ = rand.Read(r[:])
	return hex.AppendEncode(b, r[:])
}

func (o *outbox) enqueueToLegacy(ctx context.Context, u *user, m Message) error {
	key := legacyIdemKey(m)
	if key == "" {
		key = randomID()
	}
	return o.enqueue(ctx, u.acctID(), store.ToLegacy, m.Contact, key, envelope{Kind: kindMessage, Msg: m})
}

func (o *outbox) enqueueToXMPP(ctx context.Context, u *user, env envelope) error {
	key := xmppIdemKey(env)
	if key == "" {
		key = randomID()
	}
	if u.relay != nil {
		// Before the commit: a relay that reads the flag clear after this
		// finds the item in the store.
		u.relay.xmppQueued.Store(true)
	}
	return o.enqueue(ctx, u.acctID(), store.ToXMPP, env.Msg.Contact, key, env)
}

func (o *outbox) enqueue(ctx context.Context, acctID int64, dir store.Direction, conv, key string, env envelope) error {
	payload, err := json.Marshal(env)
	if err != nil {
		return err
	}
	_, dup, err := o.g.store.Enqueue(ctx, &store.OutboxItem{
		AccountID: acctID, Direction: dir, Conversation: conv, IdemKey: key,
		Payload: payload, NextAttempt: time.Now(),
	})
	if err != nil {
		return err
	}
	if dup {
		o.g.metrics.outboxDup.WithLabelValues(string(dir)).Inc()
		return nil
	}
	o.wake()
	return nil
}

// mappingsKept is how long message ID mappings (receipts, markers,
// threads) are kept.
const mappingsKept = 30 * 24 * time.Hour

// prune forgets delivered idempotency keys past the dedupe window and old
// message ID mappings, so the store does not grow for ever.
func (o *outbox) prune(ctx context.Context) {
	now := time.Now()
	if n, err := o.g.store.PruneDelivered(ctx, now.Add(-store.DedupeWindow)); err != nil {
		o.g.log.Warn("pruning delivered keys", "error", err)
	} else if n > 0 {
		o.g.log.Debug("pruned delivered keys", "count", n)
	}
	if _, err := o.g.store.PruneMappings(ctx, now.Add(-mappingsKept)); err != nil {
		o.g.log.Warn("pruning message mappings", "error", err)
	}
}

func (o *outbox) run(ctx context.Context) {
	o.prune(ctx)
	lastPrune := time.Now()
	var lastGauges time.Time
	for ctx.Err() == nil {
		if time.Since(lastPrune) > time.Hour {
			o.prune(ctx)
			lastPrune = time.Now()
		}
		busy := o.toXMPP(ctx)
		o.toLegacy(ctx)
		// Counting the queues on every pass cost two queries per message:
		// the depth gauges are sampled at most once a second, and once
		// more within a second after the last pass, so they settle.
		gaugesStale := true
		if time.Since(lastGauges) >= time.Second {
			o.gauges(ctx)
			lastGauges, gaugesStale = time.Now(), false
		}
		if busy {
			continue
		}
		wait := 30 * time.Second
		if gaugesStale {
			wait = max(time.Until(lastGauges.Add(time.Second)), 50*time.Millisecond)
		}
		for _, dir := range []store.Direction{store.ToXMPP, store.ToLegacy} {
			if t, err := o.g.store.NextDue(ctx, dir); err == nil {
				if d := time.Until(t); d < wait {
					wait = max(d, 50*time.Millisecond)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-o.wakeCh:
		case <-time.After(wait):
		}
	}
}

func (o *outbox) gauges(ctx context.Context) {
	for _, dir := range []store.Direction{store.ToXMPP, store.ToLegacy} {
		if n, err := o.g.store.Pending(ctx, 0, dir); err == nil {
			o.g.metrics.outboxDepth.WithLabelValues(string(dir)).Set(float64(n))
		}
	}
}

// toXMPP sends due items whose component is up, then confirms them with a
// ping round trip before deleting them. It reports whether it made progress
// on a full batch (so the caller loops without sleeping).
func (o *outbox) toXMPP(ctx context.Context) bool {
	const batch = 100
	items, err := o.g.store.Due(ctx, store.ToXMPP, time.Now(), batch)
	if err != nil {
		if ctx.Err() == nil {
			o.g.log.Error("outbox read", "error", err)
		}
		return false
	}
	type ready struct {
		it  *store.OutboxItem
		c   *component
		els []outgoing
	}
	var (
		batchReady []ready
		mappings   []store.Mapping
		accounts   = map[int64]*store.Account{} // items of a batch mostly share accounts
	)
	for _, it := range items {
		a := accounts[it.AccountID]
		if a == nil {
			if a, err = o.g.store.GetAccountByID(ctx, it.AccountID); err != nil {
				o.g.log.Error("outbox item without account", "id", it.ID, "error", err)
				_ = o.g.store.Done(ctx, it.ID)
				continue
			}
			accounts[it.AccountID] = a
		}
		c := o.g.component(a.Domain, a.Transport)
		if c == nil || !c.link.up.Load() {
			// Waits for the link; linkState wakes the worker when it is up.
			_ = o.g.store.Postpone(ctx, it.ID, time.Now().Add(time.Second), "XMPP link down")
			continue
		}
		var env envelope
		if err := json.Unmarshal(it.Payload, &env); err != nil {
			c.log.Error("outbox item unreadable, dropped", "id", it.ID, "error", err)
			_ = o.g.store.Done(ctx, it.ID)
			continue
		}
		if env.Kind == kindMessage && env.Msg.Time.IsZero() && time.Since(it.Created) > heldAfter {
			// Held (the XMPP link was down, the user was joining the
			// room): it says when it came (XEP-0203), and the rooms'
			// archive keeps it under that time.
			env.Msg.Time = it.Created
		}
		els, xmppID, wait := c.renderToXMPP(a, env)
		if wait {
			// Delivered right after RoomJoined, before the user's drain
			// published the room: wait for it rather than drop.
			_ = o.g.store.Postpone(ctx, it.ID, time.Now().Add(100*time.Millisecond), "room join in progress")
			continue
		}
		if env.Kind == kindMessage && env.Msg.LegacyID != "" && xmppID != "" {
			mappings = append(mappings, store.Mapping{AccountID: a.ID, XMPPID: xmppID, LegacyID: env.Msg.LegacyID})
		}
		batchReady = append(batchReady, ready{it, c, els})
	}
	sent := map[*component][]int64{}
	for _, r := range batchReady {
		for _, el := range r.els {
			if err = r.c.send(el); err != nil {
				break
			}
		}
		if err != nil {
			_ = o.g.store.Retry(ctx, r.it.ID, time.Now().Add(time.Second), err.Error())
			continue
		}
		sent[r.c] = append(sent[r.c], r.it.ID)
	}
	// The batch's id mappings, in one commit. (A mapping of a message that
	// failed is harmless: its retry gets a new id.) Written between the
	// messages and the confirming pings, as before: with the pings right
	// behind the messages, a user answering at once waited 40 ms more
	// (echo benchmark p50 4 ms -> 44 ms). Most likely Prosody's Nagle
	// (on by default, network_settings.nagle) holding the user's next
	// stanza behind the ping answer until our delayed ACK.
	if err := o.g.store.PutMappings(ctx, mappings); err != nil {
		o.g.log.Warn("recording message ids", "error", err)
	}
	for c, ids := range sent {
		// A batch already written is confirmed and recorded even when the
		// gateway is stopping, or it would be sent again after a restart.
		ctx := context.WithoutCancel(ctx)
		if err := c.confirm(ctx); err != nil {
			c.log.Warn("server did not confirm delivery; will resend", "items", len(ids), "error", err)
			continue
		}
		if err := o.g.store.DoneMany(ctx, ids); err != nil {
			o.g.log.Error("outbox done", "error", err)
		}
		c.counters.toXMPP.Add(float64(len(ids)))
		c.stats.toXMPP.Add(int64(len(ids)))
	}
	// Due hands out one item per conversation: any progress means the next
	// ones are due, so loop at once instead of sleeping per item.
	return len(sent) > 0
}

// renderToXMPP builds the stanzas for an outbox envelope: one, or one per
// joined resource for a room message (none if nobody is in the room now).
// wait: a room message that must wait for a join under way (no stanzas).
func (c *component) renderToXMPP(a *store.Account, env envelope) (els []outgoing, id string, wait bool) {
	if env.Msg.Groupchat {
		return c.renderRoomMessage(a, env.Msg)
	}
	if env.Kind == kindSent {
		c.noteContact(context.Background(), a, env.Msg.Contact, env.Msg.Nick)
		return c.renderSent(a, env.Msg), "", false
	}
	if env.Kind == kindMessage {
		c.noteContact(context.Background(), a, env.Msg.Contact, env.Msg.Nick)
	}
	el, id := c.renderOne(a, env)
	return []outgoing{el}, id, false
}

// nsConference is XEP-0249's direct MUC invitation.
const nsConference = "jabber:x:conference"

// renderRoomMessage gives a room message to each of the user's resources
// in the room, and the stanza id they share. wait: the room is joining
// (see publishView) and the message must wait. It is told from the same
// look at the room's view as the stanzas: asked again after, the join
// could have ended in between, and the message was dropped as if nobody
// were in the room (TestJoinBusyRoom lost its first line under load).
func (c *component) renderRoomMessage(a *store.Account, m Message) (_ []outgoing, _ string, wait bool) {
	u := c.accountUser(a)
	if u == nil {
		return nil, "", false
	}
	rv, _ := u.roomView(m.Contact)
	if rv.joining {
		return nil, "", true
	}
	resources := rv.res
	if len(resources) == 0 {
		c.archiveRoomMessage(u, &m) // dropped, but archived
		return nil, "", false
	}
	c.archiveRoomMessage(u, &m)
	id := m.XMPPID // the user's own message reflected keeps its id
	if id == "" {
		id = randomID()
	}
	local, domain := c.local(a.Label, m.Contact), c.jid.Domainpart()
	// The room's JID and the sender's occupant JID from one string: one
	// allocation a relayed message rather than two.
	var from, room string
	switch {
	case local == "" && m.Nick != "":
		from, room = domain+"/"+m.Nick, "@"+domain
	case local == "":
		from, room = domain, "@"+domain // as c.stanza
	case m.Nick != "":
		from = local + "@" + domain + "/" + m.Nick
		room = from[:len(local)+1+len(domain)]
	default:
		from = local + "@" + domain
		room = from
	}
	proto := roomStanza{from: from, id: id, body: m.Body}
	if !m.Time.IsZero() {
		proto.delayFrom, proto.stamp = c.jid.String(), m.Time.UTC().Format(time.RFC3339)
	}
	if sid := cmp.Or(m.StanzaID, m.LegacyID); sid != "" { // the archive's id, else the network's
		proto.sid, proto.sidBy = sid, room
	}
	proto.configChanged = m.ConfigChanged && m.Nick == ""
	if len(resources) == 1 {
		// The stanza and the slice holding it in one allocation.
		one := &struct {
			st  roomStanza
			out [1]outgoing
		}{st: proto}
		one.st.to = a.JID + "/" + resources[0]
		one.out[0] = &one.st
		return one.out[:], id, false
	}
	out := make([]outgoing, len(resources))
	stanzas := make([]roomStanza, len(resources))
	for i, res := range resources {
		stanzas[i] = proto
		stanzas[i].to = a.JID + "/" + res
		out[i] = &stanzas[i]
	}
	return out, id, false
}

// roomStanza is a group chat message to one resource, written without an
// element tree (see outgoing).
type roomStanza struct {
	from, to, id, body string
	delayFrom, stamp   string // a delay, if stamp is set
	sid, sidBy         string // a stanza-id, if sid is set
	configChanged      bool   // status 104 (Message.ConfigChanged)
}

func (s *roomStanza) stanzaHeader() (name, from, to string) { return "message", s.from, s.to }

// appendTo writes what appendStanza writes for the same message built as
// an element (TestRoomStanzaWrittenAsElement holds them together).
func (s *roomStanza) appendTo(b []byte) ([]byte, bool) {
	b = append(b, `<message xmlns="`+xmppcomponent.NSAccept+`"`...)
	b = appendAttr(b, "from", s.from)
	b = appendAttr(b, "to", s.to)
	b = append(b, ` type="groupchat"`...)
	id := s.id
	if id == "" {
		id = randomID()
	}
	b = appendAttr(b, "id", id)
	b = append(b, "><body>"...)
	b = appendEscaped(b, s.body, false)
	b = append(b, "</body>"...)
	if s.stamp != "" {
		b = append(b, `<delay xmlns="`+nsDelay+`"`...)
		b = appendAttr(b, "from", s.delayFrom)
		b = appendAttr(b, "stamp", s.stamp)
		b = append(b, "></delay>"...)
	}
	if s.sid != "" {
		b = append(b, `<stanza-id xmlns="`+nsStanzaID+`"`...)
		b = appendAttr(b, "id", s.sid)
		b = appendAttr(b, "by", s.sidBy)
		b = append(b, "></stanza-id>"...)
	}
	if s.configChanged {
		b = append(b, `<x xmlns="`+nsMUCUser+`"><status code="104"></status></x>`...)
	}
	return append(b, "</message>"...), true
}

// appendAttr appends ` name="value"`, or nothing for an empty value (as
// SetAttr keeps no empty attribute).
func appendAttr(b []byte, name, value string) []byte {
	if value == "" {
		return b
	}
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, `="`...)
	b = appendEscaped(b, value, true)
	return append(b, '"')
}

func (c *component) renderOne(a *store.Account, env envelope) (*Element, string) {
	m := env.Msg
	local := c.local(a.Label, m.Contact)
	to := a.JID
	switch env.Kind {
	case kindReceipt:
		if m.UserResource != "" {
			to += "/" + m.UserResource
		}
		el := c.stanza("message", local, "", to, "")
		el.SetAttr("id", randomID())
		el.Add(NewElement(nsReceipts, "received", "id", m.XMPPID))
		return el, ""
	case kindError:
		if m.UserResource != "" {
			to += "/" + m.UserResource
		}
		el := c.stanza("message", local, "", to, "error")
		el.SetAttr("id", m.XMPPID)
		e := &Error{Condition: stanza.Condition(env.ErrCond), Text: env.ErrText}
		e.Type = defaultErrorType[e.Condition]
		if e.Type == "" {
			e.Type = stanza.Cancel
		}
		el.Add(e.element())
		return el, m.XMPPID
	}
	typ := "chat"
	if m.Normal {
		typ = "normal"
	}
	id := randomID()
	el := c.stanza("message", local, "", to, typ)
	el.SetAttr("id", id)
	if m.Subject != "" {
		el.AddText("", "subject", m.Subject)
	}
	el.AddText("", "body", m.Body)
	if m.Thread != "" {
		el.AddText("", "thread", m.Thread)
	}
	if m.Nick != "" {
		el.AddText(nsNick, "nick", m.Nick)
	}
	for _, at := range m.Attachments {
		x := NewElement(nsOOB, "x")
		x.AddText("", "url", at.URL)
		x.AddText("", "desc", at.Name)
		el.Add(x)
	}
	if m.Invite != "" {
		if _, rooms := c.t.(GroupChats); rooms {
			el.Add(NewElement(nsConference, "x", "jid", c.local(a.Label, m.Invite)+"@"+c.jid.Domainpart(), "reason", m.Body))
		}
	}
	if !m.Time.IsZero() {
		el.Add(NewElement(nsDelay, "delay", "from", c.jid.String(), "stamp", m.Time.UTC().Format(time.RFC3339)))
	}
	if c.readsMarkers(a) {
		el.Add(NewElement(nsReceipts, "request"))
		el.Add(NewElement(nsMarkers, "markable"))
	}
	return el, id
}

// readsMarkers says whether the account's session takes the user's
// receipts and displayed markers (a Marker: e-mail's \Seen). Only then
// does a message from a contact ask for them: a client answers a
// request with a stanza of its own for every message, which for IRC
// and SMS, whose networks have no read state, core would read and drop.
// While no session runs (the outbox delivering after a restart) the
// answer is yes, as before this was asked.
func (c *component) readsMarkers(a *store.Account) bool {
	u := c.accountUser(a)
	if u == nil {
		return true
	}
	l := u.live.Load()
	if l == nil {
		return true
	}
	_, ok := l.s.(Marker)
	return ok
}

// confirm sends a ping to the server behind the stanzas just written and
// waits for its answer: the stream is ordered, so the answer means the
// server took everything before it.
func (c *component) confirm(ctx context.Context) error {
	id := randomID()
	ch := make(chan *Element, 1)
	c.pending.Store(id, ch)
	defer c.pending.Delete(id)
	iq := c.stanza("iq", "", "", c.dom().Name, "get")
	iq.SetAttr("id", id)
	iq.Add(NewElement(ping.NS, "ping"))
	lost := c.link.lost()
	if err := c.send(iq); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	select {
	case <-ch:
		// A result or an error both prove the server read the stream up
		// to here.
		return nil
	case <-lost:
		// No answer can come on a connection that ended (a stop of the
		// gateway used to wait the full 15 s here), unless it came just
		// before.
		select {
		case <-ch:
			return nil
		default:
		}
		return errors.New("the XMPP link ended before the server confirmed")
	case <-ctx.Done():
		return errors.New("no answer to the confirming ping")
	}
}

// toLegacy hands due items to their sessions, one conversation at a time.
func (o *outbox) toLegacy(ctx context.Context) {
	o.mu.Lock()
	readSeq := o.seq
	o.mu.Unlock()
	items, err := o.g.store.Due(ctx, store.ToLegacy, time.Now(), 200)
	if err != nil {
		if ctx.Err() == nil {
			o.g.log.Error("outbox read", "error", err)
		}
		return
	}
	for _, it := range items {
		key := strconv.FormatInt(it.AccountID, 10) + "|" + it.Conversation
		o.mu.Lock()
		if o.inflight[key] || o.finished[key] > readSeq {
			// In flight, or finished after the list was read: the list is
			// stale for this conversation (the wake that follows re-reads).
			o.mu.Unlock()
			continue
		}
		delete(o.finished, key)
		o.inflight[key] = true
		o.mu.Unlock()
		select {
		case o.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		o.g.goSafe("outbox-send", func() {
			defer func() {
				<-o.sem
				o.mu.Lock()
				delete(o.inflight, key)
				o.seq++
				o.finished[key] = o.seq
				o.mu.Unlock()
				o.wake()
			}()
			o.deliverLegacy(ctx, it)
		})
	}
}

func (o *outbox) deliverLegacy(ctx context.Context, it *store.OutboxItem) {
	a, err := o.g.store.GetAccountByID(ctx, it.AccountID)
	if err != nil {
		_ = o.g.store.Done(ctx, it.ID)
		return
	}
	c := o.g.component(a.Domain, a.Transport)
	var env envelope
	if c == nil || json.Unmarshal(it.Payload, &env) != nil {
		o.g.log.Error("outbox item cannot be delivered, dropped", "id", it.ID)
		_ = o.g.store.Done(ctx, it.ID)
		return
	}
	m := env.Msg
	fail := func(err error) {
		se := toStanzaError(err)
		c.log.Info("message not sent", "error", err)
		u := c.accountUser(a)
		if u != nil {
			_ = o.enqueueToXMPP(ctx, u, envelope{Kind: kindError, Msg: Message{Contact: m.Contact, XMPPID: m.XMPPID, UserResource: m.UserResource, LegacyID: "err:" + it.IdemKey}, ErrCond: string(se.Condition), ErrText: se.Text})
		}
		_ = o.g.store.Done(ctx, it.ID)
	}
	u := c.accountUser(a)
	var live *liveSession
	if u != nil {
		live = u.live.Load()
	}
	if live == nil || u.stateNow.Load().State != StateConnected {
		if time.Since(it.Created) > giveUpAfter {
			fail(NewError(stanza.RemoteServerTimeout, "not sent: the gateway could not reach the network for two days"))
			return
		}
		// Waiting for the session is no failed attempt: it must not use up
		// the retry budget of the message.
		_ = o.g.store.Postpone(ctx, it.ID, time.Now().Add(5*time.Second), "session not connected")
		return
	}
	if m.Groupchat {
		// A room message waits for the user to be in the room: sent after
		// a leave, it would put them back in it on the network (IRC: a
		// JOIN), or speak for them where they no longer are.
		switch res, in := u.lookupView(m.Contact); {
		case !in:
			fail(NewError(stanza.NotAcceptable, "not sent: you were no longer in the room when it could be sent"))
			return
		case len(res) == 0:
			_ = o.g.store.Postpone(ctx, it.ID, time.Now().Add(5*time.Second), "joining the room")
			return
		}
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	m.FromOutbox = true
	legacyID, err := live.s.Send(sctx, &m)
	cancel()
	// What the network took is recorded even if the gateway is stopping.
	ctx = context.WithoutCancel(ctx)
	switch {
	case err == nil:
		if legacyID != "" && m.XMPPID != "" {
			_ = o.g.store.PutMapping(ctx, a.ID, m.XMPPID, legacyID)
		}
		if !m.Groupchat && m.Nick == "" {
			c.noteContact(ctx, a, m.Contact, "")
		}
		switch {
		case c.info.DeferredReceipts && legacyID != "" && !m.Receipt:
			// Remember who sent it, so a later failure reaches that client.
			_ = o.g.store.SetState(ctx, a.ID, receiptKey(legacyID), m.UserResource+"\x00")
		case m.Receipt && c.info.DeferredReceipts && legacyID != "":
			// The network confirms later: remember who asked.
			_ = o.g.store.SetState(ctx, a.ID, receiptKey(legacyID), m.UserResource+"\x00"+m.XMPPID)
		case m.Receipt:
			_ = o.enqueueToXMPP(ctx, u, envelope{Kind: kindReceipt, Msg: Message{Contact: m.Contact, XMPPID: m.XMPPID, UserResource: m.UserResource}})
		}
		_ = o.g.store.Done(ctx, it.ID)
		c.counters.toLegacy.Inc()
		c.stats.toLegacy.Add(1)
	case errors.Is(err, ErrUnconfirmed):
		c.log.Info("not sent again: an interrupted attempt may have reached the network; no receipt", "item", it.ID)
		_ = o.g.store.Done(ctx, it.ID)
	case errors.Is(err, ErrTemporary) && it.Attempts+1 < maxAttempts:
		backoff := min(time.Duration(1<<min(it.Attempts, 20))*time.Second, 5*time.Minute)
		c.log.Info("send failed, will retry", "error", err, "attempt", it.Attempts+1, "retry_in", backoff)
		_ = o.g.store.Retry(ctx, it.ID, time.Now().Add(backoff), err.Error())
	default:
		fail(err)
	}
}

// acctID returns the account ID of a user, stable for its life.
func (u *user) acctID() int64 { return u.id }
