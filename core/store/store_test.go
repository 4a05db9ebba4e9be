package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"transportd/internal/cputime"
)

var ctx = context.Background()

// t0 is the fake "now" of memory stores; tests move it with clock.add.
var t0 = time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)

type clock struct{ t time.Time }

func (c *clock) now() time.Time      { return c.t }
func (c *clock) add(d time.Duration) { c.t = c.t.Add(d) }

func openMemory(t testing.TB) (*SQLite, *clock) {
	t.Helper()
	s, err := Open(":memory:")
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	c := &clock{t: t0}
	s.now = c.now
	return s, c
}

func openFile(t testing.TB, path string) *SQLite {
	t.Helper()
	s, err := Open(path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	return s
}

func putAccount(t *testing.T, s *SQLite, jid string) *Account {
	t.Helper()
	a := &Account{Domain: "example.net", Transport: "email", JID: jid, Enabled: true}
	if err := s.PutAccount(ctx, a); err != nil {
		t.Fatalf("PutAccount(%s): %v", jid, err)
	}
	return a
}

func enqueue(t *testing.T, s *SQLite, it *OutboxItem) int64 {
	t.Helper()
	id, dup, err := s.Enqueue(ctx, it)
	if err != nil || dup {
		t.Fatalf("Enqueue(%+v) = %d, dup %v, %v", it, id, dup, err)
	}
	return id
}

func dueIDs(t *testing.T, s *SQLite, dir Direction, now time.Time, limit int) []int64 {
	t.Helper()
	items, err := s.Due(ctx, dir, now, limit)
	if err != nil {
		t.Fatalf("Due: %v", err)
	}
	ids := []int64{}
	for _, it := range items {
		ids = append(ids, it.ID)
	}
	return ids
}

func TestOpenPragmas(t *testing.T) {
	s := openFile(t, filepath.Join(t.TempDir(), "t.db"))
	defer s.Close()
	for _, tc := range []struct{ pragma, want string }{
		{"foreign_keys", "1"},
		{"busy_timeout", "5000"},
		{"journal_mode", "wal"},
		{"synchronous", "2"}, // FULL
		{"user_version", fmt.Sprint(len(sqliteMigrations))},
	} {
		var got string
		if err := s.db.QueryRowContext(ctx, "PRAGMA "+tc.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", tc.pragma, err)
		}
		if got != tc.want {
			t.Errorf("PRAGMA %s = %s, want %s", tc.pragma, got, tc.want)
		}
	}
}

func TestOpenInvalidPath(t *testing.T) {
	for _, p := range []string{"", "a.db?mode=ro", "a#b"} {
		if s, err := Open(p); err == nil {
			s.Close()
			t.Errorf("Open(%q) succeeded", p)
		}
	}
}

func TestAccounts(t *testing.T) {
	s, c := openMemory(t)

	a := &Account{
		Domain: "example.net", Transport: "email", JID: "bob@example.net",
		Fields:  map[string]string{"imap_host": "imap.example.org", "username": "bob"},
		Secrets: []byte{0, 1, 2, 0xff},
		Enabled: true,
	}
	if err := s.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if a.ID == 0 || !a.Created.Equal(t0) || !a.Updated.Equal(t0) {
		t.Fatalf("after insert: ID %d, Created %v, Updated %v", a.ID, a.Created, a.Updated)
	}

	got, err := s.GetAccount(ctx, "example.net", "email", "bob@example.net")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, a) {
		t.Errorf("GetAccount = %+v, want %+v", got, a)
	}
	if got.Created.Location() != time.UTC {
		t.Errorf("Created not in UTC: %v", got.Created)
	}
	byID, err := s.GetAccountByID(ctx, a.ID)
	if err != nil || !reflect.DeepEqual(byID, a) {
		t.Errorf("GetAccountByID = %+v, %v; want %+v", byID, err, a)
	}

	// Update by (Domain, Transport, JID): same ID, Created kept.
	c.add(time.Hour)
	upd := &Account{Domain: "example.net", Transport: "email", JID: "bob@example.net",
		Fields: map[string]string{"username": "robert"}, Enabled: false}
	if err := s.PutAccount(ctx, upd); err != nil {
		t.Fatal(err)
	}
	if upd.ID != a.ID || !upd.Created.Equal(t0) || !upd.Updated.Equal(t0.Add(time.Hour)) {
		t.Errorf("after update: ID %d (want %d), Created %v, Updated %v", upd.ID, a.ID, upd.Created, upd.Updated)
	}
	got, _ = s.GetAccountByID(ctx, a.ID)
	if !reflect.DeepEqual(got, upd) {
		t.Errorf("after update = %+v, want %+v", got, upd)
	}
	if got.Secrets != nil || got.Enabled {
		t.Errorf("update did not replace Secrets/Enabled: %+v", got)
	}

	// nil Fields come back as an empty map.
	e := &Account{Domain: "example.net", Transport: "sms", JID: "bob@example.net"}
	if err := s.PutAccount(ctx, e); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetAccountByID(ctx, e.ID); got.Fields == nil || len(got.Fields) != 0 {
		t.Errorf("nil Fields read back as %#v", got.Fields)
	}

	for _, tc := range []struct {
		name string
		get  func() (*Account, error)
	}{
		{"GetAccount other jid", func() (*Account, error) { return s.GetAccount(ctx, "example.net", "email", "eve@example.net") }},
		{"GetAccount other transport", func() (*Account, error) { return s.GetAccount(ctx, "example.net", "irc", "bob@example.net") }},
		{"GetAccountByID", func() (*Account, error) { return s.GetAccountByID(ctx, 9999) }},
	} {
		if _, err := tc.get(); !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: err = %v, want ErrNotFound", tc.name, err)
		}
	}
}

