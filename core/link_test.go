package core_test

import (
	"bytes"
	"crypto/sha1"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"transportd/core"
	"transportd/core/config"
	"transportd/internal/xmpptest"
)

// fakeServer is an in-process XEP-0114 server, for what a real server will
// not do on demand: send bad XML, huge or deep stanzas, comments, refuse the
// secret.
type fakeServer struct {
	ln       net.Listener
	secret   string
	accepted atomic.Int32
	conns    chan *fakeConn
	// greet is written in the same write as the handshake's answer.
	greet string
}

type fakeConn struct {
	net.Conn
	dec *xml.Decoder
}

func newFakeServer(t *testing.T, secret string) *fakeServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &fakeServer{ln: ln, secret: secret, conns: make(chan *fakeConn, 16)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.accepted.Add(1)
			go s.handshake(c)
		}
	}()
	return s
}

func (s *fakeServer) handshake(c net.Conn) {
	dec := xml.NewDecoder(c)
	for {
		tok, err := dec.Token()
		if err != nil {
			c.Close()
			return
		}
		if st, ok := tok.(xml.StartElement); ok && st.Name.Local == "stream" {
			break
		}
	}
	const id = "fakestream1"
	fmt.Fprintf(c, `<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:component:accept' from='echo5.a.test' id='%s'>`, id)
	var hs struct {
		Text string `xml:",chardata"`
	}
	for {
		tok, err := dec.Token()
		if err != nil {
			c.Close()
			return
		}
		if st, ok := tok.(xml.StartElement); ok && st.Name.Local == "handshake" {
			if err := dec.DecodeElement(&hs, &st); err != nil {
				c.Close()
				return
			}
			break
		}
	}
	want := fmt.Sprintf("%x", sha1.Sum([]byte(id+s.secret)))
	if hs.Text != want {
		fmt.Fprint(c, `<stream:error><not-authorized xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error></stream:stream>`)
		c.Close()
		return
	}
	fmt.Fprint(c, `<handshake/>`+s.greet)
	s.conns <- &fakeConn{Conn: c, dec: dec}
}

func (s *fakeServer) next(t *testing.T) *fakeConn {
	t.Helper()
	select {
	case c := <-s.conns:
		t.Cleanup(func() { c.Close() })
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("the gateway did not connect to the fake server")
		return nil
	}
}

// read returns the next stanza the gateway wrote.
func (c *fakeConn) read(t *testing.T) *core.Element {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	el, err := core.ElementFromTokens(c.dec)
	if err != nil {
		t.Fatalf("reading from the gateway: %v", err)
	}
	return el
}

// readIQ skips presence and other stanzas until an IQ with the id.
func (c *fakeConn) readIQ(t *testing.T, id string) *core.Element {
	t.Helper()
	for {
		el := c.read(t)
		if el.Name.Local == "iq" && el.Get("id") == id {
			return el
		}
	}
}

func fakeGateway(t *testing.T, addr, secret string) *gateway {
	t.Helper()
	return fakeGatewayWith(t, addr, secret, "echo")
}

// fakeGatewayWith is fakeGateway for another test transport.
func fakeGatewayWith(t *testing.T, addr, secret, transport string) *gateway {
	t.Helper()
	dir := t.TempDir()
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	os.WriteFile(filepath.Join(dir, "key"), []byte(key), 0o600)
	os.WriteFile(filepath.Join(dir, "secret"), []byte(secret), 0o600)
	cfg, err := config.Parse([]byte(fmt.Sprintf(`
[xmpp]
component_addr = %q
reconnect_min = "100ms"
reconnect_max = "1s"
max_stanza_bytes = 20000
max_stanza_depth = 16
[store]
path = "t.db"
key_file = "key"
[domains."a.test"]
[domains."a.test".transports.%s]
jid = "echo5.a.test"
secret_file = "secret"
`, addr, transport)), dir, core.Transports())
	if err != nil {
		t.Fatal(err)
	}
	return startGateway(t, cfg, filepath.Join(dir, "t.db"))
}

