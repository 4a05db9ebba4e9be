package email

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// BenchmarkMailToXMPP measures the time from the MTA accepting a mail
// (OpenSMTPD's 250 after DATA) to the XMPP message at the user's client:
// OpenSMTPD → LMTP → Dovecot → IDLE → gateway → Prosody → client.
func BenchmarkMailToXMPP(b *testing.B) {
	e := testMailEnv(b)
	benchLatency(b, e, gwOpts{extra: os.Getenv("TRANSPORTD_BENCH_DEFAULTS")}, "user13",
		func(raw string) error { return smtpInject(e.smtp, "bench@example.org", "user13@a.test", raw) })
}

// BenchmarkMailToXMPPPush is BenchmarkMailToXMPP with Dovecot's push
// notices waking the session (push.go).
func BenchmarkMailToXMPPPush(b *testing.B) {
	e := testMailEnv(b)
	o := pushBenchOpts(b, e, "user10@a.test")
	benchLatency(b, e, o, "user10", func(raw string) error { return smtpInject(e.smtp, "bench@example.org", "user10@a.test", raw) })
}

// BenchmarkLMTPToXMPP is the same, delivering straight into Dovecot over
// LMTP (no MTA queue): the gateway's own part of the latency.
func BenchmarkLMTPToXMPP(b *testing.B) {
	e := testMailEnv(b)
	benchLatency(b, e, gwOpts{extra: os.Getenv("TRANSPORTD_BENCH_DEFAULTS")}, "user13",
		func(raw string) error { return lmtpDeliver(e.lmtp, "user13@a.test", raw) })
}

func benchLatency(b *testing.B, e mailEnv, o gwOpts, user string, inject func(raw string) error) {
	startGW(b, e, o)
	c := dialUser(b, e, user, "a.test")
	run := xmpptest.RandomID()[:6]
	lat := make([]time.Duration, 0, b.N)
	gwLat := make([]time.Duration, 0, b.N)
	var mu sync.Mutex
	var exists time.Time
	testHookExists = func() {
		mu.Lock()
		exists = time.Now()
		mu.Unlock()
	}
	defer func() { testHookExists = nil }()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		subj := fmt.Sprintf("bench %s %d", run, i)
		raw := crlf("From: bench@example.org\nTo: " + user + "@a.test\nSubject: " + subj + "\n\nping\n")
		if err := inject(raw); err != nil {
			b.Fatal(err)
		}
		t0 := time.Now()
		if _, err := c.Next(wait, func(el *core.Element) bool {
			return el.Name.Local == "message" && el.ChildText("", "subject") == subj
		}); err != nil {
			b.Fatal(err)
		}
		now := time.Now()
		lat = append(lat, now.Sub(t0))
		mu.Lock()
		if exists.After(t0) {
			gwLat = append(gwLat, now.Sub(exists))
		}
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // one mail at a time: no batching
	}
	b.StopTimer()
	pct := func(l []time.Duration, p float64) float64 {
		if len(l) == 0 {
			return 0
		}
		sort.Slice(l, func(i, j int) bool { return l[i] < l[j] })
		return float64(l[min(len(l)-1, int(float64(len(l))*p))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(lat, 0.50), "p50-ms")
	b.ReportMetric(pct(lat, 0.99), "p99-ms")
	// From the server's "* n EXISTS" in IDLE to the XMPP message at the
	// client: what the gateway (and Prosody) add.
	b.ReportMetric(pct(gwLat, 0.50), "gw-p50-ms")
	b.ReportMetric(pct(gwLat, 0.99), "gw-p99-ms")
}

// BenchmarkIdleSessionMemory measures the gateway's memory per mailbox
// idling in IMAP IDLE on Dovecot (TRANSPORTD_BENCH_SESSIONS of them,
// default 200, spread over the test mailboxes).
func BenchmarkIdleSessionMemory(b *testing.B) {
	e := testMailEnv(b)
	n := 200
	if v, err := strconv.Atoi(os.Getenv("TRANSPORTD_BENCH_SESSIONS")); err == nil && v > 0 {
		n = v
	}
	users := 20
	if v, err := strconv.Atoi(os.Getenv("TRANSPORTD_TEST_MAIL_USER_COUNT")); err == nil && v > 0 {
		users = v
	}
	for it := 0; it < b.N; it++ {
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		tr := New()
		sinks := make([]*fakeSink, n)
		for i := range sinks {
			sinks[i] = newFakeSink(b)
			sinks[i].log = sinks[i].log.WithGroup("s") // same cost as core's per-user logger
		}
		runtime.GC()
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		g0 := runtime.NumGoroutine()
		start := time.Now()
		for i := 0; i < n; i++ {
			domain := []string{"a.test", "b.test"}[i%2]
			addr := fmt.Sprintf("user%d@%s", 1+(i/2)%users, domain)
			s := newSession(tr, testAccount(e, int64(1000+i), addr, nil), sinks[i])
			wg.Add(1)
			go func() { defer wg.Done(); s.Run(ctx) }()
			if i%20 == 19 {
				time.Sleep(100 * time.Millisecond) // do not storm Dovecot's login processes
			}
		}
		for i, s := range sinks {
			s.waitFor(b, 60*time.Second, "session "+strconv.Itoa(i)+" connected", func() bool {
				return len(s.states) > 0 && s.states[len(s.states)-1] == core.StateConnected
			})
		}
		connectTime := time.Since(start)
		time.Sleep(2 * time.Second) // every session in IDLE
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&after)
		g1 := runtime.NumGoroutine()
		heap := float64(after.HeapInuse) - float64(before.HeapInuse)
		stack := float64(after.StackInuse) - float64(before.StackInuse)
		b.ReportMetric((heap+stack)/float64(n), "B/session")
		b.ReportMetric(heap/float64(n), "heap-B/session")
		b.ReportMetric(stack/float64(n), "stack-B/session")
		b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/session")
		b.ReportMetric(connectTime.Seconds(), "connect-all-s")
		cancel()
		wg.Wait()
	}
}

// pushBenchOpts is the gateway configuration for benchmarks with
// Dovecot's push notices, for the mailbox of login, whose push METADATA
// entry is removed when the benchmark ends.
func pushBenchOpts(b *testing.B, e mailEnv, login string) gwOpts {
	addr, secretFile := os.Getenv("TRANSPORTD_TEST_PUSH_ADDR"), os.Getenv("TRANSPORTD_TEST_PUSH_SECRET_FILE")
	if addr == "" || secretFile == "" {
		b.Fatal("TRANSPORTD_TEST_PUSH_ADDR or TRANSPORTD_TEST_PUSH_SECRET_FILE not set: the Dovecot of scripts/testenv.sh sets them")
	}
	ih, _, _ := strings.Cut(e.imap, ":")
	ic := imapDial(b, e, login)
	b.Cleanup(func() { _ = ic.SetMetadata("", map[string]*[]byte{pushMetadataKey: nil}).Wait() })
	return gwOpts{httpAddr: addr, extra: "push_secret_file = " + strconv.Quote(secretFile) + "\npush_hosts = " + strconv.Quote(ih) + "\n"}
}