func TestListAccounts(t *testing.T) {
	s, _ := openMemory(t)
	for _, a := range []Account{
		{Domain: "a.net", Transport: "email", JID: "zoe@a.net"},
		{Domain: "a.net", Transport: "email", JID: "amy@a.net"},
		{Domain: "a.net", Transport: "sms", JID: "bob@a.net"},
		{Domain: "b.net", Transport: "email", JID: "carl@b.net"},
	} {
		if err := s.PutAccount(ctx, &a); err != nil {
			t.Fatal(err)
		}
	}
	for i, tc := range []struct {
		domain, transport string
		want              []string
	}{
		0: {"", "", []string{"amy@a.net", "bob@a.net", "carl@b.net", "zoe@a.net"}},
		1: {"a.net", "", []string{"amy@a.net", "bob@a.net", "zoe@a.net"}},
		2: {"", "email", []string{"amy@a.net", "carl@b.net", "zoe@a.net"}},
		3: {"a.net", "email", []string{"amy@a.net", "zoe@a.net"}},
		4: {"c.net", "", nil},
	} {
		list, err := s.ListAccounts(ctx, tc.domain, tc.transport)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		var jids []string
		for _, a := range list {
			jids = append(jids, a.JID)
		}
		if !reflect.DeepEqual(jids, tc.want) {
			t.Errorf("%d: ListAccounts(%q, %q) = %v, want %v", i, tc.domain, tc.transport, jids, tc.want)
		}
	}
}

