package core

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"
)

// Metrics are the gateway's Prometheus metrics, on a registry of its own so
// that several gateways (tests) can live in one process.
type Metrics struct {
	reg         *prometheus.Registry
	componentUp *prometheus.GaugeVec
	stanzas     *prometheus.CounterVec
	sessions    *prometheus.GaugeVec
	messages    *prometheus.CounterVec
	outboxDepth *prometheus.GaugeVec
	outboxDup   *prometheus.CounterVec
	errors      *prometheus.CounterVec
	panics      prometheus.Counter
	uploads     *prometheus.CounterVec
	// archiveDropped counts room messages not archived because too many
	// waited while the store failed.
	archiveDropped prometheus.Counter
}

func newMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		componentUp: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "transportd_component_up", Help: "1 while the component's XEP-0114 link is connected.",
		}, []string{"domain", "transport"}),
		stanzas: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "transportd_stanzas_total", Help: "Stanzas read from (in) and written to (out) the XMPP server, by element name.",
		}, []string{"direction", "kind"}),
		sessions: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "transportd_sessions", Help: "Legacy sessions running, per transport.",
		}, []string{"transport"}),
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "transportd_messages_total", Help: "Messages delivered, per transport and direction (to_xmpp, to_legacy).",
		}, []string{"transport", "direction"}),
		outboxDepth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "transportd_outbox_depth", Help: "Items waiting in the durable outbox, per direction.",
		}, []string{"direction"}),
		outboxDup: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "transportd_outbox_duplicates_total", Help: "Items refused by the outbox because their idempotency key was already seen.",
		}, []string{"direction"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "transportd_stanza_errors_total", Help: "Stanza errors sent to users, by condition.",
		}, []string{"condition"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "transportd_panics_total", Help: "Panics recovered in worker goroutines.",
		}),
		uploads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "transportd_uploads_total", Help: "Files put on the XMPP server's HTTP upload service (XEP-0363), per transport and result (ok, too_large, failed).",
		}, []string{"transport", "result"}),
		archiveDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "transportd_room_archive_dropped_total", Help: "Room messages left out of the rooms' archive because the store failed for too long.",
		}),
	}
	m.reg.MustRegister(m.componentUp, m.stanzas, m.sessions, m.messages, m.outboxDepth, m.outboxDup, m.errors, m.panics, m.uploads, m.archiveDropped,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Registry exposes the metrics registry (tests read it).
func (g *Gateway) Registry() *prometheus.Registry { return g.metrics.reg }

// routes installs /healthz, /readyz and /metrics.
func (g *Gateway) routes() {
	g.mux.HandleFunc("/", g.serveComponentHTTP)
	g.mux.Handle("/metrics", promhttp.HandlerFor(g.metrics.reg, promhttp.HandlerOpts{}))
	g.mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	g.mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
		defer cancel()
		var problems []string
		if err := g.store.Ping(ctx); err != nil {
			problems = append(problems, "store: "+err.Error())
		}
		for _, c := range g.running() {
			if !c.link.up.Load() {
				problems = append(problems, "component "+c.jid.String()+" not connected")
			}
		}
		if len(problems) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			for _, p := range problems {
				_, _ = w.Write([]byte(p + "\n"))
			}
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
}

// regLimiter rate-limits registration attempts per user and per legacy host,
// so the gateway cannot be used to try stolen passwords at speed.
type regLimiter struct {
	mu   sync.Mutex
	lims map[string]*rate.Limiter
	seen map[string]time.Time
}

func newRegLimiter() *regLimiter {
	return &regLimiter{lims: map[string]*rate.Limiter{}, seen: map[string]time.Time{}}
}

const (
	// A user may try 5 registrations in a burst, then one a minute.
	regUserBurst = 5
	regUserEvery = time.Minute
	// A legacy host gets 20 attempts in a burst from all users, then one
	// every 10 s.
	regHostBurst = 20
	regHostEvery = 10 * time.Second
)

// allow reports 0 when an attempt may go ahead, or how long to wait.
func (l *regLimiter) allow(userKey, hostKey string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	for k, t := range l.seen {
		if now.Sub(t) > time.Hour {
			delete(l.seen, k)
			delete(l.lims, k)
		}
	}
	get := func(k string, every time.Duration, burst int) *rate.Limiter {
		lim, ok := l.lims[k]
		if !ok {
			lim = rate.NewLimiter(rate.Every(every), burst)
			l.lims[k] = lim
		}
		l.seen[k] = now
		return lim
	}
	ru := get("u:"+userKey, regUserEvery, regUserBurst).ReserveN(now, 1)
	if d := ru.DelayFrom(now); d > 0 {
		ru.CancelAt(now)
		return d
	}
	if hostKey != "" {
		rh := get("h:"+hostKey, regHostEvery, regHostBurst).ReserveN(now, 1)
		if d := rh.DelayFrom(now); d > 0 {
			rh.CancelAt(now)
			ru.CancelAt(now)
			return d
		}
	}
	return 0
}
