package core_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"transportd/core"
	"transportd/core/config"
	"transportd/core/store"
	"transportd/internal/xmpptest"
)

// The same registration and message flow as TestRegistrationAndMessages,
// against the second XMPP server, ejabberd (scripts/testenv.sh up ejabberd).

// testGatewayOn starts a gateway serving users of domain with one component
// of transport at name.domain; extra is appended to the [domains."domain"]
// table. testGateway is this for Prosody's a.test.
func testGatewayOn(t testing.TB, env xmpptest.Env, domain, transport, name, extra string) *gateway {
	t.Helper()
	dir := t.TempDir()
	key := bytes.Repeat([]byte{7}, 32)
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(env.Secret), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgText := fmt.Sprintf(`
[xmpp]
component_addr = %[1]q
reconnect_min = "200ms"
reconnect_max = "2s"

[store]
path = "t.db"
key_file = "key"

[log]
level = "debug"

[domains.%[5]q]
%[2]s

[domains.%[5]q.transports.%[4]s]
jid = "%[3]s.%[5]s"
secret_file = "secret"
[domains.%[5]q.transports.%[4]s.defaults]
mode = "slow"
`, env.Component, extra, name, transport, domain)
	cfg, err := config.Parse([]byte(cfgText), dir, core.Transports())
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return startGateway(t, cfg, filepath.Join(dir, "t.db"))
}

