// Package latest keeps, per key, the newest of a transport's running
// sessions, for what reaches a transport from outside a session (SMS
// webhooks, e-mail push notices and attachment links).
//
// Core may start an account's new session before the goroutine of the
// one it replaced has even run (new credentials, a reconnect). If the
// old one then registers after the new one, a plain map points at the
// old session, and its unregistering a moment later leaves nothing: the
// account's webhooks and push notices found no session (404) while it
// was running. Entries are therefore ordered by when the sessions were
// made, not by when they register.
package latest

import "sync/atomic"

// Seq hands out creation numbers: take one when a session is made.
type Seq struct{ n atomic.Uint64 }

// Next returns a number greater than every one returned before.
func (s *Seq) Next() uint64 { return s.n.Add(1) }

// Map maps keys to the newest session put for them. It does no locking:
// its users hold their own lock around it.
type Map[K comparable, V comparable] struct {
	m map[K]entry[V]
}

type entry[V any] struct {
	v   V
	seq uint64
}

// Put records v (made with creation number seq) for k, unless a newer
// session is recorded; it reports whether v is now the one for k.
func (m *Map[K, V]) Put(k K, v V, seq uint64) bool {
	if cur, ok := m.m[k]; ok && cur.seq > seq {
		return false
	}
	if m.m == nil {
		m.m = map[K]entry[V]{}
	}
	m.m[k] = entry[V]{v, seq}
	return true
}

// Delete removes v for k, if v is the one recorded.
func (m *Map[K, V]) Delete(k K, v V) {
	if cur, ok := m.m[k]; ok && cur.v == v {
		delete(m.m, k)
	}
}

// Get returns the session recorded for k.
func (m *Map[K, V]) Get(k K) (V, bool) {
	e, ok := m.m[k]
	return e.v, ok
}

// Values returns the recorded sessions, in no order.
func (m *Map[K, V]) Values() []V {
	out := make([]V, 0, len(m.m))
	for _, e := range m.m {
		out = append(out, e.v)
	}
	return out
}

// Len is the number of keys recorded.
func (m *Map[K, V]) Len() int { return len(m.m) }
