package sms

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"transportd/core"
)

func TestVerify(t *testing.T) {
	u := newUnit(t, nil)
	ctx := context.Background()
	acct := func(number, sid, token string) *core.Account {
		return &core.Account{JID: "v@a.test", Values: map[string]string{"number": number, "account_sid": sid, "auth_token": token}}
	}
	// National format is normalised, and the webhook set.
	a := acct("(202) 555-0100", u.sid, u.token)
	if err := u.tr.Verify(ctx, a); err != nil {
		t.Fatal(err)
	}
	if a.Values["number"] != "+12025550100" {
		t.Errorf("number stored as %q", a.Values["number"])
	}
	n := u.fake.Number("+12025550100")
	if n.SmsURL != u.srv.URL+"/sms/a.test/incoming" || n.SmsMethod != "POST" {
		t.Errorf("webhook %q %q", n.SmsURL, n.SmsMethod)
	}
	otherSID, otherToken := u.fake.AddAccount()
	u.fake.AddNumber(otherSID, "+12025550177")
	for i, tc := range []struct {
		a       *core.Account
		cond    string
		textHas string
	}{
		0: {acct(u.number, u.sid, randomHex(32)), "not-authorized", "Twilio refused the Account SID or Auth Token"},
		1: {acct(u.number, "AC"+randomHex(32), u.token), "not-authorized", "Twilio refused"},
		2: {acct("+12025550177", u.sid, u.token), "item-not-found", `field "Phone number" (number): +12025550177 is not a phone number of the Twilio account`},
		3: {acct(u.number, otherSID, otherToken), "item-not-found", "(number)"},
		4: {acct("911", u.sid, u.token), "not-acceptable", "(number)"},
	} {
		err := u.tr.Verify(ctx, tc.a)
		if condition(err) != tc.cond || !strings.Contains(err.Error(), tc.textHas) {
			t.Errorf("%d: %v (%s); want %s with %q", i, err, condition(err), tc.cond, tc.textHas)
		}
	}
	// A number already registered by someone else.
	u.register("first@a.test")
	if err := u.tr.Verify(ctx, acct(u.number, u.sid, u.token)); condition(err) != "conflict" {
		t.Errorf("second registration of a number: %v", err)
	}
	// Twilio unreachable.
	down := newUnit(t, map[string]string{"api_base_url": "http://127.0.0.1:1"})
	if err := down.tr.Verify(ctx, acct(u.number, u.sid, u.token)); condition(err) != "remote-server-not-found" {
		t.Errorf("unreachable API: %v", err)
	}
}

func TestVerifyWithoutPublicURL(t *testing.T) {
	fake := newFakeTwilio(t)
	sid, token := fake.AddAccount()
	fake.AddNumber(sid, "+12025550100")
	tr := &Transport{}
	if err := tr.Start(context.Background(), &fakeHost{mux: http.NewServeMux(), domain: "a.test", defaults: map[string]string{"api_base_url": fake.URL}, log: testLogger(t)}); err != nil {
		t.Fatal(err)
	}
	err := tr.Verify(context.Background(), &core.Account{JID: "x@a.test", Values: map[string]string{"number": "+12025550100", "account_sid": sid, "auth_token": token}})
	if condition(err) != "service-unavailable" || !strings.Contains(err.Error(), "public URL") {
		t.Errorf("%v", err)
	}
}

func TestSharedAccount(t *testing.T) {
	fake := newFakeTwilio(t)
	sid, token := fake.AddAccount()
	fake.AddNumber(sid, "+12025550100")
	file := t.TempDir() + "/token"
	if err := writeFile(file, token+"\n"); err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	srv := httptest.NewServer(mux)
	defer srv.Close()
	tr := &Transport{}
	err := tr.Start(context.Background(), &fakeHost{mux: mux, base: srv.URL, domain: "a.test", log: testLogger(t),
		defaults: map[string]string{"api_base_url": fake.URL, "account_sid": sid, "auth_token_file": file}})
	if err != nil {
		t.Fatal(err)
	}
	schema := tr.Schema(nil)
	if len(schema.Fields) != 1 || schema.Fields[0].Var != "number" {
		t.Errorf("shared-account form: %+v", schema.Fields)
	}
	a := &core.Account{JID: "s@a.test", Values: map[string]string{"number": "2025550100"}}
	if err := tr.Verify(context.Background(), a); err != nil {
		t.Fatalf("verify with the shared account: %v", err)
	}
	if c := tr.credsFor(a.Values); c.SID != sid || c.Token != token {
		t.Errorf("session account %s", c.SID)
	}
}

