package sms

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// Benchmarks of both directions (make bench, scripts/bench.sh), against a
// real Prosody and the fake Twilio: p50-ms and p99-ms one message at a
// time, burst-msgs/s with 200 in flight.

func pctMS(l []time.Duration) (p50, p99 float64) {
	if len(l) == 0 {
		return 0, 0
	}
	slices.Sort(l)
	at := func(p float64) float64 {
		return float64(l[min(len(l)-1, int(p*float64(len(l))))].Microseconds()) / 1000
	}
	return at(0.50), at(0.99)
}

// BenchmarkXMPPToTwilio: a chat message from a real client through
// Prosody, the outbox and the send record to Twilio's create call.
func BenchmarkXMPPToTwilio(b *testing.B) {
	env := xmpptest.Prosody(b)
	fake := newFakeTwilio(b)
	sid, token := fake.AddAccount()
	const number = "+12025550100"
	fake.AddNumber(sid, number)
	var mu sync.Mutex
	created := map[string]time.Time{}
	wake := make(chan struct{}, 1)
	fake.SetOnCreate(func(_ int, m *fakeMessage) fakeAction {
		mu.Lock()
		created[m.Body] = time.Now()
		mu.Unlock()
		select {
		case wake <- struct{}{}:
		default:
		}
		return createOK
	})
	await := func(body string, d time.Duration) (time.Time, bool) {
		deadline := time.After(d)
		for {
			mu.Lock()
			at, ok := created[body]
			mu.Unlock()
			if ok {
				return at, true
			}
			select {
			case <-wake:
			case <-time.After(5 * time.Millisecond):
			case <-deadline:
				return time.Time{}, false
			}
		}
	}
	newTestGW(b, env, fake, "rate_per_second = \"1000\"\ndaily_cap = \"0\"")
	c := xmpptest.Dial(b, env, "user27@a.test", false)
	waitConnected(b, c)
	register(b, c, map[string]string{"number": number, "account_sid": sid, "auth_token": token})
	run := xmpptest.RandomID()[:6]
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		body := fmt.Sprintf("x2s %s %d", run, i)
		t0 := time.Now()
		if err := c.SendErr(chat("+12025550123@"+gwJID, body, body, false)); err != nil {
			b.Fatal(err)
		}
		at, ok := await(body, wait)
		if !ok {
			b.Fatalf("message %d never reached Twilio", i)
		}
		lat = append(lat, at.Sub(t0))
	}
	b.StopTimer()
	p50, p99 := pctMS(lat)
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	const n = 200
	start := time.Now()
	for i := range n {
		body := fmt.Sprintf("x2s burst %s %d", run, i)
		if err := c.SendRaw(chat(fmt.Sprintf("+120255501%02d@%s", 30+i%10, gwJID), body, body, false).String()); err != nil {
			b.Fatal(err)
		}
	}
	for i := range n {
		if _, ok := await(fmt.Sprintf("x2s burst %s %d", run, i), 2*time.Minute); !ok {
			b.Fatalf("burst message %d never reached Twilio", i)
		}
	}
	b.ReportMetric(n/time.Since(start).Seconds(), "burst-msgs/s")
}

// BenchmarkWebhookBurst: 200 incoming SMS posted by 8 concurrent webhook
// calls, until all are at the client.
func BenchmarkWebhookBurst(b *testing.B) {
	env := xmpptest.Prosody(b)
	fake := newFakeTwilio(b)
	sid, token := fake.AddAccount()
	const number = "+12025550100"
	fake.AddNumber(sid, number)
	newTestGW(b, env, fake, "")
	c := xmpptest.Dial(b, env, "user28@a.test", false)
	waitConnected(b, c)
	register(b, c, map[string]string{"number": number, "account_sid": sid, "auth_token": token})
	run := xmpptest.RandomID()[:6]
	const n = 200
	b.ResetTimer()
	for it := 0; it < b.N; it++ {
		msgs := make([]fakeMessage, n)
		for i := range msgs {
			msgs[i] = fake.Receive(fmt.Sprintf("+120255501%02d", 30+i%10), number, fmt.Sprintf("burst %s %d %d", run, it, i))
		}
		start := time.Now()
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < n; i += 8 {
					if status, _ := fake.deliverIncoming(msgs[i]); status != 200 {
						b.Errorf("webhook answered %d", status)
					}
				}
			}()
		}
		wg.Wait()
		prefix := fmt.Sprintf("burst %s %d ", run, it)
		for got := 0; got < n; got++ {
			if _, err := c.Next(2*time.Minute, func(el *core.Element) bool {
				return el.Name.Local == "message" && strings.HasPrefix(el.ChildText("", "body"), prefix)
			}); err != nil {
				b.Fatalf("%d of %d arrived: %v", got, n, err)
			}
		}
		b.ReportMetric(n/time.Since(start).Seconds(), "burst-msgs/s")
	}
}

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

func settledRSS() int64 {
	runtime.GC()
	debug.FreeOSMemory()
	return rssBytes()
}

// BenchmarkSMSIdleRSS: the growth of the resident set per registered
// number's session (checked with the fake Twilio, then idle until its next
// reconciliation), at 1, 100 and 1,000 sessions
// (TRANSPORTD_BENCH_SESSION_COUNTS). It runs once whatever -benchtime
// says. Core's per-user state is not included.
func BenchmarkSMSIdleRSS(b *testing.B) {
	counts := []int{1, 100, 1000}
	if v := os.Getenv("TRANSPORTD_BENCH_SESSION_COUNTS"); v != "" {
		counts = nil
		for _, f := range strings.Split(v, ",") {
			if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
				counts = append(counts, n)
			}
		}
		sort.Ints(counts)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	u := newUnitLog(b, nil, quiet)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	var sinks []*fakeSink
	base := settledRSS()
	for _, n := range counts {
		for i := len(sinks); i < n; i++ {
			number := fmt.Sprintf("+1202556%04d", i)
			u.fake.AddNumber(u.sid, number)
			a := &core.Account{ID: int64(1000 + i), Domain: "a.test", Transport: "sms", JID: fmt.Sprintf("u%d@a.test", i),
				Values: map[string]string{"number": number, "account_sid": u.sid, "auth_token": u.token}}
			sink := newFakeSink(b)
			sink.log = quiet.WithGroup("s")
			sinks = append(sinks, sink)
			s := u.tr.NewSession(a, sink)
			wg.Add(1)
			go func() { defer wg.Done(); s.Run(ctx) }()
		}
		for i, s := range sinks {
			waitFor(b, time.Minute, "session "+strconv.Itoa(i)+" connected", func() bool { return s.lastState() == core.StateConnected })
		}
		time.Sleep(500 * time.Millisecond)
		rss := settledRSS()
		b.ReportMetric(float64(rss-base)/float64(n)/1024, fmt.Sprintf("rss-KiB/session@%d", n))
		b.Logf("%d sessions: RSS %d MiB (+%d KiB each)", n, rss>>20, (rss-base)/int64(n)>>10)
	}
}
