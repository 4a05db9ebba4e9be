// Package faketwilio is a stand-in for the parts of Twilio's 2010 REST API
// that transports/sms uses, on a real loopback listener, so that a
// transportd running as its own process (the soak test, make bench) can
// reach it as it would reach api.twilio.com through api_base_url.
//
// It checks HTTP Basic auth against its accounts, keeps numbers and
// messages in memory, sends the status callbacks Twilio sends after a
// message is created (when asked to), and signs every webhook it posts the
// way Twilio does (X-Twilio-Signature). Faults are injected per create
// (SetOnCreate) or per number check (SetFailChecks).
//
// Endpoints (all under /2010-04-01/Accounts/{AccountSid}):
//
//	GET  .json                              the account
//	GET  /IncomingPhoneNumbers.json         numbers (PhoneNumber filter)
//	POST /IncomingPhoneNumbers/{Sid}.json   set SmsUrl, SmsMethod
//	POST /Messages.json                     create (From, To, Body, StatusCallback)
//	GET  /Messages.json                     list (To, From, DateSent>, paging)
//	GET  /Messages/{Sid}.json               one message
//	GET  /Messages/{Sid}/Media.json         its media
//
// It must never be used outside tests: it keeps every message in memory
// and accepts any client on its port.
package faketwilio

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
)

// Action is what the fake does with one create request.
type Action int

const (
	CreateOK      Action = iota // 201 with the message
	Create429                   // 429 Too Many Requests, nothing created
	Create500                   // 500, nothing created
	CreateHang                  // the message is created, the answer never comes (until Release or Close)
	CreateDropped               // the message is created, the connection is cut
)

// Number is an incoming phone number of an account.
type Number struct {
	Sid, Account, Phone, SmsURL, SmsMethod string
}

// Message is a message Twilio knows: sent through the API
// (Direction "outbound-api") or received by a number ("inbound").
type Message struct {
	Sid, Account, From, To, Body string
	Status, Direction            string
	StatusCallback               string
	Created, Sent                time.Time
	Media                        []Media
	// Callbacks counts the status callbacks the gateway answered 200.
	Callbacks int
}

// Media is a picture of an MMS.
type Media struct {
	Sid, Type string
}

// Server is a fake Twilio on a loopback port.
type Server struct {
	// URL is the API base URL (api_base_url), "http://127.0.0.1:PORT".
	URL string

	ln     net.Listener
	srv    *http.Server
	client *http.Client
	closed chan struct{}
	wg     sync.WaitGroup

	mu          sync.Mutex
	accounts    map[string]string // SID → auth token
	numbers     []*Number
	messages    []*Message // in creation order
	creates     int
	onCreate    func(n int, m *Message) Action
	failChecks  int
	refuseTo    map[string]int
	statuses    []string // posted after each create, in order
	statusDelay time.Duration
	statusRetry time.Duration
	released    chan struct{}
}

// New starts a fake on addr ("" for a free loopback port).
func New(addr string) (*Server, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	s := &Server{
		URL:      "http://" + ln.Addr().String(),
		ln:       ln,
		client:   &http.Client{Timeout: 30 * time.Second},
		closed:   make(chan struct{}),
		accounts: map[string]string{},
		refuseTo: map[string]int{},
		released: make(chan struct{}),
	}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// Close stops the server, releases hanging creates and waits for the
// status callbacks under way.
func (s *Server) Close() {
	select {
	case <-s.closed:
		return
	default:
	}
	close(s.closed)
	s.Release()
	_ = s.srv.Close()
	s.wg.Wait()
}

// Release lets hanging creates finish (with a connection reset).
func (s *Server) Release() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.released:
	default:
		close(s.released)
	}
}

// SetOnCreate decides the fate of the n-th create (1-based) once the
// message is known; nil creates every message.
func (s *Server) SetOnCreate(f func(n int, m *Message) Action) {
	s.mu.Lock()
	s.onCreate = f
	s.mu.Unlock()
}

// SetFailChecks makes the next n IncomingPhoneNumbers listings answer 500.
func (s *Server) SetFailChecks(n int) {
	s.mu.Lock()
	s.failChecks = n
	s.mu.Unlock()
}

