package email

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// Legacy server faults: an IMAP server whose socket goes silent (no FIN,
// no RST), one that answers slowly, one that does not speak TLS, and one
// whose certificate does not verify. Each is detected by the keepalive or a
// timeout, shown to the user as the gateway's presence (xa with the
// reason while retrying, dnd when it will not retry) and retried with
// backoff. The IMAP servers are in-process (imapmemserver) behind a fault
// proxy; the gateway and the user are real (Prosody). The transport's
// timeouts are package variables: the tests shorten them.

// shortTimeouts sets the transport's timeouts for a fault test and puts
// them back after it.
func shortTimeouts(t *testing.T, ka, cmd, dial time.Duration) {
	saved := []time.Duration{keepalive, cmdTimeout, dialTimeout, backoffMin, backoffMax}
	keepalive, cmdTimeout, dialTimeout = ka, cmd, dial
	backoffMin, backoffMax = 200*time.Millisecond, 2*time.Second
	t.Cleanup(func() {
		keepalive, cmdTimeout, dialTimeout, backoffMin, backoffMax = saved[0], saved[1], saved[2], saved[3], saved[4]
	})
}

// wireLog keeps what an IMAP server read, to prove what the gateway sent.
type wireLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *wireLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *wireLog) count(s string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Count(strings.ToUpper(w.buf.String()), strings.ToUpper(s))
}

// faultIMAP is an in-process IMAP server with the mailbox jane@x.test
// (password pw).
type faultIMAP struct {
	addr string
	user *imapmemserver.User
	wire *wireLog
}

type imapOpts struct {
	idle        bool
	implicitTLS *tls.Config // serve TLS from the first byte
	startTLS    *tls.Config // offer STARTTLS (nil: not offered)
}

func newFaultIMAP(t *testing.T, o imapOpts) *faultIMAP {
	t.Helper()
	mem := imapmemserver.New()
	user := imapmemserver.NewUser("jane@x.test", "pw")
	if err := user.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(user)
	caps := imap.CapSet{imap.CapIMAP4rev1: {}}
	if o.idle {
		caps[imap.CapIdle] = struct{}{}
	}
	f := &faultIMAP{user: user, wire: &wireLog{}}
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         caps,
		InsecureAuth: true,
		TLSConfig:    o.startTLS,
		Logger:       nopLogger{},
		DebugWriter:  f.wire,
	})
	var ln net.Listener
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = ln.Addr().String()
	if o.implicitTLS != nil {
		ln = tls.NewListener(ln, o.implicitTLS)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return f
}

// appendMail stores a mail in jane's INBOX (straight, not through the
// proxy).
func (f *faultIMAP) appendMail(t *testing.T, subject string) {
	f.appendMailAs(t, "jane@x.test", "pw", subject)
}

func (f *faultIMAP) appendMailAs(t *testing.T, user, password, subject string) {
	t.Helper()
	c, err := imapclient.DialInsecure(f.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login(user, password).Wait(); err != nil {
		t.Fatal(err)
	}
	raw := crlf("From: bob@y.example\nSubject: " + subject + "\nMessage-ID: <" + subject + "@y.example>\n\nbody\n")
	cmd := c.Append("INBOX", int64(len(raw)), nil)
	if _, err := cmd.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

// selfSigned returns a server TLS configuration with a certificate for
// 127.0.0.1 that no client trusts.
func selfSigned(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "imap.fault.test"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:     []string{"imap.fault.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// proxyMode is what the fault proxy does with the bytes.
type proxyMode int

const (
	pass      proxyMode = iota
	blackhole           // forward nothing, close nothing: a silently dead path
	slow                // delay what the server sends by the proxy's delay
)

// faultProxy forwards TCP connections to a target and can go silent or
// slow; it records when each connection was accepted.
type faultProxy struct {
	ln net.Listener

	mu      sync.Mutex
	target  string
	mode    proxyMode
	delay   time.Duration
	conns   []net.Conn
	accepts []time.Time
}

func newFaultProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{ln: ln, target: target}
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	go p.serve()
	return p
}

func (p *faultProxy) addr() string { return p.ln.Addr().String() }

func (p *faultProxy) set(m proxyMode, delay time.Duration) {
	p.mu.Lock()
	p.mode, p.delay = m, delay
	p.mu.Unlock()
}

func (p *faultProxy) setTarget(target string) {
	p.mu.Lock()
	p.target = target
	p.mu.Unlock()
}

// cut closes the open connections (with a FIN): the gateway reconnects.
func (p *faultProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}

// acceptsSince returns the times of the connections accepted since t.
func (p *faultProxy) acceptsSince(t time.Time) []time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Time
	for _, a := range p.accepts {
		if a.After(t) {
			out = append(out, a)
		}
	}
	return out
}

func (p *faultProxy) state() (proxyMode, time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mode, p.delay
}

func (p *faultProxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.accepts = append(p.accepts, time.Now())
		p.conns = append(p.conns, c)
		mode, target := p.mode, p.target
		p.mu.Unlock()
		if mode == blackhole {
			// Accepted (the kernel would have answered the SYN), then
			// nothing: no greeting, no FIN.
			go func() { _, _ = io.Copy(io.Discard, c) }()
			continue
		}
		u, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, u)
		p.mu.Unlock()
		go p.forward(u, c, false)
		go p.forward(c, u, true)
	}
}

