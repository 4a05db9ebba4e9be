package core_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"transportd/core"
	"transportd/core/config"
	"transportd/core/store"
	"transportd/internal/xmpptest"
)

const (
	nsRegister = "jabber:iq:register"
	nsData     = "jabber:x:data"
	nsDiscoI   = "http://jabber.org/protocol/disco#info"
	nsDiscoIt  = "http://jabber.org/protocol/disco#items"
	nsCommands = "http://jabber.org/protocol/commands"
	nsReceipts = "urn:xmpp:receipts"
	nsGateway  = "jabber:iq:gateway"
	wait       = 10 * time.Second
)

// gateway is a transportd running in the test process.
type gateway struct {
	gw     *core.Gateway
	st     store.Store
	dbPath string
	logs   *syncWriter
	cancel context.CancelFunc
	done   chan struct{}
}

// testGateway starts a gateway with one echo component at name.a.test.
// extra is appended to the [domains."a.test"] table.
func testGateway(t testing.TB, env xmpptest.Env, name, extra string) *gateway {
	t.Helper()
	return testGatewayWith(t, env, "echo", name, extra)
}

// testGatewayWith is testGateway for another test transport.
func testGatewayWith(t testing.TB, env xmpptest.Env, transport, name, extra string, mutate ...func(*config.Config)) *gateway {
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
component_addr = %q
reconnect_min = "200ms"
reconnect_max = "2s"

[store]
path = "t.db"
key_file = "key"

[log]
level = "debug"

[domains."a.test"]
%s

[domains."a.test".transports.%[4]s]
jid = "%[3]s.a.test"
secret_file = "secret"
[domains."a.test".transports.%[4]s.defaults]
mode = "slow"
`, env.Component, extra, name, transport)
	cfg, err := config.Parse([]byte(cfgText), dir, core.Transports())
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	for _, m := range mutate {
		m(cfg)
	}
	return startGateway(t, cfg, filepath.Join(dir, "t.db"))
}

func startGateway(t testing.TB, cfg *config.Config, dbPath string) *gateway {
	t.Helper()
	st, err := store.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncWriter{w: &bytes.Buffer{}, t: t}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if _, bench := t.(*testing.B); bench {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	gw, err := core.New(cfg, st, core.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gateway{gw: gw, st: st, dbPath: dbPath, logs: logs, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(g.done)
		if err := gw.Run(ctx); err != nil {
			t.Errorf("gateway: %v", err)
		}
	}()
	t.Cleanup(g.stop)
	return g
}

func (g *gateway) stop() {
	g.cancel()
	select {
	case <-g.done:
	case <-time.After(15 * time.Second):
	}
	g.logs.close()
	g.st.Close()
}

// syncWriter sends gateway logs to the test log too.
type syncWriter struct {
	mu     sync.Mutex
	w      *bytes.Buffer
	t      testing.TB
	closed bool // the test is over: t.Logf would panic
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.t.Logf("gw: %s", bytes.TrimSpace(p))
	}
	return s.w.Write(p)
}

func (s *syncWriter) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

func (s *syncWriter) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.String()
}

// waitConnected waits until the component answers disco#info.
func waitConnected(t *testing.T, c *xmpptest.Client, gw string) *core.Element {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		q := core.NewElement("", "iq", "type", "get", "to", gw)
		q.Add(core.NewElement(nsDiscoI, "query"))
		res, err := c.IQErr(q, 3*time.Second)
		if err == nil && res.Get("type") == "result" {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("component %s did not come up: %v %v", gw, err, res)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func registerIQ(gw string, fields map[string]string) *core.Element {
	iq := core.NewElement("", "iq", "type", "set", "to", gw)
	q := core.NewElement(nsRegister, "query")
	x := core.NewElement(nsData, "x", "type", "submit")
	x.Add(core.NewElement("", "field", "var", "FORM_TYPE", "type", "hidden").AddText("", "value", nsRegister))
	for k, v := range fields {
		x.Add(core.NewElement("", "field", "var", k).AddText("", "value", v))
	}
	q.Add(x)
	return iq.Add(q)
}

// register registers the client with the gateway and completes the
// XEP-0100 subscription dance, returning the gateway's first available
// presence.
func register(t *testing.T, c *xmpptest.Client, gw string, fields map[string]string) *core.Element {
	t.Helper()
	res := c.IQ(registerIQ(gw, fields))
	if res.Get("type") != "result" {
		t.Fatalf("registration failed: %s", res)
	}
	// The gateway asks to subscribe, unless an earlier run of the same test
	// user already left that subscription in Prosody's roster.
	available := func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", gw, "")(el) && el.Child("", "show") == nil
	}
	first := c.Expect(wait, "subscription request or presence from the gateway", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", gw, "subscribe")(el) || available(el)
	})
	if first.Get("type") != "subscribe" {
		return first
	}
	c.Send(core.NewElement("", "presence", "to", gw, "type", "subscribed"))
	c.Send(core.NewElement("", "presence", "to", gw, "type", "subscribe"))
	// The gateway approves our subscription; the server does not always
	// forward the request (a pending one from an earlier run), so what
	// counts is the gateway's presence.
	return c.Expect(wait, "gateway presence (connected)", available)
}

func TestRegistrationAndMessages(t *testing.T) {
	env := xmpptest.Prosody(t)
	g := testGateway(t, env, "echo", "")
	const gw = "echo.a.test"
	c := xmpptest.Dial(t, env, "user1@a.test", false)
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
	for _, want := range []string{nsDiscoI, nsRegister, nsGateway, "jabber:iq:version", "urn:xmpp:ping", nsCommands} {
		if !contains(features, want) {
			t.Errorf("disco#info lacks feature %s: %v", want, features)
		}
	}

	// The registration form, with the domain's default filled in.
	get := core.NewElement("", "iq", "type", "get", "to", gw)
	get.Add(core.NewElement(nsRegister, "query"))
	form := c.IQ(get)
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

	// Bad submissions name the field.
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
		if got := xmpptest.Condition(res); got != tc.cond || !strings.Contains(xmpptest.ErrorText(res), tc.textHas) {
			t.Errorf("%s: got %s %q, want %s mentioning %q", tc.describe, got, xmpptest.ErrorText(res), tc.cond, tc.textHas)
		}
	}
	if _, err := g.st.GetAccount(context.Background(), "a.test", "echo", "user1@a.test"); err == nil {
		t.Fatal("a refused registration was stored")
	}

	pres := register(t, c, gw, map[string]string{"username": "alice", "password": "s3cret-passw0rd"})
	if pres.Child("http://jabber.org/protocol/caps", "c") == nil {
		t.Errorf("gateway presence without entity capabilities: %s", pres)
	}

	// A message to a contact goes out and the echo comes back, with a
	// receipt once the network accepted it.
	contact := `bob\40example.org@` + gw
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

	// Re-registering without retyping the password keeps it.
	res := c.IQ(registerIQ(gw, map[string]string{"username": "alice2"}))
	if res.Get("type") != "result" {
		t.Fatalf("re-registration: %s", res)
	}

	// Ad-hoc commands: listed, and Status answers.
	items := core.NewElement("", "iq", "type", "get", "to", gw)
	items.Add(core.NewElement(nsDiscoIt, "query", "node", nsCommands))
	list := c.IQ(items)
	var nodes []string
	for _, it := range list.Child(nsDiscoIt, "query").Children {
		nodes = append(nodes, it.Get("node"))
	}
	for _, want := range []string{"status", "unregister", "reconnect"} {
		if !contains(nodes, want) {
			t.Errorf("commands %v lack %s", nodes, want)
		}
	}
	exec := core.NewElement("", "iq", "type", "set", "to", gw)
	exec.Add(core.NewElement(nsCommands, "command", "node", "status", "action", "execute"))
	st := c.IQ(exec)
	cmd := st.Child(nsCommands, "command")
	if cmd.Get("status") != "completed" || !strings.Contains(cmd.ChildText("", "note"), "connected") {
		t.Errorf("status = %s", st)
	}

	// Unregister: credentials gone, the gateway unsubscribes, and messages
	// are refused.
	rm := core.NewElement("", "iq", "type", "set", "to", gw)
	rm.Add(core.NewElement(nsRegister, "query").Add(core.NewElement("", "remove")))
	if res := c.IQ(rm); res.Get("type") != "result" {
		t.Fatalf("remove: %s", res)
	}
	c.Expect(wait, "unsubscribe", xmpptest.IsFrom("presence", gw, "unsubscribed"))
	if _, err := g.st.GetAccount(context.Background(), "a.test", "echo", "user1@a.test"); err != store.ErrNotFound {
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

func TestHostileInput(t *testing.T) {
	env := xmpptest.Prosody(t)
	testGateway(t, env, "echo2", "")
	const gw = "echo2.a.test"
	c := xmpptest.Dial(t, env, "user2@a.test", false)
	waitConnected(t, c, gw)

	for _, tc := range []struct {
		name, raw, cond string
	}{
		{"get without payload", `<iq type='get' to='` + gw + `' id='h1'/>`, "bad-request"},
		{"invalid type", `<iq type='bogus' to='` + gw + `' id='h2'><query xmlns='jabber:iq:version'/></iq>`, "bad-request"},
		{"two payloads", `<iq type='get' to='` + gw + `' id='h3'><query xmlns='jabber:iq:version'/><ping xmlns='urn:xmpp:ping'/></iq>`, "bad-request"},
		{"unknown payload", `<iq type='get' to='` + gw + `' id='h4'><query xmlns='urn:example:nothing'/></iq>`, "service-unavailable"},
		{"deep nesting", `<iq type='set' to='` + gw + `' id='h5'><query xmlns='jabber:iq:register'>` + strings.Repeat("<a>", 100) + strings.Repeat("</a>", 100) + `</query></iq>`, "policy-violation"},
		{"register garbage", `<iq type='set' to='` + gw + `' id='h6'><query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'><field var='a'><value>1</value></field><field var='a'><value>2</value></field></x></query></iq>`, "bad-request"},
		{"command not found", `<iq type='set' to='` + gw + `' id='h7'><command xmlns='http://jabber.org/protocol/commands' node='nope'/></iq>`, "item-not-found"},
	} {
		if err := c.SendRaw(tc.raw); err != nil {
			t.Fatal(err)
		}
		id := tc.raw[strings.Index(tc.raw, "id='")+4:]
		id = id[:strings.Index(id, "'")]
		res := c.Expect(wait, tc.name, func(el *core.Element) bool { return el.Name.Local == "iq" && el.Get("id") == id })
		if res.Get("type") != "error" || xmpptest.Condition(res) != tc.cond {
			t.Errorf("%s: got %s, want error %s", tc.name, res, tc.cond)
		}
	}
	// Still connected, and still answering.
	v := core.NewElement("", "iq", "type", "get", "to", gw)
	v.Add(core.NewElement("jabber:iq:version", "query"))
	if res := c.IQ(v); res.Get("type") != "result" || res.Child("jabber:iq:version", "query").ChildText("", "name") != "transportd" {
		t.Errorf("version after hostile input: %s", res)
	}
	ping := core.NewElement("", "iq", "type", "get", "to", gw)
	ping.Add(core.NewElement("urn:xmpp:ping", "ping"))
	if res := c.IQ(ping); res.Get("type") != "result" {
		t.Errorf("ping: %s", res)
	}

	// Messages from users who are not registered.
	msg := core.NewElement("", "message", "to", "x@"+gw, "type", "chat")
	msg.AddText("", "body", "hi")
	c.Send(msg)
	e := c.Expect(wait, "registration-required", xmpptest.IsFrom("message", "x@"+gw, "error"))
	if xmpptest.Condition(e) != "registration-required" {
		t.Errorf("unregistered message: %s", e)
	}
}

