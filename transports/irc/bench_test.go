package irc

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ergochat/irc-go/ircmsg"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// Benchmarks against the real servers (scripts/testenv.sh up prosody
// inspircd):
//
//	go test -run '^$' -bench . -benchtime 300x ./transports/irc/
//
// BenchmarkRelay measures room messages both ways between a real XMPP
// client (through Prosody) and a raw IRC client (on InspIRCd). By default
// the gateway is transportd in this process; to measure another gateway
// process (biboumi, or transportd started as a binary) set
//
//	TRANSPORTD_BENCH_IRC_JID     its component JID (irc.a.test)
//	TRANSPORTD_BENCH_IRC_PID     its pid, for CPU time and RSS
//	TRANSPORTD_BENCH_IRC_ADDR    the IRC server it reaches (default: the test InspIRCd)
//
// scripts/bench-irc.sh runs both gateways that way, side by side.

type benchTarget struct {
	jid      string // component JID
	pid      int    // process whose CPU and memory are measured
	inProc   bool
	ircAddr  string
	ircHost  string // server part of room addresses
	roomJID  string
	nickPref string
}

func target(b *testing.B, e ircEnv) benchTarget {
	t := benchTarget{jid: os.Getenv("TRANSPORTD_BENCH_IRC_JID"), ircAddr: os.Getenv("TRANSPORTD_BENCH_IRC_ADDR"), ircHost: "127.0.0.1"}
	if t.ircAddr == "" {
		t.ircAddr = e.irc
	}
	if t.jid == "" {
		startGW(b, e.xmpp, port(t.ircAddr), map[string]string{"flood_burst": "1000", "flood_rate": "100000", "trace": "false"})
		t.jid, t.pid, t.inProc = gwJID, os.Getpid(), true
	} else {
		pid, err := strconv.Atoi(os.Getenv("TRANSPORTD_BENCH_IRC_PID"))
		if err != nil {
			b.Fatal("TRANSPORTD_BENCH_IRC_PID must be set with TRANSPORTD_BENCH_IRC_JID")
		}
		t.pid = pid
	}
	return t
}

// procStat returns a process's CPU time (user+system) and resident set.
// The CPU time is the sum of its threads' schedstat (nanoseconds; threads
// that ended are not counted, and Go and biboumi keep theirs), else
// /proc/PID/stat in 10 ms ticks, too coarse for a burst of 200 messages.
func procStat(pid int) (cpu time.Duration, rss int64) {
	if tasks, err := os.ReadDir("/proc/" + strconv.Itoa(pid) + "/task"); err == nil {
		for _, t := range tasks {
			b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/task/" + t.Name() + "/schedstat")
			if f := strings.Fields(string(b)); err == nil && len(f) > 0 {
				ns, _ := strconv.ParseInt(f[0], 10, 64)
				cpu += time.Duration(ns)
			}
		}
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); cpu == 0 && err == nil {
		s := string(b)
		if i := strings.LastIndexByte(s, ')'); i > 0 {
			f := strings.Fields(s[i+2:])
			if len(f) > 13 {
				ut, _ := strconv.ParseInt(f[11], 10, 64)
				st, _ := strconv.ParseInt(f[12], 10, 64)
				cpu = time.Duration(ut+st) * time.Second / 100 // USER_HZ
			}
		}
	}
	if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "VmRSS:") {
				f := strings.Fields(l)
				if len(f) >= 2 {
					kb, _ := strconv.ParseInt(f[1], 10, 64)
					rss = kb << 10
				}
			}
		}
	}
	return cpu, rss
}

func percentiles(lat []time.Duration) (p50, p99 float64) {
	if len(lat) == 0 {
		return 0, 0
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(float64(len(lat))*p))].Microseconds()) / 1000
	}
	return pct(0.50), pct(0.99)
}

