package email

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/mail"
	"os"
	"runtime"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// Benchmarks of both directions through real servers (make bench,
// scripts/bench.sh): Prosody and Dovecot from scripts/testenv.sh, and an
// SMTP server in the test process in place of the MTA (one OpenSMTPD per
// machine is shared by everyone, and the MTA's queue is not the gateway's
// latency). Each reports p50-ms and p99-ms (one message at a time) and
// burst-msgs/s (200 in flight).

// benchMailEnv is the mail environment with the SMTP sink as the
// gateway's submission server.
func benchMailEnv(b *testing.B) (mailEnv, *smtpSink) {
	x := xmpptest.Prosody(b)
	e := mailEnv{
		xmpp:     x,
		imap:     os.Getenv("TRANSPORTD_TEST_IMAP"),
		lmtp:     os.Getenv("TRANSPORTD_TEST_LMTP"),
		password: os.Getenv("TRANSPORTD_TEST_MAIL_PASSWORD"),
	}
	if e.imap == "" || e.lmtp == "" {
		xmpptest.Missing(b, "Dovecot not running; scripts/testenv.sh up prosody dovecot")
	}
	s := newSMTPSink(b)
	e.smtp = s.addr
	return e, s
}

// smtpSink is a submission server that notes when each mail arrived, by
// Subject.
type smtpSink struct {
	addr string
	mu   sync.Mutex
	seen map[string]time.Time
	wake chan struct{}
}

func newSMTPSink(b testing.TB) *smtpSink {
	s := &smtpSink{seen: map[string]time.Time{}, wake: make(chan struct{}, 1)}
	srv := smtp.NewServer(s)
	srv.Domain = "sink.bench"
	srv.AllowInsecureAuth = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	s.addr = ln.Addr().String()
	return s
}

func (s *smtpSink) NewSession(*smtp.Conn) (smtp.Session, error) { return sinkSession{s}, nil }

type sinkSession struct{ s *smtpSink }

func (sinkSession) Reset()                               {}
func (sinkSession) Logout() error                        { return nil }
func (sinkSession) Mail(string, *smtp.MailOptions) error { return nil }
func (sinkSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (ss sinkSession) Data(r io.Reader) error {
	m, err := mail.ReadMessage(bufio.NewReader(r))
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, m.Body)
	ss.s.mu.Lock()
	ss.s.seen[m.Header.Get("Subject")] = time.Now()
	ss.s.mu.Unlock()
	select {
	case ss.s.wake <- struct{}{}:
	default:
	}
	return nil
}

// await waits until a mail with that Subject arrived and returns when.
func (s *smtpSink) await(subject string, d time.Duration) (time.Time, bool) {
	deadline := time.After(d)
	for {
		s.mu.Lock()
		at, ok := s.seen[subject]
		s.mu.Unlock()
		if ok {
			return at, true
		}
		select {
		case <-s.wake:
		case <-time.After(5 * time.Millisecond):
		case <-deadline:
			return time.Time{}, false
		}
	}
}

func percentilesMS(l []time.Duration) (p50, p99 float64) {
	if len(l) == 0 {
		return 0, 0
	}
	sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
	at := func(p float64) float64 {
		return float64(l[min(len(l)-1, int(float64(len(l))*p))].Microseconds()) / 1000
	}
	return at(0.50), at(0.99)
}

