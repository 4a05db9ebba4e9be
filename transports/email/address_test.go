package email

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"transportd/core"
)

func TestAddressEscaping(t *testing.T) {
	tr := New()
	for i, tc := range []struct{ addr, local string }{
		0: {"jane@example.org", `jane\40example.org`},
		1: {"Jane.Doe@Example.ORG", `jane.doe\40example.org`},
		2: {"a+tag@b.example", `a+tag\40b.example`},
	} {
		if got := tr.Localpart(tc.addr); got != tc.local {
			t.Errorf("%d: Localpart(%q) = %q, want %q", i, tc.addr, got, tc.local)
		}
		back, err := tr.Address(tc.local)
		if err != nil || back != strings.ToLower(tc.addr) {
			t.Errorf("%d: Address(%q) = %q, %v", i, tc.local, back, err)
		}
	}
	if a, err := tr.Address("jane%example.org"); err != nil || a != "jane@example.org" {
		t.Errorf("percent form: %q %v", a, err)
	}
	for _, bad := range []string{"nodomain", `a\40b\40c`, "", `unknown-sender\40invalid`} {
		if _, err := tr.Address(bad); err == nil {
			t.Errorf("Address(%q) accepted", bad)
		}
	}
	for _, in := range []string{"Jane <jane@example.org>", " jane@example.org "} {
		if a, err := tr.TranslateAddress(in, nil); err != nil || a != "jane@example.org" {
			t.Errorf("TranslateAddress(%q) = %q, %v", in, a, err)
		}
	}
	for _, bad := range []string{"jane@example.org\r\nBcc: x@y", "not an address"} {
		if _, err := tr.TranslateAddress(bad, nil); err == nil {
			t.Errorf("TranslateAddress(%q) accepted", bad)
		}
	}
}

func TestValidAddress(t *testing.T) {
	for _, ok := range []string{"a@b.example", "a.b+c@d.example"} {
		if !validAddress(ok) {
			t.Errorf("%q refused", ok)
		}
	}
	for _, bad := range []string{"", "a@b.example\r\nRCPT TO:<x@y>", "a@b\x00", "<a@b.example>", "Jane <a@b.example>", "a b@c.example", "a@b.example>\r\n"} {
		if validAddress(bad) {
			t.Errorf("%q accepted", bad)
		}
	}
}

// FuzzAddress: whatever address a localpart is made from comes back the
// same, and what Address accepts is safe for SMTP.
func FuzzAddress(f *testing.F) {
	for _, s := range []string{"jane@example.org", "a%b@c.example", `a\40b@c`, "ü@ü.example", "a@b@c", "\r\n@x", "\"quoted\"@x.example", "x@[1.2.3.4]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if a, ok := contactAddress(s); ok {
			local := localpart(a)
			back, err := addressOf(local)
			if err != nil || back != a {
				t.Fatalf("%q → %q → %q, %v", a, local, back, err)
			}
		}
		if a, err := addressOf(s); err == nil {
			if !validAddress(a) {
				t.Fatalf("Address(%q) = %q is not safe for SMTP", s, a)
			}
		}
		if a, err := translateAddress(s); err == nil && !validAddress(a) {
			t.Fatalf("TranslateAddress(%q) = %q", s, a)
		}
	})
}

func TestThreads(t *testing.T) {
	ctx := context.Background()
	st := newMemState()
	// A mail starting a conversation, then a reply in it: one thread.
	a := &parsedMail{MessageID: "m1@x", Subject: "Plans"}
	ta, err := incomingThread(ctx, st, a)
	if err != nil || ta == "" {
		t.Fatal(ta, err)
	}
	b := &parsedMail{MessageID: "m2@y", InReplyTo: "m1@x", References: []string{"m1@x"}, Subject: "Re: Plans"}
	if tb, _ := incomingThread(ctx, st, b); tb != ta {
		t.Errorf("reply in thread %q, first in %q", tb, ta)
	}
	// Answering in the thread: In-Reply-To the last mail, References, Re:.
	info, _ := getThread(ctx, st, ta)
	irt, refs, subj := outgoingThread(info)
	if irt != "m2@y" || strings.Join(refs, " ") != "m1@x m2@y" || subj != "Re: Plans" {
		t.Errorf("answer: %q %q %q", irt, refs, subj)
	}
	// A mail sent in the client's own thread: the answer comes back in it.
	if err := recordSent(ctx, st, "client-thread-1", "out1@a.test", nil, "Hi"); err != nil {
		t.Fatal(err)
	}
	c := &parsedMail{MessageID: "r1@z", InReplyTo: "out1@a.test", References: []string{"out1@a.test"}}
	if tc, _ := incomingThread(ctx, st, c); tc != "client-thread-1" {
		t.Errorf("answer to own thread came in %q", tc)
	}
	if replySubject("Re: RE: aw: x") != "Re: x" || replySubject("") != "" {
		t.Error("replySubject")
	}
	long := make([]string, 50)
	for i := range long {
		long[i] = "r" + fmtInt(int64(i)) + "@x"
	}
	if c := capRefs(long); len(c) != maxRefs || c[0] != "r0@x" || c[len(c)-1] != "r49@x" {
		t.Errorf("capRefs: %v", c)
	}
}

