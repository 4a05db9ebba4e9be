// Package workers runs short tasks on goroutines kept for reuse.
//
// transportd starts a goroutine for each burst of work (a user's events,
// a session's lines, a connection's writes) rather than keeping one per
// user waiting: an idle goroutine keeps the stack its deepest work grew.
// Under load that made starting goroutines, and growing each new one's
// stack to what the work needs, a tenth of the CPU of relaying a message.
// Go hands a task to a goroutine that finished an earlier one and waits,
// already grown; a few such goroutines are kept, however many users there
// are, and while the process is quiet they end one by one (the reaper):
// with each goes its stack, which after 200 IRC users joined held some
// 1 MB in all.
package workers

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

var (
	tasks = make(chan func()) // unbuffered: taken only by a waiting worker
	idle  atomic.Int32
	// maxIdle is how many finished goroutines wait for the next task.
	maxIdle = int32(max(8, 4*runtime.GOMAXPROCS(0)))
	// Every idleFor the reaper hands a waiting goroutine, if any, a nil
	// task, which ends it: quiet, the few kept go one after the other;
	// busy, the next burst starts new ones. (A timer per wait cost as
	// much as handing a task over; so did a second channel to wait on.)
	idleFor    = 10 * time.Second
	reaperOnce sync.Once
)

// Go runs f on a goroutine, as the go statement does: a waiting one if
// there is one, else a new one. A panic in f ends the program, as with
// the go statement: callers recover where they want to.
func Go(f func()) {
	if f == nil {
		panic("workers: Go(nil)")
	}
	select {
	case tasks <- f:
	default:
		reaperOnce.Do(func() { go reaper(idleFor, nil) })
		go work(f)
	}
}

func work(f func()) {
	for {
		f()
		if idle.Add(1) > maxIdle {
			idle.Add(-1)
			return
		}
		f = <-tasks
		idle.Add(-1)
		if f == nil {
			return // reaped
		}
	}
}

// reaper ends a waiting goroutine every so often, until stop is closed.
func reaper(every time.Duration, stop <-chan struct{}) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-stop:
			return
		}
		select {
		case tasks <- nil:
		default: // none waits
		}
	}
}

// Idle is how many goroutines wait for a task.
func Idle() int { return int(idle.Load()) }
