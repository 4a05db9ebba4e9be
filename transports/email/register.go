package email

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"transportd/internal/latest"

	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/registration"
)

func init() {
	core.Register("email", func() core.Transport { return New() })
}

// Transport is the e-mail transport of one XMPP domain.
type Transport struct {
	resolver resolver
	probe    prober

	host core.Host   // set by Start
	push *pushConfig // set by Start; nil: no push notices

	seq      latest.Seq // orders sessions by creation (see register)
	mu       sync.Mutex
	sessions latest.Map[int64, *session] // running sessions, for attachment links and push
	fetches  chan struct{}               // bounds concurrent attachment downloads
	uploads  chan struct{}               // bounds mails whose attachments are being uploaded
}

// New returns a transport; core makes one per domain.
func New() *Transport {
	return &Transport{
		resolver: net.DefaultResolver,
		probe:    tcpProbe,
		fetches:  make(chan struct{}, 8),
		uploads:  make(chan struct{}, maxUploads),
	}
}

var (
	_ core.Transport    = (*Transport)(nil)
	_ core.Gatewayer    = (*Transport)(nil)
	_ core.RateKeyer    = (*Transport)(nil)
	_ core.Configurable = (*Transport)(nil)
	_ core.Starter      = (*Transport)(nil)
)

// Info describes the transport.
func (t *Transport) Info() core.Info {
	return core.Info{Name: "email", DisplayName: "E-mail", DiscoType: "smtp", Policy: core.Persistent}
}

// Schema is the registration form.
func (t *Transport) Schema(defaults map[string]string) registration.Schema {
	return registrationSchema(defaults)
}

// Settings is the form of the "Settings" command.
func (t *Transport) Settings(defaults map[string]string) registration.Schema {
	return settingsSchema(defaults)
}

// Start registers the attachment links on the gateway's HTTP listener,
// the push notices' endpoint when the operator set push up, and checks
// the upload options.
func (t *Transport) Start(ctx context.Context, h core.Host) error {
	if _, err := parseUploadOptions(h.Defaults()); err != nil {
		return fmt.Errorf("domains.%q.transports.email.defaults: %w", h.Domain(), err)
	}
	t.host = h
	h.Handle("/att/", t.attachmentHandler())
	p, err := parsePush(h.Defaults(), os.LookupEnv)
	if err != nil {
		return fmt.Errorf("email transport of %s: %w", h.Domain(), err)
	}
	if p != nil {
		t.push = p
		h.Handle("/push", t.pushHandler())
		logPush(h.Logger(), p)
	}
	return nil
}

// Verify logs in to IMAP and to SMTP submission with the submitted values
// before anything is stored. Servers left empty are found from the address
// and written into a.Values, so that they are stored with the account.
func (t *Transport) Verify(ctx context.Context, a *core.Account) error {
	st, err := parseSettings(a.Values, a.Defaults)
	if err != nil {
		return core.NewError(stanza.NotAcceptable, err.Error())
	}
	if err := t.fillServers(ctx, st, a.Values); err != nil {
		return err
	}
	c, err := dialIMAP(ctx, st, t.trace(a.Defaults, "imap"), nil)
	if err != nil {
		return err
	}
	_ = timed(ctx, c, cmdTimeout, func() error { return c.Logout().Wait() })
	c.Close()
	localName := "localhost"
	if t.host != nil {
		localName = t.host.Domain()
	}
	return verifySMTP(ctx, st, localName, t.trace(a.Defaults, "smtp"))
}

// trace is the wire trace of registrations (operator's trace = "true").
func (t *Transport) trace(defaults map[string]string, proto string) io.Writer {
	if defaults[dTrace] != "true" || t.host == nil {
		return nil
	}
	return traceWriter{log: t.host.Logger().With("phase", "verify"), proto: proto}
}

// fillServers finds the IMAP and SMTP servers left empty from the address
// (operator's discover = "false" turns this off), and records them in
// values when values is not nil.
func (t *Transport) fillServers(ctx context.Context, st *settings, values map[string]string) error {
	domain := domainOf(st.Address)
	for _, which := range []struct {
		sv              *server
		smtp            bool
		host, port, sec string
		name            string
	}{{&st.IMAP, false, fIMAPHost, fIMAPPort, fIMAPSecurity, "IMAP"}, {&st.SMTP, true, fSMTPHost, fSMTPPort, fSMTPSecurity, "SMTP submission"}} {
		if which.sv.Host != "" {
			continue
		}
		if !st.Discover {
			return core.NewError(stanza.BadRequest, "enter the "+which.name+" server: this gateway does not look servers up")
		}
		sv, ok := discover(ctx, t.resolver, t.probe, domain, which.smtp)
		if !ok {
			return core.NewError(stanza.RemoteServerNotFound, "no "+which.name+" server found for "+domain+": enter it in the form")
		}
		*which.sv = sv
		if values != nil {
			values[which.host] = sv.Host
			values[which.port] = strconv.Itoa(sv.Port)
			values[which.sec] = sv.Security
		}
	}
	return nil
}

// NewSession returns the account's session; it does no I/O.
func (t *Transport) NewSession(a *core.Account, sink core.Sink) core.Session {
	return newSession(t, a, sink)
}

// Localpart maps an address to a JID localpart (jane\40example.org).
func (t *Transport) Localpart(address string) string { return localpart(address) }

// Address maps a JID localpart (jane\40example.org or jane%example.org) to
// an address.
func (t *Transport) Address(local string) (string, error) { return addressOf(local) }

// GatewayPrompt is the XEP-0100 jabber:iq:gateway prompt.
func (t *Transport) GatewayPrompt() (string, string) {
	return "Enter the e-mail address of the person to write to", "E-mail address"
}

// TranslateAddress turns what the user typed into an address.
func (t *Transport) TranslateAddress(input string, _ map[string]string) (string, error) {
	return translateAddress(input)
}

// RegistrationRateKey rate-limits registrations per IMAP host (the one
// typed, the operator's, else the address's domain).
func (t *Transport) RegistrationRateKey(values map[string]string) string {
	h := strings.ToLower(strings.TrimSpace(values[fIMAPHost]))
	if h == "" {
		h = domainOf(strings.ToLower(values[fEmail]))
	}
	return "imap:" + h
}

// register makes a running session reachable by push notices and
// attachment links, unless a newer session of the account is (core may
// start the new one before the old one's goroutine ran: internal/latest).
func (t *Transport) register(s *session) {
	t.mu.Lock()
	t.sessions.Put(s.a.ID, s, s.seq)
	t.mu.Unlock()
}

func (t *Transport) unregister(s *session) {
	t.mu.Lock()
	t.sessions.Delete(s.a.ID, s)
	t.mu.Unlock()
}

func (t *Transport) lookup(id int64) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, _ := t.sessions.Get(id)
	return s
}