// forward copies src to dst, chunk by chunk, as the proxy's mode says at
// that moment.
func (p *faultProxy) forward(dst, src net.Conn, fromServer bool) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			mode, delay := p.state()
			switch {
			case mode == blackhole:
				continue // dropped on the floor; the sender is not told
			case mode == slow && fromServer:
				time.Sleep(delay)
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// faultGateway starts a gateway whose e-mail transport reads IMAP at
// imapAddr (and submits to an in-process SMTP server), with extra
// transport defaults, and logs userJID in. The user is not registered yet.
func faultGateway(t *testing.T, imapAddr, extra, userJID string, o gwOpts) (*testGW, *xmpptest.Client) {
	t.Helper()
	x := xmpptest.Prosody(t)
	_, sv := startFakeSMTP(t)
	e := mailEnv{xmpp: x, imap: imapAddr, smtp: sv.addr()}
	o.extra = extra
	g := startGW(t, e, o)
	c := xmpptest.Dial(t, x, userJID, false)
	waitComponent(t, c, "email.a.test")
	return g, c
}

// gwPresence waits for the gateway's presence with the given show ("" for
// available) and returns it.
func gwPresence(t *testing.T, c *xmpptest.Client, d time.Duration, show string) *core.Element {
	t.Helper()
	return c.Expect(d, "gateway presence show="+strconv.Quote(show), func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", "email.a.test", "")(el) && el.ChildText("", "show") == show
	})
}

// drainPresence drops the gateway presences already received.
func drainPresence(c *xmpptest.Client) {
	for {
		if _, err := c.Next(10*time.Millisecond, xmpptest.IsFrom("presence", "email.a.test", "*")); err != nil {
			return
		}
	}
}

// assertBackoff checks that reconnection attempts during an outage back off:
// not a tight loop, and later gaps longer than the first.
func assertBackoff(t *testing.T, attempts []time.Time, within time.Duration) {
	t.Helper()
	if len(attempts) < 3 {
		t.Fatalf("%d reconnection attempts in %v: the gateway does not retry", len(attempts), within)
	}
	var gaps []time.Duration
	for i := 1; i < len(attempts); i++ {
		gaps = append(gaps, attempts[i].Sub(attempts[i-1]))
	}
	t.Logf("reconnection attempts %d apart by %v", len(attempts), gaps)
	if maxAttempts := int(within / (backoffMin / 2)); len(attempts) >= maxAttempts {
		t.Errorf("%d attempts in %v: no backoff", len(attempts), within)
	}
	if last := gaps[len(gaps)-1]; last < gaps[0]+backoffMin/2 {
		t.Errorf("gaps %v do not grow: no backoff", gaps)
	}
}