// RefuseTo makes creates to a number fail with a Twilio error code.
func (s *Server) RefuseTo(to string, code int) {
	s.mu.Lock()
	s.refuseTo[to] = code
	s.mu.Unlock()
}

// SetAutoStatus makes the fake post these status callbacks (for example
// "sent", "delivered") delay after each successful create, as Twilio does.
// A callback not answered 200 is tried again every half second for retry.
func (s *Server) SetAutoStatus(delay, retry time.Duration, statuses ...string) {
	s.mu.Lock()
	s.statuses, s.statusDelay, s.statusRetry = slices.Clone(statuses), delay, retry
	s.mu.Unlock()
}

func randomHex(n int) string {
	b := make([]byte, n/2)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// AddAccount creates an account and returns its SID and auth token.
func (s *Server) AddAccount() (sid, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sid, token = "AC"+randomHex(32), randomHex(32)
	s.accounts[sid] = token
	return sid, token
}

// Token returns an account's auth token.
func (s *Server) Token(sid string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accounts[sid]
}

// SetToken changes an account's auth token, as rotating it in Twilio's
// console does.
func (s *Server) SetToken(sid, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.accounts[sid] = token
}

// AddNumber gives an account a phone number (E.164).
func (s *Server) AddNumber(account, phone string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.numbers = append(s.numbers, &Number{Sid: "PN" + randomHex(32), Account: account, Phone: phone})
}

// Number returns a copy of a number's state (zero if unknown).
func (s *Server) Number(phone string) Number {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.numbers {
		if n.Phone == phone {
			return *n
		}
	}
	return Number{}
}

// Messages returns copies of every message, in creation order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, 0, len(s.messages))
	for _, m := range s.messages {
		out = append(out, *m)
	}
	return out
}

// Sent returns copies of the outbound messages, in creation order.
func (s *Server) Sent() []Message {
	var out []Message
	for _, m := range s.Messages() {
		if m.Direction == "outbound-api" {
			out = append(out, m)
		}
	}
	return out
}

// CreateCount is the number of create requests seen, successful or not.
func (s *Server) CreateCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creates
}

