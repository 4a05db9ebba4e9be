package memtrim

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"testing"
	"time"
)

var sink [][]byte

// spareHeap leaves the process with about 16 MiB live (the returned
// ballast) and 16 MiB free but resident: under the heap's goal, so the
// runtime's own scavenger keeps it.
func spareHeap() [][]byte {
	ballast := make([][]byte, 0, 256)
	for i := 0; i < 256; i++ {
		ballast = append(ballast, make([]byte, 64<<10))
	}
	for i := 0; i < 256; i++ {
		sink = append(sink, make([]byte, 64<<10))
	}
	sink = nil
	runtime.GC()
	return ballast
}

func freeBytes() uint64 {
	s := []metrics.Sample{{Name: mFree}}
	metrics.Read(s)
	return value(s[0])
}

// quietHeap gives the Go heap's free pages back until under minFree are
// left, for a check that must find nothing to trim: right after one
// FreeOSMemory (or a trim), the runtime's own work (a sweep ending, a
// stack freed) left up to some 600 KB free again now and then, more than
// minFree, which a check then rightly trimmed (the tests failed about
// one run in ten).
func quietHeap() {
	for i := 0; i < 20 && freeBytes() >= minFree/2; i++ {
		debug.FreeOSMemory()
	}
}

func TestQuietProcessGivesBackFreeHeap(t *testing.T) {
	ballast := spareHeap()
	before := freeBytes()
	if before < 8<<20 {
		t.Fatalf("setup: only %d bytes free and resident", before)
	}
	var freed uint64
	tr := &Trimmer{Trimmed: func(n uint64) { freed = n }}
	if tr.Check() {
		t.Fatal("the first check trimmed: it has nothing to compare with")
	}
	if tr.Check() {
		t.Fatal("trimmed after one quiet interval")
	}
	if !tr.Check() {
		t.Fatalf("a quiet process with %d bytes of free heap was not trimmed", freeBytes())
	}
	if after := freeBytes(); after > 4<<20 {
		t.Fatalf("after trimming, %d bytes of heap are still free and resident (were %d)", after, before)
	}
	if freed < 8<<20 {
		t.Fatalf("Trimmed reported %d bytes", freed)
	}
	// Nothing left to give back: the next quiet check does nothing,
	// though the trim left up to 1 MB free in the processors' page
	// caches (freeFloor; run alone 300 times, this failed 21 times
	// before). The runtime's own work now and then frees a few hundred
	// KB again between quietHeap and the check (see
	// TestQuietProcessTrimsCHeap): a trimmer that trims with nothing
	// free trims every time.
	again := 0
	for i := 0; i < 3; i++ {
		quietHeap()
		if tr.Check() {
			again++
		}
	}
	if again == 3 {
		t.Fatal("trimmed again with nothing free, three times out of three")
	}
	runtime.KeepAlive(ballast)
}

// A process that goes quiet right after a burst has its garbage, not yet
// collected, given back too.
func TestQuietProcessGivesBackGarbage(t *testing.T) {
	ballast := make([][]byte, 0, 256)
	for i := 0; i < 256; i++ {
		ballast = append(ballast, make([]byte, 64<<10))
	}
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	for i := 0; i < 128; i++ {
		sink = append(sink, make([]byte, 64<<10)) // 8 MiB, under the next collection's trigger
	}
	sink = nil
	tr := &Trimmer{}
	tr.Check()
	tr.Check()
	if !tr.Check() {
		t.Fatal("8 MiB of garbage beside 16 MiB live were not given back")
	}
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if after.NumGC == before.NumGC {
		t.Fatal("trimming did not collect")
	}
	if resident := after.HeapSys - after.HeapReleased; resident > 20<<20 {
		t.Fatalf("after trimming, the heap holds %d bytes resident for 16 MiB live", resident)
	}
	runtime.KeepAlive(ballast)
}

func TestBusyProcessKeepsItsHeap(t *testing.T) {
	ballast := spareHeap()
	tr := &Trimmer{}
	tr.Check()
	tr.Check()
	// More than an eighth of the live 16 MiB allocated since: busy.
	for i := 0; i < 64; i++ {
		sink = append(sink, make([]byte, 64<<10))
	}
	sink = nil
	if tr.Check() {
		t.Fatal("a process that allocated 4 MiB since the last check was trimmed")
	}
	runtime.KeepAlive(ballast)
}