// BenchmarkXMPPToMail: a chat message from a real client through Prosody,
// the gateway's outbox and SMTP submission (with the Sent check over IMAP
// that makes a resend after a crash safe), until the SMTP server has the
// mail.
func BenchmarkXMPPToMail(b *testing.B) {
	e, sink := benchMailEnv(b)
	startGW(b, e, gwOpts{extra: `save_sent = "false"`})
	c := dialUser(b, e, "user11", "a.test")
	run := xmpptest.RandomID()[:6]
	send := func(subject, to string) {
		m := core.NewElement("", "message", "to", to, "type", "chat", "id", subject)
		m.AddText("", "subject", subject)
		m.AddText("", "body", "ping "+subject)
		if err := c.SendErr(m); err != nil {
			b.Fatal(err)
		}
	}
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		subject := fmt.Sprintf("x2m %s %d", run, i)
		t0 := time.Now()
		send(subject, `peer\40bench.example@email.a.test`)
		at, ok := sink.await(subject, wait)
		if !ok {
			b.Fatalf("mail %d never reached SMTP", i)
		}
		lat = append(lat, at.Sub(t0))
	}
	b.StopTimer()
	p50, p99 := percentilesMS(lat)
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	// A burst to 10 recipients (the outbox sends one conversation at a
	// time, several conversations at once).
	const n = 200
	start := time.Now()
	for i := 0; i < n; i++ {
		send(fmt.Sprintf("x2m burst %s %d", run, i), fmt.Sprintf(`peer%d\40bench.example@email.a.test`, i%10))
	}
	for i := 0; i < n; i++ {
		if _, ok := sink.await(fmt.Sprintf("x2m burst %s %d", run, i), 2*time.Minute); !ok {
			b.Fatalf("burst mail %d never reached SMTP", i)
		}
	}
	b.ReportMetric(n/time.Since(start).Seconds(), "burst-msgs/s")
}

// BenchmarkMailToXMPPLMTP: a mail delivered into Dovecot over LMTP until
// the chat message is at the user's client (Dovecot's IDLE notification,
// the gateway's fetch and parse, the outbox, Prosody).
func BenchmarkMailToXMPPLMTP(b *testing.B) {
	e, _ := benchMailEnv(b)
	benchMailIn(b, e, gwOpts{}, "user12")
}

// BenchmarkMailToXMPPLMTPPush is BenchmarkMailToXMPPLMTP with push notices
// from Dovecot (its push_notification plugin, set up by scripts/testenv.sh)
// waking the session at once, where IDLE alone hears of new mail only
// after Dovecot's fixed 0.5 s notification delay.
func BenchmarkMailToXMPPLMTPPush(b *testing.B) {
	e, _ := benchMailEnv(b)
	benchMailIn(b, e, pushBenchOpts(b, e, "user10@a.test"), "user10")
}

// benchMailIn measures mail delivered over LMTP to user@a.test until it is
// at the user's client, through a gateway started with o.
func benchMailIn(b *testing.B, e mailEnv, o gwOpts, user string) {
	startGW(b, e, o)
	c := dialUser(b, e, user, "a.test")
	run := xmpptest.RandomID()[:6]
	inject := func(subject string) {
		raw := crlf("From: bench@example.org\nTo: " + user + "@a.test\nSubject: " + subject + "\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.org>\n\nping\n")
		if err := lmtpDeliver(e.lmtp, user+"@a.test", raw); err != nil {
			b.Fatal(err)
		}
	}
	isSubject := func(s string) func(*core.Element) bool {
		return func(el *core.Element) bool { return el.Name.Local == "message" && el.ChildText("", "subject") == s }
	}
	// The gateway's own part: from Dovecot's "* n EXISTS" in IDLE to the
	// message at the client.
	var mu sync.Mutex
	var exists time.Time
	testHookExists = func() {
		mu.Lock()
		exists = time.Now()
		mu.Unlock()
	}
	defer func() { testHookExists = nil }()
	lat := make([]time.Duration, 0, b.N)
	gwLat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		subject := fmt.Sprintf("m2x %s %d", run, i)
		t0 := time.Now()
		inject(subject)
		if _, err := c.Next(wait, isSubject(subject)); err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		lat = append(lat, now.Sub(t0))
		mu.Lock()
		if exists.After(t0) {
			gwLat = append(gwLat, now.Sub(exists))
		}
		mu.Unlock()
	}
	b.StopTimer()
	p50, p99 := percentilesMS(lat)
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	p50, p99 = percentilesMS(gwLat)
	b.ReportMetric(p50, "gw-p50-ms")
	b.ReportMetric(p99, "gw-p99-ms")
	const n = 200
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 4 {
				inject(fmt.Sprintf("m2x burst %s %d", run, i))
			}
		}()
	}
	wg.Wait()
	got := 0
	for got < n {
		if _, err := c.Next(2*time.Minute, func(el *core.Element) bool {
			return el.Name.Local == "message" && strings.HasPrefix(el.ChildText("", "subject"), "m2x burst "+run+" ")
		}); err != nil {
			b.Fatalf("%d of %d burst mails arrived: %v", got, n, err)
		}
		got++
	}
	b.ReportMetric(n/time.Since(start).Seconds(), "burst-msgs/s")
}

