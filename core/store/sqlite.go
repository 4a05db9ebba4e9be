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
	"",                   // 0 → 1: sqliteSchema
	sqlRoomArchiveSchema, // 1 → 2: rooms' message archive
	sqlContactRemoved,    // 2 → 3: contacts the user removed from the roster
}

// sqliteOptions go-sqlite3 applies to every connection. synchronous=FULL (set
// after journal_mode, which would otherwise lower it to NORMAL) makes each
// commit survive power loss, so an enqueued message may be acknowledged.
// synchronous=NORMAL in WAL mode would save that fsync per commit and still
// survive a crash of the process (kill -9), but not of the machine (power
// loss, kernel panic): the last commits could roll back after the gateway
// acknowledged them, so we keep FULL and amortise the fsync over many
// writes instead (group commit, sqlite_writer.go).
// _txlock=immediate takes the write lock at BEGIN, so two writers wait on the
// busy timeout instead of failing on a lock upgrade.
const sqliteOptions = "_foreign_keys=on&_busy_timeout=5000&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate"

// sqlDB is the database, its statements run under a context that cannot
// end (detach). go-sqlite3 runs each step of a statement whose context can
// end on a goroutine of its own, to interrupt it when the context ends,
// and database/sql starts one more for each result set to watch the
// context: 30 goroutines for a join's read of 20 messages of a room's
// history, which is, here, an indexed lookup of microseconds; the read
// took three times the CPU it does without them (BenchmarkJoinHistory).
// And a burst of such reads (200 IRC users joining their rooms at once)
// runs that many goroutines at once, whose descriptors Go never frees. A
// statement is therefore cancelled only before it starts (a context
// already done); once started it runs to its end, bounded by SQLite's busy
// timeout (sqliteOptions).
type sqlDB struct{ *sql.DB }

func (d sqlDB) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return d.DB.QueryContext(detach(ctx), query, args...)
}

func (d sqlDB) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return d.DB.QueryRowContext(detach(ctx), query, args...)
}

func (d sqlDB) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return d.DB.ExecContext(detach(ctx), query, args...)
}

// detach is ctx without its end, unless it has ended: then database/sql
// fails the statement with ctx's error before it starts (see sqlDB).
func detach(ctx context.Context) context.Context {
	if ctx.Err() != nil {
		return ctx
	}
	return context.WithoutCancel(ctx)
}

// SQLite is the Store on a SQLite database.
type SQLite struct {
	db  sqlDB
	now func() time.Time // time source for created/delivered stamps; tests replace it
	q   sqliteStmts

	writes     chan *writeOp // to the writer goroutine (sqlite_writer.go)
	closing    chan struct{} // closed by Close: the writer stops
	writerDone chan struct{} // closed by the writer when it stopped
	closeOnce  sync.Once
}

// sqliteStmts are the statements of the message path, prepared once:
// database/sql keeps a prepared copy per connection behind each *sql.Stmt
// (Tx.Stmt reuses it), where a query given as text is compiled by SQLite on
// every call. Compiling was a sixth of the gateway's CPU time per message.
type sqliteStmts struct {
	enqueueDelivered, enqueueInsert, enqueueQueued *sql.Stmt
	doneDelete, doneRecord                         *sql.Stmt
	retry, postpone                                *sql.Stmt
	due, nextDue, pending                          *sql.Stmt
	putMapping, accountByID                        *sql.Stmt
	archiveInsert, archiveLast                     *sql.Stmt
}

// prepare prepares s.q.
func (s *SQLite) prepare(ctx context.Context) error {
	for p, query := range map[**sql.Stmt]string{
		&s.q.enqueueDelivered: sqlEnqueueDelivered,
		&s.q.enqueueInsert:    sqlEnqueueInsert,
		&s.q.enqueueQueued:    sqlEnqueueQueued,
		&s.q.doneDelete:       sqlDoneDelete,
		&s.q.doneRecord:       sqlDoneRecord,
		&s.q.retry:            sqlRetry,
		&s.q.postpone:         sqlPostpone,
		&s.q.due:              sqlDue,
		&s.q.nextDue:          sqlNextDue,
		&s.q.pending:          sqlPending,
		&s.q.putMapping:       sqlPutMapping,
		&s.q.accountByID:      sqlAccountByID,
		&s.q.archiveInsert:    sqlArchiveInsert,
		&s.q.archiveLast:      sqlArchiveLast,
	} {
		st, err := s.db.PrepareContext(ctx, query)
		if err != nil {
			return fmt.Errorf("prepare %q: %w", query, err)
		}
		*p = st
	}
	return nil
}

var _ Store = (*SQLite)(nil)

// sqliteConnIdle is how long a connection may sit unused before the pool
// closes it. Each SQLite connection holds its own copy of the schema, of
// the prepared statements and a page cache, in the C heap. A quiet
// gateway uses one; a burst of concurrent queries (200 IRC users joining
// at once) opens a second, which database/sql then kept idle for good:
// 160 to 200 KB more of the C heap in use (glibc's mallinfo2), most of a
// KiB for each of those 200 users sitting idle; closing it, the heap's
// resident pages were 115 KB fewer (one run each). The pool hands out the
// connection used last, so the one the steady traffic uses stays open
// and a burst's extra closes a minute after the burst; a gateway quiet
// for a minute closes its last too, and opens one again (reading the
// schema anew) at its next query.
var sqliteConnIdle = time.Minute // a variable for tests

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
	if memory {
		// Each connection to ":memory:" is a different database: keep one.
		db.SetMaxOpenConns(1)
	} else {
		db.SetConnMaxIdleTime(sqliteConnIdle)
	}
	s := &SQLite{db: sqlDB{db}, now: time.Now,
		writes: make(chan *writeOp), closing: make(chan struct{}), writerDone: make(chan struct{})}
	ctx := context.Background()
	if err := s.upgrade(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	if err := s.prepare(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("store: open %s: %w", path, err)
	}
	go s.writer()
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
	return s.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, stmts); err != nil {
			return fmt.Errorf("migrate schema to version %d: %w", to, err)
		}
		// PRAGMA takes no bound parameters.
		if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", to)); err != nil {
			return fmt.Errorf("set schema version %d: %w", to, err)
		}
		return nil
	})
}

// inTx runs f in a transaction (BEGIN IMMEDIATE: it holds the write lock
// from the start) and commits if f returns nil.
func (s *SQLite) inTx(ctx context.Context, f func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(detach(ctx), nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Ping commits a write to a one-row table, proving the database takes writes
// (a read-only file, a full disk or a held lock beyond the busy timeout fail).
func (s *SQLite) Ping(ctx context.Context) error {
	// Under the caller's context: a health check is bounded by its own
	// time, not the busy timeout (see sqlDB).
	_, err := s.db.DB.ExecContext(ctx,
		`INSERT INTO ping(id, at) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET at = excluded.at`,
		unixNano(s.now()))
	return wrap("ping", err)
}

// DB is the database handle, for its statistics (the gateway's metrics).
func (s *SQLite) DB() *sql.DB { return s.db.DB }

// Close closes the database. Writes in progress finish first; later ones
// fail.
func (s *SQLite) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	<-s.writerDone
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