// BenchmarkRelay: latency of one message at a time (p50, p99), then a
// burst of 200 in flight (messages per second, and the gateway's CPU time
// per message: for the in-process gateway this includes the test's own
// XMPP and IRC clients, so it is an upper bound).
func BenchmarkRelay(b *testing.B) {
	e := testIRCEnv(b)
	tg := target(b, e)
	run := xmpptest.RandomID()[:4]
	ch := "#bench" + run
	room := ch + "%" + tg.ircHost + "@" + tg.jid
	raw := dialRaw(b, tg.ircAddr, "braw"+run)
	raw.join(ch)
	c, err := xmpptest.DialErr(e.xmpp, "user26@b.test", false)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	if os.Getenv("TRANSPORTD_BENCH_IRC_BIBOUMI") != "" {
		biboumiNoThrottle(b, c, tg)
	}
	nick := "bx" + run
	p := core.NewElement("", "presence", "to", room+"/"+nick)
	p.Add(core.NewElement(nsMUC, "x"))
	if err := c.SendErr(p); err != nil {
		b.Fatal(err)
	}
	if _, err := c.Next(30*time.Second, func(el *core.Element) bool {
		return el.Name.Local == "presence" && strings.HasPrefix(el.Get("from"), room+"/") && statusCodes(el)["110"]
	}); err != nil {
		b.Fatal(err)
	}
	if _, ok := raw.next(30*time.Second, func(m ircmsg.Message) bool { return m.Command == "JOIN" }); !ok {
		b.Fatal("the gateway never joined")
	}
	// Drain what joining sent (occupants, subject, gateway notices).
	time.Sleep(500 * time.Millisecond)
	fromRaw := room + "/" + raw.nick

	toIRC := func(body string, wait time.Duration) bool {
		_, ok := raw.next(wait, func(m ircmsg.Message) bool { return m.Command == "PRIVMSG" && last(m.Params) == body })
		return ok
	}
	b.Run("xmpp-to-irc", func(b *testing.B) {
		relayOneWay(b, tg, "x"+run, func(body string) {
			if err := c.SendErr(groupchat(room, body)); err != nil {
				b.Fatal(err)
			}
		}, toIRC, func(body string, wait time.Duration) bool {
			// The reflection to the sender is part of relaying it.
			_, err := c.Next(wait, func(el *core.Element) bool { return el.Name.Local == "message" && el.ChildText("", "body") == body })
			return err == nil
		})
	})
	b.Run("irc-to-xmpp", func(b *testing.B) {
		relayOneWay(b, tg, "i"+run, func(body string) { raw.send("PRIVMSG", ch, body) }, func(body string, wait time.Duration) bool {
			_, err := c.Next(wait, func(el *core.Element) bool {
				return el.Name.Local == "message" && el.Get("from") == fromRaw && el.ChildText("", "body") == body
			})
			return err == nil
		}, nil)
	})

	// Private messages, between the same two on the same connection.
	contact := raw.nick + "%" + tg.ircHost + "@" + tg.jid
	isPrivate := xmpptest.IsFrom("message", contact, "chat")
	b.Run("private-to-irc", func(b *testing.B) {
		relayOneWay(b, tg, "px"+run, func(body string) {
			m := core.NewElement("", "message", "to", contact, "type", "chat", "id", xmpptest.RandomID())
			m.AddText("", "body", body)
			if err := c.SendErr(m); err != nil {
				b.Fatal(err)
			}
		}, func(body string, wait time.Duration) bool {
			_, ok := raw.next(wait, func(m ircmsg.Message) bool {
				return m.Command == "PRIVMSG" && len(m.Params) == 2 && strings.EqualFold(m.Params[0], raw.nick) && m.Params[1] == body
			})
			return ok
		}, nil)
	})
	b.Run("private-to-xmpp", func(b *testing.B) {
		relayOneWay(b, tg, "pi"+run, func(body string) { raw.send("PRIVMSG", nick, body) }, func(body string, wait time.Duration) bool {
			_, err := c.Next(wait, func(el *core.Element) bool { return isPrivate(el) && el.ChildText("", "body") == body })
			return err == nil
		}, nil)
	})
}