// rssBytes is the process's resident set size.
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// settledRSS is the resident set after the garbage was collected and
// given back to the system.
func settledRSS() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	return rssBytes()
}

// sessionCounts are the session counts the memory benchmarks step
// through: TRANSPORTD_BENCH_SESSION_COUNTS, default "1,100,1000".
func sessionCounts() []int {
	v := os.Getenv("TRANSPORTD_BENCH_SESSION_COUNTS")
	if v == "" {
		v = "1,100,1000"
	}
	var out []int
	for _, f := range strings.Split(v, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	sort.Ints(out)
	return out
}

// BenchmarkEmailIdleRSS: the growth of the process's resident set per
// mailbox session idling in IMAP IDLE on Dovecot, at 1, 100 and 1,000
// sessions (spread over the 40 test mailboxes, user1..20 at a.test and
// b.test, several sessions per mailbox). It runs once whatever -benchtime
// says. Core's per-user state is not included (the sessions report to an
// in-memory sink).
func BenchmarkEmailIdleRSS(b *testing.B) {
	x := xmpptest.Prosody(b)
	e := mailEnv{xmpp: x, imap: os.Getenv("TRANSPORTD_TEST_IMAP"), password: os.Getenv("TRANSPORTD_TEST_MAIL_PASSWORD")}
	if e.imap == "" {
		b.Skip("Dovecot not running")
	}
	e.smtp = "127.0.0.1:1"
	users := 20
	if v, err := strconv.Atoi(os.Getenv("TRANSPORTD_TEST_MAIL_USER_COUNT")); err == nil && v > 0 {
		users = v
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	tr := New()
	var sinks []*fakeSink
	base := settledRSS()
	for _, n := range sessionCounts() {
		start := time.Now()
		for i := len(sinks); i < n; i++ {
			sink := newFakeSink(b)
			sink.log = slog.New(slog.NewTextHandler(io.Discard, nil)).WithGroup("s") // as core's per-user logger, without keeping the lines
			sinks = append(sinks, sink)
			domain := []string{"a.test", "b.test"}[i%2]
			addr := fmt.Sprintf("user%d@%s", 1+(i/2)%users, domain)
			s := newSession(tr, testAccount(e, int64(5000+i), addr, nil), sink)
			wg.Add(1)
			go func() { defer wg.Done(); s.Run(ctx) }()
			if i%20 == 19 {
				time.Sleep(50 * time.Millisecond) // do not storm Dovecot's login processes
			}
		}
		for i, s := range sinks {
			s.waitFor(b, 2*time.Minute, "session "+strconv.Itoa(i)+" connected", func() bool {
				return len(s.states) > 0 && s.states[len(s.states)-1] == core.StateConnected
			})
		}
		connect := time.Since(start)
		time.Sleep(time.Second) // every session in IDLE
		rss := settledRSS()
		b.ReportMetric(float64(rss-base)/float64(n)/1024, fmt.Sprintf("rss-KiB/session@%d", n))
		b.Logf("%d sessions: RSS %d MiB (+%d KiB each), connected in %v", n, rss>>20, (rss-base)/int64(n)>>10, connect.Round(time.Millisecond))
	}
}
