package irc

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"transportd/internal/tcptest"
)

// detachedPair is a TCP connection given up by the runtime (detachTCP),
// with its far end.
func detachedPair(t *testing.T) (*fdConn, net.Conn) {
	t.Helper()
	nc, far := tcptest.Pair(t)
	t.Cleanup(func() { far.Close() })
	fc, err := detachTCP(nc.(*net.TCPConn))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fc.Close() })
	if _, err := nc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("the dialled conn still writes after detachTCP: %v", err)
	}
	return fc, far
}

// The connection outlives the net.TCPConn it was dialled as: the far end
// sees no end of it, reads what it writes, and what it sends is read
// (waiting for it); the addresses are the socket's.
func TestFdConnDetached(t *testing.T) {
	fc, far := detachedPair(t)
	_ = far.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, err := far.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("far end after detachTCP: read %d, %v; want nothing (no end of connection)", n, err)
	}
	_ = far.SetReadDeadline(time.Time{})
	if _, err := fc.Write([]byte("PING :x\r\n")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 9)
	if _, err := io.ReadFull(far, got); err != nil || string(got) != "PING :x\r\n" {
		t.Fatalf("far end read %q, %v", got, err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		_, _ = far.Write([]byte("PONG :x\r\n"))
	}()
	b := make([]byte, 64)
	n, err := fc.Read(b) // nothing there yet: waits
	if err != nil || string(b[:n]) != "PONG :x\r\n" {
		t.Fatalf("read %q, %v", b[:n], err)
	}
	if la, ra := fc.LocalAddr(), fc.RemoteAddr(); la.String() != far.RemoteAddr().String() || ra.String() != far.LocalAddr().String() {
		t.Errorf("addresses %v -> %v, want %v -> %v", la, ra, far.RemoteAddr(), far.LocalAddr())
	}
	if _, ok := fc.LocalAddr().(*net.TCPAddr); !ok {
		t.Errorf("LocalAddr is %T, want *net.TCPAddr (identd reads it)", fc.LocalAddr())
	}
	_ = fc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := fc.Read(b); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("read past its deadline: %v", err)
	}
	far.Close()
	_ = fc.SetReadDeadline(time.Time{})
	if _, err := fc.Read(b); err != io.EOF {
		t.Errorf("read after the far end closed: %v, want EOF", err)
	}
}

// A write to a full socket waits for room up to its deadline; Close ends
// a write that waits, and the far end then sees the connection end.
// After Close every use is net.ErrClosed (never another connection that
// got the descriptor's number).
func TestFdConnFullAndClose(t *testing.T) {
	fc, far := detachedPair(t)
	big := bytes.Repeat([]byte("PRIVMSG #x :flood\r\n"), 1<<20)
	_ = fc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
	start := time.Now()
	n, err := fc.Write(big)
	if !errors.Is(err, os.ErrDeadlineExceeded) || n == 0 || n >= len(big) {
		t.Fatalf("write to a full socket: %d of %d, %v; want part of it and a deadline error", n, len(big), err)
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("the write gave up after %v, before its deadline", d)
	}
	_ = fc.SetWriteDeadline(time.Time{})
	res := make(chan error, 1)
	go func() {
		_, err := fc.Write(big)
		res <- err
	}()
	select {
	case err := <-res:
		t.Fatalf("a write to a full socket without deadline returned: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	if err := fc.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-res:
		if err == nil {
			t.Fatal("the waiting write ended without error when closed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end a waiting write")
	}
	_ = far.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, far); err != nil {
		t.Errorf("far end: %v, want the connection's end", err)
	}
	if err := fc.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close: %v", err)
	}
	if _, err := fc.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close: %v", err)
	}
	if err := (*fdRaw)(fc).Control(func(uintptr) { t.Error("Control ran after Close") }); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Control after Close: %v", err)
	}
	if fc.LocalAddr() != nil {
		t.Errorf("LocalAddr after Close: %v", fc.LocalAddr())
	}
}

