package sms

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"transportd/core/store"
	"transportd/internal/xmpptest"
)

// BenchmarkWebhookToXMPP measures an incoming SMS from Twilio's webhook
// POST to the chat message at a real client through Prosody, and reports
// the median and 99th percentile (run with -benchtime 300x or so).
func BenchmarkWebhookToXMPP(b *testing.B) {
	env := xmpptest.Prosody(b)
	fake := newFakeTwilio(b)
	sid, token := fake.AddAccount()
	const number = "+12025550100"
	fake.AddNumber(sid, number)
	newTestGW(b, env, fake, "")
	c := xmpptest.Dial(b, env, "user25@a.test", false)
	waitConnected(b, c)
	register(b, c, map[string]string{"number": number, "account_sid": sid, "auth_token": token})
	const from = "+12025550123"
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		body := fmt.Sprintf("bench %d", i)
		m := fake.Receive(from, number, body)
		start := time.Now()
		if status, _ := fake.deliverIncoming(m); status != 200 {
			b.Fatalf("webhook answered %d", status)
		}
		c.Expect(wait, "benchmark message", hasBody(from+"@"+gwJID, body))
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lat)
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// BenchmarkOutboxAccept measures how many message stanzas per second a
// client gets committed to the outbox for sending (Twilio is throttled to
// almost nothing so the items stay queued; accepted = queued + sent).
func BenchmarkOutboxAccept(b *testing.B) {
	env := xmpptest.Prosody(b)
	fake := newFakeTwilio(b)
	sid, token := fake.AddAccount()
	const number = "+12025550100"
	fake.AddNumber(sid, number)
	g := newTestGW(b, env, fake, `rate_per_second = "0.001"`)
	c := xmpptest.Dial(b, env, "user26@a.test", false)
	waitConnected(b, c)
	register(b, c, map[string]string{"number": number, "account_sid": sid, "auth_token": token})
	acct := g.account("user26@a.test")
	prefix := xmpptest.RandomID()
	accepted := func() int {
		n, err := g.st.Pending(context.Background(), acct.ID, store.ToLegacy)
		if err != nil {
			b.Fatal(err)
		}
		return n + fake.CreateCount()
	}
	// waitAccepted waits until n stanzas are committed; the client keeps at
	// most window stanzas ahead of the gateway, as a real client's TCP
	// window would, so the benchmark measures sustained throughput.
	waitAccepted := func(n int) {
		deadline := time.Now().Add(2 * time.Minute)
		for accepted() < n {
			if time.Now().After(deadline) {
				b.Fatalf("%d of %d accepted", accepted(), n)
			}
			time.Sleep(time.Millisecond)
		}
	}
	const window = 256
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		if i >= window && i%64 == 0 {
			waitAccepted(i - window)
		}
		to := fmt.Sprintf("+1202555%04d@%s", i%100, gwJID)
		// Raw writes: Client.Send's per-call context races with mellium's
		// write-deadline goroutine under rapid sends (a spurious i/o
		// timeout); nothing else writes on this stream meanwhile.
		if err := c.SendRaw(chat(to, fmt.Sprintf("%s-%d", prefix, i), "benchmark message", false).String()); err != nil {
			b.Fatal(err)
		}
	}
	waitAccepted(b.N)
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "stanzas/s")
}
