package email

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"transportd/core"
	"transportd/core/config"
	"transportd/internal/xmpptest"
)

// TestCredentialsNotLogged: a registration, a session logging in to IMAP,
// a mail sent with SMTP AUTH and one received, all with the gateway's log
// at debug level: the password appears nowhere in the log or the database
// files, in clear or in the forms the protocols carry it (AUTH PLAIN and
// LOGIN are base64). The wire trace (trace = "true") is the documented
// exception and stays off.
func TestCredentialsNotLogged(t *testing.T) {
	x := xmpptest.Prosody(t)
	const user, password = "jane@x.test", "Cr3d-Sentinel-7f3a9q"
	// IMAP with that password.
	mem := imapmemserver.New()
	mu := imapmemserver.NewUser(user, password)
	if err := mu.Create("INBOX", nil); err != nil {
		t.Fatal(err)
	}
	mem.AddUser(mu)
	isrv := imapserver.New(&imapserver.Options{
		NewSession: func(*imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return mem.NewSession(), nil, nil
		},
		Caps:         imap.CapSet{imap.CapIMAP4rev1: {}, imap.CapIdle: {}},
		InsecureAuth: true,
		Logger:       nopLogger{},
	})
	iln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go isrv.Serve(iln)
	t.Cleanup(func() { isrv.Close() })
	// SMTP submission that wants AUTH PLAIN with it.
	sub := &authSMTP{password: password}
	ssrv := smtp.NewServer(sub)
	ssrv.AllowInsecureAuth = true
	ssrv.Domain = "smtp.x.test"
	sln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go ssrv.Serve(sln)
	t.Cleanup(func() { ssrv.Close() })

	var logs lockedLog
	dir := t.TempDir()
	g := startGWLog(t, x, dir, iln.Addr().String(), sln.Addr().String(), &logs)
	c := xmpptest.Dial(t, x, "user27@a.test", false)
	waitComponent(t, c, "email.a.test")
	register(t, c, "email.a.test", map[string]string{"email": user, "password": password})

	// A mail out (SMTP AUTH) and one in (IMAP session).
	m := core.NewElement("", "message", "to", `bob\40y.example@email.a.test`, "type", "chat", "id", "cred-1")
	m.AddText("", "body", "hello")
	c.Send(m)
	deadline := time.Now().Add(wait)
	for sub.count() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the mail was not submitted")
		}
		time.Sleep(50 * time.Millisecond)
	}
	srv := &faultIMAP{addr: iln.Addr().String(), user: mu}
	srv.appendMailAs(t, user, password, "incoming-1")
	c.Expect(wait, "the incoming mail", isChatFrom(`bob\40y.example@email.a.test`))
	g.stop()

	forms := map[string]string{
		"clear":              password,
		"AUTH PLAIN":         base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + password)),
		"AUTH PLAIN (authz)": base64.StdEncoding.EncodeToString([]byte(user + "\x00" + user + "\x00" + password)),
		"AUTH LOGIN":         base64.StdEncoding.EncodeToString([]byte(password)),
	}
	if !strings.Contains(logs.String(), "level=DEBUG") {
		t.Fatal("the log holds no debug lines: the test proves nothing")
	}
	for form, s := range forms {
		if strings.Contains(logs.String(), s) {
			t.Errorf("the debug log holds the password (%s)", form)
		}
		for _, f := range []string{"t.db", "t.db-wal", "t.db-shm"} {
			if b, err := os.ReadFile(filepath.Join(dir, f)); err == nil && bytes.Contains(b, []byte(s)) {
				t.Errorf("%s holds the password (%s)", f, form)
			}
		}
	}
}

// lockedLog is a log buffer safe for the gateway's goroutines.
type lockedLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startGWLog is startGW with the debug log written to w, SMTP with AUTH,
// and only a.test.
func startGWLog(t *testing.T, x xmpptest.Env, dir, imapAddr, smtpAddr string, w io.Writer) *testGW {
	t.Helper()
	writeGWFiles(t, dir)
	httpAddr := freePort(t)
	ih, ip, _ := net.SplitHostPort(imapAddr)
	sh, sp, _ := net.SplitHostPort(smtpAddr)
	cfgText := fmt.Sprintf(`
[xmpp]
component_addr = %q
reconnect_min = "100ms"
reconnect_max = "1s"
[store]
path = "t.db"
key_file = "key"
[http]
listen = %q
public_url = "http://%[2]s/"
[log]
level = "debug"
[domains."a.test"]
[domains."a.test".transports.email]
jid = "email.a.test"
secret_file = "secret"
[domains."a.test".transports.email.defaults]
imap_host = %[3]q
imap_port = %[4]q
imap_security = "plain"
smtp_host = %[5]q
smtp_port = %[6]q
smtp_security = "plain"
allow_plaintext = "true"
discover = "false"
`, x.Component, httpAddr, ih, ip, sh, sp)
	cfg, err := config.Parse([]byte(cfgText), dir, core.Transports())
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	return runGW(t, cfg, dir, httpAddr, io.MultiWriter(w, logWriter{t}))
}

// authSMTP is a submission server that wants AUTH PLAIN with password.
type authSMTP struct {
	password string
	mu       sync.Mutex
	n        int
}

func (a *authSMTP) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

func (a *authSMTP) NewSession(*smtp.Conn) (smtp.Session, error) { return &authSMTPSession{a: a}, nil }

type authSMTPSession struct {
	a    *authSMTP
	auth bool
}

func (s *authSMTPSession) AuthMechanisms() []string { return []string{sasl.Plain} }
func (s *authSMTPSession) Auth(string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(_, _, pass string) error {
		if pass != s.a.password {
			return smtp.ErrAuthFailed
		}
		s.auth = true
		return nil
	}), nil
}
func (s *authSMTPSession) Reset()        {}
func (s *authSMTPSession) Logout() error { return nil }
func (s *authSMTPSession) Mail(string, *smtp.MailOptions) error {
	if !s.auth {
		return smtp.ErrAuthRequired
	}
	return nil
}
func (s *authSMTPSession) Rcpt(string, *smtp.RcptOptions) error { return nil }
func (s *authSMTPSession) Data(r io.Reader) error {
	_, err := io.Copy(io.Discard, r)
	s.a.mu.Lock()
	s.a.n++
	s.a.mu.Unlock()
	return err
}
