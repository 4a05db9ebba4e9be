package sms

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	openapi "github.com/twilio/twilio-go/rest/api/v2010"
	"mellium.im/xmpp/stanza"

	"transportd/core"
)

// Sending and the at-most-once rule
//
// Twilio's message creation takes no idempotency key, and core's outbox
// calls Send again when it returned a temporary error or when the gateway
// stopped during the call. A request whose answer was lost (time-out,
// connection reset, 5xx, the gateway killed mid-call) may or may not have
// created the message. So before each create, Send writes a record for the
// outbox item (key: a hash of the stanza's resource, id and recipient) with
// the time of the attempt, and clears that time once Twilio answered. When
// Send finds an attempt time left behind, it does not create again: it
// lists the messages from the user's number to the recipient and takes one
// with the same body created since the attempt (less clock slack) that no
// other send of this account created (the ledger keeps the last SIDs) as
// the one that went out. Only when Twilio's list has no such message and
// the attempt is older than lookupSettle (Twilio lists a message as soon as
// creation returns; the wait covers a request still in flight) does it
// send again. While Twilio cannot be asked, it keeps returning a temporary
// error, so an unanswerable question ends in an error shown to the user,
// never in a second SMS. Each part of a split body is a step of its own, so
// a retry resumes after the parts already created.
//
// The record of a stanza with an id is kept for gcAfterDays, so even a
// retry after Send returned (the gateway died before the outbox noted
// success) returns the same SID without sending. A stanza without an id
// has no stable key across distinct messages: its record is keyed by the
// body and dropped on success, so an identical later message is not taken
// for a retry; only a crash in the instant between Send's return and the
// outbox's commit could then send it twice.
var (
	// lookupSettle is how old an unanswered attempt must be before a
	// listing without it proves it created nothing.
	lookupSettle = 20 * time.Second
	// clockSlack is how much earlier than our attempt Twilio may date the
	// message it created.
	clockSlack = 5 * time.Minute
)

// markerPrefix prefixes send records and partPrefix the mapping of a
// split message's earlier parts to its last one (the SID Send returns).
const (
	markerPrefix = "out:"
	partPrefix   = "part:"
)

// sendRecord is the durable state of one outbox item's send.
type sendRecord struct {
	Since    time.Time `json:"since"`
	Reserved string    `json:"reserved,omitempty"` // UTC day the parts were counted against the cap
	Parts    int       `json:"parts"`
	SIDs     []string  `json:"sids,omitempty"`   // parts created, in order
	Attempt  time.Time `json:"attempt,omitzero"` // an unanswered create of part len(SIDs) started then
	Done     bool      `json:"done,omitempty"`
}

// recordKey names the send record of a message; keep says whether the
// record may outlive the send (see above).
func recordKey(m *core.Message) (key string, keep bool) {
	h := sha256.New()
	if m.XMPPID != "" {
		fmt.Fprintf(h, "id\x00%s\x00%s\x00%s", m.UserResource, m.XMPPID, m.Contact)
		keep = true
	} else {
		fmt.Fprintf(h, "body\x00%s\x00%s\x00%s", m.UserResource, m.Contact, m.Body)
	}
	return markerPrefix + hex.EncodeToString(h.Sum(nil)[:16]), keep
}

func (s *session) loadRecord(ctx context.Context, key string) (*sendRecord, error) {
	v, ok, err := s.sink.Store().Get(ctx, key)
	if err != nil || !ok {
		return nil, err
	}
	r := &sendRecord{}
	if err := json.Unmarshal([]byte(v), r); err != nil {
		return nil, err
	}
	return r, nil
}

func (s *session) saveRecord(ctx context.Context, key string, r *sendRecord) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	return s.sink.Store().Set(ctx, key, string(b))
}

