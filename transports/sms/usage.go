package sms

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"transportd/core"
	"transportd/registration"
)

// keyLedger holds an account's ledger in its state store.
const keyLedger = "ledger"

// Ledger bounds.
const (
	// recentSIDs is how many SIDs of created messages the ledger keeps, so
	// that the search after an interrupted send does not take a message
	// another send created for the one it looks for.
	recentSIDs = 200
	// gcAfterDays is how long send records and part mappings are kept:
	// longer than an outbox item waits for a session to come back.
	gcAfterDays = 3
)

// ledger is an account's sending book-keeping, one JSON value.
type ledger struct {
	Day    string              `json:"day"`  // UTC date Sent counts
	Sent   int                 `json:"sent"` // messages sent (or reserved) on Day
	Recent []string            `json:"recent,omitempty"`
	GC     map[string][]string `json:"gc,omitempty"` // state keys to delete, by the UTC date written
	Last   *lastMessage        `json:"last,omitempty"`
}

// lastMessage is what the Usage command shows of the last message sent.
type lastMessage struct {
	To       string    `json:"to"`
	At       time.Time `json:"at"`
	Chars    int       `json:"chars"`
	Parts    int       `json:"parts"`    // API messages
	Segments int       `json:"segments"` // SMS segments billed, all parts
	Encoding Encoding  `json:"encoding"`
}

func today() string { return time.Now().UTC().Format(time.DateOnly) }

// updateLedger applies f to the account's ledger under s.mu: it rolls the
// daily count over at midnight UTC and deletes expired records first.
func (s *session) updateLedger(ctx context.Context, f func(l *ledger) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.sink.Store()
	l, err := s.readLedgerLocked(ctx)
	if err != nil {
		return err
	}
	if day := today(); l.Day != day {
		l.Day, l.Sent = day, 0
	}
	cutoff := time.Now().UTC().AddDate(0, 0, -gcAfterDays).Format(time.DateOnly)
	for day, keys := range l.GC {
		if day >= cutoff {
			continue
		}
		for _, k := range keys {
			if err := st.Delete(ctx, k); err != nil {
				return err
			}
		}
		delete(l.GC, day)
	}
	if err := f(l); err != nil {
		return err
	}
	if len(l.Recent) > recentSIDs {
		l.Recent = slices.Clone(l.Recent[len(l.Recent)-recentSIDs:])
	}
	b, err := json.Marshal(l)
	if err != nil {
		return err
	}
	return st.Set(ctx, keyLedger, string(b))
}

func (s *session) readLedger(ctx context.Context) (*ledger, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readLedgerLocked(ctx)
}

func (s *session) readLedgerLocked(ctx context.Context) (*ledger, error) {
	l := &ledger{}
	v, ok, err := s.sink.Store().Get(ctx, keyLedger)
	if err != nil {
		return nil, err
	}
	if ok {
		if err := json.Unmarshal([]byte(v), l); err != nil {
			s.sink.Logger().Warn("sms ledger unreadable, starting a new one", "error", err)
			l = &ledger{}
		}
	}
	if l.GC == nil {
		l.GC = map[string][]string{}
	}
	return l, nil
}

// Commands adds "Usage": what the user sent today against the daily cap, and
// what the last message cost in SMS segments and which encoding it took.
func (t *Transport) Commands() []core.Command {
	return []core.Command{{Node: "usage", Name: "Usage", Registered: true, Execute: t.usage}}
}

func (t *Transport) usage(ctx context.Context, req *core.CommandRequest) *core.CommandResponse {
	s := t.sessionByJID(req.Account.JID)
	if s == nil {
		return &core.CommandResponse{Note: "Your SMS session is not running (see Status); usage is unknown until it is.", NoteType: "warn"}
	}
	l, err := s.readLedger(ctx)
	if err != nil {
		return &core.CommandResponse{Err: err}
	}
	sent := 0
	if l.Day == today() {
		sent = l.Sent
	}
	limit := t.conf().dailyCap
	capText := "no daily limit"
	if limit > 0 {
		capText = fmt.Sprintf("of %d allowed", limit)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Sent today (UTC): %d %s.", sent, capText)
	vals := registration.Values{"number": s.number, "sent_today": strconv.Itoa(sent), "daily_cap": strconv.Itoa(limit)}
	fields := []registration.Field{
		{Var: "number", Label: "Your number", Type: registration.TextSingle},
		{Var: "sent_today", Label: "Messages sent today (UTC)", Type: registration.TextSingle},
		{Var: "daily_cap", Label: "Daily limit (0: none)", Type: registration.TextSingle},
	}
	if last := l.Last; last != nil {
		fmt.Fprintf(&b, "\nLast message: to %s at %s, %d characters, %d SMS segment(s) in %s", last.To, last.At.UTC().Format(time.RFC3339), last.Chars, last.Segments, last.Encoding)
		if last.Parts > 1 {
			fmt.Fprintf(&b, ", sent as %d messages (the API takes %d characters at most)", last.Parts, maxAPIBody)
		}
		b.WriteString(".")
		if last.Encoding == UCS2 {
			b.WriteString(" Characters outside the GSM alphabet (emoji, most accents) make a segment hold 70 characters instead of 160.")
		}
		fields = append(fields,
			registration.Field{Var: "last_to", Label: "Last message to", Type: registration.TextSingle},
			registration.Field{Var: "last_segments", Label: "Last message: SMS segments", Type: registration.TextSingle},
			registration.Field{Var: "last_encoding", Label: "Last message: encoding", Type: registration.TextSingle},
			registration.Field{Var: "last_parts", Label: "Last message: API messages", Type: registration.TextSingle},
		)
		vals["last_to"] = last.To
		vals["last_segments"] = strconv.Itoa(last.Segments)
		vals["last_encoding"] = string(last.Encoding)
		vals["last_parts"] = strconv.Itoa(last.Parts)
	}
	return &core.CommandResponse{Note: b.String(), Result: registration.ResultForm("SMS usage", fields, vals)}
}
