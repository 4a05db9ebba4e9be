package core

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"transportd/core/store"
	"transportd/internal/memtrim"
	"transportd/internal/queue"
	"transportd/registration"
)

// user is one registered account on one component. A single goroutine
// at a time (drain) owns its state; the read loop, the outbox and the
// legacy session only post events to it.
type user struct {
	c     *component
	bare  string
	label string // account label; "" for the main account
	id    int64  // account ID: re-registration updates the row in place
	// queue holds at most userQueue events; an idle user holds no array.
	queue queue.Bounded[userEvent]
	done  queue.Done // closed by stop
	once  sync.Once
	// active is true while a drain runs; whoever sets it from false to
	// true starts one.
	active atomic.Bool

	// live is the running legacy session, read by the outbox worker.
	live atomic.Pointer[liveSession]
	// stateNow mirrors state for readers outside the loop (commands).
	stateNow atomic.Pointer[stateSnapshot]
	// disabled is set while an operator has disabled the account.
	disabled atomic.Bool
	// noArchive is set while the user turned the rooms' archive off
	// (settingArchive).
	noArchive atomic.Bool
	// features are the disco features of the user's online resources.
	features clientFeatures

	// relay is the account's relay state (Info.Relay only; relay.go).
	relay *userRelay

	// roomsView lists the joined rooms with their joined resources, for the
	// outbox; written by loop only.
	roomsView atomic.Pointer[[]roomView]

	// Owned by loop.
	acct      *store.Account
	resources nameSet // the user's available resources
	rooms     roomList
	// online: the contacts the session last said are online
	// (contactpresence.go); nil while none.
	online map[string]ContactStatus
	gen    int
	cancel context.CancelFunc
	// A room listing keeps the session running until browseUntil (unix
	// nanoseconds; 0: none): see evBrowse.
	browseUntil int64
	browseTimer *time.Timer
}

type liveSession struct {
	s   Session
	gen int
}

type stateSnapshot struct {
	State     State
	Text      string
	Resources int
	Since     time.Time
}

type userEvent interface{}

type (
	evPresence struct {
		resource  string
		available bool
	}
	evState struct {
		gen   int
		state State
		text  string
	}
	evRegistered struct {
		account *store.Account
		first   bool
	}
	evLinkUp    struct{}
	evEnable    struct{ on bool }
	evProbe     struct{}
	evReconnect struct{}
)

func newUser(c *component, a *store.Account) *user {
	u := &user{
		c:     c,
		bare:  a.JID,
		label: a.Label,
		id:    a.ID,
		acct:  a,
		queue: queue.Bounded[userEvent]{Max: userQueue},
	}
	if c.info.Relay {
		u.relay = newUserRelay()
	}
	u.stateNow.Store(&stateSnapshot{State: StateDisconnected, Since: time.Now()})
	u.disabled.Store(!a.Enabled)
	u.noArchive.Store(a.Fields[settingArchive] == "false")
	u.active.Store(true) // start's drain runs first
	return u
}

// logger is the user's logger: the component's, with the user's JID
// (redacted when the operator asks). It is made on each call, not kept:
// a logger with an attribute is some 230 bytes in three objects, which
// every idle user would hold for the few lines it logs in a day.
func (u *user) logger() *slog.Logger {
	return u.c.log.With("user", u.c.redact(u.bare))
}

// start runs the user's first drain, which starts the legacy session if
// it is wanted.
func (u *user) start() {
	u.c.g.goSafe("user", func() { u.drain(func() { u.reconcileSession() }) })
}

// userQueue is how many events may wait for a user; posting blocks
// beyond (back-pressure on the component's reader).
const userQueue = 64

// post hands an event to the user, starting a drain if none runs. It
// blocks while the queue is full (back-pressure on the reader) and drops
// the event once the user is stopped, reporting false.
func (u *user) post(ev userEvent) bool {
	if u.queue.Put(ev, &u.done, nil) {
		u.wake()
		return true
	}
	return false
}

