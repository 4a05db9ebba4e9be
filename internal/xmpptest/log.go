package xmpptest

import (
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
)

// Logger sends log lines (debug and up) to t's log until the test ends:
// goroutines still running then (a connection attempt finishing) must not
// call t.Logf, which the race detector flags.
func Logger(t testing.TB) *slog.Logger {
	w := &testLog{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testLog struct {
	mu   sync.Mutex
	t    testing.TB
	done bool
}

func (w *testLog) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("%s", strings.TrimSpace(string(p)))
	}
	return len(p), nil
}

// Missing stops a test whose server or environment is missing: under
// CI=true it fails (a missing server never skips silently), elsewhere it
// skips. what says what is missing and how to start it.
func Missing(t testing.TB, what string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(what + ": under CI a missing server is a failure")
	}
	t.Skip(what)
}
