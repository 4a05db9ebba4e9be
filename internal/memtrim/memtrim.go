// Package memtrim gives the Go heap's spare room back to the system once
// the process has gone quiet.
//
// Go's collector lets the heap grow to twice what is live before it
// collects (GOGC=100), and the runtime keeps the freed pages resident up
// to about that goal. For a gateway that is the memory of its busiest
// minute, kept while its users sit idle in channels for hours: with 200
// IRC users joined, about half of transportd's growth in resident memory
// was freed heap. The runtime's background scavenger returns only what
// lies above the goal.
//
// A Trimmer checks every so often how much the heap allocated since the
// last check. When that was little next to what is live twice in a row
// (the process is quiet, the room will not be needed soon) and a good share of the heap is
// free but still resident, or garbage not yet collected, it collects and
// returns the free pages (debug.FreeOSMemory). A busy process is never trimmed: its spare room is
// what keeps its collections rare.
//
// Churn is the other half: while sessions start (a restart, a reconnect
// storm), the collector runs more often. Go does not move objects: a
// session's long-lived state, allocated among the garbage of its start
// (registration lines, database rows), pins every span it lands in, and
// with the collector's room at three times the live heap, those spans
// were most of the heap 200 idle IRC users kept (HeapInuse 7.7 MB for 3.8
// MB live). Collecting often while they start lets the state fill the
// slots the garbage left. A second after the last session started, the
// collector's room is restored.
//
// A low GOGC alone collected less often than it says: on one processor
// the collector marks concurrently with the sessions starting, and these
// allocate on while it marks (200 IRC users joining allocated 7 MB in
// 9 or 10 collections at GOGC=10, and in 9 at 2). The last collection's
// garbage then stays as holes in spans the state pins. So while sessions
// start, Churn also collects each time a thirty-second of the live heap
// was allocated (collectChurn). 200 IRC users joining, three runs each:
// 21 to 23 collections instead of 9 or 10, the free slots the joins left
// in the heap 0.09 to 0.20 MB instead of 0.29 to 0.43, resident memory
// per idle user 10.2 to 11.0 KiB instead of 10.5 to 12.2; the joins'
// CPU time the same (0.48 s against 0.49, one run each).
package memtrim

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// Defaults for Run.
const (
	// Every is how often the heap is looked at.
	Every = 10 * time.Second
	// minFree is the least free, resident heap worth a collection. A
	// collection of a heap of a few MB takes about a millisecond; with
	// 200 IRC users idle, 0.75 MB sat free and resident under the 1 MB
	// this used to be (and under a quarter of the 3.8 MB live).
	minFree = 256 << 10
)

// Trimmer decides when to return free heap; see the package comment.
type Trimmer struct {
	// Trimmed is called after each trim of the Go heap with the bytes it
	// could return (an estimate: free and resident, or garbage, before
	// it). Optional.
	Trimmed func(freed uint64)
	// C is C's heap (SQLite's), trimmed with the Go heap, and on its own
	// when it grew free while the process was quiet. Optional.
	C *CHeap

	samples    []metrics.Sample
	lastAllocs uint64
	primed     bool
	quiet      int    // consecutive quiet checks
	cFree      uint64 // C's free bytes when last trimmed (or fewer since)
	// goMinFree is the least free Go heap worth a trim, minFree when 0
	// (tests of C's heap alone set it out of reach).
	goMinFree uint64
	// freeFloor is the free heap the last trim left: pages it could not
	// return (each processor's page cache holds up to 512 KB), not
	// counted as worth the next.
	freeFloor uint64
}

// CHeap is a C heap a Trimmer looks after.
type CHeap struct {
	// Free returns the bytes free inside the heap, resident or not
	// (glibc's mallinfo2 fordblks: a trim returns their pages, but they
	// stay counted).
	Free func() uint64
	// Trim returns the free pages to the system (malloc_trim).
	Trim func()
}

// cMinFree is how much C's heap must have grown free since its last trim
// for a trim of its own. SQLite frees memory when the database pool
// closes a connection it kept idle, a minute after a burst (store's
// sqliteConnIdle), some 150 KB each: when the Go heap had been trimmed
// before, nothing gave those pages back, and the idle figure of 200
// users (JoinedUsers) varied by 2 KiB a user from run to run, more with
// the rooms' archive (up to four connections after 200 joins).
const cMinFree = 64 << 10

