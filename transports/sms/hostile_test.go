package sms

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"transportd/core"
)

// FuzzWebhookAuth starts from a webhook Twilio signed and lets the fuzzer
// forge, tamper with, replay and dress it: sign it with another token or
// for another URL, change or drop a parameter after signing, and set
// Host, X-Forwarded-Host, X-Forwarded-Proto and X-Original-URL as a proxy
// (or an attacker) would. The oracle is computed independently (Twilio's
// algorithm over the configured public URL and the parameters actually
// sent): a message is delivered only when it holds, and a replay of an
// accepted webhook is answered 200 without delivering again.
func FuzzWebhookAuth(f *testing.F) {
	u := newUnitLog(f, nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	_, sink := u.register("auth@a.test")
	_, otherToken := u.fake.AddAccount()
	hook := u.srv.URL + "/sms/a.test/incoming"
	bare := strings.Replace(hook, u.srv.Listener.Addr().String(), "127.0.0.1", 1)
	f.Add("", "", false, "", "", "", "", "", uint8(0), true)
	f.Add("Body", "tampered", false, "", "", "", "", "", uint8(0), false)
	f.Add("To", "", true, "", "", "", "", "", uint8(0), false)
	f.Add("AccountSid", "AC00000000000000000000000000000000", false, "", "", "", "", "", uint8(0), false)
	f.Add("", "", false, "gw.example.net", "gw.example.net", "https", "/sms/a.test/incoming", "https://gw.example.net/sms/a.test/incoming", uint8(0), false)
	f.Add("", "", false, "", "", "", "", "", uint8(1), false)
	f.Add("", "", false, "", "", "", "", "", uint8(2), false)
	f.Add("MessageSid", "SM../../x", false, "", "", "", "", "", uint8(0), true)
	f.Add("From", "+12025550199", false, "", "", "", "", hook+"?x=1", uint8(0), false)
	f.Fuzz(func(t *testing.T, key, val string, drop bool, host, fwdHost, fwdProto, origURL, signURL string, signWith uint8, replay bool) {
		sink.mu.Lock()
		sink.delivered, sink.seen = nil, map[string]bool{}
		sink.mu.Unlock()
		// A fresh message each time (not kept by the fake: a million of
		// them would fill the memory).
		m := fakeMessage{Sid: "SM" + randomHex(32), Account: u.sid, From: "+12025550123", To: u.number, Body: "fuzz", Status: "received", Direction: "inbound"}
		p := u.fake.IncomingParams(m)
		if signURL == "" {
			signURL = hook
		}
		token := u.token
		switch signWith % 3 {
		case 1:
			token = otherToken
		case 2:
			token = ""
		}
		sig := twilioSignature(token, signURL, p)
		if key != "" {
			if drop {
				p.Del(key)
			} else {
				p.Set(key, val)
			}
		}
		req, err := http.NewRequest(http.MethodPost, hook, strings.NewReader(p.Encode()))
		if err != nil {
			return
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("X-Twilio-Signature", sig)
		if host != "" {
			req.Host = host
		}
		for k, v := range map[string]string{"X-Forwarded-Host": fwdHost, "X-Forwarded-Proto": fwdProto, "X-Original-URL": origURL} {
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		// The oracle: Twilio's signature over the configured URL and the
		// parameters as received, for the number's own account.
		back, perr := url.ParseQuery(p.Encode())
		valid := perr == nil && (sig == twilioSignature(u.token, hook, back) || sig == twilioSignature(u.token, bare, back)) &&
			back.Get("AccountSid") == u.sid && back.Get("To") == u.number
		for _, v := range back {
			valid = valid && len(v) == 1
		}
		takeable := valid && msgSIDRE.MatchString(back.Get("MessageSid")) && back.Get("From") != ""

		send := func() (int, int) {
			sink.mu.Lock()
			before := len(sink.delivered)
			sink.mu.Unlock()
			rec := httptest.NewRecorder()
			r := req.Clone(context.Background())
			r.Body = io.NopCloser(strings.NewReader(p.Encode()))
			u.tr.serveIncoming(rec, r)
			sink.mu.Lock()
			n := len(sink.delivered) - before
			sink.mu.Unlock()
			return rec.Code, n
		}
		code, n := send()
		switch {
		case !valid && (code == 200 || n > 0):
			t.Fatalf("accepted (%d, %d delivered) a webhook whose signature does not hold for the configured URL: key %q val %q drop %v host %q fwd %q/%q orig %q signed for %q with token %d",
				code, n, key, val, drop, host, fwdHost, fwdProto, origURL, signURL, signWith%3)
		case takeable && (code != 200 || n != 1):
			t.Fatalf("refused (%d, %d delivered) a webhook Twilio signed for the configured URL", code, n)
		case valid && !takeable && n > 0:
			t.Fatalf("delivered a signed webhook without a valid MessageSid or From")
		}
		if replay {
			if code2, n2 := send(); n2 != 0 || (takeable && code2 != 200) {
				t.Fatalf("replay: %d, %d delivered again", code2, n2)
			}
		}
	})
}

// TestWireTraceHidesCredentials: with wire_trace = "true" and the log at
// debug level, registering, sending and receiving never log the auth
// token, in clear or as the Basic authorization Twilio receives.
func TestWireTraceHidesCredentials(t *testing.T) {
	var buf lockedBytes
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	u := newUnitLog(t, map[string]string{"wire_trace": "true"}, log)
	s, sink := u.register("trace@a.test")
	if _, err := s.Send(context.Background(), &core.Message{Contact: "+12025550123", Body: "hello", XMPPID: "w1"}); err != nil {
		t.Fatal(err)
	}
	m := u.fake.Receive("+12025550124", u.number, "hi")
	if status, _ := u.fake.deliverIncoming(m); status != 200 {
		t.Fatalf("webhook %d", status)
	}
	if len(sink.messages()) != 1 {
		t.Fatal("the incoming SMS was not delivered")
	}
	logs := buf.String()
	if !strings.Contains(logs, "twilio api") {
		t.Fatalf("no wire trace in the log: the test proves nothing\n%s", logs)
	}
	for form, secret := range map[string]string{
		"token":      u.token,
		"basic auth": base64.StdEncoding.EncodeToString([]byte(u.sid + ":" + u.token)),
	} {
		if strings.Contains(logs, secret) {
			t.Errorf("the debug log with wire_trace holds the auth token (%s)", form)
		}
	}
}

type lockedBytes struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBytes) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBytes) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
