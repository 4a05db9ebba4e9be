// Package xmpptest is the test side of transportd's integration tests: a
// real XMPP client (mellium) logged in to the test Prosody or ejabberd, and the
// environment the test servers were started with (scripts/testenv.sh).
package xmpptest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"mellium.im/sasl"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"

	"transportd/core"
)

// Env is the test environment started by scripts/testenv.sh.
type Env struct {
	C2S       string // host:port of the server's client port
	Component string // host:port of the server's component port
	Secret    string // component secret
	Password  string // password of the test users
	PIDFile   string
	Script    string // path to testenv.sh, for restarts
	Domain    string // the test users' domain (set by Ejabberd; Prosody serves a.test and b.test)
}

// Prosody returns the environment, or skips the test when the servers are
// not running — except under CI=true, where a missing server fails.
func Prosody(t testing.TB) Env {
	t.Helper()
	e := Env{
		C2S:       os.Getenv("TRANSPORTD_TEST_XMPP_C2S"),
		Component: os.Getenv("TRANSPORTD_TEST_XMPP_COMPONENT"),
		Secret:    os.Getenv("TRANSPORTD_TEST_COMPONENT_SECRET"),
		Password:  os.Getenv("TRANSPORTD_TEST_USER_PASSWORD"),
		PIDFile:   os.Getenv("TRANSPORTD_TEST_PROSODY_PIDFILE"),
		Script:    os.Getenv("TRANSPORTD_TEST_ENV_SCRIPT"),
	}
	if e.C2S == "" || e.Component == "" {
		Missing(t, "Prosody test environment not running; run `make test` or scripts/testenv.sh up and source its env")
	}
	return e
}

// Ejabberd returns the environment of the second XMPP server, ejabberd
// (scripts/testenv.sh up ejabberd: users user1..user10 at Domain, component
// JIDs NAME.Domain), or skips the test when it is not running — except under
// CI=true, where a missing server fails. C2S and Component are ejabberd's.
func Ejabberd(t testing.TB) Env {
	t.Helper()
	e := Env{
		C2S:       os.Getenv("TRANSPORTD_TEST_EJABBERD_C2S"),
		Component: os.Getenv("TRANSPORTD_TEST_EJABBERD_COMPONENT"),
		Secret:    os.Getenv("TRANSPORTD_TEST_EJABBERD_SECRET"),
		Password:  os.Getenv("TRANSPORTD_TEST_EJABBERD_PASSWORD"),
		PIDFile:   os.Getenv("TRANSPORTD_TEST_EJABBERD_PIDFILE"),
		Script:    os.Getenv("TRANSPORTD_TEST_ENV_SCRIPT"),
		Domain:    os.Getenv("TRANSPORTD_TEST_EJABBERD_DOMAIN"),
	}
	if e.C2S == "" || e.Component == "" || e.Domain == "" {
		Missing(t, "ejabberd test environment not running; run `make test` or scripts/testenv.sh up ejabberd and source its env")
	}
	return e
}

// Client is a logged-in XMPP client.
type Client struct {
	t    testing.TB
	JID  jid.JID
	sess *xmpp.Session

	mu      sync.Mutex
	backlog []*core.Element
	notify  chan struct{}
	closed  bool
	err     error
}

// Dial logs user@domain in, fetches the roster (so subscription requests are
// delivered) and sends initial presence unless silent.
func Dial(t testing.TB, env Env, user string, silent bool) *Client {
	t.Helper()
	c, err := DialErr(env, user, silent)
	if err != nil {
		t.Fatalf("login %s: %v", user, err)
	}
	c.t = t
	t.Cleanup(c.Close)
	return c
}

// DialErr is Dial returning the error (for benchmarks and loops).
func DialErr(env Env, user string, silent bool) (*Client, error) {
	j, err := jid.Parse(user)
	if err != nil {
		return nil, err
	}
	j, _ = j.WithResource("t" + RandomID()[:8])
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	conn, err := net.DialTimeout("tcp", env.C2S, 5*time.Second)
	if err != nil {
		return nil, err
	}
	// The test Prosody runs without TLS on loopback; marking the session
	// secure lets mellium offer SCRAM over it.
	sess, err := xmpp.NewSession(ctx, j.Domain(), j, conn, xmpp.Secure, xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
		return xmpp.StreamConfig{Features: []xmpp.StreamFeature{
			xmpp.SASL("", env.Password, sasl.ScramSha256, sasl.ScramSha1),
			xmpp.BindResource(),
		}}
	}))
	if err != nil {
		conn.Close()
		return nil, err
	}
	c := &Client{JID: sess.LocalAddr(), sess: sess, notify: make(chan struct{}, 1)}
	go c.read()
	roster := core.NewElement("", "iq", "type", "get", "id", RandomID())
	roster.Add(core.NewElement("jabber:iq:roster", "query"))
	if _, err := c.IQErr(roster, 10*time.Second); err != nil {
		c.Close()
		return nil, fmt.Errorf("roster: %w", err)
	}
	if !silent {
		if err := c.SendErr(core.NewElement("", "presence")); err != nil {
			c.Close()
			return nil, err
		}
	}
	return c, nil
}

