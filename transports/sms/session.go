package sms

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	openapi "github.com/twilio/twilio-go/rest/api/v2010"
	"golang.org/x/time/rate"

	"transportd/core"
)

// Timings of a session; variables so that tests can shorten them.
var (
	backoffMin = time.Second
	backoffMax = 5 * time.Minute
	// reconcileEvery is how often a connected session checks the number
	// and lists the SMS received since the last look, which catches what
	// a lost webhook did not bring.
	reconcileEvery = 10 * time.Minute
	// reconcileOverlap is how far before the last look a listing starts,
	// against clock skew between Twilio and us; core's outbox drops what
	// was already delivered (MessageSid is the idempotency key).
	reconcileOverlap = 15 * time.Minute
	// reconcileMaxAge bounds the look back after a long outage: it stays
	// inside core's seven-day de-duplication window.
	reconcileMaxAge = 6 * 24 * time.Hour
	// reconcileLimit caps the messages one listing delivers.
	reconcileLimit = 1000
)

// maxMedia caps the attachments taken from one MMS (Twilio sends at most 10).
const maxMedia = 10

// session is one registered number.
type session struct {
	t       *Transport
	a       *core.Account
	sink    core.Sink
	number  string // E.164
	creds   creds
	limiter *rate.Limiter // per sending number, shared with later sessions
	seq     uint64        // creation number (Transport.attach)

	// mu serialises read-modify-write of the ledger in the state store
	// (daily count, recent SIDs); sends to different contacts run at once.
	mu sync.Mutex

	// sending counts creates under way and lastSend is when the last one
	// returned: a status callback waits for both, so that core has stored
	// what it needs (the receipt request, the ID mapping) before the
	// callback asks for it.
	sendMu   sync.Mutex
	sending  int
	lastSend time.Time
}

func (s *session) api(ctx context.Context) *api { return s.t.api(ctx, s.creds) }

// stateError is a failed check: bad means retrying cannot help until the
// user registers again.
type stateError struct {
	bad  bool
	text string
	err  error
}

func (e *stateError) Error() string {
	if e.err != nil {
		return e.text + ": " + e.err.Error()
	}
	return e.text
}

func (e *stateError) Unwrap() error { return e.err }

// apiStateError classifies an API failure of Run.
func apiStateError(ctx context.Context, ap *api, err error) error {
	if ap.classify(err) == kindAuth {
		return &stateError{bad: true, text: errBadCredentials, err: err}
	}
	text := "Twilio is not available"
	var ce *core.Error
	if errors.As(ap.userError(ctx, err), &ce) {
		text = ce.Text
	}
	return &stateError{text: text, err: err}
}

