package email

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"

	"transportd/core"
)

// memIMAP is an in-process IMAP server. (imapmemserver does not announce
// mail appended just before IDLE starts, so the test turns IDLE off and
// tests polling.)
func memIMAP(t *testing.T) (addr string, user *imapmemserver.User) {
	mem := imapmemserver.New()
	user = imapmemserver.NewUser("jane@x.test", "pw")
	if err := user.Create("Box", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(user)
	return serveMemIMAP(t, mem, imap.CapSet{imap.CapIMAP4rev1: {}}), user
}

// serveMemIMAP serves mem on a loopback port until the test ends, with
// caps (nil: the server's own) and plain-text login; it returns the
// address.
func serveMemIMAP(t *testing.T, mem *imapmemserver.Server, caps imap.CapSet) string {
	srv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         caps,
		InsecureAuth: true,
		Logger:       nopLogger{},
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}

func memAppend(t *testing.T, addr, subject string) {
	t.Helper()
	c, err := imapclient.DialInsecure(addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Login("jane@x.test", "pw").Wait(); err != nil {
		t.Fatal(err)
	}
	raw := crlf("From: bob@y.example\nSubject: " + subject + "\n\nbody\n")
	cmd := c.Append("Box", int64(len(raw)), nil)
	cmd.Write([]byte(raw))
	cmd.Close()
	if _, err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
}

func memSession(t *testing.T, addr string, sink *fakeSink) (stop func()) {
	h, p, _ := net.SplitHostPort(addr)
	a := &core.Account{
		ID: 1, JID: "jane@a.test",
		Values: map[string]string{fEmail: "jane@x.test", fPassword: "pw", fFolders: "Box"},
		Defaults: map[string]string{fIMAPHost: h, fIMAPPort: p, fIMAPSecurity: secPlain, fSMTPHost: h, fSMTPPort: "1",
			fSMTPSecurity: secPlain, dAllowPlaintext: "true", dDiscover: "false", dPollInterval: "100ms", dIdle: "false"},
	}
	s := newSession(New(), a, sink)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); s.Run(ctx) }()
	return func() { cancel(); <-done }
}

// TestPollingAndUIDValidity: a server without IDLE is polled; a folder
// whose UIDVALIDITY changed starts over at its end without a flood of old
// mail.
func TestPollingAndUIDValidity(t *testing.T) {
	addr, user := memIMAP(t)
	sink := newFakeSink(t)
	stop := memSession(t, addr, sink)
	sink.waitFor(t, wait, "connected", func() bool { return len(sink.states) > 0 && sink.states[len(sink.states)-1] == core.StateConnected })
	memAppend(t, addr, "first")
	sink.waitFor(t, wait, "first mail (polled)", func() bool { return len(sink.msgs) == 1 })
	if m := sink.msgs[0]; m.Subject != "first" || !strings.HasSuffix(m.LegacyID, ":Box") || !strings.HasPrefix(m.Body, "[Box]") {
		t.Errorf("message %+v", m)
	}
	stop()

	// The folder is rebuilt while the gateway is away: new UIDVALIDITY,
	// three mails in it.
	if err := user.Delete("Box"); err != nil {
		t.Fatal(err)
	}
	if err := user.Create("Box", nil); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"rebuilt 1", "rebuilt 2", "rebuilt 3"} {
		memAppend(t, addr, s)
	}
	stop = memSession(t, addr, sink)
	defer stop()
	time.Sleep(500 * time.Millisecond)
	memAppend(t, addr, "after")
	sink.waitFor(t, wait, "the mail after the change", func() bool { return len(sink.msgs) >= 2 })
	time.Sleep(300 * time.Millisecond)
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.msgs) != 2 || sink.msgs[1].Subject != "after" {
		var subj []string
		for _, m := range sink.msgs {
			subj = append(subj, m.Subject)
		}
		t.Errorf("delivered %q, want [first after]", subj)
	}
}