// TestFaultSilentDrop: the path to the IMAP server goes silent while the
// session idles (no FIN, no RST: a NAT that forgot the connection, a dead
// link). The keepalive's NOOP gets no answer within cmdTimeout, the
// connection is dropped, the user sees xa with the reason; reconnecting
// backs off while the path stays dead, and once it is back, the session
// reconnects and delivers the mail that arrived meanwhile.
func TestFaultSilentDrop(t *testing.T) {
	shortTimeouts(t, 700*time.Millisecond, time.Second, time.Second)
	srv := newFaultIMAP(t, imapOpts{idle: true})
	px := newFaultProxy(t, srv.addr)
	_, c := faultGateway(t, px.addr(), "", "user27@a.test", gwOpts{})
	register(t, c, "email.a.test", map[string]string{"email": "jane@x.test", "password": "pw"})
	drainPresence(c)
	logins := srv.wire.count("LOGIN")

	px.set(blackhole, 0)
	start := time.Now()
	p := gwPresence(t, c, 10*time.Second, "xa")
	took := time.Since(start)
	status := p.ChildText("", "status")
	t.Logf("silent drop detected in %v: %q", took, status)
	if !strings.Contains(status, "no answer within") {
		t.Errorf("status %q does not say the server stopped answering", status)
	}
	if limit := keepalive + cmdTimeout + 2*time.Second; took > limit {
		t.Errorf("detected after %v, want within keepalive+timeout (%v)", took, limit)
	}
	// Retried with backoff while the path stays dead (each attempt ends
	// on the missing greeting after dialTimeout).
	outage := time.Now()
	srv.appendMail(t, "during-outage")
	time.Sleep(7 * time.Second)
	assertBackoff(t, px.acceptsSince(outage), 7*time.Second)
	if n := srv.wire.count("LOGIN") - logins; n != 1 { // the test's own APPEND
		t.Errorf("%d LOGIN commands reached the server through a dead path", n-1)
	}

	px.set(pass, 0)
	gwPresence(t, c, 10*time.Second, "")
	m := c.Expect(wait, "the mail that arrived during the outage", isChatFrom(`bob\40y.example@email.a.test`))
	if m.ChildText("", "subject") != "during-outage" {
		t.Errorf("got %s", m)
	}
}

// TestFaultSlowServer: a server that answers slowly but within the
// timeouts is used as it is; one that becomes slower than cmdTimeout is
// dropped at the next keepalive (xa with the reason), reconnection backs
// off while the greeting takes longer than dialTimeout, and the session
// comes back when the server is fast again.
func TestFaultSlowServer(t *testing.T) {
	shortTimeouts(t, 700*time.Millisecond, time.Second, time.Second)
	srv := newFaultIMAP(t, imapOpts{idle: true})
	px := newFaultProxy(t, srv.addr)
	px.set(slow, 150*time.Millisecond)
	_, c := faultGateway(t, px.addr(), "", "user28@a.test", gwOpts{})
	register(t, c, "email.a.test", map[string]string{"email": "jane@x.test", "password": "pw"})
	// Slow but within the bounds: several keepalives pass, still connected.
	if el, err := c.Next(3*time.Second, func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", "email.a.test", "")(el) && el.ChildText("", "show") == "xa"
	}); err == nil {
		t.Fatalf("a server answering in 150ms was taken for dead: %s", el)
	}
	drainPresence(c)

	px.set(slow, 3*time.Second)
	start := time.Now()
	p := gwPresence(t, c, 10*time.Second, "xa")
	t.Logf("slow server detected in %v: %q", time.Since(start), p.ChildText("", "status"))
	if s := p.ChildText("", "status"); !strings.Contains(s, "no answer within") && !strings.Contains(s, "does not greet") {
		t.Errorf("status %q does not say the server is too slow", s)
	}
	outage := time.Now()
	time.Sleep(6 * time.Second)
	assertBackoff(t, px.acceptsSince(outage), 6*time.Second)

	px.set(pass, 0)
	gwPresence(t, c, 10*time.Second, "")
}

