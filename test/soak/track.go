//go:build soak

package soak

import (
	"fmt"
	"io"
	"net"
	"net/mail"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"
)

// Directions of the soak's traffic.
const (
	dirX2E = "xmpp→email"
	dirE2X = "email→xmpp"
	dirX2S = "xmpp→sms"
	dirS2X = "sms→xmpp"
	dirX2I = "xmpp→irc"
	dirI2X = "irc→xmpp"
)

// directions are the ones soaked; IRC's are added when InspIRCd is there.
var directions = []string{dirX2E, dirE2X, dirX2S, dirS2X}

// copyOf is one arrival of a message at its destination.
type copyOf struct {
	at  time.Time
	key string // the protocol's dedupe key, where it has one (Message-ID, MessageSid)
}

type item struct {
	sent    time.Time
	acked   bool
	refused string
	copies  []copyOf
}

// tracker records what was sent, acknowledged and delivered, per
// direction and token (each message carries a unique token).
type tracker struct {
	mu    sync.Mutex
	items map[string]map[string]*item
	kills []time.Time
}

func newTracker() *tracker {
	t := &tracker{items: map[string]map[string]*item{}}
	for _, d := range directions {
		t.items[d] = map[string]*item{}
	}
	return t
}

func (t *tracker) get(dir, token string) *item {
	it := t.items[dir][token]
	if it == nil {
		it = &item{}
		t.items[dir][token] = it
	}
	return it
}

func (t *tracker) sent(dir, token string) {
	t.mu.Lock()
	t.get(dir, token).sent = time.Now()
	t.mu.Unlock()
}

func (t *tracker) ack(dir, token string) {
	t.mu.Lock()
	t.get(dir, token).acked = true
	t.mu.Unlock()
}

func (t *tracker) refuse(dir, token, why string) {
	t.mu.Lock()
	t.get(dir, token).refused = why
	t.mu.Unlock()
}

func (t *tracker) delivered(dir, token, key string) {
	t.mu.Lock()
	it := t.get(dir, token)
	it.copies = append(it.copies, copyOf{at: time.Now(), key: key})
	t.mu.Unlock()
}

func (t *tracker) killed() {
	t.mu.Lock()
	t.kills = append(t.kills, time.Now())
	t.mu.Unlock()
}

// pending lists, per direction, the acknowledged messages not delivered.
func (t *tracker) pending() map[string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := map[string]int{}
	for d, m := range t.items {
		for _, it := range m {
			if it.acked && len(it.copies) == 0 {
				out[d]++
			}
		}
	}
	return out
}

// setCopies replaces the copies of a direction (for the SMS side, read from
// the fake Twilio at the end).
func (t *tracker) setCopies(dir string, copies map[string][]copyOf) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for token, c := range copies {
		t.get(dir, token).copies = c
	}
}

// summary is one direction's result.
type summary struct {
	dir                 string
	sent, acked         int
	delivered           int // tokens delivered at least once
	lost                int // acknowledged, never delivered
	duplicated          int // delivered twice where the protocol's key should have prevented it
	redelivered         int // delivered again, within what the protocol allows (see below)
	refused             int // the sender got an error (component down, ...)
	unackedDelivered    int // delivered although no acknowledgement reached the sender
	lostTokens, dupToks []string
	refusals            map[string]int // why, for the refused ones
}

// summarize computes the results. A second copy is "redelivered" (allowed)
// when it repeats the first one's key (the same Message-ID: an SMTP
// submission repeated after a crash between SMTP and the Sent copy, which
// the recipient de-duplicates), or, toward XMPP, when a kill happened
// between the two copies (XEP-0114 has no acknowledgements: a crash after
// the server took a stanza but before the confirming ping was answered
// sends it again). Any other second copy is a duplicate.
func (t *tracker) summarize() []summary {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []summary
	for _, d := range directions {
		s := summary{dir: d, refusals: map[string]int{}}
		tokens := make([]string, 0, len(t.items[d]))
		for tok := range t.items[d] {
			tokens = append(tokens, tok)
		}
		sort.Strings(tokens)
		for _, tok := range tokens {
			it := t.items[d][tok]
			if !it.sent.IsZero() {
				s.sent++
			}
			if it.acked {
				s.acked++
			}
			if it.refused != "" {
				s.refused++
				s.refusals[shorten(it.refused)]++
			}
			if len(it.copies) > 0 {
				s.delivered++
				if !it.acked {
					s.unackedDelivered++
				}
			} else if it.acked {
				s.lost++
				s.lostTokens = append(s.lostTokens, tok)
			}
			if len(it.copies) > 1 {
				if t.allowed(d, it.copies) {
					s.redelivered++
				} else {
					s.duplicated++
					s.dupToks = append(s.dupToks, tok)
				}
			}
		}
		out = append(out, s)
	}
	return out
}

