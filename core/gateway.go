package core

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/collectors"
	"mellium.im/xmpp/jid"

	"transportd/core/config"
	"transportd/core/store"
	"transportd/internal/workers"
	"transportd/registration"
)

// Version is the program version, set by the linker.
var Version = "dev"

// Gateway hosts every enabled (domain, transport) component of one
// configuration. The set of components follows the configuration (Reload)
// and the operators' runtime choices (admin commands, persisted in the
// store).
type Gateway struct {
	store   store.Store
	sealer  *registration.Sealer
	log     *slog.Logger
	metrics *Metrics
	outbox  *outbox
	limiter *regLimiter
	mux     *http.ServeMux
	started time.Time

	// work counts the goroutines started with goSafe; Run waits for them
	// (a while) before it returns. bg is cancelled when Run stops: work
	// contexts derive from it.
	work     sync.WaitGroup
	bg       context.Context
	bgCancel context.CancelFunc

	// cfgNow is the current configuration, readable without mu (Starter
	// transports read it through their Host while mu is held).
	cfgNow atomic.Pointer[config.Config]

	mu         sync.RWMutex
	cfg        *config.Config
	runCtx     context.Context       // set by Run; nil before
	components map[string]*component // by component JID
}

// Options are the optional parts of New.
type Options struct {
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// New builds a gateway from a validated configuration and an open store. It
// does no network I/O; Run does.
func New(cfg *config.Config, st store.Store, opts Options) (*Gateway, error) {
	sealer, err := registration.NewSealer(cfg.Store.Key)
	if err != nil {
		return nil, fmt.Errorf("store key: %w", err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	if err := checkTransports(cfg); err != nil {
		return nil, err
	}
	g := &Gateway{
		cfg:        cfg,
		store:      st,
		sealer:     sealer,
		log:        log,
		metrics:    newMetrics(),
		limiter:    newRegLimiter(),
		mux:        http.NewServeMux(),
		components: map[string]*component{},
		started:    time.Now(),
	}
	if db, ok := st.(interface{ DB() *sql.DB }); ok { // go_sql_* of the store's connection pool
		g.metrics.reg.MustRegister(collectors.NewDBStatsCollector(db.DB(), "transportd"))
	}
	g.cfgNow.Store(cfg)
	g.bg, g.bgCancel = context.WithCancel(context.Background())
	g.outbox = newOutbox(g)
	g.routes()
	return g, nil
}

// checkTransports makes sure every enabled transport is compiled in.
func checkTransports(cfg *config.Config) error {
	for _, d := range cfg.Domains {
		for _, tc := range d.Transports {
			if _, ok := newTransport(tc.Name); !ok {
				return fmt.Errorf("domains.%q.transports.%s: no such transport (known: %v)", d.Name, tc.Name, Transports())
			}
			if _, err := jid.Parse(tc.JID); err != nil {
				return fmt.Errorf("domains.%q.transports.%s.jid: %w", d.Name, tc.Name, err)
			}
		}
	}
	return nil
}

// Handle registers an HTTP handler on the gateway's listener. Call it
// before Run. Transports use their Host instead.
func (g *Gateway) Handle(pattern string, h http.Handler) { g.mux.Handle(pattern, h) }

// Run connects every component and serves until ctx is cancelled.
func (g *Gateway) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	g.mu.RLock()
	listen := g.cfg.HTTP.Listen
	g.mu.RUnlock()
	if listen != "" {
		ln, err := net.Listen("tcp", listen)
		if err != nil {
			return fmt.Errorf("http.listen: %w", err)
		}
		srv := &http.Server{Handler: g.mux, ReadHeaderTimeout: 10 * time.Second}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				select {
				case errc <- err:
				default:
				}
				cancel()
			}
		}()
		context.AfterFunc(ctx, func() {
			sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
			defer c()
			_ = srv.Shutdown(sctx)
		})
		g.log.Info("http listener up", "addr", ln.Addr().String())
	}
	g.mu.Lock()
	g.runCtx = ctx
	err := g.reconcileLocked()
	g.mu.Unlock()
	if err != nil {
		cancel()
		wg.Wait()
		return err
	}
	wg.Add(1)
	// The outbox stops first, finishing the batch it is sending (and its
	// confirmation) while the links are still up; then the components go.
	octx, ocancel := context.WithCancel(context.Background())
	odone := make(chan struct{})
	go func() { defer wg.Done(); defer close(odone); g.outbox.run(octx) }()
	<-ctx.Done()
	ocancel()
	select {
	case <-odone:
	case <-time.After(20 * time.Second):
		g.log.Warn("the outbox did not stop within 20s")
	}
	g.mu.Lock()
	for key, c := range g.components {
		c.shutdown("")
		delete(g.components, key)
	}
	g.mu.Unlock()
	wg.Wait()
	// Background work (registrations, roster pushes, sessions) ends once
	// the components are stopped and its contexts cancelled.
	g.bgCancel()
	drained := make(chan struct{})
	go func() { g.work.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(10 * time.Second):
		g.log.Warn("some background work did not finish within 10s of shutdown")
	}
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// Reload applies a new configuration without a restart: components whose
// link settings did not change keep running (and their users' sessions),
// with the new policies and defaults; others are started or stopped. The
// HTTP listener and the store are not reloaded.
func (g *Gateway) Reload(cfg *config.Config) error {
	if err := checkTransports(cfg); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cfg = cfg
	g.cfgNow.Store(cfg)
	if g.runCtx == nil {
		return nil
	}
	return g.reconcileLocked()
}

// overrideKey is the store setting that records an operator's runtime
// choice to enable or disable a transport for a domain.
func overrideKey(domain, transport string) string {
	return "enabled/" + domain + "/" + transport
}

// enabled reports whether a transport is wanted for a domain: the config's
// choice unless an operator changed it at runtime.
func (g *Gateway) enabled(ctx context.Context, domain string, tc config.Transport) bool {
	v, err := g.store.GetSetting(ctx, overrideKey(domain, tc.Name))
	if err == nil {
		return v == "true"
	}
	return tc.Enabled
}

// SetEnabled records an operator's runtime choice and applies it.
func (g *Gateway) SetEnabled(ctx context.Context, domain, transport string, on bool) error {
	if err := g.store.SetSetting(ctx, overrideKey(domain, transport), strconv.FormatBool(on)); err != nil {
		return err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.runCtx == nil {
		return nil
	}
	return g.reconcileLocked()
}

// linkKey is what a running component cannot change in place.
func linkKey(xc config.XMPP, tc config.Transport) string {
	return fmt.Sprint(xc.ComponentAddr, "|", xc.ReconnectMin, "|", xc.ReconnectMax, "|", xc.MaxStanzaBytes, "|", xc.MaxStanzaDepth, "|", tc.JID, "|", tc.Secret)
}

// reconcileLocked makes the running components match the configuration
// and the runtime overrides. g.mu must be held.
func (g *Gateway) reconcileLocked() error {
	ctx := g.runCtx
	want := map[string]bool{}
	for i := range g.cfg.Domains {
		d := &g.cfg.Domains[i]
		for _, tc := range d.Transports {
			if !g.enabled(ctx, d.Name, tc) {
				continue
			}
			want[tc.JID] = true
			if c, ok := g.components[tc.JID]; ok {
				if c.info.Name == tc.Name && linkKey(c.xc, c.tcfg()) == linkKey(g.cfg.XMPP, tc) {
					c.conf.Store(&compConf{domain: d, tc: tc})
					continue
				}
				c.shutdown("the gateway is being reconfigured")
				delete(g.components, tc.JID)
			}
			t, _ := newTransport(tc.Name)
			j, _ := jid.Parse(tc.JID)
			c := newComponent(g, g.cfg.XMPP, d, tc, t, j)
			cctx, cancel := context.WithCancel(ctx)
			if st, ok := t.(Starter); ok {
				if err := st.Start(cctx, host{c}); err != nil {
					cancel()
					return fmt.Errorf("starting %s: %w", tc.JID, err)
				}
			}
			c.cancel = cancel
			g.components[tc.JID] = c
			g.goSafe("component", func() { c.run(cctx) })
			c.log.Info("component started", "jid", tc.JID)
		}
	}
	for key, c := range g.components {
		if !want[key] {
			c.shutdown("the " + c.info.DisplayName + " gateway was disabled by the operator")
			delete(g.components, key)
		}
	}
	return nil
}

// component finds the running component serving a domain and transport.
func (g *Gateway) component(domain, transport string) *component {
	g.mu.RLock()
	defer g.mu.RUnlock()
	for _, c := range g.components {
		if c.dom().Name == domain && c.info.Name == transport {
			return c
		}
	}
	return nil
}

// running returns the running components.
func (g *Gateway) running() []*component {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]*component, 0, len(g.components))
	for _, c := range g.components {
		out = append(out, c)
	}
	return out
}

