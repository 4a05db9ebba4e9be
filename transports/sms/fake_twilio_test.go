package sms

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

// fakeTwilio is an in-process stand-in for the parts of Twilio's 2010 REST
// API the transport uses, reached through the real twilio-go client. It
// checks Basic auth against its accounts and signs the webhooks it sends
// the way Twilio does.
type fakeTwilio struct {
	t   testing.TB
	srv *httptest.Server

	mu       sync.Mutex
	accounts map[string]string // SID → auth token
	numbers  []*fakeNumber
	messages []*fakeMessage // in creation order
	seq      int
	creates  int // create requests seen, successful or not
	// onCreate, if set, decides the fate of the n-th create (1-based)
	// once the message is known: see fakeAction.
	onCreate func(n int, m *fakeMessage) fakeAction
	// failChecks makes that many IncomingPhoneNumbers listings answer 500.
	failChecks int
	// refuseTo maps a To number to the Twilio error code its creation gets.
	refuseTo map[string]int
	// released unblocks hanging creates.
	released chan struct{}
}

// fakeAction is what the fake does with a create request.
type fakeAction int

const (
	createOK      fakeAction = iota
	create429                // 429 Too Many Requests, nothing created
	create500                // 500, nothing created
	createHang               // the message is created, the answer never comes
	createDropped            // the message is created, the connection is cut
)

type fakeNumber struct {
	Sid, Account, Phone, SmsURL, SmsMethod string
}

type fakeMessage struct {
	Sid, Account, From, To, Body string
	Status, Direction            string
	StatusCallback               string
	Created, Sent                time.Time
	Media                        []fakeMedia
}

type fakeMedia struct {
	Sid, Type string
}

func newFakeTwilio(t testing.TB) *fakeTwilio {
	f := &fakeTwilio{t: t, accounts: map[string]string{}, refuseTo: map[string]int{}, released: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(func() {
		f.release()
		f.srv.CloseClientConnections()
		f.srv.Close()
	})
	return f
}

// release lets hanging creates finish (with a connection reset).
func (f *fakeTwilio) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.released:
	default:
		close(f.released)
	}
}

func randomHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// addAccount creates an account and returns its SID and token.
func (f *fakeTwilio) addAccount() (sid, token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	sid, token = "AC"+randomHex(32), randomHex(32)
	f.accounts[sid] = token
	return sid, token
}

func (f *fakeTwilio) addNumber(account, phone string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.numbers = append(f.numbers, &fakeNumber{Sid: "PN" + randomHex(32), Account: account, Phone: phone})
}

func (f *fakeTwilio) number(phone string) fakeNumber {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.numbers {
		if n.Phone == phone {
			return *n
		}
	}
	return fakeNumber{}
}

// sent returns copies of the outbound messages, in creation order.
func (f *fakeTwilio) sent() []fakeMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeMessage
	for _, m := range f.messages {
		if m.Direction == "outbound-api" {
			out = append(out, *m)
		}
	}
	return out
}

func (f *fakeTwilio) createCount() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.creates
}

