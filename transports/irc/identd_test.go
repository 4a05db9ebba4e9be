package irc

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ergochat/irc-go/ircmsg"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// TestIdentd: with identd_listen set, an IRC server that asks who a
// connection is (InspIRCd's ident module on its ident port, as public
// networks ask) gets the hash of the user's JID, biboumi's: the user's
// JOIN shows it as a verified user name (without "~"), so a network can
// ban one user of the gateway. Only the server the connection goes to
// gets an answer; once the connection closed, nobody does.
func TestIdentd(t *testing.T) {
	e := testIRCEnv(t)
	identAddr := os.Getenv("TRANSPORTD_TEST_IRC_IDENT_ADDR")
	if identAddr == "" {
		xmpptest.Missing(t, "InspIRCd's ident port not set up; run scripts/testenv.sh up inspircd")
	}
	startGW(t, e.xmpp, port(identAddr), map[string]string{"identd_listen": "127.0.0.1:113"})
	w := dialRaw(t, e.irc, "iwatch") // the same server, through its port without ident lookups
	w.join("#it-ident")
	const (
		user = "user8@b.test"
		room = "#it-ident%127.0.0.1@" + gwJID
	)
	c := onlineUser(t, e, user)
	if self := joinRoom(t, c, room, "identified"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	join := w.expect("the user's JOIN", cmdFrom("JOIN", "identified"))
	_, userhost, _ := strings.Cut(join.Source, "!")
	ident, host, _ := strings.Cut(userhost, "@")
	hash := identName(user)
	if len(ident) < 8 || !strings.HasPrefix(hash, ident) || host != "127.0.0.1" {
		t.Errorf("the user joined as %q, want the user name verified by ident: a prefix of %s (no ~)", join.Source, hash)
	}

	// Asked by hand: the answer for the connection, to its server only.
	var key identKey
	idents.Lock()
	for k, name := range idents.m {
		if name == hash {
			key = k
		}
	}
	idents.Unlock()
	if key.local == 0 {
		t.Fatal("no ident entry for the user's connection")
	}
	query := fmt.Sprintf("%d , %d\r\n", key.local, key.remote)
	if got, want := askIdent(t, "127.0.0.1", query), fmt.Sprintf("%d , %d : USERID : OTHER : %s", key.local, key.remote, hash); got != want {
		t.Errorf("ident answer to the server: %q, want %q", got, want)
	}
	if got := askIdent(t, "127.0.0.2", query); !strings.HasSuffix(got, ": ERROR : NO-USER") {
		t.Errorf("ident answer to another host: %q, want NO-USER", got)
	}
	if got := askIdent(t, "127.0.0.1", "hello\r\n"); got != "0 , 0 : ERROR : INVALID-PORT" {
		t.Errorf("ident answer to a bad query: %q", got)
	}

	// The user leaves: the connection closes and its entry goes.
	c.Send(core.NewElement("", "presence", "to", room+"/identified", "type", "unavailable"))
	w.expect("the user's QUIT", func(m ircmsg.Message) bool {
		return (m.Command == "QUIT" || m.Command == "PART") && m.Nick() == "identified"
	})
	deadline := time.Now().Add(xwait)
	for {
		if _, ok := lookupIdent(key); !ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the closed connection's ident entry stayed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if got := askIdent(t, "127.0.0.1", query); !strings.HasSuffix(got, ": ERROR : NO-USER") {
		t.Errorf("ident answer once the connection closed: %q, want NO-USER", got)
	}
}

// askIdent sends one query to the gateway's ident server from a local
// address, and returns the answer's line.
func askIdent(t *testing.T, from, query string) string {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
	c, err := d.Dial("tcp", "127.0.0.1:113")
	if err != nil {
		t.Fatalf("ident server: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte(query)); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatalf("ident answer: %v", err)
	}
	if !strings.HasSuffix(line, "\r\n") {
		t.Errorf("ident answer %q does not end in CR LF", line)
	}
	return strings.TrimRight(line, "\r\n")
}

func TestIdentQuery(t *testing.T) {
	for _, tc := range []struct {
		line          string
		local, remote uint16
		ok            bool
	}{
		{"6191, 23\r\n", 6191, 23, true},
		{" 6191 ,\t23 \n", 6191, 23, true},
		{"6191,23", 6191, 23, true},
		{"0, 23\r\n", 0, 0, false},
		{"65536, 23\r\n", 0, 0, false},
		{"6191 23\r\n", 0, 0, false},
		{"-1, 23\r\n", 0, 0, false},
		{"6191, +23\r\n", 0, 0, false},
		{"", 0, 0, false},
	} {
		l, r, ok := parseIdentQuery(tc.line)
		if ok != tc.ok || (ok && (l != tc.local || r != tc.remote)) {
			t.Errorf("parseIdentQuery(%q) = %d, %d, %v; want %d, %d, %v", tc.line, l, r, ok, tc.local, tc.remote, tc.ok)
		}
	}
	self, peer := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("192.0.2.1")
	k := identKey{local: 40000, remote: 6667, self: self, peer: peer}
	addIdent(k, "abc")
	defer delIdent(&k)
	if got := identAnswer("40000 , 6667\r\n", self, peer, 0); got != "40000 , 6667 : USERID : OTHER : abc\r\n" {
		t.Errorf("answer = %q", got)
	}
	if got := identAnswer("40000 , 6667\r\n", self, netip.MustParseAddr("192.0.2.2"), 0); got != "40000 , 6667 : ERROR : NO-USER\r\n" {
		t.Errorf("answer to another host = %q", got)
	}
	if got := identAnswer("40000 , 6667\r\n", netip.MustParseAddr("198.51.100.2"), peer, 0); got != "40000 , 6667 : ERROR : NO-USER\r\n" {
		t.Errorf("answer about another of the gateway's addresses = %q", got)
	}
	// A query that came before the connection was entered waits for it.
	k2 := identKey{local: 40001, remote: 6667, self: self, peer: peer}
	time.AfterFunc(50*time.Millisecond, func() { addIdent(k2, "late") })
	defer delIdent(&k2)
	if got := identAnswer("40001 , 6667\r\n", self, peer, 5*time.Second); got != "40001 , 6667 : USERID : OTHER : late\r\n" {
		t.Errorf("answer about a connection entered later = %q", got)
	}
	if got := identName("alice@example.org"); len(got) != 40 || got != identName("alice@example.org") || got == identName("bob@example.org") {
		t.Errorf("identName = %q", got)
	}
}

// FuzzIdentQuery: whatever an ident client sends, the answer is one line
// of the protocol that names no other port pair than the one asked.
func FuzzIdentQuery(f *testing.F) {
	for _, s := range []string{"6191, 23\r\n", "0,0", "65535 , 65535\n", "a,b", ",", "1,\x00"} {
		f.Add(s)
	}
	self, peer := netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("192.0.2.1")
	f.Fuzz(func(t *testing.T, line string) {
		a := identAnswer(line, self, peer, 0)
		if !strings.HasSuffix(a, "\r\n") || strings.Count(a, "\n") != 1 || strings.ContainsAny(a[:len(a)-2], "\r\x00") {
			t.Fatalf("answer %q to %q is not one line", a, line)
		}
		if strings.Contains(a, "USERID") {
			t.Fatalf("answer %q to %q names a user no connection has", a, line)
		}
		if l, r, ok := parseIdentQuery(line); ok && !strings.HasPrefix(a, fmt.Sprintf("%d , %d : ", l, r)) {
			t.Fatalf("answer %q to %q does not repeat the ports", a, line)
		}
	})
}

// TestOutgoingBind: with outgoing_bind, the connections to IRC servers
// leave from that address (an operator with several, or one set aside
// for the gateway): InspIRCd shows the user at 127.0.0.2.
func TestOutgoingBind(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), map[string]string{"outgoing_bind": "127.0.0.2"})
	w := dialRaw(t, e.irc, "bwatch")
	w.join("#it-bind")
	const room = "#it-bind%127.0.0.1@" + gwJID
	c := onlineUser(t, e, "user9@b.test")
	if self := joinRoom(t, c, room, "bound"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	join := w.expect("the user's JOIN", cmdFrom("JOIN", "bound"))
	if _, host, _ := strings.Cut(join.Source, "@"); host != "127.0.0.2" {
		t.Errorf("the user joined as %q, want from 127.0.0.2", join.Source)
	}
}

// TestIdentdClients: at most identMaxClients are served at once; one
// more is closed unanswered, and served again once a place is free.
func TestIdentdClients(t *testing.T) {
	const addr = "127.0.0.1:0"
	stop, err := startIdentd(addr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	identServers.Lock()
	srv := identServers.m[addr].ln.Addr().String()
	identServers.Unlock()
	ask := func(c net.Conn) (string, error) {
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write([]byte("1, 2\r\n")); err != nil {
			return "", err
		}
		return bufio.NewReader(c).ReadString('\n')
	}
	var idle []net.Conn
	for range identMaxClients {
		c, err := net.Dial("tcp", srv)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	// The last of them is served: all have their place.
	if a, err := ask(idle[len(idle)-1]); err != nil || a != "1 , 2 : ERROR : NO-USER\r\n" {
		t.Fatalf("client %d: %q, %v", identMaxClients, a, err)
	}
	over, err := net.Dial("tcp", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if a, err := ask(over); err == nil {
		t.Errorf("a client over the limit was answered: %q", a)
	}
	idle[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", srv)
		if err != nil {
			t.Fatal(err)
		}
		a, err := ask(c)
		c.Close()
		if err == nil && a == "1 , 2 : ERROR : NO-USER\r\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no client served once a place was free: %q, %v", a, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