// TestFaultNoTLS: a server that does not speak TLS where TLS was asked
// for. Implicit TLS to a plain-text port, and STARTTLS on a server that
// does not offer it, are refused at registration, and never fall back to
// sending the password in clear. A server that stops speaking TLS after
// registration (a misconfiguration, or someone in the middle) is a
// transient failure shown as xa, retried with backoff, without a login in
// clear either.
func TestFaultNoTLS(t *testing.T) {
	shortTimeouts(t, 700*time.Millisecond, time.Second, time.Second)
	plain := newFaultIMAP(t, imapOpts{idle: true})
	secure := newFaultIMAP(t, imapOpts{idle: true, implicitTLS: selfSigned(t)})
	px := newFaultProxy(t, secure.addr)
	// tls_insecure: the operator's opt-out for the self-signed test
	// certificate; what is tested is a server without TLS.
	g, c := faultGateway(t, px.addr(), `tls_insecure = "true"`, "user29@a.test", gwOpts{})
	_, plainPort, _ := net.SplitHostPort(plain.addr)
	for _, tc := range []struct{ security, cond, has string }{
		{secTLS, "remote-server-not-found", "does not speak TLS on this port"},
		{secSTARTTLS, "", ""},
	} {
		res := c.IQ(registerIQ("email.a.test", map[string]string{
			"email": "jane@x.test", "password": "pw", "imap_port": plainPort, "imap_security": tc.security,
		}))
		cond, text := xmpptest.Condition(res), xmpptest.ErrorText(res)
		t.Logf("%s to a plain-text server: %s %q", tc.security, cond, text)
		if res.Get("type") != "error" {
			t.Fatalf("%s to a server without TLS was accepted", tc.security)
		}
		if tc.cond != "" && (cond != tc.cond || !strings.Contains(text, tc.has)) {
			t.Errorf("%s: %s %q, want %s with %q", tc.security, cond, text, tc.cond, tc.has)
		}
		if tc.security == secSTARTTLS && !strings.Contains(strings.ToUpper(text), "STARTTLS") {
			t.Errorf("STARTTLS refused, but the user is told %q", text)
		}
	}
	if n := plain.wire.count("LOGIN") + plain.wire.count("AUTHENTICATE"); n != 0 {
		t.Fatalf("the password was sent in clear to a server without TLS (%d times)", n)
	}

	// Registered over TLS, then the server stops speaking TLS.
	register(t, c, "email.a.test", map[string]string{"email": "jane@x.test", "password": "pw", "imap_security": secTLS})
	drainPresence(c)
	px.setTarget(plain.addr)
	px.cut()
	outage := time.Now()
	p := c.Expect(10*time.Second, "xa saying the server does not speak TLS", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", "email.a.test", "")(el) && el.ChildText("", "show") == "xa" &&
			strings.Contains(el.ChildText("", "status"), "does not speak TLS")
	})
	t.Logf("server without TLS after registration: %q", p.ChildText("", "status"))
	time.Sleep(6 * time.Second)
	assertBackoff(t, px.acceptsSince(outage), 6*time.Second)
	if n := plain.wire.count("LOGIN"); n != 0 {
		t.Fatalf("the password went in clear to the server that stopped speaking TLS")
	}
	px.setTarget(secure.addr)
	gwPresence(t, c, 10*time.Second, "")
	_ = g
}

