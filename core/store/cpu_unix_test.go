//go:build unix

package store

import (
	"syscall"
	"testing"
	"time"
)

// processCPU returns the CPU time (user+system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process CPU time per benchmark iteration since
// cpu0, in microseconds: with SQLite most of it is in C and the kernel
// (fsync), which ns/op of a parallel benchmark does not show.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	if b.N > 0 {
		b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	}
}
