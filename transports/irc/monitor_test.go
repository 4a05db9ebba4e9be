package irc

import (
	"testing"
	"time"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// TestContactPresence: an IRC user the XMPP user subscribed to shows
// online while connected to the server and offline once gone (MONITOR on
// InspIRCd), as the contacts of a XEP-0100 gateway do.
func TestContactPresence(t *testing.T) {
	e := testIRCEnv(t)
	t.Run("InspIRCd", func(t *testing.T) { contactPresence(t, e, e.irc, "user5@b.test", true) })
	// ngIRCd has no MONITOR: the gateway asks with ISON (here every 200
	// ms instead of a minute), and away is not told.
	if e.ngircd == "" {
		xmpptest.Missing(t, "ngIRCd not running")
	}
	oldTick, oldISON := tickEvery, isonEvery
	tickEvery, isonEvery = 100*time.Millisecond, 200*time.Millisecond
	defer func() { tickEvery, isonEvery = oldTick, oldISON }()
	t.Run("ngIRCd", func(t *testing.T) { contactPresence(t, e, e.ngircd, "user6@b.test", false) })
}

func contactPresence(t *testing.T, e ircEnv, server, user string, away bool) {
	startGW(t, e.xmpp, port(server), nil)
	const (
		room  = "#it-monitor%127.0.0.1@" + gwJID
		buddy = "buddy%127.0.0.1@" + gwJID
	)
	c := onlineUser(t, e, user)
	if self := joinRoom(t, c, room, "watcher"); self.Get("type") == "error" { // connects to the server
		t.Fatalf("join: %s", self)
	}
	// (The gateway's "subscribed" goes to resources that asked for the
	// roster, which this client does not.)
	c.Send(core.NewElement("", "presence", "to", buddy, "type", "subscribe"))

	r := dialRaw(t, server, "buddy")
	if p := c.Expect(xwait, "buddy online", xmpptest.IsFrom("presence", buddy, "")); p.Get("type") != "" {
		t.Fatalf("buddy's presence: %s", p)
	}
	if away {
		// Away and back (extended-monitor: no channel in common).
		r.send("AWAY", "gone fishing")
		if p := c.Expect(xwait, "buddy away", xmpptest.IsFrom("presence", buddy, "")); p.ChildText("", "show") != "away" || p.ChildText("", "status") != "gone fishing" {
			t.Errorf("buddy away: %s", p)
		}
		r.send("AWAY")
		if p := c.Expect(xwait, "buddy back", xmpptest.IsFrom("presence", buddy, "")); p.Child("", "show") != nil {
			t.Errorf("buddy back: %s", p)
		}
	}
	r.send("QUIT", "bye")
	c.Expect(xwait, "buddy offline", xmpptest.IsFrom("presence", buddy, "unavailable"))

	// Back: online again.
	dialRaw(t, server, "buddy")
	c.Expect(xwait, "buddy online again", xmpptest.IsFrom("presence", buddy, ""))
}
