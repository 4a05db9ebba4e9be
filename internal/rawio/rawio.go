// Package rawio makes the system calls of relaying a message (reads and
// writes on non-blocking sockets, a poll that does not wait) without
// telling the Go scheduler, as the runtime's own network poller does for
// its epoll_wait that does not wait.
//
// A system call made through package syscall or x/sys/unix marks the
// thread's processor as in a system call; the runtime's monitor (sysmon)
// takes a processor back from a call it finds still running at its next
// tick (20 µs while it is busy), and wakes another thread to run it. A
// write to a loopback socket runs the receiver's side of TCP before it
// returns, and took about that long: while relaying, the one processor
// (cmd/transportd runs with one) kept moving between threads, each move
// a futex wake and a thread spinning for work, and the monitor stayed on
// its shortest tick. With these calls made raw, relaying a burst took
// half the futex calls and nanosleeps, and 6 to 16 % less CPU a message
// (README, "Raw system calls"). These calls never block: every
// descriptor passed here is non-blocking, and EAGAIN is returned to the
// caller, which waits through the runtime's poller as before.
package rawio

import "syscall"

// Errno is a system call's error number; 0 is none.
type Errno = syscall.Errno