func TestWebhookIncoming(t *testing.T) {
	u := newUnit(t, nil)
	_, sink := u.register("henry@a.test")
	m := u.fake.Receive("+12025550123", u.number, "hi from a phone")
	status, body := u.fake.deliverIncoming(m)
	if status != 200 || !strings.Contains(body, "<Response/>") {
		t.Fatalf("webhook answered %d %q", status, body)
	}
	got := sink.messages()
	if len(got) != 1 || got[0].Contact != "+12025550123" || got[0].Body != "hi from a phone" || got[0].LegacyID != m.Sid {
		t.Fatalf("delivered %+v", got)
	}
	// Replayed: delivered once (core de-duplicates on the MessageSid).
	if status, _ := u.fake.deliverIncoming(m); status != 200 {
		t.Errorf("replay answered %d", status)
	}
	if n := len(sink.messages()); n != 1 {
		t.Errorf("replay delivered %d messages", n)
	}
	// MMS: the text, then each picture as its own message with an attachment.
	mms := u.fake.Receive("+12025550123", u.number, "look", "image/jpeg", "image/png")
	if status, _ := u.fake.deliverIncoming(mms); status != 200 {
		t.Fatalf("mms answered %d", status)
	}
	got = sink.messages()[1:]
	if len(got) != 3 || got[0].Body != "look" || len(got[1].Attachments) != 1 || got[1].Attachments[0].Type != "image/jpeg" ||
		got[1].Body != got[1].Attachments[0].URL || !strings.Contains(got[2].Attachments[0].URL, "/Media/ME") || got[2].Attachments[0].Type != "image/png" {
		t.Errorf("mms delivered %+v", got)
	}
}