// Run checks the number with Twilio, reports connected, and then every
// reconcileEvery checks again and delivers SMS that arrived without a
// webhook (the gateway was down, a webhook was lost). Transient failures
// are retried with capped, jittered backoff; refused credentials or a
// number gone from the account end Run.
func (s *session) Run(ctx context.Context) {
	log := s.sink.Logger()
	s.t.attach(s)
	defer s.t.detach(s)
	delay := backoffMin
	connected := false
	for {
		err := s.check(ctx)
		if err == nil {
			if !connected {
				s.sink.State(core.StateConnected, "")
				connected = true
			}
			err = s.reconcile(ctx)
		}
		if ctx.Err() != nil {
			return
		}
		wait := reconcileEvery
		if err != nil {
			var se *stateError
			if errors.As(err, &se) && se.bad {
				log.Warn("twilio refused the registration", "error", err)
				s.sink.State(core.StateBadCredentials, se.text)
				return
			}
			text := "cannot check for missed SMS"
			if se != nil {
				text = se.text
			}
			log.Warn("twilio check failed, will retry", "error", err, "retry_in", delay)
			s.sink.State(core.StateTransientFail, text)
			connected = false
			wait = delay/2 + rand.N(delay/2+1)
			delay = min(delay*2, backoffMax)
		} else {
			delay = backoffMin
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// check proves the credentials and that the number is still the account's,
// and points its webhook back at the gateway if someone moved it.
func (s *session) check(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	ap := s.api(ctx)
	pn, err := ap.findNumber(s.number)
	if err != nil {
		return apiStateError(ctx, ap, err)
	}
	if pn == nil {
		return &stateError{bad: true, text: s.number + " is no longer a number of the Twilio account " + s.creds.SID + "; register again"}
	}
	if hook := s.t.hookURL(pathIncoming); hook != "" {
		changed, err := ap.ensureWebhook(pn, hook)
		switch {
		case err != nil:
			s.sink.Logger().Warn("cannot point the number's SMS webhook at the gateway", "error", err)
		case changed:
			s.sink.Logger().Info("the number's SMS webhook pointed elsewhere; set it back to the gateway")
		}
	}
	return nil
}

// keyCursor holds the time of the last listing of received SMS (RFC 3339).
const keyCursor = "in:cursor"

// reconcile lists the SMS received since the last look and delivers them;
// core drops those a webhook already brought. The first run of an account
// only records the time: history from before the registration is not
// replayed.
func (s *session) reconcile(ctx context.Context) error {
	st := s.sink.Store()
	now := time.Now().UTC()
	cur, ok, err := st.Get(ctx, keyCursor)
	if err != nil {
		return err
	}
	if !ok {
		return st.Set(ctx, keyCursor, now.Format(time.RFC3339))
	}
	since, err := time.Parse(time.RFC3339, cur)
	if err != nil {
		since = now
	}
	since = since.Add(-reconcileOverlap)
	if floor := now.Add(-reconcileMaxAge); since.Before(floor) {
		since = floor
	}
	lctx, cancel := context.WithTimeout(ctx, 2*apiTimeout)
	defer cancel()
	ap := s.api(lctx)
	list, err := ap.ListMessage(new(openapi.ListMessageParams).SetTo(s.number).SetDateSentAfter(since).SetLimit(reconcileLimit))
	if err != nil {
		return apiStateError(lctx, ap, err)
	}
	if len(list) >= reconcileLimit {
		s.sink.Logger().Warn("more SMS received during the outage than one listing takes; the oldest are not delivered", "limit", reconcileLimit)
	}
	// Twilio lists newest first; oldest first is the order to deliver in,
	// ties (dates are to the second) kept in Twilio's order.
	var in []openapi.ApiV2010Message
	for _, m := range slices.Backward(list) {
		if str(m.Direction) == "inbound" && str(m.Sid) != "" && str(m.From) != "" {
			in = append(in, m)
		}
	}
	sort.SliceStable(in, func(i, j int) bool { return twilioTime(in[i].DateSent).Before(twilioTime(in[j].DateSent)) })
	for _, m := range in {
		msg := &core.Message{Contact: str(m.From), Body: str(m.Body), LegacyID: str(m.Sid), Time: twilioTime(m.DateSent)}
		var media []core.Attachment
		if n, _ := strconv.Atoi(str(m.NumMedia)); n > 0 {
			ml, err := ap.ListMedia(str(m.Sid), new(openapi.ListMediaParams).SetLimit(maxMedia))
			if err != nil {
				return apiStateError(lctx, ap, err)
			}
			for _, md := range ml {
				uri := strings.TrimSuffix(str(md.Uri), ".json")
				if uri == "" {
					continue
				}
				u := *ap.base
				u.Path = strings.TrimSuffix(u.Path, "/") + uri
				media = append(media, core.Attachment{URL: u.String(), Type: str(md.ContentType)})
			}
		}
		if err := s.deliver(ctx, msg, media); err != nil {
			return err
		}
	}
	if len(in) > 0 {
		s.sink.Logger().Debug("reconciled received SMS", "listed", len(in), "since", since)
	}
	return st.Set(ctx, keyCursor, now.Format(time.RFC3339))
}

// deliver hands a received SMS or MMS to core: the text as one message
// (LegacyID = MessageSid), then each picture as a message of its own whose
// body is the media URL, carried as an attachment too (XEP-0066): clients
// show such a message inline. Every part has its own idempotency key, so a
// replay or a reconciliation delivers nothing twice.
func (s *session) deliver(ctx context.Context, m *core.Message, media []core.Attachment) error {
	if m.Body != "" || len(media) == 0 {
		if err := s.sink.Deliver(ctx, m); err != nil {
			return err
		}
	}
	for i, at := range media {
		mm := *m
		mm.Body = at.URL
		mm.LegacyID = m.LegacyID + "/media" + strconv.Itoa(i)
		mm.Attachments = []core.Attachment{at}
		if err := s.sink.Deliver(ctx, &mm); err != nil {
			return err
		}
	}
	return nil
}
