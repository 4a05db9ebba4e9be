package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

const outboxColumns = `id, account, direction, conversation, idem_key, payload, attempts, next_attempt, last_error, created`

// isHead is true for an outbox row o that no earlier row of its conversation
// queue precedes; it uses the outbox_conversation index.
const isHead = `NOT EXISTS (SELECT 1 FROM outbox p
	WHERE p.account = o.account AND p.direction = o.direction
		AND p.conversation = o.conversation AND p.id < o.id)`

// The statements of the message path (prepared once, see sqliteStmts).
const (
	sqlEnqueueDelivered = `SELECT outbox_id FROM outbox_delivered
		WHERE account = ? AND direction = ? AND idem_key = ? AND delivered >= ?`
	// A NULL idem_key never conflicts: no deduplication.
	sqlEnqueueInsert = `INSERT INTO outbox(account, direction, conversation, idem_key,
			payload, attempts, next_attempt, last_error, created)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT(account, direction, idem_key) DO NOTHING RETURNING id`
	sqlEnqueueQueued = `SELECT id FROM outbox WHERE account = ? AND direction = ? AND idem_key = ?`
	sqlDoneDelete    = `DELETE FROM outbox WHERE id = ? RETURNING account, direction, idem_key`
	sqlDoneRecord    = `INSERT INTO outbox_delivered(account, direction, idem_key, outbox_id, delivered)
		VALUES (?, ?, ?, ?, ?)
		ON CONFLICT(account, direction, idem_key) DO UPDATE SET
			outbox_id = excluded.outbox_id, delivered = excluded.delivered`
	sqlRetry = `UPDATE outbox SET attempts = attempts + 1, next_attempt = ?, last_error = ?
		WHERE id = ?`
	sqlPostpone = `UPDATE outbox SET next_attempt = ?, last_error = ? WHERE id = ?`
	sqlDue      = `SELECT ` + outboxColumns + ` FROM outbox o
		WHERE o.direction = ? AND o.next_attempt <= ? AND ` + isHead + `
		ORDER BY o.id LIMIT ?`
	sqlNextDue = `SELECT MIN(o.next_attempt) FROM outbox o
		WHERE o.direction = ? AND ` + isHead
	sqlPending = `SELECT COUNT(*) FROM outbox
		WHERE (? = 0 OR account = ?) AND (? = '' OR direction = ?)`
)

func (s *SQLite) Enqueue(ctx context.Context, it *OutboxItem) (id int64, dup bool, err error) {
	if it.AccountID == 0 {
		return 0, false, errors.New("store: enqueue: no account")
	}
	if !it.Direction.valid() {
		return 0, false, fmt.Errorf("store: enqueue: invalid direction %q", it.Direction)
	}
	now := s.now()
	next := it.NextAttempt
	if next.IsZero() {
		next = now
	}
	payload := it.Payload
	if payload == nil {
		payload = []byte{}
	}
	err = s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		id, dup = 0, false
		if it.IdemKey != "" {
			err := tx.StmtContext(ctx, s.q.enqueueDelivered).QueryRowContext(ctx,
				it.AccountID, it.Direction, it.IdemKey, unixNano(now.Add(-DedupeWindow))).Scan(&id)
			if err == nil {
				dup = true
				return nil
			} else if !errors.Is(err, sql.ErrNoRows) {
				return err
			}
		}
		err := tx.StmtContext(ctx, s.q.enqueueInsert).QueryRowContext(ctx,
			it.AccountID, it.Direction, it.Conversation, nullString(it.IdemKey),
			payload, it.Attempts, unixNano(next), it.LastError, unixNano(now)).Scan(&id)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		// The key is queued now.
		dup = true
		return tx.StmtContext(ctx, s.q.enqueueQueued).QueryRowContext(ctx, it.AccountID, it.Direction, it.IdemKey).Scan(&id)
	})
	if err != nil {
		return 0, false, wrap("enqueue", err)
	}
	if !dup {
		it.ID, it.Created, it.NextAttempt = id, fromUnixNano(unixNano(now)), fromUnixNano(unixNano(next))
	}
	return id, dup, nil
}

func (s *SQLite) Due(ctx context.Context, dir Direction, now time.Time, limit int) ([]*OutboxItem, error) {
	if limit <= 0 {
		limit = -1 // SQLite: no limit
	}
	rows, err := s.q.due.QueryContext(detach(ctx), dir, unixNano(now), limit)
	if err != nil {
		return nil, wrap("due", err)
	}
	defer rows.Close()
	var items []*OutboxItem
	for rows.Next() {
		it, err := scanOutboxItem(rows)
		if err != nil {
			return nil, wrap("due", err)
		}
		items = append(items, it)
	}
	return items, wrap("due", rows.Err())
}

