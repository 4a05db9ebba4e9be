package store

import (
	"context"
	"database/sql"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	_ "github.com/mattn/go-sqlite3"
)

//go:embed sqlite_schema.sql
var sqliteSchema string

// sqliteMigrations upgrades an existing database: sqliteMigrations[v] turns
// schema version v into v+1. Entry 0 is reserved: version 0 is an empty
// database, which gets sqliteSchema in one go. len(sqliteMigrations) is the
// version this code writes. Append only; never edit an entry once released,
// and mirror every change in sqlite_schema.sql.
var sqliteMigrations = []string{
	"", // 0 → 1: sqliteSchema
}

// sqliteOptions go-sqlite3 applies to every connection. synchronous=FULL (set
// after journal_mode, which would otherwise lower it to NORMAL) makes each
// commit survive power loss, so an enqueued message may be acknowledged.
// _txlock=immediate takes the write lock at BEGIN, so two writers wait on the
// busy timeout instead of failing on a lock upgrade.
const sqliteOptions = "_foreign_keys=on&_busy_timeout=5000&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate"

// sqliteLazyOptions are those of the second pool, for bookkeeping whose
// loss on power failure only repeats work: marking items delivered,
// rescheduling them, ID mappings. synchronous=NORMAL in WAL mode still
// survives a crash of the process (kill -9: the commit is in the WAL, in
// the kernel's cache); a power failure can lose the last such commits, and
// then an item delivered just before is delivered again (at least once, as
// always), never lost. The next FULL commit syncs the WAL, theirs included.
// It halves the fsyncs of a relayed message (enqueue synced, done not).
const sqliteLazyOptions = "_foreign_keys=on&_busy_timeout=5000&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate"

// SQLite is the Store on a SQLite database.
type SQLite struct {
	db   *sql.DB          // synchronous=FULL: commits something is acknowledged on
	lazy *sql.DB          // synchronous=NORMAL: see sqliteLazyOptions
	now  func() time.Time // time source for created/delivered stamps; tests replace it

	mu    sync.Mutex
	stmts map[stmtKey]*sql.Stmt // prepared once per pool (each connection prepares it once)
}

type stmtKey struct {
	db    *sql.DB
	query string
}

var _ Store = (*SQLite)(nil)

// Open opens (creating if needed) the SQLite database at path and upgrades
// its schema. ":memory:" gives a private in-memory database, for tests. It
// refuses a database whose schema is newer than this code (ErrSchemaTooNew).
func Open(path string) (*SQLite, error) {
	if path == "" || strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("store: invalid database path %q", path)
	}
	memory := path == ":memory:"
	db, err := sql.Open("sqlite3", path+"?"+sqliteOptions)
	if err != nil {
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	lazy := db
	if memory {
		// Each connection to ":memory:" is a different database: keep one.
		db.SetMaxOpenConns(1)
	} else if lazy, err = sql.Open("sqlite3", path+"?"+sqliteLazyOptions); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	s := &SQLite{db: db, lazy: lazy, now: time.Now, stmts: map[stmtKey]*sql.Stmt{}}
	if err := s.upgrade(context.Background()); err != nil {
		s.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	return s, nil
}

// upgrade brings the schema to len(sqliteMigrations), each step in its own
// transaction together with the new user_version.
func (s *SQLite) upgrade(ctx context.Context) error {
	var version int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	latest := len(sqliteMigrations)
	if version > latest {
		return fmt.Errorf("%w: it has version %d, this transportd knows up to %d; upgrade transportd or restore a backup",
			ErrSchemaTooNew, version, latest)
	}
	if version == 0 {
		return s.migrate(ctx, sqliteSchema, latest)
	}
	for v := version; v < latest; v++ {
		if err := s.migrate(ctx, sqliteMigrations[v], v+1); err != nil {
			return err
		}
	}
	return nil
}

func (s *SQLite) migrate(ctx context.Context, stmts string, to int) error {
	return s.inTx(ctx, s.db, func(tx txn) error {
		if _, err := tx.tx.ExecContext(ctx, stmts); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", to, err)
		}
		// PRAGMA takes no bound parameters.
		if _, err := tx.tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", to)); err != nil {
			return fmt.Errorf("set schema version %d: %w", to, err)
		}
		return nil
	})
}

