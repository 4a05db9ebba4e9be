package core

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/disco"

	"transportd/core/store"
)

// Contacts in the user's roster, the user's own messages sent elsewhere,
// and what the XMPP server grants the component (XEP-0356).
//
// Every legacy address a user exchanges messages with is recorded. New ones
// are added to the user's roster, in a group named after the transport, by
// the best means the server offers: a roster push when it grants the roster
// privilege, else roster item exchange (XEP-0144) to clients that support
// it, else a presence subscription request from the contact.

const (
	nsPrivilege = "urn:xmpp:privilege:2"
	nsForward   = "urn:xmpp:forward:0"
	nsRoster    = "jabber:iq:roster"
	nsRosterX   = "http://jabber.org/protocol/rosterx"
	nsVCard     = "vcard-temp"
	nsClient    = "jabber:client"
	// carbonPrefix marks the id of a message the gateway injected as the
	// user's own (a sent carbon): the server routes it back to us, and we
	// drop it instead of sending it to the network again.
	carbonPrefix = "tdcarbon-"
	// settingRoster is the core setting that turns roster additions off.
	settingRoster = "core_roster"
)

// privileges are what one server host granted the component.
type privileges struct {
	Roster  string // none, get, set, both
	Message string // none, outgoing
}

func (p privileges) rosterSet() bool { return p.Roster == "set" || p.Roster == "both" }
func (p privileges) messages() bool  { return p.Message == "outgoing" }

// VCard is what a transport knows of a contact, for vcard-temp (XEP-0054).
type VCard struct {
	FullName, Nick, Email, Tel, URL, Note string
}

// VCarder is implemented by transports that know more of a contact than its
// address and display name.
type VCarder interface {
	VCard(address string) VCard
}

// ContactSink is implemented by the Sink: transports report contacts they
// learn of outside messages (e-mail correspondents in the Sent folder).
type ContactSink interface {
	AddContact(ctx context.Context, address, name string) error
	// Sent reports a message the user sent from elsewhere (another mail
	// client, the phone): it appears in the user's XMPP clients as their
	// own (a sent carbon) when the server grants the message privilege.
	Sent(ctx context.Context, m *Message) error
}

func (s *sink) AddContact(ctx context.Context, address, name string) error {
	a, err := s.u.c.g.store.GetAccountByID(ctx, s.acctID)
	if err != nil {
		return err
	}
	s.u.c.noteContact(ctx, a, address, name)
	return nil
}

func (s *sink) Sent(ctx context.Context, m *Message) error {
	return s.u.c.g.outbox.enqueueToXMPP(ctx, s.u, envelope{Kind: kindSent, Msg: *m})
}

// handlePrivilege records a server host's grant (a message from the host
// carrying <privilege/>). It reports whether el was one.
func (c *component) handlePrivilege(el *Element) bool {
	p := el.Child(nsPrivilege, "privilege")
	if p == nil || el.Name.Local != "message" || strings.ContainsAny(el.Get("from"), "@/") {
		return false
	}
	host := el.Get("from")
	var pr privileges
	for _, perm := range p.Children {
		switch perm.Get("access") {
		case "roster":
			pr.Roster = perm.Get("type")
		case "message":
			pr.Message = perm.Get("type")
		}
	}
	c.privs.Store(host, pr)
	c.log.Info("server privileges", "host", host, "roster", pr.Roster, "message", pr.Message)
	return true
}

func (c *component) privilegesFor(host string) privileges {
	if v, ok := c.privs.Load(host); ok {
		return v.(privileges)
	}
	return privileges{}
}

// sendIQ sends an IQ request and waits for its answer. Never call it from
// the read loop (the answer comes through the read loop).
func (c *component) sendIQ(ctx context.Context, iq *Element) (*Element, error) {
	id := randomID()
	iq.SetAttr("id", id)
	ch := make(chan *Element, 1)
	c.pending.Store(id, ch)
	defer c.pending.Delete(id)
	if err := c.send(iq); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	select {
	case res := <-ch:
		if res.Get("type") == "error" {
			return res, errors.New("error answer: " + res.String())
		}
		return res, nil
	case <-ctx.Done():
		return nil, errors.New("no answer")
	}
}