// quietChecks is how many checks in a row must find the process quiet:
// a lull of a few seconds between bursts is no reason to give back room
// the next burst faults in again.
const quietChecks = 2

const (
	mAllocs = "/gc/heap/allocs:bytes"
	mLive   = "/gc/heap/live:bytes"
	mFree   = "/memory/classes/heap/free:bytes"
	mObjs   = "/memory/classes/heap/objects:bytes"
)

// Check looks at the heap once and trims it if the process was quiet
// since the previous quietChecks Checks. The first Check only takes the
// measure.
func (t *Trimmer) Check() bool {
	if t.samples == nil {
		t.samples = []metrics.Sample{{Name: mAllocs}, {Name: mLive}, {Name: mFree}, {Name: mObjs}}
	}
	metrics.Read(t.samples)
	allocs, live := value(t.samples[0]), value(t.samples[1])
	// Free: pages free and resident, and the objects beyond those live at
	// the last collection (garbage since; a user who left). A process that
	// went quiet right after a burst has little free yet: the collection
	// that frees the burst's garbage may be two minutes away.
	free := value(t.samples[2])
	if objs := value(t.samples[3]); objs > live {
		free += objs - live
	}
	allocated := allocs - t.lastAllocs
	t.lastAllocs = allocs
	if !t.primed {
		t.primed = true
		return false
	}
	// Quiet: since the last look, less than an eighth of the live heap
	// was allocated, so the heap would take many more intervals to grow
	// back into the room given up. Worth it: at least minFree and a
	// sixteenth of the live heap sit free.
	if allocated > live/8 {
		t.quiet = 0
		return false
	}
	if t.quiet++; t.quiet < quietChecks {
		return false
	}
	least := uint64(minFree)
	if t.goMinFree != 0 {
		least = t.goMinFree
	}
	// What a trim would return: beyond what the last one could not.
	// With 16 MB live on two processors, 1 MB stayed free after each
	// trim, over the sixteenth of the live heap that makes a trim
	// worth it: every quiet check collected again, for nothing.
	gain := free - min(free, t.freeFloor)
	if gain < least || gain < live/16 {
		t.trimC(false)
		return false
	}
	dropCaches()
	debug.FreeOSMemory()
	t.trimC(true)
	// FreeOSMemory allocates nothing much itself; the next interval
	// starts from here.
	metrics.Read(t.samples)
	t.lastAllocs = value(t.samples[0])
	t.freeFloor = value(t.samples[2])
	if t.Trimmed != nil {
		t.Trimmed(free)
	}
	return true
}

// trimC trims C's heap: always with force (the Go heap was trimmed),
// else when it has grown cMinFree free since it was last trimmed.
func (t *Trimmer) trimC(force bool) {
	if t.C == nil {
		return
	}
	f := t.C.Free()
	if f < t.cFree {
		t.cFree = f // taken up again since
	}
	if !force && f-t.cFree < cMinFree {
		return
	}
	t.C.Trim()
	t.cFree = f
}

// caches are what OnTrim registered.
var caches struct {
	mu   sync.Mutex
	next int
	fs   map[int]func()
}

// OnTrim registers drop, called before each trim of the Go heap (on the
// Trimmer's goroutine), and returns what unregisters it. For caches that
// save work under load only: the process is quiet when it trims, so
// what they hold is dropped and given back with the rest. parseJID's
// addresses in core were 60 KB of the 1 MB 200 idle IRC users kept.
func OnTrim(drop func()) (remove func()) {
	caches.mu.Lock()
	defer caches.mu.Unlock()
	if caches.fs == nil {
		caches.fs = map[int]func(){}
	}
	id := caches.next
	caches.next++
	caches.fs[id] = drop
	return func() {
		caches.mu.Lock()
		delete(caches.fs, id)
		caches.mu.Unlock()
	}
}

func dropCaches() {
	caches.mu.Lock()
	fs := make([]func(), 0, len(caches.fs))
	for _, f := range caches.fs {
		fs = append(fs, f)
	}
	caches.mu.Unlock()
	for _, f := range fs {
		f()
	}
}

