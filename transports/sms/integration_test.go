package sms

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"transportd/core"
	coreconfig "transportd/core/config"
	"transportd/core/store"
	"transportd/internal/xmpptest"
)

const (
	gwJID      = "sms.a.test"
	nsRegister = "jabber:iq:register"
	nsData     = "jabber:x:data"
	nsDiscoI   = "http://jabber.org/protocol/disco#info"
	nsCommands = "http://jabber.org/protocol/commands"
	nsReceipts = "urn:xmpp:receipts"
	nsGateway  = "jabber:iq:gateway"
	nsOOB      = "jabber:x:oob"
	nsDelay    = "urn:xmpp:delay"
	wait       = 10 * time.Second
)

// testGW is a transportd running in the test process with the SMS
// transport at sms.a.test, its webhooks on a loopback port.
type testGW struct {
	t      testing.TB
	dir    string
	port   int
	fake   *fakeTwilio
	gw     *core.Gateway
	st     store.Store
	logs   *lockedBuffer
	cancel context.CancelFunc
	done   chan struct{}
}

type lockedBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	t     testing.TB
	off   bool
	quiet bool // benchmarks: keep, do not print
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.off && !b.quiet {
		b.t.Logf("gw: %s", bytes.TrimSpace(p))
	}
	if b.quiet {
		return len(p), nil
	}
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTestGW writes a configuration (extra lines go into the transport's
// defaults) and starts a gateway on it.
func newTestGW(t testing.TB, env xmpptest.Env, fake *fakeTwilio, extra string) *testGW {
	t.Helper()
	g := &testGW{t: t, dir: t.TempDir(), port: freePort(t), fake: fake}
	if err := os.WriteFile(filepath.Join(g.dir, "key"), []byte(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(g.dir, "secret"), []byte(env.Secret), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := fmt.Sprintf(`
[xmpp]
component_addr = %q
reconnect_min = "200ms"
reconnect_max = "1s"

[store]
path = "t.db"
key_file = "key"

[http]
listen = "127.0.0.1:%d"
public_url = "http://127.0.0.1:%d/"

[log]
level = "debug"

[domains."a.test"]

[domains."a.test".transports.sms]
jid = %q
secret_file = "secret"
[domains."a.test".transports.sms.defaults]
api_base_url = %q
region = "US"
%s
`, env.Component, g.port, g.port, gwJID, fake.URL, extra)
	if err := os.WriteFile(filepath.Join(g.dir, "transportd.toml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	g.start()
	t.Cleanup(g.stop)
	return g
}

// start runs the gateway (again) on the same configuration and database.
func (g *testGW) start() {
	g.t.Helper()
	data, err := os.ReadFile(filepath.Join(g.dir, "transportd.toml"))
	if err != nil {
		g.t.Fatal(err)
	}
	cfg, err := coreconfig.Parse(data, g.dir, core.Transports())
	if err != nil {
		g.t.Fatalf("config: %v", err)
	}
	st, err := store.Open(cfg.Store.Path)
	if err != nil {
		g.t.Fatal(err)
	}
	_, bench := g.t.(*testing.B)
	g.logs = &lockedBuffer{t: g.t, quiet: bench}
	level := slog.LevelDebug
	if bench {
		level = slog.LevelWarn
	}
	log := slog.New(slog.NewTextHandler(g.logs, &slog.HandlerOptions{Level: level}))
	gw, err := core.New(cfg, st, core.Options{Logger: log})
	if err != nil {
		g.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g.gw, g.st, g.cancel, g.done = gw, st, cancel, make(chan struct{})
	go func() {
		defer close(g.done)
		if err := gw.Run(ctx); err != nil {
			g.t.Errorf("gateway: %v", err)
		}
	}()
}

// stop ends the gateway and closes its database, as a crash would leave
// them (nothing is flushed beyond what was committed).
func (g *testGW) stop() {
	if g.cancel == nil {
		return
	}
	g.cancel()
	select {
	case <-g.done:
	case <-time.After(15 * time.Second):
		g.t.Errorf("gateway did not stop")
	}
	g.st.Close()
	g.logs.mu.Lock()
	g.logs.off = true
	g.logs.mu.Unlock()
	g.cancel = nil
}

func (g *testGW) hook(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d/sms/a.test%s", g.port, path)
}

// waitConnected waits until the component answers disco#info.
func waitConnected(t testing.TB, c *xmpptest.Client) *core.Element {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		q := core.NewElement("", "iq", "type", "get", "to", gwJID)
		q.Add(core.NewElement(nsDiscoI, "query"))
		res, err := c.IQErr(q, 3*time.Second)
		if err == nil && res.Get("type") == "result" {
			return res
		}
		if time.Now().After(deadline) {
			t.Fatalf("component did not come up: %v %v", err, res)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func registerIQ(fields map[string]string) *core.Element {
	iq := core.NewElement("", "iq", "type", "set", "to", gwJID)
	q := core.NewElement(nsRegister, "query")
	x := core.NewElement(nsData, "x", "type", "submit")
	x.Add(core.NewElement("", "field", "var", "FORM_TYPE", "type", "hidden").AddText("", "value", nsRegister))
	for k, v := range fields {
		x.Add(core.NewElement("", "field", "var", k).AddText("", "value", v))
	}
	q.Add(x)
	return iq.Add(q)
}

// register registers and completes XEP-0100's subscription dance, returning
// the gateway's available presence.
func register(t testing.TB, c *xmpptest.Client, fields map[string]string) *core.Element {
	t.Helper()
	res := c.IQ(registerIQ(fields))
	if res.Get("type") != "result" {
		t.Fatalf("registration failed: %s", res)
	}
	available := func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", gwJID, "")(el) && el.Child("", "show") == nil
	}
	first := c.Expect(wait, "subscription request or presence", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", gwJID, "subscribe")(el) || available(el)
	})
	if first.Get("type") != "subscribe" {
		return first
	}
	c.Send(core.NewElement("", "presence", "to", gwJID, "type", "subscribed"))
	c.Send(core.NewElement("", "presence", "to", gwJID, "type", "subscribe"))
	return c.Expect(wait, "gateway presence (connected)", available)
}

// expect is Client.Expect failing t (a subtest) rather than the test that
// dialled the client.
func expect(t testing.TB, c *xmpptest.Client, what string, f func(*core.Element) bool) *core.Element {
	t.Helper()
	el, err := c.Next(wait, f)
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
	return el
}

func chat(to, id, body string, receipt bool) *core.Element {
	m := core.NewElement("", "message", "to", to, "type", "chat", "id", id)
	m.AddText("", "body", body)
	if receipt {
		m.Add(core.NewElement(nsReceipts, "request"))
	}
	return m
}

func hasBody(from, body string) func(*core.Element) bool {
	return func(el *core.Element) bool {
		return xmpptest.IsFrom("message", from, "chat")(el) && el.ChildText("", "body") == body
	}
}

// account returns the store's account of a user.
func (g *testGW) account(jid string) *store.Account {
	g.t.Helper()
	a, err := g.st.GetAccount(context.Background(), "a.test", "sms", jid)
	if err != nil {
		g.t.Fatalf("account %s: %v", jid, err)
	}
	return a
}

// waitOutboxEmpty waits until the gateway's outbox has nothing left.
func (g *testGW) waitOutboxEmpty() {
	g.t.Helper()
	waitFor(g.t, wait, "outbox drained", func() bool {
		n, err := g.st.Pending(context.Background(), 0, "")
		return err == nil && n == 0
	})
}

// TestIntegration drives the transport through Prosody with a real XMPP
// client: registration, sending (receipts, failures, splitting, policy,
// rate), receiving (SMS, MMS, replays, refused webhooks), the Usage command
// and jabber:iq:gateway.
func TestIntegration(t *testing.T) {
	env := xmpptest.Prosody(t)
	fake := newFakeTwilio(t)
	sid, token := fake.AddAccount()
	const number = "+12025550100"
	fake.AddNumber(sid, number)
	otherSID, _ := fake.AddAccount()
	fake.AddNumber(otherSID, "+12025550177")
	g := newTestGW(t, env, fake, `rate_per_second = "2"`)
	c := xmpptest.Dial(t, env, "user21@a.test", false)
	info := waitConnected(t, c)
	if id := info.Child(nsDiscoI, "query").Child("", "identity"); id.Get("category") != "gateway" || id.Get("type") != "sms" {
		t.Errorf("identity %s", id)
	}

	t.Run("register", func(t *testing.T) {
		get := core.NewElement("", "iq", "type", "get", "to", gwJID)
		get.Add(core.NewElement(nsRegister, "query"))
		form := c.IQ(get).String()
		for _, v := range []string{`var="number"`, `var="account_sid"`, `var="auth_token"`} {
			if !strings.Contains(form, v) {
				t.Errorf("form lacks %s: %s", v, form)
			}
		}
		for _, tc := range []struct {
			fields        map[string]string
			cond, textHas string
		}{
			{map[string]string{"number": number, "account_sid": sid, "auth_token": randomHex(32)}, "not-authorized", "Twilio refused the Account SID or Auth Token"},
			{map[string]string{"number": "+12025550177", "account_sid": sid, "auth_token": token}, "item-not-found", `"Phone number" (number): +12025550177`},
			{map[string]string{"number": "911", "account_sid": sid, "auth_token": token}, "not-acceptable", "(number)"},
			{map[string]string{"number": number, "account_sid": "AC123", "auth_token": token}, "not-acceptable", "(account_sid)"},
		} {
			res := c.IQ(registerIQ(tc.fields))
			if xmpptest.Condition(res) != tc.cond || !strings.Contains(xmpptest.ErrorText(res), tc.textHas) {
				t.Errorf("got %s %q, want %s with %q", xmpptest.Condition(res), xmpptest.ErrorText(res), tc.cond, tc.textHas)
			}
		}
		if _, err := g.st.GetAccount(context.Background(), "a.test", "sms", "user21@a.test"); err == nil {
			t.Fatal("a refused registration was stored")
		}
		register(t, c, map[string]string{"number": "(202) 555-0100", "account_sid": sid, "auth_token": token})
		if a := g.account("user21@a.test"); a.Fields["number"] != number {
			t.Errorf("number stored as %q", a.Fields["number"])
		}
		if n := fake.Number(number); n.SmsURL != g.hook("/incoming") || n.SmsMethod != "POST" {
			t.Errorf("webhook of the number: %q %q", n.SmsURL, n.SmsMethod)
		}
		for _, p := range []string{"t.db", "t.db-wal"} {
			if b, err := os.ReadFile(filepath.Join(g.dir, p)); err == nil && bytes.Contains(b, []byte(token)) {
				t.Errorf("%s holds the auth token in clear", p)
			}
		}
	})

	t.Run("send, receipt, failure", func(t *testing.T) {
		c.Send(chat("+12025550123@"+gwJID, "m1", "hello from xmpp", true))
		sent := fake.waitSent(1, wait)
		m := sent[0]
		if m.From != number || m.To != "+12025550123" || m.Body != "hello from xmpp" {
			t.Fatalf("twilio got %+v", m)
		}
		fake.callback(m.Sid, "sent", 0)
		fake.callback(m.Sid, "delivered", 0)
		rcpt := expect(t, c, "delivery receipt", func(el *core.Element) bool {
			return el.Name.Local == "message" && el.Child(nsReceipts, "received") != nil
		})
		if rcpt.Child(nsReceipts, "received").Get("id") != "m1" || !strings.HasPrefix(rcpt.Get("from"), "+12025550123@"+gwJID) {
			t.Errorf("receipt %s", rcpt)
		}
		c.Send(chat("+12025550124@"+gwJID, "m2", "to a dead phone", true))
		m2 := fake.waitSent(2, wait)[1]
		fake.callback(m2.Sid, "undelivered", 30003)
		// The failure comes back as an error for that message, to the
		// client that sent it.
		e := expect(t, c, "delivery failure", xmpptest.IsFrom("message", "+12025550124@"+gwJID, "error"))
		if e.Get("id") != "m2" || xmpptest.ErrorText(e) != "Twilio error 30003: Unreachable destination handset" {
			t.Errorf("failure = %s", e)
		}
	})

	t.Run("receive", func(t *testing.T) {
		in := fake.Receive("+12025550130", number, "hello xmpp")
		if status, body := fake.deliverIncoming(in); status != 200 || !strings.Contains(body, "<Response/>") {
			t.Fatalf("webhook: %d %q", status, body)
		}
		expect(t, c, "incoming SMS", hasBody("+12025550130@"+gwJID, "hello xmpp"))
		// Replayed webhook: 200 again, delivered once.
		if status, _ := fake.deliverIncoming(in); status != 200 {
			t.Errorf("replay: %d", status)
		}
		mms := fake.Receive("+12025550130", number, "a picture", "image/png")
		if status, _ := fake.deliverIncoming(mms); status != 200 {
			t.Fatalf("mms: %d", status)
		}
		expect(t, c, "MMS text", hasBody("+12025550130@"+gwJID, "a picture"))
		pic := expect(t, c, "MMS picture", func(el *core.Element) bool {
			return xmpptest.IsFrom("message", "+12025550130@"+gwJID, "chat")(el) && el.Child(nsOOB, "x") != nil
		})
		if u := pic.Child(nsOOB, "x").ChildText("", "url"); u == "" || pic.ChildText("", "body") != u || !strings.Contains(u, "/Media/ME") {
			t.Errorf("picture %s", pic)
		}
		if el, err := c.Next(time.Second, hasBody("+12025550130@"+gwJID, "hello xmpp")); err == nil {
			t.Errorf("replayed webhook delivered twice: %s", el)
		}
		// Refused webhooks: forged signature, unknown number.
		p := fake.IncomingParams(fake.Receive("+12025550131", number, "forged"))
		if status, _ := postWebhook(t, g.hook("/incoming"), p, token, "Zm9yZ2Vk"); status != 403 {
			t.Errorf("forged signature: %d", status)
		}
		p = fake.IncomingParams(fake.Receive("+12025550131", "+12025550166", "nobody"))
		p.Set("AccountSid", sid)
		if status, _ := postWebhook(t, g.hook("/incoming"), p, token, ""); status != 404 {
			t.Errorf("unknown number: %d", status)
		}
		if el, err := c.Next(time.Second, xmpptest.IsFrom("message", "+12025550131@"+gwJID, "chat")); err == nil {
			t.Errorf("refused webhook delivered: %s", el)
		}
		if !strings.Contains(g.logs.String(), "X-Twilio-Signature missing or wrong") {
			t.Error("no log line for the forged webhook")
		}
	})

	t.Run("split, rate limit", func(t *testing.T) {
		before := len(fake.Sent())
		long := strings.Repeat("This is a long message. ", 90) // 2160 characters
		c.Send(chat("+12025550140@"+gwJID, "long", long, false))
		c.Send(chat("+12025550141@"+gwJID, "short", "right after", false))
		sent := fake.waitSent(before+3, wait)[before:]
		var parts []string
		var times []time.Time
		for _, m := range sent {
			if m.To == "+12025550140" {
				parts = append(parts, m.Body)
			}
			times = append(times, m.Created)
		}
		if len(parts) != 2 || strings.Join(parts, "") != long {
			t.Errorf("long body sent as %d parts", len(parts))
		}
		for i := 1; i < len(times); i++ {
			// rate_per_second = 2: at least 500ms apart (slack for timers).
			if gap := times[i].Sub(times[i-1]); gap < 400*time.Millisecond {
				t.Errorf("messages %d and %d sent %v apart at 2/s", i-1, i, gap)
			}
		}
	})

	t.Run("policy", func(t *testing.T) {
		for _, tc := range []struct{ to, cond, has string }{
			{"+19005551234", "not-allowed", "premium-rate"},
			{"+33612345678", "not-allowed", "FR"},
			{"+1911", "not-allowed", "short code"},
			{"2025550123", "jid-malformed", "+12025550123"},
		} {
			c.Send(chat(tc.to+"@"+gwJID, "p"+tc.to, "hi", false))
			e := expect(t, c, "refusal for "+tc.to, xmpptest.IsFrom("message", tc.to+"@"+gwJID, "error"))
			if xmpptest.Condition(e) != tc.cond || !strings.Contains(xmpptest.ErrorText(e), tc.has) {
				t.Errorf("%s: %s %q", tc.to, xmpptest.Condition(e), xmpptest.ErrorText(e))
			}
		}
	})

	t.Run("usage and gateway", func(t *testing.T) {
		g.waitOutboxEmpty()
		exec := core.NewElement("", "iq", "type", "set", "to", gwJID)
		exec.Add(core.NewElement(nsCommands, "command", "node", "usage", "action", "execute"))
		res := c.IQ(exec)
		note := res.Child(nsCommands, "command").ChildText("", "note")
		if !strings.Contains(note, "Sent today (UTC): 5 of 200") || !strings.Contains(note, "Last message: to +1202555014") || !strings.Contains(note, "SMS segment(s) in GSM-7") {
			t.Errorf("usage: %s", res)
		}
		gq := core.NewElement("", "iq", "type", "set", "to", gwJID)
		gq.Add(core.NewElement(nsGateway, "query").AddText("", "prompt", "(202) 555-0123"))
		if res := c.IQ(gq); res.Child(nsGateway, "query").ChildText("", "jid") != "+12025550123@"+gwJID {
			t.Errorf("gateway translation: %s", res)
		}
	})

	if logs := g.logs.String(); strings.Contains(logs, token) {
		t.Error("the auth token reached the log")
	}
}

// TestIntegrationCrash: the gateway dies while Twilio holds the create
// request (the message exists at Twilio, the answer never came). Started
// again on the same database, it sends nothing twice, and the receipt the
// user asked for still arrives.
func TestIntegrationCrash(t *testing.T) {
	env := xmpptest.Prosody(t)
	fake := newFakeTwilio(t)
	sid, token := fake.AddAccount()
	const number = "+12025550100"
	fake.AddNumber(sid, number)
	g := newTestGW(t, env, fake, "")
	c := xmpptest.Dial(t, env, "user22@a.test", false)
	waitConnected(t, c)
	register(t, c, map[string]string{"number": number, "account_sid": sid, "auth_token": token})

	fake.SetOnCreate(func(n int, _ *fakeMessage) fakeAction {
		if n == 1 {
			return createHang
		}
		return createOK
	})
	c.Send(chat("+12025550123@"+gwJID, "c1", "exactly once", true))
	fake.waitSent(1, wait)
	g.stop() // the create is still waiting for its answer
	g.start()
	waitConnected(t, c)
	g.waitOutboxEmpty()
	if n, sent := fake.CreateCount(), fake.Sent(); n != 1 || len(sent) != 1 {
		t.Fatalf("%d creates, %d messages after the restart; want 1", n, len(sent))
	}
	fake.callback(fake.Sent()[0].Sid, "delivered", 0)
	rcpt := c.Expect(wait, "receipt after the restart", func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Child(nsReceipts, "received") != nil
	})
	if rcpt.Child(nsReceipts, "received").Get("id") != "c1" {
		t.Errorf("receipt %s", rcpt)
	}
	if !strings.Contains(g.logs.String(), "an interrupted send had reached Twilio; not sending again") {
		t.Error("the restarted gateway did not find the interrupted send")
	}
}

// TestIntegrationReconcile: SMS received while the gateway was down are
// delivered after it starts again, once, with their original time.
func TestIntegrationReconcile(t *testing.T) {
	env := xmpptest.Prosody(t)
	fake := newFakeTwilio(t)
	sid, token := fake.AddAccount()
	const number = "+12025550100"
	fake.AddNumber(sid, number)
	g := newTestGW(t, env, fake, "")
	c := xmpptest.Dial(t, env, "user23@a.test", false)
	waitConnected(t, c)
	register(t, c, map[string]string{"number": number, "account_sid": sid, "auth_token": token})
	// The cursor is written by the session's first listing.
	waitFor(t, wait, "first listing", func() bool {
		_, err := g.st.GetState(context.Background(), g.account("user23@a.test").ID, keyCursor)
		return err == nil
	})
	g.stop()
	in := fake.Receive("+12025550150", number, "sent while you were down")
	g.start()
	el := c.Expect(2*wait, "SMS from the outage", hasBody("+12025550150@"+gwJID, "sent while you were down"))
	if el.Child(nsDelay, "delay") == nil {
		t.Errorf("no delay stamp on %s", el)
	}
	// The webhook Twilio retries later changes nothing.
	if status, _ := fake.deliverIncoming(in); status != 200 {
		t.Errorf("late webhook: %d", status)
	}
	if el, err := c.Next(2*time.Second, hasBody("+12025550150@"+gwJID, "sent while you were down")); err == nil {
		t.Errorf("delivered twice: %s", el)
	}
}

// TestIntegrationDailyCap: the cap refuses with a clear error.
func TestIntegrationDailyCap(t *testing.T) {
	env := xmpptest.Prosody(t)
	fake := newFakeTwilio(t)
	sid, token := fake.AddAccount()
	const number = "+12025550100"
	fake.AddNumber(sid, number)
	newTestGW(t, env, fake, "daily_cap = 1\nrate_per_second = 10")
	c := xmpptest.Dial(t, env, "user24@a.test", false)
	waitConnected(t, c)
	register(t, c, map[string]string{"number": number, "account_sid": sid, "auth_token": token})
	c.Send(chat("+12025550123@"+gwJID, "d1", "first", false))
	fake.waitSent(1, wait)
	c.Send(chat("+12025550123@"+gwJID, "d2", "second", false))
	e := c.Expect(wait, "cap refusal", xmpptest.IsFrom("message", "+12025550123@"+gwJID, "error"))
	if e.Get("id") != "d2" || xmpptest.Condition(e) != "policy-violation" || !strings.Contains(xmpptest.ErrorText(e), "daily limit of 1 SMS") {
		t.Errorf("refusal %s", e)
	}
	if n := len(fake.Sent()); n != 1 {
		t.Errorf("%d sent", n)
	}
}

// TestIntegrationProsodyOutage: the XMPP server goes down while SMS keep
// arriving. Twilio's webhooks are still answered 200 (each SMS is on disk
// before the answer), the messages wait in the outbox, and once Prosody
// accepts connections again the component is back by itself and the user
// gets every SMS once, in the order they came.
func TestIntegrationProsodyOutage(t *testing.T) {
	env := xmpptest.Prosody(t)
	if env.Script == "" {
		xmpptest.Missing(t, "TRANSPORTD_TEST_ENV_SCRIPT not set: cannot stop Prosody")
	}
	fake := newFakeTwilio(t)
	sid, token := fake.AddAccount()
	const number = "+12025550100"
	fake.AddNumber(sid, number)
	g := newTestGW(t, env, fake, "")
	c := xmpptest.Dial(t, env, "user24@a.test", false)
	waitConnected(t, c)
	register(t, c, map[string]string{"number": number, "account_sid": sid, "auth_token": token})
	c.Close()

	testenv := func(args ...string) {
		t.Helper()
		cmd := exec.Command(env.Script, args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("testenv %v: %v", args, err)
		}
	}
	testenv("down", "prosody")
	prosodyDown := true
	t.Cleanup(func() {
		if prosodyDown {
			testenv("up", "prosody")
		}
	})
	const n = 8
	run := randomHex(6)
	for i := range n {
		in := fake.Receive("+12025550160", number, fmt.Sprintf("outage %s %d", run, i))
		if status, body := fake.deliverIncoming(in); status != 200 {
			t.Fatalf("webhook %d during the outage: %d %s", i, status, body)
		}
	}
	if pending, _ := g.st.Pending(context.Background(), 0, ""); pending < n {
		t.Errorf("%d messages waiting in the outbox during the outage, want %d", pending, n)
	}
	testenv("up", "prosody")
	prosodyDown = false
	up := time.Now()
	c = xmpptest.Dial(t, env, "user24@a.test", false)
	waitConnected(t, c)
	// Reported, not asserted (a timing): the backoff is capped so that the
	// component reconnects within seconds of the server coming back.
	t.Logf("component back %v after Prosody accepted clients again", time.Since(up).Round(time.Millisecond))
	for i := range n {
		want := fmt.Sprintf("outage %s %d", run, i)
		el := c.Expect(2*wait, "SMS "+want, func(el *core.Element) bool {
			return el.Name.Local == "message" && strings.HasPrefix(el.ChildText("", "body"), "outage "+run+" ")
		})
		if got := el.ChildText("", "body"); got != want {
			t.Fatalf("SMS %d: got %q, want %q (out of order or lost)", i, got, want)
		}
	}
	if el, err := c.Next(2*time.Second, func(el *core.Element) bool {
		return el.Name.Local == "message" && strings.HasPrefix(el.ChildText("", "body"), "outage "+run+" ")
	}); err == nil {
		t.Errorf("delivered twice: %s", el)
	}
	g.waitOutboxEmpty()
}
