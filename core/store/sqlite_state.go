package store

import (
	"context"
	"database/sql"
	"time"
)

// Per-account transport state, message id mappings and runtime settings:
// small key/value tables.

func (s *SQLite) GetState(ctx context.Context, accountID int64, key string) (string, error) {
	var value string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM account_state WHERE account = ? AND key = ?`,
		accountID, key).Scan(&value)
	return value, wrap("get state", err)
}

func (s *SQLite) SetState(ctx context.Context, accountID int64, key, value string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO account_state(account, key, value) VALUES (?, ?, ?)
		ON CONFLICT(account, key) DO UPDATE SET value = excluded.value`,
		accountID, key, value)
	return wrap("set state", err)
}

func (s *SQLite) DeleteState(ctx context.Context, accountID int64, key string) error {
	_, err := s.db.ExecContext(ctx, `DELETE FROM account_state WHERE account = ? AND key = ?`, accountID, key)
	return wrap("delete state", err)
}

const sqlPutMapping = `INSERT INTO message_id(account, xmpp_id, legacy_id, created) VALUES (?, ?, ?, ?)
	ON CONFLICT(account, xmpp_id) DO UPDATE SET legacy_id = excluded.legacy_id, created = excluded.created`

func (s *SQLite) PutMapping(ctx context.Context, accountID int64, xmppID, legacyID string) error {
	return s.PutMappings(ctx, []Mapping{{AccountID: accountID, XMPPID: xmppID, LegacyID: legacyID}})
}

// PutMappings records several mappings in one commit.
func (s *SQLite) PutMappings(ctx context.Context, ms []Mapping) error {
	if len(ms) == 0 {
		return nil
	}
	err := s.write(ctx, func(ctx context.Context, tx *sql.Tx) error {
		put := tx.StmtContext(ctx, s.q.putMapping)
		now := unixNano(s.now())
		for _, m := range ms {
			if _, err := put.ExecContext(ctx, m.AccountID, m.XMPPID, m.LegacyID, now); err != nil {
				return err
			}
		}
		return nil
	})
	return wrap("put mapping", err)
}

func (s *SQLite) LegacyID(ctx context.Context, accountID int64, xmppID string) (string, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT legacy_id FROM message_id WHERE account = ? AND xmpp_id = ?`,
		accountID, xmppID).Scan(&id)
	return id, wrap("legacy id", err)
}

func (s *SQLite) XMPPID(ctx context.Context, accountID int64, legacyID string) (string, error) {
	var id string
	err := s.db.QueryRowContext(ctx, `SELECT xmpp_id FROM message_id WHERE account = ? AND legacy_id = ?
		ORDER BY rowid LIMIT 1`,
		accountID, legacyID).Scan(&id)
	return id, wrap("xmpp id", err)
}

func (s *SQLite) PruneMappings(ctx context.Context, before time.Time) (int, error) {
	res, err := s.db.ExecContext(ctx, `DELETE FROM message_id WHERE created < ?`, unixNano(before))
	if err != nil {
		return 0, wrap("prune mappings", err)
	}
	n, err := res.RowsAffected()
	return int(n), wrap("prune mappings", err)
}

func (s *SQLite) GetSetting(ctx context.Context, key string) (string, error) {
	var value string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM setting WHERE key = ?`, key).Scan(&value)
	return value, wrap("get setting", err)
}

func (s *SQLite) SetSetting(ctx context.Context, key, value string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO setting(key, value) VALUES (?, ?)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value`, key, value)
	return wrap("set setting", err)
}
