package sms

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"transportd/core"
	"transportd/core/store"
)

func msg(to, body, id string) *core.Message {
	return &core.Message{Contact: to, Body: body, XMPPID: id, UserResource: "phone"}
}

func TestSend(t *testing.T) {
	u := newUnit(t, nil)
	s, _ := u.register("alice@a.test")
	sid, err := s.Send(context.Background(), msg("+12025550123", "hello there", "m1"))
	if err != nil {
		t.Fatal(err)
	}
	sent := u.fake.Sent()
	if len(sent) != 1 {
		t.Fatalf("%d messages created", len(sent))
	}
	m := sent[0]
	if m.Sid != sid || m.From != u.number || m.To != "+12025550123" || m.Body != "hello there" {
		t.Errorf("created %+v, Send returned %s", m, sid)
	}
	if m.StatusCallback != u.srv.URL+"/sms/a.test/status" {
		t.Errorf("status callback %q", m.StatusCallback)
	}
	// The outbox retrying after a crash that followed Send: no second SMS.
	again, err := s.Send(context.Background(), msg("+12025550123", "hello there", "m1"))
	if err != nil || again != sid || u.fake.CreateCount() != 1 {
		t.Errorf("retry of a sent stanza: %s, %v, %d creates", again, err, u.fake.CreateCount())
	}
	// A stanza without id may legitimately repeat: two SMS.
	for range 2 {
		if _, err := s.Send(context.Background(), msg("+12025550123", "ok", "")); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(u.fake.Sent()); n != 3 {
		t.Errorf("%d messages after two id-less ones, want 3", n)
	}
}

func isTemporary(err error) bool { return errors.Is(err, core.ErrTemporary) }

func TestSendRetries(t *testing.T) {
	u := newUnit(t, map[string]string{"rate_per_second": "100"})
	s, _ := u.register("bob@a.test")
	ctx := context.Background()

	// 429: nothing was created; the retry creates once.
	u.fake.SetOnCreate(func(n int, _ *fakeMessage) fakeAction {
		if n == 1 {
			return create429
		}
		return createOK
	})
	if _, err := s.Send(ctx, msg("+12025550123", "after 429", "r1")); !isTemporary(err) {
		t.Fatalf("429: %v, want a temporary error", err)
	}
	if _, err := s.Send(ctx, msg("+12025550123", "after 429", "r1")); err != nil {
		t.Fatalf("retry after 429: %v", err)
	}

	// 500: Twilio may have acted; the retry asks first, and only once the
	// attempt is older than lookupSettle does it send again.
	u.fake.SetOnCreate(func(n int, _ *fakeMessage) fakeAction {
		if n == 3 {
			return create500
		}
		return createOK
	})
	if _, err := s.Send(ctx, msg("+12025550123", "after 500", "r2")); !isTemporary(err) {
		t.Fatalf("500: %v", err)
	}
	if _, err := s.Send(ctx, msg("+12025550123", "after 500", "r2")); !isTemporary(err) {
		t.Fatalf("retry right after a 500: %v, want temporary (still checking)", err)
	}
	time.Sleep(lookupSettle)
	if _, err := s.Send(ctx, msg("+12025550123", "after 500", "r2")); err != nil {
		t.Fatalf("retry after settle: %v", err)
	}

	// Connection cut after Twilio created the message: the retry finds it.
	u.fake.SetOnCreate(func(n int, _ *fakeMessage) fakeAction {
		if n == 5 {
			return createDropped
		}
		return createOK
	})
	if _, err := s.Send(ctx, msg("+12025550123", "dropped answer", "r3")); !isTemporary(err) {
		t.Fatalf("dropped: %v", err)
	}
	sid, err := s.Send(ctx, msg("+12025550123", "dropped answer", "r3"))
	if err != nil {
		t.Fatalf("retry after dropped answer: %v", err)
	}
	var bodies []string
	for _, m := range u.fake.Sent() {
		bodies = append(bodies, m.Body)
	}
	if strings.Join(bodies, "|") != "after 429|after 500|dropped answer" {
		t.Errorf("created %q", bodies)
	}
	if last := u.fake.Sent()[2]; last.Sid != sid {
		t.Errorf("retry returned %s, the message is %s", sid, last.Sid)
	}
}

// TestSendInterrupted: the gateway dies while Twilio holds the request
// (it created the message); a new session on the same state finds it.
func TestSendInterrupted(t *testing.T) {
	u := newUnit(t, nil)
	s, sink := u.register("carol@a.test")
	u.fake.SetOnCreate(func(n int, _ *fakeMessage) fakeAction {
		if n == 1 {
			return createHang
		}
		return createOK
	})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := s.Send(ctx, msg("+12025550123", "in flight", "i1"))
		errc <- err
	}()
	u.fake.waitSent(1, 5*time.Second)
	cancel()
	if err := <-errc; !isTemporary(err) {
		t.Fatalf("interrupted send: %v", err)
	}
	// "Restart": a new session of the same account and state.
	s2 := u.tr.NewSession(s.a, sink).(*session)
	sid, err := s2.Send(context.Background(), msg("+12025550123", "in flight", "i1"))
	if err != nil {
		t.Fatal(err)
	}
	if n := u.fake.CreateCount(); n != 1 {
		t.Errorf("%d creates, want 1", n)
	}
	if sent := u.fake.Sent(); len(sent) != 1 || sent[0].Sid != sid {
		t.Errorf("sent %+v, Send returned %s", sent, sid)
	}
}