// TestFaultBadCertificate: a server whose certificate does not verify is
// refused (not-acceptable, nothing stored, no login sent) unless the
// operator opted out (tls_insecure). A certificate that stops verifying
// after registration stops the session with the reason shown (dnd).
func TestFaultBadCertificate(t *testing.T) {
	shortTimeouts(t, 700*time.Millisecond, time.Second, time.Second)
	savedRetry := refusedRetry
	refusedRetry = 1500 * time.Millisecond
	t.Cleanup(func() { refusedRetry = savedRetry })
	srv := newFaultIMAP(t, imapOpts{idle: true, implicitTLS: selfSigned(t)})
	px := newFaultProxy(t, srv.addr) // counts the connections
	dir := t.TempDir()
	writeGWFiles(t, dir)
	httpAddr := freePort(t)
	g, c := faultGateway(t, px.addr(), "", "user29@a.test", gwOpts{dir: dir, httpAddr: httpAddr})
	fields := map[string]string{"email": "jane@x.test", "password": "pw", "imap_security": secTLS}
	res := c.IQ(registerIQ("email.a.test", fields))
	if xmpptest.Condition(res) != "not-acceptable" || !strings.Contains(xmpptest.ErrorText(res), "certificate that is not valid") {
		t.Errorf("unverifiable certificate: %s %q", xmpptest.Condition(res), xmpptest.ErrorText(res))
	}
	if n := srv.wire.count("LOGIN"); n != 0 {
		t.Errorf("LOGIN sent over a connection whose certificate does not verify")
	}
	if _, err := g.st.GetAccount(t.Context(), "a.test", "email", "user29@a.test"); err == nil {
		t.Error("a refused registration was stored")
	}
	g.stop()

	// The operator opts out for this gateway's mail servers.
	g = startGW(t, mailEnv{xmpp: xmpptest.Prosody(t), imap: px.addr(), smtp: smtpAddrOf(t)}, gwOpts{dir: dir, httpAddr: httpAddr, extra: `tls_insecure = "true"`})
	waitComponent(t, c, "email.a.test")
	register(t, c, "email.a.test", fields)
	logins := srv.wire.count("LOGIN")
	g.stop()
	drainPresence(c)

	// Without the opt-out again: the session refuses the server.
	startGW(t, mailEnv{xmpp: xmpptest.Prosody(t), imap: px.addr(), smtp: smtpAddrOf(t)}, gwOpts{dir: dir, httpAddr: httpAddr})
	p := c.Expect(15*time.Second, "the gateway's presence refusing the certificate", func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", "email.a.test", "")(el) && strings.Contains(el.ChildText("", "status"), "certificate")
	})
	t.Logf("certificate refused at session start: show %s %q", p.ChildText("", "show"), p.ChildText("", "status"))
	if show := p.ChildText("", "show"); show != "dnd" && show != "xa" {
		t.Errorf("presence %s: the user is not told the mailbox is unusable", p)
	}
	// The session is not given up: the server is tried again, rarely (a
	// renewed certificate is taken without the user registering again),
	// and still without a login.
	refused := time.Now()
	time.Sleep(4 * time.Second)
	tries := len(px.acceptsSince(refused))
	t.Logf("connections in the 4 s after the refusal (retry every %v): %d", refusedRetry, tries)
	if tries < 1 || tries > 4 {
		t.Errorf("%d connections in 4 s after the refusal, want a few (retried every %v)", tries, refusedRetry)
	}
	if n := srv.wire.count("LOGIN"); n != logins {
		t.Errorf("%d LOGIN sent over connections whose certificate does not verify", n-logins)
	}
}

// writeGWFiles writes the key and component secret startGW expects in a
// directory it is given.
func writeGWFiles(t *testing.T, dir string) {
	t.Helper()
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
	if err := os.WriteFile(filepath.Join(dir, "key"), []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "secret"), []byte(xmpptest.Prosody(t).Secret), 0o600); err != nil {
		t.Fatal(err)
	}
}

// smtpAddrOf starts an in-process SMTP server and returns its address.
func smtpAddrOf(t *testing.T) string {
	_, sv := startFakeSMTP(t)
	return sv.addr()
}

// TestFaultInsecureHost: the operator's opt-out is per host. A mail server
// named in tls_insecure_hosts is used despite its self-signed certificate;
// the same server is refused when only another host is named.
func TestFaultInsecureHost(t *testing.T) {
	shortTimeouts(t, 700*time.Millisecond, time.Second, time.Second)
	srv := newFaultIMAP(t, imapOpts{idle: true, implicitTLS: selfSigned(t)})
	host, _, _ := net.SplitHostPort(srv.addr)
	fields := map[string]string{"email": "jane@x.test", "password": "pw", "imap_security": secTLS}

	g, c := faultGateway(t, srv.addr, `tls_insecure_hosts = "mail.other.example, imap.x.test"`, "user29@a.test", gwOpts{})
	res := c.IQ(registerIQ("email.a.test", fields))
	if xmpptest.Condition(res) != "not-acceptable" || !strings.Contains(xmpptest.ErrorText(res), "certificate that is not valid") {
		t.Errorf("opt-out for other hosts only: %s %q, want not-acceptable about the certificate", xmpptest.Condition(res), xmpptest.ErrorText(res))
	}
	if n := srv.wire.count("LOGIN"); n != 0 {
		t.Errorf("LOGIN sent to a host the operator did not name")
	}
	g.stop()

	_, c = faultGateway(t, srv.addr, `tls_insecure_hosts = "mail.other.example, `+strings.ToUpper(host)+`"`, "user29@a.test", gwOpts{})
	register(t, c, "email.a.test", fields) // fails the test unless accepted
	if n := srv.wire.count("LOGIN"); n == 0 {
		t.Errorf("the named host was not logged in to")
	}
}
