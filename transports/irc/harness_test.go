package irc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ergochat/irc-go/ircmsg"

	"transportd/core"
	"transportd/core/config"
	"transportd/core/store"
	"transportd/internal/xmpptest"
)

// Integration test harness: a gateway in the test process serving
// irc.b.test (users of a.test and b.test), a real XMPP client through the
// test Prosody, and raw IRC clients on the test InspIRCd (or ngIRCd).

const (
	gwJID       = "irc.b.test"
	xwait       = 15 * time.Second
	nsMUC       = "http://jabber.org/protocol/muc"
	nsMUCU      = "http://jabber.org/protocol/muc#user"
	nsDiscI     = "http://jabber.org/protocol/disco#info"
	nsDiscItems = "http://jabber.org/protocol/disco#items"
)

type ircEnv struct {
	xmpp   xmpptest.Env
	irc    string // InspIRCd host:port
	tls    string // InspIRCd TLS host:port
	ngircd string // ngIRCd host:port
	script string
}

func testIRCEnv(t testing.TB) ircEnv {
	t.Helper()
	x := xmpptest.Prosody(t)
	e := ircEnv{xmpp: x, irc: os.Getenv("TRANSPORTD_TEST_IRC_ADDR"), tls: os.Getenv("TRANSPORTD_TEST_IRC_TLS_ADDR"),
		ngircd: os.Getenv("TRANSPORTD_TEST_NGIRCD_ADDR"), script: os.Getenv("TRANSPORTD_TEST_ENV_SCRIPT")}
	if e.irc == "" {
		xmpptest.Missing(t, "InspIRCd not running; run scripts/testenv.sh up prosody inspircd ngircd")
	}
	return e
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

type testGW struct {
	t      testing.TB
	gw     *core.Gateway
	st     store.Store
	dbPath string
	cancel context.CancelFunc
	done   chan struct{}
	logs   *logBuffer
}

// startGW starts transportd with the IRC transport at irc.b.test, with
// the test defaults (loopback server on ircPort, no TLS, fast reconnects,
// generous flood control) and overrides on top.
func startGW(t testing.TB, env xmpptest.Env, ircPort string, overrides map[string]string) *testGW {
	t.Helper()
	dir := t.TempDir()
	key := bytes.Repeat([]byte{5}, 32)
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(env.Secret), 0o600); err != nil {
		t.Fatal(err)
	}
	level := "debug"
	if _, ok := t.(*testing.B); ok {
		level = "warn"
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
level = %q

[domains."b.test"]
users = ["a.test", "b.test"]

[domains."b.test".transports.irc]
jid = %q
secret_file = "secret"
[domains."b.test".transports.irc.defaults]
%s
`, env.Component, level, gwJID, defaultsTOML(ircPort, overrides))
	cfg, err := config.Parse([]byte(cfgText), dir, core.Transports())
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	dbPath := filepath.Join(dir, "t.db")
	st, err := store.Open(dbPath)
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{t: t}
	var log *slog.Logger
	if _, bench := t.(*testing.B); bench {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	} else {
		log = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	gw, err := core.New(cfg, st, core.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &testGW{t: t, gw: gw, st: st, dbPath: dbPath, cancel: cancel, done: make(chan struct{}), logs: logs}
	go func() {
		defer close(g.done)
		if err := gw.Run(ctx); err != nil {
			t.Logf("gateway: %v", err)
		}
	}()
	t.Cleanup(g.stop)
	return g
}

func defaultsTOML(ircPort string, overrides map[string]string) string {
	d := map[string]string{
		"allowed_servers": "127.0.0.1", "port": ircPort, "tls": "false",
		"reconnect_min": "300ms", "reconnect_max": "2s",
		"flood_burst": "100", "flood_rate": "500", "trace": "true",
	}
	for k, v := range overrides {
		d[k] = v
	}
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(d)) {
		fmt.Fprintf(&b, "%s = %q\n", k, d[k])
	}
	return b.String()
}

func (g *testGW) stop() {
	g.cancel()
	select {
	case <-g.done:
	case <-time.After(15 * time.Second):
		g.t.Log("gateway did not stop within 15s")
	}
	g.st.Close()
}

type logBuffer struct {
	t  testing.TB
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.t.Logf("gw: %s", bytes.TrimSpace(p))
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// waitComponent waits until the gateway answers disco#info.
// onlineUser logs an XMPP user in through the test Prosody and waits
// until they see the gateway.
func onlineUser(t testing.TB, e ircEnv, jid string) *xmpptest.Client {
	t.Helper()
	c := xmpptest.Dial(t, e.xmpp, jid, false)
	waitComponent(t, c)
	return c
}

func waitComponent(t testing.TB, c *xmpptest.Client) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		q := core.NewElement("", "iq", "type", "get", "to", gwJID)
		q.Add(core.NewElement(nsDiscI, "query"))
		res, err := c.IQErr(q, 3*time.Second)
		if err == nil && res.Get("type") == "result" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("component %s did not come up: %v %v", gwJID, err, res)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// joinRoom sends a MUC join and returns the self-presence. history, if
// given, are the attributes of its <history/> (maxstanzas, since...).
func joinRoom(t testing.TB, c *xmpptest.Client, roomJID, nick string, history ...string) *core.Element {
	t.Helper()
	p := core.NewElement("", "presence", "to", roomJID+"/"+nick)
	x := core.NewElement(nsMUC, "x")
	if len(history) > 0 {
		x.Add(core.NewElement("", "history", history...))
	}
	c.Send(p.Add(x))
	return c.Expect(xwait, "self-presence in "+roomJID, func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", roomJID, "*")(el) && (el.Get("type") == "error" || statusCodes(el)["110"])
	})
}

func statusCodes(el *core.Element) map[string]bool {
	codes := map[string]bool{}
	x := el.Child(nsMUCU, "x")
	if x == nil {
		return codes
	}
	for _, c := range x.Children {
		if c.Name.Local == "status" {
			codes[c.Get("code")] = true
		}
	}
	return codes
}

func item(el *core.Element) *core.Element {
	if x := el.Child(nsMUCU, "x"); x != nil {
		return x.Child("", "item")
	}
	return nil
}

func groupchat(to, body string) *core.Element {
	m := core.NewElement("", "message", "to", to, "type", "groupchat", "id", xmpptest.RandomID())
	m.AddText("", "body", body)
	return m
}

func isGroupchatFrom(from, body string) func(*core.Element) bool {
	return func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Get("from") == from && el.Get("type") == "groupchat" && (body == "" || el.ChildText("", "body") == body)
	}
}

// rawIRC is a bare IRC client for tests: net.Dial and ircmsg, nothing
// more, so the test sees exactly what reaches the wire.
type rawIRC struct {
	t     testing.TB
	nick  string
	c     net.Conn
	mu    sync.Mutex
	lines []ircmsg.Message
	raw   []string
	note  chan struct{}
	dead  bool
}

func dialRaw(t testing.TB, addr, nick string) *rawIRC {
	t.Helper()
	r := dialRawNoWait(t, addr, nick)
	r.registered()
	return r
}

// dialRawNoWait is dialRaw without waiting for the registration to end
// (registered): many clients are registered at once.
func dialRawNoWait(t testing.TB, addr, nick string) *rawIRC {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("raw IRC dial %s: %v", addr, err)
	}
	r := &rawIRC{t: t, nick: nick, c: c, note: make(chan struct{}, 1)}
	t.Cleanup(func() { c.Close() })
	go r.read()
	r.send("NICK", nick)
	r.send("USER", nick, "0", "*", "raw test client")
	return r
}

// registered waits for the end of the registration (the MOTD).
func (r *rawIRC) registered() {
	r.t.Helper()
	r.expect("376 or 422", func(m ircmsg.Message) bool { return m.Command == "376" || m.Command == "422" })
}

func (r *rawIRC) read() {
	br := bufio.NewReader(r.c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			r.mu.Lock()
			r.dead = true
			r.mu.Unlock()
			select {
			case r.note <- struct{}{}:
			default:
			}
			return
		}
		m, perr := ircmsg.ParseLine(line)
		if perr == nil && m.Command == "PING" {
			r.send("PONG", m.Params...)
			continue
		}
		r.mu.Lock()
		r.raw = append(r.raw, line)
		if perr == nil {
			r.lines = append(r.lines, m)
		}
		r.mu.Unlock()
		select {
		case r.note <- struct{}{}:
		default:
		}
	}
}

func (r *rawIRC) send(cmd string, params ...string) {
	m := ircmsg.MakeMessage(nil, "", cmd, params...)
	line, err := m.Line()
	if err != nil {
		r.t.Fatalf("raw IRC: %v", err)
	}
	if _, err := r.c.Write([]byte(line)); err != nil {
		r.t.Logf("raw IRC write: %v", err)
	}
}

// expect waits for a line f accepts, removing it and what came before.
func (r *rawIRC) expect(what string, f func(ircmsg.Message) bool) ircmsg.Message {
	r.t.Helper()
	m, ok := r.next(xwait, f)
	if !ok {
		r.mu.Lock()
		defer r.mu.Unlock()
		var b strings.Builder
		for _, l := range r.raw {
			b.WriteString(l)
		}
		r.t.Fatalf("raw IRC %s: no %s; received:\n%s", r.nick, what, b.String())
	}
	return m
}

func (r *rawIRC) next(d time.Duration, f func(ircmsg.Message) bool) (ircmsg.Message, bool) {
	deadline := time.After(d)
	for {
		r.mu.Lock()
		for i, m := range r.lines {
			if f(m) {
				r.lines = r.lines[i+1:]
				r.mu.Unlock()
				return m, true
			}
		}
		dead := r.dead
		r.mu.Unlock()
		if dead {
			return ircmsg.Message{}, false
		}
		select {
		case <-r.note:
		case <-deadline:
			return ircmsg.Message{}, false
		}
	}
}

// quiet reports whether no line f accepts arrives within d.
func (r *rawIRC) quiet(d time.Duration, f func(ircmsg.Message) bool) bool {
	_, ok := r.next(d, f)
	return !ok
}

func (r *rawIRC) join(ch string) {
	r.t.Helper()
	r.send("JOIN", ch)
	r.expect("end of NAMES of "+ch, func(m ircmsg.Message) bool {
		return m.Command == "366" && len(m.Params) > 1 && strings.EqualFold(m.Params[1], ch)
	})
}

func cmdFrom(cmd, nick string) func(ircmsg.Message) bool {
	return func(m ircmsg.Message) bool { return m.Command == cmd && strings.EqualFold(m.Nick(), nick) }
}

func (r *rawIRC) allRaw() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.raw...)
}
