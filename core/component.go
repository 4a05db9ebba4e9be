package core

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"transportd/core/config"
	"transportd/core/store"
	"transportd/internal/memtrim"
)

// component is one transport serving one XMPP domain: its link to the
// server, its registered users and the handlers for what the server routes
// to it.
type component struct {
	g    *Gateway
	conf atomic.Pointer[compConf]
	xc   config.XMPP // link settings it was started with
	t    Transport
	info Info
	// feats and caps: the disco#info features and their XEP-0115 hash,
	// from info (features, capsVer).
	feats []string
	caps  string
	jid   jid.JID
	log   *slog.Logger
	link  *link
	cmds  *commandRegistry

	// pending maps the id of an IQ we sent to the channel awaiting its answer.
	pending sync.Map

	jidMu sync.Mutex
	jids  map[string]jid.JID // parseJID's memory
	stats componentStats
	// privs maps a server host to what it granted (XEP-0356).
	privs    sync.Map
	rosterMu sync.Mutex
	// pushedNames remembers the name each roster item was pushed with;
	// seenContacts when each contact was last recorded.
	pushedNames  sync.Map
	seenContacts sync.Map
	// relay is the relay path's state toward XMPP (Info.Relay, relay.go).
	relay compRelay
	// archive writes the rooms' archive (archive.go).
	archive roomArchive
	// uploads remembers the HTTP upload services found (upload.go).
	uploads uploadCache
	// httpMux holds the routes the transport registered through its Host.
	httpMux *http.ServeMux

	// cancel stops run; done is closed when it returned.
	cancel context.CancelFunc
	done   chan struct{}

	mu    sync.Mutex
	users map[string][]*user // by bare JID; by label, the main account ("") first

	counters hotCounters
}

// hotCounters are the metrics counted for every relayed message, looked
// up once: WithLabelValues hashes its labels and takes a lock each call,
// four times per message.
type hotCounters struct {
	toXMPP, toLegacy prometheus.Counter
	in, out          [3]prometheus.Counter // message, presence, iq
}

func (h *hotCounters) init(m *Metrics, transport string) {
	h.toXMPP = m.messages.WithLabelValues(transport, "to_xmpp")
	h.toLegacy = m.messages.WithLabelValues(transport, "to_legacy")
	for i, kind := range [3]string{"message", "presence", "iq"} {
		h.in[i] = m.stanzas.WithLabelValues("in", kind)
		h.out[i] = m.stanzas.WithLabelValues("out", kind)
	}
}

// countStanza counts a stanza in or out.
func (c *component) countStanza(out bool, name string) {
	set := &c.counters.in
	dir := "in"
	if out {
		set, dir = &c.counters.out, "out"
	}
	i := -1
	switch name {
	case "message":
		i = 0
	case "presence":
		i = 1
	case "iq":
		i = 2
	}
	if i >= 0 && set[i] != nil {
		set[i].Inc()
		return
	}
	c.g.metrics.stanzas.WithLabelValues(dir, name).Inc()
}

// compConf is the part of the configuration a running component can take
// in place on reload (policies, admins, defaults).
type compConf struct {
	domain *config.Domain
	tc     config.Transport
}

func (c *component) dom() *config.Domain    { return c.conf.Load().domain }
func (c *component) tcfg() config.Transport { return c.conf.Load().tc }

func newComponent(g *Gateway, xc config.XMPP, d *config.Domain, tc config.Transport, t Transport, j jid.JID) *component {
	c := &component{
		g:       g,
		xc:      xc,
		t:       t,
		info:    t.Info(),
		jid:     j,
		log:     g.log.With("domain", d.Name, "transport", tc.Name),
		users:   map[string][]*user{},
		httpMux: http.NewServeMux(),
		done:    make(chan struct{}),
	}
	c.feats = c.makeFeatures()
	c.caps = c.makeCapsVer()
	c.relay.kick = make(chan struct{}, 1)
	c.archive.kick = make(chan struct{}, 1)
	c.counters.init(g.metrics, c.info.Name)
	c.conf.Store(&compConf{domain: d, tc: tc})
	c.link = &link{
		addr:     xc.ComponentAddr,
		jid:      j,
		secret:   []byte(tc.Secret),
		min:      xc.ReconnectMin,
		max:      xc.ReconnectMax,
		limits:   Limits{MaxDepth: xc.MaxStanzaDepth, MaxBytes: xc.MaxStanzaBytes},
		dispatch: c.dispatch,
		onState:  c.linkState,
	}
	var lastErr string
	var logMu sync.Mutex
	c.link.logf = func(msg string, args ...any) {
		// Log a failing link once per distinct error, not once per retry.
		logMu.Lock()
		defer logMu.Unlock()
		key := msg
		for i := 0; i+1 < len(args); i += 2 {
			if args[i] == "error" {
				if e, ok := args[i+1].(error); ok && e != nil {
					key += e.Error()
				}
			}
		}
		if key == lastErr && msg == "component link down, retrying" {
			c.log.Debug(msg, args...)
			return
		}
		lastErr = key
		c.log.Warn(msg, args...)
	}
	c.cmds = newCommandRegistry(c)
	return c
}

