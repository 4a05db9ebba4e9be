package irc

import (
	"bufio"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"
)

// An ident server (RFC 1413), as biboumi runs one. Most public IRC
// networks ask the host of every client who the connection is (port 113);
// without an answer, every user of the gateway shows the same unverified
// "~user" from the same host, and a network bans the gateway's host, all
// its users at once. With identd_listen set, the gateway answers for its
// connections with a name stable per user and that hides the JID: the
// SHA-1 of the user's bare JID in hex, biboumi's, which the server cuts to
// its user name length, so a network's bans set on biboumi's idents keep
// matching the same users.
//
// Written by hand: the protocol is one line each way, and no maintained Go
// library serves it.

// identTimeout bounds an ident client's connection (RFC 1413 suggests
// servers wait 60 to 180 seconds idle; IRC servers ask at once and wait
// a few seconds).
const identTimeout = 30 * time.Second

// identMaxQueries is how many queries one connection may ask.
const identMaxQueries = 16

// identMaxClients is how many clients are served at once; more are
// closed unanswered (a flood of connections to port 113 costs a
// goroutine each for up to identTimeout otherwise).
const identMaxClients = 64

// identKey names one of the gateway's IRC connections as an ident query
// does: the gateway's port and address (the one the server asks at), the
// server's port and address (only the server a connection goes to may
// ask about it).
type identKey struct {
	local, remote uint16
	self, peer    netip.Addr
}

// identKeyOf is a TCP connection's identKey.
func identKeyOf(nc net.Conn) (identKey, bool) {
	l, lok := nc.LocalAddr().(*net.TCPAddr)
	r, rok := nc.RemoteAddr().(*net.TCPAddr)
	if !lok || !rok {
		return identKey{}, false
	}
	return identKey{local: uint16(l.Port), remote: uint16(r.Port), self: l.AddrPort().Addr().Unmap(), peer: r.AddrPort().Addr().Unmap()}, true
}

// identName is the name the ident server gives for a user (biboumi's).
func identName(bareJID string) string {
	h := sha1.Sum([]byte(bareJID))
	return hex.EncodeToString(h[:])
}

// idents are the connections the ident servers answer for, of every IRC
// transport of the process; added is closed (and renewed) at every
// entry, for a query that came first (waitIdent).
var idents = struct {
	sync.Mutex
	m     map[identKey]string
	added chan struct{}
}{m: map[identKey]string{}, added: make(chan struct{})}

func addIdent(k identKey, name string) {
	idents.Lock()
	idents.m[k] = name
	close(idents.added)
	idents.added = make(chan struct{})
	idents.Unlock()
}

// identWait is how long a query about a connection the gateway does not
// know waits for it: the server asks as soon as it accepted the
// connection, which the dialling goroutine enters a moment later (under
// load, the server asked first and got NO-USER: TestIdentd).
var identWait = time.Second

// waitIdent is lookupIdent waiting up to wait for the entry.
func waitIdent(k identKey, wait time.Duration) (string, bool) {
	deadline := time.Now().Add(wait)
	for {
		idents.Lock()
		name, ok := idents.m[k]
		added := idents.added
		idents.Unlock()
		d := time.Until(deadline)
		if ok || d <= 0 {
			return name, ok
		}
		t := time.NewTimer(d)
		select {
		case <-added:
		case <-t.C:
		}
		t.Stop()
	}
}

// delIdent removes an entry; nil is none.
func delIdent(k *identKey) {
	if k == nil {
		return
	}
	idents.Lock()
	delete(idents.m, *k)
	idents.Unlock()
}

func lookupIdent(k identKey) (string, bool) {
	idents.Lock()
	defer idents.Unlock()
	name, ok := idents.m[k]
	return name, ok
}

// identServers are the listeners, one per address, shared by the
// transports (one per domain) that name it.
var identServers = struct {
	sync.Mutex
	m map[string]*identServer
}{m: map[string]*identServer{}}

type identServer struct {
	ln      net.Listener
	refs    int
	clients chan struct{} // a slot per client served
}

// startIdentd listens on addr, or shares the listener already there; stop
// closes it once its last user stopped.
func startIdentd(addr string, log *slog.Logger) (stop func(), err error) {
	identServers.Lock()
	defer identServers.Unlock()
	s := identServers.m[addr]
	if s == nil {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			return nil, fmt.Errorf("identd_listen: %w", err)
		}
		s = &identServer{ln: ln, clients: make(chan struct{}, identMaxClients)}
		identServers.m[addr] = s
		log.Info("ident server listening", "addr", ln.Addr().String())
		go s.serve(log)
	}
	s.refs++
	var once sync.Once
	return func() {
		once.Do(func() {
			identServers.Lock()
			defer identServers.Unlock()
			if s.refs--; s.refs == 0 {
				delete(identServers.m, addr)
				_ = s.ln.Close()
			}
		})
	}, nil
}

func (s *identServer) serve(log *slog.Logger) {
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				log.Warn("ident server stopped", "error", err)
			}
			return
		}
		select {
		case s.clients <- struct{}{}:
			go func() {
				defer func() { <-s.clients }()
				serveIdent(c, log)
			}()
		default:
			_ = c.Close()
			log.Warn("ident client refused: too many at once", "limit", identMaxClients)
		}
	}
}

// serveIdent answers one client's queries.
func serveIdent(c net.Conn, log *slog.Logger) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(identTimeout))
	var self, peer netip.Addr
	if ra, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		peer = ra.AddrPort().Addr().Unmap()
	}
	if la, ok := c.LocalAddr().(*net.TCPAddr); ok {
		self = la.AddrPort().Addr().Unmap()
	}
	br := bufio.NewReaderSize(c, 128) // a query is a dozen bytes
	for range identMaxQueries {
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			_, _ = c.Write([]byte("0 , 0 : ERROR : UNKNOWN-ERROR\r\n"))
			log.Warn("ident query too long", "from", peer.String())
			return
		}
		if err != nil {
			return
		}
		answer := identAnswer(string(line), self, peer, identWait)
		if _, err := c.Write([]byte(answer)); err != nil {
			return
		}
		log.Debug("ident query", "from", peer.String(), "query", strings.TrimSpace(string(line)), "answer", strings.TrimSpace(answer))
	}
}

// identAnswer is the reply to one query line from peer, asked at self,
// waiting up to wait for a connection not entered yet.
func identAnswer(line string, self, peer netip.Addr, wait time.Duration) string {
	local, remote, ok := parseIdentQuery(line)
	if !ok {
		return "0 , 0 : ERROR : INVALID-PORT\r\n"
	}
	pair := strconv.Itoa(int(local)) + " , " + strconv.Itoa(int(remote))
	if name, ok := waitIdent(identKey{local: local, remote: remote, self: self, peer: peer}, wait); ok {
		return pair + " : USERID : OTHER : " + name + "\r\n"
	}
	return pair + " : ERROR : NO-USER\r\n"
}

// parseIdentQuery reads "<port on this host> , <port on the asker's>"
// (RFC 1413 §3: white space around the numbers, CR LF or LF after).
func parseIdentQuery(line string) (local, remote uint16, ok bool) {
	line = strings.TrimRight(line, "\r\n")
	a, b, found := strings.Cut(line, ",")
	if !found {
		return 0, 0, false
	}
	port := func(s string) (uint16, bool) {
		n, err := strconv.ParseUint(strings.Trim(s, " \t"), 10, 16)
		return uint16(n), err == nil && n > 0
	}
	local, lok := port(a)
	remote, rok := port(b)
	return local, remote, lok && rok
}
