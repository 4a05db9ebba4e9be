package core_test

import (
	"strings"
	"testing"
	"time"

	"transportd/core"
	"transportd/internal/xmpptest"
)

const (
	nsRoster   = "jabber:iq:roster"
	nsCarbons  = "urn:xmpp:carbons:2"
	nsForward  = "urn:xmpp:forward:0"
	nsVCardTmp = "vcard-temp"
)

func diagnose(t *testing.T, c *xmpptest.Client, gw string) string {
	t.Helper()
	ex := command("diagnose", "execute", "", nil)
	ex.SetAttr("to", gw)
	return c.IQ(ex).Child(nsCommands, "command").ChildText("", "note")
}

// TestContactsWithPrivilege: a.test grants the component the roster and
// message privileges (XEP-0356): contacts are pushed into the roster, and
// the user's messages sent elsewhere arrive as sent carbons.
func TestContactsWithPrivilege(t *testing.T) {
	env := xmpptest.Prosody(t)
	testGateway(t, env, "echo6", "")
	const gw = "echo6.a.test"
	c := xmpptest.Dial(t, env, "user14@a.test", false)
	waitConnected(t, c, gw)
	enable := core.NewElement("", "iq", "type", "set")
	enable.Add(core.NewElement(nsCarbons, "enable"))
	if res := c.IQ(enable); res.Get("type") != "result" {
		t.Fatalf("enabling carbons: %s", res)
	}
	register(t, c, gw, map[string]string{"username": "u14", "password": "p"})

	msg := core.NewElement("", "message", "to", "carol@"+gw, "type", "chat")
	msg.AddText("", "body", "hi carol")
	c.Send(msg)
	c.Expect(wait, "echo", func(el *core.Element) bool { return el.ChildText("", "body") == "echo: hi carol" })
	push := c.Expect(wait, "roster push", func(el *core.Element) bool {
		q := el.Child(nsRoster, "query")
		// The name may come with the first push or with an update once the
		// contact's first message told it.
		return el.Name.Local == "iq" && el.Get("type") == "set" && q != nil && q.Child("", "item").Get("jid") == "carol@"+gw &&
			q.Child("", "item").Get("name") != ""
	})
	item := push.Child(nsRoster, "query").Child("", "item")
	if item.Get("subscription") != "both" || item.ChildText("", "group") != "Echo" || item.Get("name") != "Echo carol" {
		t.Errorf("roster item = %s", item)
	}
	c.Send(core.NewElement("", "iq", "type", "result", "id", push.Get("id"), "to", push.Get("from")))

	// Written from elsewhere: shown as the user's own message.
	msg = core.NewElement("", "message", "to", "carol@"+gw, "type", "chat")
	msg.AddText("", "body", "elsewhere:sent from my phone")
	c.Send(msg)
	carbon := c.Expect(wait, "sent carbon", func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Child(nsCarbons, "sent") != nil
	})
	inner := carbon.Child(nsCarbons, "sent").Child(nsForward, "forwarded").Child("", "message")
	if inner.ChildText("", "body") != "sent from my phone" || inner.Get("to") != "carol@"+gw || !strings.HasPrefix(inner.Get("from"), "user14@a.test") {
		t.Errorf("carbon = %s", carbon)
	}
	// The server also routed it to the gateway, which must not send it on.
	if el, err := c.Next(500*1e6, func(el *core.Element) bool { return el.ChildText("", "body") == "echo: sent from my phone" }); err == nil {
		t.Errorf("the carbon went out to the network again: %s", el)
	}

	note := diagnose(t, c, gw)
	for _, want := range []string{"✓ Contacts", "✓ Your own messages", "✓ File upload", "✓ Network"} {
		if !strings.Contains(note, want) {
			t.Errorf("diagnose lacks %q:\n%s", want, note)
		}
	}

	vq := core.NewElement("", "iq", "type", "get", "to", "carol@"+gw)
	vq.Add(core.NewElement(nsVCardTmp, "vCard"))
	if v := c.IQ(vq).Child(nsVCardTmp, "vCard"); v.ChildText("", "FN") != "Echo carol" {
		t.Errorf("vCard = %s", v)
	}

	// The user removes the contact from the roster (their server
	// unsubscribes from it): a new name the contact tells later does not
	// put it back.
	remove := core.NewElement("", "iq", "type", "set")
	remove.Add(core.NewElement(nsRoster, "query").Add(core.NewElement("", "item", "jid", "carol@"+gw, "subscription", "remove")))
	if res := c.IQ(remove); res.Get("type") != "result" {
		t.Fatalf("removing carol from the roster: %s", res)
	}
	// The gateway records it off its stanza reader: nothing the client can
	// see says when (the echo network tells no presence to take back).
	time.Sleep(time.Second)
	msg = core.NewElement("", "message", "to", "carol@"+gw, "type", "chat")
	msg.AddText("", "body", "rename:Caroline")
	c.Send(msg)
	c.Expect(wait, "echo of the rename", func(el *core.Element) bool { return el.ChildText("", "body") == "echo: rename:Caroline" })
	if el, err := c.Next(time.Second, func(el *core.Element) bool {
		q := el.Child(nsRoster, "query")
		return el.Name.Local == "iq" && q != nil && q.Child("", "item").Get("jid") == "carol@"+gw && q.Child("", "item").Get("name") == "Caroline"
	}); err == nil {
		t.Errorf("the removed contact was put back in the roster: %s", el)
	}
}

