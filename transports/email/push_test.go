package email

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// TestPushNotices: with push set up (Dovecot's push_notification plugin
// calling the gateway), registering asks the mail server for notices
// (METADATA), and mail delivered to the mailbox reaches the user though
// the gateway neither IDLEs nor polls (hourly) — only the notice wakes it.
// The endpoint refuses what is not a notice from the server, each with its
// own status.
func TestPushNotices(t *testing.T) {
	e := testMailEnv(t)
	addr, secretFile := os.Getenv("TRANSPORTD_TEST_PUSH_ADDR"), os.Getenv("TRANSPORTD_TEST_PUSH_SECRET_FILE")
	if addr == "" || secretFile == "" {
		t.Fatal("TRANSPORTD_TEST_PUSH_ADDR or TRANSPORTD_TEST_PUSH_SECRET_FILE not set: the Dovecot of scripts/testenv.sh sets them")
	}
	secret, err := os.ReadFile(secretFile)
	if err != nil {
		t.Fatal(err)
	}
	ih, _, _ := strings.Cut(e.imap, ":")
	g := startGW(t, e, gwOpts{httpAddr: addr, extra: `idle = "false"
poll_interval = "1h"
push_secret_file = "` + secretFile + `"
push_hosts = "` + ih + `"
`})
	ic := imapDial(t, e, "user9@a.test")
	t.Cleanup(func() { // (other tests' mail to user9 would be announced to nobody)
		_ = ic.SetMetadata("", map[string]*[]byte{pushMetadataKey: nil}).Wait()
	})
	c := dialUser(t, e, "user9", "a.test")

	waitUntil(t, wait, "the push METADATA entry", func() bool {
		data, err := ic.GetMetadata("", []string{pushMetadataKey}, nil).Wait()
		if err != nil {
			t.Fatal(err)
		}
		v := data.Entries[pushMetadataKey]
		return v != nil && string(*v) == "user=user9@a.test"
	})
	run := xmpptest.RandomID()[:6]
	for i := range 3 {
		subject := "pushed " + run + " " + string(rune('a'+i))
		raw := crlf("From: feed@example.org\nTo: user9@a.test\nSubject: " + subject + "\n\nhello\n")
		if err := lmtpDeliver(e.lmtp, "user9@a.test", raw); err != nil {
			t.Fatal(err)
		}
		c.Expect(wait, "the mail "+subject, func(el *core.Element) bool {
			return isChatFrom(`feed\40example.org@email.a.test`)(el) && el.ChildText("", "subject") == subject
		})
	}

	url := g.httpURL + "/email/a.test/push"
	key := strings.TrimSpace(string(secret))
	for _, tc := range []struct {
		name, method, user, pass, body string
		want                           int
	}{
		{"GET", "GET", "dovecot", key, "", 405},
		{"no secret", "PUT", "", "", `{"user":"user9@a.test"}`, 401},
		{"wrong secret", "PUT", "dovecot", key + "x", `{"user":"user9@a.test"}`, 401},
		{"not JSON", "PUT", "dovecot", key, `user=user9`, 400},
		{"no user", "PUT", "dovecot", key, `{"folder":"INBOX"}`, 400},
		{"unknown mailbox", "PUT", "dovecot", key, `{"user":"user10@a.test"}`, 404},
		{"too large", "PUT", "dovecot", key, `{"user":"user9@a.test","snippet":"` + strings.Repeat("x", maxPushBody) + `"}`, 413},
		{"a notice", "POST", "dovecot", key, `{"user":"USER9@a.test","event":"messageNew"}`, 204},
	} {
		req, _ := http.NewRequest(tc.method, url, strings.NewReader(tc.body))
		if tc.user != "" {
			req.SetBasicAuth(tc.user, tc.pass)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, res.StatusCode, tc.want)
		}
	}
}

func TestParsePush(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	short := filepath.Join(dir, "short")
	os.WriteFile(good, []byte("0123456789abcdef0123\n"), 0o600)
	os.WriteFile(short, []byte("abc"), 0o600)
	env := func(k string) (string, bool) {
		v, ok := map[string]string{"PUSH": "fedcba9876543210fedc"}[k]
		return v, ok
	}
	for i, tc := range []struct {
		d       map[string]string
		on      bool
		errHas  string
		wantOut string // a host that must be wanted
	}{
		0: {d: map[string]string{}},
		1: {d: map[string]string{dPushSecretFile: good, dPushHosts: "Mail.Example.org., imap.x"}, on: true, wantOut: "mail.example.org"},
		2: {d: map[string]string{dPushSecretEnv: "PUSH", dPushHosts: "imap.x"}, on: true, wantOut: "IMAP.X"},
		3: {d: map[string]string{dPushSecretFile: good}, errHas: "push_hosts"},
		4: {d: map[string]string{dPushHosts: "imap.x"}, errHas: "push_hosts: needs push_secret_file"},
		5: {d: map[string]string{dPushSecretFile: short, dPushHosts: "imap.x"}, errHas: "shorter than"},
		6: {d: map[string]string{dPushSecretFile: filepath.Join(dir, "none"), dPushHosts: "imap.x"}, errHas: "does not exist"},
		7: {d: map[string]string{dPushSecretEnv: "NOPE", dPushHosts: "imap.x"}, errHas: "NOPE is not set"},
		8: {d: map[string]string{"push_secret": "0123456789abcdef0123", dPushHosts: "imap.x"}, errHas: "inline secrets"},
		9: {d: map[string]string{dPushSecretFile: good, dPushSecretEnv: "PUSH", dPushHosts: "imap.x"}, errHas: "only one"},
	} {
		p, err := parsePush(tc.d, env)
		if tc.errHas != "" {
			if err == nil || !strings.Contains(err.Error(), tc.errHas) {
				t.Errorf("%d: error %v, want one with %q", i, err, tc.errHas)
			}
			if err != nil && (strings.Contains(err.Error(), "0123456789abcdef") || strings.Contains(err.Error(), "fedcba")) {
				t.Errorf("%d: the error quotes the secret: %v", i, err)
			}
			continue
		}
		if err != nil || (p != nil) != tc.on {
			t.Errorf("%d: %v %v", i, p, err)
			continue
		}
		if tc.wantOut != "" && !p.wants(tc.wantOut) {
			t.Errorf("%d: host %q not wanted", i, tc.wantOut)
		}
		if p.wants("other.example") {
			t.Errorf("%d: a host not listed is wanted", i)
		}
	}
}
