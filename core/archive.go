package core

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"transportd/core/store"
	"transportd/registration"
)

// Rooms' message archive (XEP-0313 on a room, as Prosody's and ejabberd's
// rooms and biboumi's channels offer it). A user's own server archives
// the chats it receives, but not group chat messages: those are the
// room's to keep. Each user's connection to the network sees the room on
// its own, so the archive is per account and room: every message the
// network delivered in the room while the account's session ran,
// whether or not a client was in the room then, kept for the transport's
// room_archive_days. The live message carries the archive's id as its
// stanza-id (XEP-0359, by the room), so a client that comes back asks for
// what came after the last one it saw.

const (
	nsMAM = "urn:xmpp:mam:2"

	// archiveFlushEvery and archiveBatch: archived messages are written
	// once archiveBatch wait or archiveFlushEvery after the first of them,
	// in one commit (a commit per message would cost what relaying it
	// does). A query writes what waits first, so it sees every message
	// delivered before it. A crash loses what was not written yet.
	archiveFlushEvery = 200 * time.Millisecond
	archiveBatch      = 256
	// archiveBacklog bounds what waits while the store fails.
	archiveBacklog = 10000
	// archivePruneEvery: how often messages past their days are deleted.
	archivePruneEvery = time.Hour

	// mamDefaultPage and mamMaxPage: a query's page when it asks for no
	// size, and at most.
	mamDefaultPage = 50
	mamMaxPage     = 250
)

// roomArchive is a component's archive writer.
type roomArchive struct {
	mu      sync.Mutex
	pending []store.ArchivedMessage
	kick    chan struct{}
	// flushMu makes a query wait for a write in progress.
	flushMu sync.Mutex
}

func (a *roomArchive) wake() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// settingArchive is the core setting with which a user turns the rooms'
// archive off: their messages are then not kept, and what was is deleted.
const settingArchive = "core_room_archive"

// archiveDays is how long the component keeps room messages; 0 for none.
func (c *component) archiveDays() int { return c.tcfg().RoomArchiveDays }

// archived says whether u's rooms are archived: the component keeps an
// archive and the user did not turn it off.
func (u *user) archived() bool { return u.c.archiveDays() > 0 && !u.noArchive.Load() }

// stampRoomMessage gives a room message the network delivered the id it
// has in the archive, which it carries as its stanza-id: the network's
// id, or one made here. It is archived when it is written to the user's
// resources, or dropped because none is in the room (archiveRoomMessage):
// a message that waits for the user to join (the outbox, while the XMPP
// link was down) is not yet in the archive when the join's history is
// read from it, so the user does not see it twice. Messages of the room
// itself (no speaker) are not archived, nor given an id twice (an echo
// that falls back to Deliver).
func (u *user) stampRoomMessage(m *Message) {
	if !m.Groupchat || m.Nick == "" || m.Body == "" || m.StanzaID != "" || !u.archived() {
		return
	}
	m.StanzaID = m.LegacyID
	if m.StanzaID == "" {
		m.StanzaID = randomID()
	}
}

// archiveRoomMessage takes a room message stamped with its archive id
// into the archive. Written again (a retry), it is archived once.
func (c *component) archiveRoomMessage(u *user, m *Message) {
	if m.StanzaID == "" || !m.Groupchat {
		return
	}
	t := m.Time
	if t.IsZero() {
		t = time.Now()
	}
	a := &c.archive
	a.mu.Lock()
	if len(a.pending) >= archiveBacklog {
		a.mu.Unlock()
		c.g.metrics.archiveDropped.Inc()
		return
	}
	a.pending = append(a.pending, store.ArchivedMessage{AccountID: u.acctID(), Room: m.Contact, ID: m.StanzaID,
		Time: t, Nick: m.Nick, Body: m.Body, XMPPID: m.XMPPID})
	n := len(a.pending)
	a.mu.Unlock()
	if n == 1 || n >= archiveBatch {
		a.wake()
	}
}

// flush writes what waits. On a failure it is kept for the next flush.
func (a *roomArchive) flush(ctx context.Context, c *component) error {
	a.flushMu.Lock()
	defer a.flushMu.Unlock()
	a.mu.Lock()
	batch := a.pending
	a.pending = nil
	a.mu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	err := c.g.store.ArchiveRoomMessages(ctx, batch)
	if err != nil {
		a.mu.Lock()
		if len(a.pending)+len(batch) <= archiveBacklog {
			a.pending = append(batch, a.pending...)
		} else {
			c.g.metrics.archiveDropped.Add(float64(len(batch)))
		}
		a.mu.Unlock()
	}
	return err
}