func TestDeleteAccountCascades(t *testing.T) {
	s, _ := openMemory(t)
	a := putAccount(t, s, "bob@example.net")
	other := putAccount(t, s, "eve@example.net")
	for _, acc := range []*Account{a, other} {
		if err := s.SetState(ctx, acc.ID, "INBOX.uidvalidity", "42"); err != nil {
			t.Fatal(err)
		}
		if err := s.PutMapping(ctx, acc.ID, "x1", "l1"); err != nil {
			t.Fatal(err)
		}
		enqueue(t, s, &OutboxItem{AccountID: acc.ID, Direction: ToLegacy, Conversation: "c", IdemKey: "k1"})
		id := enqueue(t, s, &OutboxItem{AccountID: acc.ID, Direction: ToXMPP, Conversation: "c", IdemKey: "k2"})
		if err := s.Done(ctx, id); err != nil {
			t.Fatal(err)
		}
	}

	if err := s.DeleteAccount(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteAccount(ctx, a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteAccount: %v, want ErrNotFound", err)
	}
	if _, err := s.GetAccountByID(ctx, a.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetAccountByID after delete: %v", err)
	}
	for _, table := range []string{"account_state", "message_id", "outbox", "outbox_delivered"} {
		var mine, theirs int
		s.db.QueryRow("SELECT COUNT(*) FROM "+table+" WHERE account = ?", a.ID).Scan(&mine)
		s.db.QueryRow("SELECT COUNT(*) FROM "+table+" WHERE account = ?", other.ID).Scan(&theirs)
		if mine != 0 || theirs != 1 {
			t.Errorf("%s: %d rows of deleted account (want 0), %d of the other (want 1)", table, mine, theirs)
		}
	}
}

func TestState(t *testing.T) {
	s, _ := openMemory(t)
	a := putAccount(t, s, "bob@example.net")
	b := putAccount(t, s, "eve@example.net")

	if _, err := s.GetState(ctx, a.ID, "k"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetState absent: %v", err)
	}
	steps := []struct {
		key, value string
	}{{"k", "1"}, {"k", "2"}, {"other", ""}}
	for _, st := range steps {
		if err := s.SetState(ctx, a.ID, st.key, st.value); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetState(ctx, a.ID, st.key); err != nil || got != st.value {
			t.Errorf("GetState(%s) = %q, %v; want %q", st.key, got, err, st.value)
		}
	}
	if _, err := s.GetState(ctx, b.ID, "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("state leaked to another account: %v", err)
	}
	if err := s.DeleteState(ctx, a.ID, "k"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetState(ctx, a.ID, "k"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetState after delete: %v", err)
	}
	if err := s.DeleteState(ctx, a.ID, "k"); err != nil {
		t.Errorf("DeleteState absent: %v", err)
	}
	if err := s.SetState(ctx, 9999, "k", "v"); err == nil {
		t.Errorf("SetState for a missing account succeeded (foreign keys off?)")
	}
}

func TestMappings(t *testing.T) {
	s, c := openMemory(t)
	a := putAccount(t, s, "bob@example.net")
	b := putAccount(t, s, "eve@example.net")

	for _, m := range []struct{ xmpp, legacy string }{
		{"x1", "<m1@example.org>"},
		{"x2", "<m2@example.org>"},
		{"x3", "<m2@example.org>"}, // a second stanza for the same legacy message
	} {
		if err := s.PutMapping(ctx, a.ID, m.xmpp, m.legacy); err != nil {
			t.Fatal(err)
		}
	}
	for i, tc := range []struct {
		f       func(int64, string) (string, error)
		account int64
		in      string
		want    string // "" = ErrNotFound
	}{
		0: {s.legacyID, a.ID, "x1", "<m1@example.org>"},
		1: {s.legacyID, a.ID, "x3", "<m2@example.org>"},
		2: {s.legacyID, a.ID, "nope", ""},
		3: {s.legacyID, b.ID, "x1", ""},
		4: {s.xmppID, a.ID, "<m1@example.org>", "x1"},
		5: {s.xmppID, a.ID, "<m2@example.org>", "x2"}, // the first one recorded
		6: {s.xmppID, a.ID, "nope", ""},
		7: {s.xmppID, b.ID, "<m1@example.org>", ""},
	} {
		got, err := tc.f(tc.account, tc.in)
		if tc.want == "" {
			if !errors.Is(err, ErrNotFound) {
				t.Errorf("%d: got %q, %v; want ErrNotFound", i, got, err)
			}
		} else if err != nil || got != tc.want {
			t.Errorf("%d: got %q, %v; want %q", i, got, err, tc.want)
		}
	}

	// Remapping an xmpp id replaces its legacy id.
	if err := s.PutMapping(ctx, a.ID, "x1", "<m9@example.org>"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.LegacyID(ctx, a.ID, "x1"); got != "<m9@example.org>" {
		t.Errorf("after remap LegacyID = %q", got)
	}

	// Prune: x1 was rewritten an hour later, the others are older.
	c.add(2 * time.Hour)
	if err := s.PutMapping(ctx, a.ID, "x4", "l4"); err != nil {
		t.Fatal(err)
	}
	n, err := s.PruneMappings(ctx, t0.Add(time.Hour))
	if err != nil || n != 3 {
		t.Errorf("PruneMappings = %d, %v; want 3", n, err)
	}
	if got, err := s.LegacyID(ctx, a.ID, "x4"); err != nil || got != "l4" {
		t.Errorf("newer mapping pruned: %q, %v", got, err)
	}
}

func (s *SQLite) legacyID(account int64, id string) (string, error) {
	return s.LegacyID(ctx, account, id)
}

func (s *SQLite) xmppID(account int64, id string) (string, error) {
	return s.XMPPID(ctx, account, id)
}

func TestSettings(t *testing.T) {
	s, _ := openMemory(t)
	if _, err := s.GetSetting(ctx, "registration"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetSetting absent: %v", err)
	}
	for _, v := range []string{"open", "closed"} {
		if err := s.SetSetting(ctx, "registration", v); err != nil {
			t.Fatal(err)
		}
		if got, err := s.GetSetting(ctx, "registration"); err != nil || got != v {
			t.Errorf("GetSetting = %q, %v; want %q", got, err, v)
		}
	}
}

func TestPing(t *testing.T) {
	s, _ := openMemory(t)
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := s.Ping(ctx); err == nil {
		t.Error("Ping on a closed store succeeded")
	}
}

func TestEnqueue(t *testing.T) {
	s, c := openMemory(t)
	a := putAccount(t, s, "bob@example.net")

	it := &OutboxItem{AccountID: a.ID, Direction: ToLegacy, Conversation: "alice@example.org",
		IdemKey: "stanza-1", Payload: []byte(`{"body":"hi"}`)}
	id, dup, err := s.Enqueue(ctx, it)
	if err != nil || dup || id == 0 || it.ID != id {
		t.Fatalf("Enqueue = %d, %v, %v (it.ID %d)", id, dup, err, it.ID)
	}
	if !it.Created.Equal(t0) || !it.NextAttempt.Equal(t0) {
		t.Errorf("Created %v, NextAttempt %v; want both %v", it.Created, it.NextAttempt, t0)
	}
	items, err := s.Due(ctx, ToLegacy, t0, 0)
	if err != nil || len(items) != 1 || !reflect.DeepEqual(items[0], it) {
		t.Fatalf("Due = %+v, %v; want [%+v]", items, err, it)
	}

	// Same key while queued: dup, nothing inserted.
	again := &OutboxItem{AccountID: a.ID, Direction: ToLegacy, Conversation: "alice@example.org",
		IdemKey: "stanza-1", Payload: []byte("other")}
	if id2, dup, err := s.Enqueue(ctx, again); err != nil || !dup || id2 != id || again.ID != 0 {
		t.Errorf("Enqueue while queued = %d, dup %v, %v (again.ID %d); want %d, dup", id2, dup, err, again.ID, id)
	}
	// The same key in the other direction or for another account is not a dup.
	b := putAccount(t, s, "eve@example.net")
	enqueue(t, s, &OutboxItem{AccountID: a.ID, Direction: ToXMPP, Conversation: "c", IdemKey: "stanza-1"})
	enqueue(t, s, &OutboxItem{AccountID: b.ID, Direction: ToLegacy, Conversation: "c", IdemKey: "stanza-1"})
	// An empty key is never a dup.
	enqueue(t, s, &OutboxItem{AccountID: a.ID, Direction: ToLegacy, Conversation: "c"})
	enqueue(t, s, &OutboxItem{AccountID: a.ID, Direction: ToLegacy, Conversation: "c"})

	if n, _ := s.Pending(ctx, a.ID, ToLegacy); n != 3 {
		t.Errorf("Pending = %d, want 3", n)
	}

	// After Done: still a dup within the window, with the old id.
	if err := s.Done(ctx, id); err != nil {
		t.Fatal(err)
	}
	c.add(DedupeWindow - time.Minute)
	if id2, dup, err := s.Enqueue(ctx, again); err != nil || !dup || id2 != id {
		t.Errorf("Enqueue after Done = %d, dup %v, %v; want %d, dup", id2, dup, err, id)
	}
	// Past the window the key is accepted again, even if not pruned yet.
	c.add(2 * time.Minute)
	if id2, dup, err := s.Enqueue(ctx, again); err != nil || dup || id2 <= id {
		t.Errorf("Enqueue after window = %d, dup %v, %v; want a new id", id2, dup, err)
	}

	for i, bad := range []*OutboxItem{
		{Direction: ToLegacy},
		{AccountID: a.ID, Direction: "sideways"},
		{AccountID: 9999, Direction: ToLegacy}, // no such account
	} {
		if _, _, err := s.Enqueue(ctx, bad); err == nil {
			t.Errorf("%d: Enqueue(%+v) succeeded", i, bad)
		}
	}
}

func TestDue(t *testing.T) {
	s, _ := openMemory(t)
	a := putAccount(t, s, "bob@example.net")
	b := putAccount(t, s, "eve@example.net")
	later := t0.Add(time.Minute)

	item := func(acc *Account, dir Direction, conv string, next time.Time) int64 {
		return enqueue(t, s, &OutboxItem{AccountID: acc.ID, Direction: dir, Conversation: conv, NextAttempt: next})
	}
	a1 := item(a, ToLegacy, "alice", t0)    // head of a/alice
	a2 := item(a, ToLegacy, "alice", t0)    // behind a1
	c1 := item(a, ToLegacy, "carol", later) // head, not due yet
	c2 := item(a, ToLegacy, "carol", t0)    // due, but behind c1
	b1 := item(b, ToLegacy, "alice", t0)    // same conversation name, other account
	x1 := item(a, ToXMPP, "alice", t0)      // same conversation, other direction

	for i, tc := range []struct {
		dir   Direction
		now   time.Time
		limit int
		want  []int64
	}{
		0: {ToLegacy, t0, 0, []int64{a1, b1}},
		1: {ToLegacy, t0, 1, []int64{a1}},
		2: {ToLegacy, later, 10, []int64{a1, c1, b1}},
		3: {ToXMPP, t0, 0, []int64{x1}},
		4: {ToLegacy, t0.Add(-time.Second), 0, []int64{}},
	} {
		if got := dueIDs(t, s, tc.dir, tc.now, tc.limit); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%d: Due(%s, %v, %d) = %v, want %v", i, tc.dir, tc.now, tc.limit, got, tc.want)
		}
	}
	if next, err := s.NextDue(ctx, ToLegacy); err != nil || !next.Equal(t0) {
		t.Errorf("NextDue = %v, %v; want %v", next, err, t0)
	}

	// The head a1 fails and waits: a2 must not overtake it.
	retryAt := t0.Add(time.Hour)
	if err := s.Retry(ctx, a1, retryAt, "connection refused"); err != nil {
		t.Fatal(err)
	}
	if got := dueIDs(t, s, ToLegacy, later, 0); !reflect.DeepEqual(got, []int64{c1, b1}) {
		t.Errorf("Due while a1 waits = %v, want %v", got, []int64{c1, b1})
	}
	items, _ := s.Due(ctx, ToLegacy, retryAt, 1)
	if len(items) != 1 || items[0].ID != a1 || items[0].Attempts != 1 ||
		items[0].LastError != "connection refused" || !items[0].NextAttempt.Equal(retryAt) {
		t.Errorf("after Retry: %+v", items)
	}
	// Deliver b1 and c1: c2 becomes the head of a/carol.
	for _, id := range []int64{b1, c1} {
		if err := s.Done(ctx, id); err != nil {
			t.Fatal(err)
		}
	}
	if got := dueIDs(t, s, ToLegacy, later, 0); !reflect.DeepEqual(got, []int64{c2}) {
		t.Errorf("Due after Done = %v, want [%d]", got, c2)
	}
	if err := s.Done(ctx, c2); err != nil {
		t.Fatal(err)
	}
	// Now only a/alice is queued, its head waiting until retryAt while a2
	// (due at t0) waits behind it: NextDue must say retryAt, not t0.
	if next, err := s.NextDue(ctx, ToLegacy); err != nil || !next.Equal(retryAt) {
		t.Errorf("NextDue = %v, %v; want %v", next, err, retryAt)
	}
	if err := s.Done(ctx, a1); err != nil {
		t.Fatal(err)
	}
	if got := dueIDs(t, s, ToLegacy, t0, 0); !reflect.DeepEqual(got, []int64{a2}) {
		t.Errorf("Due after head delivered = %v, want [%d]", got, a2)
	}
	s.Done(ctx, a2)
	if _, err := s.NextDue(ctx, ToLegacy); !errors.Is(err, ErrNotFound) {
		t.Errorf("NextDue on empty queue: %v, want ErrNotFound", err)
	}
}

func TestDoneRetryMissing(t *testing.T) {
	s, _ := openMemory(t)
	if err := s.Done(ctx, 42); !errors.Is(err, ErrNotFound) {
		t.Errorf("Done(missing) = %v, want ErrNotFound", err)
	}
	if err := s.Retry(ctx, 42, t0, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Retry(missing) = %v, want ErrNotFound", err)
	}
}

func TestPostpone(t *testing.T) {
	s, _ := openMemory(t)
	a := putAccount(t, s, "bob@example.net")
	id := enqueue(t, s, &OutboxItem{AccountID: a.ID, Direction: ToLegacy, Conversation: "alice", NextAttempt: t0})
	if err := s.Retry(ctx, id, t0, "connection refused"); err != nil {
		t.Fatal(err)
	}
	next := t0.Add(5 * time.Second)
	for range 3 { // a session down for a while postpones the same item again and again
		if err := s.Postpone(ctx, id, next, "session not connected"); err != nil {
			t.Fatal(err)
		}
	}
	if got := dueIDs(t, s, ToLegacy, next.Add(-time.Nanosecond), 0); len(got) != 0 {
		t.Errorf("Due before the postponed time = %v, want none", got)
	}
	if nd, err := s.NextDue(ctx, ToLegacy); err != nil || !nd.Equal(next) {
		t.Errorf("NextDue = %v, %v; want %v", nd, err, next)
	}
	items, err := s.Due(ctx, ToLegacy, next, 0)
	if err != nil || len(items) != 1 {
		t.Fatalf("Due at the postponed time = %v, %v; want the item", items, err)
	}
	if it := items[0]; it.ID != id || it.Attempts != 1 || it.LastError != "session not connected" || !it.NextAttempt.Equal(next) {
		t.Errorf("after Postpone: id %d attempts %d last error %q next %v; want id %d, attempts still 1, the reason, %v",
			it.ID, it.Attempts, it.LastError, it.NextAttempt, id, next)
	}
	if err := s.Postpone(ctx, id+1, next, "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Postpone(missing) = %v, want ErrNotFound", err)
	}
}

// TestConcurrentWrites: writes that share a commit keep their own
// outcomes: a key enqueued by several callers at once is queued once, and
// a write that fails (an unknown account) fails alone.
func TestConcurrentWrites(t *testing.T) {
	s := openFile(t, filepath.Join(t.TempDir(), "t.db"))
	defer s.Close()
	a := putAccount(t, s, "bob@example.net")
	const n = 40
	type result struct {
		id  int64
		dup bool
		err error
	}
	results := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			it := &OutboxItem{AccountID: a.ID, Direction: ToXMPP, Conversation: "alice", IdemKey: fmt.Sprint("k", i%4)}
			if i%10 == 9 {
				it.AccountID = a.ID + 1000 // no such account
			}
			id, dup, err := s.Enqueue(ctx, it)
			results[i] = result{id, dup, err}
		}()
	}
	wg.Wait()
	inserted := map[string]int64{}
	for i, r := range results {
		key := fmt.Sprint("k", i%4)
		switch {
		case i%10 == 9:
			if r.err == nil {
				t.Errorf("enqueue %d for an unknown account succeeded", i)
			}
		case r.err != nil:
			t.Errorf("enqueue %d: %v", i, r.err)
		case !r.dup:
			if id, ok := inserted[key]; ok {
				t.Errorf("key %s inserted twice (%d and %d)", key, id, r.id)
			}
			inserted[key] = r.id
		}
	}
	for i, r := range results {
		if key := fmt.Sprint("k", i%4); i%10 != 9 && r.err == nil && r.dup && r.id != inserted[key] {
			t.Errorf("enqueue %d: duplicate of %d, but %s was inserted as %d", i, r.id, key, inserted[key])
		}
	}
	if p, err := s.Pending(ctx, a.ID, ToXMPP); err != nil || p != 4 || len(inserted) != 4 {
		t.Errorf("Pending = %d, %v, inserted %v; want the 4 keys once each", p, err, inserted)
	}
}

