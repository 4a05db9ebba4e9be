package sms

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"transportd/core"
	"transportd/internal/xmpptest"
)

func TestMain(m *testing.M) {
	// Shorter than in production so tests do not wait minutes.
	lookupSettle = 1500 * time.Millisecond
	backoffMin, backoffMax = 100*time.Millisecond, time.Second
	os.Exit(m.Run())
}

// testLogger sends logs to t.Logf (and stops when the test is over).
func testLogger(t testing.TB) *slog.Logger { return xmpptest.Logger(t) }

// fakeHost is core's Host for unit tests: routes on an httptest server.
type fakeHost struct {
	mux      *http.ServeMux
	base     string
	domain   string
	defaults map[string]string
	log      *slog.Logger
}

func (h *fakeHost) Handle(path string, hd http.Handler) { h.mux.Handle("/sms/"+h.domain+path, hd) }
func (h *fakeHost) URL(path string) string {
	if h.base == "" {
		return ""
	}
	return h.base + "/sms/" + h.domain + path
}
func (h *fakeHost) Domain() string              { return h.domain }
func (h *fakeHost) Defaults() map[string]string { return maps.Clone(h.defaults) }
func (h *fakeHost) Logger() *slog.Logger        { return h.log }

// memStore is an in-memory StateStore.
type memStore struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *memStore) Get(_ context.Context, k string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return v, ok, nil
}

func (s *memStore) Set(_ context.Context, k, v string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = v
	return nil
}

func (s *memStore) Delete(_ context.Context, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}

// fakeSink records what a session reports, de-duplicating deliveries by
// LegacyID as core's outbox does.
type fakeSink struct {
	log   *slog.Logger
	store *memStore

	mu        sync.Mutex
	states    []core.State
	texts     []string
	delivered []core.Message
	calls     int // Deliver calls, duplicates included
	seen      map[string]bool
	receipts  []string // "contact legacyID"
	failures  []string // "contact legacyID: text"
	failErr   []error
}

func newFakeSink(t testing.TB) *fakeSink {
	return &fakeSink{log: testLogger(t), store: &memStore{m: map[string]string{}}, seen: map[string]bool{}}
}

func (s *fakeSink) State(st core.State, text string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.states = append(s.states, st)
	s.texts = append(s.texts, text)
}

func (s *fakeSink) Deliver(_ context.Context, m *core.Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if m.LegacyID != "" && s.seen[m.LegacyID] {
		return nil
	}
	s.seen[m.LegacyID] = true
	s.delivered = append(s.delivered, *m)
	return nil
}

func (s *fakeSink) Receipt(_ context.Context, contact, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.receipts = append(s.receipts, contact+" "+id)
	return nil
}

func (s *fakeSink) Failed(_ context.Context, contact, id string, err error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, fmt.Sprintf("%s %s: %v", contact, id, err))
	s.failErr = append(s.failErr, err)
	return nil
}

func (s *fakeSink) Store() core.StateStore { return s.store }
func (s *fakeSink) Logger() *slog.Logger   { return s.log }

func (s *fakeSink) lastState() core.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.states) == 0 {
		return core.StateDisconnected
	}
	return s.states[len(s.states)-1]
}

func (s *fakeSink) messages() []core.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]core.Message(nil), s.delivered...)
}

// unit is a transport started against the fake Twilio, with its webhooks
// on a local HTTP server, and no XMPP.
type unit struct {
	t      testing.TB
	fake   *fakeTwilio
	tr     *Transport
	srv    *httptest.Server
	sid    string
	token  string
	number string
}

func newUnit(t testing.TB, defaults map[string]string) *unit {
	t.Helper()
	return newUnitLog(t, defaults, testLogger(t))
}

func newUnitLog(t testing.TB, defaults map[string]string, log *slog.Logger) *unit {
	t.Helper()
	fake := newFakeTwilio(t)
	sid, token := fake.AddAccount()
	number := "+12025550100"
	fake.AddNumber(sid, number)
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	d := map[string]string{"api_base_url": fake.URL}
	maps.Copy(d, defaults)
	tr := &Transport{}
	if err := tr.Start(context.Background(), &fakeHost{mux: mux, base: srv.URL, domain: "a.test", defaults: d, log: log}); err != nil {
		t.Fatal(err)
	}
	return &unit{t: t, fake: fake, tr: tr, srv: srv, sid: sid, token: token, number: number}
}

// register verifies and starts a session for jid with the unit's account,
// and waits until it is connected.
func (u *unit) register(jid string) (*session, *fakeSink) {
	u.t.Helper()
	a := &core.Account{ID: 1, Domain: "a.test", Transport: "sms", JID: jid,
		Values: map[string]string{"number": u.number, "account_sid": u.sid, "auth_token": u.token}}
	if err := u.tr.Verify(context.Background(), a); err != nil {
		u.t.Fatalf("verify: %v", err)
	}
	sink := newFakeSink(u.t)
	sink.log = u.tr.log
	s := u.tr.NewSession(a, sink).(*session)
	u.run(s)
	waitFor(u.t, 10*time.Second, "session connected", func() bool { return sink.lastState() == core.StateConnected })
	return s, sink
}

// run runs a session until the test ends.
func (u *unit) run(s *session) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	u.t.Cleanup(func() { cancel(); <-done })
}
