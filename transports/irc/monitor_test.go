package irc

import (
	"strings"
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
	// ngIRCd has no MONITOR: the gateway asks with USERHOST (here every
	// 200 ms instead of a minute), which says away without the message.
	if e.ngircd == "" {
		xmpptest.Missing(t, "ngIRCd not running")
	}
	// (The gateway's transport takes defaultTiming when it starts.)
	old := defaultTiming
	defaultTiming.tick, defaultTiming.ison = 100*time.Millisecond, 200*time.Millisecond
	defer func() { defaultTiming = old }()
	t.Run("ngIRCd", func(t *testing.T) { contactPresence(t, e, e.ngircd, "user6@b.test", false) })
}

// contactPresence runs the test against one server; monitor says it
// has MONITOR (with extended-monitor: away told with its message, as it
// changes), else it is polled.
func contactPresence(t *testing.T, e ircEnv, server, user string, monitor bool) {
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
	// Away and back (no channel in common: extended-monitor, or the
	// poll's USERHOST, which tells no message).
	r.send("AWAY", "gone fishing")
	if p := c.Expect(xwait, "buddy away", xmpptest.IsFrom("presence", buddy, "")); p.ChildText("", "show") != "away" || (monitor && p.ChildText("", "status") != "gone fishing") {
		t.Errorf("buddy away: %s", p)
	}
	r.send("AWAY")
	if p := c.Expect(xwait, "buddy back", xmpptest.IsFrom("presence", buddy, "")); p.Child("", "show") != nil {
		t.Errorf("buddy back: %s", p)
	}
	r.send("QUIT", "bye")
	c.Expect(xwait, "buddy offline", xmpptest.IsFrom("presence", buddy, "unavailable"))

	// Back: online again.
	r = dialRaw(t, server, "buddy")
	c.Expect(xwait, "buddy online again", xmpptest.IsFrom("presence", buddy, ""))
	watched := func() string {
		t.Helper()
		info := command(t, c, "irc-connections", "", nil).Child(nsCommands, "command").ChildText("", "note")
		_, line, _ := strings.Cut(info, "Contacts watched")
		line, _, _ = strings.Cut(line, "\n")
		return line
	}
	if w := watched(); !strings.HasPrefix(w, ": 1") {
		t.Errorf("IRC connections says contacts watched%q, want 1", w)
	}

	// Removed from the roster (the user's server unsubscribes): no longer
	// watched, shown offline at once (RFC 6121 3.3.3), and the server's
	// list no longer holds it.
	c.Send(core.NewElement("", "presence", "to", buddy, "type", "unsubscribe"))
	c.Expect(xwait, "buddy offline once unsubscribed", xmpptest.IsFrom("presence", buddy, "unavailable"))
	if w := watched(); w != "" {
		t.Errorf("IRC connections after the unsubscription says contacts watched%q", w)
	}
	if monitor {
		// The server no longer tells: an away change of a contact in no
		// channel with the user reaches the gateway only through MONITOR.
		r.send("AWAY", "not watched")
	}
	// Added again: watched again, shown online (the server's answer to
	// the new MONITOR or USERHOST), not away as it would be with MONITOR
	// had the away change come through.
	c.Send(core.NewElement("", "presence", "to", buddy, "type", "subscribe"))
	p := c.Expect(xwait, "buddy online after the new subscription", xmpptest.IsFrom("presence", buddy, ""))
	if p.Get("type") != "" || p.Child("", "show") != nil {
		t.Errorf("first presence of buddy after the new subscription: %s (an away one means it was still watched)", p)
	}
	if monitor {
		// MONITOR tells online only: the gateway asks (USERHOST) and
		// shows the contact away, as it is.
		if p := c.Expect(xwait, "buddy away, as USERHOST tells", xmpptest.IsFrom("presence", buddy, "")); p.ChildText("", "show") != "away" {
			t.Errorf("buddy after the new subscription: %s, want away", p)
		}
	}
}
