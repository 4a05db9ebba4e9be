package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"mellium.im/xmpp/jid"

	"transportd/core/config"
	"transportd/core/store"
	"transportd/registration"
)

// Version is the program version, set by the linker.
var Version = "dev"

// Gateway hosts every enabled (domain, transport) component of one
// configuration.
type Gateway struct {
	cfg     *config.Config
	store   store.Store
	sealer  *registration.Sealer
	log     *slog.Logger
	metrics *Metrics
	outbox  *outbox
	limiter *regLimiter
	mux     *http.ServeMux

	mu         sync.Mutex
	components []*component
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
	g := &Gateway{
		cfg:     cfg,
		store:   st,
		sealer:  sealer,
		log:     log,
		metrics: newMetrics(),
		limiter: newRegLimiter(),
		mux:     http.NewServeMux(),
	}
	g.outbox = newOutbox(g)
	for i := range cfg.Domains {
		d := &cfg.Domains[i]
		for _, tc := range d.Transports {
			if !tc.Enabled {
				continue
			}
			t, ok := newTransport(tc.Name)
			if !ok {
				return nil, fmt.Errorf("domains.%q.transports.%s: no such transport (known: %v)", d.Name, tc.Name, Transports())
			}
			j, err := jid.Parse(tc.JID)
			if err != nil {
				return nil, fmt.Errorf("domains.%q.transports.%s.jid: %w", d.Name, tc.Name, err)
			}
			g.components = append(g.components, newComponent(g, d, tc, t, j))
		}
	}
	g.routes()
	return g, nil
}

// Handle registers an HTTP handler on the gateway's listener (webhooks,
// attachment links). Call it before Run.
func (g *Gateway) Handle(pattern string, h http.Handler) { g.mux.Handle(pattern, h) }

// Run connects every component and serves until ctx is cancelled.
func (g *Gateway) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 1)
	for _, c := range g.components {
		if st, ok := c.t.(Starter); ok {
			if err := st.Start(ctx, host{c}); err != nil {
				return fmt.Errorf("starting %s: %w", c.jid, err)
			}
		}
	}
	if g.cfg.HTTP.Listen != "" {
		ln, err := net.Listen("tcp", g.cfg.HTTP.Listen)
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
	wg.Add(1)
	go func() { defer wg.Done(); g.outbox.run(ctx) }()
	for _, c := range g.components {
		wg.Add(1)
		go func() { defer wg.Done(); c.run(ctx) }()
	}
	<-ctx.Done()
	wg.Wait()
	select {
	case err := <-errc:
		return err
	default:
		return nil
	}
}

// component finds the component serving a domain and transport.
func (g *Gateway) component(domain, transport string) *component {
	for _, c := range g.components {
		if c.domain.Name == domain && c.info.Name == transport {
			return c
		}
	}
	return nil
}

// goSafe runs f on a new goroutine that recovers panics, logs the stack and
// counts them.
func (g *Gateway) goSafe(name string, f func()) {
	go func() {
		defer g.recoverPanic(name)
		f()
	}()
}

func (g *Gateway) recoverPanic(where string) {
	if r := recover(); r != nil {
		g.metrics.panics.Inc()
		g.log.Error("panic recovered", "where", where, "panic", fmt.Sprint(r), "stack", stack())
	}
}
