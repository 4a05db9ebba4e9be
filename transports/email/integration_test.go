package email

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
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-smtp"

	"transportd/core"
	"transportd/core/config"
	"transportd/core/store"
	"transportd/internal/xmpptest"
)

const (
	nsRegister = "jabber:iq:register"
	nsData     = "jabber:x:data"
	nsDiscoI   = "http://jabber.org/protocol/disco#info"
	nsOOB      = "jabber:x:oob"
	wait       = 15 * time.Second
)

// mailEnv is the mail side of the test environment.
type mailEnv struct {
	xmpp     xmpptest.Env
	imap     string // host:port
	smtp     string // OpenSMTPD
	lmtp     string // Dovecot LMTP
	submit   string // Dovecot submission (AUTH, relays to OpenSMTPD)
	password string
	maildirs string
	script   string
}

func testMailEnv(t testing.TB) mailEnv {
	t.Helper()
	x := xmpptest.Prosody(t)
	e := mailEnv{
		xmpp:     x,
		imap:     os.Getenv("TRANSPORTD_TEST_IMAP"),
		smtp:     os.Getenv("TRANSPORTD_TEST_SMTP"),
		lmtp:     os.Getenv("TRANSPORTD_TEST_LMTP"),
		submit:   os.Getenv("TRANSPORTD_TEST_SUBMISSION"),
		password: os.Getenv("TRANSPORTD_TEST_MAIL_PASSWORD"),
		maildirs: os.Getenv("TRANSPORTD_TEST_MAILDIRS"),
		script:   os.Getenv("TRANSPORTD_TEST_ENV_SCRIPT"),
	}
	if e.imap == "" || e.smtp == "" || e.lmtp == "" || e.submit == "" {
		xmpptest.Missing(t, "mail servers not running; run scripts/testenv.sh up prosody dovecot smtpd")
	}
	return e
}

// testGW is a transportd with the email transport on a.test and b.test.
type testGW struct {
	t       testing.TB
	dir     string
	httpURL string
	cancel  context.CancelFunc
	done    chan struct{}
	st      store.Store
}

func freePort(t testing.TB) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// gwOpts are the variable parts of a test gateway. dir (and its
// database) may be reused to restart one.
type gwOpts struct {
	dir, httpAddr string
	imapAddr      string // default: the test Dovecot
	extra         string // more transport defaults (TOML lines)
	// smtpAuth: log in to SMTP (the operator's default) instead of
	// smtp_auth = "none" for the MTA that relays for loopback.
	smtpAuth bool
}