// relayOneWay measures one direction of BenchmarkRelay: b.N messages one
// at a time (send, then wait until arrived: the latency; then for
// reflected, if not nil, outside it, so that the sender's backlog stays
// short), then the bursts (reflected then part of settling each). Bodies
// are tag-i, and btag-i in the bursts.
func relayOneWay(b *testing.B, tg benchTarget, tag string, send func(body string), arrived, reflected func(body string, wait time.Duration) bool) {
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		body := fmt.Sprintf("%s-%d", tag, i)
		t0 := time.Now()
		send(body)
		if !arrived(body, 10*time.Second) {
			b.Fatalf("message %d (%s) never arrived", i, body)
		}
		lat = append(lat, time.Since(t0))
		if reflected != nil {
			reflected(body, 10*time.Second)
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	p50, p99 := percentiles(lat)
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "seq-msgs/s")
	var settle func(string) bool
	if reflected != nil {
		settle = func(body string) bool { return reflected(body, 60*time.Second) }
	}
	burst(b, tg, func(i int) string {
		body := fmt.Sprintf("b%s-%d", tag, i)
		send(body)
		return body
	}, func(body string) bool { return arrived(body, 60*time.Second) }, settle)
}

// burst sends 200 messages without waiting, then waits for all of them
// to arrive (and, if settle is not nil, for settle to see each): it
// reports messages per second (sent to arrived) and the gateway's CPU
// time per message (sent to settled). It does so burstRounds times and
// reports the totals: one burst takes the gateway some 10-40 ms of CPU,
// too little for one garbage collection or timer more or less not to
// swing the figure.
func burst(b *testing.B, tg benchTarget, send func(i int) string, arrived, settle func(body string) bool) {
	const n = 200
	// Ten rounds by default; comparing two builds of transportd needs
	// more (TRANSPORTD_BENCH_BURSTS): CPU per message varies by about a
	// tenth between runs of ten.
	burstRounds := 10
	if v, err := strconv.Atoi(os.Getenv("TRANSPORTD_BENCH_BURSTS")); err == nil && v > 0 {
		burstRounds = v
	}
	var cpu, elapsed time.Duration
	for r := 0; r < burstRounds; r++ {
		cpu0, _ := procStat(tg.pid)
		start := time.Now()
		bodies := make([]string, n)
		for i := range bodies {
			bodies[i] = send(r*n + i)
		}
		for i, body := range bodies {
			if !arrived(body) {
				b.Fatalf("burst message %d never arrived", i)
			}
		}
		elapsed += time.Since(start)
		if settle != nil {
			for i, body := range bodies {
				if !settle(body) {
					b.Fatalf("burst message %d: never settled", i)
				}
			}
		}
		cpu1, _ := procStat(tg.pid)
		cpu += cpu1 - cpu0
	}
	_, rss := procStat(tg.pid)
	b.ReportMetric(float64(n*burstRounds)/elapsed.Seconds(), "burst-msgs/s")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(n*burstRounds), "cpu-ms/msg")
	b.ReportMetric(float64(rss)/(1<<20), "rss-MiB")
}

// BenchmarkSessionMemory joins N users (once, whatever -benchtime says) (sessions of the transport, each
// with its own IRC connection) to one channel on InspIRCd and reports the
// memory they hold: heap and goroutine stacks per user after a GC, and
// the growth of the process's resident set. Core's own per-user state
// (a goroutine and a small struct) is not included.
func BenchmarkSessionMemory(b *testing.B) {
	e := testIRCEnv(b)
	for _, n := range []int{1, 50, 200} {
		for _, shared := range []bool{false, true} {
			name := fmt.Sprintf("users-%d/own-channels", n)
			if shared {
				if n == 1 {
					continue
				}
				name = fmt.Sprintf("users-%d/one-channel", n)
			}
			b.Run(name, func(b *testing.B) {
				sessionMemory(b, e, n, shared, false) // once, whatever b.N: it measures a state, not a rate
			})
		}
		if e.tls != "" {
			b.Run(fmt.Sprintf("users-%d/own-channels-tls", n), func(b *testing.B) {
				sessionMemory(b, e, n, false, true)
			})
		}
	}
}