func TestEjabberdRegistrationAndMessages(t *testing.T) {
	env := xmpptest.Ejabberd(t)
	domain := env.Domain
	gw := "echo." + domain
	user := "user1@" + domain
	contact := `bob\40example.org@` + gw
	c := xmpptest.Dial(t, env, user, false)
	// ejabberd keeps rosters from run to run. A run that stopped half-way
	// can leave the gateway subscribed to the user without the user being
	// subscribed to it; the server then approves the gateway's next request
	// by itself (RFC 6121 3.1.3) and the user never gets to subscribe back.
	// Start from a roster without the gateway and its contacts, before the
	// gateway is there to answer the unsubscriptions this sends.
	removeFromRoster(t, c, gw, contact)
	g := testGatewayOn(t, env, domain, "echo", "echo", "")
	info := waitConnected(t, c, gw)

	// Service discovery: a gateway identity and the features users need.
	q := info.Child(nsDiscoI, "query")
	id := q.Child("", "identity")
	if id.Get("category") != "gateway" || id.Get("type") != "echo" {
		t.Errorf("identity = %s", id)
	}
	var features []string
	for _, f := range q.Children {
		if f.Name.Local == "feature" {
			features = append(features, f.Get("var"))
		}
	}
	for _, want := range []string{nsDiscoI, nsRegister, nsGateway, "jabber:iq:version", "urn:xmpp:ping", nsCommands, nsReceipts} {
		if !contains(features, want) {
			t.Errorf("disco#info lacks feature %s: %v", want, features)
		}
	}

	// The registration form, with the domain's default filled in.
	get := core.NewElement("", "iq", "type", "get", "to", gw)
	get.Add(core.NewElement(nsRegister, "query"))
	form := c.IQ(get)
	if form.Get("type") != "result" {
		t.Fatalf("registration form: %s", form)
	}
	x := form.Child(nsRegister, "query").Child(nsData, "x")
	if x == nil {
		t.Fatalf("no data form in %s", form)
	}
	var sawMode bool
	for _, f := range x.Children {
		if f.Get("var") == "mode" {
			sawMode = true
			if v := f.ChildText("", "value"); v != "slow" {
				t.Errorf("mode default = %q, want the domain's default slow", v)
			}
		}
	}
	if !sawMode {
		t.Errorf("form lacks the mode field: %s", x)
	}

	// Bad submissions come back through ejabberd as IQ errors naming the field.
	for _, tc := range []struct {
		fields   map[string]string
		cond     string
		textHas  string
		describe string
	}{
		{map[string]string{"username": "alice"}, "bad-request", "password", "missing password"},
		{map[string]string{"username": "alice", "password": "x", "mode": "turbo"}, "not-acceptable", "mode", "option not offered"},
		{map[string]string{"username": "alice", "password": "wrong"}, "not-authorized", "refused", "credentials refused"},
		{map[string]string{"username": "unreachable", "password": "x"}, "remote-server-not-found", "does not answer", "host down"},
	} {
		res := c.IQ(registerIQ(gw, tc.fields))
		if got := xmpptest.Condition(res); res.Get("type") != "error" || got != tc.cond || !strings.Contains(xmpptest.ErrorText(res), tc.textHas) {
			t.Errorf("%s: got %s %q, want %s mentioning %q", tc.describe, got, xmpptest.ErrorText(res), tc.cond, tc.textHas)
		}
	}
	if _, err := g.st.GetAccount(context.Background(), domain, "echo", user); err == nil {
		t.Fatal("a refused registration was stored")
	}

	// A good registration, then the XEP-0100 subscription dance; the
	// gateway's presence carries entity capabilities.
	pres := register(t, c, gw, map[string]string{"username": "alice", "password": "s3cret-passw0rd"})
	if pres.Child("http://jabber.org/protocol/caps", "c") == nil {
		t.Errorf("gateway presence without entity capabilities: %s", pres)
	}
	if _, err := g.st.GetAccount(context.Background(), domain, "echo", user); err != nil {
		t.Fatalf("account not stored after registration: %v", err)
	}

	// A message to a contact goes out and the echo comes back, with a
	// receipt once the network accepted it.
	msg := core.NewElement("", "message", "to", contact, "type", "chat", "id", "m1")
	msg.AddText("", "body", "hello there")
	msg.Add(core.NewElement(nsReceipts, "request"))
	c.Send(msg)
	rcpt := c.Expect(wait, "delivery receipt", func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Child(nsReceipts, "received") != nil
	})
	if rcpt.Child(nsReceipts, "received").Get("id") != "m1" || !strings.HasPrefix(rcpt.Get("from"), contact) {
		t.Errorf("receipt = %s", rcpt)
	}
	echo := c.Expect(wait, "echo", func(el *core.Element) bool {
		return el.Name.Local == "message" && el.ChildText("", "body") != ""
	})
	if echo.ChildText("", "body") != "echo: hello there" || echo.Get("from") != contact {
		t.Errorf("echo = %s", echo)
	}
	if echo.ChildText("http://jabber.org/protocol/nick", "nick") != "Echo bob@example.org" {
		t.Errorf("echo lacks the contact's nickname: %s", echo)
	}
	if echo.Child("urn:xmpp:delay", "delay") == nil {
		t.Errorf("echo lacks a delay stamp: %s", echo)
	}

	// The new contact is offered for the roster (a subscription request,
	// as neither the server grants roster privileges nor the client does
	// roster item exchange). The user declines it, which also keeps
	// ejabberd's stored roster the same from one run to the next (it
	// redelivers pending requests at each login). Waiting for the gateway
	// to record the offer keeps its background roster work from racing the
	// unregistration below.
	c.Expect(wait, "the contact's subscription request", xmpptest.IsFrom("presence", contact, "subscribe"))
	c.Send(core.NewElement("", "presence", "to", contact, "type", "unsubscribed"))
	waitContactPushed(t, g, domain, user, "bob@example.org")

	// A legacy refusal comes back as an error for that message.
	msg = core.NewElement("", "message", "to", "refuser@"+gw, "type", "chat", "id", "m2")
	msg.AddText("", "body", "hi")
	c.Send(msg)
	errMsg := c.Expect(wait, "error for the refused message", xmpptest.IsFrom("message", "refuser@"+gw, "error"))
	if errMsg.Get("id") != "m2" || xmpptest.Condition(errMsg) != "not-acceptable" {
		t.Errorf("refusal = %s", errMsg)
	}

	// Credentials are encrypted at rest.
	assertNotInFiles(t, g.dbPath, "s3cret-passw0rd")

	// Unregister: credentials gone, the gateway unsubscribes, and messages
	// are refused.
	rm := core.NewElement("", "iq", "type", "set", "to", gw)
	rm.Add(core.NewElement(nsRegister, "query").Add(core.NewElement("", "remove")))
	if res := c.IQ(rm); res.Get("type") != "result" {
		t.Fatalf("remove: %s", res)
	}
	c.Expect(wait, "unsubscribe", xmpptest.IsFrom("presence", gw, "unsubscribed"))
	if _, err := g.st.GetAccount(context.Background(), domain, "echo", user); err != store.ErrNotFound {
		t.Errorf("account still stored after remove: %v", err)
	}
	msg = core.NewElement("", "message", "to", contact, "type", "chat", "id", "m3")
	msg.AddText("", "body", "anyone?")
	c.Send(msg)
	e := c.Expect(wait, "registration-required", xmpptest.IsFrom("message", contact, "error"))
	if xmpptest.Condition(e) != "registration-required" {
		t.Errorf("after unregister: %s", e)
	}
	if strings.Contains(g.logs.String(), "s3cret-passw0rd") {
		t.Error("a password reached the debug log")
	}
}

// waitContactPushed waits until the gateway has recorded that it offered a
// contact to the user's roster.
func waitContactPushed(t *testing.T, g *gateway, domain, user, address string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(wait)
	for {
		a, err := g.st.GetAccount(ctx, domain, "echo", user)
		if err == nil {
			ct, err := g.st.GetContact(ctx, a.ID, address)
			if err == nil && ct.Pushed {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the gateway did not record %s as offered to %s's roster: %v", address, user, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeFromRoster removes JIDs from the client's roster, cancelling any
// subscriptions both ways.
func removeFromRoster(t *testing.T, c *xmpptest.Client, jids ...string) {
	t.Helper()
	for _, j := range jids {
		iq := core.NewElement("", "iq", "type", "set")
		iq.Add(core.NewElement("jabber:iq:roster", "query").Add(core.NewElement("", "item", "jid", j, "subscription", "remove")))
		if res := c.IQ(iq); res.Get("type") != "result" && xmpptest.Condition(res) != "item-not-found" {
			t.Fatalf("removing %s from the roster: %s", j, res)
		}
	}
}
