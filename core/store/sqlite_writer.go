package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime/debug"
)

// Group commit. Every message through the gateway costs an Enqueue commit
// and a Done commit, and each commit of a durable database waits for an
// fsync: per message that was most of the gateway's CPU time. The hot
// outbox writes therefore go through one writer goroutine, which runs all
// the writes waiting at that moment in one transaction and one fsync. A
// caller still returns only after the commit that holds its write, so
// durability is what it was; concurrent writers (sessions enqueueing,
// outbox workers marking items done) share a commit instead of queuing for
// the write lock one by one. A write that arrives alone is committed at
// once: the writer never waits to fill a batch.
//
// database/sql has no group commit and go-sqlite3 none either, hence this.

// maxBatch bounds the writes in one transaction, so one batch does not
// hold the write lock for long.
const maxBatch = 256

// errClosed is returned for writes submitted after Close.
var errClosed = errors.New("store: closed")

// writeOp is one write waiting for the writer.
type writeOp struct {
	ctx context.Context
	// run does the write in tx, using the ctx it is given (not the
	// caller's: once taken, a write is not cancelled). It may run twice (in a batch that failed
	// and then alone), so it must set its results afresh each time. It
	// returns an error only for a database failure; "not found" and
	// similar outcomes are results, reported through its closure.
	run  func(ctx context.Context, tx *sql.Tx) error
	done chan error
}

// write runs f in the writer's next transaction and returns once that
// transaction is committed, or failed. If ctx ends before that transaction
// begins, f does not run and write returns ctx's error; once begun, f's
// outcome is returned whatever ctx does, so an error always means "not
// written".
func (s *SQLite) write(ctx context.Context, f func(ctx context.Context, tx *sql.Tx) error) error {
	op := &writeOp{ctx: ctx, run: f, done: make(chan error, 1)}
	select {
	case s.writes <- op:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.closing:
		return errClosed
	}
	return <-op.done
}

// writer takes writes until Close and commits them in batches.
func (s *SQLite) writer() {
	defer close(s.writerDone)
	batch := make([]*writeOp, 0, maxBatch)
	for {
		select {
		case op := <-s.writes:
			batch = append(batch[:0], op)
		case <-s.closing:
			return
		}
		// Take the writes that queued while the last batch was committing.
	more:
		for len(batch) < maxBatch {
			select {
			case op := <-s.writes:
				batch = append(batch, op)
			default:
				break more
			}
		}
		s.commitBatch(batch)
		clear(batch) // drop references to finished ops
	}
}

// commitBatch runs the writes of batch whose callers still wait in one
// transaction and tells each caller its outcome.
func (s *SQLite) commitBatch(batch []*writeOp) {
	live := batch[:0] // filtered in place
	for _, op := range batch {
		if err := op.ctx.Err(); err != nil {
			op.done <- err
			continue
		}
		live = append(live, op)
	}
	for len(live) > 0 {
		failed, err := s.runBatch(live)
		if err == nil || failed < 0 || len(live) == 1 {
			// Success, or a failure of the transaction itself (BEGIN,
			// COMMIT: a held lock past the busy timeout, a full disk)
			// that every write shares.
			for _, op := range live {
				op.done <- err
			}
			return
		}
		// One write failed, and must not fail the others: it runs alone
		// (so its outcome is its own, not the batch's), and the others
		// are retried together without it.
		op := live[failed]
		op.done <- s.runBatch1(op)
		live = append(live[:failed], live[failed+1:]...)
	}
}

// runBatch runs ops in one transaction. On an error it returns the index of
// the op that failed, or -1 if the transaction itself failed.
func (s *SQLite) runBatch(ops []*writeOp) (failed int, err error) {
	failed = -1
	ctx := context.Background()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return -1, err
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("store: write panicked: %v\n%s", r, debug.Stack())
		}
		if err != nil {
			tx.Rollback()
		}
	}()
	for i, op := range ops {
		failed = i
		if err := op.run(ctx, tx); err != nil {
			return i, err
		}
	}
	return -1, tx.Commit()
}

func (s *SQLite) runBatch1(op *writeOp) error {
	_, err := s.runBatch([]*writeOp{op})
	return err
}