// noteContact records a contact of an account and, when it is new to the
// user's roster, adds it there (in the background).
// seenRecently says whether noteContact recorded the contact with that
// name (any, if "") in the last ten minutes.
func (c *component) seenRecently(acctID int64, address, name string) bool {
	v, ok := c.seenContacts.Load(strconv.FormatInt(acctID, 10) + "|" + address)
	if !ok {
		return false
	}
	s := v.(seenContact)
	return time.Since(s.at) < 10*time.Minute && (name == "" || name == s.name)
}

func (c *component) noteContact(ctx context.Context, a *store.Account, address, name string) {
	if address == "" {
		return
	}
	// Most messages are with known contacts: skip the store for a contact
	// seen with the same name in the last ten minutes (last_seen only
	// orders the roster and the Status list; minutes do not matter).
	key := strconv.FormatInt(a.ID, 10) + "|" + address
	if c.seenRecently(a.ID, address, name) {
		return
	}
	defer c.seenContacts.Store(key, seenContact{name: name, at: time.Now()})
	old, err := c.g.store.GetContact(ctx, a.ID, address)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		c.log.Warn("reading a contact", "error", err)
		return
	}
	if _, err := c.g.store.PutContact(ctx, a.ID, address, name); err != nil {
		c.log.Warn("recording a contact", "error", err)
		return
	}
	if a.Fields[settingRoster] == "false" {
		return
	}
	// A name learnt after the contact went into the roster updates the
	// roster item (pushContact decides whether the server lets us).
	if old != nil && old.Pushed && (name == "" || name == old.Name) {
		return
	}
	c.g.goSafe("roster", func() { c.pushContact(a, address) })
}

// pushContact adds one contact to the user's roster by the best means the
// server and client offer.
func (c *component) pushContact(a *store.Account, address string) {
	c.rosterMu.Lock() // one roster change at a time: pushes are cheap, races are not
	defer c.rosterMu.Unlock()
	ctx, cancel := c.g.workCtx(20 * time.Second)
	defer cancel()
	ct, err := c.g.store.GetContact(ctx, a.ID, address)
	if err != nil || ct.Removed { // the user took it out: not put back
		return
	}
	key := strconv.FormatInt(a.ID, 10) + "|" + address
	host := a.JID[strings.LastIndexByte(a.JID, '@')+1:]
	if ct.Pushed {
		// Already in the roster: only a roster push can update its name.
		last, had := c.pushedNames.Load(key)
		if !c.privilegesFor(host).rosterSet() || ct.Name == "" || (had && last.(string) == ct.Name) {
			return
		}
	}
	contactJID := c.local(a.Label, ct.Address) + "@" + c.jid.Domainpart()
	item := func() *Element {
		it := NewElement("", "item", "jid", contactJID)
		if ct.Name != "" {
			it.SetAttr("name", ct.Name)
		}
		it.AddText("", "group", c.info.DisplayName)
		return it
	}
	var how string
	switch u := c.accountUser(a); {
	case c.privilegesFor(host).rosterSet():
		iq := c.stanza("iq", "", "", a.JID, "set")
		it := item()
		it.SetAttr("subscription", "both")
		iq.Add(NewElement(nsRoster, "query").Add(it))
		if _, err := c.sendIQ(ctx, iq); err != nil {
			c.log.Warn("roster push refused", "error", err)
			return
		}
		how = "roster push"
	case u != nil && u.anyResourceSupports(nsRosterX):
		m := c.stanza("message", "", "", a.JID, "")
		m.SetAttr("id", randomID())
		it := item()
		it.SetAttr("action", "add")
		m.Add(NewElement(nsRosterX, "x").Add(it))
		if err := c.send(m); err != nil {
			return
		}
		how = "roster item exchange"
	default:
		p := c.stanza("presence", c.local(a.Label, ct.Address), "", a.JID, "subscribe")
		if ct.Name != "" {
			p.AddText(nsNick, "nick", ct.Name)
		}
		if err := c.send(p); err != nil {
			return
		}
		how = "subscription request"
	}
	c.pushedNames.Store(key, ct.Name)
	if err := c.g.store.SetContactPushed(ctx, a.ID, ct.Address, true); err != nil {
		c.log.Warn("recording a roster push", "error", err)
	}
	c.log.Debug("contact added to the roster", "user", c.redact(a.JID), "how", how)
}