// Send delivers a message to Twilio: destination policy, daily cap, split
// into API-sized parts, rate limit per sending number, and the send record
// that keeps one stanza from becoming two SMS. It returns the SID of the
// last part, which status callbacks confirm.
func (s *session) Send(ctx context.Context, m *core.Message) (string, error) {
	cfg := s.t.conf()
	to, err := cfg.destination(m.Contact)
	if err != nil {
		return "", err
	}
	parts := splitBody(m.Body, maxAPIBody)
	key, keep := recordKey(m)
	rec, err := s.loadRecord(ctx, key)
	if err != nil {
		return "", core.Temporary(err)
	}
	if rec == nil {
		rec = &sendRecord{Since: time.Now(), Parts: len(parts)}
		if err := s.reserve(ctx, key, keep, len(parts), cfg.dailyCap); err != nil {
			return "", err
		}
		rec.Reserved = today()
		// Saved at once, so that a retry (the rate limiter or Twilio
		// said "later") does not count the message against the cap again.
		if err := s.saveRecord(ctx, key, rec); err != nil {
			s.release(ctx, rec, len(parts))
			return "", core.Temporary(err)
		}
	}
	if rec.Done && len(rec.SIDs) > 0 {
		return rec.SIDs[len(rec.SIDs)-1], nil
	}
	if rec.Parts != len(parts) {
		// The splitting changed between versions; the parts created stay,
		// the rest follow the new split.
		rec.Parts = len(parts)
	}
	log := s.sink.Logger()
	bracketed := false
	for i := len(rec.SIDs); i < len(parts); i++ {
		if !rec.Attempt.IsZero() {
			sid, found, err := s.lookup(ctx, to, parts[i], rec.Attempt)
			if err != nil {
				return "", s.askFailed(ctx, err)
			}
			if found {
				log.Info("an interrupted send had reached Twilio; not sending again", "sid", sid, "part", i+1)
				rec.SIDs, rec.Attempt = append(rec.SIDs, sid), time.Time{}
				if err := s.saveRecord(ctx, key, rec); err != nil {
					return "", core.Temporary(err)
				}
				s.noteCreated(ctx, sid)
				continue
			}
			if time.Since(rec.Attempt) < lookupSettle {
				return "", core.Temporary(errors.New("checking with Twilio whether an interrupted send went out"))
			}
			log.Info("an interrupted send never reached Twilio; sending it now", "part", i+1)
		}
		if err := s.limiter.Wait(ctx); err != nil {
			return "", core.Temporary(err)
		}
		rec.Attempt = time.Now()
		if err := s.saveRecord(ctx, key, rec); err != nil {
			return "", core.Temporary(err)
		}
		if !bracketed {
			// From here until Send returns, status callbacks wait.
			s.beginSend()
			defer s.endSend()
			bracketed = true
		}
		sid, ap, err := s.create(ctx, to, parts[i])
		if err != nil {
			return "", s.createFailed(ctx, key, rec, ap, i, len(parts), err)
		}
		rec.SIDs, rec.Attempt = append(rec.SIDs, sid), time.Time{}
		if err := s.saveRecord(ctx, key, rec); err != nil {
			// The next try finds the message by listing.
			return "", core.Temporary(err)
		}
		s.noteCreated(ctx, sid)
	}
	rec.Done = true
	if keep {
		err = s.saveRecord(ctx, key, rec)
	} else {
		err = s.sink.Store().Delete(ctx, key)
	}
	if err != nil {
		log.Warn("cannot close the send record", "error", err)
	}
	last := rec.SIDs[len(rec.SIDs)-1]
	s.finish(ctx, to, m.Body, rec.SIDs)
	return last, nil
}

// reserve counts a message's parts against the daily cap before sending.
func (s *session) reserve(ctx context.Context, key string, keep bool, parts, limit int) error {
	err := s.updateLedger(ctx, func(l *ledger) error {
		if limit > 0 && l.Sent+parts > limit {
			return core.NewError(stanza.PolicyViolation, fmt.Sprintf("not sent: you reached the daily limit of %d SMS (%d sent today); it resets at midnight UTC", limit, l.Sent))
		}
		l.Sent += parts
		if keep {
			l.GC[l.Day] = append(l.GC[l.Day], key)
		}
		return nil
	})
	var ce *core.Error
	if err != nil && !errors.As(err, &ce) {
		return core.Temporary(err)
	}
	return err
}

