package sms

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"net/url"
	"testing"
	"time"

	"transportd/internal/faketwilio"
)

// The tests drive internal/faketwilio, the Twilio stand-in the soak test
// and make bench run against too (the real twilio-go client talks to it,
// and every webhook it posts is signed as Twilio signs them). What follows
// are shorthands that fail the test instead of returning errors.

type (
	fakeMessage = faketwilio.Message
	fakeAction  = faketwilio.Action
)

const (
	createOK      = faketwilio.CreateOK
	create429     = faketwilio.Create429
	create500     = faketwilio.Create500
	createHang    = faketwilio.CreateHang
	createDropped = faketwilio.CreateDropped
)

// fakeTwilio is a faketwilio.Server bound to a test.
type fakeTwilio struct {
	*faketwilio.Server
	t testing.TB
}

func newFakeTwilio(t testing.TB) *fakeTwilio {
	t.Helper()
	s, err := faketwilio.New("")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return &fakeTwilio{Server: s, t: t}
}

func randomHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// waitSent waits until at least n messages were created.
func (f *fakeTwilio) waitSent(n int, timeout time.Duration) []fakeMessage {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := f.Sent()
		if len(s) >= n {
			return s
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("fake twilio: %d messages created, want %d", len(s), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// deliverIncoming posts the incoming webhook of m to its number's SMS URL.
func (f *fakeTwilio) deliverIncoming(m fakeMessage) (int, string) {
	f.t.Helper()
	status, body, err := f.DeliverIncoming(m)
	if err != nil {
		f.t.Fatal(err)
	}
	return status, body
}

// callback posts a status callback for an outbound message.
func (f *fakeTwilio) callback(sid, status string, code int) (int, string) {
	f.t.Helper()
	st, body, err := f.Callback(sid, status, code)
	if err != nil {
		f.t.Fatal(err)
	}
	return st, body
}

// twilioSignature signs a webhook the way Twilio does.
func twilioSignature(token, u string, params url.Values) string {
	return faketwilio.Signature(token, u, params)
}

// postWebhook sends a webhook signed with token (or with the given
// signature when sig is not "") and returns the HTTP status and body.
func postWebhook(t testing.TB, u string, params url.Values, token, sig string) (int, string) {
	t.Helper()
	status, body, err := faketwilio.Post(nil, u, params, token, sig)
	if err != nil {
		t.Fatalf("webhook: %v", err)
	}
	return status, body
}

// statusParams are the parameters of a status callback.
func statusParams(m fakeMessage, status string, code int) url.Values {
	return faketwilio.StatusParams(m, status, code)
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitFor waits until cond holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