func TestWriteAfterClose(t *testing.T) {
	s := openFile(t, filepath.Join(t.TempDir(), "t.db"))
	a := putAccount(t, s, "bob@example.net")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Enqueue(ctx, &OutboxItem{AccountID: a.ID, Direction: ToXMPP}); err == nil {
		t.Error("Enqueue after Close succeeded")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestPending(t *testing.T) {
	s, _ := openMemory(t)
	a := putAccount(t, s, "bob@example.net")
	b := putAccount(t, s, "eve@example.net")
	for _, it := range []OutboxItem{
		{AccountID: a.ID, Direction: ToLegacy},
		{AccountID: a.ID, Direction: ToLegacy},
		{AccountID: a.ID, Direction: ToXMPP},
		{AccountID: b.ID, Direction: ToLegacy},
	} {
		enqueue(t, s, &it)
	}
	for i, tc := range []struct {
		account int64
		dir     Direction
		want    int
	}{
		0: {0, ToLegacy, 3},
		1: {0, ToXMPP, 1},
		2: {0, "", 4},
		3: {a.ID, ToLegacy, 2},
		4: {a.ID, "", 3},
		5: {b.ID, ToXMPP, 0},
	} {
		if n, err := s.Pending(ctx, tc.account, tc.dir); err != nil || n != tc.want {
			t.Errorf("%d: Pending(%d, %q) = %d, %v; want %d", i, tc.account, tc.dir, n, err, tc.want)
		}
	}
}

func TestPruneDelivered(t *testing.T) {
	s, c := openMemory(t)
	a := putAccount(t, s, "bob@example.net")
	deliver := func(key string) int64 {
		id := enqueue(t, s, &OutboxItem{AccountID: a.ID, Direction: ToXMPP, IdemKey: key})
		if err := s.Done(ctx, id); err != nil {
			t.Fatal(err)
		}
		return id
	}
	deliver("old")
	c.add(time.Hour)
	deliver("new")

	n, err := s.PruneDelivered(ctx, t0.Add(time.Minute))
	if err != nil || n != 1 {
		t.Fatalf("PruneDelivered = %d, %v; want 1", n, err)
	}
	if _, dup, _ := s.Enqueue(ctx, &OutboxItem{AccountID: a.ID, Direction: ToXMPP, IdemKey: "old"}); dup {
		t.Error("pruned key still a dup")
	}
	if _, dup, _ := s.Enqueue(ctx, &OutboxItem{AccountID: a.ID, Direction: ToXMPP, IdemKey: "new"}); !dup {
		t.Error("kept key not a dup")
	}
}

func TestReopenKeepsData(t *testing.T) {
	path := filepath.Join(t.TempDir(), "transportd.db")
	s := openFile(t, path)
	a := putAccount(t, s, "bob@example.net")
	id := enqueue(t, s, &OutboxItem{AccountID: a.ID, Direction: ToLegacy, Conversation: "c", IdemKey: "k", Payload: []byte("p")})
	if err := s.SetSetting(ctx, "k", "v"); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openFile(t, path)
	defer s.Close()
	if got, err := s.GetAccountByID(ctx, a.ID); err != nil || got.JID != a.JID {
		t.Errorf("account after reopen: %+v, %v", got, err)
	}
	if items, err := s.Due(ctx, ToLegacy, time.Now(), 0); err != nil || len(items) != 1 || items[0].ID != id || string(items[0].Payload) != "p" {
		t.Errorf("outbox after reopen: %+v, %v", items, err)
	}
	if v, err := s.GetSetting(ctx, "k"); err != nil || v != "v" {
		t.Errorf("setting after reopen: %q, %v", v, err)
	}
}

func setUserVersion(t *testing.T, path string, v int) {
	t.Helper()
	db, err := sql.Open("sqlite3", path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", v)); err != nil {
		t.Fatal(err)
	}
}

func TestRefuseNewerSchema(t *testing.T) {
	path := filepath.Join(t.TempDir(), "transportd.db")
	openFile(t, path).Close()
	setUserVersion(t, path, len(sqliteMigrations)+1)

	s, err := Open(path)
	if err == nil {
		s.Close()
		t.Fatal("Open of a newer database succeeded")
	}
	if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), fmt.Sprintf("version %d", len(sqliteMigrations)+1)) {
		t.Errorf("error = %v, want ErrSchemaTooNew naming the version", err)
	}
	t.Log(err)
}

