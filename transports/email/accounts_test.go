package email

import (
	"strings"
	"testing"
	"time"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// TestTwoMailboxes: a user with two mailboxes on one gateway (the main
// account and one named "work") writes to the same correspondent from each;
// each mail leaves from its own address, and mail to the work mailbox
// arrives from the work account's contact JID.
func TestTwoMailboxes(t *testing.T) {
	e := testMailEnv(t)
	startGW(t, e, gwOpts{})
	const gw = "email.a.test"
	c := dialUser(t, e, "user20", "a.test")
	res := c.IQ(registerIQ(gw, map[string]string{"core_account": "work", "email": "user1@b.test", "password": e.password}))
	if res.Get("type") != "result" {
		t.Fatalf("registering the second mailbox: %s", res)
	}
	run := xmpptest.RandomID()[:6]
	for _, tc := range []struct{ to, subject string }{
		{`user2\40a.test@` + gw, "from main " + run},
		{`work\3auser2\40a.test@` + gw, "from work " + run},
	} {
		msg := core.NewElement("", "message", "to", tc.to, "type", "chat", "id", xmpptest.RandomID())
		msg.AddText("", "subject", tc.subject)
		msg.AddText("", "body", "hello "+run)
		c.Send(msg)
	}
	ic := imapDial(t, e, "user2@a.test")
	for subject, from := range map[string]string{"from main " + run: "user20@a.test", "from work " + run: "user1@b.test"} {
		var mails []*parsedMail
		for i := 0; i < 50 && len(mails) == 0; i++ {
			mails = findMail(t, ic, "INBOX", subject)
			if len(mails) == 0 {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if len(mails) != 1 {
			t.Fatalf("%d mails %q at the correspondent", len(mails), subject)
		}
		if mails[0].From != from {
			t.Errorf("%q left from %s, want %s", subject, mails[0].From, from)
		}
	}

	raw := "From: Carol <carol@example.org>\r\nTo: user1@b.test\r\nSubject: to work " + run + "\r\nMessage-ID: <w" + run + "@example.org>\r\n\r\nfor the work box\r\n"
	if err := lmtpDeliver(e.lmtp, "user1@b.test", raw); err != nil {
		t.Fatal(err)
	}
	got := c.Expect(wait, "mail to the work mailbox", isChatFrom(`work\3acarol\40example.org@`+gw))
	if !strings.Contains(got.ChildText("", "subject"), "to work "+run) {
		t.Errorf("work mail = %s", got)
	}
}