// wake starts a drain unless one runs.
func (u *user) wake() {
	if u.active.CompareAndSwap(false, true) {
		u.c.g.goSafe("user", func() { u.drain(nil) })
	}
}

// stop ends the user: a drain stops its legacy session.
func (u *user) stop() {
	u.once.Do(func() {
		u.done.Close()
		u.wake()
	})
}

func (u *user) stopped() bool { return u.done.Closed() }

// drain owns the user's state: it runs first (if not nil), then handles
// the queued events, and ends when there are none left. A user keeps no
// goroutine while idle: a goroutine keeps the stack its deepest work
// needed (the store, stanzas), and every registered account has a user.
// Once the user is stopped, a drain stops the legacy session and no drain
// starts again (active stays true).
func (u *user) drain(first func()) {
	defer func() {
		if r := recover(); r != nil {
			// The user's state may be half changed: end it (later events
			// are dropped, not queued behind a drain that never comes
			// back, blocking their posters, the link's reader among
			// them) and build it again from the stored account.
			u.stop()
			u.stopSession()
			u.c.replaceUser(u)
			panic(r) // for goSafe to log and count
		}
	}()
	if first != nil {
		first()
	}
	for {
		if u.stopped() {
			u.stopSession()
			return
		}
		if ev, ok := u.queue.Take(); ok {
			u.handle(ev)
			continue
		}
		u.active.Store(false)
		// Something posted (or the stop) after take above and before
		// the store found active still true: this drain takes it,
		// unless its poster started a new one meanwhile.
		if u.queue.Len() == 0 && !u.stopped() || !u.active.CompareAndSwap(false, true) {
			return
		}
	}
}

func (u *user) handle(ev userEvent) {
	switch ev := ev.(type) {
	case evPresence:
		isNew := ev.available && !u.resources.has(ev.resource)
		if isNew {
			u.discoResource(ev.resource)
		}
		if ev.available {
			u.resources.add(ev.resource)
		} else {
			u.resources.del(ev.resource)
			u.forgetResource(ev.resource)
			// A resource going offline leaves its rooms.
			for _, r := range slices.Clone(u.rooms) { // leaving deletes from u.rooms
				if r.resources.has(ev.resource) || r.pending.has(ev.resource) {
					u.handleRoom(evRoomLeave{resource: ev.resource, room: r.address})
				}
			}
		}
		u.snapshot()
		changed := u.reconcileSession()
		if changed || isNew || !ev.available {
			u.sendPresence()
		}
	case evState:
		if ev.gen != u.gen {
			return // a session we already stopped
		}
		if now := u.stateNow.Load(); ev.state == now.State && ev.text == now.Text {
			return
		}
		u.logger().Info("legacy session state", "state", ev.state.String(), "text", ev.text)
		u.setState(ev.state, ev.text)
		u.sendPresence()
		if ev.state == StateConnected {
			// What waited for this session goes now, not at its next
			// retry. Only then is the outbox woken: a pass is some five
			// queries, for every session that connects (a restart's
			// storm of them).
			ctx, cancel := u.c.g.workCtx(5 * time.Second)
			n, err := u.c.g.store.MakeDue(ctx, u.id, store.ToLegacy)
			cancel()
			if n > 0 || err != nil {
				u.c.g.outbox.wake()
			}
		}
	case evRegistered:
		// A new account's user was made with this very account (and
		// its session may have started): nothing changed.
		changed := ev.account != u.acct
		u.acct = ev.account
		u.noArchive.Store(ev.account.Fields[settingArchive] == "false")
		if ev.first {
			_ = u.c.send(u.c.stanza("presence", "", "", u.bare, "subscribe"))
		} else {
			// Another account of a user already subscribed: the server's
			// answer to a probe tells this one which resources are online.
			_ = u.c.send(u.c.stanza("presence", "", "", u.bare, "probe"))
		}
		if u.cancel != nil && changed {
			u.stopSession() // credentials changed
		}
		u.reconcileSession()
		u.sendPresence()
	case evLinkUp:
		_ = u.c.send(u.c.stanza("presence", "", "", u.bare, "probe"))
		u.sendPresence()
	case evProbe:
		u.sendPresence()
	case evEnable:
		u.disabled.Store(!ev.on)
		u.acct.Enabled = ev.on
		u.reconcileSession()
		if !ev.on {
			p := u.c.stanza("presence", "", "", u.bare, "unavailable")
			p.AddText("", "status", "Your account on this gateway was disabled by the operator.")
			_ = u.c.send(p)
			return
		}
		u.sendPresence()
	case evReconnect:
		u.stopSession()
		u.reconcileSession()
		u.sendPresence()
	case evBrowse:
		u.browse(ev)
	case evBrowseEnd:
		u.browseEnd()
	default:
		if !u.handleContact(ev) {
			u.handleRoom(ev)
		}
	}
}

