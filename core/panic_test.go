package core_test

import (
	"strings"
	"sync/atomic"
	"testing"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// panickyTransport is echoTransport whose NewSession panics once when
// the test asks: a bug in a transport, met in the user's drain.
type panickyTransport struct{ echoTransport }

var panicNextSession atomic.Bool

func init() {
	core.Register("panicky", func() core.Transport { return panickyTransport{} })
}

func (panickyTransport) Info() core.Info {
	i := echoTransport{}.Info()
	i.Name = "panicky"
	return i
}

func (panickyTransport) NewSession(a *core.Account, sink core.Sink) core.Session {
	if panicNextSession.CompareAndSwap(true, false) {
		panic("a transport bug")
	}
	return echoTransport{}.NewSession(a, sink)
}

// A panic while a user's events are handled ends that user without
// blocking the link: what the user sends meanwhile is dropped (the
// component's reader never waits on a queue nobody drains), and the user
// is built again from the stored account, its session working.
func TestUserRebuiltAfterPanic(t *testing.T) {
	env := xmpptest.Prosody(t)
	g := testGatewayWith(t, env, "panicky", "echo6", "")
	const gw = "echo6.a.test"
	c := xmpptest.Dial(t, env, "user8@a.test", false)
	waitConnected(t, c, gw)
	register(t, c, gw, map[string]string{"username": "p", "password": "p"})

	// New credentials start a new session: it panics.
	panicNextSession.Store(true)
	if res := c.IQ(registerIQ(gw, map[string]string{"username": "p2"})); res.Get("type") != "result" {
		t.Fatalf("re-registration: %s", res)
	}
	// Far more events than a user's queue holds, while it has no drain.
	for i := 0; i < 200; i++ {
		c.Send(core.NewElement("", "presence", "to", gw))
	}
	// The link still reads, and the rebuilt user answers.
	contact := `carol\40example.org@` + gw
	msg := core.NewElement("", "message", "to", contact, "type", "chat", "id", "after-panic")
	msg.AddText("", "body", "still there?")
	c.Send(msg)
	echo := c.Expect(3*wait, "the echo through the rebuilt user", func(el *core.Element) bool {
		return el.Name.Local == "message" && el.Get("from") == contact && el.ChildText("", "body") != ""
	})
	if b := echo.ChildText("", "body"); b != "echo: still there?" {
		t.Errorf("echo = %q", b)
	}
	logs := g.logs.String()
	for _, want := range []string{"panic recovered", "user rebuilt after a panic"} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %q", want)
		}
	}
}
