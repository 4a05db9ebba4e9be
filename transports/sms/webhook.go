package sms

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/twilio/twilio-go/client"
	"mellium.im/xmpp/stanza"

	"transportd/core"
)

// maxWebhookBytes caps a webhook's body; Twilio's are a few KiB.
const maxWebhookBytes = 64 << 10

// emptyTwiML answers a webhook: nothing to reply by SMS.
const emptyTwiML = `<?xml version="1.0" encoding="UTF-8"?><Response/>`

// msgSIDRE is the shape of a message SID (SM..., MM...): letters and digits.
var msgSIDRE = regexp.MustCompile(`^[A-Z]{2}[0-9A-Za-z]{8,62}$`)

// webhookError is a refused webhook: the HTTP status and what the log says.
type webhookError struct {
	status int
	msg    string
}

func (e *webhookError) Error() string { return e.msg }

func refuse(status int, format string, args ...any) *webhookError {
	return &webhookError{status: status, msg: fmt.Sprintf(format, args...)}
}

func (t *Transport) serveIncoming(w http.ResponseWriter, r *http.Request) {
	t.serveWebhook(w, r, pathIncoming)
}

func (t *Transport) serveStatus(w http.ResponseWriter, r *http.Request) {
	t.serveWebhook(w, r, pathStatus)
}

// serveWebhook authenticates a Twilio webhook and acts on it. It answers
// 200 with empty TwiML only once core has committed what the webhook
// brought, so Twilio's record of a delivered webhook means it is safe here.
func (t *Transport) serveWebhook(w http.ResponseWriter, r *http.Request, path string) {
	log := t.logger().With("webhook", path[1:], "remote", r.RemoteAddr)
	form, s, err := t.authenticate(w, r, path)
	if err != nil {
		var we *webhookError
		if !errors.As(err, &we) {
			we = refuse(http.StatusBadRequest, "%v", err)
		}
		if we.status == http.StatusForbidden {
			log.Warn("webhook refused", "status", we.status, "reason", we.msg)
		} else {
			log.Info("webhook refused", "status", we.status, "reason", we.msg)
		}
		http.Error(w, http.StatusText(we.status), we.status)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
	defer cancel()
	if path == pathIncoming {
		err = s.incoming(ctx, form)
	} else {
		err = s.status(ctx, form)
	}
	if err != nil {
		var we *webhookError
		if errors.As(err, &we) {
			log.Info("webhook refused", "status", we.status, "reason", we.msg)
			http.Error(w, http.StatusText(we.status), we.status)
			return
		}
		// Not committed: Twilio may retry (or reconciliation will find it).
		log.Error("webhook not taken", "error", err)
		http.Error(w, http.StatusText(http.StatusServiceUnavailable), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = io.WriteString(w, emptyTwiML)
}

// authenticate reads a webhook and proves it comes from Twilio for a
// registered number: POST, at most maxWebhookBytes, every parameter once,
// the number known, and X-Twilio-Signature valid for the URL rebuilt from
// the configured public URL (never from Host or X-Forwarded-* headers)
// under that number's account token. Errors are *webhookError.
func (t *Transport) authenticate(w http.ResponseWriter, r *http.Request, path string) (url.Values, *session, error) {
	if r.Method != http.MethodPost {
		return nil, nil, refuse(http.StatusMethodNotAllowed, "method %s", r.Method)
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxWebhookBytes)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, nil, refuse(http.StatusRequestEntityTooLarge, "body over %d bytes", maxWebhookBytes)
		}
		return nil, nil, refuse(http.StatusBadRequest, "unreadable form: %v", err)
	}
	form := r.PostForm
	for k, v := range form {
		if len(v) != 1 {
			return nil, nil, refuse(http.StatusBadRequest, "parameter %q given %d times", k, len(v))
		}
	}
	// Incoming SMS are for their To number; status callbacks for the
	// message's From, our user's number.
	param := "To"
	if path == pathStatus {
		param = "From"
	}
	number := form.Get(param)
	if number == "" {
		return nil, nil, refuse(http.StatusBadRequest, "no %s parameter", param)
	}
	s := t.sessionByNumber(number)
	if s == nil {
		return nil, nil, refuse(http.StatusNotFound, "no registered number %s", number)
	}
	u := t.hookURL(path)
	if u == "" {
		return nil, nil, refuse(http.StatusForbidden, "no public URL to check the signature against")
	}
	if r.URL.RawQuery != "" {
		u += "?" + r.URL.RawQuery
	}
	sig := r.Header.Get("X-Twilio-Signature")
	params := make(map[string]string, len(form))
	for k, v := range form {
		params[k] = v[0]
	}
	rv := client.NewRequestValidator(s.creds.Token)
	if sig == "" || !rv.Validate(u, params, sig) {
		return nil, nil, refuse(http.StatusForbidden, "X-Twilio-Signature missing or wrong for %s", number)
	}
	if form.Get("AccountSid") != s.creds.SID {
		return nil, nil, refuse(http.StatusForbidden, "signed for another account than %s's", number)
	}
	return form, s, nil
}

// incoming delivers a received SMS or MMS.
func (s *session) incoming(ctx context.Context, form url.Values) error {
	sid := form.Get("MessageSid")
	if !msgSIDRE.MatchString(sid) {
		return refuse(http.StatusBadRequest, "no valid MessageSid")
	}
	from := form.Get("From")
	if from == "" {
		return refuse(http.StatusBadRequest, "no From")
	}
	n, _ := strconv.Atoi(form.Get("NumMedia"))
	n = min(max(n, 0), maxMedia)
	var media []core.Attachment
	for i := range n {
		u := form.Get("MediaUrl" + strconv.Itoa(i))
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "https" && pu.Scheme != "http") || pu.Host == "" {
			continue
		}
		media = append(media, core.Attachment{URL: u, Type: form.Get("MediaContentType" + strconv.Itoa(i))})
	}
	m := &core.Message{Contact: from, Body: form.Get("Body"), LegacyID: sid}
	if err := s.deliver(ctx, m, media); err != nil {
		return err
	}
	s.sink.Logger().Debug("sms received", "sid", sid, "media", len(media))
	return nil
}

