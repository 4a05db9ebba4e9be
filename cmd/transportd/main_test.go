package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