func TestMigrations(t *testing.T) {
	path := filepath.Join(t.TempDir(), "transportd.db")
	openFile(t, path).Close()

	saved := sqliteMigrations
	defer func() { sqliteMigrations = saved }()

	// A failing migration leaves the database as it was.
	sqliteMigrations = append(saved[:len(saved):len(saved)],
		"CREATE TABLE added(x INTEGER); INSERT INTO nosuchtable VALUES (1);")
	if s, err := Open(path); err == nil {
		s.Close()
		t.Fatal("Open with a failing migration succeeded")
	}
	sqliteMigrations = saved
	s := openFile(t, path)
	var n int
	s.db.QueryRow("SELECT COUNT(*) FROM sqlite_master WHERE name = 'added'").Scan(&n)
	s.Close()
	if n != 0 {
		t.Fatal("failed migration was not rolled back")
	}

	// A good migration is applied once and bumps user_version.
	sqliteMigrations = append(saved[:len(saved):len(saved)], "CREATE TABLE added(x INTEGER);")
	for range 2 {
		s = openFile(t, path)
		var v int
		s.db.QueryRow("PRAGMA user_version").Scan(&v)
		s.db.QueryRow("SELECT COUNT(*) FROM sqlite_master WHERE name = 'added'").Scan(&n)
		s.Close()
		if v != len(saved)+1 || n != 1 {
			t.Errorf("user_version %d (want %d), table added: %d", v, len(saved)+1, n)
		}
	}
}