func TestPolicies(t *testing.T) {
	env := xmpptest.Prosody(t)
	testGateway(t, env, "echo3", `users = ["a.test"]
registration = "allowlist"
allow = ["user4@a.test"]`)
	const gw = "echo3.a.test"

	// Once the component is up (a user it serves sees it)...
	c := xmpptest.Dial(t, env, "user3@a.test", false)
	waitConnected(t, c, gw)

	// ... a user of a domain this gateway does not serve: forbidden. (Not
	// polled until some answer other than Prosody's for a component not
	// yet connected: while it connects, Prosody may answer otherwise.)
	other := xmpptest.Dial(t, env, "user3@b.test", false)
	q := core.NewElement("", "iq", "type", "get", "to", gw)
	q.Add(core.NewElement(nsDiscoI, "query"))
	if res := other.IQ(q); xmpptest.Condition(res) != "forbidden" {
		t.Errorf("user of another domain: %s", res)
	}

	// Not on the allow-list: not-allowed; on it: the form.
	get := core.NewElement("", "iq", "type", "get", "to", gw)
	get.Add(core.NewElement(nsRegister, "query"))
	if res := c.IQ(get); xmpptest.Condition(res) != "not-allowed" {
		t.Errorf("registration by a user not allowed: %s", res)
	}
	if res := c.IQ(registerIQ(gw, map[string]string{"username": "u", "password": "p"})); xmpptest.Condition(res) != "not-allowed" {
		t.Errorf("registration set by a user not allowed: %s", res)
	}
	ok := xmpptest.Dial(t, env, "user4@a.test", false)
	get = core.NewElement("", "iq", "type", "get", "to", gw)
	get.Add(core.NewElement(nsRegister, "query"))
	if res := ok.IQ(get); res.Get("type") != "result" {
		t.Errorf("allow-listed user: %s", res)
	}

	// jabber:iq:gateway translates what the user types.
	gq := core.NewElement("", "iq", "type", "set", "to", gw)
	gq.Add(core.NewElement(nsGateway, "query").AddText("", "prompt", "jane@example.org"))
	if res := ok.IQ(gq); res.Child(nsGateway, "query").ChildText("", "jid") != `jane\40example.org@`+gw {
		t.Errorf("gateway translation: %s", res)
	}
}

