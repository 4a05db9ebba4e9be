package latest

import "testing"

// The race the package exists for: session 1 is replaced by session 2,
// but 1's goroutine registers after 2's, then unregisters.
func TestOldSessionRegisteringLate(t *testing.T) {
	var seq Seq
	type session struct{ name string }
	s1 := &session{"old"}
	n1 := seq.Next()
	s2 := &session{"new"}
	n2 := seq.Next()

	var m Map[string, *session]
	if !m.Put("+12025550100", s2, n2) {
		t.Fatal("the new session was not recorded")
	}
	if m.Put("+12025550100", s1, n1) {
		t.Error("the old session, registering late, replaced the new one")
	}
	m.Delete("+12025550100", s1)
	if got, ok := m.Get("+12025550100"); !ok || got != s2 {
		t.Fatalf("after the old session unregistered: %v %v, want the new one", got, ok)
	}
	m.Delete("+12025550100", s2)
	if _, ok := m.Get("+12025550100"); ok || m.Len() != 0 {
		t.Error("the new session is still recorded after it unregistered")
	}
	// In the usual order, the newer one replaces the older.
	m.Put("k", s1, n1)
	m.Put("k", s2, n2)
	if got, _ := m.Get("k"); got != s2 || len(m.Values()) != 1 {
		t.Errorf("got %v", got)
	}
}