// run writes the archive until ctx is done, and deletes what is older
// than the component's days every archivePruneEvery.
func (a *roomArchive) run(ctx context.Context, c *component) {
	defer a.flush(context.WithoutCancel(ctx), c)
	prune := time.NewTicker(archivePruneEvery)
	defer prune.Stop()
	c.pruneArchive(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-prune.C:
			c.pruneArchive(ctx)
			continue
		case <-a.kick:
		}
		// Wait for more unless a batch is full: one commit for a burst.
		a.mu.Lock()
		n := len(a.pending)
		a.mu.Unlock()
		if n < archiveBatch {
			select {
			case <-ctx.Done():
				return
			case <-time.After(archiveFlushEvery):
			}
		}
		if err := a.flush(ctx, c); err != nil && ctx.Err() == nil {
			c.log.Warn("archiving room messages", "error", err)
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			a.wake()
		}
	}
}

// pruneArchive deletes the component's archived messages older than its
// days (all of them when it keeps none).
func (c *component) pruneArchive(ctx context.Context) {
	before := time.Now().AddDate(0, 0, -c.archiveDays())
	n, err := c.g.store.PruneRoomArchive(ctx, c.dom().Name, c.info.Name, before)
	switch {
	case err != nil && ctx.Err() == nil:
		c.log.Warn("pruning the rooms' archive", "error", err)
	case n > 0:
		c.log.Debug("pruned the rooms' archive", "messages", n)
	}
}

// mamFormFields are the query's fields (XEP-0313 §5.1), offered by a get.
var mamFormFields = []struct{ name, typ string }{
	{"with", "jid-single"}, {"start", "text-single"}, {"end", "text-single"},
	{"before-id", "text-single"}, {"after-id", "text-single"}, {"ids", "list-multi"},
}

// nsMAMExtended: the room takes before-id, after-id, ids and flip-page
// (XEP-0313 §7.1).
const nsMAMExtended = nsMAM + "#extended"

// roomMAM answers a XEP-0313 query to a room: a get for the form, a set
// for a page of the user's archive of the room, each message sent to the
// asking resource before the IQ's result.
func (c *component) roomMAM(r *iqReply, typ string, from, to jid.JID, addr string, q *Element) {
	if c.archiveDays() == 0 {
		r.error(NewError(stanza.ServiceUnavailable, "this gateway keeps no archive of its rooms"))
		return
	}
	if typ == "get" && q.Name.Local == "metadata" {
		c.roomMAMMetadata(r, from, to, addr)
		return
	}
	if typ == "get" {
		x := NewElement(nsData, "x", "type", "form")
		x.Add(NewElement("", "field", "var", "FORM_TYPE", "type", "hidden").AddText("", "value", nsMAM))
		for _, f := range mamFormFields {
			x.Add(NewElement("", "field", "var", f.name, "type", f.typ))
		}
		r.result(NewElement(nsMAM, "query").Add(x))
		return
	}
	u := c.archiveUser(r, from, to)
	if u == nil {
		return
	}
	aq, err := c.parseMAMQuery(to, q)
	if err != nil {
		r.error(err)
		return
	}
	aq.AccountID, aq.Room = u.acctID(), addr
	queryID := q.Get("queryid")
	room := to.Bare().String()
	flip := q.Child(nsMAM, "flip-page") != nil
	c.g.goWork("room-archive", 30*time.Second, func(ctx context.Context) {
		if err := c.archive.flush(ctx, c); err != nil {
			c.log.Warn("archiving room messages", "error", err)
		}
		page, err := c.g.store.QueryRoomArchive(ctx, aq)
		if errors.Is(err, store.ErrNotFound) {
			r.error(NewError(stanza.ItemNotFound, "no message with that id in this room's archive"))
			return
		}
		if err != nil {
			c.log.Error("reading the rooms' archive", "error", err)
			r.error(err)
			return
		}
		for i := range page.Messages {
			m := page.Messages[i]
			if flip { // the page newest first; <first/> and <last/> stay the oldest and newest
				m = page.Messages[len(page.Messages)-1-i]
			}
			if c.send(mamResult(from.String(), room, queryID, m)) != nil {
				return // the link is down: the IQ goes unanswered as well
			}
		}
		fin := NewElement(nsMAM, "fin")
		if page.Complete {
			fin.SetAttr("complete", "true")
		}
		set := NewElement(nsRSM, "set")
		if n := len(page.Messages); n > 0 {
			first := NewElement("", "first")
			first.Text = page.Messages[0].ID
			set.Add(first)
			set.AddText("", "last", page.Messages[n-1].ID)
		}
		set.AddText("", "count", strconv.Itoa(page.Count))
		r.result(fin.Add(set))
	})
}

