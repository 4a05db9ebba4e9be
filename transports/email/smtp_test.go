package email

import (
	"context"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"mellium.im/xmpp/stanza"

	"transportd/core"
)

// fakeSMTP is an in-process submission server that wants AUTH PLAIN with
// pw and answers RCPT with the code set for an address.
type fakeSMTP struct {
	mu    sync.Mutex
	codes map[string]int
	data  []string
}

type fakeSMTPSession struct {
	s    *fakeSMTP
	auth bool
}

func (f *fakeSMTP) NewSession(*smtp.Conn) (smtp.Session, error) { return &fakeSMTPSession{s: f}, nil }

func (s *fakeSMTPSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *fakeSMTPSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, user, pass string) error {
		if pass != "pw" {
			return smtp.ErrAuthFailed
		}
		s.auth = true
		return nil
	}), nil
}
func (s *fakeSMTPSession) Reset()        {}
func (s *fakeSMTPSession) Logout() error { return nil }
func (s *fakeSMTPSession) Mail(string, *smtp.MailOptions) error {
	if !s.auth {
		return smtp.ErrAuthRequired
	}
	return nil
}
func (s *fakeSMTPSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.s.mu.Lock()
	defer s.s.mu.Unlock()
	if c := s.s.codes[to]; c != 0 {
		return &smtp.SMTPError{Code: c, Message: "said the server about " + to}
	}
	return nil
}
func (s *fakeSMTPSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	s.s.mu.Lock()
	s.s.data = append(s.s.data, string(b))
	s.s.mu.Unlock()
	return err
}

func startFakeSMTP(t *testing.T) (*fakeSMTP, server) {
	f := &fakeSMTP{codes: map[string]int{}}
	srv := smtp.NewServer(f)
	srv.AllowInsecureAuth = true
	srv.Domain = "fake.test"
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	_, p, _ := net.SplitHostPort(ln.Addr().String())
	port, _ := strconv.Atoi(p)
	return f, server{Host: "127.0.0.1", Port: port, Security: secPlain}
}

func TestSMTPSubmission(t *testing.T) {
	f, sv := startFakeSMTP(t)
	ctx := context.Background()
	st := &settings{Address: "me@a.test", Login: "me@a.test", Password: "wrong", SMTP: sv, SMTPAuth: true}
	var ce *core.Error
	if err := verifySMTP(ctx, st, "gw.test", nil); !errors.As(err, &ce) || ce.Condition != stanza.NotAuthorized {
		t.Errorf("wrong password: %v", err)
	}
	st.Password = "pw"
	if err := verifySMTP(ctx, st, "gw.test", nil); err != nil {
		t.Fatalf("right password: %v", err)
	}
	st.SMTP.Security = secSTARTTLS
	if err := verifySMTP(ctx, st, "gw.test", nil); !errors.As(err, &ce) || ce.Condition != stanza.NotAcceptable || !strings.Contains(ce.Text, "STARTTLS") {
		t.Errorf("no STARTTLS: %v", err)
	}
	st.SMTP.Security = secPlain

	f.codes["gone@b.test"] = 550
	f.codes["later@b.test"] = 451
	f.codes["big@b.test"] = 552
	for _, tc := range []struct {
		to        string
		cond      stanza.Condition
		temporary bool
	}{{"gone@b.test", stanza.ItemNotFound, false}, {"later@b.test", stanza.ServiceUnavailable, true}, {"big@b.test", stanza.NotAcceptable, false}} {
		c, err := dialSMTP(ctx, st, "gw.test", nil)
		if err != nil {
			t.Fatal(err)
		}
		err = c.send("me@a.test", tc.to, []byte("Subject: x\r\n\r\nx\r\n"))
		c.close()
		if !errors.As(err, &ce) || ce.Condition != tc.cond || errors.Is(err, core.ErrTemporary) != tc.temporary || !strings.Contains(ce.Text, "said the server about") {
			t.Errorf("%s: %v (temporary %v)", tc.to, err, errors.Is(err, core.ErrTemporary))
		}
	}
	// What reaches DATA has CRLF line ends only, dot-stuffed by the client.
	data, err := compose(&outgoing{From: "me@a.test", To: "you@b.test", MessageID: "m@a.test", Subject: "s", Body: ".\r\nbare\rcr and\nlf\r\n.\n"})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dialSMTP(ctx, st, "gw.test", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.send("me@a.test", "you@b.test", data); err != nil {
		t.Fatal(err)
	}
	c.close()
	f.mu.Lock()
	got := f.data[len(f.data)-1]
	f.mu.Unlock()
	if got != string(data) {
		t.Errorf("server got\n%q\nsent\n%q", got, data)
	}
	if !strings.Contains(got, "\r\n.\r\nbare\r\ncr and\r\nlf\r\n.\r\n") {
		t.Errorf("body line ends: %q", got)
	}
	// Unsafe addresses never reach the SMTP commands.
	c, _ = dialSMTP(ctx, st, "gw.test", nil)
	if err := c.send("me@a.test", "you@b.test>\r\nRCPT TO:<x@y", data); err == nil {
		t.Error("unsafe recipient sent")
	}
	c.close()
}