// C's heap is trimmed with the Go heap, and on its own when it grew
// cMinFree free since its last trim while the process was quiet (the
// database pool closed a connection); not again for the same free bytes,
// and not while the process is busy.
func TestQuietProcessTrimsCHeap(t *testing.T) {
	var free uint64
	trims := 0
	// The Go heap is never worth a trim here: quietHeap leaves it under
	// minFree, but the runtime's own work freed more again now and then
	// before the check (278528 bytes once, which trimmed C's heap with
	// it and failed the count).
	tr := &Trimmer{C: &CHeap{Free: func() uint64 { return free }, Trim: func() { trims++ }}, goMinFree: 1 << 50}
	check := func(want int, why string) {
		t.Helper()
		quietHeap()
		if tr.Check() {
			t.Fatalf("%s: the Go heap was trimmed (%d bytes free)", why, freeBytes())
		}
		if trims != want {
			t.Fatalf("%s: C's heap trimmed %d times, want %d", why, trims, want)
		}
	}
	check(0, "first check")
	check(0, "one quiet interval")
	check(0, "quiet, nothing free in C's heap")
	free = 100 << 10
	check(1, "quiet, 100 KB free in C's heap")
	check(1, "the same 100 KB again")
	free += cMinFree / 2
	check(1, "half of cMinFree more")
	free = 50 << 10 // taken up again
	check(1, "less free")
	free += cMinFree
	check(2, "cMinFree more than the least since the last trim")
	// Busy: more than an eighth of the live heap allocated since.
	live := runtime.MemStats{}
	runtime.ReadMemStats(&live)
	for i := uint64(0); i < live.HeapAlloc/(64<<10)/4+4; i++ {
		sink = append(sink, make([]byte, 64<<10))
	}
	sink = nil
	free += 4 * cMinFree
	if tr.Check(); trims != 2 {
		t.Fatalf("a busy process's C heap was trimmed (%d)", trims)
	}
	debug.FreeOSMemory()
	tr.Check() // quiet once
	tr.Check() // twice: trimmed now
	if trims != 3 {
		t.Fatalf("quiet again with %d KB more free: C's heap trimmed %d times, want 3", 4*cMinFree>>10, trims)
	}
}

func TestRunTrimsUntilCancelled(t *testing.T) {
	ballast := spareHeap()
	trims := make(chan uint64, 8)
	tr := &Trimmer{Trimmed: func(n uint64) { trims <- n }}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx, 20*time.Millisecond); close(done) }()
	select {
	case <-trims:
	case <-time.After(10 * time.Second):
		t.Fatal("Run never trimmed a quiet process")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return once cancelled")
	}
	runtime.KeepAlive(ballast)
}

// gcPercent reads the collector's setting.
func gcPercent() int {
	p := debug.SetGCPercent(100)
	debug.SetGCPercent(p)
	return p
}

// churnTest sets GOGC to 200 and churnHold to hold for one test, and
// puts both back after it.
func churnTest(t *testing.T, hold time.Duration) {
	prevGC := debug.SetGCPercent(200)
	churn.mu.Lock()
	prevHold := churnHold
	churnHold = hold
	churn.mu.Unlock()
	t.Cleanup(func() {
		churn.mu.Lock()
		churnHold = prevHold
		churn.mu.Unlock()
		debug.SetGCPercent(prevGC)
	})
}

// startTrimmer runs a Trimmer until stop, which waits for Run to return;
// Churn works once startTrimmer returned.
func startTrimmer(every time.Duration) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { (&Trimmer{}).Run(ctx, every); close(done) }()
	for {
		churn.mu.Lock()
		on := churn.enabled
		churn.mu.Unlock()
		if on {
			break
		}
		time.Sleep(time.Millisecond)
	}
	return func() { cancel(); <-done }
}