// TestReconnect restarts Prosody: the component comes back by itself, and a
// message taken from the legacy network while the link was down is
// delivered afterwards.
func TestReconnect(t *testing.T) {
	env := xmpptest.Prosody(t)
	if env.Script == "" {
		xmpptest.Missing(t, "TRANSPORTD_TEST_ENV_SCRIPT not set: cannot restart Prosody")
	}
	g := testGateway(t, env, "echo4", "")
	const gw = "echo4.a.test"
	c := xmpptest.Dial(t, env, "user5@a.test", false)
	waitConnected(t, c, gw)
	register(t, c, gw, map[string]string{"username": "e", "password": "p"})
	c.Close()

	restart := exec.Command(env.Script, "restart", "prosody")
	restart.Stdout, restart.Stderr = os.Stdout, os.Stderr
	if err := restart.Run(); err != nil {
		t.Fatalf("restart prosody: %v", err)
	}
	start := time.Now()
	c = xmpptest.Dial(t, env, "user5@a.test", false)
	waitConnected(t, c, gw)
	t.Logf("component back %v after Prosody accepted clients again", time.Since(start).Round(time.Millisecond))

	msg := core.NewElement("", "message", "to", "carol@"+gw, "type", "chat", "id", "r1")
	msg.AddText("", "body", "after restart")
	c.Send(msg)
	echo := c.Expect(2*wait, "echo after restart", func(el *core.Element) bool {
		return el.Name.Local == "message" && el.ChildText("", "body") == "echo: after restart"
	})
	_ = echo
	waitOutboxEmpty(t, g)
}

