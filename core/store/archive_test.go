package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime/metrics"
	"strconv"
	"strings"
	"testing"
	"time"

	"transportd/internal/cputime"
)

func archiveIDs(p ArchivePage) []string {
	ids := make([]string, len(p.Messages))
	for i, m := range p.Messages {
		ids[i] = m.ID
	}
	return ids
}

func TestRoomArchive(t *testing.T) {
	s, _ := openMemory(t)
	ctx := context.Background()
	a := putAccount(t, s, "alice@example.net")
	b := putAccount(t, s, "bob@example.net")
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var ms []ArchivedMessage
	for i := range 10 {
		nick := "carol"
		if i%2 == 1 {
			nick = "dave"
		}
		ms = append(ms, ArchivedMessage{AccountID: a.ID, Room: "#go%irc.example.org", ID: fmt.Sprint("m", i),
			Time: t0.Add(time.Duration(i) * time.Minute), Nick: nick, Body: fmt.Sprint("line ", i)})
	}
	// Another account's copy of the same room, and another room.
	ms = append(ms, ArchivedMessage{AccountID: b.ID, Room: "#go%irc.example.org", ID: "m0", Time: t0, Body: "bob's"},
		ArchivedMessage{AccountID: a.ID, Room: "#rust%irc.example.org", ID: "r0", Time: t0, Body: "other room"})
	if err := s.ArchiveRoomMessages(ctx, ms); err != nil {
		t.Fatal(err)
	}
	// Archived again (a replay): nothing changes.
	if err := s.ArchiveRoomMessages(ctx, ms[:3]); err != nil {
		t.Fatal(err)
	}
	q := ArchiveQuery{AccountID: a.ID, Room: "#go%irc.example.org", Max: 4}
	check := func(name string, q ArchiveQuery, want string, complete bool, count int) {
		t.Helper()
		p, err := s.QueryRoomArchive(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := fmt.Sprint(archiveIDs(p)); got != want || p.Complete != complete || p.Count != count {
			t.Errorf("%s: got %s complete %v count %d, want %s %v %d", name, got, p.Complete, p.Count, want, complete, count)
		}
	}
	check("first page", q, "[m0 m1 m2 m3]", false, 10)
	q.After = "m7"
	check("after m7", q, "[m8 m9]", true, 10)
	q.After, q.Last = "", true
	check("last page", q, "[m6 m7 m8 m9]", false, 10)
	q.NoCount = true // a join's history (the prepared query)
	check("last page without the count", q, "[m6 m7 m8 m9]", false, 0)
	q.Max = 20
	check("all, last first, without the count", q, "[m0 m1 m2 m3 m4 m5 m6 m7 m8 m9]", true, 0)
	q.NoCount, q.Max = false, 4
	q.Last, q.Before = false, "m4"
	check("before m4", q, "[m0 m1 m2 m3]", true, 10)
	q.Before, q.Nick = "", "dave"
	check("dave's", q, "[m1 m3 m5 m7]", false, 5)
	q.Nick, q.Start, q.End = "", t0.Add(2*time.Minute), t0.Add(4*time.Minute)
	check("between", q, "[m2 m3 m4]", true, 3)
	q.Start, q.End, q.Max = time.Time{}, time.Time{}, 0
	check("count only", q, "[]", false, 10)
	q.Max, q.IDs = 4, []string{"m7", "m2", "m2", "m9"}
	check("by ids, in the archive's order", q, "[m2 m7 m9]", true, 3)
	q.NoCount = true
	check("by ids, counted all the same", q, "[m2 m7 m9]", true, 3)
	q.Max = 2
	check("by ids, paged", q, "[m2 m7]", false, 3)
	q.NoCount, q.IDs = false, nil
	for _, ids := range [][]string{{"m1", "nosuch"}, {"m1", "r0"}} {
		if _, err := s.QueryRoomArchive(ctx, ArchiveQuery{AccountID: a.ID, Room: "#go%irc.example.org", IDs: ids, Max: 5}); !errors.Is(err, ErrNotFound) {
			t.Errorf("ids %v: %v, want ErrNotFound", ids, err)
		}
	}

	p, err := s.QueryRoomArchive(ctx, ArchiveQuery{AccountID: a.ID, Room: "#go%irc.example.org", Max: 1})
	if err != nil || len(p.Messages) != 1 {
		t.Fatalf("one: %v %v", p, err)
	}
	if m := p.Messages[0]; m.Body != "line 0" || m.Nick != "carol" || !m.Time.Equal(t0) {
		t.Errorf("message read back as %+v", m)
	}
	if _, err := s.QueryRoomArchive(ctx, ArchiveQuery{AccountID: a.ID, Room: "#go%irc.example.org", After: "r0", Max: 5}); !errors.Is(err, ErrNotFound) {
		t.Errorf("after an id of another room: %v, want ErrNotFound", err)
	}

	if n, err := s.PruneRoomArchive(ctx, "example.net", "sms", t0.Add(5*time.Minute)); err != nil || n != 0 {
		t.Fatalf("prune of another transport: %d %v, want 0", n, err)
	}
	n, err := s.PruneRoomArchive(ctx, "example.net", "email", t0.Add(5*time.Minute))
	if err != nil || n != 7 { // m0..m4, bob's m0, r0
		t.Fatalf("prune: %d %v, want 7", n, err)
	}
	check("after pruning", ArchiveQuery{AccountID: a.ID, Room: "#go%irc.example.org", Max: 10}, "[m5 m6 m7 m8 m9]", true, 5)

	if err := s.ClearRoomArchive(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	check("another account's cleared", ArchiveQuery{AccountID: a.ID, Room: "#go%irc.example.org", Max: 10}, "[m5 m6 m7 m8 m9]", true, 5)
	if err := s.ClearRoomArchive(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	check("cleared", ArchiveQuery{AccountID: a.ID, Room: "#go%irc.example.org", Max: 10}, "[]", true, 0)
	if err := s.ArchiveRoomMessages(ctx, ms[:1]); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAccount(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	check("account deleted", ArchiveQuery{AccountID: a.ID, Room: "#go%irc.example.org", Max: 10}, "[]", true, 0)
}

// schemaOf describes a database's schema: each table's columns (as
// PRAGMA table_info reads them: ALTER TABLE ADD COLUMN rewrites a table's
// text otherwise than a new table's) and each index's text.
func schemaOf(t *testing.T, s *SQLite) string {
	t.Helper()
	rows, err := s.db.Query(`SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	type object struct{ typ, name, sql string }
	var objs []object
	for rows.Next() {
		var o object
		rows.Scan(&o.typ, &o.name, &o.sql)
		objs = append(objs, o)
	}
	rows.Close()
	var b strings.Builder
	for _, o := range objs {
		if o.typ != "table" {
			fmt.Fprintf(&b, "%s %s: %s\n", o.typ, o.name, strings.Join(strings.Fields(o.sql), " "))
			continue
		}
		cols, err := s.db.Query(`SELECT name, type, "notnull", COALESCE(dflt_value, ''), pk FROM pragma_table_info(?) ORDER BY name`, o.name)
		if err != nil {
			t.Fatal(err)
		}
		for cols.Next() {
			var name, typ, dflt string
			var notNull, pk int
			cols.Scan(&name, &typ, &notNull, &dflt, &pk)
			fmt.Fprintf(&b, "table %s: %s %s notnull=%d default=%q pk=%d\n", o.name, name, typ, notNull, dflt, pk)
		}
		cols.Close()
	}
	return b.String()
}

// migrateFrom makes a database of an earlier schema version with undo
// (the statements that take the later versions' changes out), reopens it
// and checks that it got the same schema as a new database.
func migrateFrom(t *testing.T, version int, undo ...string) (*SQLite, *Account) {
	t.Helper()
	fresh, _ := openMemory(t)
	want := schemaOf(t, fresh)

	path := filepath.Join(t.TempDir(), "transportd.db")
	s := openFile(t, path)
	a := putAccount(t, s, "alice@example.net")
	if _, err := s.PutContact(ctx, a.ID, "bob%irc.example.org", "Bob"); err != nil {
		t.Fatal(err)
	}
	for _, q := range append(undo, fmt.Sprintf(`PRAGMA user_version = %d`, version)) {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openFile(t, path)
	t.Cleanup(func() { s.Close() })
	if got := schemaOf(t, s); got != want {
		t.Errorf("migrated schema:\n%s\nnew database's:\n%s", got, want)
	}
	if _, err := s.GetAccountByID(ctx, a.ID); err != nil {
		t.Errorf("account after the migration: %v", err)
	}
	if c, err := s.GetContact(ctx, a.ID, "bob%irc.example.org"); err != nil || c.Name != "Bob" || c.Removed {
		t.Errorf("contact after the migration: %+v, %v", c, err)
	}
	return s, a
}

// TestRoomArchiveMigration: a database of schema 1 (before the archive)
// gets the same tables and indexes as a new one, and keeps its accounts.
func TestRoomArchiveMigration(t *testing.T) {
	s, a := migrateFrom(t, 1, `DROP TABLE room_archive`, `ALTER TABLE contact DROP COLUMN removed`)
	if err := s.ArchiveRoomMessages(ctx, []ArchivedMessage{{AccountID: a.ID, Room: "#go", ID: "x", Body: "hi"}}); err != nil {
		t.Errorf("archive after the migration: %v", err)
	}
}

// TestContactRemovedMigration: a database of schema 2 gets the contacts'
// removed flag, false for those it has.
func TestContactRemovedMigration(t *testing.T) {
	s, a := migrateFrom(t, 2, `ALTER TABLE contact DROP COLUMN removed`)
	if err := s.SetContactRemoved(ctx, a.ID, "bob%irc.example.org", true); err != nil {
		t.Fatal(err)
	}
	if c, err := s.GetContact(ctx, a.ID, "bob%irc.example.org"); err != nil || !c.Removed {
		t.Errorf("contact removed after the migration: %+v, %v", c, err)
	}
}

// BenchmarkArchiveRoomMessages archives channel messages in batches of
// 64 (ARCHBATCH to change it; core writes up to 256 at once); per
// message, commit included.
func BenchmarkArchiveRoomMessages(b *testing.B) {
	s, a := benchStore(b, "irc")
	batch := 64
	if v, err := strconv.Atoi(os.Getenv("ARCHBATCH")); err == nil {
		batch = v
	}
	ms := make([]ArchivedMessage, batch)
	cpu0 := cputime.Process()
	n := 0
	for b.Loop() {
		for i := range ms {
			ms[i] = ArchivedMessage{AccountID: a.ID, Room: "#bench%irc.example.org", ID: fmt.Sprintf("472~1796562892~%d", n),
				Time: time.Now(), Nick: "speaker", Body: "a line of about the length people write on IRC, give or take"}
			n++
		}
		if err := s.ArchiveRoomMessages(ctx, ms); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/msg")
	b.ReportMetric(float64((cputime.Process()-cpu0).Nanoseconds())/float64(n), "cpu-ns/msg")
}

// BenchmarkJoinHistory is a join's read of the archive: the latest 20
// messages of a room holding 100 (join) or none (join-empty), and the
// same read with the count MAM queries add (mam), each under a context
// that can end, as core's are.
func BenchmarkJoinHistory(b *testing.B) {
	s, a := benchStore(b, "irc")
	ms := make([]ArchivedMessage, 100)
	for i := range ms {
		ms[i] = ArchivedMessage{AccountID: a.ID, Room: "#bench%irc.example.org", ID: fmt.Sprintf("m%d", i),
			Time: time.Now(), Nick: "speaker", Body: "a line of about the length people write on IRC, give or take"}
	}
	if err := s.ArchiveRoomMessages(ctx, ms); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name, room string
		noCount    bool
		want       int
	}{{"join", "#bench", true, 20}, {"mam", "#bench", false, 20}, {"join-empty", "#new", true, 0}, {"mam-empty", "#new", false, 0}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			q := ArchiveQuery{AccountID: a.ID, Room: c.room + "%irc.example.org", Last: true, Max: 20, NoCount: c.noCount}
			// Under a context that can end, as core's join reads.
			ctx, cancel := context.WithTimeout(ctx, time.Hour)
			defer cancel()
			cpu0 := cputime.Process()
			for b.Loop() {
				if p, err := s.QueryRoomArchive(ctx, q); err != nil || len(p.Messages) != c.want {
					b.Fatal(len(p.Messages), err)
				}
			}
			b.ReportMetric(float64((cputime.Process()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// goroutinesCreated is the count of goroutines the process has started.
func goroutinesCreated() uint64 {
	s := []metrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// A room's history read under a context that can end (a join's, bounded in
// time) runs without goroutines of its own: go-sqlite3 would run each row's
// step on one and database/sql one more per result set, and a burst of
// joins would leave their descriptors in the process for good. A context
// already done still fails the read.
func TestReadsStartNoGoroutines(t *testing.T) {
	s := openFile(t, filepath.Join(t.TempDir(), "db"))
	defer s.Close()
	a := putAccount(t, s, "alice@example.net")
	t0 := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	var ms []ArchivedMessage
	for i := range 50 {
		ms = append(ms, ArchivedMessage{AccountID: a.ID, Room: "#go%irc.example.org", ID: fmt.Sprint("m", i),
			Time: t0.Add(time.Duration(i) * time.Second), Nick: "carol", Body: fmt.Sprint("line ", i)})
	}
	if err := s.ArchiveRoomMessages(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	read := func() {
		t.Helper()
		p, err := s.QueryRoomArchive(ctx, ArchiveQuery{AccountID: a.ID, Room: "#go%irc.example.org", Last: true, Max: 20, NoCount: true})
		if err != nil || len(p.Messages) != 20 {
			t.Fatalf("history: %d messages, %v", len(p.Messages), err)
		}
		if _, err := s.GetAccountByID(ctx, a.ID); err != nil {
			t.Fatal(err)
		}
		if _, err := s.ListAccounts(ctx, "", ""); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Pending(ctx, a.ID, ToLegacy); err != nil {
			t.Fatal(err)
		}
	}
	read() // connections and statements made
	before := goroutinesCreated()
	const reads = 20
	for range reads {
		read()
	}
	// Each read above started 30 goroutines before sqlDB; the writer
	// and the runtime may start a few meanwhile.
	if n := goroutinesCreated() - before; n > reads {
		t.Errorf("%d reads started %d goroutines", reads, n)
	}
	cancel()
	if _, err := s.QueryRoomArchive(ctx, ArchiveQuery{AccountID: a.ID, Room: "#go%irc.example.org", Max: 5}); !errors.Is(err, context.Canceled) {
		t.Errorf("history under a cancelled context: %v, want context.Canceled", err)
	}
}
