package store

import (
	"context"
	"encoding/json"
	"fmt"
)

const accountColumns = `id, domain, transport, jid, label, fields, secrets, enabled, created, updated`

func (s *SQLite) PutAccount(ctx context.Context, a *Account) error {
	fields := a.Fields
	if fields == nil {
		fields = map[string]string{}
	}
	js, err := json.Marshal(fields)
	if err != nil {
		return wrap("put account", err)
	}
	now := unixNano(s.now())
	var created, updated int64
	err = s.db.QueryRowContext(ctx, `
		INSERT INTO account(domain, transport, jid, label, fields, secrets, enabled, created, updated)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
		ON CONFLICT(domain, transport, jid, label) DO UPDATE SET
			fields = excluded.fields,
			secrets = excluded.secrets,
			enabled = excluded.enabled,
			updated = excluded.updated
		RETURNING id, created, updated`,
		a.Domain, a.Transport, a.JID, a.Label, string(js), a.Secrets, a.Enabled, now, now,
	).Scan(&a.ID, &created, &updated)
	if err != nil {
		return wrap("put account", err)
	}
	a.Created, a.Updated = fromUnixNano(created), fromUnixNano(updated)
	return nil
}

func (s *SQLite) GetAccount(ctx context.Context, domain, transport, jid string) (*Account, error) {
	return s.GetAccountLabel(ctx, domain, transport, jid, "")
}

func (s *SQLite) GetAccountLabel(ctx context.Context, domain, transport, jid, label string) (*Account, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+accountColumns+` FROM account
		WHERE domain = ? AND transport = ? AND jid = ? AND label = ?`, domain, transport, jid, label)
	a, err := scanAccount(row)
	return a, wrap("get account", err)
}

const sqlAccountByID = `SELECT ` + accountColumns + ` FROM account WHERE id = ?`

func (s *SQLite) GetAccountByID(ctx context.Context, id int64) (*Account, error) {
	row := s.q.accountByID.QueryRowContext(detach(ctx), id)
	a, err := scanAccount(row)
	return a, wrap("get account", err)
}

func (s *SQLite) ListAccounts(ctx context.Context, domain, transport string) ([]*Account, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+accountColumns+` FROM account
		WHERE (? = '' OR domain = ?) AND (? = '' OR transport = ?)
		ORDER BY jid, domain, transport, label`,
		domain, domain, transport, transport)
	if err != nil {
		return nil, wrap("list accounts", err)
	}
	defer rows.Close()
	var list []*Account
	for rows.Next() {
		a, err := scanAccount(rows)
		if err != nil {
			return nil, wrap("list accounts", err)
		}
		list = append(list, a)
	}
	return list, wrap("list accounts", rows.Err())
}

// DeleteAccount relies on ON DELETE CASCADE (foreign_keys=on in the DSN) to
// remove the account's state, mappings, outbox items and delivered keys.
func (s *SQLite) DeleteAccount(ctx context.Context, id int64) error {
	res, err := s.db.ExecContext(ctx, `DELETE FROM account WHERE id = ?`, id)
	if err != nil {
		return wrap("delete account", err)
	}
	return wrap("delete account", affected(res))
}

// scanner is a *sql.Row or *sql.Rows.
type scanner interface {
	Scan(dest ...any) error
}

func scanAccount(sc scanner) (*Account, error) {
	var (
		a                Account
		fields           string
		created, updated int64
	)
	if err := sc.Scan(&a.ID, &a.Domain, &a.Transport, &a.JID, &a.Label, &fields, &a.Secrets, &a.Enabled, &created, &updated); err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(fields), &a.Fields); err != nil {
		return nil, fmt.Errorf("account %d: decode fields: %w", a.ID, err)
	}
	if a.Fields == nil {
		a.Fields = map[string]string{}
	}
	a.Created, a.Updated = fromUnixNano(created), fromUnixNano(updated)
	return &a, nil
}