// sessionMemory: n sessions, each in its own channel, or all in one (each
// session then knows every other member: memory grows with n²); over TLS
// or not.
func sessionMemory(b *testing.B, e ircEnv, n int, shared, overTLS bool) {
	run := xmpptest.RandomID()[:4]
	d := map[string]string{dAllowedServers: "127.0.0.1", dPort: port(e.irc), dTLS: "false", dConnectTimeout: "60s"}
	if overTLS {
		d[dPort], d[dTLS], d[dTLSInsecure] = port(e.tls), "true", "true"
	}
	tr := New()
	runtime.GC()
	var ms0 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	_, rss0 := procStat(os.Getpid())
	g0 := runtime.NumGoroutine()
	ctx, cancel := context.WithCancel(context.Background())
	sessions := make([]*session, n)
	recs := make([]*recorder, n)
	for i := range sessions {
		rec := newRecorder(quietTB{b})
		rec.logger = discard
		rec.wait = 2 * time.Minute
		s := tr.NewSession(&core.Account{ID: int64(i + 1), JID: fmt.Sprintf("m%d@b.test", i), Defaults: d}, rec).(*session)
		sessions[i], recs[i] = s, rec
		go s.Run(ctx)
		ch := fmt.Sprintf("#mem%s-%d", run, i)
		if shared {
			ch = "#mem" + run
		}
		_ = s.JoinRoom(ctx, ch+"%127.0.0.1", fmt.Sprintf("m%s%d", run, i), "")
	}
	for i, rec := range recs {
		rec.next(quietTB{b}, "joined", func(ev any) bool {
			if e, ok := ev.(recError); ok {
				b.Fatalf("session %d: %v", i, e.err)
			}
			_, ok := ev.(recJoined)
			return ok
		})
	}
	time.Sleep(time.Second) // the last JOINs reach every session
	for _, rec := range recs {
		rec.mu.Lock()
		rec.events = nil // the test's recorder, not the transport's memory
		rec.mu.Unlock()
	}
	runtime.GC()
	var ms1 runtime.MemStats
	runtime.ReadMemStats(&ms1)
	_, rss1 := procStat(os.Getpid())
	g1 := runtime.NumGoroutine()
	heap := float64(int64(ms1.HeapInuse) - int64(ms0.HeapInuse))
	stack := float64(int64(ms1.StackInuse) - int64(ms0.StackInuse))
	b.ReportMetric(heap/float64(n), "heap-B/user")
	b.ReportMetric(stack/float64(n), "stack-B/user")
	b.ReportMetric(float64(rss1-rss0)/float64(n), "rss-B/user")
	b.ReportMetric(float64(g1-g0)/float64(n), "goroutines/user")
	b.ReportMetric(float64(rss1)/(1<<20), "rss-MiB")
	cancel()
	for _, s := range sessions {
		<-s.done.Chan()
	}
}

// benchUsers are the XMPP accounts BenchmarkJoinedUsers logs in (the test
// Prosody has TRANSPORTD_TEST_USER_COUNT per domain, 30 unless the
// environment was made with more: TESTENV_USER_COUNT).
func benchUsers(n int) []string {
	per, err := strconv.Atoi(os.Getenv("TRANSPORTD_TEST_USER_COUNT"))
	if err != nil || per <= 0 {
		per = 30
	}
	var out []string
	for i := 1; i <= per && len(out) < n; i++ {
		out = append(out, fmt.Sprintf("user%d@b.test", i))
	}
	for i := 1; i <= per && len(out) < n; i++ {
		out = append(out, fmt.Sprintf("user%d@a.test", i))
	}
	return out
}

