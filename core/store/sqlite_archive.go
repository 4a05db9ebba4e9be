package store

import (
	"context"
	"database/sql"
	"slices"
	"strings"
	"time"
)

// sqlRoomArchiveSchema is migration 1 -> 2; sqlite_schema.sql has the same.
const sqlRoomArchiveSchema = `
CREATE TABLE room_archive (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	account INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
	room TEXT NOT NULL,
	id TEXT NOT NULL,
	at INTEGER NOT NULL,
	nick TEXT NOT NULL DEFAULT '',
	body TEXT NOT NULL,
	xmpp_id TEXT NOT NULL DEFAULT '',
	UNIQUE(account, room, id)
);
CREATE INDEX room_archive_room ON room_archive(account, room);
CREATE INDEX room_archive_at ON room_archive(at);
`

const sqlArchiveInsert = `INSERT OR IGNORE INTO room_archive(account, room, id, at, nick, body, xmpp_id) VALUES (?, ?, ?, ?, ?, ?, ?)`

// sqlArchiveLast is QueryRoomArchive's query for the latest messages of a
// room without other filters (history on join).
const sqlArchiveLast = `SELECT id, at, nick, body, xmpp_id FROM room_archive WHERE account = ? AND room = ? ORDER BY seq DESC LIMIT ?`

// ArchiveRoomMessages implements Store.
func (s *SQLite) ArchiveRoomMessages(ctx context.Context, ms []ArchivedMessage) error {
	if len(ms) == 0 {
		return nil
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		ins := tx.StmtContext(ctx, s.q.archiveInsert)
		for _, m := range ms {
			if _, err := ins.ExecContext(ctx, m.AccountID, m.Room, m.ID, unixNano(m.Time), m.Nick, m.Body, m.XMPPID); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("archive room messages", err)
}

// QueryRoomArchive implements Store.
func (s *SQLite) QueryRoomArchive(ctx context.Context, q ArchiveQuery) (ArchivePage, error) {
	var page ArchivePage
	where := []string{"account = ?", "room = ?"}
	args := []any{q.AccountID, q.Room}
	if q.Nick != "" {
		where, args = append(where, "nick = ?"), append(args, q.Nick)
	}
	if !q.Start.IsZero() {
		where, args = append(where, "at >= ?"), append(args, unixNano(q.Start))
	}
	if !q.End.IsZero() {
		where, args = append(where, "at <= ?"), append(args, unixNano(q.End))
	}
	if len(q.IDs) > 0 {
		q.IDs = slices.Compact(slices.Sorted(slices.Values(q.IDs)))
		where = append(where, "id IN (?"+strings.Repeat(", ?", len(q.IDs)-1)+")")
		for _, id := range q.IDs {
			args = append(args, id)
		}
		q.NoCount = false // the count says whether each was found
	}
	filter := strings.Join(where, " AND ")
	if !q.NoCount {
		if err := s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM room_archive WHERE `+filter, args...).Scan(&page.Count); err != nil {
			return page, wrap("count room archive", err)
		}
		if len(q.IDs) > 0 && page.Count < len(q.IDs) {
			return page, wrap("room archive: ids", ErrNotFound)
		}
	}
	bound := func(id, op string) error {
		var seq int64
		err := s.db.QueryRowContext(ctx, `SELECT seq FROM room_archive WHERE account = ? AND room = ? AND id = ?`, q.AccountID, q.Room, id).Scan(&seq)
		if err != nil {
			return err
		}
		filter += " AND seq " + op + " ?"
		args = append(args, seq)
		return nil
	}
	backward := q.Before != "" || q.Last
	if q.After != "" {
		if err := bound(q.After, ">"); err != nil {
			return page, wrap("room archive: after "+q.After, err)
		}
	}
	if q.Before != "" {
		if err := bound(q.Before, "<"); err != nil {
			return page, wrap("room archive: before "+q.Before, err)
		}
	}
	order := "ASC"
	if backward {
		order = "DESC"
	}
	max := q.Max
	if max < 0 {
		max = 0
	}
	var rows *sql.Rows
	var err error
	if len(where) == 2 && q.Last && q.After == "" && q.Before == "" {
		// A join's history: every join runs it, prepared once.
		rows, err = s.q.archiveLast.QueryContext(detach(ctx), q.AccountID, q.Room, max+1)
	} else {
		rows, err = s.db.QueryContext(ctx, `SELECT id, at, nick, body, xmpp_id FROM room_archive WHERE `+filter+
			` ORDER BY seq `+order+` LIMIT ?`, append(args, max+1)...)
	}
	if err != nil {
		return page, wrap("query room archive", err)
	}
	defer rows.Close()
	for rows.Next() {
		m := ArchivedMessage{AccountID: q.AccountID, Room: q.Room}
		var at int64
		if err := rows.Scan(&m.ID, &at, &m.Nick, &m.Body, &m.XMPPID); err != nil {
			return page, wrap("query room archive", err)
		}
		m.Time = fromUnixNano(at)
		page.Messages = append(page.Messages, m)
	}
	if err := rows.Err(); err != nil {
		return page, wrap("query room archive", err)
	}
	page.Complete = len(page.Messages) <= max
	if !page.Complete {
		page.Messages = page.Messages[:max]
	}
	if backward {
		for i, j := 0, len(page.Messages)-1; i < j; i, j = i+1, j-1 {
			page.Messages[i], page.Messages[j] = page.Messages[j], page.Messages[i]
		}
	}
	return page, nil
}

// ClearRoomArchive implements Store.
func (s *SQLite) ClearRoomArchive(ctx context.Context, accountID int64) error {
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `DELETE FROM room_archive WHERE account = ?`, accountID)
		return err
	})
	return wrap("clear room archive", err)
}

// PruneRoomArchive implements Store.
func (s *SQLite) PruneRoomArchive(ctx context.Context, domain, transport string, before time.Time) (int, error) {
	var n int64
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM room_archive WHERE at < ? AND account IN
			(SELECT id FROM account WHERE domain = ? AND transport = ?)`, unixNano(before), domain, transport)
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	})
	return int(n), wrap("prune room archive", err)
}