func TestLinkSurvivesHostileStanzas(t *testing.T) {
	srv := newFakeServer(t, "s3")
	fakeGateway(t, srv.ln.Addr().String(), "s3")
	c := srv.next(t)

	for _, tc := range []struct {
		name, raw, id, cond string
	}{
		{"iq get without payload", `<iq type='get' id='a1' from='u@a.test/r' to='echo5.a.test'/>`, "a1", "bad-request"},
		{"iq with invalid type", `<iq type='nonsense' id='a2' from='u@a.test/r' to='echo5.a.test'><ping xmlns='urn:xmpp:ping'/></iq>`, "a2", "bad-request"},
		{"deep stanza", `<iq type='get' id='a3' from='u@a.test/r' to='echo5.a.test'><query xmlns='jabber:iq:version'>` + strings.Repeat("<x>", 40) + strings.Repeat("</x>", 40) + `</query></iq>`, "a3", "policy-violation"},
		{"huge stanza", `<iq type='get' id='a4' from='u@a.test/r' to='echo5.a.test'><query xmlns='jabber:iq:version'>` + strings.Repeat("<x>aaaaaaaaaaaaaaaaaaaaaaaa</x>", 2000) + `</query></iq>`, "a4", "policy-violation"},
		{"bad from", `<iq type='get' id='a5' from='@@' to='echo5.a.test'><ping xmlns='urn:xmpp:ping'/></iq>`, "a5", "jid-malformed"},
		{"foreign user domain", `<iq type='get' id='a6' from='u@evil.example/r' to='echo5.a.test'><ping xmlns='urn:xmpp:ping'/></iq>`, "a6", "forbidden"},
	} {
		if _, err := c.Write([]byte(tc.raw)); err != nil {
			t.Fatal(err)
		}
		res := c.readIQ(t, tc.id)
		if res.Get("type") != "error" || conditionOf(res) != tc.cond {
			t.Errorf("%s: got %s, want error %s", tc.name, res, tc.cond)
		}
		if res.Get("from") == "" || !strings.HasSuffix(res.Get("from"), "echo5.a.test") {
			t.Errorf("%s: reply from %q is not at the component", tc.name, res.Get("from"))
		}
	}
	// The same connection still serves.
	fmt.Fprint(c, `<iq type='get' id='b1' from='u@a.test/r' to='echo5.a.test'><ping xmlns='urn:xmpp:ping'/></iq>`)
	if res := c.readIQ(t, "b1"); res.Get("type") != "result" {
		t.Errorf("ping after hostile input: %s", res)
	}
	if n := srv.accepted.Load(); n != 1 {
		t.Errorf("the gateway reconnected %d times; hostile stanzas must not end the stream", n-1)
	}
}

// A stanza the server sends in the same packet as the handshake's answer is
// read: mellium reads the handshake, the gateway's reader the rest.
func TestLinkReadsStanzaBehindHandshake(t *testing.T) {
	srv := newFakeServer(t, "s3")
	srv.greet = `<iq type='get' id='early' from='u@a.test/r' to='echo5.a.test'><ping xmlns='urn:xmpp:ping'/></iq>`
	fakeGateway(t, srv.ln.Addr().String(), "s3")
	c := srv.next(t)
	if res := c.readIQ(t, "early"); res.Get("type") != "result" {
		t.Errorf("ping sent with the handshake: %s", res)
	}
}

func TestLinkReconnectsAfterBadXMLAndComments(t *testing.T) {
	srv := newFakeServer(t, "s3")
	fakeGateway(t, srv.ln.Addr().String(), "s3")
	for i, raw := range []string{
		`<iq type='get' id='x' from='u@a.test/r' to='echo5.a.test'><ping xmlns='urn:xmpp:ping'></iq>`,
		`<!-- a comment -->`,
		`<?pi target?>`,
		`<!DOCTYPE foo>`,
	} {
		c := srv.next(t)
		fmt.Fprint(c, raw)
		// The gateway drops this stream and comes back on a new one.
		c2 := srv.next(t)
		fmt.Fprintf(c2, `<iq type='get' id='p%d' from='u@a.test/r' to='echo5.a.test'><ping xmlns='urn:xmpp:ping'/></iq>`, i)
		if res := c2.readIQ(t, fmt.Sprintf("p%d", i)); res.Get("type") != "result" {
			t.Errorf("after %q: %s", raw, res)
		}
		srv.conns <- c2 // reuse as the next round's connection
	}
}

func TestLinkBacksOffOnWrongSecret(t *testing.T) {
	srv := newFakeServer(t, "right")
	fakeGateway(t, srv.ln.Addr().String(), "wrong")
	time.Sleep(3 * time.Second)
	// With 100ms doubling to 1s: about 5 attempts in 3s; a tight loop would
	// make hundreds.
	if n := srv.accepted.Load(); n < 2 || n > 8 {
		t.Errorf("%d connection attempts in 3s with a refused secret; want a few, backing off", n)
	}
}

func conditionOf(el *core.Element) string {
	e := el.Child("", "error")
	if e == nil {
		return ""
	}
	for _, c := range e.Children {
		if c.Name.Local != "text" {
			return c.Name.Local
		}
	}
	return ""
}

// TestSecondInstanceConflict starts two gateways with the same component
// JID against Prosody: the second is refused and backs off instead of
// hammering the server, and the first keeps serving.
func TestSecondInstanceConflict(t *testing.T) {
	env := xmpptest.Prosody(t)
	testGateway(t, env, "echo3", "")
	c := xmpptest.Dial(t, env, "user15@a.test", false)
	waitConnected(t, c, "echo3.a.test")
	second := testGateway(t, env, "echo3", "")
	time.Sleep(3 * time.Second)
	logs := second.logs.String()
	attempts := strings.Count(logs, "component link down")
	if attempts == 0 || !strings.Contains(strings.ToLower(logs), "conflict") {
		t.Errorf("the second instance was not refused with a conflict:\n%s", logs)
	}
	// reconnect_min 200ms doubling to 2s: at most a handful in 3s.
	if attempts > 8 {
		t.Errorf("%d attempts in 3s: the second instance hammers the server", attempts)
	}
	waitConnected(t, c, "echo3.a.test")
}