// waitOutboxEmpty waits until the outbox is empty: items leave it once the
// server confirmed them.
func waitOutboxEmpty(t *testing.T, g *gateway) {
	t.Helper()
	for deadline := time.Now().Add(wait); ; time.Sleep(50 * time.Millisecond) {
		n, _ := g.st.Pending(context.Background(), 0, "")
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d items left in the outbox", n)
			return
		}
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// assertNotInFiles checks that a secret is nowhere in the database files.
func assertNotInFiles(t *testing.T, dbPath, secret string) {
	t.Helper()
	for _, p := range []string{dbPath, dbPath + "-wal"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("%s contains a credential in clear", filepath.Base(p))
		}
	}
}

func TestLegacyRegistrationRateLimitAndHTTP(t *testing.T) {
	env := xmpptest.Prosody(t)
	testGateway(t, env, "echo6", "")
	const gw = "echo6.a.test"
	c := xmpptest.Dial(t, env, "user6@a.test", false)
	waitConnected(t, c, gw)

	// A client without data forms: <username/> and <password/>.
	legacy := core.NewElement("", "iq", "type", "set", "to", gw)
	legacy.Add(core.NewElement(nsRegister, "query").AddText("", "username", "old").AddText("", "password", "client"))
	if res := c.IQ(legacy); res.Get("type") != "result" {
		t.Fatalf("legacy registration: %s", res)
	}

	// Guessing passwords through the gateway is throttled: the first
	// attempts are answered, then resource-constraint.
	var conds []string
	for i := 0; i < 7; i++ {
		res := c.IQ(registerIQ(gw, map[string]string{"username": "victim", "password": "wrong"}))
		conds = append(conds, xmpptest.Condition(res))
	}
	if conds[0] != "not-authorized" || conds[len(conds)-1] != "resource-constraint" {
		t.Errorf("conditions of 7 bad registrations in a row: %v; want not-authorized first and resource-constraint at the end", conds)
	}
}

