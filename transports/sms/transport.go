package sms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"transportd/internal/latest"

	"golang.org/x/time/rate"
	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/registration"
)

func init() {
	core.Register("sms", func() core.Transport { return &Transport{} })
}

// Webhook paths under the component's prefix (/sms/<domain>/...).
const (
	pathIncoming = "/incoming"
	pathStatus   = "/status"
)

// Transport is the SMS network of one XMPP domain (one component).
type Transport struct {
	cfg  atomic.Pointer[config]
	host core.Host
	log  *slog.Logger

	rtOnce sync.Once
	rt     http.RoundTripper

	seq      latest.Seq // orders sessions by creation (see attach)
	mu       sync.Mutex
	byNumber latest.Map[string, *session] // running sessions by their E.164 number
	byJID    latest.Map[string, *session] // and by the user's bare JID
	limiters map[string]*rate.Limiter

	// lookupEnv is os.LookupEnv; tests replace it.
	lookupEnv func(string) (string, bool)
}

var (
	_ core.Transport = (*Transport)(nil)
	_ core.Starter   = (*Transport)(nil)
	_ core.Gatewayer = (*Transport)(nil)
	_ core.Commander = (*Transport)(nil)
	_ core.RateKeyer = (*Transport)(nil)
)

// Info describes the transport: SMS arrives whether the user is online or
// not, so sessions are persistent; delivery is confirmed by status
// callbacks, so receipts are deferred.
func (t *Transport) Info() core.Info {
	return core.Info{
		Name:             "sms",
		DisplayName:      "SMS",
		DiscoType:        "sms",
		Policy:           core.Persistent,
		DeferredReceipts: true,
	}
}

// Start reads the domain's defaults and registers the webhooks.
func (t *Transport) Start(ctx context.Context, host core.Host) error {
	env := t.lookupEnv
	if env == nil {
		env = os.LookupEnv
	}
	cfg, err := parseConfig(host.Defaults(), env)
	if err != nil {
		return err
	}
	t.cfg.Store(cfg)
	t.host = host
	t.log = host.Logger()
	// Host.URL is not called here: core calls Start with its gateway lock
	// held, and Host.URL takes that lock (see hookURL).
	host.Handle(pathIncoming, http.HandlerFunc(t.serveIncoming))
	host.Handle(pathStatus, http.HandlerFunc(t.serveStatus))
	if h := cfg.apiBase.Hostname(); cfg.apiBase.Scheme == "http" && h != "localhost" && !strings.HasPrefix(h, "127.") && h != "::1" {
		t.log.Warn("api_base_url is plain http: account credentials cross the network in clear", "api", cfg.apiBase.Host)
	}
	t.log.Info("sms transport ready", "region", cfg.region, "countries", cfg.countryList(), "api", cfg.apiBase.Host,
		"shared_account", cfg.shared != nil, "rate_per_second", float64(cfg.rate), "daily_cap", cfg.dailyCap)
	return nil
}

// conf is the parsed configuration; before Start, the built-in defaults.
func (t *Transport) conf() *config {
	if c := t.cfg.Load(); c != nil {
		return c
	}
	c, _ := parseConfig(nil, nil)
	return c
}

func (t *Transport) logger() *slog.Logger {
	if t.log != nil {
		return t.log
	}
	return slog.Default()
}

// hookURL is the public URL of a webhook path, "" without http.public_url.
func (t *Transport) hookURL(path string) string {
	if t.host == nil {
		return ""
	}
	return t.host.URL(path)
}

// Schema is the registration form: the user's number and, unless the
// domain shares one Twilio account, that account's SID and token.
func (t *Transport) Schema(defaults map[string]string) registration.Schema {
	cfg := t.conf()
	region := cfg.region
	number := registration.Field{
		Var: "number", Label: "Phone number", Type: registration.TextSingle, Required: true, MaxLen: 64,
		Desc: "Your Twilio phone number in international form, such as +15551234567 (a national number is read as " + region + ")",
		Validate: func(v string) error {
			_, err := ownNumber(v, region)
			return err
		},
	}
	if cfg.shared != nil {
		number.Legacy = "username"
		return registration.Schema{
			Title:        "SMS registration",
			Instructions: "Enter the phone number of this domain's Twilio account that you send and receive SMS with.",
			Fields:       []registration.Field{number},
		}
	}
	number.Legacy = "phone"
	return registration.Schema{
		Title: "SMS registration (Twilio)",
		Instructions: "Enter your Twilio phone number and the Account SID and Auth Token of the Twilio account it belongs to " +
			"(Twilio console, Account Info). The gateway points the number's incoming SMS webhook at itself.",
		Fields: []registration.Field{
			number,
			{
				Var: "account_sid", Label: "Twilio Account SID", Type: registration.TextSingle, Required: true, Legacy: "username", MaxLen: 64,
				Validate: func(v string) error {
					if !sidRE.MatchString(v) {
						return errors.New("is not an Account SID (AC followed by 32 hexadecimal digits)")
					}
					return nil
				},
			},
			{
				Var: "auth_token", Label: "Twilio Auth Token", Type: registration.TextPrivate, Required: true, Secret: true, Legacy: "password", MaxLen: 128,
				Validate: func(v string) error {
					if !tokenRE.MatchString(v) {
						return errors.New("is not an Auth Token (letters and digits)")
					}
					return nil
				},
			},
		},
	}
}