// archiveUser is the user whose archive a query to the room to reads;
// nil, with the error answered, when there is none.
func (c *component) archiveUser(r *iqReply, from, to jid.JID) *user {
	label, _ := splitLabel(to.Localpart())
	u := c.lookupLabel(from.Bare().String(), label)
	if u == nil {
		r.error(NewError(stanza.RegistrationRequired, "register with "+c.jid.String()+" first: the archive is of what your own connection saw"))
		return nil
	}
	if !u.archived() {
		r.error(NewError(stanza.ServiceUnavailable, "you turned the archive of your rooms off (the gateway's Settings command)"))
		return nil
	}
	return u
}

// roomMAMMetadata answers a query for the archive's metadata (XEP-0313
// §6: the id and time of the room's first and last archived messages;
// none when it has none), with which a client decides how far back to
// page.
func (c *component) roomMAMMetadata(r *iqReply, from, to jid.JID, addr string) {
	u := c.archiveUser(r, from, to)
	if u == nil {
		return
	}
	q := store.ArchiveQuery{AccountID: u.acctID(), Room: addr, Max: 1, NoCount: true}
	c.g.goWork("room-archive", 30*time.Second, func(ctx context.Context) {
		if err := c.archive.flush(ctx, c); err != nil {
			c.log.Warn("archiving room messages", "error", err)
		}
		md := NewElement(nsMAM, "metadata")
		for _, end := range []string{"start", "end"} {
			q.Last = end == "end"
			page, err := c.g.store.QueryRoomArchive(ctx, q)
			if err != nil {
				c.log.Error("reading the rooms' archive", "error", err)
				r.error(err)
				return
			}
			if len(page.Messages) == 0 {
				break // an empty archive: <metadata/>
			}
			m := page.Messages[0]
			md.Add(NewElement("", end, "id", m.ID, "timestamp", m.Time.UTC().Format(time.RFC3339Nano)))
		}
		r.result(md)
	})
}

// parseMAMQuery reads a query's form and paging (XEP-0313 §4, XEP-0059).
func (c *component) parseMAMQuery(room jid.JID, q *Element) (store.ArchiveQuery, error) {
	aq := store.ArchiveQuery{Max: mamDefaultPage}
	if x := q.Child(nsData, "x"); x != nil {
		sub, err := registration.ParseForm(x.ExplicitTokenReader())
		if err != nil {
			return aq, err
		}
		if sub.FormType != "" && sub.FormType != nsMAM {
			return aq, NewError(stanza.BadRequest, "not a form of "+nsMAM+": "+quote(sub.FormType))
		}
		one := func(name string) string {
			if v := sub.Raw[name]; len(v) > 0 {
				return v[0]
			}
			return ""
		}
		for name := range sub.Raw {
			if !mamField(name) {
				return aq, NewError(stanza.BadRequest, "unknown field "+quote(name)+" in an archive query")
			}
		}
		if w := one("with"); w != "" {
			j, err := jid.Parse(w)
			if err != nil || !j.Bare().Equal(room.Bare()) || j.Resourcepart() == "" {
				return aq, NewError(stanza.BadRequest, "with: give an occupant of this room (room@"+c.jid.Domainpart()+"/nick), not "+quote(w))
			}
			aq.Nick = j.Resourcepart()
		}
		for _, f := range []struct {
			name string
			t    *time.Time
		}{{"start", &aq.Start}, {"end", &aq.End}} {
			if v := one(f.name); v != "" {
				t, err := time.Parse(time.RFC3339Nano, v)
				if err != nil {
					return aq, NewError(stanza.BadRequest, f.name+": not a date and time of XEP-0082 (like 2026-12-06T13:00:00Z): "+quote(v))
				}
				*f.t = t
			}
		}
		aq.After, aq.Before = one("after-id"), one("before-id")
		for _, id := range sub.Raw["ids"] {
			if id != "" {
				aq.IDs = append(aq.IDs, id)
			}
		}
		if len(aq.IDs) > mamMaxPage {
			return aq, NewError(stanza.PolicyViolation, fmt.Sprintf("ids: at most %d messages a query, not %d", mamMaxPage, len(aq.IDs)))
		}
	}
	if set := q.Child(nsRSM, "set"); set != nil {
		if el := set.Child("", "max"); el != nil {
			n, err := strconv.Atoi(el.Text)
			if err != nil || n < 0 {
				return aq, NewError(stanza.BadRequest, "max: not a number of messages: "+quote(el.Text))
			}
			aq.Max = n
		}
		if v := set.ChildText("", "after"); v != "" {
			aq.After = v
		}
		if el := set.Child("", "before"); el != nil {
			if el.Text == "" {
				aq.Last = true // the last page
			} else {
				aq.Before = el.Text
			}
		}
	}
	aq.Max = min(aq.Max, mamMaxPage)
	return aq, nil
}