func TestHealthAndMetrics(t *testing.T) {
	env := xmpptest.Prosody(t)
	port := freePort(t)
	testGateway(t, env, "echo3", fmt.Sprintf("# http below\n[http]\nlisten = \"127.0.0.1:%d\"\n", port))
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	c := xmpptest.Dial(t, env, "user8@a.test", false)
	waitConnected(t, c, "echo3.a.test")

	get := func(path string) (int, string) {
		t.Helper()
		var resp *http.Response
		var err error
		for i := 0; i < 50; i++ {
			resp, err = http.Get(base + path)
			if err == nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := get("/readyz"); code != 200 {
		t.Errorf("/readyz = %d %s", code, body)
	}
	_, before := get("/metrics")
	if !strings.Contains(before, `transportd_component_up{domain="a.test",transport="echo"} 1`) {
		t.Errorf("metrics lack the component's up gauge:\n%s", grepLines(before, "transportd_"))
	}
	if !strings.Contains(before, `go_sql_open_connections{db_name="transportd"}`) {
		t.Errorf("metrics lack the store's connection pool:\n%s", grepLines(before, "go_sql"))
	}
	ping := core.NewElement("", "iq", "type", "get", "to", "echo3.a.test")
	ping.Add(core.NewElement("urn:xmpp:ping", "ping"))
	c.IQ(ping)
	_, after := get("/metrics")
	if metricValue(after, `transportd_stanzas_total{direction="in",kind="iq"}`) <= metricValue(before, `transportd_stanzas_total{direction="in",kind="iq"}`) {
		t.Errorf("stanza counter did not move:\n%s", grepLines(after, "transportd_stanzas"))
	}

	// Messages flowing both ways move the message counters.
	register(t, c, "echo3.a.test", map[string]string{"username": "m", "password": "p"})
	msg := core.NewElement("", "message", "to", "metrics@echo3.a.test", "type", "chat")
	msg.AddText("", "body", "count me")
	c.Send(msg)
	c.Expect(wait, "echo", func(el *core.Element) bool { return el.ChildText("", "body") == "echo: count me" })
	const toLegacy, toXMPP = `transportd_messages_total{direction="to_legacy",transport="echo"}`, `transportd_messages_total{direction="to_xmpp",transport="echo"}`
	deadline := time.Now().Add(wait)
	for {
		_, m := get("/metrics")
		if metricValue(m, toLegacy) >= 1 && metricValue(m, toXMPP) >= 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("message counters did not move:\n%s", grepLines(m, "transportd_messages"))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestRedactedLogs: with log.redact_jids, the user's JID never appears in
// the gateway's logs.
func TestRedactedLogs(t *testing.T) {
	env := xmpptest.Prosody(t)
	g := testGatewayWith(t, env, "echo", "echo2", "", func(c *config.Config) { c.Log.RedactJIDs = true })
	c := xmpptest.Dial(t, env, "user7@a.test", false)
	waitConnected(t, c, "echo2.a.test")
	register(t, c, "echo2.a.test", map[string]string{"username": "r", "password": "p"})
	res := c.IQ(registerIQ("echo2.a.test", map[string]string{"username": "r", "password": "wrong"}))
	if xmpptest.Condition(res) != "not-authorized" {
		t.Fatalf("bad registration: %s", res)
	}
	logs := g.logs.String()
	if strings.Contains(logs, "user7@a.test") {
		t.Errorf("a JID reached the logs despite redact_jids:\n%s", grepLines(logs, ""))
	}
	if !strings.Contains(logs, "jid:") {
		t.Errorf("no redacted JID in the logs at all:\n%s", logs)
	}
}

func freePort(t testing.TB) int {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func metricValue(s, name string) float64 {
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, name+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(l, name)), 64)
			return v
		}
	}
	return -1
}

func writeFile(t testing.TB, dir, name, content string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestWaitKeepsRetryBudget: a message to a session that is not connected
// waits for it without using up its retries, so the first real failures
// after the session comes back are still retried.
func TestWaitKeepsRetryBudget(t *testing.T) {
	env := xmpptest.Prosody(t)
	g := testGateway(t, env, "echo2", "")
	const gw = "echo2.a.test"
	c := xmpptest.Dial(t, env, "user27@a.test", false)
	waitConnected(t, c, gw)
	// The echo network refuses the stored password: the session never connects.
	if res := c.IQ(registerIQ(gw, map[string]string{"username": "w", "password": "expired"})); res.Get("type") != "result" {
		t.Fatalf("registration failed: %s", res)
	}
	msg := core.NewElement("", "message", "to", "carol@"+gw, "type", "chat", "id", "wait1")
	msg.AddText("", "body", "while the session is down")
	c.Send(msg)

	ctx := context.Background()
	deadline := time.Now().Add(wait)
	for {
		items, err := g.st.Due(ctx, store.ToLegacy, time.Now().Add(time.Hour), 0)
		if err != nil {
			t.Fatal(err)
		}
		var it *store.OutboxItem
		for _, i := range items {
			if strings.Contains(string(i.Payload), "while the session is down") {
				it = i
			}
		}
		if it != nil && it.LastError != "" {
			if it.Attempts != 0 || it.LastError != "session not connected" {
				t.Errorf("waiting item: attempts %d, last error %q; want no attempt counted, waiting for the session", it.Attempts, it.LastError)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the message never waited for the session (queued: %+v)", items)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
