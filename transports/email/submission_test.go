package email

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// TestSubmissionAuth: a user registers with Dovecot's submission service
// as the SMTP server (AUTH with the mailbox's password, then relayed to the
// MTA), and mail written in XMPP arrives in the recipient's mailbox. A
// password the SMTP server refuses is not-authorized at registration,
// naming the SMTP server, and nothing is stored; a recipient the MTA does
// not know comes back as an error.
func TestSubmissionAuth(t *testing.T) {
	e := testMailEnv(t)
	g := startGW(t, e, gwOpts{smtpAuth: true})
	c := xmpptest.Dial(t, e.xmpp, "user6@a.test", false)
	gw := "email.a.test"
	waitComponent(t, c, gw)
	subHost, subPort, _ := net.SplitHostPort(e.submit)
	submission := map[string]string{"smtp_host": subHost, "smtp_port": subPort, "smtp_security": "plain"}

	// A provider whose SMTP password differs from the IMAP one: IMAP (an
	// in-process server) takes "imap-only", Dovecot's submission does not.
	imapAddr := imapAccepting(t, "user6@a.test", "imap-only")
	ih, ip, _ := net.SplitHostPort(imapAddr)
	fields := map[string]string{"email": "user6@a.test", "password": "imap-only", "imap_host": ih, "imap_port": ip, "imap_security": "plain"}
	for k, v := range submission {
		fields[k] = v
	}
	res := c.IQ(registerIQ(gw, fields))
	if cond, text := xmpptest.Condition(res), xmpptest.ErrorText(res); cond != "not-authorized" ||
		!strings.Contains(text, "SMTP server "+e.submit) || !strings.Contains(text, "refused the login") {
		t.Errorf("wrong SMTP password: %s %q, want not-authorized naming the SMTP server", cond, text)
	}
	if _, err := g.st.GetAccount(t.Context(), "a.test", "email", "user6@a.test"); err == nil {
		t.Fatal("a registration refused by the SMTP server was stored")
	}

	fields = map[string]string{"email": "user6@a.test", "password": e.password}
	for k, v := range submission {
		fields[k] = v
	}
	register(t, c, gw, fields)

	run := xmpptest.RandomID()[:6]
	subject := "Submitted " + run
	msg := core.NewElement("", "message", "to", `user7\40a.test@`+gw, "type", "chat", "id", "sub-"+run)
	msg.AddText("", "subject", subject)
	msg.AddText("", "body", "sent through submission "+run)
	c.Send(msg)
	ic := imapDial(t, e, "user7@a.test")
	var got []*parsedMail
	waitUntil(t, wait, "the mail in user7's INBOX", func() bool {
		got = findMail(t, ic, "INBOX", subject)
		return len(got) > 0
	})
	if len(got) != 1 || got[0].From != "user6@a.test" || !strings.Contains(got[0].Body, "sent through submission "+run) {
		t.Errorf("user7 got %d mails: %+v", len(got), got)
	}

	// The MTA behind the submission service refuses an unknown recipient:
	// the user is told, with the server's words.
	bad := core.NewElement("", "message", "to", `nobody-`+run+`\40a.test@`+gw, "type", "chat", "id", "sub-bad-"+run)
	bad.AddText("", "body", "to nobody")
	c.Send(bad)
	errEl := c.Expect(wait, "an error for the unknown recipient", func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Get("type") == "error" && el.Get("id") == "sub-bad-"+run
	})
	if xmpptest.Condition(errEl) != "item-not-found" || !strings.Contains(xmpptest.ErrorText(errEl), "Invalid recipient") {
		t.Errorf("unknown recipient: %s %q", xmpptest.Condition(errEl), xmpptest.ErrorText(errEl))
	}
}

// imapAccepting is an in-process IMAP server with one mailbox, user and
// password.
func imapAccepting(t *testing.T, user, password string) string {
	mem := imapmemserver.New()
	u := imapmemserver.NewUser(user, password)
	if err := u.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(u)
	return serveMemIMAP(t, mem, nil)
}

// waitUntil polls cond until it holds or d has passed (then the test
// fails, saying what was waited for).
func waitUntil(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
