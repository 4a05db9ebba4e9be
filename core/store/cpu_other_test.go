//go:build !unix

package store

import (
	"testing"
	"time"
)

func processCPU() time.Duration { return 0 }

func reportCPU(b *testing.B, cpu0 time.Duration) {}
