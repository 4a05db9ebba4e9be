package rawio

import (
	"bytes"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func socketpair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func TestReadWrite(t *testing.T) {
	a, b := socketpair(t)
	buf := make([]byte, 64)
	if n, e := Read(b, buf); e != syscall.EAGAIN || n != 0 {
		t.Fatalf("Read of an empty socket = %d, %v; want EAGAIN", n, e)
	}
	if n, e := Write(a, []byte("PRIVMSG #c :hi\r\n")); e != 0 || n != 16 {
		t.Fatalf("Write = %d, %v", n, e)
	}
	if n, e := Read(b, buf); e != 0 || string(buf[:n]) != "PRIVMSG #c :hi\r\n" {
		t.Fatalf("Read = %q, %v", buf[:n], e)
	}
	// Writev: in order, empty buffers skipped, at most MaxWritev buffers
	// a call (a short write for the rest).
	var bufs [][]byte
	var want []byte
	for i := 0; i < MaxWritev+4; i++ {
		line := []byte{byte('a' + i), '\n'}
		bufs = append(bufs, line, nil)
		if i < MaxWritev {
			want = append(want, line...)
		}
	}
	if n, e := Writev(a, bufs); e != 0 || n != len(want) {
		t.Fatalf("Writev = %d, %v; want %d", n, e, len(want))
	}
	if n, e := Read(b, buf); e != 0 || !bytes.Equal(buf[:n], want) {
		t.Fatalf("after Writev, Read = %q, %v; want %q", buf[:n], e, want)
	}
	if n, e := Writev(a, [][]byte{nil, {}}); e != 0 || n != 0 {
		t.Errorf("Writev of nothing = %d, %v", n, e)
	}
	// A full socket: EAGAIN, never a wait.
	big := make([]byte, 1<<20)
	for {
		_, e := Write(a, big)
		if e == syscall.EAGAIN {
			break
		}
		if e != 0 {
			t.Fatalf("Write to a filling socket: %v", e)
		}
	}
	if _, e := Read(-1, buf); e != syscall.EBADF {
		t.Errorf("Read of a bad descriptor: %v, want EBADF", e)
	}
}

func TestEpollPoll(t *testing.T) {
	a, b := socketpair(t)
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ep)
	if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, b, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: 7}); err != nil {
		t.Fatal(err)
	}
	evs := make([]unix.EpollEvent, 4)
	if n, e := EpollPoll(ep, evs); n != 0 || e != 0 {
		t.Fatalf("EpollPoll with nothing ready = %d, %v", n, e)
	}
	if _, e := Write(a, []byte("x")); e != 0 {
		t.Fatal(e)
	}
	if n, e := EpollPoll(ep, evs); n != 1 || e != 0 || evs[0].Fd != 7 || evs[0].Events&unix.EPOLLIN == 0 {
		t.Fatalf("EpollPoll with one ready = %d, %v, %+v", n, e, evs[0])
	}
	if n, e := EpollPoll(ep, nil); n != 0 || e != 0 {
		t.Errorf("EpollPoll into no room = %d, %v", n, e)
	}
}
