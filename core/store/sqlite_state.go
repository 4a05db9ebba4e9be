package store

import (
	"context"
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

func (s *SQLite) PutMapping(ctx context.Context, accountID int64, xmppID, legacyID string) error {
	_, err := s.db.ExecContext(ctx, `INSERT INTO message_id(account, xmpp_id, legacy_id, created) VALUES (?, ?, ?, ?)
		ON CONFLICT(account, xmpp_id) DO UPDATE SET legacy_id = excluded.legacy_id, created = excluded.created`,
		accountID, xmppID, legacyID, unixNano(s.now()))
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
