package core

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"transportd/core/config"
	"transportd/core/store"
)

// component is one transport serving one XMPP domain: its link to the
// server, its registered users and the handlers for what the server routes
// to it.
type component struct {
	g      *Gateway
	domain *config.Domain
	tc     config.Transport
	t      Transport
	info   Info
	jid    jid.JID
	log    *slog.Logger
	link   *link
	cmds   *commandRegistry

	// pending maps the id of an IQ we sent to the channel awaiting its answer.
	pending sync.Map

	mu    sync.Mutex
	users map[string]*user // by bare JID
}

func newComponent(g *Gateway, d *config.Domain, tc config.Transport, t Transport, j jid.JID) *component {
	c := &component{
		g:      g,
		domain: d,
		tc:     tc,
		t:      t,
		info:   t.Info(),
		jid:    j,
		log:    g.log.With("domain", d.Name, "transport", tc.Name),
		users:  map[string]*user{},
	}
	c.link = &link{
		addr:     g.cfg.XMPP.ComponentAddr,
		jid:      j,
		secret:   []byte(tc.Secret),
		min:      g.cfg.XMPP.ReconnectMin,
		max:      g.cfg.XMPP.ReconnectMax,
		limits:   Limits{MaxDepth: g.cfg.XMPP.MaxStanzaDepth, MaxBytes: g.cfg.XMPP.MaxStanzaBytes},
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

// run starts the sessions that do not wait for the user and keeps the link up.
func (c *component) run(ctx context.Context) {
	accts, err := c.g.store.ListAccounts(ctx, c.domain.Name, c.info.Name)
	if err != nil {
		c.log.Error("listing accounts", "error", err)
	}
	for _, a := range accts {
		if a.Enabled {
			c.userFor(ctx, a)
		}
	}
	c.link.run(ctx)
	c.mu.Lock()
	users := make([]*user, 0, len(c.users))
	for _, u := range c.users {
		users = append(users, u)
	}
	c.mu.Unlock()
	for _, u := range users {
		u.stop()
	}
}

func (c *component) linkState(up bool, err error) {
	c.g.metrics.componentUp.WithLabelValues(c.domain.Name, c.info.Name).Set(b2f(up))
	if !up {
		return
	}
	c.log.Info("component connected", "jid", c.jid.String())
	c.g.outbox.wake()
	// Tell every registered user where we stand, and probe them so the
	// server tells us who is online.
	c.mu.Lock()
	users := make([]*user, 0, len(c.users))
	for _, u := range c.users {
		users = append(users, u)
	}
	c.mu.Unlock()
	c.g.goSafe("announce", func() {
		for _, u := range users {
			u.post(evLinkUp{})
		}
	})
}

// send is the single way out for stanzas; see link.send.
func (c *component) send(el *Element) error {
	err := c.link.send(context.Background(), el)
	if err == nil {
		c.g.metrics.stanzas.WithLabelValues("out", el.Name.Local).Inc()
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
	c.g.metrics.stanzas.WithLabelValues("in", el.Name.Local).Inc()
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
	from, err := jid.Parse(el.Get("from"))
	if err != nil || el.Get("from") == "" {
		c.log.Warn("stanza with a bad from", "from", el.Get("from"))
		c.replyError(el, NewError(stanza.JIDMalformed, "invalid from address"))
		return from, to, false
	}
	if !c.domain.UserAllowed(from.Bare().String()) {
		c.log.Info("stanza from a user domain not served here", "from", c.redact(from.Bare().String()))
		c.replyError(el, NewError(stanza.Forbidden, "this gateway does not serve users of "+from.Domainpart()))
		return from, to, false
	}
	to, err = jid.Parse(el.Get("to"))
	if err != nil {
		c.replyError(el, NewError(stanza.JIDMalformed, "invalid to address"))
		return from, to, false
	}
	return from, to, true
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
}

// redact returns a JID as it may appear in logs.
func (c *component) redact(j string) string {
	if !c.g.cfg.Log.RedactJIDs {
		return j
	}
	h := sha256.Sum256([]byte(j))
	return "jid:" + hex.EncodeToString(h[:6])
}

// account looks a registered account up; nil if there is none.
func (c *component) account(ctx context.Context, bare string) (*store.Account, error) {
	a, err := c.g.store.GetAccount(ctx, c.domain.Name, c.info.Name, bare)
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

// timeout contexts for work handed off from the read loop.
func workCtx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), d)
}
