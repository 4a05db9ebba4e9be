package core_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"transportd/core"
	"transportd/core/config"
	"transportd/internal/xmpptest"
)

func command(node, action, sessionID string, fields map[string]string) *core.Element {
	iq := core.NewElement("", "iq", "type", "set")
	cmd := core.NewElement(nsCommands, "command", "node", node, "action", action, "sessionid", sessionID)
	if fields != nil {
		x := core.NewElement(nsData, "x", "type", "submit")
		for k, v := range fields {
			x.Add(core.NewElement("", "field", "var", k).AddText("", "value", v))
		}
		cmd.Add(x)
	}
	return iq.Add(cmd)
}

// runCommand executes a two-stage command: fetch the form, submit fields.
func runCommand(t *testing.T, c *xmpptest.Client, to, node string, fields map[string]string) *core.Element {
	t.Helper()
	first := command(node, "execute", "", nil)
	first.SetAttr("to", to)
	res := c.IQ(first)
	if res.Get("type") != "result" {
		return res
	}
	cmd := res.Child(nsCommands, "command")
	if cmd.Get("status") != "executing" {
		return res
	}
	second := command(node, "complete", cmd.Get("sessionid"), fields)
	second.SetAttr("to", to)
	return c.IQ(second)
}

func twoDomainConfig(t *testing.T, env xmpptest.Env, name string) *config.Config {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, dir, "key", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")
	writeFile(t, dir, "secret", env.Secret)
	text := `
[xmpp]
component_addr = "` + env.Component + `"
reconnect_min = "200ms"
reconnect_max = "1s"
[store]
path = "t.db"
key_file = "key"
[domains."a.test"]
admins = ["admin@a.test"]
[domains."a.test".transports.echo]
jid = "` + name + `.a.test"
secret_file = "secret"
[domains."b.test"]
[domains."b.test".transports.echo]
jid = "` + name + `.b.test"
secret_file = "secret"
`
	cfg, err := config.Parse([]byte(text), dir, core.Transports())
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestAdminCommands(t *testing.T) {
	env := xmpptest.Prosody(t)
	cfg := twoDomainConfig(t, env, "echo2")
	g := startGateway(t, cfg, cfg.Store.Path)
	const gwA, gwB = "echo2.a.test", "echo2.b.test"

	user := xmpptest.Dial(t, env, "user11@a.test", false)
	waitConnected(t, user, gwA)
	register(t, user, gwA, map[string]string{"username": "u11", "password": "p"})

	// Not an admin: admin commands are hidden and refused.
	items := core.NewElement("", "iq", "type", "get", "to", gwA)
	items.Add(core.NewElement(nsDiscoIt, "query", "node", nsCommands))
	for _, it := range user.IQ(items).Child(nsDiscoIt, "query").Children {
		if strings.HasPrefix(it.Get("node"), "admin-") {
			t.Errorf("a non-admin sees %s", it.Get("node"))
		}
	}
	for _, node := range []string{"admin-stats", "admin-users", "admin-user", "admin-announce", "admin-transports"} {
		ex := command(node, "execute", "", nil)
		ex.SetAttr("to", gwA)
		if res := user.IQ(ex); xmpptest.Condition(res) != "forbidden" {
			t.Errorf("non-admin running %s: %s", node, res)
		}
	}

	admin := xmpptest.Dial(t, env, "admin@a.test", false)
	waitConnected(t, admin, gwA)

	// Statistics and the user list show the registered user.
	stats := admin.IQ(func() *core.Element { e := command("admin-stats", "execute", "", nil); e.SetAttr("to", gwA); return e }())
	if note := stats.Child(nsCommands, "command").ChildText("", "note"); !strings.Contains(note, "Registered users: 1") {
		t.Errorf("stats = %s", stats)
	}
	list := runCommand(t, admin, gwA, "admin-users", map[string]string{"page": "1"})
	if note := list.Child(nsCommands, "command").ChildText("", "note"); !strings.Contains(note, "user11@a.test — connected") {
		t.Errorf("user list = %s", list)
	}

	// Announcement reaches the user.
	runCommand(t, admin, gwA, "admin-announce", map[string]string{"body": "maintenance at noon"})
	ann := user.Expect(wait, "announcement", xmpptest.IsFrom("message", gwA, "normal"))
	if ann.ChildText("", "body") != "maintenance at noon" {
		t.Errorf("announcement = %s", ann)
	}

	// Disable the user: their messages are refused; enable again.
	runCommand(t, admin, gwA, "admin-user", map[string]string{"jid": "user11@a.test", "action": "disable"})
	user.Expect(wait, "gateway gone unavailable", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", gwA, "unavailable")(el) && strings.Contains(el.ChildText("", "status"), "disabled by the operator")
	})
	msg := core.NewElement("", "message", "to", "x@"+gwA, "type", "chat")
	msg.AddText("", "body", "hi")
	user.Send(msg)
	if e := user.Expect(wait, "refusal", xmpptest.IsFrom("message", "x@"+gwA, "error")); xmpptest.Condition(e) != "forbidden" {
		t.Errorf("disabled user's message: %s", e)
	}
	runCommand(t, admin, gwA, "admin-user", map[string]string{"jid": "user11@a.test", "action": "enable"})
	user.Expect(wait, "gateway back", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", gwA, "")(el) && el.Child("", "show") == nil
	})

	// Disable the transport for a.test at runtime: its component goes,
	// b.test's stays, and the choice is persisted.
	res := runCommand(t, admin, gwA, "admin-transports", map[string]string{"echo": "false"})
	if !strings.Contains(res.Child(nsCommands, "command").ChildText("", "note"), "echo") {
		t.Errorf("transports command = %s", res)
	}
	user.Expect(wait, "told the transport is going", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", gwA, "unavailable")(el) && strings.Contains(el.ChildText("", "status"), "disabled by the operator")
	})
	deadline := time.Now().Add(wait)
	for {
		q := core.NewElement("", "iq", "type", "get", "to", gwA)
		q.Add(core.NewElement(nsDiscoI, "query"))
		// Prosody answers for a component that is gone with an error; a
		// silent one counts as gone too.
		r, err := admin.IQErr(q, 2*time.Second)
		if err != nil || r.Get("type") == "error" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still answers after being disabled", gwA)
		}
		time.Sleep(100 * time.Millisecond)
	}
	other := xmpptest.Dial(t, env, "user11@b.test", false)
	waitConnected(t, other, gwB)
	if v, err := g.st.GetSetting(context.Background(), "enabled/a.test/echo"); err != nil || v != "false" {
		t.Errorf("runtime choice not persisted: %q %v", v, err)
	}
	if err := g.gw.SetEnabled(context.Background(), "a.test", "echo", true); err != nil {
		t.Fatal(err)
	}
	waitConnected(t, admin, gwA)
}