func TestConcurrentEnqueue(t *testing.T) {
	path := filepath.Join(t.TempDir(), "transportd.db")
	s := openFile(t, path)
	defer s.Close()
	a := putAccount(t, s, "bob@example.net")

	const workers, each = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				_, dup, err := s.Enqueue(ctx, &OutboxItem{AccountID: a.ID, Direction: ToLegacy,
					Conversation: fmt.Sprint(w), IdemKey: fmt.Sprintf("%d-%d", w, i)})
				if err == nil && dup {
					err = fmt.Errorf("%d-%d reported dup", w, i)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n, err := s.Pending(ctx, a.ID, ToLegacy); err != nil || n != workers*each {
		t.Errorf("Pending = %d, %v; want %d", n, err, workers*each)
	}
}

// benchStore opens a store in a file, closed when b ends, with one
// account of the transport.
func benchStore(b *testing.B, transport string) (*SQLite, *Account) {
	s := openFile(b, filepath.Join(b.TempDir(), "bench.db"))
	b.Cleanup(func() { s.Close() })
	a := &Account{Domain: "example.net", Transport: transport, JID: "bob@example.net"}
	if err := s.PutAccount(ctx, a); err != nil {
		b.Fatal(err)
	}
	return s, a
}

func BenchmarkEnqueueDone(b *testing.B) {
	s, a := benchStore(b, "email")
	payload := []byte(`{"from":"alice@example.org","body":"hello"}`)
	cpu0 := cputime.Process()
	for i := 0; b.Loop(); i++ {
		id, _, err := s.Enqueue(ctx, &OutboxItem{AccountID: a.ID, Direction: ToLegacy,
			Conversation: "alice@example.org", IdemKey: fmt.Sprint(i), Payload: payload})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Done(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu0)
}

// BenchmarkRecordDelivered records the keys of relayed messages in
// batches of 512, as the relay does under load; per key.
func BenchmarkRecordDelivered(b *testing.B) {
	s, a := benchStore(b, "irc")
	const batch = 512
	keys := make([]DeliveredKey, batch)
	cpu0 := cputime.Process()
	n := 0
	for b.Loop() {
		for i := range keys {
			keys[i] = DeliveredKey{AccountID: a.ID, Direction: ToXMPP, IdemKey: fmt.Sprintf("message:%016x", uint64(n)*0x9e3779b97f4a7c15)} // ids in no order, as servers give them
			n++
		}
		if err := s.RecordDelivered(ctx, keys); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n), "ns/key")
	reportCPU(b, cpu0)
}

// BenchmarkEnqueueDoneParallel is BenchmarkEnqueueDone from many
// goroutines at once, as the gateway's sessions and outbox workers do:
// concurrent writes may share commits.
func BenchmarkEnqueueDoneParallel(b *testing.B) {
	s, a := benchStore(b, "email")
	payload := []byte(`{"from":"alice@example.org","body":"hello"}`)
	var n atomic.Int64
	b.SetParallelism(8) // 8 per CPU
	b.ResetTimer()
	cpu0 := cputime.Process()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := n.Add(1)
			id, _, err := s.Enqueue(ctx, &OutboxItem{AccountID: a.ID, Direction: ToLegacy,
				Conversation: fmt.Sprint(i % 16), IdemKey: fmt.Sprint(i), Payload: payload})
			if err == nil {
				err = s.Done(ctx, id)
			}
			if err != nil {
				b.Error(err)
				return
			}
		}
	})
	reportCPU(b, cpu0)
}