// run starts the sessions that do not wait for the user and keeps the link
// up until ctx is done; then it stops every user.
func (c *component) run(ctx context.Context) {
	defer close(c.done)
	defer memtrim.OnTrim(c.forgetJIDs)()
	accts, err := c.g.store.ListAccounts(ctx, c.dom().Name, c.info.Name)
	if err != nil {
		c.log.Error("listing accounts", "error", err)
	}
	for _, a := range accts {
		c.userFor(ctx, a)
	}
	if _, ok := c.t.(GroupChats); ok {
		archiveDone := make(chan struct{})
		defer func() { <-archiveDone }()
		c.g.goSafe("room-archive", func() {
			defer close(archiveDone)
			c.archive.run(ctx, c)
		})
	}
	if c.info.Relay {
		relayDone := make(chan struct{})
		defer func() { <-relayDone }()
		c.g.goSafe("relay", func() {
			defer close(relayDone)
			c.relay.run(ctx, c)
		})
	}
	c.link.run(ctx)
	for _, u := range c.liveUsers() {
		u.stop()
	}
}

// users returns a snapshot of the live users.
func (c *component) liveUsers() []*user {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*user, 0, len(c.users))
	for _, byLabel := range c.users {
		for _, u := range byLabel {
			out = append(out, u)
		}
	}
	return out
}

// shutdown tells every user why the gateway goes away, then stops the
// component and waits for it.
func (c *component) shutdown(reason string) {
	if reason != "" && c.link.up.Load() {
		for _, u := range c.liveUsers() {
			p := c.stanza("presence", "", "", u.bare, "unavailable")
			p.AddText("", "status", reason)
			_ = c.send(p)
		}
	}
	if c.cancel != nil {
		c.cancel()
		<-c.done
	}
	c.g.metrics.componentUp.DeleteLabelValues(c.dom().Name, c.info.Name)
	c.log.Info("component stopped", "reason", reason)
}

func (c *component) linkState(up bool, err error) {
	c.g.metrics.componentUp.WithLabelValues(c.dom().Name, c.info.Name).Set(b2f(up))
	if !up {
		return
	}
	c.log.Info("component connected", "jid", c.jid.String())
	c.g.outbox.wake()
	// Tell every registered user where we stand, and probe them so the
	// server tells us who is online.
	c.mu.Lock()
	users := make([]*user, 0, len(c.users))
	for bare := range c.users {
		// One per user: probes and the gateway's presence are per JID.
		for _, u := range c.users[bare] {
			users = append(users, u)
			break
		}
	}
	c.mu.Unlock()
	c.g.goSafe("announce", func() {
		for _, u := range users {
			u.post(evLinkUp{})
		}
	})
}

// send is the single way out for stanzas; see link.send.
func (c *component) send(el outgoing) error {
	err := c.link.send(el)
	if err == nil {
		name, _, _ := el.stanzaHeader()
		c.countStanza(true, name)
	}
	return err
}

// stanza starts an outgoing stanza from the gateway (local == "") or from a
// contact at the gateway.
func (c *component) stanza(kind, fromLocal, fromResource, to, typ string) *Element {
	from := c.jid.Domainpart()
	if fromLocal != "" {
		from = fromLocal + "@" + from
	}
	if fromResource != "" {
		from += "/" + fromResource
	}
	el := NewElement("", kind, "from", from, "to", to)
	if typ != "" {
		el.SetAttr("type", typ)
	}
	return el
}

