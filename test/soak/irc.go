//go:build soak

package soak

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/ergochat/irc-go/ircmsg"
)

// ircPeer is the person on IRC the soak's users talk to: a raw client on
// the test InspIRCd that records each "soak x2i-N" it is sent and can send
// lines of its own. It reconnects when its connection drops.
type ircPeer struct {
	addr, nick string
	tr         *tracker

	mu      sync.Mutex
	conn    net.Conn
	ready   bool
	noSuch  map[string]bool // nicks the server said do not exist, since last asked
	regWait chan struct{}
}

func newIRCPeer(addr, nick string, tr *tracker) *ircPeer {
	return &ircPeer{addr: addr, nick: nick, tr: tr, noSuch: map[string]bool{}, regWait: make(chan struct{}, 1)}
}

// run keeps the peer connected until ctx ends.
func (p *ircPeer) run(ctx context.Context) {
	for ctx.Err() == nil {
		p.session(ctx)
		select {
		case <-ctx.Done():
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func (p *ircPeer) session(ctx context.Context) {
	conn, err := net.DialTimeout("tcp", p.addr, 5*time.Second)
	if err != nil {
		return
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	p.mu.Lock()
	p.conn = conn
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.conn, p.ready = nil, false
		p.mu.Unlock()
	}()
	fmt.Fprintf(conn, "NICK %s\r\nUSER %s 0 * :soak peer\r\n", p.nick, p.nick)
	r := bufio.NewReader(conn)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		m, err := ircmsg.ParseLine(strings.TrimRight(line, "\r\n"))
		if err != nil {
			continue
		}
		switch m.Command {
		case "PING":
			p.write("PONG :" + strings.Join(m.Params, " "))
		case "001":
			p.mu.Lock()
			p.ready = true
			p.mu.Unlock()
			select {
			case p.regWait <- struct{}{}:
			default:
			}
		case "433": // nick in use (our previous connection not gone yet)
			return
		case "401":
			if len(m.Params) > 1 {
				p.mu.Lock()
				p.noSuch[strings.ToLower(m.Params[1])] = true
				p.mu.Unlock()
			}
		case "PRIVMSG":
			if len(m.Params) < 2 {
				continue
			}
			if tok, ok := strings.CutPrefix(m.Params[1], "soak "); ok && strings.HasPrefix(tok, "x2i-") {
				p.tr.delivered(dirX2I, tok, "")
			}
		}
	}
}

func (p *ircPeer) write(line string) error {
	p.mu.Lock()
	c := p.conn
	p.mu.Unlock()
	if c == nil {
		return fmt.Errorf("not connected")
	}
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.Write([]byte(line + "\r\n"))
	return err
}

// waitReady waits until the peer is registered on the server.
func (p *ircPeer) waitReady(d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		p.mu.Lock()
		ok := p.ready
		p.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-p.regWait:
		case <-time.After(100 * time.Millisecond):
		}
	}
	return false
}

// privmsg sends text to nick; it reports false when the server says, or
// said since the last call, that the nick does not exist.
func (p *ircPeer) privmsg(nick, text string) (bool, error) {
	p.mu.Lock()
	gone := p.noSuch[strings.ToLower(nick)]
	delete(p.noSuch, strings.ToLower(nick))
	p.mu.Unlock()
	if err := p.write("PRIVMSG " + nick + " :" + text); err != nil {
		return false, err
	}
	return !gone, nil
}
