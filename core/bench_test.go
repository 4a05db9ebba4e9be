package core_test

import (
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"testing"
	"time"

	"transportd/core"
	"transportd/internal/cputime"
	"transportd/internal/xmpptest"
)

// BenchmarkEchoRoundTrip pushes chat messages from a real XMPP client
// through Prosody into the component, the durable outbox, the (echo)
// transport, back through the outbox and Prosody to the client. It reports
// round-trip latency percentiles, messages per second and the process's
// CPU time per message (gateway and test client together: an upper bound
// for the gateway); each message crosses the component twice and is
// committed to the outbox twice.
//
//	make bench    (or: go test -run '^$' -bench EchoRoundTrip ./core/)
func BenchmarkEchoRoundTrip(b *testing.B) {
	env := xmpptest.Prosody(b)
	testGateway(b, env, "bench", "")
	const gw = "bench.a.test"
	c, err := xmpptest.DialErr(env, "user30@a.test", false)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	benchRegister(b, c, gw)

	// Sequential: latency of one message at a time.
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start, cpu0 := time.Now(), cputime.Process()
	for i := 0; i < b.N; i++ {
		body := "m" + strconv.Itoa(i)
		msg := core.NewElement("", "message", "to", "peer@"+gw, "type", "chat", "id", body)
		msg.AddText("", "body", body)
		t0 := time.Now()
		if err := c.SendErr(msg); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Next(10*time.Second, func(el *core.Element) bool {
			return el.Name.Local == "message" && el.ChildText("", "body") == "echo: "+body
		}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	reportLatency(b, lat, elapsed)
	b.ReportMetric(float64((cputime.Process()-cpu0).Microseconds())/1000/float64(b.N), "cpu-ms/msg")

	// Pipelined: throughput with 200 messages in flight.
	const burst = 200
	start, cpu0 = time.Now(), cputime.Process()
	for i := 0; i < burst; i++ {
		body := "p" + strconv.Itoa(i)
		msg := core.NewElement("", "message", "to", "peer@"+gw, "type", "chat", "id", body)
		msg.AddText("", "body", body)
		if err := c.SendErr(msg); err != nil {
			b.Fatal(err)
		}
	}
	for i := 0; i < burst; i++ {
		if _, err := c.Next(60*time.Second, func(el *core.Element) bool {
			return el.Name.Local == "message" && len(el.ChildText("", "body")) > 7 && el.ChildText("", "body")[:7] == "echo: p"
		}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(burst)/time.Since(start).Seconds(), "pipelined-msgs/s")
	b.ReportMetric(float64((cputime.Process()-cpu0).Microseconds())/1000/burst, "pipelined-cpu-ms/msg")
}

func reportLatency(b *testing.B, lat []time.Duration, elapsed time.Duration) {
	if len(lat) == 0 {
		return
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration { return lat[min(len(lat)-1, int(float64(len(lat))*p))] }
	b.ReportMetric(float64(pct(0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(pct(0.99).Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "msgs/s")
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.Logf("n=%d p50=%v p90=%v p99=%v max=%v heap=%d KiB", len(lat), pct(0.5), pct(0.9), pct(0.99), lat[len(lat)-1], ms.HeapAlloc>>10)
}

func benchRegister(b *testing.B, c *xmpptest.Client, gw string) {
	deadline := time.Now().Add(15 * time.Second)
	for {
		res, err := c.IQErr(registerIQ(gw, map[string]string{"username": "bench", "password": "pw"}), 3*time.Second)
		if err == nil && res.Get("type") == "result" {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("registering for the benchmark: %v %v", err, res)
		}
		time.Sleep(200 * time.Millisecond)
	}
	first, err := c.Next(10*time.Second, func(el *core.Element) bool {
		return xmpptest.IsFrom("presence", gw, "subscribe")(el) || (xmpptest.IsFrom("presence", gw, "")(el) && el.Child("", "show") == nil)
	})
	if err != nil {
		b.Fatal(err)
	}
	if first.Get("type") == "subscribe" {
		for _, typ := range []string{"subscribed", "subscribe"} {
			if err := c.SendErr(core.NewElement("", "presence", "to", gw, "type", typ)); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := c.Next(10*time.Second, func(el *core.Element) bool {
			return xmpptest.IsFrom("presence", gw, "")(el) && el.Child("", "show") == nil
		}); err != nil {
			b.Fatal(fmt.Errorf("gateway never showed connected: %w", err))
		}
	}
}
