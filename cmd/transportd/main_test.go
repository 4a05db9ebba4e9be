package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"transportd/registration"
)

func TestVersion(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run([]string{"version"}, &out, &errOut); code != 0 || !strings.HasPrefix(out.String(), "transportd ") {
		t.Errorf("version: code %d, %q %q", code, out.String(), errOut.String())
	}
}

func TestCheckReportsEveryProblem(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bad.toml")
	os.WriteFile(path, []byte(`
[xmpp]
component_addr = "localhost"
bogus = 1
[store]
path = "x.db"
[domains."example.net".transports.nosuch]
secret_file = "/nonexistent/secret"
`), 0o600)
	var out, errOut bytes.Buffer
	code := run([]string{"check", "-config", path}, &out, &errOut)
	if code == 0 {
		t.Fatalf("check accepted a broken config: %s", out.String())
	}
	msg := errOut.String()
	for _, want := range []string{"xmpp.component_addr", "xmpp.bogus", "store", "nosuch"} {
		if !strings.Contains(msg, want) {
			t.Errorf("check output does not name %q:\n%s", want, msg)
		}
	}
}

func TestKeygenAndCheckOK(t *testing.T) {
	dir := t.TempDir()
	var out, errOut bytes.Buffer
	key := filepath.Join(dir, "key")
	if code := run([]string{"keygen", "-out", key}, &out, &errOut); code != 0 {
		t.Fatalf("keygen: %s", errOut.String())
	}
	b, _ := os.ReadFile(key)
	if k, err := registration.DecodeKey(string(b)); err != nil || len(k) != 32 {
		t.Fatalf("keygen wrote %q: %v", b, err)
	}
	if fi, _ := os.Stat(key); fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
	// Refuses to overwrite an existing key.
	if code := run([]string{"keygen", "-out", key}, &out, &errOut); code == 0 {
		t.Error("keygen overwrote an existing key")
	}
	os.WriteFile(filepath.Join(dir, "ok.toml"), []byte(`
[xmpp]
component_addr = "127.0.0.1:5347"
[store]
path = "x.db"
key_file = "key"
[domains."example.net"]
`), 0o600)
	out.Reset()
	errOut.Reset()
	if code := run([]string{"check", "-config", filepath.Join(dir, "ok.toml")}, &out, &errOut); code != 0 {
		t.Errorf("check of a valid config failed: %s", errOut.String())
	}
}

func TestUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(nil, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "usage") {
		t.Errorf("no arguments: code %d, %q", code, errOut.String())
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func waitFor(t *testing.T, buf *lockedBuffer, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(buf.String(), what) {
		if time.Now().After(deadline) {
			t.Fatalf("log never said %q:\n%s", what, buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReloadOnHUP: a broken configuration on SIGHUP is refused with its
// problems and the gateway keeps running; a good one is applied.
func TestReloadOnHUP(t *testing.T) {
	dir := t.TempDir()
	key, _ := registration.GenerateKey()
	os.WriteFile(filepath.Join(dir, "key"), []byte(registration.EncodeKey(key)), 0o600)
	path := filepath.Join(dir, "t.toml")
	good := `
[xmpp]
component_addr = "127.0.0.1:9"
[store]
path = "x.db"
key_file = "key"
[domains."example.net"]
`
	os.WriteFile(path, []byte(good), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	hup := make(chan os.Signal, 1)
	logs := &lockedBuffer{}
	done := make(chan int)
	procs := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(procs)
	go func() { done <- serve(ctx, path, logs, hup) }()
	waitFor(t, logs, "transportd starting")
	if os.Getenv("GOGC") == "" {
		if pct := debug.SetGCPercent(200); pct != 200 {
			t.Errorf("GOGC unset: the collector runs at %d %%, not 200", pct)
		}
	}
	if os.Getenv("GOMAXPROCS") == "" {
		if n := runtime.GOMAXPROCS(0); n != 1 {
			t.Errorf("GOMAXPROCS unset: %d processors, not 1", n)
		}
		if !strings.Contains(logs.String(), "procs=1") {
			t.Errorf("the start's log line does not say how many processors:\n%s", logs.String())
		}
	}

	os.WriteFile(path, []byte(good+"\nnonsense = [\n"), 0o600)
	hup <- syscall.SIGHUP
	waitFor(t, logs, "configuration reload refused")

	os.WriteFile(path, []byte(strings.Replace(good, "[domains.", "[log]\nlevel = \"debug\"\n[domains.", 1)), 0o600)
	hup <- syscall.SIGHUP
	waitFor(t, logs, "configuration reloaded")

	select {
	case code := <-done:
		t.Fatalf("gateway stopped during reloads with code %d:\n%s", code, logs.String())
	default:
	}
	cancel()
	if code := <-done; code != 0 {
		t.Errorf("exit code %d:\n%s", code, logs.String())
	}
}