// policy is the account's session policy.
func (u *user) policy() SessionPolicy {
	if ap, ok := u.c.t.(AccountPolicy); ok {
		return ap.PolicyFor(u.acct.Fields)
	}
	return u.c.info.Policy
}

// reconcileSession starts the legacy session when it is wanted (persistent
// policy, a resource online, a room joined, or a room listing lately) and
// stops it when not. It reports whether it changed anything.
func (u *user) reconcileSession() bool {
	want := !u.disabled.Load() && (u.policy() == Persistent || len(u.resources) > 0 || len(u.rooms) > 0 || u.browseUntil != 0)
	switch {
	case want && u.cancel == nil:
		u.startSession()
		return true
	case !want && u.cancel != nil:
		u.stopSession()
		return true
	}
	return false
}

// setState records the session's state; loop only. The state lives in
// stateNow alone (a copy in the user was 24 bytes of every account's).
func (u *user) setState(st State, text string) {
	u.stateNow.Store(&stateSnapshot{State: st, Text: text, Resources: len(u.resources), Since: time.Now()})
}

// snapshot records the state again, with the resources now online.
func (u *user) snapshot() {
	now := u.stateNow.Load()
	u.setState(now.State, now.Text)
}

func (u *user) startSession() {
	vals, err := u.c.values(u.acct)
	if err != nil {
		u.logger().Error("cannot open the stored credentials", "error", err)
		u.setState(StateBadCredentials, "stored credentials cannot be read; register again")
		return
	}
	u.gen++
	memtrim.Churn() // a session's state is long-lived: see package memtrim
	a := &Account{ID: u.acct.ID, Domain: u.acct.Domain, Transport: u.acct.Transport, JID: u.bare, Label: u.label, Values: vals, Defaults: u.c.tcfg().Defaults}
	s := u.c.t.NewSession(a, &sink{u: u, gen: u.gen, acctID: u.acct.ID})
	sc := newSessionCtx()
	ctx := context.Context(sc)
	u.cancel = sc.cancel
	u.setState(StateConnecting, "connecting")
	u.live.Store(&liveSession{s: s, gen: u.gen})
	u.c.g.metrics.sessions.WithLabelValues(u.c.info.Name).Inc()
	if st, ok := s.(SessionStarter); ok {
		u.c.g.startSafe(ctx, "session", st)
	} else {
		u.c.g.goSafe("session", func() { s.Run(ctx) })
	}
	u.rejoinRooms(s)
	u.watchContacts()
}

// rejoinRooms asks a new session (after Reconnect, or new credentials or
// settings) to join the rooms the user is still in; the old session's
// joins ended with it.
func (u *user) rejoinRooms(s Session) {
	gs, ok := s.(GroupSession)
	if !ok {
		return
	}
	ctx, cancel := u.c.g.workCtx(10 * time.Second)
	defer cancel()
	for _, r := range u.rooms {
		if r.joined {
			_ = gs.JoinRoom(ctx, r.address, r.nick, r.password)
		}
	}
}

