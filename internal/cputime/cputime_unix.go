//go:build unix

// Package cputime reads the CPU time of this process, for benchmarks that
// report CPU per operation (with SQLite and the network much of it is in C
// and the kernel, which ns/op of a parallel benchmark does not show).
package cputime

import (
	"syscall"
	"time"
)

// Process returns the CPU time (user+system) this process used so far.
func Process() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
