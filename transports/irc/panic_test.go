//go:build linux

package irc

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"transportd/internal/tcptest"
)

type recPanic struct {
	where string
	v     any
	stack []byte
}

func (r *recorder) Panicked(where string, v any, stack []byte) { r.add(recPanic{where, v, stack}) }

// polledPair is a connection started on the poller, with the far end.
func polledPair(t *testing.T, onLine func(inLine, bool) bool, onClose func(error)) (*conn, net.Conn) {
	t.Helper()
	nc, far := tcptest.Pair(t)
	c := &conn{nc: nc, server: "test", log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		lim:       rate.NewLimiter(rate.Inf, 1),
		pingEvery: time.Hour, pingWait: time.Hour}
	c.start(onLine, onClose)
	if !c.polled {
		t.Skip("no poller here")
	}
	t.Cleanup(func() { c.close(); far.Close() })
	return c, far
}

// A panic while the poller hands on a line ends that connection only:
// the session learns why (an internal error, not a network one) and
// reports the panic to core, where it is counted; the poller goes on
// reading the other connections.
func TestPollerPanicEndsOneConnectionAndIsReported(t *testing.T) {
	closed := make(chan error, 1)
	bad, badFar := polledPair(t, func(inLine, bool) bool { panic("boom in a line handler") }, func(err error) { closed <- err })
	lines := make(chan string, 1)
	_, goodFar := polledPair(t, func(m inLine, _ bool) bool { lines <- last(m.Params); return true }, func(error) {})

	if _, err := badFar.Write([]byte("PRIVMSG #c :hi\r\n")); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-closed:
	case <-time.After(wait):
		t.Fatal("the connection whose line panicked was not closed")
	}
	if got := errorText(err); got != "connection to test lost: internal error" {
		t.Errorf("the session is told %q", got)
	}
	if !bad.isClosed() {
		t.Error("the connection is still open")
	}

	rec := newRecorder(t)
	if !reportPanic(rec, bad.log, err) {
		t.Fatal("the close does not carry the panic")
	}
	rec.mu.Lock()
	evs := rec.events
	rec.mu.Unlock()
	if len(evs) != 1 {
		t.Fatalf("reported %v", evs)
	}
	p, _ := evs[0].(recPanic)
	if p.where != "irc poller" || fmt.Sprint(p.v) != "boom in a line handler" || !strings.Contains(string(p.stack), "readable") {
		t.Errorf("reported %q %v with stack %.200s", p.where, p.v, p.stack)
	}
	if reportPanic(rec, bad.log, errors.New("connection reset")) {
		t.Error("a network error reported as a panic")
	}

	if _, err := goodFar.Write([]byte("PRIVMSG #c :still here\r\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case l := <-lines:
		if l != "still here" {
			t.Errorf("other connection read %q", l)
		}
	case <-time.After(wait):
		t.Fatal("the poller stopped reading other connections after a panic")
	}
}

// A connection whose last lines and end arrive together, while the
// poller is busy with another, is seen to end: a read that took all the
// data leaves the end of the stream to read, and no new wake comes for
// it.
func TestPollerSeesEndSentWithData(t *testing.T) {
	busy, release := make(chan struct{}), make(chan struct{})
	_, slowFar := polledPair(t, func(inLine, bool) bool {
		close(busy)
		<-release
		return true
	}, func(error) {})
	lines, closed := make(chan string, 4), make(chan error, 1)
	_, far := polledPair(t, func(m inLine, _ bool) bool { lines <- last(m.Params); return true }, func(err error) { closed <- err })

	if _, err := slowFar.Write([]byte("PRIVMSG #c :hold the poller\r\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case <-busy:
	case <-time.After(wait):
		t.Fatal("the poller never read the first connection")
	}
	// The poller is inside the first connection's line: the second's
	// line and end are both waiting when it gets to it.
	if _, err := far.Write([]byte("PRIVMSG #c :last words\r\n")); err != nil {
		t.Fatal(err)
	}
	far.Close()
	time.Sleep(100 * time.Millisecond)
	close(release)
	select {
	case got := <-lines:
		if got != "last words" {
			t.Fatalf("line %q", got)
		}
	case <-time.After(wait):
		t.Fatal("the line sent before the end was never read")
	}
	select {
	case err := <-closed:
		if err == nil {
			t.Fatal("closed without an error")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the connection's end was never seen")
	}
}