func TestCompose(t *testing.T) {
	o := &outgoing{
		From: "me@a.test", To: "you@b.test",
		Subject:   "hi\r\nBcc: victim@x.example\x00 there",
		MessageID: "xmpp.1@a.test", InReplyTo: "p@b", References: []string{"r@b", "p@b"},
		Body: "line1\nline2\r.\r\n.\rBcc: evil\n\x00end" + strings.Repeat("é", 100),
		Date: time.Unix(0, 0),
	}
	data, err := compose(o)
	if err != nil {
		t.Fatal(err)
	}
	s := string(data)
	for i := 0; i < len(s); i++ {
		if s[i] == '\r' && (i+1 >= len(s) || s[i+1] != '\n') || s[i] == '\n' && (i == 0 || s[i-1] != '\r') {
			t.Fatalf("bare CR or LF at %d: %q", i, s)
		}
		if s[i] == 0 {
			t.Fatal("NUL on the wire")
		}
	}
	hdr, _, _ := strings.Cut(s, "\r\n\r\n")
	for _, l := range strings.Split(hdr, "\r\n") {
		if strings.HasPrefix(strings.ToLower(l), "bcc") {
			t.Errorf("injected header: %q", l)
		}
		if len(l) > 998 {
			t.Errorf("header line of %d bytes", len(l))
		}
	}
	pm := parseMail(strings.NewReader(s), defaultLimits)
	if pm.Subject != "hi Bcc: victim@x.example there" || pm.MessageID != "xmpp.1@a.test" || pm.InReplyTo != "p@b" {
		t.Errorf("round trip: %q %q %q", pm.Subject, pm.MessageID, pm.InReplyTo)
	}
	if !strings.Contains(pm.Body, "line1\nline2\n.\n.\nBcc: evil\nend") {
		t.Errorf("body: %q", pm.Body)
	}
	// Unsafe addresses and IDs are refused, not cleaned.
	for _, bad := range []*outgoing{
		{From: "me@a.test", To: "you@b.test\r\nRCPT TO:<x@y>", MessageID: "m@a"},
		{From: "me@a.test", To: "you@b.test", MessageID: "m@a>\r\nBcc: x"},
		{From: "me@a.test", To: "you@b.test", MessageID: "m@a", References: []string{"a b"}},
	} {
		if _, err := compose(bad); err == nil {
			t.Errorf("composed %+v", bad)
		}
	}
	// Long and non-ASCII subjects are encoded and folded.
	o.Subject = strings.Repeat("Grüße ", 60)
	data, _ = compose(o)
	pm = parseMail(strings.NewReader(string(data)), defaultLimits)
	if pm.Subject != strings.TrimSpace(o.Subject) {
		t.Errorf("long subject: %q", pm.Subject)
	}
}

func TestMessageID(t *testing.T) {
	r := func() string { return "rnd" }
	a := messageID("1:me@a.test", "x1", "phone", "you@b", "s", "body", r)
	if a != messageID("1:me@a.test", "x1", "phone", "you@b", "s", "body", r) {
		t.Error("not deterministic")
	}
	if a == messageID("1:me@a.test", "x1", "phone", "you@b", "s", "other body", r) {
		t.Error("a reused stanza id with another text gets the same Message-ID")
	}
	if !strings.HasSuffix(a, "@a.test") || messageID("1:me@a.test", "", "", "", "", "", r) != "xmpp.rnd@a.test" {
		t.Errorf("id %q", a)
	}
	if _, ok := cleanMsgID(a); !ok {
		t.Errorf("unsafe id %q", a)
	}
}

