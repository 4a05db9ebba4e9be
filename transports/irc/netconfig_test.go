package irc

import (
	"strings"
	"testing"
	"time"

	"github.com/ergochat/irc-go/ircmsg"
)

// TestNetworkFloodControl: a user sets a network's own flood control
// (biboumi's per-server throttle limit) with Configure on the server's
// JID; it applies at once to the live connection: with one line at once
// and one a second, three messages reach the channel a second apart, and
// IRC connections says so. A value out of range is refused naming the
// field.
func TestNetworkFloodControl(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), nil) // the tests' flood control: generous
	w := dialRaw(t, e.irc, "fwatch")
	w.join("#it-flood")
	const (
		room   = "#it-flood%127.0.0.1@" + gwJID
		server = "127.0.0.1@" + gwJID
	)
	c := onlineUser(t, e, "user10@b.test")
	if self := joinRoom(t, c, room, "flooder"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	w.expect("the user's JOIN", cmdFrom("JOIN", "flooder"))

	sid := commandTo(t, c, server, "configure", "", nil).Child(nsCommands, "command").Get("sessionid")
	iq := commandIQ(server, "configure", sid, map[string]string{"tls": "default", "flood_burst": "1", "flood_rate": "0"})
	if res := c.IQ(iq); !strings.Contains(res.String(), "not-acceptable") || !strings.Contains(res.String(), "(flood_rate)") {
		t.Errorf("a flood rate of 0: %s, want not-acceptable naming flood_rate", res)
	}
	sid = commandTo(t, c, server, "configure", "", nil).Child(nsCommands, "command").Get("sessionid")
	commandTo(t, c, server, "configure", sid, map[string]string{"tls": "default", "flood_burst": "1", "flood_rate": "1"})
	info := command(t, c, "irc-connections", "", nil).Child(nsCommands, "command").ChildText("", "note")
	if !strings.Contains(info, "Flood control: 1 lines at once, then 1 a second") {
		t.Errorf("IRC connections after the change:\n%s", info)
	}

	for _, body := range []string{"one", "two", "three"} {
		c.Send(groupchat(room, body))
	}
	var at []time.Time
	for _, body := range []string{"one", "two", "three"} {
		w.expect(body, func(m ircmsg.Message) bool {
			return m.Command == "PRIVMSG" && m.Nick() == "flooder" && last(m.Params) == body
		})
		at = append(at, time.Now())
	}
	// A token a second after the first: the third no sooner than some 2 s
	// after the first (less a little for when the bucket was last full).
	if d := at[2].Sub(at[0]); d < 1500*time.Millisecond {
		t.Errorf("three lines at one a second arrived within %v", d)
	}
}
