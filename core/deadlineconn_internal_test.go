package core

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"transportd/internal/rawio"
	"transportd/internal/tcptest"
)

// The component connection's raw reads and writes (rawio) behave as the
// connection's own: everything written arrives, through a full socket
// (the write waits for the reader), an end is io.EOF, and the write
// deadline and Close still end a write or a read that waits.
func TestDeadlineConnRaw(t *testing.T) {
	a, b := tcptest.Pair(t)
	c := newDeadlineConn(a, 5*time.Second)
	if rawio.Supported && c.raw == nil {
		t.Fatal("a TCP connection is not read and written raw")
	}
	// More than the socket buffers hold: the write waits for room.
	want := bytes.Repeat([]byte("<message>0123456789</message>"), 1<<17) // 3.7 MB
	got := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		_, _ = io.Copy(&buf, b)
		got <- buf.Bytes()
	}()
	if n, err := c.Write(want); err != nil || n != len(want) {
		t.Fatalf("Write = %d, %v; want %d", n, err, len(want))
	}
	_ = a.(*net.TCPConn).CloseWrite()
	if g := <-got; !bytes.Equal(g, want) {
		t.Fatalf("the peer read %d bytes, want the %d written", len(g), len(want))
	}

	// Reads: what the peer wrote, then io.EOF once it closed.
	if _, err := b.Write([]byte("<presence/>")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	if n, err := c.Read(buf); err != nil || string(buf[:n]) != "<presence/>" {
		t.Fatalf("Read = %q, %v", buf[:n], err)
	}
	b.Close()
	if n, err := c.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed = %d, %v; want io.EOF", n, err)
	}
}

func TestDeadlineConnRawDeadlines(t *testing.T) {
	a, _ := tcptest.Pair(t) // the peer never reads
	c := newDeadlineConn(a, 200*time.Millisecond)
	big := make([]byte, 64<<20)
	start := time.Now()
	n, err := c.Write(big)
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Write to a peer that never reads = %d, %v; want the deadline exceeded", n, err)
	}
	if n <= 0 || n >= len(big) {
		t.Errorf("Write wrote %d bytes before its deadline, want some", n)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("the write's deadline ended it after %v", d)
	}

	// A read waiting for the peer: its deadline, then Close, end it.
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if _, err := c.Read(make([]byte, 16)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past its deadline: %v", err)
	}
	_ = c.SetReadDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 16))
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read ended by Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting Read")
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v, want net.ErrClosed", err)
	}
}