// waitGCPercent waits for churn to end: GOGC back at 200.
func waitGCPercent(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for gcPercent() != 200 {
		if time.Now().After(deadline) {
			t.Fatalf("GOGC still %d after churn stopped", gcPercent())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestChurnCollectsOftenWhileSessionsStart(t *testing.T) {
	churnTest(t, 50*time.Millisecond)

	Churn() // no Trimmer runs: nothing changes
	if p := gcPercent(); p != 200 {
		t.Fatalf("Churn without a running Trimmer set GOGC to %d", p)
	}

	stop := startTrimmer(20 * time.Millisecond)
	Churn()
	if p := gcPercent(); p != ChurnPercent {
		t.Fatalf("while sessions start GOGC is %d, want %d", p, ChurnPercent)
	}
	// Sessions keep starting: the setting stays low.
	for i := 0; i < 5; i++ {
		time.Sleep(20 * time.Millisecond)
		Churn()
		if p := gcPercent(); p != ChurnPercent {
			t.Fatalf("GOGC went back to %d while sessions were still starting", p)
		}
	}
	// They stopped: the setting comes back.
	waitGCPercent(t)

	// A process run with a lower GOGC keeps it; stopping the Trimmer
	// restores what was set.
	low := ChurnPercent / 2
	debug.SetGCPercent(low)
	Churn()
	if p := gcPercent(); p != low {
		t.Errorf("Churn raised GOGC %d to %d", low, p)
	}
	debug.SetGCPercent(200)
	churn.mu.Lock()
	churnHold = time.Hour
	churn.mu.Unlock()
	Churn()
	stop()
	if p := gcPercent(); p != 200 {
		t.Errorf("after Run ended GOGC is %d, want 200 back", p)
	}
}

func forcedCycles() uint64 {
	s := []metrics.Sample{{Name: "/gc/cycles/forced:gc-cycles"}}
	metrics.Read(s)
	return value(s[0])
}

// While sessions start, Churn collects as they allocate, whatever the
// pacer would do; once they stopped, it leaves the collector alone.
func TestChurnCollectsAsSessionsAllocate(t *testing.T) {
	churnTest(t, 300*time.Millisecond)
	defer startTrimmer(time.Hour)()

	// Sessions start, each leaving garbage: 4 MB over some 200 ms.
	before := forcedCycles()
	for i := 0; i < 40; i++ {
		Churn()
		garbage(100 << 10)
	}
	during := forcedCycles() - before
	// At a step of 128 KB or more, 4 MB is at most 32 collections; the
	// ticks and the rest after each make it fewer, but never none.
	if during == 0 || during > 32 {
		t.Fatalf("%d collections while 4 MB was allocated by starting sessions, want 1 to 32", during)
	}

	// They stopped: once the hold is over, allocating collects nothing
	// more than the pacer would (GOGC 200 over a small heap: nothing).
	waitGCPercent(t)
	time.Sleep(3 * churnTick) // the collecting goroutine sees it
	after := forcedCycles()
	for i := 0; i < 20; i++ {
		garbage(100 << 10)
	}
	if n := forcedCycles() - after; n != 0 {
		t.Errorf("%d forced collections after churn stopped", n)
	}
}

// garbage allocates about n bytes that die at once, then sleeps 5 ms.
func garbage(n int) {
	for j := 0; j < n/(4<<10); j++ {
		sink = append(sink, make([]byte, 4<<10))
	}
	sink = nil
	time.Sleep(5 * time.Millisecond)
}

// A cache registered with OnTrim is dropped when a quiet process trims,
// so its memory goes back with the rest; not while the process is busy,
// and not once unregistered.
func TestTrimDropsCaches(t *testing.T) {
	cache := make([][]byte, 0, 128)
	for i := 0; i < 128; i++ {
		cache = append(cache, make([]byte, 64<<10)) // 8 MiB
	}
	drops, goneDrops := 0, 0
	remove := OnTrim(func() { drops++; cache = nil })
	OnTrim(func() { goneDrops++ })() // registered and removed at once
	defer remove()

	ballast := spareHeap()
	tr := &Trimmer{}
	tr.Check()
	tr.Check()
	for i := 0; i < 64; i++ { // busy: 4 MiB allocated since the last check
		sink = append(sink, make([]byte, 64<<10))
	}
	sink = nil
	if tr.Check() || drops != 0 {
		t.Fatalf("a busy process trimmed (caches dropped %d times)", drops)
	}
	tr.Check()
	if !tr.Check() {
		t.Fatal("a quiet process with free heap was not trimmed")
	}
	if drops != 1 || cache != nil {
		t.Fatalf("the cache was dropped %d times by one trim (still held: %v)", drops, cache != nil)
	}
	if goneDrops != 0 {
		t.Fatal("a removed cache was dropped")
	}
	// Its 8 MiB went back with the trim: what is live is the ballast.
	s := []metrics.Sample{{Name: mLive}}
	metrics.Read(s)
	if live := value(s[0]); live > 20<<20 {
		t.Fatalf("after the trim %d bytes are live: the cache's 8 MiB were kept", live)
	}
	runtime.KeepAlive(ballast)
}