// seenContact is the last time a contact was recorded.
type seenContact struct {
	name string
	at   time.Time
}

// clientFeatures remembers which of the features core asks about
// (clientFeatureNames) each of the user's resources supports. Only those:
// a client such as Conversations lists some fifty, and a map of them per
// resource took kilobytes per user.
type clientFeatures struct {
	mu  sync.Mutex
	res []resourceFeatures
}

type resourceFeatures struct {
	resource string
	bits     uint32 // bit i: clientFeatureNames[i]
}

// clientFeatureNames are the client features core looks at.
var clientFeatureNames = [...]string{nsRosterX}

func clientFeatureBit(feature string) uint32 {
	for i, f := range clientFeatureNames {
		if f == feature {
			return 1 << i
		}
	}
	return 0
}

// discoResource asks a user's new resource what it supports.
func (u *user) discoResource(resource string) {
	u.c.g.goWork("disco-client", 15*time.Second, func(ctx context.Context) {
		iq := u.c.stanza("iq", "", "", u.bare+"/"+resource, "get")
		iq.Add(NewElement(disco.NSInfo, "query"))
		res, err := u.c.sendIQ(ctx, iq)
		if err != nil {
			return
		}
		var bits uint32
		for _, f := range res.Child(disco.NSInfo, "query").Children {
			if f.Name.Local == "feature" {
				bits |= clientFeatureBit(f.Get("var"))
			}
		}
		u.features.mu.Lock()
		defer u.features.mu.Unlock()
		for i := range u.features.res {
			if u.features.res[i].resource == resource {
				u.features.res[i].bits = bits
				return
			}
		}
		if bits != 0 {
			u.features.res = append(u.features.res, resourceFeatures{resource: strings.Clone(resource), bits: bits})
		}
	})
}

func (u *user) forgetResource(resource string) {
	u.features.mu.Lock()
	u.features.res = slices.DeleteFunc(u.features.res, func(r resourceFeatures) bool { return r.resource == resource })
	u.features.mu.Unlock()
}

func (u *user) anyResourceSupports(feature string) bool {
	bit := clientFeatureBit(feature)
	u.features.mu.Lock()
	defer u.features.mu.Unlock()
	for _, r := range u.features.res {
		if r.bits&bit != 0 {
			return true
		}
	}
	return false
}

// renderSent wraps the user's own message for the server to deliver as a
// sent carbon (XEP-0356 message privilege). Without the privilege there is
// nothing to send.
func (c *component) renderSent(a *store.Account, m Message) []outgoing {
	host := a.JID[strings.LastIndexByte(a.JID, '@')+1:]
	if !c.privilegesFor(host).messages() {
		c.log.Debug("own message not shown: the server grants no message privilege", "user", c.redact(a.JID))
		return nil
	}
	inner := NewElement(nsClient, "message", "from", a.JID, "to", c.local(a.Label, m.Contact)+"@"+c.jid.Domainpart(), "type", "chat", "id", carbonPrefix+randomID())
	if m.Subject != "" {
		inner.AddText("", "subject", m.Subject)
	}
	inner.AddText("", "body", m.Body)
	if m.Thread != "" {
		inner.AddText("", "thread", m.Thread)
	}
	if !m.Time.IsZero() {
		inner.Add(NewElement(nsDelay, "delay", "from", c.jid.String(), "stamp", m.Time.UTC().Format(time.RFC3339)))
	}
	wrap := c.stanza("message", "", "", host, "")
	wrap.SetAttr("id", randomID())
	wrap.Add(NewElement(nsPrivilege, "privilege").Add(NewElement(nsForward, "forwarded").Add(inner)))
	return []outgoing{wrap}
}

