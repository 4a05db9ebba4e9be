package irc

import (
	"context"
	"errors"
	"maps"
	"os"
	"strings"
	"testing"

	"github.com/ergochat/irc-go/ircmsg"
	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// SASL PLAIN against a real server: InspIRCd relaying SASL to Atheme
// services (scripts/testenv.sh up atheme). The fake server's TestSASL
// covers the refusals a real server cannot be made to give.
func TestSASLWithServices(t *testing.T) {
	addr := os.Getenv("TRANSPORTD_TEST_IRC_SASL_ADDR")
	if addr == "" {
		xmpptest.Missing(t, "InspIRCd with Atheme not running; run scripts/testenv.sh up atheme")
	}
	run := xmpptest.RandomID()[:6]
	acct, pw := "acct"+run, "pw-"+run

	// An account registered with NickServ, as a user would.
	reg := dialRaw(t, addr, acct)
	reg.send("PRIVMSG", "NickServ", "REGISTER "+pw+" "+acct+"@example.org")
	reg.expect("NickServ's confirmation", func(m ircmsg.Message) bool {
		return m.Command == "NOTICE" && strings.Contains(last(m.Params), "registered")
	})
	reg.send("QUIT")
	reg.expect("the end of the registering connection", func(m ircmsg.Message) bool { return m.Command == "ERROR" })

	d := map[string]string{dAllowedServers: "127.0.0.1", dPort: port(addr), dTLS: "false", dConnectTimeout: "20s", dTrace: "true"}
	values := map[string]string{fNetwork: "127.0.0.1", fAuth: authSASL, fPassword: pw, fNick: acct}
	tr := New()
	ctx := context.Background()

	// Registration's check: the right password passes, a wrong one is
	// refused as not-authorized.
	if err := tr.Verify(ctx, &core.Account{Values: values, Defaults: d}); err != nil {
		t.Fatalf("Verify with the right password: %v", err)
	}
	bad := maps.Clone(values)
	bad[fPassword] = "wrong-" + run
	var ce *core.Error
	if err := tr.Verify(ctx, &core.Account{Values: bad, Defaults: d}); !errors.As(err, &ce) || ce.Condition != stanza.NotAuthorized {
		t.Errorf("Verify with a wrong password = %v, want not-authorized", err)
	}

	// A session joins a channel under a nick of its own, logged in as the
	// account: the server shows the account to others.
	rec := newRecorder(t)
	s := tr.NewSession(&core.Account{ID: 1, JID: "sasl@a.test", Values: values, Defaults: d}, rec).(*session)
	sctx, cancel := context.WithCancel(ctx)
	go s.Run(sctx)
	t.Cleanup(func() {
		cancel()
		<-s.done.Chan()
	})
	nick, ch := "nick"+run, "#sasl"+run
	_ = s.JoinRoom(ctx, ch+"%127.0.0.1", nick, "")
	rec.wait = 2 * xwait
	rec.next(t, "joined", func(ev any) bool {
		if e, ok := ev.(recError); ok {
			t.Fatalf("join failed: %v", e.err)
		}
		return isJoined(ch + "%127.0.0.1")(ev)
	})
	w := dialRaw(t, addr, "watch"+run)
	w.send("WHOIS", nick)
	if m := w.expect("330 (logged in as)", func(m ircmsg.Message) bool { return m.Command == "330" }); len(m.Params) < 3 || m.Params[2] != acct {
		t.Errorf("WHOIS %s: logged in as %q, want %s", nick, m.Params, acct)
	}
}
