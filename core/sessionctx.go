package core

import (
	"context"
	"slices"
	"sync"
	"time"
)

// sessionCtx is the context a legacy session runs under, cancelled when
// core stops the session. It is context.WithCancel(context.Background())
// made smaller for what every user holds while online: a session that
// watches its context with context.AfterFunc (the IRC transport, which
// keeps no goroutine per user) cost a map of children in the parent and
// a Done channel, some 600 bytes per user. Here AfterFunc keeps the
// function in a slice (context.AfterFunc uses it: see its afterFuncer),
// and Done makes its channel only when asked.
type sessionCtx struct {
	mu    sync.Mutex
	done  chan struct{} // made by Done
	err   error
	after []*afterCall
}

type afterCall struct{ f func() }

func newSessionCtx() *sessionCtx { return &sessionCtx{} }

func (c *sessionCtx) Deadline() (time.Time, bool) { return time.Time{}, false }

func (c *sessionCtx) Value(any) any { return nil }

func (c *sessionCtx) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *sessionCtx) Done() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done == nil {
		c.done = make(chan struct{})
		if c.err != nil {
			close(c.done)
		}
	}
	return c.done
}

// cancel ends the context: Done is closed and each function given to
// AfterFunc runs, on its own goroutine, as with context.WithCancel.
func (c *sessionCtx) cancel() {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = context.Canceled
	if c.done != nil {
		close(c.done)
	}
	after := c.after
	c.after = nil
	c.mu.Unlock()
	for _, a := range after {
		go a.f()
	}
}

// AfterFunc arranges for f to run once the context is cancelled, as
// context.AfterFunc does (which calls it); stop unregisters f and
// reports whether it did so before f started.
func (c *sessionCtx) AfterFunc(f func()) (stop func() bool) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		go f()
		return func() bool { return false }
	}
	a := &afterCall{f: f}
	c.after = append(c.after, a)
	c.mu.Unlock()
	return func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		i := slices.Index(c.after, a)
		if i < 0 {
			return false
		}
		c.after = slices.Delete(c.after, i, i+1)
		return true
	}
}

func (c *sessionCtx) String() string { return "core.sessionCtx" }