// BenchmarkJoinedUsers has N real XMPP users (through Prosody) each join
// a channel of their own, and reports the gateway process's resident set
// and its growth per user since before the first user joined.
// Meant for gateways measured from outside (TRANSPORTD_BENCH_IRC_PID:
// biboumi, transportd as a binary); in this process the figure includes
// the test's XMPP clients. Runs once, whatever -benchtime says.
func BenchmarkJoinedUsers(b *testing.B) {
	e := testIRCEnv(b)
	tg := target(b, e)
	// One user joins and leaves before the baseline: the figures per user
	// are then what another user costs, not what a gateway loads once for
	// its first (for transportd some 1 MB of its program's code paged in
	// on the first join, 5 KiB per user of 200).
	leave := joinUsers(b, e, tg, 1)
	leave()
	measureJoins(b, tg, func(b *testing.B, n int) func() { return joinUsers(b, e, tg, n) })
}

// measureJoins reports the gateway's resident set with each of
// benchUserCounts joined (by join, which returns their leave).
func measureJoins(b *testing.B, tg benchTarget, join func(b *testing.B, n int) (leave func())) {
	// Growth is measured from the resident set before the first user: the
	// memory of an earlier run's users is not all given back, so a figure
	// relative to the start of each run would be too low (even negative).
	// With TRANSPORTD_BENCH_SETTLE, the process first sits that long too,
	// so that both ends of the idle figure are taken alike.
	settle, _ := time.ParseDuration(os.Getenv("TRANSPORTD_BENCH_SETTLE"))
	_, rss0 := procStat(tg.pid)
	if settle > 0 {
		rss0 = settledRSS(tg.pid, settle).mean
	}
	keepSmaps(b, tg.pid, "before")
	counts := benchUserCounts(b)
	for _, n := range counts {
		b.Run(fmt.Sprintf("users-%d", n), func(b *testing.B) {
			defer join(b, n)()
			time.Sleep(time.Second)
			_, rss1 := procStat(tg.pid)
			b.ReportMetric(float64(rss1)/(1<<20), "rss-MiB")
			b.ReportMetric(float64(rss1-rss0)/float64(n)/1024, "rss-KiB/user")
			// TRANSPORTD_BENCH_SETTLE (a duration): the resident set again
			// once the users sat that long, idle. A second after the
			// joins a Go process still holds their garbage, until its next
			// collection (at the latest two minutes later) and the return
			// of freed pages; users sit in channels for hours.
			if settle > 0 && n == counts[len(counts)-1] {
				st := settledRSS(tg.pid, settle)
				keepSmaps(b, tg.pid, fmt.Sprintf("users-%d", n))
				b.ReportMetric(float64(st.mean)/(1<<20), "settled-rss-MiB")
				b.ReportMetric(float64(st.mean-rss0)/float64(n)/1024, "settled-rss-KiB/user")
				b.ReportMetric(float64(st.min-rss0)/float64(n)/1024, "settled-min-KiB/user")
				b.ReportMetric(float64(st.max-rss0)/float64(n)/1024, "settled-max-KiB/user")
			}
		})
	}
}