func (c *Client) read() {
	r := c.sess.TokenReader()
	defer r.Close()
	for {
		el, err := core.ElementFromTokens(r)
		c.mu.Lock()
		if err != nil {
			c.closed, c.err = true, err
			c.mu.Unlock()
			select {
			case c.notify <- struct{}{}:
			default:
			}
			return
		}
		c.backlog = append(c.backlog, el)
		c.mu.Unlock()
		select {
		case c.notify <- struct{}{}:
		default:
		}
	}
}

// Close ends the session.
func (c *Client) Close() {
	_ = c.sess.Close()
	_ = c.sess.Conn().Close()
}

// Send writes a stanza.
func (c *Client) Send(el *core.Element) {
	c.t.Helper()
	if err := c.SendErr(el); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

// SendErr writes a stanza and returns the error.
func (c *Client) SendErr(el *core.Element) error {
	// No per-call deadline: cancelling one races mellium's write-deadline
	// goroutine and fails later writes with spurious timeouts.
	return c.sess.Send(context.Background(), el.TokenReader())
}

// SendRaw writes raw XML to the stream (for hostile input tests).
func (c *Client) SendRaw(s string) error {
	_, err := c.sess.Conn().Write([]byte(s))
	return err
}

// Next waits for the first stanza matching f, removing it from the backlog.
func (c *Client) Next(timeout time.Duration, f func(*core.Element) bool) (*core.Element, error) {
	deadline := time.After(timeout)
	for {
		c.mu.Lock()
		for i, el := range c.backlog {
			if f(el) {
				c.backlog = append(c.backlog[:i], c.backlog[i+1:]...)
				c.mu.Unlock()
				return el, nil
			}
		}
		closed, err := c.closed, c.err
		c.mu.Unlock()
		if closed {
			return nil, fmt.Errorf("stream closed: %v", err)
		}
		select {
		case <-c.notify:
		case <-deadline:
			return nil, fmt.Errorf("no matching stanza within %v; backlog: %s", timeout, c.dump())
		}
	}
}

// Expect is Next failing the test on timeout.
func (c *Client) Expect(timeout time.Duration, what string, f func(*core.Element) bool) *core.Element {
	c.t.Helper()
	el, err := c.Next(timeout, f)
	if err != nil {
		c.t.Fatalf("%s: waiting for %s: %v", c.JID, what, err)
	}
	return el
}

func (c *Client) dump() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var parts []string
	for _, el := range c.backlog {
		s := el.String()
		if len(s) > 400 {
			s = s[:400] + "…"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, "\n")
}

// IQ sends an IQ (setting a fresh id) and returns the answer, result or
// error.
func (c *Client) IQ(el *core.Element) *core.Element {
	c.t.Helper()
	res, err := c.IQErr(el, 20*time.Second)
	if err != nil {
		c.t.Fatalf("IQ %s: %v", el, err)
	}
	return res
}

// IQErr is IQ returning the error.
func (c *Client) IQErr(el *core.Element, timeout time.Duration) (*core.Element, error) {
	id := RandomID()
	el.SetAttr("id", id)
	if err := c.SendErr(el); err != nil {
		return nil, err
	}
	return c.Next(timeout, func(r *core.Element) bool {
		return r.Name.Local == "iq" && r.Get("id") == id && (r.Get("type") == "result" || r.Get("type") == "error")
	})
}

// Condition returns the stanza error condition of a stanza, or "".
func Condition(el *core.Element) string {
	e := el.Child("", "error")
	if e == nil {
		return ""
	}
	for _, c := range e.Children {
		if c.Name.Space == "urn:ietf:params:xml:ns:xmpp-stanzas" && c.Name.Local != "text" {
			return c.Name.Local
		}
	}
	return ""
}

// ErrorText returns the stanza error text, or "".
func ErrorText(el *core.Element) string {
	return el.Child("", "error").ChildText("urn:ietf:params:xml:ns:xmpp-stanzas", "text")
}

// RandomID returns a random hex id.
func RandomID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// IsFrom matches stanzas of a kind from a JID (bare or full, compared
// exactly) with an optional type.
func IsFrom(kind, from, typ string) func(*core.Element) bool {
	return func(el *core.Element) bool {
		if el.Name.Local != kind {
			return false
		}
		f := el.Get("from")
		if f != from && !strings.HasPrefix(f, from+"/") {
			return false
		}
		return typ == "*" || el.Get("type") == typ
	}
}