func TestLegacyID(t *testing.T) {
	for _, tc := range []struct {
		folder string
		uv     uint32
		uid    uint32
		id     string
	}{{"INBOX", 7, 42, "7:42"}, {"Lists/go", 1, 2, "1:2:Lists/go"}} {
		id := legacyID(tc.folder, tc.uv, imapUID(tc.uid))
		if id != tc.id {
			t.Errorf("legacyID = %q", id)
		}
		f, uv, uid, ok := parseLegacyID(id)
		if !ok || f != tc.folder || uv != tc.uv || uint32(uid) != tc.uid {
			t.Errorf("parse %q: %q %d %d %v", id, f, uv, uid, ok)
		}
	}
	if _, _, _, ok := parseLegacyID("<xmpp.1@a.test>"); ok {
		t.Error("a Message-ID parsed as a UID")
	}
}

func TestAttachmentToken(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	tok := &attToken{Expires: 123, Folder: "INBOX", Validity: 9, UID: 77, Part: []int{2, 1}, Encoding: "base64", Type: "application/pdf", Name: "a b.pdf"}
	sealed := seal(key, tok.encode())
	p, ok := unseal(key, sealed)
	if !ok {
		t.Fatal("unseal")
	}
	back, ok := decodeToken(p)
	if !ok || back.UID != 77 || back.Name != "a b.pdf" || len(back.Part) != 2 || back.Part[0] != 2 {
		t.Errorf("decoded %+v", back)
	}
	if _, ok := unseal([]byte("another key another key another "), sealed); ok {
		t.Error("unsealed with another key")
	}
	if _, ok := unseal(key, sealed[:len(sealed)-2]+"AA"); ok {
		t.Error("forged MAC accepted")
	}
}

func TestDiscover(t *testing.T) {
	r := fakeResolver{
		"_imaps._tcp.example.org":       {{Target: "mail.provider.example.", Port: 993}},
		"_submission._tcp.example.org":  {{Target: "smtp.provider.example.", Port: 587}},
		"_submissions._tcp.example.org": {{Target: ".", Port: 0}},
	}
	up := map[string]bool{"mail.provider.example:993": true, "smtp.provider.example:587": true, "imap.other.example:143": true, "smtp.other.example:465": true}
	probe := func(_ context.Context, addr string) bool { return up[addr] }
	sv, ok := discover(context.Background(), r, probe, "example.org", false)
	if !ok || sv != (server{"mail.provider.example", 993, secTLS}) {
		t.Errorf("imap: %+v %v", sv, ok)
	}
	sv, ok = discover(context.Background(), r, probe, "example.org", true)
	if !ok || sv != (server{"smtp.provider.example", 587, secSTARTTLS}) {
		t.Errorf("smtp: %+v %v", sv, ok)
	}
	sv, ok = discover(context.Background(), r, probe, "other.example", false)
	if !ok || sv != (server{"imap.other.example", 143, secSTARTTLS}) {
		t.Errorf("imap by name: %+v %v", sv, ok)
	}
	sv, ok = discover(context.Background(), r, probe, "other.example", true)
	if !ok || sv != (server{"smtp.other.example", 465, secTLS}) {
		t.Errorf("smtp by name: %+v %v", sv, ok)
	}
	if _, ok := discover(context.Background(), r, probe, "nothing.example", true); ok {
		t.Error("found a server for nothing.example")
	}
	// Verify fills the form's empty servers in.
	tr := New()
	tr.resolver, tr.probe = r, probe
	st := &settings{Address: "jane@example.org", Discover: true}
	vals := map[string]string{}
	if err := tr.fillServers(context.Background(), st, vals); err != nil {
		t.Fatal(err)
	}
	if vals[fIMAPHost] != "mail.provider.example" || vals[fSMTPPort] != "587" || vals[fSMTPSecurity] != secSTARTTLS {
		t.Errorf("values %v", vals)
	}
	st = &settings{Address: "jane@nothing.example", Discover: true}
	var ce *core.Error
	if err := tr.fillServers(context.Background(), st, nil); !errors.As(err, &ce) || ce.Condition != "remote-server-not-found" {
		t.Errorf("nothing found: %v", err)
	}
}

type fakeResolver map[string][]*net.SRV

func (f fakeResolver) LookupSRV(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
	recs, ok := f["_"+service+"._"+proto+"."+name]
	if !ok {
		return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
	}
	return "", recs, nil
}

// memState is an in-memory core.StateStore.
type memState struct {
	mu sync.Mutex
	m  map[string]string
}

func newMemState() *memState { return &memState{m: map[string]string{}} }

func (s *memState) Get(_ context.Context, k string) (string, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return v, ok, nil
}

func (s *memState) Set(_ context.Context, k, v string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[k] = v
	return nil
}

func (s *memState) Delete(_ context.Context, k string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, k)
	return nil
}
