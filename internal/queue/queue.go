// Package queue has Bounded, the event queue of a user or session that
// keeps no goroutine while idle.
package queue

import (
	"sync"
	"sync/atomic"
)

// Bounded is a FIFO of at most Max items whose array is let go when it is
// empty: an idle owner holds no buffer (a buffered channel keeps its own
// for as long as it exists, and there is one per registered account). A
// Put finding it full waits for a Take. The zero value with Max set is
// ready to use.
type Bounded[T any] struct {
	Max int

	mu    sync.Mutex
	items []T
	space chan struct{} // made by a Put that waits, closed by Take
}

// Put adds v. While the queue is full it waits for room; it gives up
// (false, v not added) once stop is closed or cancel is, and adds nothing
// once stop is closed. A nil stop or cancel never closes.
func (q *Bounded[T]) Put(v T, stop *Done, cancel <-chan struct{}) bool {
	for {
		q.mu.Lock()
		if stop.Closed() {
			q.mu.Unlock()
			return false
		}
		if len(q.items) < q.Max {
			q.items = append(q.items, v)
			q.mu.Unlock()
			return true
		}
		if q.space == nil {
			q.space = make(chan struct{})
		}
		space := q.space
		q.mu.Unlock()
		select {
		case <-space:
		case <-stop.Chan():
			return false
		case <-cancel:
			return false
		}
	}
}

// TryPut adds v unless the queue is full.
func (q *Bounded[T]) TryPut(v T) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) >= q.Max {
		return false
	}
	q.items = append(q.items, v)
	return true
}

// Take removes the oldest item.
func (q *Bounded[T]) Take() (v T, ok bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if len(q.items) == 0 {
		return v, false
	}
	v = q.items[0]
	var zero T
	q.items[0] = zero
	q.items = q.items[1:]
	if len(q.items) == 0 {
		q.items = nil // let the array go
	}
	if q.space != nil {
		close(q.space)
		q.space = nil
	}
	return v, true
}

// Len is how many items wait.
func (q *Bounded[T]) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.items)
}

// Empty reports whether no array is held (tests).
func (q *Bounded[T]) Empty() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.items == nil
}

// Done tells that its owner (a user, a session) has stopped, as a done
// channel does, with the channel made only when something waits on it.
// A channel is 112 bytes in the heap; a user and its session had one
// each, for every registered account, though most of their checks only
// ask whether it is closed (Closed). A Done is one word, as the channel
// field was. The zero value is open.
type Done struct {
	// p is nil while open and unasked, the channel once asked, and
	// closedMark once closed.
	p atomic.Pointer[chan struct{}]
}

// closedMark is the state of a closed Done; its channel is closed.
var closedMark = func() *chan struct{} { c := make(chan struct{}); close(c); return &c }()

// Closed reports whether Close was called; false for nil.
func (d *Done) Closed() bool { return d != nil && d.p.Load() == closedMark }

// Chan is closed once Close is called; nil (never closed) for a nil Done.
func (d *Done) Chan() <-chan struct{} {
	if d == nil {
		return nil
	}
	for {
		if p := d.p.Load(); p != nil {
			return *p
		}
		c := make(chan struct{})
		if d.p.CompareAndSwap(nil, &c) {
			return c
		}
	}
}

// Close closes d; once only, as with a channel.
func (d *Done) Close() {
	p := d.p.Swap(closedMark)
	if p == closedMark {
		panic("queue: Done closed twice")
	}
	if p != nil {
		close(*p)
	}
}