// keepSmaps copies the process's memory map with each mapping's resident
// pages (/proc/PID/smaps) into TRANSPORTD_BENCH_SMAPS_DIR, when set, as
// PID-when.smaps: which mappings (the Go heap's arena, C's heap, the
// program's pages) a difference between two runs sits in.
func keepSmaps(b *testing.B, pid int, when string) {
	dir := os.Getenv("TRANSPORTD_BENCH_SMAPS_DIR")
	if dir == "" {
		return
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", pid))
	if err == nil {
		err = os.WriteFile(fmt.Sprintf("%s/%d-%s.smaps", dir, pid, when), data, 0o644)
	}
	if err != nil {
		b.Logf("keeping smaps: %v", err)
	}
}

// rssWindow is the resident set of a process over some time: its mean,
// lowest and highest, sampled each second.
type rssWindow struct{ mean, min, max int64 }

// settledRSS waits settle and returns the resident set of pid over its
// last minute (its second half when shorter than two). One sample was
// not enough: both gateways do something every minute or two while
// their users sit idle (transportd PINGs a silent server after a minute,
// the servers PING too), and what that allocates stays resident until
// collected and returned, some 2 KiB a user for transportd for ten to
// twenty seconds of each minute. A sample at the end of the wait fell in
// or out of that by chance: the idle figure of one build moved by 2 KiB
// a user from run to run. The mean over a minute is what the machine
// gives the gateway, taken alike for both.
func settledRSS(pid int, settle time.Duration) rssWindow {
	window := time.Minute
	if settle < 2*window {
		window = settle / 2
	}
	time.Sleep(settle - window)
	var w rssWindow
	var sum, k int64
	for end := time.Now().Add(window); ; {
		_, rss := procStat(pid)
		if k == 0 || rss < w.min {
			w.min = rss
		}
		w.max = max(w.max, rss)
		sum += rss
		k++
		if !time.Now().Before(end) {
			break
		}
		time.Sleep(time.Second)
	}
	w.mean = sum / k
	return w
}

// BenchmarkJoinedBigChannel is JoinedUsers with every user in one busy
// channel: TRANSPORTD_BENCH_CHANNEL_MEMBERS (300 unless set) IRC clients
// sit in it first, and each user's gateway connection learns them all
// (NAMES, with user and host: userhost-in-names), as in a project's
// channel on a real network. What a user then costs is mostly what the
// gateway keeps of the channel's members for that user.
func BenchmarkJoinedBigChannel(b *testing.B) {
	e := testIRCEnv(b)
	tg := target(b, e)
	members := 300
	if v := os.Getenv("TRANSPORTD_BENCH_CHANNEL_MEMBERS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			b.Fatalf("TRANSPORTD_BENCH_CHANNEL_MEMBERS=%q: want a whole number", v)
		}
		members = n
	}
	run := xmpptest.RandomID()[:4]
	channel := "#big" + run
	raws := make([]*rawIRC, members)
	for i := range raws {
		raws[i] = dialRawNoWait(b, e.irc, fmt.Sprintf("m%s%03d", run, i))
	}
	for _, r := range raws {
		r.registered()
		r.send("JOIN", channel)
	}
	for _, r := range raws {
		r.expect("end of NAMES", func(m ircmsg.Message) bool { return m.Command == "366" })
	}
	leave := joinUsers(b, e, tg, 1, channel)
	leave()
	measureJoins(b, tg, func(b *testing.B, n int) func() { return joinUsers(b, e, tg, n, channel) })
}

// benchUserCounts are JoinedUsers' numbers of users: 1, 50 and 200, or
// TRANSPORTD_BENCH_USERS (comma-separated, rising; the Prosody needs
// TESTENV_USER_COUNT of half the largest). The resident set is taken
// again TRANSPORTD_BENCH_SETTLE after the largest.
func benchUserCounts(b *testing.B) []int {
	v := os.Getenv("TRANSPORTD_BENCH_USERS")
	if v == "" {
		return []int{1, 50, 200}
	}
	var counts []int
	for _, f := range strings.Split(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 || (len(counts) > 0 && n <= counts[len(counts)-1]) {
			b.Fatalf("TRANSPORTD_BENCH_USERS=%q: want rising whole numbers, like 1,200,1000", v)
		}
		counts = append(counts, n)
	}
	return counts
}