// inTx runs f in a transaction of db (BEGIN IMMEDIATE: it holds the write
// lock from the start) and commits if f returns nil.
func (s *SQLite) inTx(ctx context.Context, db *sql.DB, f func(tx txn) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	t := txn{s: s, db: db, tx: tx, ctx: ctx, missed: new([]string)}
	if err := f(t); err != nil {
		tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return err
	}
	// Statements the transaction ran unprepared are prepared now, with no
	// connection held (the in-memory database has only one).
	for _, q := range *t.missed {
		_, _ = s.prepared(ctx, db, q)
	}
	return nil
}

// prepared returns query prepared on db, preparing it the first time:
// parsing and planning a statement cost as much CPU as running these small
// ones (database/sql then keeps it prepared on each connection it ran on).
func (s *SQLite) prepared(ctx context.Context, db *sql.DB, query string) (*sql.Stmt, error) {
	k := stmtKey{db, query}
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.stmts[k]; ok {
		return st, nil
	}
	st, err := db.PrepareContext(ctx, query)
	if err != nil {
		return nil, err
	}
	s.stmts[k] = st
	return st, nil
}

func (s *SQLite) exec(ctx context.Context, db *sql.DB, query string, args ...any) (sql.Result, error) {
	st, err := s.prepared(ctx, db, query)
	if err != nil {
		return nil, err
	}
	return st.ExecContext(ctx, args...)
}

func (s *SQLite) query(ctx context.Context, db *sql.DB, query string, args ...any) (*sql.Rows, error) {
	st, err := s.prepared(ctx, db, query)
	if err != nil {
		return nil, err
	}
	return st.QueryContext(ctx, args...)
}

func (s *SQLite) queryRow(ctx context.Context, db *sql.DB, query string, args ...any) scanner {
	st, err := s.prepared(ctx, db, query)
	if err != nil {
		return errRow{err}
	}
	return st.QueryRowContext(ctx, args...)
}

// errRow is a row whose statement could not be prepared.
type errRow struct{ err error }

func (r errRow) Scan(...any) error { return r.err }

// txn is a transaction running the store's prepared statements. One not
// prepared yet runs unprepared and is prepared after the commit: preparing
// it on the pool inside the transaction would wait for a connection the
// transaction may hold.
type txn struct {
	s      *SQLite
	db     *sql.DB
	tx     *sql.Tx
	ctx    context.Context
	missed *[]string
}

func (t txn) stmt(query string) *sql.Stmt {
	t.s.mu.Lock()
	st := t.s.stmts[stmtKey{t.db, query}]
	t.s.mu.Unlock()
	if st == nil {
		*t.missed = append(*t.missed, query)
		return nil
	}
	return t.tx.StmtContext(t.ctx, st)
}

func (t txn) exec(query string, args ...any) (sql.Result, error) {
	if st := t.stmt(query); st != nil {
		return st.ExecContext(t.ctx, args...)
	}
	return t.tx.ExecContext(t.ctx, query, args...)
}

func (t txn) queryRow(query string, args ...any) scanner {
	if st := t.stmt(query); st != nil {
		return st.QueryRowContext(t.ctx, args...)
	}
	return t.tx.QueryRowContext(t.ctx, query, args...)
}

// Ping commits a write to a one-row table, proving the database takes writes
// (a read-only file, a full disk or a held lock beyond the busy timeout fail).
func (s *SQLite) Ping(ctx context.Context) error {
	_, err := s.exec(ctx, s.db,
		`INSERT INTO ping(id, at) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET at = excluded.at`,
		unixNano(s.now()))
	return wrap("ping", err)
}

// Close closes the database.
func (s *SQLite) Close() error {
	s.mu.Lock()
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = map[stmtKey]*sql.Stmt{}
	s.mu.Unlock()
	if s.lazy != s.db {
		s.lazy.Close()
	}
	return s.db.Close()
}

func unixNano(t time.Time) int64 { return t.UnixNano() }

func fromUnixNano(n int64) time.Time { return time.Unix(0, n).UTC() }

// wrap names the failed operation in err; sql.ErrNoRows becomes ErrNotFound,
// which is returned as is.
func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, sql.ErrNoRows), errors.Is(err, ErrNotFound):
		return ErrNotFound
	default:
		return fmt.Errorf("store: %s: %w", op, err)
	}
}

// affected returns ErrNotFound if res changed no row.
func affected(res sql.Result) error {
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}
