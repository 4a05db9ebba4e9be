package store

import (
	"context"
	"database/sql"
	"time"
)

// sqlContactRemoved is migration 2 -> 3; sqlite_schema.sql has the same
// column.
const sqlContactRemoved = `ALTER TABLE contact ADD COLUMN removed INTEGER NOT NULL DEFAULT 0;`

func (s *SQLite) PutContact(ctx context.Context, accountID int64, address, name string) (bool, error) {
	isNew := false
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE contact SET last_seen = ?,
			name = CASE WHEN ? = '' THEN name ELSE ? END
			WHERE account = ? AND address = ?`,
			unixNano(s.now()), name, name, accountID, address)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			return nil
		}
		isNew = true
		_, err = tx.ExecContext(ctx, `INSERT INTO contact(account, address, name, last_seen) VALUES (?, ?, ?, ?)`,
			accountID, address, name, unixNano(s.now()))
		return err
	})
	return isNew, wrap("put contact", err)
}

func (s *SQLite) GetContact(ctx context.Context, accountID int64, address string) (*Contact, error) {
	c := &Contact{AccountID: accountID, Address: address}
	var seen int64
	err := s.db.QueryRowContext(ctx, `SELECT name, pushed, removed, last_seen FROM contact WHERE account = ? AND address = ?`,
		accountID, address).Scan(&c.Name, &c.Pushed, &c.Removed, &seen)
	if err != nil {
		return nil, wrap("get contact", err)
	}
	c.LastSeen = time.Unix(0, seen).UTC()
	return c, nil
}

func (s *SQLite) ListContacts(ctx context.Context, accountID int64, limit int) ([]*Contact, error) {
	if limit <= 0 {
		limit = -1
	}
	rows, err := s.db.QueryContext(ctx, `SELECT address, name, pushed, removed, last_seen FROM contact
		WHERE account = ? ORDER BY last_seen DESC, address LIMIT ?`, accountID, limit)
	if err != nil {
		return nil, wrap("list contacts", err)
	}
	defer rows.Close()
	var out []*Contact
	for rows.Next() {
		c := &Contact{AccountID: accountID}
		var seen int64
		if err := rows.Scan(&c.Address, &c.Name, &c.Pushed, &c.Removed, &seen); err != nil {
			return nil, wrap("list contacts", err)
		}
		c.LastSeen = time.Unix(0, seen).UTC()
		out = append(out, c)
	}
	return out, wrap("list contacts", rows.Err())
}

func (s *SQLite) SetContactPushed(ctx context.Context, accountID int64, address string, pushed bool) error {
	res, err := s.db.ExecContext(ctx, `UPDATE contact SET pushed = ? WHERE account = ? AND address = ?`,
		pushed, accountID, address)
	if err != nil {
		return wrap("set contact pushed", err)
	}
	return wrap("set contact pushed", affected(res))
}

func (s *SQLite) SetContactRemoved(ctx context.Context, accountID int64, address string, removed bool) error {
	res, err := s.db.ExecContext(ctx, `UPDATE contact SET removed = ? WHERE account = ? AND address = ?`,
		removed, accountID, address)
	if err != nil {
		return wrap("set contact removed", err)
	}
	return wrap("set contact removed", affected(res))
}