// A plain connection the poller reads is held as its bare socket, and
// lines go both ways through it.
func TestPolledConnIsDetached(t *testing.T) {
	lines := make(chan string, 1)
	c, far := polledPair(t, func(m inLine, _ bool) bool {
		lines <- m.Command
		return true
	}, func(error) {})
	if _, ok := c.nc.(*fdConn); !ok {
		t.Fatalf("polled plain connection is a %T, want *fdConn", c.nc)
	}
	if _, err := far.Write([]byte(":srv NOTICE * :a\r\n")); err != nil {
		t.Fatal(err)
	}
	select {
	case cmd := <-lines:
		if cmd != "NOTICE" {
			t.Errorf("line %q", cmd)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the poller never read the line")
	}
	if _, err := c.write([]byte("PONG :a\r\n")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 9)
	_ = far.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(far, got); err != nil || string(got) != "PONG :a\r\n" {
		t.Fatalf("far end read %q, %v", got, err)
	}
}

// A write larger than the socket takes waits for the far end to read,
// as many times as it has to, and ends with all of it written.
func TestFdConnWaitsForRoom(t *testing.T) {
	fc, far := detachedPair(t)
	big := bytes.Repeat([]byte("PRIVMSG #x :flood\r\n"), 1<<18)
	res := make(chan error, 1)
	go func() {
		n, err := fc.Write(big)
		if err == nil && n != len(big) {
			err = errors.New("short write")
		}
		res <- err
	}()
	got := make([]byte, len(big))
	_ = far.SetReadDeadline(time.Now().Add(30 * time.Second))
	for off := 0; off < len(got); {
		time.Sleep(time.Millisecond) // let the socket fill up again
		n, err := far.Read(got[off:min(off+64<<10, len(got))])
		if err != nil {
			t.Fatalf("far end after %d bytes: %v", off, err)
		}
		off += n
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, big) {
		t.Fatal("the far end read other bytes than were written")
	}
}

// gatewaySockets counts this process's sockets from local address
// 127.0.0.3 (the gateway's outgoing_bind in TestSocketsClosed; test
// clients leave from 127.0.0.1).
func gatewaySockets(t *testing.T) int {
	t.Helper()
	mine := map[string]bool{}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:[") {
			mine[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && strings.HasPrefix(f[1], "0300007F:") && mine[f[9]] {
			n++
		}
	}
	return n
}

// TestSocketsClosed: a user's connection, held as a bare socket
// (fdConn, which the runtime no longer closes when it is collected), is
// closed when the user leaves and when the gateway stops: none is left
// open.
func TestSocketsClosed(t *testing.T) {
	e := testIRCEnv(t)
	g := startGW(t, e.xmpp, port(e.irc), map[string]string{"outgoing_bind": "127.0.0.3"})
	wantSockets := func(what string, want int) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for gatewaySockets(t) != want && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		if got := gatewaySockets(t); got != want {
			t.Fatalf("%s: %d sockets to IRC open, want %d", what, got, want)
		}
	}
	const room1, room2 = "#it-fd1%127.0.0.1@" + gwJID, "#it-fd2%127.0.0.1@" + gwJID
	c := onlineUser(t, e, "user12@b.test")
	for _, room := range []string{room1, room2} {
		if self := joinRoom(t, c, room, "fdwatch"); self.Get("type") == "error" {
			t.Fatalf("join %s: %s", room, self)
		}
	}
	wantSockets("two rooms joined", 1)
	c.Close() // the user goes offline: the gateway quits IRC
	wantSockets("the user offline", 0)
	c = onlineUser(t, e, "user12@b.test")
	if self := joinRoom(t, c, room1, "fdwatch"); self.Get("type") == "error" {
		t.Fatalf("join again: %s", self)
	}
	wantSockets("joined again", 1)
	g.stop()
	wantSockets("the gateway stopped", 0)
}

// The users of a server share its TLS configuration, unless they trust a
// certificate of their own or skip the check.
func TestSharedTLSConfig(t *testing.T) {
	a := sharedTLSConfig(dialConfig{server: "irc.shared.example", nick: "a"})
	if b := sharedTLSConfig(dialConfig{server: "irc.shared.example", nick: "b"}); b != a {
		t.Error("two users of a server got different TLS configurations")
	}
	fp := bytes.Repeat([]byte{1}, 32)
	pinned := sharedTLSConfig(dialConfig{server: "irc.shared.example", tlsTrusted: fp})
	for name, c := range map[string]any{
		"a trusted certificate": pinned,
		"no check":              sharedTLSConfig(dialConfig{server: "irc.shared.example", tlsInsecure: true}),
		"another server":        sharedTLSConfig(dialConfig{server: "irc.other.example"}),
	} {
		if c == a {
			t.Errorf("%s: the shared configuration", name)
		}
	}
	if p2 := sharedTLSConfig(dialConfig{server: "irc.shared.example", tlsTrusted: bytes.Clone(fp)}); p2 != pinned {
		t.Error("two users trusting the same certificate got different configurations")
	}
	if a.ServerName != "irc.shared.example" || pinned.ServerName != "irc.shared.example" {
		t.Errorf("server names %q, %q", a.ServerName, pinned.ServerName)
	}
}

// WriteBuffers writes lines with writev, waiting for room as Write does,
// empty ones skipped and a part written carried on from.
func TestFdConnWriteBuffers(t *testing.T) {
	fc, far := detachedPair(t)
	var bufs [][]byte
	var want []byte
	for i := range 64 {
		b := bytes.Repeat([]byte{byte('a' + i%26)}, 64<<10+i)
		if i == 10 {
			b = nil
		}
		bufs = append(bufs, b)
		want = append(want, b...)
	}
	res := make(chan error, 1)
	go func() {
		n, err := fc.WriteBuffers(bufs)
		if err == nil && n != len(want) {
			err = errors.New("short write")
		}
		res <- err
	}()
	got := make([]byte, len(want))
	_ = far.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.ReadFull(far, got); err != nil {
		t.Fatal(err)
	}
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("the far end read other bytes than were written")
	}
}