// release gives back reserved parts that were not sent.
func (s *session) release(ctx context.Context, rec *sendRecord, n int) {
	if n <= 0 {
		return
	}
	_ = s.updateLedger(ctx, func(l *ledger) error {
		if rec.Reserved == l.Day {
			l.Sent = max(0, l.Sent-n)
		}
		return nil
	})
}

// noteCreated adds a SID to the ledger's recent ones.
func (s *session) noteCreated(ctx context.Context, sid string) {
	if err := s.updateLedger(ctx, func(l *ledger) error {
		l.Recent = append(l.Recent, sid)
		return nil
	}); err != nil {
		s.sink.Logger().Warn("cannot note a sent message", "error", err)
	}
}

// finish records what the message cost and maps the earlier parts of a
// split message to its last SID, which core knows.
func (s *session) finish(ctx context.Context, to, body string, sids []string) {
	last := sids[len(sids)-1]
	lm := &lastMessage{To: to, At: time.Now().UTC(), Chars: utf8.RuneCountInString(body), Parts: len(sids), Encoding: GSM7}
	for _, p := range splitBody(body, maxAPIBody) {
		n, enc := Segments(p)
		lm.Segments += n
		if enc == UCS2 {
			lm.Encoding = UCS2
		}
	}
	var keys []string
	for _, sid := range sids[:len(sids)-1] {
		if err := s.sink.Store().Set(ctx, partPrefix+sid, last); err == nil {
			keys = append(keys, partPrefix+sid)
		}
	}
	if err := s.updateLedger(ctx, func(l *ledger) error {
		l.Last = lm
		l.GC[l.Day] = append(l.GC[l.Day], keys...)
		return nil
	}); err != nil {
		s.sink.Logger().Warn("cannot record the message's cost", "error", err)
	}
}

// primary maps the SID of a split message's part to the SID Send returned.
func (s *session) primary(ctx context.Context, sid string) string {
	if v, ok, err := s.sink.Store().Get(ctx, partPrefix+sid); err == nil && ok {
		return v
	}
	return sid
}

// create makes one message. The status callback goes to the gateway.
func (s *session) create(ctx context.Context, to, body string) (string, *api, error) {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	ap := s.api(ctx)
	p := new(openapi.CreateMessageParams).SetFrom(s.number).SetTo(to).SetBody(body)
	if cb := s.t.hookURL(pathStatus); cb != "" {
		p.SetStatusCallback(cb)
	}
	msg, err := ap.CreateMessage(p)
	if err != nil {
		return "", ap, err
	}
	sid := str(msg.Sid)
	if sid == "" {
		return "", ap, errors.New("twilio answered without a message SID")
	}
	return sid, ap, nil
}

// lookup searches Twilio for the message an unanswered create of body to
// to may have made since attempt.
func (s *session) lookup(ctx context.Context, to, body string, attempt time.Time) (string, bool, error) {
	l, err := s.readLedger(ctx)
	if err != nil {
		return "", false, err
	}
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	ap := s.api(ctx)
	list, err := ap.ListMessage(new(openapi.ListMessageParams).SetFrom(s.number).SetTo(to).SetLimit(50))
	if err != nil {
		return "", false, err
	}
	for _, m := range list {
		sid := str(m.Sid)
		if sid == "" || str(m.Direction) == "inbound" || slices.Contains(l.Recent, sid) {
			continue
		}
		if c := twilioTime(m.DateCreated); !c.IsZero() && c.Before(attempt.Add(-clockSlack)) {
			continue
		}
		// A trial account prefixes the body; the rest is ours.
		if b := str(m.Body); b == body || strings.HasSuffix(b, body) {
			return sid, true, nil
		}
	}
	return "", false, nil
}

