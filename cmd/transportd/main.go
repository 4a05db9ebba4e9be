// Command transportd runs the XMPP gateway host.
//
//	transportd -config PATH          run
//	transportd check -config PATH    validate a configuration
//	transportd keygen [-out PATH]    create a credential encryption key
//	transportd transports            list the transports compiled in
//	transportd version               print the version
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"syscall"

	"transportd/core"
	"transportd/core/config"
	"transportd/core/store"
	"transportd/internal/memtrim"
	"transportd/registration"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "version":
			fmt.Fprintln(stdout, "transportd", core.Version)
			return 0
		case "transports":
			for _, name := range core.Transports() {
				fmt.Fprintln(stdout, name)
			}
			return 0
		case "check":
			return check(args[1:], stdout, stderr)
		case "keygen":
			return keygen(args[1:], stdout, stderr)
		case "help", "-h", "-help", "--help":
			usage(stdout)
			return 0
		}
	}
	fs := flag.NewFlagSet("transportd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path to the TOML configuration (required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" || fs.NArg() > 0 {
		usage(stderr)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return serve(ctx, *path, stderr, hup)
}

// serve runs the gateway until ctx is done, reloading the configuration on
// each value from hup. A configuration that fails to load on reload is
// refused with its problems logged, and the running one kept.
func serve(ctx context.Context, path string, stderr io.Writer, hup <-chan os.Signal) int {
	cfg, err := config.Load(path, core.Transports())
	if err != nil {
		fmt.Fprintf(stderr, "transportd: %v\n", err)
		return 1
	}
	level := new(slog.LevelVar)
	level.Set(cfg.Log.Level)
	log := newLogger(cfg, level, stderr)
	slog.SetDefault(log)
	st, err := store.Open(cfg.Store.Path)
	if err != nil {
		log.Error("opening the store", "path", cfg.Store.Path, "error", err)
		return 1
	}
	defer st.Close()
	gw, err := core.New(cfg, st, core.Options{Logger: log})
	if err != nil {
		log.Error("starting", "error", err)
		return 1
	}
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				next, err := config.Load(path, core.Transports())
				if err != nil {
					log.Error("configuration reload refused; keeping the running configuration", "error", err)
					continue
				}
				if next.Store.Path != cfg.Store.Path || next.HTTP.Listen != cfg.HTTP.Listen || !bytes.Equal(next.Store.Key, cfg.Store.Key) {
					log.Warn("store and http settings change only with a restart; the rest is applied")
				}
				if err := gw.Reload(next); err != nil {
					log.Error("configuration reload refused; keeping the running configuration", "error", err)
					continue
				}
				level.Set(next.Log.Level)
				log.Info("configuration reloaded", "path", path)
			}
		}
	}()
	// The collector may let the heap grow to three times what is live
	// (GOGC=200, unless GOGC is set): relaying a burst of IRC lines took
	// 5 to 20 % less CPU per message than at Go's default of 100. The
	// room that costs is given back once traffic is quiet (users sitting
	// in channels): see package memtrim.
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(200)
	}
	// One processor, unless GOMAXPROCS is set. Relaying a message is a
	// few microseconds of work handed between goroutines (the XMPP
	// reader, the user's session, the IRC connection and back); with a
	// second processor idle, each hand-off wakes a thread to run it, and
	// the scheduler spins looking for work. With one, relaying a burst of
	// IRC lines took about a quarter less CPU per message, at the same
	// throughput (scripts/bench-irc.sh, README "Performance"). One core
	// relays some 30,000 messages a second, more than the XMPP server
	// it is attached to (Prosody's is one thread too); an operator who
	// wants more sets GOMAXPROCS.
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	log.Info("transportd starting", "version", core.Version, "config", path, "procs", runtime.GOMAXPROCS(0))
	// Give the heap's spare room back once traffic is quiet.
	trim := &memtrim.Trimmer{
		C: &memtrim.CHeap{Free: store.MallocFree, Trim: store.TrimMalloc}, // SQLite's
		Trimmed: func(freed uint64) {
			log.Debug("returned free heap to the system", "bytes", freed)
		},
	}
	go trim.Run(ctx, memtrim.Every)
	if err := gw.Run(ctx); err != nil {
		log.Error("stopped", "error", err)
		return 1
	}
	log.Info("transportd stopped")
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage:
  transportd -config PATH          run the gateway
  transportd check -config PATH    validate a configuration and list every problem
  transportd keygen [-out PATH]    create a key for encrypting stored credentials
  transportd transports            list the transports compiled in
  transportd version               print the version
`)
}

func check(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path to the TOML configuration (required)")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *path == "" {
		fmt.Fprintln(stderr, "transportd check: -config is required")
		return 2
	}
	cfg, err := config.Load(*path, core.Transports())
	if err != nil {
		var list *config.Errors
		if errors.As(err, &list) {
			fmt.Fprintf(stderr, "%s: %d problem(s):\n", *path, len(list.List))
			for _, e := range list.List {
				fmt.Fprintf(stderr, "  %s\n", e)
			}
		} else {
			fmt.Fprintf(stderr, "%s: %v\n", *path, err)
		}
		return 1
	}
	n := 0
	for _, d := range cfg.Domains {
		for _, t := range d.Transports {
			if t.Enabled {
				n++
			}
		}
	}
	fmt.Fprintf(stdout, "%s: ok (%d domain(s), %d component(s) enabled)\n", *path, len(cfg.Domains), n)
	return 0
}

func keygen(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "write the key to this file (mode 0600, must not exist) instead of standard output")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	key, err := registration.GenerateKey()
	if err != nil {
		fmt.Fprintln(stderr, "transportd keygen:", err)
		return 1
	}
	text := registration.EncodeKey(key) + "\n"
	if *out == "" {
		fmt.Fprint(stdout, text)
		return 0
	}
	f, err := os.OpenFile(*out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		fmt.Fprintln(stderr, "transportd keygen:", err)
		return 1
	}
	if _, err := f.WriteString(text); err != nil {
		f.Close()
		fmt.Fprintln(stderr, "transportd keygen:", err)
		return 1
	}
	if err := f.Close(); err != nil {
		fmt.Fprintln(stderr, "transportd keygen:", err)
		return 1
	}
	fmt.Fprintf(stdout, "key written to %s\n", *out)
	return 0
}

func newLogger(cfg *config.Config, level slog.Leveler, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.JSON {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