func TestSendSplitAndUsage(t *testing.T) {
	u := newUnit(t, map[string]string{"rate_per_second": "100"})
	s, sink := u.register("dave@a.test")
	body := strings.Repeat("Ünïcödé wörds ", 150) // 2100 characters, UCS-2 (ï is not GSM)
	sid, err := s.Send(context.Background(), msg("+12025550123", body, "long"))
	if err != nil {
		t.Fatal(err)
	}
	sent := u.fake.Sent()
	if len(sent) != 2 || sent[0].Body+sent[1].Body != body || !strings.HasSuffix(sent[0].Body, " ") {
		t.Fatalf("split into %d: %d + %d chars", len(sent), len([]rune(sent[0].Body)), len([]rune(sent[len(sent)-1].Body)))
	}
	if sid != sent[1].Sid || s.primary(context.Background(), sent[0].Sid) != sid {
		t.Errorf("Send returned %s; first part maps to %s", sid, s.primary(context.Background(), sent[0].Sid))
	}
	l, err := s.readLedger(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n1, _ := Segments(sent[0].Body)
	n2, _ := Segments(sent[1].Body)
	if l.Last == nil || l.Last.Parts != 2 || l.Last.Encoding != UCS2 || l.Last.Segments != n1+n2 || l.Sent != 2 {
		t.Errorf("ledger %+v last %+v, want 2 parts, %d segments, UCS-2", l, l.Last, n1+n2)
	}
	// The Usage command shows it.
	resp := u.tr.usage(context.Background(), &core.CommandRequest{Account: accountFor("dave@a.test")})
	if resp.Err != nil || !strings.Contains(resp.Note, "Sent today (UTC): 2 of 200") || !strings.Contains(resp.Note, "UCS-2") || !strings.Contains(resp.Note, "segment") {
		t.Errorf("usage: %q %v", resp.Note, resp.Err)
	}
	_ = sink
}

func TestSendRateLimit(t *testing.T) {
	u := newUnit(t, map[string]string{"rate_per_second": "4"})
	s, _ := u.register("erin@a.test")
	var wg sync.WaitGroup
	for i, to := range []string{"+12025550111", "+12025550112", "+12025550113"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := s.Send(context.Background(), msg(to, "rate", "rl"+to)); err != nil {
				t.Errorf("%d: %v", i, err)
			}
		}()
	}
	wg.Wait()
	sent := u.fake.Sent()
	for i := 1; i < len(sent); i++ {
		// 4/s means 250ms apart; allow scheduling slack.
		if gap := sent[i].Created.Sub(sent[i-1].Created); gap < 200*time.Millisecond {
			t.Errorf("messages %d and %d only %v apart at 4/s", i-1, i, gap)
		}
	}
}

func TestSendPolicyAndCap(t *testing.T) {
	u := newUnit(t, map[string]string{"daily_cap": "3", "rate_per_second": "100"})
	s, _ := u.register("frank@a.test")
	ctx := context.Background()
	for _, tc := range []struct{ to, cond, has string }{
		{"+19005551234", "not-allowed", "premium-rate"},
		{"+1911", "not-allowed", "short code"},
		{"+33612345678", "not-allowed", "FR"},
	} {
		if _, err := s.Send(ctx, msg(tc.to, "x", "p"+tc.to)); condition(err) != tc.cond || !strings.Contains(err.Error(), tc.has) {
			t.Errorf("send to %s: %v", tc.to, err)
		}
	}
	// Twilio refuses one recipient: the error carries its code, and the
	// cap is not charged.
	u.fake.RefuseTo("+12025550199", 21610)
	_, err := s.Send(ctx, msg("+12025550199", "x", "stop"))
	if condition(err) != "not-allowed" || !strings.Contains(err.Error(), "Twilio error 21610") || isTemporary(err) {
		t.Errorf("refused recipient: %v", err)
	}
	for i := range 3 {
		if _, err := s.Send(ctx, msg("+12025550123", "x", "c"+string(rune('0'+i)))); err != nil {
			t.Fatalf("message %d under the cap: %v", i, err)
		}
	}
	_, err = s.Send(ctx, msg("+12025550123", "x", "c4"))
	if condition(err) != "policy-violation" || !strings.Contains(err.Error(), "daily limit of 3") {
		t.Errorf("over the cap: %v", err)
	}
	if n := len(u.fake.Sent()); n != 3 {
		t.Errorf("%d sent, want 3", n)
	}
}

func TestSendBadCredentials(t *testing.T) {
	u := newUnit(t, nil)
	s, _ := u.register("gina@a.test")
	u.fake.SetToken(u.sid, randomHex(32)) // token rotated in the console
	_, err := s.Send(context.Background(), msg("+12025550123", "x", "bc"))
	if condition(err) != "not-authorized" || isTemporary(err) || !strings.Contains(err.Error(), "refused the Account SID or Auth Token") {
		t.Errorf("send with a revoked token: %v", err)
	}
}

// accountFor is the store account a command request carries.
func accountFor(jid string) *store.Account { return &store.Account{JID: jid} }

// TestSendRetryChargesOnce: a message waiting for the rate limiter (or for
// Twilio) is counted against the daily cap once, however often it is
// retried.
func TestSendRetryChargesOnce(t *testing.T) {
	u := newUnit(t, map[string]string{"rate_per_second": "0.001"})
	s, _ := u.register("hank@a.test")
	if _, err := s.Send(context.Background(), msg("+12025550123", "first", "o1")); err != nil {
		t.Fatal(err)
	}
	for range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := s.Send(ctx, msg("+12025550123", "second", "o2"))
		cancel()
		if !isTemporary(err) {
			t.Fatalf("send behind the rate limit: %v", err)
		}
	}
	l, err := s.readLedger(context.Background())
	if err != nil || l.Sent != 2 {
		t.Errorf("ledger counts %d sent, want 2 (%v)", l.Sent, err)
	}
}
