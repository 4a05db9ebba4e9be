package rawio

import (
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Supported says whether the calls here are made raw (Linux); elsewhere
// they are not implemented and callers keep their usual calls.
const Supported = true

// Read reads into b from a non-blocking descriptor.
func Read(fd int, b []byte) (int, Errno) { return rw(unix.SYS_READ, fd, b) }

// Write writes b to a non-blocking descriptor: n may be short of it.
func Write(fd int, b []byte) (int, Errno) { return rw(unix.SYS_WRITE, fd, b) }

func rw(trap uintptr, fd int, b []byte) (int, Errno) {
	var p unsafe.Pointer
	if len(b) > 0 {
		p = unsafe.Pointer(&b[0])
	}
	r, _, e := syscall.RawSyscall(trap, uintptr(fd), uintptr(p), uintptr(len(b)))
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// MaxWritev is how many buffers one Writev writes at most (the rest are
// left for the caller's next call, as a short write).
const MaxWritev = 16

// Writev writes the buffers, in order, to a non-blocking descriptor with
// one system call: n may be short of them.
func Writev(fd int, bufs [][]byte) (int, Errno) {
	var iov [MaxWritev]unix.Iovec
	k := 0
	for _, b := range bufs {
		if k == len(iov) {
			break
		}
		if len(b) == 0 {
			continue
		}
		iov[k].Base = &b[0]
		iov[k].SetLen(len(b))
		k++
	}
	if k == 0 {
		return 0, 0
	}
	r, _, e := syscall.RawSyscall(unix.SYS_WRITEV, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(k))
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}

// EpollPoll reports the ready events of an epoll set without waiting.
func EpollPoll(epfd int, evs []unix.EpollEvent) (int, Errno) {
	if len(evs) == 0 {
		return 0, 0
	}
	r, _, e := syscall.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(unsafe.Pointer(&evs[0])), uintptr(len(evs)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(r), 0
}