// askFailed is the error of a lookup that could not be made: temporary,
// unless the credentials are refused.
func (s *session) askFailed(ctx context.Context, err error) error {
	ap := s.api(ctx)
	if ap.classify(err) == kindAuth {
		return core.WrapError(stanza.NotAuthorized, errBadCredentials+"; register again (not sent)", err)
	}
	return core.Temporary(err)
}

// createFailed decides what a failed create means: retry later (and ask
// first, when Twilio may have acted), or tell the user.
func (s *session) createFailed(ctx context.Context, key string, rec *sendRecord, ap *api, i, n int, err error) error {
	kind := ap.classify(err)
	if kind == kindUnknown {
		// The record keeps the attempt time: the next try asks Twilio
		// before it creates anything.
		s.sink.Logger().Info("twilio did not answer a send; will ask before retrying", "error", err)
		return core.Temporary(err)
	}
	rec.Attempt = time.Time{}
	if kind == kindBusy {
		if serr := s.saveRecord(ctx, key, rec); serr != nil {
			return core.Temporary(serr)
		}
		return core.Temporary(core.WrapError(stanza.ResourceConstraint, "Twilio asks to slow down", err))
	}
	s.release(ctx, rec, n-i)
	if i == 0 {
		_ = s.sink.Store().Delete(ctx, key)
	} else {
		rec.Done = true
		_ = s.saveRecord(ctx, key, rec)
	}
	var e *core.Error
	if kind == kindAuth {
		e = core.WrapError(stanza.NotAuthorized, errBadCredentials+"; register again (not sent)", err)
	} else {
		tre, _ := ap.restError(err)
		e = refusal(tre.Code, tre.Message)
		e.Err = err
	}
	if i > 0 {
		e.Text = fmt.Sprintf("%s (parts 1 to %d of %d were sent)", e.Text, i, n)
	}
	return e
}

// refusal is the error shown for a message Twilio refused at creation.
func refusal(code int, message string) *core.Error {
	cond := stanza.NotAcceptable
	switch code {
	case 21211, 21614, 21217:
		cond = stanza.ItemNotFound
	case 21610, 21408, 21612, 21606, 21266:
		cond = stanza.NotAllowed
	case 21611:
		cond = stanza.ResourceConstraint
	}
	text := oneLine(message)
	if known, ok := twilioErrors[code]; ok && text == "" {
		text = known
	}
	return core.NewError(cond, fmt.Sprintf("Twilio error %d: %s", code, text))
}

// twilioErrors are the texts of the error codes status callbacks carry
// (they carry no text of their own).
var twilioErrors = map[int]string{
	21211: "Invalid 'To' phone number",
	21408: "Permission to send an SMS has not been enabled for the region",
	21610: "The recipient has unsubscribed from your number (replied STOP)",
	21611: "Too many messages queued for this 'From' number",
	21612: "The 'To' number cannot be reached by SMS from this 'From' number",
	21614: "'To' number is not a valid mobile number",
	30001: "Queue overflow",
	30002: "Account suspended",
	30003: "Unreachable destination handset",
	30004: "Message blocked",
	30005: "Unknown destination handset",
	30006: "Landline or unreachable carrier",
	30007: "Message filtered by the carrier",
	30008: "Unknown error",
	30009: "Missing segment",
	30010: "Message price exceeds max price",
	30034: "Message from an unregistered number",
}

// beginSend and endSend bracket creates for waitSends.
func (s *session) beginSend() {
	s.sendMu.Lock()
	s.sending++
	s.sendMu.Unlock()
}

func (s *session) endSend() {
	s.sendMu.Lock()
	s.sending--
	s.lastSend = time.Now()
	s.sendMu.Unlock()
}

// sendQuiet is how long after a send returned a status callback waits:
// core stores the receipt request and ID mapping right after Send returns.
const sendQuiet = 300 * time.Millisecond

// waitSends holds a status callback while a send of this session is under
// way or just returned, at most a few seconds.
func (s *session) waitSends(ctx context.Context) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		s.sendMu.Lock()
		busy := s.sending > 0 || time.Since(s.lastSend) < sendQuiet
		s.sendMu.Unlock()
		if !busy {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}