func startGW(t testing.TB, e mailEnv, o gwOpts) *testGW {
	t.Helper()
	dir, httpAddr, extraDefaults := o.dir, o.httpAddr, o.extra
	if dir == "" {
		dir = t.TempDir()
		key := bytes.Repeat([]byte{9}, 32)
		if err := os.WriteFile(filepath.Join(dir, "key"), []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(e.xmpp.Secret), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if httpAddr == "" {
		httpAddr = freePort(t)
	}
	imapAddr := e.imap
	if o.imapAddr != "" {
		imapAddr = o.imapAddr
	}
	ih, ip, _ := net.SplitHostPort(imapAddr)
	sh, sp, _ := net.SplitHostPort(e.smtp)
	if !o.smtpAuth {
		extraDefaults = "smtp_auth = \"none\"\n" + extraDefaults
	}
	var domains strings.Builder
	for _, d := range []string{"a.test", "b.test"} {
		fmt.Fprintf(&domains, `
[domains."%[1]s"]
[domains."%[1]s".transports.email]
jid = "email.%[1]s"
secret_file = "secret"
[domains."%[1]s".transports.email.defaults]
imap_host = %[2]q
imap_port = %[3]q
imap_security = "plain"
smtp_host = %[4]q
smtp_port = %[5]q
smtp_security = "plain"
allow_plaintext = "true"
discover = "false"
attachment_ttl = "6s"
%[6]s
`, d, ih, ip, sh, sp, extraDefaults)
	}
	cfgText := fmt.Sprintf(`
[xmpp]
component_addr = %q
reconnect_min = "100ms"
reconnect_max = "1s"

[store]
path = "t.db"
key_file = "key"

[http]
listen = %q
public_url = "http://%s/"

[log]
level = "debug"
%s`, e.xmpp.Component, httpAddr, httpAddr, domains.String())
	cfg, err := config.Parse([]byte(cfgText), dir, core.Transports())
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return runGW(t, cfg, dir, httpAddr, logWriter{t})
}

// runGW runs a gateway on cfg (its files in dir), logging at debug level
// to out, until the test ends.
func runGW(t testing.TB, cfg *config.Config, dir, httpAddr string, out io.Writer) *testGW {
	t.Helper()
	st, err := store.Open(filepath.Join(dir, "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelDebug}))
	gw, err := core.New(cfg, st, core.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &testGW{t: t, dir: dir, httpURL: "http://" + httpAddr, cancel: cancel, done: make(chan struct{}), st: st}
	go func() {
		defer close(g.done)
		if err := gw.Run(ctx); err != nil {
			t.Logf("gateway: %v", err)
		}
	}()
	t.Cleanup(g.stop)
	return g
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

type logWriter struct{ t testing.TB }

func (w logWriter) Write(p []byte) (int, error) {
	if os.Getenv("TRANSPORTD_TEST_LOG_STDERR") != "" {
		return os.Stderr.Write(p)
	}
	w.t.Logf("gw: %s", bytes.TrimSpace(p))
	return len(p), nil
}

// waitComponent waits until the component answers disco#info.
func waitComponent(t testing.TB, c *xmpptest.Client, gw string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		q := core.NewElement("", "iq", "type", "get", "to", gw)
		q.Add(core.NewElement(nsDiscoI, "query"))
		res, err := c.IQErr(q, 3*time.Second)
		if err == nil && res.Get("type") == "result" {
			return
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

// register registers the client's mailbox and waits for the gateway to
// show it connected.
func register(t testing.TB, c *xmpptest.Client, gw string, fields map[string]string) {
	t.Helper()
	res := c.IQ(registerIQ(gw, fields))
	if res.Get("type") != "result" {
		t.Fatalf("registration failed: %s", res)
	}
	available := func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", gw, "")(el) && el.Child("", "show") == nil
	}
	first := c.Expect(wait, "subscription request or presence from the gateway", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", gw, "subscribe")(el) || available(el)
	})
	if first.Get("type") == "subscribe" {
		c.Send(core.NewElement("", "presence", "to", gw, "type", "subscribed"))
		c.Send(core.NewElement("", "presence", "to", gw, "type", "subscribe"))
		c.Expect(wait, "gateway presence (connected)", available)
	}
}

// dialUser logs an XMPP user in and registers its mailbox (same name).
func dialUser(t testing.TB, e mailEnv, user, domain string) *xmpptest.Client {
	t.Helper()
	c := xmpptest.Dial(t, e.xmpp, user+"@"+domain, false)
	gw := "email." + domain
	waitComponent(t, c, gw)
	register(t, c, gw, map[string]string{"email": user + "@" + domain, "password": e.password})
	return c
}

func isChatFrom(from string) func(*core.Element) bool {
	return func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Get("type") != "error" && strings.HasPrefix(el.Get("from"), from) && el.Child("", "body") != nil
	}
}

// imapDial logs in to a test mailbox.
func imapDial(t testing.TB, e mailEnv, user string) *imapclient.Client {
	t.Helper()
	c, err := imapclient.DialInsecure(e.imap, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Login(user, e.password).Wait(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// findMail returns the headers of the mails of folder whose Subject
// contains subject.
func findMail(t testing.TB, c *imapclient.Client, folder, subject string) []*parsedMail {
	t.Helper()
	if _, err := c.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	data, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: subject}}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	var out []*parsedMail
	for _, uid := range data.AllUIDs() {
		sec := &imap.FetchItemBodySection{Peek: true}
		msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
		if err != nil || len(msgs) == 0 {
			t.Fatal(err)
		}
		raw := msgs[0].FindBodySection(sec)
		pm := parseMail(bytes.NewReader(raw), defaultLimits)
		pm.RawFrom = string(raw) // the raw mail, for the caller
		out = append(out, pm)
	}
	return out
}

// TestRoundTrip: A writes to B's address through the gateway; the mail
// goes SMTP → OpenSMTPD → Dovecot; B reads it as a message from A's
// escaped address and answers in the thread; A gets the answer in the same
// thread, In-Reply-To A's mail.
func TestRoundTrip(t *testing.T) {
	e := testMailEnv(t)
	startGW(t, e, gwOpts{})
	a := dialUser(t, e, "user17", "a.test")
	b := dialUser(t, e, "user18", "b.test")
	run := xmpptest.RandomID()[:6]
	subject := "Round trip " + run
	thread := "client-thread-" + run

	msg := core.NewElement("", "message", "to", `user18\40b.test@email.a.test`, "type", "chat", "id", "rt-"+run)
	msg.AddText("", "subject", subject)
	msg.AddText("", "body", "Hello B,\nthis is A. "+run)
	msg.AddText("", "thread", thread)
	a.Send(msg)

	got := b.Expect(wait, "A's mail at B", isChatFrom(`user17\40a.test@email.b.test`))
	if got.ChildText("", "subject") != subject || got.ChildText("", "body") != "Hello B,\nthis is A. "+run {
		t.Fatalf("B got %s", got)
	}
	bThread := got.ChildText("", "thread")
	if bThread == "" {
		t.Fatalf("no thread: %s", got)
	}
	if got.Child("urn:xmpp:delay", "delay") == nil {
		t.Errorf("no delay stamp: %s", got)
	}

	reply := core.NewElement("", "message", "to", `user17\40a.test@email.b.test`, "type", "chat", "id", "rt-answer-"+run)
	reply.AddText("", "body", "Hi A, got it. "+run)
	reply.AddText("", "thread", bThread)
	b.Send(reply)

	ans := a.Expect(wait, "B's answer at A", isChatFrom(`user18\40b.test@email.a.test`))
	if ans.ChildText("", "thread") != thread {
		t.Errorf("answer in thread %q, want %q", ans.ChildText("", "thread"), thread)
	}
	if ans.ChildText("", "subject") != "Re: "+subject || ans.ChildText("", "body") != "Hi A, got it. "+run {
		t.Errorf("answer = %s", ans)
	}

	// Over IMAP: A's mail is in A's Sent; B's answer In-Reply-To it.
	ic := imapDial(t, e, "user17@a.test")
	sent := findMail(t, ic, "Sent", subject)
	if len(sent) != 1 {
		t.Fatalf("%d copies of A's mail in Sent", len(sent))
	}
	inbox := findMail(t, ic, "INBOX", "Re: "+subject)
	if len(inbox) != 1 {
		t.Fatalf("%d answers in A's INBOX", len(inbox))
	}
	if inbox[0].InReplyTo != sent[0].MessageID || len(inbox[0].References) == 0 || inbox[0].References[0] != sent[0].MessageID {
		t.Errorf("answer In-Reply-To %q References %q, A's mail is %q", inbox[0].InReplyTo, inbox[0].References, sent[0].MessageID)
	}
	if !strings.Contains(sent[0].RawFrom, "Content-Transfer-Encoding: quoted-printable") || !strings.Contains(sent[0].RawFrom, "charset=utf-8") {
		t.Errorf("A's mail is not UTF-8 quoted-printable text:\n%s", sent[0].RawFrom)
	}

	// (Read markers and receipts setting \Seen: TestReadMarkers.)

	// Header injection: CR/LF in a subject never reaches the wire raw.
	evil := core.NewElement("", "message", "to", `user18\40b.test@email.a.test`, "type", "chat", "id", "evil-"+run)
	evil.AddText("", "subject", "evil "+run+"\nBcc: user19@a.test\r\nX-Injected: yes")
	evil.AddText("", "body", "body\r\n.\r\nMAIL FROM:<x@y>\n")
	a.Send(evil)
	got = b.Expect(wait, "the evil mail at B", isChatFrom(`user17\40a.test@email.b.test`))
	if s := got.ChildText("", "subject"); s != "evil "+run+" Bcc: user19@a.test X-Injected: yes" {
		t.Errorf("subject = %q", s)
	}
	bc := imapDial(t, e, "user18@b.test")
	mails := findMail(t, bc, "INBOX", "evil "+run)
	if len(mails) != 1 {
		t.Fatalf("%d evil mails", len(mails))
	}
	hdr, _, _ := strings.Cut(mails[0].RawFrom, "\r\n\r\n")
	if regexp.MustCompile(`(?im)^(bcc|x-injected):`).MatchString(hdr) {
		t.Errorf("injected header reached the wire:\n%s", hdr)
	}
}

// TestAttachmentLink: an HTML mail with an attachment, injected over SMTP,
// arrives as text with a working link; unknown and expired links are 404.
func TestAttachmentLink(t *testing.T) {
	e := testMailEnv(t)
	g := startGW(t, e, gwOpts{})
	c := dialUser(t, e, "user19", "a.test")
	run := xmpptest.RandomID()[:6]
	payload := bytes.Repeat([]byte("PDF-bytes-"+run+"\x00\xff"), 500)
	raw := crlf(`From: "Jane Doe" <jane@example.org>
To: user19@a.test
Subject: Report ` + run + `
Message-ID: <report-` + run + `@example.org>
Date: ` + time.Now().Format(time.RFC1123Z) + `
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/html; charset=utf-8

<html><body><p>Hello <b>you</b>, see <a href="https://example.org/r">the report</a>.</p><img src="https://tracker.example/x.gif"></body></html>
--b1
Content-Type: application/pdf; name="report.pdf"
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64

` + wrap76(base64.StdEncoding.EncodeToString(payload)) + `
--b1--
`)
	if err := smtpInject(e.smtp, "jane@example.org", "user19@a.test", raw); err != nil {
		t.Fatal(err)
	}
	m := c.Expect(wait, "the mail", isChatFrom(`jane\40example.org@email.a.test`))
	body := m.ChildText("", "body")
	if !strings.HasPrefix(body, "Hello *you*, see the report (https://example.org/r).") || strings.Contains(body, "<") || strings.Contains(body, "tracker") {
		t.Errorf("body = %q", body)
	}
	if m.ChildText("http://jabber.org/protocol/nick", "nick") != "Jane Doe" || m.ChildText("", "subject") != "Report "+run {
		t.Errorf("message = %s", m)
	}
	oob := m.Child(nsOOB, "x")
	if oob == nil {
		t.Fatalf("no attachment link: %s", m)
	}
	link := oob.ChildText("", "url")
	if !strings.HasPrefix(link, g.httpURL+"/email/a.test/att/") || !strings.Contains(body, link) {
		t.Fatalf("link %q (body %q)", link, body)
	}
	get := func(u string) (int, []byte) {
		res, err := http.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, b
	}
	code, got := get(link)
	if code != 200 || !bytes.Equal(got, payload) {
		t.Fatalf("GET %s: %d, %d bytes (want %d)", link, code, len(got), len(payload))
	}
	// Forged, unknown and expired links are 404.
	i := strings.Index(link, "/att/") + len("/att/")
	forged := link[:len(link)-len("report.pdf")-3] + "AAA/report.pdf"
	for _, u := range []string{forged, link[:i] + "999999/abc.def/x", g.httpURL + "/email/a.test/att/"} {
		if code, _ := get(u); code != 404 {
			t.Errorf("GET %s: %d, want 404", u, code)
		}
	}
	time.Sleep(7 * time.Second) // attachment_ttl = 6s
	if code, _ := get(link); code != 404 {
		t.Errorf("expired link: %d, want 404", code)
	}
}

func wrap76(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\n")
		s = s[76:]
	}
	b.WriteString(s)
	return b.String()
}

// TestRegistrationErrors: a refused login is not-authorized, a closed port
// remote-server-not-found, and nothing is stored.
func TestRegistrationErrors(t *testing.T) {
	e := testMailEnv(t)
	g := startGW(t, e, gwOpts{})
	c := xmpptest.Dial(t, e.xmpp, "user16@a.test", false)
	waitComponent(t, c, "email.a.test")
	closed := freePort(t)
	_, closedPort, _ := net.SplitHostPort(closed)
	for _, tc := range []struct {
		name   string
		fields map[string]string
		cond   string
		has    string
	}{
		{"wrong password", map[string]string{"email": "user16@a.test", "password": "wrong"}, "not-authorized", "refused the login"},
		{"closed IMAP port", map[string]string{"email": "user16@a.test", "password": e.password, "imap_port": closedPort}, "remote-server-not-found", "does not answer"},
		{"closed SMTP port", map[string]string{"email": "user16@a.test", "password": e.password, "smtp_port": closedPort}, "remote-server-not-found", "does not answer"},
		{"not an address", map[string]string{"email": "user16", "password": e.password}, "not-acceptable", "E-mail address"},
	} {
		res := c.IQ(registerIQ("email.a.test", tc.fields))
		if xmpptest.Condition(res) != tc.cond || !strings.Contains(xmpptest.ErrorText(res), tc.has) {
			t.Errorf("%s: %s %q, want %s with %q", tc.name, xmpptest.Condition(res), xmpptest.ErrorText(res), tc.cond, tc.has)
		}
	}
	if _, err := g.st.GetAccount(context.Background(), "a.test", "email", "user16@a.test"); err == nil {
		t.Error("a refused registration was stored")
	}
}

// TestRestartExactlyOnce: mail keeps arriving while the gateway restarts
// (same database) and Dovecot restarts; every mail is delivered once.
func TestRestartExactlyOnce(t *testing.T) {
	e := testMailEnv(t)
	if e.script == "" {
		xmpptest.Missing(t, "TRANSPORTD_TEST_ENV_SCRIPT not set: cannot restart Dovecot")
	}
	saved := backoffMin
	backoffMin = 200 * time.Millisecond
	defer func() { backoffMin = saved }()
	httpAddr := freePort(t)
	// Between the gateway and Dovecot, a proxy that the test can cut: a
	// Dovecot restart does not always end its IMAP processes.
	px := newProxy(t, e.imap)
	g := startGW(t, e, gwOpts{httpAddr: httpAddr, imapAddr: px.addr()})
	c := dialUser(t, e, "user20", "a.test")
	run := xmpptest.RandomID()[:6]
	const n = 30
	var mu sync.Mutex
	injected := 0
	injectDone := make(chan struct{})
	go func() {
		defer close(injectDone)
		for i := 0; i < n; i++ {
			raw := crlf(fmt.Sprintf("From: feed@example.org\nTo: user20@a.test\nSubject: seq %s %02d\nMessage-ID: <seq-%s-%d@example.org>\n\nmail %d\n", run, i, run, i, i))
			for try := 0; ; try++ {
				if err := lmtpDeliver(e.lmtp, "user20@a.test", raw); err == nil {
					break
				} else if try > 300 {
					t.Errorf("mail %d not injected: %v", i, err)
					return
				}
				time.Sleep(100 * time.Millisecond) // Dovecot restarting: an MTA would retry too
			}
			mu.Lock()
			injected++
			mu.Unlock()
			time.Sleep(150 * time.Millisecond)
		}
	}()
	seen := map[string]int{}
	collect := func(d time.Duration) {
		deadline := time.Now().Add(d)
		for time.Now().Before(deadline) {
			el, err := c.Next(time.Until(deadline), isChatFrom(`feed\40example.org@email.a.test`))
			if err != nil {
				return
			}
			if subj := el.ChildText("", "subject"); strings.HasPrefix(subj, "seq "+run+" ") {
				seen[subj]++
			}
		}
	}
	collect(1500 * time.Millisecond)
	// Restart the gateway on the same database.
	g.stop()
	time.Sleep(500 * time.Millisecond)
	g = startGW(t, e, gwOpts{dir: g.dir, httpAddr: httpAddr, imapAddr: px.addr()})
	collect(2 * time.Second)
	// Restart Dovecot, with the connections to it cut and refused
	// meanwhile (a server outage).
	px.setDown(true)
	out, err := runScript(e.script, "restart", "dovecot")
	if err != nil {
		t.Fatalf("restart dovecot: %v\n%s", err, out)
	}
	collect(2 * time.Second)
	px.setDown(false)
	<-injectDone
	collect(12 * time.Second)
	// Exactly once: as many messages as mails in the mailbox (an LMTP
	// delivery retried across the restart may have stored a mail twice).
	ic := imapDial(t, e, "user20@a.test")
	for i := 0; i < n; i++ {
		s := fmt.Sprintf("seq %s %02d", run, i)
		copies := len(findMail(t, ic, "INBOX", s))
		if copies == 0 || seen[s] != copies {
			t.Errorf("%q delivered %d times; in the mailbox %d times", s, seen[s], copies)
		}
	}
	if len(seen) != n {
		t.Errorf("%d distinct mails delivered, want %d: %v", len(seen), n, seen)
	}
}

// smtpInject hands one mail to the MTA (OpenSMTPD), as mail from outside.
func smtpInject(addr, from, rcpt, raw string) error {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	return deliver(smtp.NewClient(conn), from, rcpt, raw)
}

// lmtpDeliver delivers one mail straight into Dovecot.
func lmtpDeliver(addr, rcpt, raw string) error {
	conn, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	return deliver(smtp.NewClientLMTP(conn), "feed@example.org", rcpt, raw)
}

func deliver(c *smtp.Client, from, rcpt, raw string) error {
	defer c.Close()
	if err := c.Hello("test.local"); err != nil {
		return err
	}
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	if err := c.Rcpt(rcpt, nil); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := io.WriteString(w, raw); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return c.Quit()
}

// proxy forwards TCP connections to a server; setDown(true) cuts the open
// ones and refuses new ones, as a server outage would.
type proxy struct {
	t      testing.TB
	ln     net.Listener
	target string

	mu    sync.Mutex
	down  bool
	conns []net.Conn
}

func newProxy(t testing.TB, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{t: t, ln: ln, target: target}
	t.Cleanup(func() { ln.Close(); p.setDown(true) })
	go p.serve()
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		down := p.down
		p.mu.Unlock()
		if down {
			c.Close()
			continue
		}
		u, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, c, u)
		p.mu.Unlock()
		go func() { _, _ = io.Copy(u, c); u.Close() }()
		go func() { _, _ = io.Copy(c, u); c.Close() }()
	}
}
