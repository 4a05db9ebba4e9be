package core

import (
	"context"
	"errors"
	"testing"
	"time"
)

// sessionCtx behaves as context.WithCancel(context.Background()) for what
// sessions do with it: Done, Err, context.AfterFunc and its stop, and
// contexts derived from it.
func TestSessionCtx(t *testing.T) {
	c := newSessionCtx()
	if c.Err() != nil {
		t.Fatal("Err before cancel")
	}
	ran := make(chan string, 4)
	context.AfterFunc(c, func() { ran <- "kept" })
	stop := context.AfterFunc(c, func() { ran <- "stopped" })
	if !stop() {
		t.Error("stop before cancel returned false")
	}
	if stop() {
		t.Error("a second stop returned true")
	}
	direct := c.AfterFunc(func() { ran <- "direct" })
	child, cancelChild := context.WithTimeout(c, time.Hour)
	defer cancelChild()
	sibling, cancelSibling := context.WithCancel(c)
	cancelSibling() // cancelled alone: unregisters from c

	done := c.Done()
	select {
	case <-done:
		t.Fatal("Done closed before cancel")
	default:
	}
	c.cancel()
	c.cancel() // twice: no panic
	<-done
	if !errors.Is(c.Err(), context.Canceled) {
		t.Errorf("Err = %v", c.Err())
	}
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("a derived context was not cancelled")
	}
	if !errors.Is(sibling.Err(), context.Canceled) {
		t.Errorf("sibling Err = %v", sibling.Err())
	}
	got := map[string]bool{}
	for len(got) < 2 {
		select {
		case s := <-ran:
			got[s] = true
		case <-time.After(5 * time.Second):
			t.Fatalf("after cancel, ran only %v", got)
		}
	}
	if !got["kept"] || !got["direct"] {
		t.Errorf("ran %v", got)
	}
	if direct() {
		t.Error("stop after the function ran returned true")
	}
	select {
	case s := <-ran:
		t.Errorf("%q ran too", s)
	case <-time.After(50 * time.Millisecond):
	}
	// After cancel: Done is closed at once, AfterFunc runs at once.
	select {
	case <-c.Done():
	default:
		t.Error("Done after cancel is not closed")
	}
	context.AfterFunc(c, func() { ran <- "late" })
	select {
	case <-ran:
	case <-time.After(5 * time.Second):
		t.Error("AfterFunc after cancel never ran")
	}
	// Done made only after cancel is closed too.
	c2 := newSessionCtx()
	c2.cancel()
	select {
	case <-c2.Done():
	default:
		t.Error("Done first asked after cancel is not closed")
	}
}