func (t *tracker) allowed(dir string, copies []copyOf) bool {
	switch dir {
	case dirX2E:
		for _, c := range copies[1:] {
			if c.key != copies[0].key {
				return false
			}
		}
		return true
	case dirX2S:
		return false // Twilio has no idempotency key: the gateway's record must prevent any second create
	case dirX2I:
		return false // IRC lines are sent at most once (README, Delivery guarantees)
	}
	for i := 1; i < len(copies); i++ {
		crash := false
		for _, k := range t.kills {
			// The first copy may have been in Prosody's hands a moment
			// before the kill was noted.
			if !k.Before(copies[i-1].at.Add(-2*time.Second)) && !k.After(copies[i].at) {
				crash = true
			}
		}
		if !crash {
			return false
		}
	}
	return true
}

func formatSummary(iterations int, dur time.Duration, sums []summary, extra []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "soak: %d kill -9 iterations in %v\n\n", iterations, dur.Round(time.Second))
	fmt.Fprintf(&b, "| direction | sent | acked | delivered | lost | duplicated | redelivered (allowed) | refused | delivered unacked |\n")
	fmt.Fprintf(&b, "|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range sums {
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %d | %d | %d | %d |\n", s.dir, s.sent, s.acked, s.delivered, s.lost, s.duplicated, s.redelivered, s.refused, s.unackedDelivered)
	}
	b.WriteString("\n")
	for _, s := range sums {
		if len(s.lostTokens) > 0 {
			fmt.Fprintf(&b, "LOST %s: %s\n", s.dir, strings.Join(first(s.lostTokens, 20), " "))
		}
		if len(s.dupToks) > 0 {
			fmt.Fprintf(&b, "DUPLICATED %s: %s\n", s.dir, strings.Join(first(s.dupToks, 20), " "))
		}
	}
	for _, s := range sums {
		var whys []string
		for why, n := range s.refusals {
			whys = append(whys, fmt.Sprintf("%d× %s", n, why))
		}
		sort.Strings(whys)
		if len(whys) > 0 {
			fmt.Fprintf(&b, "refused %s: %s\n", s.dir, strings.Join(whys, "; "))
		}
	}
	for _, e := range extra {
		b.WriteString(e + "\n")
	}
	return b.String()
}

func first(l []string, n int) []string {
	if len(l) > n {
		return append(l[:n:n], fmt.Sprintf("(+%d)", len(l)-n))
	}
	return l
}

// smtpSink is the SMTP server the gateway submits to: it records each
// mail's token (its Subject) and Message-ID. (The MTA is not what this
// soak tests, and one OpenSMTPD per machine is shared by everyone.)
type smtpSink struct {
	srv *smtp.Server
	ln  net.Listener
	tr  *tracker
}

func newSMTPSink(tr *tracker) (*smtpSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &smtpSink{ln: ln, tr: tr}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = "sink.soak"
	s.srv.AllowInsecureAuth = true
	s.srv.ReadTimeout = time.Minute
	s.srv.WriteTimeout = time.Minute
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *smtpSink) addr() string { return s.ln.Addr().String() }
func (s *smtpSink) close()       { _ = s.srv.Close() }

func (s *smtpSink) NewSession(*smtp.Conn) (smtp.Session, error) { return &sinkSession{s: s}, nil }

type sinkSession struct{ s *smtpSink }

func (*sinkSession) Reset()                               {}
func (*sinkSession) Logout() error                        { return nil }
func (*sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (*sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ss *sinkSession) Data(r io.Reader) error {
	m, err := mail.ReadMessage(r)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, m.Body)
	tok := strings.TrimSpace(m.Header.Get("Subject"))
	if strings.HasPrefix(tok, "x2e-") {
		ss.s.tr.delivered(dirX2E, tok, m.Header.Get("Message-Id"))
	}
	return nil
}

// shorten makes refusal reasons comparable: ports and numbers out.
func shorten(why string) string {
	var b strings.Builder
	for _, r := range why {
		if r >= '0' && r <= '9' {
			if !strings.HasSuffix(b.String(), "N") {
				b.WriteByte('N')
			}
			continue
		}
		b.WriteRune(r)
	}
	s := b.String()
	if len(s) > 120 {
		s = s[:120] + "…"
	}
	return s
}