// TestReloadKeepsSessions reloads a changed configuration: the component
// whose link settings did not change keeps its users' sessions.
func TestReloadKeepsSessions(t *testing.T) {
	env := xmpptest.Prosody(t)
	cfg := twoDomainConfig(t, env, "echo3")
	g := startGateway(t, cfg, cfg.Store.Path)
	const gwA = "echo3.a.test"
	c := xmpptest.Dial(t, env, "user12@a.test", false)
	waitConnected(t, c, gwA)
	register(t, c, gwA, map[string]string{"username": "u12", "password": "p"})

	// Drop b.test and close registration on a.test.
	dir := t.TempDir()
	writeFile(t, dir, "key", "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=")
	writeFile(t, dir, "secret", env.Secret)
	cfg2, err := config.Parse([]byte(`
[xmpp]
component_addr = "`+env.Component+`"
reconnect_min = "200ms"
reconnect_max = "1s"
[store]
path = "t.db"
key_file = "key"
[domains."a.test"]
registration = "closed"
[domains."a.test".transports.echo]
jid = "`+gwA+`"
secret_file = "secret"
`), dir, core.Transports())
	if err != nil {
		t.Fatal(err)
	}
	if err := g.gw.Reload(cfg2); err != nil {
		t.Fatal(err)
	}
	// The session survived: a message still echoes, and no presence
	// change was sent.
	msg := core.NewElement("", "message", "to", "z@"+gwA, "type", "chat")
	msg.AddText("", "body", "still here")
	c.Send(msg)
	c.Expect(wait, "echo after reload", func(el *core.Element) bool { return el.ChildText("", "body") == "echo: still here" })
	other := xmpptest.Dial(t, env, "user13@a.test", false)
	get := core.NewElement("", "iq", "type", "get", "to", gwA)
	get.Add(core.NewElement(nsRegister, "query"))
	if res := other.IQ(get); xmpptest.Condition(res) != "not-allowed" {
		t.Errorf("new policy not applied: %s", res)
	}
}
