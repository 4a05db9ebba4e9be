package workers

import (
	"runtime"
	"sync"
	"testing"
	"time"
)

// Every task runs, once, and goroutines are reused: after a burst no more
// than maxIdle wait, and later tasks start no new goroutine.
func TestGo(t *testing.T) {
	const n = 1000
	var wg sync.WaitGroup
	var mu sync.Mutex
	ran := map[int]int{}
	for i := 0; i < n; i++ {
		wg.Add(1)
		Go(func() {
			defer wg.Done()
			mu.Lock()
			ran[i]++
			mu.Unlock()
		})
	}
	wg.Wait()
	for i := 0; i < n; i++ {
		if ran[i] != 1 {
			t.Fatalf("task %d ran %d times", i, ran[i])
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for Idle() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if Idle() == 0 || Idle() > int(maxIdle) {
		t.Fatalf("%d goroutines wait, want 1..%d", Idle(), maxIdle)
	}
	before := runtime.NumGoroutine()
	for i := 0; i < 100; i++ {
		done := make(chan struct{})
		Go(func() { close(done) })
		<-done
		for Idle() == 0 && time.Now().Before(deadline) {
			runtime.Gosched()
		}
	}
	if after := runtime.NumGoroutine(); after > before {
		t.Errorf("sequential tasks started goroutines: %d -> %d", before, after)
	}
}

func BenchmarkGo(b *testing.B) {
	done := make(chan struct{}, 1)
	for b.Loop() {
		Go(func() { done <- struct{}{} })
		<-done
	}
}

func BenchmarkGoStatement(b *testing.B) {
	done := make(chan struct{}, 1)
	for b.Loop() {
		go func() { done <- struct{}{} }()
		<-done
	}
}

// deep uses about n KiB of stack, as a drain going through the store and
// the XML encoder does.
//
//go:noinline
func deep(n int) byte {
	var buf [1024]byte
	buf[n%1024] = byte(n)
	if n == 0 {
		return buf[0]
	}
	return deep(n-1) + buf[n%1024]
}

func BenchmarkGoDeep(b *testing.B) {
	done := make(chan byte, 1)
	for b.Loop() {
		Go(func() { done <- deep(16) })
		<-done
	}
}

func BenchmarkGoStatementDeep(b *testing.B) {
	done := make(chan byte, 1)
	for b.Loop() {
		go func() { done <- deep(16) }()
		<-done
	}
}

// Waiting goroutines end one every idleFor, and their stacks with them.
func TestIdleWorkersEnd(t *testing.T) {
	stop := make(chan struct{})
	defer close(stop)
	go reaper(10*time.Millisecond, stop) // a second one, quicker than the package's
	before := runtime.NumGoroutine()
	release := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 2*int(maxIdle); i++ {
		wg.Add(1)
		Go(func() {
			defer wg.Done()
			<-release
		})
	}
	close(release)
	wg.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for Idle() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if Idle() == 0 {
		t.Fatal("no goroutine waits after the tasks")
	}
	for Idle() > 0 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if Idle() > 0 {
		t.Fatalf("%d goroutines still wait after idleFor", Idle())
	}
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines, %d before the tasks", n, before)
	}
	// A task after that still runs.
	done := make(chan struct{})
	Go(func() { close(done) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("a task after the workers ended never ran")
	}
}
