package email

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// nsXEP0184 is the namespace of message delivery receipts.
const nsXEP0184 = "urn:xmpp:receipts"

// testenvCmd runs scripts/testenv.sh with args (stopping or starting one
// of the shared test servers).
func testenvCmd(t *testing.T, e mailEnv, args ...string) {
	t.Helper()
	cmd := exec.Command(e.script, args...)
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("testenv %v: %v", args, err)
	}
}

// TestMTAOutage: the mail server the gateway submits to is down while the
// user keeps writing. Nothing is acknowledged meanwhile (no receipt: the
// mail was not accepted), the messages wait in the outbox, and once the
// MTA is back every mail is sent once, in the order written, and each
// receipt arrives.
func TestMTAOutage(t *testing.T) {
	e := testMailEnv(t)
	if e.script == "" {
		xmpptest.Missing(t, "TRANSPORTD_TEST_ENV_SCRIPT not set: cannot stop the MTA")
	}
	g := startGW(t, e, gwOpts{})
	a := dialUser(t, e, "user15", "a.test")
	b := dialUser(t, e, "user14", "b.test")
	run := xmpptest.RandomID()[:6]

	testenvCmd(t, e, "down", "smtpd")
	mtaDown := true
	t.Cleanup(func() {
		if mtaDown {
			testenvCmd(t, e, "up", "smtpd")
		}
	})
	const n = 5
	for i := range n {
		msg := core.NewElement("", "message", "to", `user14\40b.test@email.a.test`, "type", "chat", "id", fmt.Sprintf("mta-%s-%d", run, i))
		msg.AddText("", "subject", fmt.Sprintf("outage %s %d", run, i))
		msg.AddText("", "body", fmt.Sprintf("written while the MTA was down, %d", i))
		msg.Add(core.NewElement(nsXEP0184, "request"))
		a.Send(msg)
	}
	isReceipt := func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Child(nsXEP0184, "received") != nil
	}
	if el, err := a.Next(3*time.Second, isReceipt); err == nil {
		t.Fatalf("a receipt while the MTA was down: %s", el)
	}
	if pending, _ := g.st.Pending(t.Context(), 0, ""); pending < n {
		t.Errorf("%d items in the outbox while the MTA is down, want %d", pending, n)
	}

	testenvCmd(t, e, "up", "smtpd")
	mtaDown = false
	up := time.Now()
	receipts := map[string]bool{}
	for range n {
		el := a.Expect(2*time.Minute, "a receipt after the MTA came back", isReceipt)
		receipts[el.Child(nsXEP0184, "received").Get("id")] = true
	}
	t.Logf("all %d mails accepted %v after the MTA came back", n, time.Since(up).Round(time.Millisecond))
	for i := range n {
		if id := fmt.Sprintf("mta-%s-%d", run, i); !receipts[id] {
			t.Errorf("no receipt for %s (got %v)", id, receipts)
		}
	}
	for i := range n {
		want := fmt.Sprintf("outage %s %d", run, i)
		el := b.Expect(wait, want, isChatFrom(`user15\40a.test@email.b.test`))
		if got := el.ChildText("", "subject"); got != want {
			t.Fatalf("mail %d at B: subject %q, want %q (out of order or lost)", i, got, want)
		}
	}
	if el, err := b.Next(3*time.Second, isChatFrom(`user15\40a.test@email.b.test`)); err == nil {
		t.Errorf("a mail came twice or unexpected: %s", el)
	}
}