// status turns a delivery status callback into a receipt or an error.
func (s *session) status(ctx context.Context, form url.Values) error {
	sid := form.Get("MessageSid")
	if !msgSIDRE.MatchString(sid) {
		return refuse(http.StatusBadRequest, "no valid MessageSid")
	}
	st := form.Get("MessageStatus")
	if st == "" {
		st = form.Get("SmsStatus")
	}
	to := form.Get("To")
	switch st {
	case "delivered":
		s.waitSends(ctx)
		return s.sink.Receipt(ctx, to, s.primary(ctx, sid))
	case "failed", "undelivered":
		s.waitSends(ctx)
		code, _ := strconv.Atoi(form.Get("ErrorCode"))
		s.sink.Logger().Info("twilio reports a message not delivered", "sid", sid, "status", st, "code", code)
		derr := deliveryError(st, code)
		// Core turns this into a message error to the client that sent it.
		return s.sink.Failed(ctx, to, s.primary(ctx, sid), derr)
	}
	return nil
}

// deliveryError is what the user sees of a message Twilio could not deliver.
func deliveryError(status string, code int) *core.Error {
	if code == 0 {
		return core.NewError(stanza.RecipientUnavailable, "Twilio reports the message as "+status)
	}
	text, ok := twilioErrors[code]
	if !ok {
		text = "message " + status
	}
	cond := stanza.RecipientUnavailable
	switch code {
	case 21610, 21408, 30004, 30007, 30034:
		cond = stanza.NotAllowed
	case 30001, 30002, 30010:
		cond = stanza.ServiceUnavailable
	}
	return core.NewError(cond, fmt.Sprintf("Twilio error %d: %s", code, text))
}