// joinUsers has the first n benchUsers join a channel each, and returns
// once all are in; leave disconnects them and waits for the gateway to
// quit IRC.
//
// With channel set, they all join that channel rather than one each.
func joinUsers(b *testing.B, e ircEnv, tg benchTarget, n int, channel ...string) (leave func()) {
	b.Helper()
	if len(benchUsers(n)) < n {
		b.Skipf("the test Prosody has fewer than %d accounts (TESTENV_USER_COUNT)", n)
	}
	run := xmpptest.RandomID()[:4]
	roomOf := func(i int) string {
		if len(channel) > 0 {
			return fmt.Sprintf("%s%%%s@%s", channel[0], tg.ircHost, tg.jid)
		}
		return fmt.Sprintf("#ju%s-%d%%%s@%s", run, i, tg.ircHost, tg.jid)
	}
	var clients []*xmpptest.Client
	leave = func() {
		for _, c := range clients {
			c.Close()
		}
		time.Sleep(2 * time.Second) // let the gateway quit IRC
	}
	for i, u := range benchUsers(n) {
		c, err := xmpptest.DialErr(e.xmpp, u, false)
		if err != nil {
			leave()
			b.Fatalf("%s: %v", u, err)
		}
		clients = append(clients, c)
		room := roomOf(i)
		p := core.NewElement("", "presence", "to", fmt.Sprintf("%s/ju%s%d", room, run, i))
		p.Add(core.NewElement(nsMUC, "x"))
		if err := c.SendErr(p); err != nil {
			leave()
			b.Fatal(err)
		}
	}
	for i, c := range clients {
		room := roomOf(i)
		if _, err := c.Next(2*time.Minute, func(el *core.Element) bool {
			return el.Name.Local == "presence" && strings.HasPrefix(el.Get("from"), room+"/") && statusCodes(el)["110"]
		}); err != nil {
			leave()
			b.Fatalf("user %d never joined: %v", i, err)
		}
	}
	return leave
}

// biboumiNoThrottle turns biboumi's flood control (throttle_limit) off for
// the benchmark's user on the IRC server, with biboumi's Configure command
// on the server's JID. With TRANSPORTD_BENCH_BIBOUMI_HISTORY=off it also
// turns off biboumi's recording of channel messages in its database
// (record_history, in the Configure command on biboumi's own JID), which
// biboumi does by default and transportd does not do at all.
func biboumiNoThrottle(b *testing.B, c *xmpptest.Client, tg benchTarget) {
	configure := func(to string, values map[string]string, empty ...string) {
		exec := func(cmd *core.Element) *core.Element {
			iq := core.NewElement("", "iq", "type", "set", "to", to)
			res, err := c.IQErr(iq.Add(cmd), 10*time.Second)
			if err != nil || res.Get("type") != "result" {
				b.Fatalf("biboumi configure %s: %v %v", to, err, res)
			}
			return res
		}
		res := exec(core.NewElement(nsCommands, "command", "node", "configure", "action", "execute"))
		cmd := res.Child(nsCommands, "command")
		fields := map[string]bool{}
		if form := cmd.Child("jabber:x:data", "x"); form != nil {
			for _, f := range form.Children {
				if f.Name.Local == "field" {
					fields[f.Get("var")] = true
				}
			}
		}
		x := core.NewElement("jabber:x:data", "x", "type", "submit")
		for k, v := range values {
			if !fields[k] {
				b.Fatalf("biboumi's configure form on %s has no field %s", to, k)
			}
			x.Add(core.NewElement("", "field", "var", k).AddText("", "value", v))
		}
		for _, k := range empty {
			x.Add(core.NewElement("", "field", "var", k))
		}
		exec(core.NewElement(nsCommands, "command", "node", "configure", "sessionid", cmd.Get("sessionid"), "action", "complete").Add(x))
	}
	configure(tg.ircHost+"@"+tg.jid, map[string]string{"ports": "6667", "verify_cert": "false", "throttle_limit": "-1", "max_history_length": "20"}, "tls_ports")
	if os.Getenv("TRANSPORTD_BENCH_BIBOUMI_HISTORY") == "off" {
		configure(tg.jid, map[string]string{"record_history": "false"})
		b.Log("biboumi: record_history off")
	}
}