func (s *SQLite) Done(ctx context.Context, id int64) error {
	return s.DoneMany(ctx, []int64{id})
}

// DoneMany is Done for several items in one transaction (one commit).
// Items already gone are skipped; if none of ids existed it returns
// ErrNotFound.
func (s *SQLite) DoneMany(ctx context.Context, ids []int64) error {
	if len(ids) == 0 {
		return nil
	}
	found := 0
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		found = 0
		del, record := tx.StmtContext(ctx, s.q.doneDelete), tx.StmtContext(ctx, s.q.doneRecord)
		now := unixNano(s.now())
		for _, id := range ids {
			var (
				account   int64
				direction string
				idemKey   sql.NullString
			)
			err := del.QueryRowContext(ctx, id).Scan(&account, &direction, &idemKey)
			if errors.Is(err, sql.ErrNoRows) {
				continue
			}
			if err != nil {
				return err
			}
			found++
			if !idemKey.Valid {
				continue
			}
			if _, err := record.ExecContext(ctx, account, direction, idemKey.String, id, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil && found == 0 {
		err = ErrNotFound
	}
	return wrap("done", err)
}

// RecordDelivered writes keys as delivered with outbox id 0 (never an
// item's id).
func (s *SQLite) RecordDelivered(ctx context.Context, keys []DeliveredKey) error {
	if len(keys) == 0 {
		return nil
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		record := tx.StmtContext(ctx, s.q.doneRecord)
		now := unixNano(s.now())
		for _, k := range keys {
			if k.IdemKey == "" {
				continue
			}
			if _, err := record.ExecContext(ctx, k.AccountID, k.Direction, k.IdemKey, 0, now); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("record delivered", err)
}

func (s *SQLite) Retry(ctx context.Context, id int64, next time.Time, errText string) error {
	return wrap("retry", s.reschedule(ctx, s.q.retry, id, next, errText))
}

func (s *SQLite) Postpone(ctx context.Context, id int64, next time.Time, reason string) error {
	return wrap("postpone", s.reschedule(ctx, s.q.postpone, id, next, reason))
}

// reschedule runs the retry or postpone statement: (next, text, id).
func (s *SQLite) reschedule(ctx context.Context, st *sql.Stmt, id int64, next time.Time, text string) error {
	if next.IsZero() {
		next = s.now()
	}
	var notFound bool
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.StmtContext(ctx, st).ExecContext(ctx, unixNano(next), text, id)
		if err != nil {
			return err
		}
		err = affected(res)
		notFound = errors.Is(err, ErrNotFound)
		if notFound {
			return nil
		}
		return err
	})
	if err == nil && notFound {
		err = ErrNotFound
	}
	return err
}

func (s *SQLite) Pending(ctx context.Context, accountID int64, dir Direction) (int, error) {
	var n int
	err := s.q.pending.QueryRowContext(detach(ctx), accountID, accountID, dir, dir).Scan(&n)
	return n, wrap("pending", err)
}

func (s *SQLite) NextDue(ctx context.Context, dir Direction) (time.Time, error) {
	var next sql.NullInt64
	err := s.q.nextDue.QueryRowContext(detach(ctx), dir).Scan(&next)
	if err != nil {
		return time.Time{}, wrap("next due", err)
	}
	if !next.Valid {
		return time.Time{}, ErrNotFound
	}
	return fromUnixNano(next.Int64), nil
}

func (s *SQLite) PruneDelivered(ctx context.Context, before time.Time) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM outbox_delivered WHERE delivered < ?`, unixNano(before))
	if err != nil {
		return 0, wrap("prune delivered", err)
	}
	n, err := res.RowsAffected()
	return int(n), wrap("prune delivered", err)
}

func scanOutboxItem(sc scanner) (*OutboxItem, error) {
	var (
		it            OutboxItem
		idemKey       sql.NullString
		next, created int64
	)
	if err := sc.Scan(&it.ID, &it.AccountID, &it.Direction, &it.Conversation, &idemKey, &it.Payload,
		&it.Attempts, &next, &it.LastError, &created); err != nil {
		return nil, err
	}
	it.IdemKey = idemKey.String
	it.NextAttempt, it.Created = fromUnixNano(next), fromUnixNano(created)
	return &it, nil
}

// nullString stores "" as NULL.
func nullString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}

func (s *SQLite) MakeDue(ctx context.Context, accountID int64, dir Direction) (int64, error) {
	var n int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		now := unixNano(s.now())
		res, err := tx.ExecContext(ctx, `UPDATE outbox SET next_attempt = ?
			WHERE account = ? AND direction = ? AND next_attempt > ?`,
			now, accountID, string(dir), now)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return n, wrap("make due", err)
}