// dispatch handles one stanza from the server. It never returns an error and
// never blocks on the network: slow work is handed to goroutines.
func (c *component) dispatch(el *Element) {
	c.countStanza(false, el.Name.Local)
	defer func() {
		if r := recover(); r != nil {
			c.g.metrics.panics.Inc()
			c.log.Error("panic in stanza handler", "panic", r, "stack", stack())
			if el.Name.Local == "iq" {
				c.replyError(el, NewError(stanza.InternalServerError, "internal error"))
			}
		}
	}()
	if lim := el.Get("transportd-limit"); lim != "" {
		c.replyError(el, NewError(stanza.PolicyViolation, "stanza too large or too deeply nested"))
		return
	}
	if el.Name.Local != "iq" && el.Get("type") == "error" {
		// Errors are never answered; a bounce of what we sent.
		c.log.Debug(el.Name.Local+" error received", "from", c.redact(el.Get("from")))
		return
	}
	if c.handlePrivilege(el) {
		return
	}
	switch el.Name.Local {
	case "iq":
		c.handleIQ(el)
	case "message":
		c.handleMessage(el)
	case "presence":
		c.handlePresence(el)
	default:
		c.log.Warn("ignoring unknown top-level element", "name", el.Name.Local)
	}
}

// addresses parses and checks the from and to of a stanza: from must be a
// JID of a user domain this component serves. It returns false (having
// answered with an error) when the stanza must not be processed.
func (c *component) addresses(el *Element) (from, to jid.JID, ok bool) {
	from, err := c.parseJID(el.Get("from"))
	if err != nil || el.Get("from") == "" {
		c.log.Warn("stanza with a bad from", "from", el.Get("from"))
		c.replyError(el, NewError(stanza.JIDMalformed, "invalid from address"))
		return from, to, false
	}
	if !c.dom().UserJIDAllowed(from) {
		c.log.Info("stanza from a user domain not served here", "from", c.redact(from.Bare().String()))
		c.replyError(el, NewError(stanza.Forbidden, "this gateway does not serve users of "+from.Domainpart()))
		return from, to, false
	}
	to, err = c.parseJID(el.Get("to"))
	if err != nil {
		c.replyError(el, NewError(stanza.JIDMalformed, "invalid to address"))
		return from, to, false
	}
	return from, to, true
}

// jidMemory is how many addresses parseJID remembers before it forgets
// them all.
const jidMemory = 1024

// parseJID is jid.Parse remembering the addresses it parsed: enforcing
// PRECIS and IDNA on every stanza's from and to was ~5 % of the CPU of
// relaying a message, and a component sees the same addresses over and
// over.
func (c *component) parseJID(s string) (jid.JID, error) {
	c.jidMu.Lock()
	j, ok := c.jids[s]
	c.jidMu.Unlock()
	if ok {
		return j, nil
	}
	j, err := jid.Parse(s)
	if err != nil {
		return j, err
	}
	c.jidMu.Lock()
	if c.jids == nil || len(c.jids) >= jidMemory {
		c.jids = make(map[string]jid.JID)
	}
	c.jids[s] = j
	c.jidMu.Unlock()
	return j, nil
}

// forgetJIDs drops parseJID's memory (the process went quiet: see
// memtrim.OnTrim).
func (c *component) forgetJIDs() {
	c.jidMu.Lock()
	c.jids = nil
	c.jidMu.Unlock()
}

// replyError answers a stanza with an error, unless it is itself an error or
// a result (which are never answered).
func (c *component) replyError(el *Element, err error) {
	typ := el.Get("type")
	if typ == "error" || (el.Name.Local == "iq" && typ == "result") {
		return
	}
	if el.Get("from") == "" {
		return
	}
	se := toStanzaError(err)
	reply := NewElement("", el.Name.Local, "type", "error", "id", el.Get("id"))
	reply.SetAttr("to", el.Get("from"))
	reply.SetAttr("from", el.Get("to"))
	if to, perr := jid.Parse(el.Get("to")); perr != nil || to.Domainpart() != c.jid.Domainpart() {
		reply.SetAttr("from", c.jid.String())
	}
	if el.Name.Local == "message" {
		// Echo the body so clients can show which message failed.
		if b := el.Child("", "body"); b != nil {
			reply.Add(&Element{Name: b.Name, Text: b.Text})
		}
	}
	reply.Add(se.element())
	if serr := c.send(reply); serr != nil {
		c.log.Debug("error reply not sent", "error", serr)
	}
	c.g.metrics.errors.WithLabelValues(string(se.Condition)).Inc()
	c.stats.errors.add()
}

// redact returns a JID as it may appear in logs.
func (c *component) redact(j string) string {
	if !c.g.config().Log.RedactJIDs {
		return j
	}
	h := sha256.Sum256([]byte(j))
	return "jid:" + hex.EncodeToString(h[:6])
}

// account looks a registered account up; nil if there is none.
func (c *component) account(ctx context.Context, bare string) (*store.Account, error) {
	a, err := c.g.store.GetAccount(ctx, c.dom().Name, c.info.Name, bare)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	return a, err
}

func stack() string { return string(debug.Stack()) }

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