// credsFor returns the Twilio account of a registration: the user's own,
// else the domain's shared one.
func (t *Transport) credsFor(values map[string]string) creds {
	c := creds{SID: values["account_sid"], Token: values["auth_token"]}
	if c.SID == "" || c.Token == "" {
		if sh := t.conf().shared; sh != nil {
			return *sh
		}
	}
	return c
}

// Verify checks with Twilio that the number belongs to the account (which
// proves the credentials) and points the number's incoming SMS webhook at
// the gateway. The number is stored normalised: Verify rewrites
// a.Values["number"] to E.164, and core stores the values Verify saw.
func (t *Transport) Verify(ctx context.Context, a *core.Account) error {
	cfg := t.conf()
	number, err := ownNumber(a.Values["number"], cfg.region)
	if err != nil {
		return core.NewError(stanza.NotAcceptable, `field "Phone number" (number): `+err.Error())
	}
	a.Values["number"] = number
	if s := t.sessionByNumber(number); s != nil && s.a.JID != a.JID {
		return core.NewError(stanza.Conflict, `field "Phone number" (number): `+number+" is already registered by another user of this gateway")
	}
	hook := t.hookURL(pathIncoming)
	if hook == "" {
		t.logger().Warn("http.public_url is not set: SMS users cannot register, since Twilio needs a public URL to deliver incoming SMS to")
		return core.NewError(stanza.ServiceUnavailable, "this gateway has no public URL (http.public_url), so Twilio could not deliver incoming SMS to it; ask the operator")
	}
	c := t.credsFor(a.Values)
	ctx, cancel := context.WithTimeout(ctx, apiTimeout)
	defer cancel()
	ap := t.api(ctx, c)
	pn, err := ap.findNumber(number)
	if err != nil {
		return ap.userError(ctx, err)
	}
	if pn == nil {
		return core.NewError(stanza.ItemNotFound, fmt.Sprintf(`field "Phone number" (number): %s is not a phone number of the Twilio account %s`, number, c.SID))
	}
	changed, err := ap.ensureWebhook(pn, hook)
	if err != nil {
		return ap.userError(ctx, err)
	}
	t.logger().Info("twilio number verified", "number", number, "account", c.SID, "webhook_set", changed)
	return nil
}

// NewSession returns the session of a registered number. It does no I/O.
func (t *Transport) NewSession(a *core.Account, sink core.Sink) core.Session {
	cfg := t.conf()
	number, err := ownNumber(a.Values["number"], cfg.region)
	if err != nil {
		number = a.Values["number"]
	}
	return &session{t: t, a: a, sink: sink, number: number, creds: t.credsFor(a.Values), limiter: t.limiter(number), seq: t.seq.Next()}
}

// Localpart maps a sender to a JID localpart: E.164 numbers as they are,
// alphanumeric sender IDs and short codes XEP-0106-escaped.
func (t *Transport) Localpart(address string) string { return localpart(address) }

// Address maps a contact's localpart to the number to send to: canonical
// E.164 only, within the domain's destination policy.
func (t *Transport) Address(local string) (string, error) { return t.conf().address(local) }

// GatewayPrompt is XEP-0100's prompt.
func (t *Transport) GatewayPrompt() (string, string) {
	return "Enter the phone number of the person to text (national numbers are read as " + t.conf().region + ")", "Phone number"
}

// TranslateAddress turns what a user typed ("555 123 4567", "+44 20 7946
// 0000") into the contact's E.164 number, refusing what the domain does not
// send to.
func (t *Transport) TranslateAddress(input string, _ map[string]string) (string, error) {
	cfg := t.conf()
	e, _, err := normalize(input, cfg.region)
	if err != nil {
		return "", core.NewError(stanza.BadRequest, "prompt: not a phone number")
	}
	return cfg.destination(e)
}

// RegistrationRateKey rate-limits registration attempts per Twilio account
// on top of the per-user limit, against token guessing.
func (t *Transport) RegistrationRateKey(values map[string]string) string {
	if sid := values["account_sid"]; sid != "" {
		return "twilio:" + sid
	}
	return ""
}

// limiter returns the rate limiter of a sending number, shared by every
// session of that number for the life of the transport.
func (t *Transport) limiter(number string) *rate.Limiter {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.limiters == nil {
		t.limiters = map[string]*rate.Limiter{}
	}
	l, ok := t.limiters[number]
	if !ok {
		l = rate.NewLimiter(t.conf().rate, 1)
		t.limiters[number] = l
	}
	return l
}

// attach makes a running session reachable by webhooks and commands,
// unless a newer session of the account is (core may start the new one
// before the old one's goroutine ran: internal/latest).
func (t *Transport) attach(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byNumber.Put(s.number, s, s.seq)
	t.byJID.Put(s.a.JID, s, s.seq)
}

// detach undoes attach, unless a newer session of the account took over.
func (t *Transport) detach(s *session) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byNumber.Delete(s.number, s)
	t.byJID.Delete(s.a.JID, s)
}

func (t *Transport) sessionByNumber(number string) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, _ := t.byNumber.Get(number)
	return s
}

func (t *Transport) sessionByJID(jid string) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	s, _ := t.byJID.Get(jid)
	return s
}