// TestContactsWithoutPrivilege: b.test grants nothing, so a new contact
// asks for a subscription, and Diagnose says what the operator can do.
func TestContactsWithoutPrivilege(t *testing.T) {
	env := xmpptest.Prosody(t)
	cfg := twoDomainConfig(t, env, "echo6")
	startGateway(t, cfg, cfg.Store.Path)
	const gw = "echo6.b.test"
	c := xmpptest.Dial(t, env, "user14@b.test", false)
	waitConnected(t, c, gw)
	register(t, c, gw, map[string]string{"username": "u14", "password": "p"})

	msg := core.NewElement("", "message", "to", "dave@"+gw, "type", "chat")
	msg.AddText("", "body", "hi dave")
	c.Send(msg)
	c.Expect(wait, "subscription request from the contact", xmpptest.IsFrom("presence", "dave@"+gw, "subscribe"))
	note := diagnose(t, c, gw)
	for _, want := range []string{"✗ Contacts", "mod_privilege", "✗ Your own messages", "✗ File upload"} {
		if !strings.Contains(note, want) {
			t.Errorf("diagnose lacks %q:\n%s", want, note)
		}
	}
}

// TestContactsByRosterExchange: without a roster privilege, a user whose
// client says (disco#info) that it takes roster item exchange gets a new
// contact offered that way (XEP-0144) rather than as a subscription
// request.
func TestContactsByRosterExchange(t *testing.T) {
	env := xmpptest.Prosody(t)
	cfg := twoDomainConfig(t, env, "echo6")
	startGateway(t, cfg, cfg.Store.Path)
	const gw = "echo6.b.test"
	c := xmpptest.Dial(t, env, "user15@b.test", false)
	waitConnected(t, c, gw)
	register(t, c, gw, map[string]string{"username": "u15", "password": "p"})
	// The gateway asks the client what it supports once it sees it online.
	q := c.Expect(wait, "disco#info from the gateway", func(el *core.Element) bool {
		return el.Name.Local == "iq" && el.Get("type") == "get" && el.Get("from") == gw && el.Child(nsDiscoI, "query") != nil
	})
	res := core.NewElement("", "iq", "type", "result", "to", gw, "id", q.Get("id"))
	query := core.NewElement(nsDiscoI, "query")
	for _, f := range []string{nsDiscoI, "urn:xmpp:receipts", "http://jabber.org/protocol/rosterx", "urn:xmpp:chat-markers:0"} {
		query.Add(core.NewElement("", "feature", "var", f))
	}
	c.Send(res.Add(query))
	// The answer is taken in the background: give it a moment.
	time.Sleep(300 * time.Millisecond)

	msg := core.NewElement("", "message", "to", "erin@"+gw, "type", "chat")
	msg.AddText("", "body", "hi erin")
	c.Send(msg)
	x := c.Expect(wait, "roster item exchange offering the contact", func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Get("from") == gw && el.Child("http://jabber.org/protocol/rosterx", "x") != nil
	})
	item := x.Child("http://jabber.org/protocol/rosterx", "x").Child("", "item")
	if item == nil || item.Get("jid") != "erin@"+gw || item.Get("action") != "add" {
		t.Errorf("roster item exchange = %s", x)
	}
	if el, err := c.Next(500*time.Millisecond, xmpptest.IsFrom("presence", "erin@"+gw, "subscribe")); err == nil {
		t.Errorf("a subscription request came as well: %s", el)
	}
}