// waitSent waits until at least n messages were created.
func (f *fakeTwilio) waitSent(n int, timeout time.Duration) []fakeMessage {
	f.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		s := f.sent()
		if len(s) >= n {
			return s
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("fake twilio: %d messages created, want %d", len(s), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func twilioError(w http.ResponseWriter, status, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{
		"code": code, "message": msg, "more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), "status": status,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (f *fakeTwilio) serve(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	f.mu.Lock()
	token, known := f.accounts[user]
	f.mu.Unlock()
	if !ok || !known || !hmac.Equal([]byte(token), []byte(pass)) {
		twilioError(w, 401, 20003, "Authenticate")
		return
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/2010-04-01/Accounts/")
	if !ok {
		twilioError(w, 404, 20404, "The requested resource was not found")
		return
	}
	seg := strings.Split(rest, "/")
	acct := strings.TrimSuffix(seg[0], ".json")
	if acct != user {
		twilioError(w, 403, 20003, "Authenticate")
		return
	}
	_ = r.ParseForm()
	switch {
	case len(seg) == 1 && r.Method == http.MethodGet:
		writeJSON(w, 200, map[string]any{"sid": acct, "status": "active", "friendly_name": "test"})
	case len(seg) == 2 && seg[1] == "IncomingPhoneNumbers.json" && r.Method == http.MethodGet:
		f.listNumbers(w, r, acct)
	case len(seg) == 3 && seg[1] == "IncomingPhoneNumbers" && r.Method == http.MethodPost:
		f.updateNumber(w, r, acct, strings.TrimSuffix(seg[2], ".json"))
	case len(seg) == 2 && seg[1] == "Messages.json" && r.Method == http.MethodPost:
		f.createMessage(w, r, acct)
	case len(seg) == 2 && seg[1] == "Messages.json" && r.Method == http.MethodGet:
		f.listMessages(w, r, acct)
	case len(seg) == 3 && seg[1] == "Messages" && r.Method == http.MethodGet:
		f.mu.Lock()
		defer f.mu.Unlock()
		for _, m := range f.messages {
			if m.Account == acct && m.Sid == strings.TrimSuffix(seg[2], ".json") {
				writeJSON(w, 200, f.messageJSON(m))
				return
			}
		}
		twilioError(w, 404, 20404, "The requested resource was not found")
	case len(seg) == 4 && seg[1] == "Messages" && seg[3] == "Media.json" && r.Method == http.MethodGet:
		f.listMedia(w, acct, seg[2])
	default:
		twilioError(w, 404, 20404, "The requested resource was not found")
	}
}

func (f *fakeTwilio) listNumbers(w http.ResponseWriter, r *http.Request, acct string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failChecks > 0 {
		f.failChecks--
		twilioError(w, 500, 20500, "Internal Server Error")
		return
	}
	want := r.Form.Get("PhoneNumber")
	list := []map[string]any{}
	for _, n := range f.numbers {
		if n.Account == acct && (want == "" || n.Phone == want) {
			list = append(list, map[string]any{
				"sid": n.Sid, "account_sid": n.Account, "phone_number": n.Phone,
				"sms_url": n.SmsURL, "sms_method": n.SmsMethod,
			})
		}
	}
	writeJSON(w, 200, map[string]any{"incoming_phone_numbers": list, "page": 0, "page_size": 50})
}

func (f *fakeTwilio) updateNumber(w http.ResponseWriter, r *http.Request, acct, sid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.numbers {
		if n.Account == acct && n.Sid == sid {
			if v := r.PostForm.Get("SmsUrl"); v != "" {
				n.SmsURL = v
			}
			if v := r.PostForm.Get("SmsMethod"); v != "" {
				n.SmsMethod = v
			}
			writeJSON(w, 200, map[string]any{"sid": n.Sid, "phone_number": n.Phone, "sms_url": n.SmsURL, "sms_method": n.SmsMethod})
			return
		}
	}
	twilioError(w, 404, 20404, "The requested resource was not found")
}

func (f *fakeTwilio) messageJSON(m *fakeMessage) map[string]any {
	var sent any
	if !m.Sent.IsZero() {
		sent = m.Sent.UTC().Format(time.RFC1123Z)
	}
	return map[string]any{
		"sid": m.Sid, "account_sid": m.Account, "from": m.From, "to": m.To, "body": m.Body,
		"status": m.Status, "direction": m.Direction, "num_media": strconv.Itoa(len(m.Media)),
		"num_segments": "1", "date_created": m.Created.UTC().Format(time.RFC1123Z), "date_sent": sent,
		"uri": "/2010-04-01/Accounts/" + m.Account + "/Messages/" + m.Sid + ".json", "api_version": "2010-04-01",
	}
}

func (f *fakeTwilio) createMessage(w http.ResponseWriter, r *http.Request, acct string) {
	f.mu.Lock()
	f.creates++
	n := f.creates
	from, to, body := r.PostForm.Get("From"), r.PostForm.Get("To"), r.PostForm.Get("Body")
	owned := false
	for _, num := range f.numbers {
		owned = owned || num.Account == acct && num.Phone == from
	}
	code := f.refuseTo[to]
	f.mu.Unlock()
	switch {
	case !owned:
		twilioError(w, 400, 21606, "The From phone number "+from+" is not a valid, SMS-capable inbound phone number or short code for your account.")
		return
	case to == "" || !strings.HasPrefix(to, "+"):
		twilioError(w, 400, 21211, "The 'To' number "+to+" is not a valid phone number.")
		return
	case code != 0:
		twilioError(w, 400, code, "Attempt to send to unsubscribed recipient")
		return
	case utf8.RuneCountInString(body) > 1600:
		twilioError(w, 400, 21617, "The concatenated message body exceeds the 1600 character limit.")
		return
	}
	m := &fakeMessage{
		Sid: "SM" + randomHex(32), Account: acct, From: from, To: to, Body: body,
		Status: "queued", Direction: "outbound-api", StatusCallback: r.PostForm.Get("StatusCallback"),
		Created: time.Now(),
	}
	action := createOK
	if f.onCreate != nil {
		action = f.onCreate(n, m)
	}
	switch action {
	case create429:
		twilioError(w, 429, 20429, "Too Many Requests")
		return
	case create500:
		twilioError(w, 500, 20500, "Internal Server Error")
		return
	}
	f.mu.Lock()
	f.messages = append(f.messages, m)
	js := f.messageJSON(m)
	f.mu.Unlock()
	switch action {
	case createHang:
		select {
		case <-r.Context().Done():
		case <-f.released:
		}
		hijackClose(w)
		return
	case createDropped:
		hijackClose(w)
		return
	}
	writeJSON(w, 201, js)
}

// hijackClose cuts the connection without an answer.
func hijackClose(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
		}
	}
}

func (f *fakeTwilio) listMessages(w http.ResponseWriter, r *http.Request, acct string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	q := r.Form
	var after time.Time
	if v := q.Get("DateSent>"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			t, err = time.Parse(time.DateOnly, v)
		}
		if err != nil {
			twilioError(w, 400, 20001, "Invalid DateSent")
			return
		}
		after = t
	}
	var list []*fakeMessage
	for _, m := range f.messages {
		if m.Account != acct || q.Get("To") != "" && m.To != q.Get("To") || q.Get("From") != "" && m.From != q.Get("From") {
			continue
		}
		if !after.IsZero() && (m.Sent.IsZero() || m.Sent.Before(after)) {
			continue
		}
		list = append(list, m)
	}
	sort.SliceStable(list, func(i, j int) bool { return list[i].Created.After(list[j].Created) })
	size, _ := strconv.Atoi(q.Get("PageSize"))
	if size <= 0 || size > 1000 {
		size = 50
	}
	page, _ := strconv.Atoi(q.Get("Page"))
	start := min(page*size, len(list))
	end := min(start+size, len(list))
	out := []map[string]any{}
	for _, m := range list[start:end] {
		out = append(out, f.messageJSON(m))
	}
	resp := map[string]any{"messages": out, "page": page, "page_size": size, "start": start, "end": end}
	if end < len(list) {
		next := url.Values{}
		for k, v := range q {
			next[k] = slices.Clone(v)
		}
		next.Set("Page", strconv.Itoa(page+1))
		next.Set("PageSize", strconv.Itoa(size))
		resp["next_page_uri"] = r.URL.Path + "?" + next.Encode()
	}
	writeJSON(w, 200, resp)
}

func (f *fakeTwilio) listMedia(w http.ResponseWriter, acct, msgSid string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := []map[string]any{}
	for _, m := range f.messages {
		if m.Account == acct && m.Sid == msgSid {
			for _, md := range m.Media {
				out = append(out, map[string]any{
					"sid": md.Sid, "parent_sid": m.Sid, "content_type": md.Type,
					"uri": "/2010-04-01/Accounts/" + acct + "/Messages/" + m.Sid + "/Media/" + md.Sid + ".json",
				})
			}
		}
	}
	writeJSON(w, 200, map[string]any{"media_list": out, "page": 0, "page_size": 50})
}

// twilioSignature signs a webhook the way Twilio does: HMAC-SHA1 with the
// account's auth token over the full URL followed by every POST parameter's
// name and value, sorted by name, base64-encoded. Written from Twilio's
// documentation, independently of the code under test.
func twilioSignature(token, u string, params url.Values) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(u)
	for _, k := range keys {
		for _, v := range params[k] {
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	mac := hmac.New(sha1.New, []byte(token))
	mac.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// post sends a webhook signed with token (or with the given signature when
// sig is not "") and returns the HTTP status and body.
func postWebhook(t testing.TB, u string, params url.Values, token, sig string) (int, string) {
	t.Helper()
	if sig == "" {
		sig = twilioSignature(token, u, params)
	}
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(params.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", sig)
	req.Header.Set("User-Agent", "TwilioProxy/1.1")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("webhook: %v", err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// receive records an incoming SMS (or MMS with media types) from a sender to
// one of the fake's numbers, without sending the webhook.
func (f *fakeTwilio) receive(from, to, body string, mediaTypes ...string) *fakeMessage {
	f.mu.Lock()
	defer f.mu.Unlock()
	acct := ""
	for _, n := range f.numbers {
		if n.Phone == to {
			acct = n.Account
		}
	}
	now := time.Now()
	m := &fakeMessage{Sid: "SM" + randomHex(32), Account: acct, From: from, To: to, Body: body, Status: "received", Direction: "inbound", Created: now, Sent: now}
	if len(mediaTypes) > 0 {
		m.Sid = "MM" + m.Sid[2:]
	}
	for _, typ := range mediaTypes {
		m.Media = append(m.Media, fakeMedia{Sid: "ME" + randomHex(32), Type: typ})
	}
	f.messages = append(f.messages, m)
	return m
}

// incomingParams are the parameters of Twilio's incoming-message webhook.
func (f *fakeTwilio) incomingParams(m *fakeMessage) url.Values {
	p := url.Values{
		"ToCountry": {"US"}, "ToState": {"DC"}, "SmsMessageSid": {m.Sid}, "NumMedia": {strconv.Itoa(len(m.Media))},
		"ToCity": {""}, "FromZip": {""}, "SmsSid": {m.Sid}, "FromState": {"DC"}, "SmsStatus": {"received"},
		"FromCity": {""}, "Body": {m.Body}, "FromCountry": {"US"}, "To": {m.To}, "ToZip": {""},
		"NumSegments": {"1"}, "MessageSid": {m.Sid}, "AccountSid": {m.Account}, "From": {m.From}, "ApiVersion": {"2010-04-01"},
	}
	for i, md := range m.Media {
		p.Set("MediaUrl"+strconv.Itoa(i), f.srv.URL+"/2010-04-01/Accounts/"+m.Account+"/Messages/"+m.Sid+"/Media/"+md.Sid)
		p.Set("MediaContentType"+strconv.Itoa(i), md.Type)
	}
	return p
}

// deliverIncoming posts the incoming webhook of m to its number's SMS URL.
func (f *fakeTwilio) deliverIncoming(m *fakeMessage) (int, string) {
	f.t.Helper()
	n := f.number(m.To)
	if n.SmsURL == "" || n.SmsMethod != http.MethodPost {
		f.t.Fatalf("number %s has no POST SMS webhook (url %q, method %q)", m.To, n.SmsURL, n.SmsMethod)
	}
	f.mu.Lock()
	token := f.accounts[n.Account]
	f.mu.Unlock()
	return postWebhook(f.t, n.SmsURL, f.incomingParams(m), token, "")
}

// statusParams are the parameters of a status callback.
func statusParams(m *fakeMessage, status string, code int) url.Values {
	p := url.Values{
		"SmsSid": {m.Sid}, "SmsStatus": {status}, "MessageStatus": {status}, "To": {m.To}, "MessageSid": {m.Sid},
		"AccountSid": {m.Account}, "From": {m.From}, "ApiVersion": {"2010-04-01"},
	}
	if code != 0 {
		p.Set("ErrorCode", strconv.Itoa(code))
	}
	return p
}

// callback posts a status callback for an outbound message.
func (f *fakeTwilio) callback(sid, status string, code int) (int, string) {
	f.t.Helper()
	f.mu.Lock()
	var m *fakeMessage
	for _, x := range f.messages {
		if x.Sid == sid {
			m = x
		}
	}
	if m == nil {
		f.mu.Unlock()
		f.t.Fatalf("no message %s", sid)
	}
	m.Status = status
	if status == "sent" || status == "delivered" {
		m.Sent = time.Now()
	}
	token := f.accounts[m.Account]
	cb := m.StatusCallback
	p := statusParams(m, status, code)
	f.mu.Unlock()
	if cb == "" {
		f.t.Fatalf("message %s has no status callback", sid)
	}
	return postWebhook(f.t, cb, p, token, "")
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// ctxDone is a helper for tests waiting on conditions.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("timed out waiting for %s", what)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
