package core

import (
	"context"
	"errors"
	"time"

	"transportd/core/store"
)

// Contacts' presence (XEP-0100 §4.4: a gateway shows its legacy contacts'
// presence). A network that tells when someone is online (IRC's MONITOR)
// watches the contacts the user subscribed to, those in the user's
// roster; core shows them online or offline from the contact's JID, and
// answers the server's probes with what it last heard.

// ContactWatcher is implemented by Sessions whose network tells when a
// contact comes online and goes offline. WatchContacts gets the whole set
// of contacts to watch, when the session starts and whenever it changes;
// it only queues the work. The session reports through the Sink's
// ContactPresence (ContactPresenceSink).
type ContactWatcher interface {
	WatchContacts(addrs []string)
}

// ContactStatus is a contact's presence as the network tells it.
type ContactStatus struct {
	Online bool
	Away   bool
	Status string // the away message, or what the network says
}

// ContactPresenceSink is implemented by the Sink core gives a session.
type ContactPresenceSink interface {
	ContactPresence(address string, st ContactStatus)
}

type (
	evContactPresence struct {
		gen  int
		addr string
		st   ContactStatus
	}
	evContactProbe struct{ addr string }
	// evWatchChanged: the user subscribed to a contact or unsubscribed.
	evWatchChanged struct{}
)

func (s *sink) ContactPresence(address string, st ContactStatus) {
	s.u.post(evContactPresence{gen: s.gen, addr: address, st: st})
}

// watchWait bounds the read of the contacts to watch.
const watchWait = 5 * time.Second

// watchContacts hands the live session the contacts the user subscribed
// to, if it watches contacts.
func (u *user) watchContacts() {
	l := u.live.Load()
	if l == nil {
		return
	}
	w, ok := l.s.(ContactWatcher)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), watchWait)
	defer cancel()
	cs, err := u.c.g.store.ListContacts(ctx, u.id, 0)
	if err != nil {
		u.logger().Warn("reading the contacts to watch", "error", err)
		return
	}
	addrs := []string{}
	for _, ct := range cs {
		if ct.Pushed && !ct.Removed {
			addrs = append(addrs, ct.Address)
		}
	}
	w.WatchContacts(addrs)
}

// handleContact handles the events of contacts' presence (loop).
func (u *user) handleContact(ev userEvent) bool {
	switch ev := ev.(type) {
	case evContactPresence:
		if ev.gen != u.gen {
			return true
		}
		if ev.st.Online {
			if u.online == nil {
				u.online = map[string]ContactStatus{}
			}
			u.online[ev.addr] = ev.st
		} else {
			delete(u.online, ev.addr)
			if len(u.online) == 0 {
				u.online = nil
			}
		}
		_ = u.c.send(u.contactPresence(ev.addr, ev.st))
	case evContactProbe:
		_ = u.c.send(u.contactPresence(ev.addr, u.online[ev.addr]))
	case evWatchChanged:
		u.watchContacts()
	default:
		return false
	}
	return true
}

// contactPresence is a contact's presence for the user's bare JID.
func (u *user) contactPresence(addr string, st ContactStatus) *Element {
	typ := "unavailable"
	if st.Online {
		typ = ""
	}
	p := u.c.stanza("presence", u.c.local(u.label, addr), "", u.bare, typ)
	if st.Away {
		p.AddText("", "show", "away")
	}
	if st.Status != "" {
		p.AddText("", "status", st.Status)
	}
	return p
}

// contactsOffline shows the contacts last seen online as offline: the
// session that watched them ended.
func (u *user) contactsOffline() {
	for addr := range u.online {
		_ = u.c.send(u.contactPresence(addr, ContactStatus{}))
	}
	u.online = nil
}

// subscribed records that the user subscribed to a contact (it is in
// their roster, as if the gateway had put it there, and no longer
// removed), so that it is watched, off the stanza reader.
func (c *component) subscribed(u *user, addr string) {
	c.g.goWork("subscription", watchWait, func(ctx context.Context) {
		if _, err := c.g.store.PutContact(ctx, u.id, addr, ""); err != nil {
			c.log.Warn("recording a contact", "error", err)
			return
		}
		if err := c.g.store.SetContactPushed(ctx, u.id, addr, true); err != nil {
			c.log.Warn("recording a subscription", "error", err)
			return
		}
		if err := c.g.store.SetContactRemoved(ctx, u.id, addr, false); err != nil {
			c.log.Warn("recording a subscription", "error", err)
			return
		}
		u.post(evWatchChanged{})
	})
}

// unsubscribed records that the user unsubscribed from a contact's
// presence (removed it from the roster): it is no longer watched, which
// frees its place on the network's list (IRC's MONITOR has a limit) and
// shows it offline (RFC 6121 3.3.3: the contact's unavailable presence
// follows an unsubscribe), and the gateway does not put it back in the
// roster when it writes again. A contact the gateway never recorded has
// nothing to undo.
func (c *component) unsubscribed(u *user, addr string) {
	c.g.goWork("unsubscription", watchWait, func(ctx context.Context) {
		err := c.g.store.SetContactRemoved(ctx, u.id, addr, true)
		if errors.Is(err, store.ErrNotFound) {
			return
		}
		if err != nil {
			c.log.Warn("recording an unsubscription", "error", err)
			return
		}
		u.post(evWatchChanged{})
	})
}