func TestContacts(t *testing.T) {
	s, _ := openMemory(t)
	ctx := context.Background()
	a := &Account{Domain: "d", Transport: "t", JID: "u@d"}
	if err := s.PutAccount(ctx, a); err != nil {
		t.Fatal(err)
	}
	if isNew, err := s.PutContact(ctx, a.ID, "jane@example.org", "Jane"); err != nil || !isNew {
		t.Fatalf("first put: new=%v %v", isNew, err)
	}
	if isNew, err := s.PutContact(ctx, a.ID, "jane@example.org", ""); err != nil || isNew {
		t.Fatalf("second put: new=%v %v", isNew, err)
	}
	c, err := s.GetContact(ctx, a.ID, "jane@example.org")
	if err != nil || c.Name != "Jane" || c.Pushed {
		t.Fatalf("contact = %+v %v (an empty name must not erase the known one)", c, err)
	}
	s.PutContact(ctx, a.ID, "bob@example.org", "Bob")
	list, err := s.ListContacts(ctx, a.ID, 0)
	if err != nil || len(list) != 2 {
		t.Fatalf("list = %v %v", list, err)
	}
	if err := s.SetContactPushed(ctx, a.ID, "jane@example.org", true); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.GetContact(ctx, a.ID, "jane@example.org"); !c.Pushed {
		t.Error("pushed flag not stored")
	}
	if err := s.SetContactPushed(ctx, a.ID, "nobody", true); err != ErrNotFound {
		t.Errorf("unknown contact: %v", err)
	}
	// Removed from the roster, and added again.
	if err := s.SetContactRemoved(ctx, a.ID, "jane@example.org", true); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.GetContact(ctx, a.ID, "jane@example.org"); !c.Removed || !c.Pushed {
		t.Errorf("removed: %+v (removed and still known as pushed)", c)
	}
	if list, _ := s.ListContacts(ctx, a.ID, 0); len(list) != 2 || !slices.ContainsFunc(list, func(c *Contact) bool { return c.Address == "jane@example.org" && c.Removed }) {
		t.Errorf("list after removal: %+v", list)
	}
	if err := s.SetContactRemoved(ctx, a.ID, "jane@example.org", false); err != nil {
		t.Fatal(err)
	}
	if c, _ := s.GetContact(ctx, a.ID, "jane@example.org"); c.Removed {
		t.Errorf("added again: %+v", c)
	}
	if err := s.SetContactRemoved(ctx, a.ID, "nobody", true); err != ErrNotFound {
		t.Errorf("removing an unknown contact: %v", err)
	}
	if err := s.DeleteAccount(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetContact(ctx, a.ID, "bob@example.org"); err != ErrNotFound {
		t.Errorf("contacts survive their account: %v", err)
	}
}

func TestAccountLabels(t *testing.T) {
	s, _ := openMemory(t)
	ctx := context.Background()
	main := &Account{Domain: "d", Transport: "email", JID: "u@d", Fields: map[string]string{"email": "a@x"}}
	work := &Account{Domain: "d", Transport: "email", JID: "u@d", Label: "work", Fields: map[string]string{"email": "b@y"}}
	for _, a := range []*Account{main, work} {
		if err := s.PutAccount(ctx, a); err != nil {
			t.Fatal(err)
		}
	}
	if main.ID == work.ID {
		t.Fatal("two labels share one account row")
	}
	got, err := s.GetAccountLabel(ctx, "d", "email", "u@d", "work")
	if err != nil || got.Fields["email"] != "b@y" || got.Label != "work" {
		t.Fatalf("work account = %+v %v", got, err)
	}
	if got, err := s.GetAccount(ctx, "d", "email", "u@d"); err != nil || got.ID != main.ID {
		t.Fatalf("GetAccount returns the main account: %+v %v", got, err)
	}
	list, _ := s.ListAccounts(ctx, "d", "email")
	if len(list) != 2 {
		t.Errorf("list = %d accounts", len(list))
	}
}

func TestMakeDue(t *testing.T) {
	s, _ := openMemory(t)
	ctx := context.Background()
	a := &Account{Domain: "d", Transport: "t", JID: "u@d"}
	s.PutAccount(ctx, a)
	later := time.Now().Add(time.Hour)
	if _, _, err := s.Enqueue(ctx, &OutboxItem{AccountID: a.ID, Direction: ToLegacy, Conversation: "c", IdemKey: "k", Payload: []byte("x"), NextAttempt: later}); err != nil {
		t.Fatal(err)
	}
	if due, _ := s.Due(ctx, ToLegacy, time.Now(), 10); len(due) != 0 {
		t.Fatalf("item due before its time")
	}
	if n, err := s.MakeDue(ctx, a.ID, ToLegacy); err != nil || n != 1 {
		t.Fatalf("MakeDue = %d, %v; want 1 item made due", n, err)
	}
	if due, _ := s.Due(ctx, ToLegacy, time.Now().Add(time.Millisecond), 10); len(due) != 1 {
		t.Errorf("MakeDue left %d items due, want 1", len(due))
	}
	// Nothing waits any more: nothing to wake the outbox for.
	if n, err := s.MakeDue(ctx, a.ID, ToLegacy); err != nil || n != 0 {
		t.Errorf("MakeDue again = %d, %v; want 0", n, err)
	}
}

// Keys delivered outside the outbox make later enqueues of the same key
// duplicates, in their direction only, and are pruned like the others.
func TestRecordDelivered(t *testing.T) {
	s, c := openMemory(t)
	a := putAccount(t, s, "bob@example.net")
	if err := s.RecordDelivered(ctx, []DeliveredKey{
		{AccountID: a.ID, Direction: ToXMPP, IdemKey: "message:L1"},
		{AccountID: a.ID, Direction: ToXMPP, IdemKey: ""}, // no key: skipped
	}); err != nil {
		t.Fatal(err)
	}
	if _, dup, err := s.Enqueue(ctx, &OutboxItem{AccountID: a.ID, Direction: ToXMPP, Conversation: "c", IdemKey: "message:L1"}); err != nil || !dup {
		t.Errorf("Enqueue of a relayed key: dup %v, %v; want dup", dup, err)
	}
	if _, dup, _ := s.Enqueue(ctx, &OutboxItem{AccountID: a.ID, Direction: ToLegacy, Conversation: "c", IdemKey: "message:L1"}); dup {
		t.Error("the key is a dup in the other direction")
	}
	c.add(time.Hour)
	if n, err := s.PruneDelivered(ctx, t0.Add(time.Minute)); err != nil || n != 1 {
		t.Errorf("PruneDelivered = %d, %v; want 1", n, err)
	}

	// A relay's batch: hundreds of keys in one call, for two accounts and
	// both directions, keys of any text, one recorded twice (kept once,
	// with the later time).
	b := putAccount(t, s, "carol@example.net")
	var keys []DeliveredKey
	for i := 0; i < 700; i++ {
		acct, dir := a.ID, ToXMPP
		if i%2 == 1 {
			acct, dir = b.ID, ToLegacy
		}
		keys = append(keys, DeliveredKey{AccountID: acct, Direction: dir, IdemKey: fmt.Sprintf("message:%d \"q'\\ é\x00", i)})
	}
	keys = append(keys, keys[10])
	if err := s.RecordDelivered(ctx, keys); err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 1, 10, 699} {
		k := keys[i]
		if _, dup, err := s.Enqueue(ctx, &OutboxItem{AccountID: k.AccountID, Direction: k.Direction, Conversation: "c", IdemKey: k.IdemKey}); err != nil || !dup {
			t.Errorf("key %d (%q) not recorded: dup %v, %v", i, k.IdemKey, dup, err)
		}
	}
	if _, dup, _ := s.Enqueue(ctx, &OutboxItem{AccountID: b.ID, Direction: ToLegacy, Conversation: "c", IdemKey: keys[0].IdemKey}); dup {
		t.Error("a key recorded for one account is a dup for another")
	}
	c.add(time.Hour)
	if n, err := s.PruneDelivered(ctx, c.now().Add(-time.Minute)); err != nil || n != 700 {
		t.Errorf("PruneDelivered = %d, %v; want the 700 recorded once each", n, err)
	}
}