// vcard answers vcard-temp for a contact JID.
func (c *component) vcard(ctx context.Context, r *iqReply, from, label, address string) {
	var v VCard
	if vc, ok := c.t.(VCarder); ok {
		v = vc.VCard(address)
	}
	if a, err := c.g.store.GetAccountLabel(ctx, c.dom().Name, c.info.Name, from, label); err == nil {
		if ct, err := c.g.store.GetContact(ctx, a.ID, address); err == nil && ct.Name != "" {
			if v.FullName == "" {
				v.FullName = ct.Name
			}
			if v.Nick == "" {
				v.Nick = ct.Name
			}
		}
	}
	if v.FullName == "" {
		v.FullName = address
	}
	q := NewElement(nsVCard, "vCard")
	q.AddText("", "FN", v.FullName)
	if v.Nick != "" {
		q.AddText("", "NICKNAME", v.Nick)
	}
	if v.Email != "" {
		q.Add(NewElement("", "EMAIL").Add(NewElement("", "INTERNET")).AddText("", "USERID", v.Email))
	}
	if v.Tel != "" {
		q.Add(NewElement("", "TEL").Add(NewElement("", "VOICE")).AddText("", "NUMBER", v.Tel))
	}
	if v.URL != "" {
		q.AddText("", "URL", v.URL)
	}
	if v.Note != "" {
		q.AddText("", "DESC", v.Note)
	}
	r.result(q)
}

// diagnoseCommand explains in plain words what works for the user and how
// an operator can fix what does not.
func diagnoseCommand(c *component) Command {
	return Command{
		Node: "diagnose", Name: "Diagnose", Registered: true,
		Execute: func(ctx context.Context, req *CommandRequest) *CommandResponse {
			host := req.From.Domainpart()
			var lines []string
			p := c.privilegesFor(host)
			if p.rosterSet() {
				lines = append(lines, "✓ Contacts: your server lets the gateway add contacts to your roster directly.")
			} else {
				lines = append(lines, "✗ Contacts: your server does not grant the gateway the roster privilege (XEP-0356), so new contacts arrive as subscription requests to accept. Operator: enable mod_privilege (Prosody, Debian prosody-modules) or mod_privilege (ejabberd) with roster = \"both\" for "+c.jid.String()+".")
			}
			if p.messages() {
				lines = append(lines, "✓ Your own messages: messages you send from elsewhere appear in your XMPP clients.")
			} else {
				lines = append(lines, "✗ Your own messages: your server does not grant the message privilege, so messages you send from other clients of the network do not appear here. Operator: grant message = \"outgoing\" to "+c.jid.String()+" in mod_privilege.")
			}
			if svc, err := c.findUpload(ctx, host); err == nil {
				lines = append(lines, "✓ File upload: your server offers HTTP upload at "+svc.JID+".")
			} else {
				lines = append(lines, "✗ File upload: no HTTP upload service (XEP-0363) found on "+host+"; attachments are served by the gateway itself when it has a public URL. Operator: enable mod_http_file_share (Prosody) or mod_http_upload (ejabberd).")
			}
			for _, a := range req.Accounts {
				st := StateDisconnected
				text := ""
				if u := c.accountUser(a); u != nil {
					s := u.stateNow.Load()
					st, text = s.State, s.Text
				}
				name := "Network"
				if len(req.Accounts) > 1 {
					name = "Network (" + accountName(a) + ")"
				}
				switch st {
				case StateConnected:
					lines = append(lines, "✓ "+name+": connected.")
				case StateBadCredentials:
					lines = append(lines, "✗ "+name+": the login was refused ("+text+"). Register again with the right credentials.")
				case StateTransientFail:
					lines = append(lines, "✗ "+name+": failing ("+text+"); the gateway keeps retrying.")
				case StateDisconnected:
					lines = append(lines, "• "+name+": not connected now (it connects while you are online, or when you join a room).")
				default:
					lines = append(lines, "• "+name+": "+st.String()+".")
				}
			}
			return &CommandResponse{Note: strings.Join(lines, "\n")}
		},
	}
}
