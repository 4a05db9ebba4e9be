package email

import (
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"transportd/core"
	"transportd/internal/xmpptest"
)

const nsCarbons = "urn:xmpp:carbons:2"

func TestOwnMessageID(t *testing.T) {
	for _, id := range []string{
		messageID("7:me@a.test", "x1", "phone", "you@b", "s", "body", randomHex),
		messageID("7:me@a.test", "", "", "you@b", "s", "body", randomHex),
		strings.ToUpper(messageID("7:me@a.test", "x2", "", "you@b", "", "", randomHex)),
	} {
		if !ownMessageID("me@a.test", id) {
			t.Errorf("%q not recognised as the gateway's", id)
		}
		if ownMessageID("me@b.test", id) {
			t.Errorf("%q recognised for another domain", id)
		}
	}
	for _, id := range []string{
		"", "xmpp.abc@a.test", "CAF1234@mail.gmail.com", "xmpp.0123456789abcdef0123456789abcdez@a.test",
		"xmpp.aaaaaaaaaaaaaaaaaaaaaaaa@a.test.evil", "yxmpp.aaaaaaaaaaaaaaaaaaaaaaaa@a.test",
	} {
		if ownMessageID("me@a.test", id) {
			t.Errorf("%q recognised as the gateway's", id)
		}
	}
}

func TestRecipientsAndRanking(t *testing.T) {
	pm := parseMail(strings.NewReader(crlf(`From: Me <me@a.test>
To: "Dora D." <Dora@Example.org>, undisclosed-recipients:;
Cc: =?utf-8?q?J=C3=BCrgen?= <j@example.net>, dora@example.org
Bcc: b@example.com

hi
`)), defaultLimits)
	want := []correspondent{{"dora@example.org", "Dora D."}, {"j@example.net", "Jürgen"}, {"b@example.com", ""}}
	if len(pm.Recipients) != len(want) {
		t.Fatalf("recipients = %v", pm.Recipients)
	}
	for i := range want {
		if pm.Recipients[i] != want[i] {
			t.Errorf("recipient %d = %v, want %v", i, pm.Recipients[i], want[i])
		}
	}
	now := time.Now()
	got := rankCorrespondents([]dated{
		{correspondent{"old@x.org", "Old"}, now.Add(-time.Hour)},
		{correspondent{"me@a.test", "Me"}, now},
		{correspondent{"no-reply@shop.example", ""}, now},
		{correspondent{"new@x.org", ""}, now.Add(-time.Minute)},
		{correspondent{"new@x.org", "New Name"}, now.Add(-2 * time.Minute)},
		{correspondent{"third@x.org", ""}, now.Add(-3 * time.Hour)},
	}, "me@a.test", 2)
	if len(got) != 2 || got[0] != (correspondent{"new@x.org", "New Name"}) || got[1] != (correspondent{"old@x.org", "Old"}) {
		t.Errorf("ranked = %v", got)
	}
}

// appendTo stores a mail in a folder of a mailbox, as another mail client
// of the user would.
func appendTo(t *testing.T, c *imapclient.Client, folder, raw string, when time.Time) {
	t.Helper()
	cmd := c.Append(folder, int64(len(raw)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}, Time: when})
	if _, err := cmd.Write([]byte(raw)); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

func enableCarbons(t *testing.T, c *xmpptest.Client) {
	t.Helper()
	enable := core.NewElement("", "iq", "type", "set")
	enable.Add(core.NewElement(nsCarbons, "enable"))
	if res := c.IQ(enable); res.Get("type") != "result" {
		t.Fatalf("enabling carbons: %s", res)
	}
}

func isCarbon(el *core.Element) bool {
	return el.Name.Local == "message" && el.Child(nsCarbons, "sent") != nil
}

func carbonInner(el *core.Element) *core.Element {
	return el.Child(nsCarbons, "sent").Child("urn:xmpp:forward:0", "forwarded").Child("", "message")
}