// config returns the current configuration.
func (g *Gateway) config() *config.Config { return g.cfgNow.Load() }

// workCtx bounds work handed off from the read loop; it ends early when
// the gateway stops.
func (g *Gateway) workCtx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(g.bg, d)
}

// goSafe runs f on a goroutine (a reused one, see workers) that recovers
// panics, logs the stack and counts them.
func (g *Gateway) goSafe(name string, f func()) {
	g.work.Add(1)
	workers.Go(func() {
		defer g.work.Done()
		defer g.recoverPanic(name)
		f()
	})
}

// goWork is goSafe for work bounded in time: f gets a context that ends
// after d, or when the gateway stops.
func (g *Gateway) goWork(name string, d time.Duration, f func(ctx context.Context)) {
	g.goSafe(name, func() {
		ctx, cancel := g.workCtx(d)
		defer cancel()
		f(ctx)
	})
}

// startSafe starts a Starter session: the gateway's shutdown waits for
// its done as for a goSafe goroutine; a panic in Start itself is logged
// and counted, and counts as the end.
func (g *Gateway) startSafe(ctx context.Context, name string, s SessionStarter) {
	g.work.Add(1)
	var once sync.Once
	done := func() { once.Do(g.work.Done) }
	defer func() {
		if r := recover(); r != nil {
			done()
			g.metrics.panics.Inc()
			g.log.Error("panic recovered", "where", name, "panic", fmt.Sprint(r), "stack", stack())
		}
	}()
	s.Start(ctx, done)
}

func (g *Gateway) recoverPanic(where string) {
	if r := recover(); r != nil {
		g.metrics.panics.Inc()
		g.log.Error("panic recovered", "where", where, "panic", fmt.Sprint(r), "stack", stack())
	}
}