// readNow and writeNow, on a bare socket (fdRaw, called directly) and on
// one the runtime holds (its RawConn, through callbacks), never wait:
// nothing to read is errSocketEmpty, a full socket takes 0 bytes; the
// far end's close is EOF, and our own close net.ErrClosed. On a bare
// socket they allocate nothing (they run for every line relayed).
func TestReadWriteNow(t *testing.T) {
	bare := func(t *testing.T) (syscall.RawConn, func() error, net.Conn) {
		fc, far := detachedPair(t)
		return (*fdRaw)(fc), fc.Close, far
	}
	runtimes := func(t *testing.T) (syscall.RawConn, func() error, net.Conn) {
		nc, far := tcptest.Pair(t)
		t.Cleanup(func() { nc.Close(); far.Close() })
		raw, err := nc.(*net.TCPConn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		return raw, nc.Close, far
	}
	for name, pair := range map[string]func(*testing.T) (syscall.RawConn, func() error, net.Conn){"bare": bare, "runtime's": runtimes} {
		t.Run(name, func(t *testing.T) {
			raw, closeNear, far := pair(t)
			b := make([]byte, 64)
			if n, err := readNow(raw, b); n != 0 || !errors.Is(err, errSocketEmpty) {
				t.Fatalf("readNow on an empty socket: %d, %v; want errSocketEmpty", n, err)
			}
			if n, err := writeNow(raw, [][]byte{[]byte("PING"), []byte(" :x\r\n")}); n != 9 || err != nil {
				t.Fatalf("writeNow: %d, %v", n, err)
			}
			got := make([]byte, 9)
			if _, err := io.ReadFull(far, got); err != nil || string(got) != "PING :x\r\n" {
				t.Fatalf("far end read %q, %v", got, err)
			}
			if _, err := far.Write([]byte("PONG :x\r\n")); err != nil {
				t.Fatal(err)
			}
			var n int
			var err error
			for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if n, err = readNow(raw, b); !errors.Is(err, errSocketEmpty) {
					break
				}
			}
			if err != nil || string(b[:n]) != "PONG :x\r\n" {
				t.Fatalf("readNow: %q, %v", b[:n], err)
			}
			if name == "bare" {
				line := [][]byte{[]byte("PRIVMSG #c :hi\r\n")}
				rbuf := make([]byte, 4096)
				if a := testing.AllocsPerRun(100, func() {
					var arr [maxWriteLines][]byte
					bufs := append(arr[:0], line...)
					if _, err := writeNow(raw, bufs); err != nil {
						t.Fatal(err)
					}
					if _, err := readNow(raw, rbuf); !errors.Is(err, errSocketEmpty) {
						t.Fatal(err)
					}
				}); a != 0 {
					t.Errorf("writeNow and readNow on a bare socket: %v allocations, want none", a)
				}
				go io.Copy(io.Discard, far)
			}
			// Fill the socket: writeNow then takes nothing, without waiting.
			if name == "runtime's" {
				big := [][]byte{make([]byte, 1<<20)}
				full := false
				for range 256 {
					if n, err := writeNow(raw, big); err != nil {
						t.Fatal(err)
					} else if n == 0 {
						full = true
						break
					}
				}
				if !full {
					t.Fatal("writeNow never found the socket full (256 MB unread)")
				}
			}
			if err := closeNear(); err != nil {
				t.Fatal(err)
			}
			if _, err := readNow(raw, b); !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.EINVAL) {
				t.Errorf("readNow after close: %v, want net.ErrClosed", err)
			}
			if _, err := writeNow(raw, [][]byte{[]byte("x")}); !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.EINVAL) {
				t.Errorf("writeNow after close: %v, want net.ErrClosed", err)
			}
		})
	}
	// The far end's close: EOF.
	raw, _, far := bare(t)
	far.Close()
	var err error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if _, err = readNow(raw, make([]byte, 8)); !errors.Is(err, errSocketEmpty) {
			break
		}
	}
	if err != io.EOF {
		t.Errorf("readNow after the far end closed: %v, want EOF", err)
	}
}