func twilioError(w http.ResponseWriter, status, code int, msg string) {
	writeJSON(w, status, map[string]any{
		"code": code, "message": msg, "more_info": fmt.Sprintf("https://www.twilio.com/docs/errors/%d", code), "status": status,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	s.mu.Lock()
	token, known := s.accounts[user]
	s.mu.Unlock()
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
		s.listNumbers(w, r, acct)
	case len(seg) == 3 && seg[1] == "IncomingPhoneNumbers" && r.Method == http.MethodPost:
		s.updateNumber(w, r, acct, strings.TrimSuffix(seg[2], ".json"))
	case len(seg) == 2 && seg[1] == "Messages.json" && r.Method == http.MethodPost:
		s.createMessage(w, r, acct)
	case len(seg) == 2 && seg[1] == "Messages.json" && r.Method == http.MethodGet:
		s.listMessages(w, r, acct)
	case len(seg) == 3 && seg[1] == "Messages" && r.Method == http.MethodGet:
		s.mu.Lock()
		defer s.mu.Unlock()
		for _, m := range s.messages {
			if m.Account == acct && m.Sid == strings.TrimSuffix(seg[2], ".json") {
				writeJSON(w, 200, messageJSON(m))
				return
			}
		}
		twilioError(w, 404, 20404, "The requested resource was not found")
	case len(seg) == 4 && seg[1] == "Messages" && seg[3] == "Media.json" && r.Method == http.MethodGet:
		s.listMedia(w, acct, seg[2])
	default:
		twilioError(w, 404, 20404, "The requested resource was not found")
	}
}

func (s *Server) listNumbers(w http.ResponseWriter, r *http.Request, acct string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failChecks > 0 {
		s.failChecks--
		twilioError(w, 500, 20500, "Internal Server Error")
		return
	}
	want := r.Form.Get("PhoneNumber")
	list := []map[string]any{}
	for _, n := range s.numbers {
		if n.Account == acct && (want == "" || n.Phone == want) {
			list = append(list, map[string]any{
				"sid": n.Sid, "account_sid": n.Account, "phone_number": n.Phone,
				"sms_url": n.SmsURL, "sms_method": n.SmsMethod,
			})
		}
	}
	writeJSON(w, 200, map[string]any{"incoming_phone_numbers": list, "page": 0, "page_size": 50})
}

func (s *Server) updateNumber(w http.ResponseWriter, r *http.Request, acct, sid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, n := range s.numbers {
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

func messageJSON(m *Message) map[string]any {
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

func (s *Server) createMessage(w http.ResponseWriter, r *http.Request, acct string) {
	s.mu.Lock()
	s.creates++
	n := s.creates
	from, to, body := r.PostForm.Get("From"), r.PostForm.Get("To"), r.PostForm.Get("Body")
	owned := false
	for _, num := range s.numbers {
		owned = owned || num.Account == acct && num.Phone == from
	}
	code := s.refuseTo[to]
	onCreate := s.onCreate
	s.mu.Unlock()
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
	m := &Message{
		Sid: "SM" + randomHex(32), Account: acct, From: from, To: to, Body: body,
		Status: "queued", Direction: "outbound-api", StatusCallback: r.PostForm.Get("StatusCallback"),
		Created: time.Now(),
	}
	action := CreateOK
	if onCreate != nil {
		action = onCreate(n, m)
	}
	switch action {
	case Create429:
		twilioError(w, 429, 20429, "Too Many Requests")
		return
	case Create500:
		twilioError(w, 500, 20500, "Internal Server Error")
		return
	}
	s.mu.Lock()
	s.messages = append(s.messages, m)
	js := messageJSON(m)
	statuses, delay, retry := s.statuses, s.statusDelay, s.statusRetry
	released := s.released
	s.mu.Unlock()
	if len(statuses) > 0 && m.StatusCallback != "" {
		s.wg.Add(1)
		go s.autoStatus(m.Sid, delay, retry, statuses)
	}
	switch action {
	case CreateHang:
		select {
		case <-r.Context().Done():
		case <-released:
		}
		hijackClose(w)
		return
	case CreateDropped:
		hijackClose(w)
		return
	}
	writeJSON(w, 201, js)
}

// autoStatus posts a message's status callbacks in order, each until the
// gateway answers 200 or retry has passed.
func (s *Server) autoStatus(sid string, delay, retry time.Duration, statuses []string) {
	defer s.wg.Done()
	sleep := func(d time.Duration) bool {
		select {
		case <-s.closed:
			return false
		case <-time.After(d):
			return true
		}
	}
	if !sleep(delay) {
		return
	}
	for _, st := range statuses {
		deadline := time.Now().Add(retry)
		for {
			status, _, err := s.Callback(sid, st, 0)
			if err == nil && status == 200 {
				break
			}
			if time.Now().After(deadline) || !sleep(500*time.Millisecond) {
				return
			}
		}
	}
}

// hijackClose cuts the connection without an answer.
func hijackClose(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			c.Close()
		}
	}
}

func (s *Server) listMessages(w http.ResponseWriter, r *http.Request, acct string) {
	s.mu.Lock()
	defer s.mu.Unlock()
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
	var list []*Message
	for _, m := range s.messages {
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
		out = append(out, messageJSON(m))
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

func (s *Server) listMedia(w http.ResponseWriter, acct, msgSid string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := []map[string]any{}
	for _, m := range s.messages {
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

// Signature signs a webhook the way Twilio does: HMAC-SHA1 with the
// account's auth token over the full URL followed by every POST
// parameter's name and value, sorted by name, base64-encoded. Written from
// Twilio's documentation, independently of the code under test.
func Signature(token, u string, params url.Values) string {
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

// Post sends a webhook signed with token (or carrying sig when sig is not
// "") as Twilio does, and returns the HTTP status and body.
func Post(c *http.Client, u string, params url.Values, token, sig string) (int, string, error) {
	if sig == "" {
		sig = Signature(token, u, params)
	}
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(params.Encode()))
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("X-Twilio-Signature", sig)
	req.Header.Set("User-Agent", "TwilioProxy/1.1")
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b), nil
}

// Receive records an incoming SMS (an MMS with mediaTypes) from a sender to
// one of the fake's numbers, without posting its webhook.
func (s *Server) Receive(from, to, body string, mediaTypes ...string) Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	acct := ""
	for _, n := range s.numbers {
		if n.Phone == to {
			acct = n.Account
		}
	}
	now := time.Now()
	m := &Message{Sid: "SM" + randomHex(32), Account: acct, From: from, To: to, Body: body, Status: "received", Direction: "inbound", Created: now, Sent: now}
	if len(mediaTypes) > 0 {
		m.Sid = "MM" + m.Sid[2:]
	}
	for _, typ := range mediaTypes {
		m.Media = append(m.Media, Media{Sid: "ME" + randomHex(32), Type: typ})
	}
	s.messages = append(s.messages, m)
	return *m
}

// IncomingParams are the parameters of Twilio's incoming-message webhook
// for m.
func (s *Server) IncomingParams(m Message) url.Values {
	p := url.Values{
		"ToCountry": {"US"}, "ToState": {"DC"}, "SmsMessageSid": {m.Sid}, "NumMedia": {strconv.Itoa(len(m.Media))},
		"ToCity": {""}, "FromZip": {""}, "SmsSid": {m.Sid}, "FromState": {"DC"}, "SmsStatus": {"received"},
		"FromCity": {""}, "Body": {m.Body}, "FromCountry": {"US"}, "To": {m.To}, "ToZip": {""},
		"NumSegments": {"1"}, "MessageSid": {m.Sid}, "AccountSid": {m.Account}, "From": {m.From}, "ApiVersion": {"2010-04-01"},
	}
	for i, md := range m.Media {
		p.Set("MediaUrl"+strconv.Itoa(i), s.URL+"/2010-04-01/Accounts/"+m.Account+"/Messages/"+m.Sid+"/Media/"+md.Sid)
		p.Set("MediaContentType"+strconv.Itoa(i), md.Type)
	}
	return p
}

// DeliverIncoming posts the incoming webhook of m to its number's SMS URL,
// once, and returns the gateway's HTTP status and body.
func (s *Server) DeliverIncoming(m Message) (int, string, error) {
	n := s.Number(m.To)
	if n.SmsURL == "" || n.SmsMethod != http.MethodPost {
		return 0, "", fmt.Errorf("faketwilio: number %s has no POST SMS webhook (url %q, method %q)", m.To, n.SmsURL, n.SmsMethod)
	}
	return Post(s.client, n.SmsURL, s.IncomingParams(m), s.Token(n.Account), "")
}

// StatusParams are the parameters of a status callback.
func StatusParams(m Message, status string, code int) url.Values {
	p := url.Values{
		"SmsSid": {m.Sid}, "SmsStatus": {status}, "MessageStatus": {status}, "To": {m.To}, "MessageSid": {m.Sid},
		"AccountSid": {m.Account}, "From": {m.From}, "ApiVersion": {"2010-04-01"},
	}
	if code != 0 {
		p.Set("ErrorCode", strconv.Itoa(code))
	}
	return p
}

// Callback sets an outbound message's status and posts its status
// callback, once.
func (s *Server) Callback(sid, status string, code int) (int, string, error) {
	s.mu.Lock()
	var m *Message
	for _, x := range s.messages {
		if x.Sid == sid {
			m = x
		}
	}
	if m == nil {
		s.mu.Unlock()
		return 0, "", fmt.Errorf("faketwilio: no message %s", sid)
	}
	m.Status = status
	if (status == "sent" || status == "delivered") && m.Sent.IsZero() {
		m.Sent = time.Now()
	}
	token := s.accounts[m.Account]
	cb := m.StatusCallback
	p := StatusParams(*m, status, code)
	s.mu.Unlock()
	if cb == "" {
		return 0, "", fmt.Errorf("faketwilio: message %s has no status callback", sid)
	}
	st, body, err := Post(s.client, cb, p, token, "")
	if err == nil && st == 200 {
		s.mu.Lock()
		m.Callbacks++
		s.mu.Unlock()
	}
	return st, body, err
}