func value(s metrics.Sample) uint64 {
	if s.Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s.Value.Uint64()
}

// Run checks every interval until ctx is done. While it runs, Churn
// lowers the collector's room.
func (t *Trimmer) Run(ctx context.Context, every time.Duration) {
	tk := time.NewTicker(every)
	defer tk.Stop()
	churn.mu.Lock()
	churn.enabled = true
	churn.mu.Unlock()
	defer func() {
		churn.mu.Lock()
		churn.enabled = false
		churn.mu.Unlock()
		endChurn(true)
	}()
	t.Check()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			t.Check()
		}
	}
}

// ChurnPercent is the collector's setting (GOGC) while sessions start.
// 200 IRC users joining, resident memory per user once idle (JoinedUsers,
// settled; the figure varies by 2-3 KiB from run to run): at 50, 15.5 to
// 18.2 KiB in four runs; at 20, 14.3; at 10, 13.1 to 16.0 in three, and a
// second after the joins 20 to 21 KiB instead of 27 to 28. The 200 joins
// took no longer (some 25 collections instead of 17, of a few MB each).
const ChurnPercent = 10

// churnHold is how long after the last Churn the setting stays low: a
// session's state is built in the second after it starts (registration,
// joins), and relaying right after a start should not pay for long.
// A variable for tests.
var churnHold = time.Second

var churn struct {
	mu      sync.Mutex
	enabled bool // a Trimmer runs
	low     bool // the setting is ChurnPercent
	gen     int  // counts the times low was set (collectChurn's)
	normal  int  // the setting to restore
	last    time.Time
	timer   *time.Timer
}

// Churn tells that long-lived state is being built (a session starts): the
// collector runs at ChurnPercent until no Churn came for churnHold. A
// no-op when no Trimmer runs, or when GOGC is already that low or off.
func Churn() {
	churn.mu.Lock()
	defer churn.mu.Unlock()
	if !churn.enabled {
		return
	}
	if !churn.low {
		prev := debug.SetGCPercent(ChurnPercent)
		if prev < 0 || prev <= ChurnPercent {
			debug.SetGCPercent(prev)
			return
		}
		churn.normal, churn.low = prev, true
		churn.gen++
		go collectChurn(churn.gen)
	}
	churn.last = time.Now()
	if churn.timer == nil {
		churn.timer = time.AfterFunc(churnHold, func() { endChurn(false) })
	} else {
		churn.timer.Reset(churnHold)
	}
}

// endChurn restores the collector's setting once churn has stopped (or
// at once, with force).
func endChurn(force bool) {
	churn.mu.Lock()
	defer churn.mu.Unlock()
	if !churn.low || (!force && time.Since(churn.last) < churnHold) {
		return // a later Churn re-armed the timer
	}
	debug.SetGCPercent(churn.normal)
	churn.low = false
}

// Churn's own collections: one each time churnStepShare of the live heap
// (at least churnStepMin) was allocated, looked at every churnTick, and
// never more than a fifth of the time (after a collection that took d,
// none for 4d).
const (
	churnTick      = 10 * time.Millisecond
	churnStepShare = 32
	churnStepMin   = 128 << 10
)

// collectChurn runs the collector while churn lasts (see the package
// comment), and returns when it ends: when the churn that started it
// (gen) ended, even if another began since.
func collectChurn(gen int) {
	s := []metrics.Sample{{Name: mAllocs}, {Name: mLive}}
	metrics.Read(s)
	last := value(s[0])
	var rest time.Time
	tk := time.NewTicker(churnTick)
	defer tk.Stop()
	for now := range tk.C {
		churn.mu.Lock()
		on := churn.low && churn.gen == gen
		churn.mu.Unlock()
		if !on {
			return
		}
		if now.Before(rest) {
			continue
		}
		metrics.Read(s)
		step := max(value(s[1])/churnStepShare, churnStepMin)
		if value(s[0])-last < step {
			continue
		}
		start := time.Now()
		runtime.GC()
		rest = time.Now().Add(4 * time.Since(start))
		metrics.Read(s)
		last = value(s[0])
	}
}
