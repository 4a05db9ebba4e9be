//go:build !linux

package rawio

import "syscall"

// Supported says whether the calls here are made raw (Linux); elsewhere
// they are not implemented and callers keep their usual calls.
const Supported = false

func Read(fd int, b []byte) (int, Errno)        { return 0, syscall.ENOSYS }
func Write(fd int, b []byte) (int, Errno)       { return 0, syscall.ENOSYS }
func Writev(fd int, bufs [][]byte) (int, Errno) { return 0, syscall.ENOSYS }