// TestSentCarbons: a mail the user files in Sent with another mail client
// (an answer to a mail that came through the gateway) reaches the user's
// XMPP client as a sent carbon to the correspondent, in the conversation's
// thread; the copy of a mail sent through the gateway does not.
func TestSentCarbons(t *testing.T) {
	e := testMailEnv(t)
	startGW(t, e, gwOpts{extra: `poll_interval = "1s"`})
	const gw = "email.a.test"
	const box = "user3@a.test"
	c := xmpptest.Dial(t, e.xmpp, "user25@a.test", false)
	waitComponent(t, c, gw)
	enableCarbons(t, c)
	register(t, c, gw, map[string]string{"email": box, "password": e.password})
	run := xmpptest.RandomID()[:6]
	dora := "dora-" + run + "@example.org"
	doraJID := `dora-` + run + `\40example.org@` + gw

	// A mail from Dora comes in.
	raw := crlf("From: Dora <" + dora + ">\nTo: " + box + "\nSubject: Plans " + run + "\nMessage-ID: <plans-" + run + "@example.org>\nDate: " + time.Now().Format(time.RFC1123Z) + "\n\nShall we meet?\n")
	if err := lmtpDeliver(e.lmtp, box, raw); err != nil {
		t.Fatal(err)
	}
	in := c.Expect(wait, "Dora's mail", isChatFrom(doraJID))
	thread := in.ChildText("", "thread")
	if thread == "" {
		t.Fatalf("no thread: %s", in)
	}

	// A mail through the gateway: its copy lands in Sent.
	viaGW := "through the gateway " + run
	msg := core.NewElement("", "message", "to", `user4\40a.test@`+gw, "type", "chat", "id", "gw-"+run)
	msg.AddText("", "subject", "Via gateway "+run)
	msg.AddText("", "body", viaGW)
	c.Send(msg)
	ic := imapDial(t, e, box)
	for i := 0; ; i++ {
		if len(findMail(t, ic, "Sent", "Via gateway "+run)) == 1 {
			break
		}
		if i == 100 {
			t.Fatal("the gateway's mail is not in Sent")
		}
		time.Sleep(100 * time.Millisecond)
	}

	// An old mail filed now (an import) is not news.
	old := time.Now().Add(-30 * 24 * time.Hour)
	oldText := "from the archive " + run
	appendTo(t, ic, "Sent", crlf("From: "+box+"\nTo: "+dora+"\nSubject: Old\nDate: "+old.Format(time.RFC1123Z)+"\n\n"+oldText+"\n"), old)

	// The answer to Dora, written on the phone and filed in Sent after them.
	start := time.Now()
	answer := "Yes, at noon. " + run
	appendTo(t, ic, "Sent", crlf("From: User Three <"+box+">\nTo: "+box+", Dora <"+dora+">\nCc: user4@a.test\nSubject: Re: Plans "+run+
		"\nMessage-ID: <answer-"+run+"@phone.example>\nIn-Reply-To: <plans-"+run+"@example.org>\nReferences: <plans-"+run+"@example.org>\nDate: "+
		time.Now().Format(time.RFC1123Z)+"\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\n\n"+answer+"\n"), time.Now())
	carbon := c.Expect(wait, "the sent carbon of the answer", func(el *core.Element) bool {
		return isCarbon(el) && carbonInner(el).ChildText("", "body") == answer
	})
	t.Logf("sent carbon %v after the mail was filed in Sent", time.Since(start).Round(time.Millisecond))
	inner := carbonInner(carbon)
	if inner.ChildText("", "body") != answer || inner.Get("to") != doraJID || !strings.HasPrefix(inner.Get("from"), "user25@a.test") {
		t.Errorf("carbon = %s", carbon)
	}
	if inner.ChildText("", "thread") != thread || inner.ChildText("", "subject") != "Re: Plans "+run {
		t.Errorf("carbon in thread %q with subject %q, want thread %q: %s", inner.ChildText("", "thread"), inner.ChildText("", "subject"), thread, carbon)
	}
	if inner.Child("urn:xmpp:delay", "delay") == nil {
		t.Errorf("carbon without a delay stamp: %s", carbon)
	}
	// The gateway's own copy and the old mail (filed before the answer,
	// so looked at first) never come back.
	if el, err := c.Next(1500*time.Millisecond, func(el *core.Element) bool {
		return isCarbon(el) && (strings.Contains(carbonInner(el).ChildText("", "body"), viaGW) || strings.Contains(carbonInner(el).ChildText("", "body"), oldText))
	}); err == nil {
		t.Errorf("the gateway's own mail or an old one came back as a carbon: %s", el)
	}
	if el, err := c.Next(100*time.Millisecond, func(el *core.Element) bool {
		return isCarbon(el) && carbonInner(el).ChildText("", "body") == answer
	}); err == nil {
		t.Errorf("the answer was shown twice: %s", el)
	}
}

// TestCorrespondentsAsContacts: on registration, the people of the latest
// mails (senders in INBOX, recipients in Sent) are pushed into the user's
// roster with their names (a.test grants the roster privilege); a mailing
// list is not.
func TestCorrespondentsAsContacts(t *testing.T) {
	e := testMailEnv(t)
	startGW(t, e, gwOpts{})
	const gw = "email.a.test"
	const box = "user5@a.test"
	run := xmpptest.RandomID()[:6]
	date := time.Now().Format(time.RFC1123Z)
	for _, raw := range []string{
		"From: News " + run + " <news-" + run + "@example.org>\nList-Id: <news.example.org>\nTo: " + box + "\nSubject: Digest\nDate: " + date + "\n\nnews\n",
		"From: =?utf-8?q?Erin_M=C3=BCller?= <erin-" + run + "@example.org>\nTo: " + box + "\nSubject: Hello\nDate: " + date + "\n\nhello\n",
	} {
		if err := lmtpDeliver(e.lmtp, box, crlf(raw)); err != nil {
			t.Fatal(err)
		}
	}
	ic := imapDial(t, e, box)
	appendTo(t, ic, "Sent", crlf("From: "+box+"\nTo: Frank "+run+" <frank-"+run+"@example.net>\nSubject: Hi\nDate: "+date+"\n\nhi\n"), time.Now())

	c := xmpptest.Dial(t, e.xmpp, "user26@a.test", false)
	waitComponent(t, c, gw)
	register(t, c, gw, map[string]string{"email": box, "password": e.password})
	pushOf := func(jid string) func(*core.Element) bool {
		return func(el *core.Element) bool {
			q := el.Child("jabber:iq:roster", "query")
			return el.Name.Local == "iq" && el.Get("type") == "set" && q != nil && q.Child("", "item") != nil && q.Child("", "item").Get("jid") == jid
		}
	}
	for jid, name := range map[string]string{
		`erin-` + run + `\40example.org@` + gw:  "Erin Müller",
		`frank-` + run + `\40example.net@` + gw: "Frank " + run,
	} {
		push := c.Expect(wait, "roster push of "+jid, pushOf(jid))
		item := push.Child("jabber:iq:roster", "query").Child("", "item")
		if item.Get("name") != name || item.ChildText("", "group") != "E-mail" {
			t.Errorf("roster item = %s", item)
		}
	}
	if el, err := c.Next(time.Second, pushOf(`news-`+run+`\40example.org@`+gw)); err == nil {
		t.Errorf("a mailing list was added as a contact: %s", el)
	}
}
