package store

import (
	"testing"
	"time"

	"transportd/internal/cputime"
)

// reportCPU reports the process CPU time per benchmark iteration since
// cpu0, in microseconds: with SQLite most of it is in C and the kernel
// (fsync), which ns/op of a parallel benchmark does not show.
func reportCPU(b *testing.B, cpu0 time.Duration) {
	if b.N > 0 {
		b.ReportMetric(float64((cputime.Process()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
	}
}