func (u *user) stopSession() {
	if u.cancel == nil {
		return
	}
	u.cancel()
	u.cancel = nil
	u.gen++
	u.live.Store(nil)
	u.contactsOffline()
	u.setState(StateDisconnected, "")
	u.c.g.metrics.sessions.WithLabelValues(u.c.info.Name).Dec()
}

// sendPresence shows the account's state as the gateway's presence
// (XEP-0100): available when the legacy session is up, away while it
// connects, xa when it is failing and dnd when its credentials are refused.
func (u *user) sendPresence() { u.c.sendGatewayPresence(u.bare) }

// sendGatewayPresence shows the state of a user's accounts as the
// gateway's presence (XEP-0100): available when the legacy sessions are
// up, away while one connects, xa when one is failing and dnd when one's
// credentials are refused, with each account's state in the status when
// the user has several.
func (c *component) sendGatewayPresence(bare string) {
	type acct struct {
		label string
		st    *stateSnapshot
	}
	var active []acct
	for _, u := range c.usersOf(bare) {
		st := u.stateNow.Load()
		if u.disabled.Load() || (st.Resources == 0 && st.State == StateDisconnected) {
			continue
		}
		active = append(active, acct{u.label, st})
	}
	if len(active) == 0 {
		_ = c.send(c.stanza("presence", "", "", bare, "unavailable"))
		return
	}
	rank := func(s State) int {
		switch s {
		case StateConnected:
			return 0
		case StateTransientFail:
			return 2
		case StateBadCredentials:
			return 3
		}
		return 1
	}
	worst := StateConnected
	var texts []string
	for _, a := range active {
		if rank(a.st.State) > rank(worst) {
			worst = a.st.State
		}
		text := a.st.Text
		if text == "" && a.st.State != StateConnected {
			text = a.st.State.String()
		}
		if len(active) > 1 {
			name := a.label
			if name == "" {
				name = "main"
			}
			if text == "" {
				text = a.st.State.String()
			}
			text = name + ": " + text
		}
		if text != "" {
			texts = append(texts, text)
		}
	}
	p := c.stanza("presence", "", "", bare, "")
	switch rank(worst) {
	case 1:
		p.AddText("", "show", "away")
	case 2:
		p.AddText("", "show", "xa")
	case 3:
		p.AddText("", "show", "dnd")
	}
	if len(texts) > 0 {
		p.AddText("", "status", strings.Join(texts, "; "))
	}
	p.Add(c.capsElement())
	_ = c.send(p)
}

// sink is what a legacy session gets to report back.
type sink struct {
	u      *user
	gen    int
	acctID int64
}

func (s *sink) Panicked(where string, v any, stack []byte) {
	s.u.c.g.metrics.panics.Inc()
	s.u.logger().Error("panic recovered", "where", where, "panic", fmt.Sprint(v), "stack", string(stack))
}

func (s *sink) State(st State, text string) {
	s.u.post(evState{gen: s.gen, state: st, text: text})
}

func (s *sink) Deliver(ctx context.Context, m *Message) error {
	env := envelope{Kind: kindMessage, Msg: *m}
	s.u.stampRoomMessage(&env.Msg)
	return s.u.c.relayToXMPP(ctx, s.u, env)
}

func (s *sink) Receipt(ctx context.Context, contact, legacyID string) error {
	st := accountState{st: s.u.c.g.store, id: s.acctID}
	v, ok, err := st.Get(ctx, receiptKey(legacyID))
	if err != nil || !ok {
		return err // no receipt was asked for
	}
	resource, xmppID, _ := strings.Cut(v, "\x00")
	if xmppID == "" {
		// No receipt was asked for; the entry only routes failures.
		return st.Delete(ctx, receiptKey(legacyID))
	}
	if err := s.u.c.g.outbox.enqueueToXMPP(ctx, s.u, envelope{Kind: kindReceipt, Msg: Message{Contact: contact, XMPPID: xmppID, UserResource: resource}}); err != nil {
		return err
	}
	return st.Delete(ctx, receiptKey(legacyID))
}

