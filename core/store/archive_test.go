package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
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

// TestRoomArchiveMigration: a database of schema 1 (before the archive)
// gets the same tables and indexes as a new one, and keeps its accounts.
func TestRoomArchiveMigration(t *testing.T) {
	schema := func(s *SQLite) string {
		rows, err := s.db.Query(`SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var b strings.Builder
		for rows.Next() {
			var name, sql string
			rows.Scan(&name, &sql)
			fmt.Fprintf(&b, "%s: %s\n", name, strings.Join(strings.Fields(sql), " "))
		}
		return b.String()
	}
	fresh, _ := openMemory(t)
	want := schema(fresh)

	path := filepath.Join(t.TempDir(), "transportd.db")
	s := openFile(t, path)
	a := putAccount(t, s, "alice@example.net")
	for _, q := range []string{`DROP TABLE room_archive`, `PRAGMA user_version = 1`} {
		if _, err := s.db.Exec(q); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	s = openFile(t, path)
	defer s.Close()
	if got := schema(s); got != want {
		t.Errorf("migrated schema:\n%s\nnew database's:\n%s", got, want)
	}
	if _, err := s.GetAccountByID(context.Background(), a.ID); err != nil {
		t.Errorf("account after the migration: %v", err)
	}
	if err := s.ArchiveRoomMessages(context.Background(), []ArchivedMessage{{AccountID: a.ID, Room: "#go", ID: "x", Body: "hi"}}); err != nil {
		t.Errorf("archive after the migration: %v", err)
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
// same read with the count MAM queries add (mam).
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
