package queue

import (
	"testing"
	"time"
)

// Put waits while the queue is full until a Take, or until stop or
// cancel; items come out in order; an empty queue holds no array.
func TestBounded(t *testing.T) {
	q := &Bounded[int]{Max: 3}
	for i := 0; i < 3; i++ {
		if !q.Put(i, nil, nil) {
			t.Fatal("Put refused with room")
		}
	}
	if q.TryPut(9) {
		t.Error("TryPut added to a full queue")
	}
	put := make(chan bool)
	go func() { put <- q.Put(3, nil, nil) }()
	select {
	case <-put:
		t.Fatal("Put did not wait on a full queue")
	case <-time.After(30 * time.Millisecond):
	}
	if v, ok := q.Take(); !ok || v != 0 {
		t.Fatalf("Take = %v %v", v, ok)
	}
	if !<-put {
		t.Fatal("the waiting Put gave up")
	}
	for want := 1; want <= 3; want++ {
		if v, ok := q.Take(); !ok || v != want {
			t.Fatalf("Take = %v %v, want %d", v, ok, want)
		}
	}
	if _, ok := q.Take(); ok || !q.Empty() || q.Len() != 0 {
		t.Error("an empty queue holds items or its array")
	}

	for _, which := range []string{"stop", "cancel"} {
		for q.Len() < q.Max {
			q.TryPut(0)
		}
		stop, cancel := &Done{}, make(chan struct{})
		go func() { put <- q.Put(1, stop, cancel) }()
		time.Sleep(10 * time.Millisecond)
		if which == "stop" {
			stop.Close()
		} else {
			close(cancel)
		}
		select {
		case ok := <-put:
			if ok {
				t.Errorf("%s: Put added", which)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: Put still waits", which)
		}
		if which == "stop" {
			for q.Len() > 0 {
				q.Take()
			}
			if q.Put(1, stop, nil) {
				t.Error("Put added after stop")
			}
		}
	}
}

// A Done is open until closed; its channel, made before or after the
// close, is closed with it; a nil Done never closes.
func TestDone(t *testing.T) {
	var d Done
	if d.Closed() {
		t.Fatal("a new Done is closed")
	}
	early := d.Chan()
	select {
	case <-early:
		t.Fatal("the channel of an open Done is closed")
	default:
	}
	waited := make(chan struct{})
	go func() { <-early; close(waited) }()
	d.Close()
	if !d.Closed() {
		t.Fatal("Closed false after Close")
	}
	select {
	case <-waited:
	case <-time.After(5 * time.Second):
		t.Fatal("a waiter on the channel made before Close was not woken")
	}
	var late Done
	late.Close()
	select {
	case <-late.Chan():
	default:
		t.Fatal("the channel asked after Close is open")
	}
	var none *Done
	if none.Closed() || none.Chan() != nil {
		t.Fatal("a nil Done closes")
	}
	defer func() {
		if recover() == nil {
			t.Error("a second Close did not panic")
		}
	}()
	d.Close()
}