func (s *sink) Failed(ctx context.Context, contact, legacyID string, cause error) error {
	if r := s.u.relay; r != nil {
		if ref, ok := r.sentByRelay(legacyID); ok {
			se := toStanzaError(cause)
			return s.u.c.relayToXMPP(ctx, s.u, envelope{Kind: kindError, Msg: Message{Contact: contact, XMPPID: ref.xmppID, UserResource: ref.resource, LegacyID: "failed:" + legacyID}, ErrCond: string(se.Condition), ErrText: se.Text})
		}
	}
	xmppID, err := s.u.c.g.store.XMPPID(ctx, s.acctID, legacyID)
	if errors.Is(err, store.ErrNotFound) {
		xmppID = ""
	} else if err != nil {
		return err
	}
	se := toStanzaError(cause)
	// The resource that sent the message, remembered at Send: an error to
	// the bare JID would be dropped by the server.
	st := accountState{st: s.u.c.g.store, id: s.acctID}
	v, _, _ := st.Get(ctx, receiptKey(legacyID))
	resource, _, _ := strings.Cut(v, "\x00")
	_ = st.Delete(ctx, receiptKey(legacyID))
	return s.u.c.g.outbox.enqueueToXMPP(ctx, s.u, envelope{Kind: kindError, Msg: Message{Contact: contact, XMPPID: xmppID, UserResource: resource, LegacyID: "failed:" + legacyID}, ErrCond: string(se.Condition), ErrText: se.Text})
}

// receiptKey is the state key under which a deferred receipt waits.
func receiptKey(legacyID string) string { return "receipt:" + legacyID }

func (s *sink) Store() StateStore { return accountState{st: s.u.c.g.store, id: s.acctID} }

func (s *sink) Logger() *slog.Logger { return s.u.logger() }

func (s *sink) Secrets() StateStore {
	a := &store.Account{Domain: s.u.c.dom().Name, Transport: s.u.c.info.Name, JID: s.u.bare, Label: s.u.label}
	return sealedState{st: accountState{st: s.u.c.g.store, id: s.acctID}, sealer: s.u.c.g.sealer, aad: aad(a)}
}

// sealedState keeps each value sealed, under "sealed:"+key.
type sealedState struct {
	st     accountState
	sealer *registration.Sealer
	aad    []byte
}

func (s sealedState) Get(ctx context.Context, key string) (string, bool, error) {
	v, ok, err := s.st.Get(ctx, "sealed:"+key)
	if err != nil || !ok {
		return "", false, err
	}
	blob, err := base64.StdEncoding.DecodeString(v)
	if err != nil {
		return "", false, err
	}
	m, err := s.sealer.Open(blob, s.aad)
	if err != nil {
		return "", false, err
	}
	return m["v"], true, nil
}

func (s sealedState) Set(ctx context.Context, key, value string) error {
	blob, err := s.sealer.Seal(map[string]string{"v": value}, s.aad)
	if err != nil {
		return err
	}
	return s.st.Set(ctx, "sealed:"+key, base64.StdEncoding.EncodeToString(blob))
}

func (s sealedState) Delete(ctx context.Context, key string) error {
	return s.st.Delete(ctx, "sealed:"+key)
}

type accountState struct {
	st store.Store
	id int64
}

func (a accountState) Get(ctx context.Context, key string) (string, bool, error) {
	v, err := a.st.GetState(ctx, a.id, key)
	if errors.Is(err, store.ErrNotFound) {
		return "", false, nil
	}
	return v, err == nil, err
}

func (a accountState) Set(ctx context.Context, key, value string) error {
	return a.st.SetState(ctx, a.id, key, value)
}

func (a accountState) Delete(ctx context.Context, key string) error {
	return a.st.DeleteState(ctx, a.id, key)
}