func mamField(name string) bool {
	for _, f := range mamFormFields {
		if f.name == name {
			return true
		}
	}
	return false
}

// mamResult is one archived message for a query (XEP-0313 §4.2).
func mamResult(to, room, queryID string, m store.ArchivedMessage) *Element {
	inner := NewElement(nsClient, "message", "type", "groupchat", "from", room+"/"+m.Nick)
	if m.XMPPID != "" {
		inner.SetAttr("id", m.XMPPID)
	}
	inner.AddText("", "body", m.Body)
	fwd := NewElement(nsForward, "forwarded").
		Add(NewElement(nsDelay, "delay", "stamp", m.Time.UTC().Format(time.RFC3339Nano))).
		Add(inner)
	res := NewElement(nsMAM, "result", "id", m.ID)
	if queryID != "" {
		res.SetAttr("queryid", queryID)
	}
	msg := NewElement("", "message", "from", room, "to", to, "id", randomID())
	return msg.Add(res.Add(fwd))
}

const (
	// joinHistoryDefault: the history a join gets from the archive when
	// its client asks for no limit (Prosody's and biboumi's 20), and at
	// most mamMaxPage.
	joinHistoryDefault = 20
	// joinHistoryWait bounds a join's wait for the archive's writes
	// before its read (the read itself is bounded by SQLite's busy
	// timeout: store.sqlDB).
	joinHistoryWait = 5 * time.Second
)

// sendArchiveHistory sends a resource that joins a room the room's
// latest messages from the user's archive, as a MUC room does (XEP-0045
// §7.2.14), limited to what the join asked for: none when the network
// replays the room's history itself (HistoryReplayer), and only those
// the archive holds (what the user's connection saw while it was in the
// room; messages received while no client was in it come after, from
// the session).
func (u *user) sendArchiveHistory(r *room, resource string, h HistoryRequest) {
	c := u.c
	if h.None || !u.archived() {
		return
	}
	if hr, ok := u.groupSession().(HistoryReplayer); ok && hr.RoomReplaysHistory(r.address) {
		return
	}
	max := h.Max
	if max <= 0 {
		max = joinHistoryDefault
	}
	q := store.ArchiveQuery{AccountID: u.acctID(), Room: r.address, Last: true, Max: min(max, mamMaxPage), NoCount: true}
	if !h.Since.IsZero() {
		q.Start = h.Since.Add(time.Nanosecond) // since is exclusive
	}
	ctx, cancel := context.WithTimeout(context.Background(), joinHistoryWait)
	defer cancel()
	if err := c.archive.flush(ctx, c); err != nil {
		u.logger().Warn("archiving room messages", "error", err)
	}
	page, err := c.g.store.QueryRoomArchive(ctx, q)
	if err != nil {
		u.logger().Warn("room history from the archive", "room", r.address, "error", err)
		return
	}
	room := u.roomJID(r.address, "")
	for _, m := range page.Messages {
		id := m.XMPPID
		if id == "" {
			id = randomID()
		}
		_ = c.send(&roomStanza{from: room + "/" + m.Nick, to: u.bare + "/" + resource, id: id, body: m.Body,
			delayFrom: room, stamp: m.Time.UTC().Format(time.RFC3339Nano), sid: m.ID, sidBy: room})
	}
}
