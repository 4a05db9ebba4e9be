package irc

import (
	"context"
	"strconv"
	"strings"
	"sync"
	"time"

	"transportd/core"
)

// sendRecords remember, per conversation, the stanza whose lines were
// last handed to IRC, so that the outbox retrying it after a crash does
// not send it again (see session.Send). One key per conversation, written
// over by the next message: nothing to clean up. The values last read or
// written are cached, so a conversation costs one read per session and
// one write per message.
type sendRecords struct {
	st core.StateStore

	mu    sync.Mutex
	known map[string]string // key -> value ("" when none); made by remember
}

// remember caches a key's value; r.mu is held. The map is made on the
// first message: every user has a sendRecords, and one who has sent
// nothing needs no map.
func (r *sendRecords) remember(key, v string) {
	if r.known == nil {
		r.known = map[string]string{}
	}
	r.known[key] = v
}

// recordPrefix prefixes the state keys of send records.
const recordPrefix = "sending:"

// recordTTL is how long a record counts: longer than the outbox tries to
// send an item.
const recordTTL = 7 * 24 * time.Hour

func newSendRecords(st core.StateStore) *sendRecords {
	if st == nil {
		return nil
	}
	return &sendRecords{st: st}
}

// recordValue names a stanza: the sending resource and its id. "" when
// the stanza has no id (nothing tells a retry from a new message).
func recordValue(m *core.Message) string {
	if m.XMPPID == "" {
		return ""
	}
	return m.UserResource + "\x00" + m.XMPPID
}

// begin records m as its conversation's send in progress; again says m
// is the one recorded already: it was handed to IRC before, and must not
// be sent again.
func (r *sendRecords) begin(ctx context.Context, m *core.Message) (again bool, err error) {
	v := recordValue(m)
	if v == "" {
		return false, nil
	}
	key := recordPrefix + m.Contact
	r.mu.Lock()
	old, ok := r.known[key]
	r.mu.Unlock()
	if !ok {
		stored, found, err := r.st.Get(ctx, key)
		if err != nil {
			return false, err
		}
		if found {
			old = stored
		}
	}
	if when, val, ok := strings.Cut(old, "\x00"); ok && val == v {
		if sec, err := strconv.ParseInt(when, 10, 64); err == nil && time.Since(time.Unix(sec, 0)) < recordTTL {
			return true, nil
		}
	}
	nv := strconv.FormatInt(time.Now().Unix(), 10) + "\x00" + v
	if err := r.st.Set(ctx, key, nv); err != nil {
		return false, err
	}
	r.mu.Lock()
	r.remember(key, nv)
	r.mu.Unlock()
	return false, nil
}

// undo drops the record of a message none of whose lines was written, so
// that the outbox's retry sends it.
func (r *sendRecords) undo(ctx context.Context, m *core.Message) {
	if recordValue(m) == "" {
		return
	}
	key := recordPrefix + m.Contact
	if err := r.st.Delete(ctx, key); err != nil {
		// The retry will take the message for one already sent: it is
		// lost rather than sent twice.
		r.mu.Lock()
		delete(r.known, key)
		r.mu.Unlock()
		return
	}
	r.mu.Lock()
	r.remember(key, "")
	r.mu.Unlock()
}
