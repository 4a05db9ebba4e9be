package core

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"transportd/core/config"
	"transportd/internal/queue"
)

// starter is a SessionStarter whose Start does what the test says.
type starter struct {
	start func(ctx context.Context, done func())
}

var _ SessionStarter = starter{}

func (s starter) Run(ctx context.Context)                        { panic("core called Run") }
func (s starter) Send(context.Context, *Message) (string, error) { return "", nil }
func (s starter) Start(ctx context.Context, done func())         { s.start(ctx, done) }

// workDone is closed once the gateway's work is all done.
func workDone(g *Gateway) <-chan struct{} {
	c := make(chan struct{})
	go func() {
		g.work.Wait()
		close(c)
	}()
	return c
}

func panicsCounted(g *Gateway) float64 {
	var m dto.Metric
	_ = g.metrics.panics.Write(&m)
	return m.GetCounter().GetValue()
}

// TestStartSafe: a started session counts as work until it calls done,
// and a panic in Start is counted and ends that work.
func TestStartSafe(t *testing.T) {
	g := &Gateway{log: slog.New(slog.DiscardHandler), metrics: newMetrics()}
	var done func()
	g.startSafe(context.Background(), "session", starter{func(ctx context.Context, d func()) { done = d }})
	w := workDone(g)
	select {
	case <-w:
		t.Fatal("work ended before the session called done")
	case <-time.After(50 * time.Millisecond):
	}
	done()
	select {
	case <-w:
	case <-time.After(5 * time.Second):
		t.Fatal("work did not end when the session called done")
	}

	var late atomic.Pointer[func()]
	g.startSafe(context.Background(), "session", starter{func(ctx context.Context, d func()) {
		late.Store(&d)
		panic("boom")
	}})
	if n := panicsCounted(g); n != 1 {
		t.Errorf("panics counted: %v, want 1", n)
	}
	select {
	case <-workDone(g):
	case <-time.After(5 * time.Second):
		t.Fatal("work did not end after Start panicked")
	}
	(*late.Load())() // a done that comes anyway does not make the count negative
}

// A panic a session recovered in a goroutine of its own, reported to its
// sink, is counted with core's.
func TestSinkCountsSessionPanics(t *testing.T) {
	g := &Gateway{log: slog.New(slog.DiscardHandler), metrics: newMetrics()}
	g.cfgNow.Store(&config.Config{})
	u := &user{c: &component{g: g, log: g.log}}
	var s Sink = &sink{u: u}
	pr, ok := s.(PanicReporter)
	if !ok {
		t.Fatal("core's sink is not a PanicReporter")
	}
	pr.Panicked("irc session", "boom", nil)
	if n := panicsCounted(g); n != 1 {
		t.Errorf("panics counted: %v, want 1", n)
	}
}

// A user's queue holds userQueue events: a poster beyond waits until a
// drain takes one, and gives up when the user stops, which drops what is
// posted after.
func TestUserQueue(t *testing.T) {
	u := &user{queue: queue.Bounded[userEvent]{Max: userQueue}}
	u.active.Store(true) // as while a drain runs: post starts none
	for i := 0; i < userQueue; i++ {
		u.post(evProbe{})
	}
	blocked := make(chan struct{})
	go func() {
		u.post(evLinkUp{})
		close(blocked)
	}()
	time.Sleep(20 * time.Millisecond)
	if _, ok := u.queue.Take(); !ok {
		t.Fatal("nothing to take")
	}
	select {
	case <-blocked:
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting post did not go in when an event was taken")
	}
	blocked = make(chan struct{})
	go func() {
		u.post(evLinkUp{})
		close(blocked)
	}()
	time.Sleep(20 * time.Millisecond)
	u.stop() // active: no drain starts
	select {
	case <-blocked:
	case <-time.After(5 * time.Second):
		t.Fatal("a waiting post did not return when the user stopped")
	}
	u.queue.Take()
	u.post(evProbe{}) // dropped: the user is stopped
	if n := u.queue.Len(); n != userQueue-1 {
		t.Errorf("%d queued after the stop, want %d (nothing more)", n, userQueue-1)
	}
}
