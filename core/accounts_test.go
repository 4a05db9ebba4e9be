package core_test

import (
	"strings"
	"testing"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// TestSeveralAccounts registers a main and a "work" account on one
// transport: each account's contacts are distinct JIDs, and a message to a
// contact goes out through the account it belongs to.
func TestSeveralAccounts(t *testing.T) {
	env := xmpptest.Prosody(t)
	g := testGateway(t, env, "echo4", "")
	const gw = "echo4.a.test"
	c := xmpptest.Dial(t, env, "user16@a.test", false)
	waitConnected(t, c, gw)
	register(t, c, gw, map[string]string{"username": "home-login", "password": "p1"})
	res := c.IQ(registerIQ(gw, map[string]string{"core_account": "work", "username": "work-login", "password": "p2"}))
	if res.Get("type") != "result" {
		t.Fatalf("adding a second account: %s", res)
	}
	if res := c.IQ(registerIQ(gw, map[string]string{"core_account": "Bad Name!", "username": "x", "password": "y"})); xmpptest.Condition(res) != "not-acceptable" {
		t.Errorf("invalid account name: %s", res)
	}

	for _, tc := range []struct{ to, want string }{
		{"jane@" + gw, "echo: whoami: home-login"},
		{`work\3ajane@` + gw, "echo: whoami: work-login"},
	} {
		msg := core.NewElement("", "message", "to", tc.to, "type", "chat")
		msg.AddText("", "body", "whoami")
		c.Send(msg)
		got := c.Expect(wait, "echo from "+tc.to, func(el *core.Element) bool {
			return el.Name.Local == "message" && el.ChildText("", "body") == tc.want
		})
		if got.Get("from") != tc.to {
			t.Errorf("answer to %s came from %s", tc.to, got.Get("from"))
		}
	}

	// A label nobody registered.
	msg := core.NewElement("", "message", "to", `play\3ajane@`+gw, "type", "chat")
	msg.AddText("", "body", "hi")
	c.Send(msg)
	if e := c.Expect(wait, "unknown account", xmpptest.IsFrom("message", `play\3ajane@`+gw, "error")); xmpptest.Condition(e) != "item-not-found" {
		t.Errorf("unknown account: %s", e)
	}

	ex := command("status", "execute", "", nil)
	ex.SetAttr("to", gw)
	note := c.IQ(ex).Child(nsCommands, "command").ChildText("", "note")
	if !strings.Contains(note, "main account") || !strings.Contains(note, "account work") {
		t.Errorf("status does not list both accounts:\n%s", note)
	}

	// Unregister only the work account.
	res = runCommand(t, c, gw, "unregister", map[string]string{"core_account": "work", "confirm": "true"})
	if !strings.Contains(res.Child(nsCommands, "command").ChildText("", "note"), "1 registration") {
		t.Errorf("unregister work: %s", res)
	}
	list, _ := g.st.ListAccounts(t.Context(), "a.test", "echo")
	if len(list) != 1 || list[0].Label != "" {
		t.Errorf("accounts left: %+v", list)
	}
}