func TestWebhookRefusals(t *testing.T) {
	u := newUnit(t, nil)
	_, sink := u.register("ivy@a.test")
	hook := u.srv.URL + "/sms/a.test/incoming"
	m := u.fake.Receive("+12025550123", u.number, "x")
	p := u.fake.IncomingParams(m)
	otherSID, otherToken := u.fake.AddAccount()
	unknown := u.fake.IncomingParams(u.fake.Receive("+12025550123", "+12025550166", "x"))
	foreign := u.fake.IncomingParams(m)
	foreign.Set("AccountSid", otherSID)

	for i, tc := range []struct {
		name   string
		params url.Values
		token  string
		sig    string
		want   int
	}{
		0: {"bad signature", p, "", "bm90IGEgc2lnbmF0dXJl", 403},
		1: {"no signature", p, "", "-", 403},
		2: {"signed with another token", p, otherToken, "", 403},
		3: {"signed for another URL", p, "", twilioSignature(u.token, "https://gw.example.net/sms/a.test/incoming", p), 403},
		4: {"another account's parameters", foreign, u.token, "", 403},
		5: {"number nobody registered", unknown, u.token, "", 404},
	} {
		sig := tc.sig
		if sig == "-" {
			sig = " "
		}
		token := tc.token
		if token == "" {
			token = u.token
		}
		if status, _ := postWebhook(t, hook, tc.params, token, sig); status != tc.want {
			t.Errorf("%d %s: %d, want %d", i, tc.name, status, tc.want)
		}
	}
	// Host and X-Forwarded-* headers do not change the URL that is signed.
	req, _ := http.NewRequest(http.MethodPost, hook, strings.NewReader(p.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Host = "gw.example.net"
	req.Header.Set("X-Forwarded-Host", "gw.example.net")
	req.Header.Set("X-Forwarded-Proto", "https")
	req.Header.Set("X-Twilio-Signature", twilioSignature(u.token, "https://gw.example.net/sms/a.test/incoming", p))
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 403 {
		t.Errorf("forwarded headers: %v %v", resp.StatusCode, err)
	}
	// Oversized, wrong method, repeated parameter.
	big := url.Values{"To": {u.number}, "Body": {strings.Repeat("x", 70<<10)}}
	if status, _ := postWebhook(t, hook, big, u.token, ""); status != 413 {
		t.Errorf("oversized: %d", status)
	}
	if resp, err := http.Get(hook); err != nil || resp.StatusCode != 405 {
		t.Errorf("GET: %v %v", resp.StatusCode, err)
	}
	rep := u.fake.IncomingParams(m)
	rep.Add("To", u.number)
	if status, _ := postWebhook(t, hook, rep, u.token, ""); status != 400 {
		t.Errorf("repeated parameter: %d", status)
	}
	if n := len(sink.messages()); n != 0 {
		t.Errorf("refused webhooks delivered %d messages", n)
	}
	// And a good one still works.
	if status, _ := postWebhook(t, hook, p, u.token, ""); status != 200 || len(sink.messages()) != 1 {
		t.Errorf("valid webhook: %d", status)
	}
}

func TestStatusCallbacks(t *testing.T) {
	u := newUnit(t, map[string]string{"rate_per_second": "100"})
	s, sink := u.register("jack@a.test")
	ctx := context.Background()
	sid, err := s.Send(ctx, msg("+12025550123", "hi", "s1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []string{"queued", "sent", "delivered"} {
		if status, _ := u.fake.callback(sid, st, 0); status != 200 {
			t.Fatalf("callback %s: %d", st, status)
		}
	}
	sid2, _ := s.Send(ctx, msg("+12025550124", "hi", "s2"))
	if status, _ := u.fake.callback(sid2, "undelivered", 30003); status != 200 {
		t.Fatal(status)
	}
	// A split message: a failed first part is reported under the SID Send
	// returned, which core knows.
	long, _ := s.Send(ctx, msg("+12025550125", strings.Repeat("x ", 1000), "s3"))
	parts := u.fake.Sent()[2:]
	if len(parts) != 2 {
		t.Fatalf("%d parts", len(parts))
	}
	if status, _ := u.fake.callback(parts[0].Sid, "failed", 30007); status != 200 {
		t.Fatal(status)
	}
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.receipts) != 1 || sink.receipts[0] != "+12025550123 "+sid {
		t.Errorf("receipts %q", sink.receipts)
	}
	if len(sink.failures) != 2 ||
		sink.failures[0] != "+12025550124 "+sid2+": Twilio error 30003: Unreachable destination handset" ||
		condition(sink.failErr[0]) != "recipient-unavailable" ||
		!strings.HasPrefix(sink.failures[1], "+12025550125 "+long+": Twilio error 30007") {
		t.Errorf("failures %q", sink.failures)
	}
}

func TestReconcile(t *testing.T) {
	u := newUnit(t, nil)
	s, sink := u.register("kate@a.test")
	// History from before the registration is not replayed.
	if n := len(sink.messages()); n != 0 {
		t.Fatalf("first run delivered %d", n)
	}
	// Messages arrive while nothing listens (the gateway is down).
	m1 := u.fake.Receive("+12025550123", u.number, "while you were out")
	m2 := u.fake.Receive("+12025550124", u.number, "", "image/gif")
	// "Restart": a new session on the same state lists them.
	s2 := u.tr.NewSession(s.a, sink).(*session)
	u.run(s2)
	waitFor(t, 5*time.Second, "reconciled messages", func() bool { return len(sink.messages()) == 2 })
	got := sink.messages()
	if got[0].LegacyID != m1.Sid || got[0].Body != "while you were out" || got[0].Time.IsZero() {
		t.Errorf("first %+v", got[0])
	}
	if got[1].LegacyID != m2.Sid+"/media0" || len(got[1].Attachments) != 1 || got[1].Attachments[0].Type != "image/gif" ||
		!strings.HasPrefix(got[1].Attachments[0].URL, u.fake.URL+"/2010-04-01/Accounts/"+u.sid+"/Messages/"+m2.Sid+"/Media/ME") {
		t.Errorf("second %+v", got[1])
	}
	// Our own outbound messages are not delivered back to us.
	if _, err := s2.Send(context.Background(), msg("+12025550123", "reply", "rc")); err != nil {
		t.Fatal(err)
	}
	if err := s2.reconcile(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(sink.messages()); n != 2 {
		t.Errorf("after another listing: %d messages", n)
	}
}

func TestRunStates(t *testing.T) {
	u := newUnit(t, nil)
	u.fake.SetFailChecks(2)
	a := &core.Account{JID: "l@a.test", Values: map[string]string{"number": u.number, "account_sid": u.sid, "auth_token": u.token}}
	sink := newFakeSink(t)
	u.run(u.tr.NewSession(a, sink).(*session))
	waitFor(t, 10*time.Second, "connected after transient failures", func() bool { return sink.lastState() == core.StateConnected })
	sink.mu.Lock()
	if sink.states[0] != core.StateTransientFail {
		t.Errorf("states %v", sink.states)
	}
	sink.mu.Unlock()

	// Refused credentials: bad-credentials, and Run returns.
	bad := &core.Account{JID: "m@a.test", Values: map[string]string{"number": u.number, "account_sid": u.sid, "auth_token": randomHex(32)}}
	sink2 := newFakeSink(t)
	done := make(chan struct{})
	go func() { defer close(done); u.tr.NewSession(bad, sink2).Run(context.Background()) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return on refused credentials")
	}
	if sink2.lastState() != core.StateBadCredentials || !strings.Contains(sink2.texts[len(sink2.texts)-1], "refused") {
		t.Errorf("states %v %q", sink2.states, sink2.texts)
	}
}

// FuzzWebhookParse feeds arbitrary bodies, headers, queries and methods to
// the incoming webhook: it must never panic, and must never deliver (or
// answer 200) unless the request carries a valid signature for the URL
// rebuilt from the public URL.
func FuzzWebhookParse(f *testing.F) {
	u := newUnitLog(f, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	_, sink := u.register("fuzz@a.test")
	hook := u.srv.URL + "/sms/a.test/incoming"
	m := u.fake.Receive("+12025550123", u.number, "seed", "image/png")
	valid := u.fake.IncomingParams(m).Encode()
	f.Add([]byte(valid), "application/x-www-form-urlencoded", "", "", "POST", true)
	f.Add([]byte(valid), "application/x-www-form-urlencoded", "AAAA", "", "POST", false)
	f.Add([]byte(valid), "application/x-www-form-urlencoded", "", "a=1", "POST", true)
	f.Add([]byte(valid+"&To=%2B1"), "application/x-www-form-urlencoded", "", "", "POST", true)
	f.Add([]byte("To=%2B12025550100&Body=%ff%fe&MessageSid=SM1&AccountSid="+u.sid), "application/x-www-form-urlencoded; charset=utf-8", "", "", "POST", true)
	f.Add([]byte("\x00;;&&==%zz"), "multipart/form-data; boundary=x", "x", "%%", "PUT", false)
	f.Add(bytes.Repeat([]byte("a=b&"), 20000), "application/x-www-form-urlencoded", "", "", "POST", true)
	f.Fuzz(func(t *testing.T, body []byte, contentType, sig, query, method string, sign bool) {
		target := hook
		if query != "" {
			target += "?" + query
		}
		req, err := http.NewRequest(method, target, bytes.NewReader(body))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", contentType)
		signedURL := u.srv.URL + "/sms/a.test/incoming"
		if req.URL.RawQuery != "" {
			signedURL += "?" + req.URL.RawQuery
		}
		params, perr := url.ParseQuery(string(body))
		if sign && perr == nil {
			sig = twilioSignature(u.token, signedURL, params)
		}
		req.Header.Set("X-Twilio-Signature", sig)
		sink.mu.Lock()
		before := sink.calls
		sink.mu.Unlock()
		rec := httptest.NewRecorder()
		u.tr.serveIncoming(rec, req)
		sink.mu.Lock()
		delivered := sink.calls - before
		sink.delivered, sink.seen = nil, map[string]bool{}
		sink.mu.Unlock()
		if rec.Code != 200 && delivered == 0 {
			return
		}
		// Something was taken: the request must have been validly signed.
		if perr != nil || sig == "" {
			t.Fatalf("status %d, %d delivered, for a request that cannot be validly signed", rec.Code, delivered)
		}
		// twilio-go accepts the URL with and without its port.
		bare := strings.Replace(signedURL, u.srv.Listener.Addr().String(), "127.0.0.1", 1)
		if sig != twilioSignature(u.token, signedURL, params) && sig != twilioSignature(u.token, bare, params) {
			t.Fatalf("status %d, %d delivered, with signature %q not valid for %s", rec.Code, delivered, sig, signedURL)
		}
		if mt, _, _ := mime.ParseMediaType(contentType); method != http.MethodPost || mt != "application/x-www-form-urlencoded" {
			t.Fatalf("status %d for method %q content type %q", rec.Code, method, contentType)
		}
	})
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
