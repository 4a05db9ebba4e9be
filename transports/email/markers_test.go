package email

import (
	"slices"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// TestReadMarkers: mail delivered by the MTA reaches the user; a
// displayed marker (XEP-0333) for one message and a receipt (XEP-0184)
// for another set \Seen on those mails in the Dovecot mailbox, and a mail
// nobody marked stays unread.
func TestReadMarkers(t *testing.T) {
	e := testMailEnv(t)
	startGW(t, e, gwOpts{})
	c := dialUser(t, e, "user8", "a.test")
	run := xmpptest.RandomID()[:6]
	const contact = `jane\40example.org@email.a.test`
	subjects := []string{"displayed " + run, "received " + run, "untouched " + run}
	ids := map[string]string{}
	for _, s := range subjects {
		raw := crlf("From: Jane <jane@example.org>\nTo: user8@a.test\nSubject: " + s + "\nMessage-ID: <" + s[:4] + run + "@example.org>\n\nhello\n")
		if err := smtpInject(e.smtp, "jane@example.org", "user8@a.test", raw); err != nil {
			t.Fatal(err)
		}
		m := c.Expect(wait, "the mail "+s, func(el *core.Element) bool {
			return isChatFrom(contact)(el) && el.ChildText("", "subject") == s
		})
		if m.Get("id") == "" || m.Child(nsMarkers, "markable") == nil {
			t.Fatalf("message without id or markable: %s", m)
		}
		ids[s] = m.Get("id")
	}
	marker := core.NewElement("", "message", "to", contact, "type", "chat")
	marker.Add(core.NewElement(nsMarkers, "displayed", "id", ids[subjects[0]]))
	c.Send(marker)
	receipt := core.NewElement("", "message", "to", contact, "type", "chat")
	receipt.Add(core.NewElement(nsReceipts, "received", "id", ids[subjects[1]]))
	c.Send(receipt)

	ic := imapDial(t, e, "user8@a.test")
	for _, s := range subjects[:2] {
		waitUntil(t, wait, "\\Seen on "+s, func() bool { return seen(t, ic, s) })
	}
	time.Sleep(500 * time.Millisecond) // (a stray \Seen would have come with the others)
	if seen(t, ic, subjects[2]) {
		t.Errorf("%q was marked read, though no marker was sent for it", subjects[2])
	}
}

const (
	nsMarkers  = "urn:xmpp:chat-markers:0"
	nsReceipts = "urn:xmpp:receipts"
)

// seen reports whether the INBOX mail with that exact Subject is \Seen.
func seen(t testing.TB, c *imapclient.Client, subject string) bool {
	t.Helper()
	if _, err := c.Select("INBOX", &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
		t.Fatal(err)
	}
	data, err := c.UIDSearch(&imap.SearchCriteria{Header: []imap.SearchCriteriaHeaderField{{Key: "Subject", Value: subject}}}, nil).Wait()
	if err != nil {
		t.Fatal(err)
	}
	uids := data.AllUIDs()
	if len(uids) != 1 {
		t.Fatalf("%d mails with subject %q", len(uids), subject)
	}
	msgs, err := c.Fetch(imap.UIDSetNum(uids[0]), &imap.FetchOptions{Flags: true}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("fetching flags: %v", err)
	}
	return slices.Contains(msgs[0].Flags, imap.FlagSeen)
}