// TestBurstConnectionsClose: the connections a burst of concurrent
// queries opened are closed once they sat unused for sqliteConnIdle
// (each holds its own schema, statements and page cache), and the store
// works on after, on a connection it opens again when needed.
func TestBurstConnectionsClose(t *testing.T) {
	defer func(d time.Duration) { sqliteConnIdle = d }(sqliteConnIdle)
	sqliteConnIdle = 200 * time.Millisecond
	s := openFile(t, filepath.Join(t.TempDir(), "t.db"))
	defer s.Close()
	a := putAccount(t, s, "bob@example.net")
	// Three queries at once, each on its own connection.
	var conns []*sql.Conn
	for range 3 {
		c, err := s.db.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	for _, c := range conns {
		var n int
		if err := c.QueryRowContext(ctx, "SELECT COUNT(*) FROM account").Scan(&n); err != nil || n != 1 {
			t.Fatalf("count: %d, %v", n, err)
		}
		c.Close()
	}
	if got := s.db.Stats().OpenConnections; got < 2 {
		t.Fatalf("after the burst: %d connections open, want the pool's idle ones (2)", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.db.Stats().OpenConnections > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open %v after the burst (idle limit %v)", s.db.Stats().OpenConnections, 5*time.Second, sqliteConnIdle)
		}
		time.Sleep(50 * time.Millisecond)
	}
	got, err := s.GetAccountByID(ctx, a.ID)
	if err != nil || got.JID != "bob@example.net" {
		t.Fatalf("GetAccountByID after the connections closed: %+v, %v", got, err)
	}
}
