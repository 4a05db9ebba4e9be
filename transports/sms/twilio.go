package sms

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twilio/twilio-go/client"
	openapi "github.com/twilio/twilio-go/rest/api/v2010"
	"mellium.im/xmpp/stanza"

	"transportd/core"
)

// creds are a Twilio account's Account SID and Auth Token.
type creds struct {
	SID, Token string
}

// apiTimeout bounds one API call, including reading the answer.
const apiTimeout = 30 * time.Second

// twilioHost is where twilio-go sends every request of the 2010 API; the
// base client rewrites it to the configured base URL.
const twilioHost = "api.twilio.com"

// api is Twilio's 2010 REST API for one account, bound to one context.
type api struct {
	*openapi.ApiService
	sid  string
	rt   *apiTransport
	base *url.URL
}

// api returns the REST API of an account. Every request it makes is
// cancelled with ctx (twilio-go itself takes no context) and goes to the
// configured base URL instead of api.twilio.com.
func (t *Transport) api(ctx context.Context, c creds) *api {
	cfg := t.conf()
	rt := &apiTransport{ctx: ctx, next: t.httpTransport(), log: t.logger(), trace: cfg.wireTrace}
	cl := &client.Client{
		Credentials: client.NewCredentials(c.SID, c.Token),
		HTTPClient: &http.Client{
			Transport: rt,
			// Twilio's own client follows no redirect: an answer elsewhere
			// would carry our credentials there.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	cl.SetAccountSid(c.SID)
	// The handler is built by hand: client.NewRequestHandler reads
	// TWILIO_EDGE and TWILIO_REGION from the environment, which would move
	// requests to another host behind the operator's back.
	rh := &client.RequestHandler{Client: &baseClient{Client: cl, base: cfg.apiBase}}
	return &api{ApiService: openapi.NewApiService(rh), sid: c.SID, rt: rt, base: cfg.apiBase}
}

// baseClient is twilio-go's client with the API's scheme, host and path
// prefix replaced by the configured base URL: the clean seam, since the
// generated services hard-code https://api.twilio.com.
type baseClient struct {
	*client.Client
	base *url.URL
}

func (b *baseClient) SendRequest(method, rawURL string, data url.Values, headers map[string]interface{}, body ...byte) (*http.Response, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	if u.Host != twilioHost {
		// A next-page URL pointing elsewhere: never send credentials there.
		return nil, fmt.Errorf("refusing a Twilio request to unexpected host %q", u.Host)
	}
	u.Scheme, u.Host = b.base.Scheme, b.base.Host
	u.Path = strings.TrimSuffix(b.base.Path, "/") + u.Path
	u.RawPath = ""
	return b.Client.SendRequest(method, u.String(), data, headers, body...)
}

// apiTransport binds requests to a context, remembers the last HTTP status
// (twilio-go's errors carry the one in the body, which may be missing),
// logs the wire when asked, and reads error bodies fully so that twilio-go,
// which leaves them open, does not leak connections.
type apiTransport struct {
	ctx        context.Context
	next       http.RoundTripper
	log        *slog.Logger
	trace      bool
	lastStatus atomic.Int32
}

func (a *apiTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := a.next.RoundTrip(req.WithContext(a.ctx))
	if a.trace {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		// Never the Authorization header or a body: they hold the token
		// and messages.
		a.log.Debug("twilio api", "method", req.Method, "path", req.URL.Path, "status", status, "took", time.Since(start).Round(time.Millisecond), "error", err)
	}
	if err != nil {
		return nil, err
	}
	a.lastStatus.Store(int32(resp.StatusCode))
	if resp.StatusCode >= 400 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
	return resp, nil
}

func (t *Transport) httpTransport() http.RoundTripper {
	t.rtOnce.Do(func() {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = 16
		tr.ResponseHeaderTimeout = apiTimeout
		t.rt = tr
	})
	return t.rt
}

// restError returns Twilio's error and its HTTP status, if err is one.
func (a *api) restError(err error) (*client.TwilioRestError, int) {
	var tre *client.TwilioRestError
	if !errors.As(err, &tre) {
		return nil, 0
	}
	status := tre.Status
	if status == 0 {
		status = int(a.rt.lastStatus.Load())
	}
	return tre, status
}

// errKind is what an API failure means for a retry.
type errKind int

const (
	// kindRefused: Twilio answered and refused for good (4xx).
	kindRefused errKind = iota
	// kindAuth: the credentials were refused (401, 403).
	kindAuth
	// kindBusy: Twilio answered and did nothing; try later (429).
	kindBusy
	// kindUnknown: no answer, a 5xx, or one we could not read: the request
	// may or may not have been carried out.
	kindUnknown
)

func (a *api) classify(err error) errKind {
	tre, status := a.restError(err)
	switch {
	case tre == nil:
		return kindUnknown
	case status == 401 || status == 403 || tre.Code == 20003:
		return kindAuth
	case status == 429 || tre.Code == 20429:
		return kindBusy
	case status >= 500 || status == 0:
		return kindUnknown
	}
	return kindRefused
}

// errBadCredentials is the text users see when Twilio refuses the
// credentials.
const errBadCredentials = "Twilio refused the Account SID or Auth Token"

// userError turns an API failure during registration or a command into the
// error the user sees.
func (a *api) userError(ctx context.Context, err error) error {
	tre, _ := a.restError(err)
	switch a.classify(err) {
	case kindAuth:
		return core.WrapError(stanza.NotAuthorized, errBadCredentials, err)
	case kindBusy:
		return core.WrapError(stanza.ResourceConstraint, "Twilio asks to slow down; try again in a minute", err)
	case kindRefused:
		if tre.Code == 20404 {
			return core.WrapError(stanza.NotAuthorized, "Twilio does not know this Account SID", err)
		}
		return core.WrapError(stanza.NotAcceptable, fmt.Sprintf("Twilio refused the request (error %d: %s)", tre.Code, oneLine(tre.Message)), err)
	}
	if tre != nil {
		return core.WrapError(stanza.ServiceUnavailable, "Twilio is not available right now; try again later", err)
	}
	var ne net.Error
	switch {
	case ctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return core.WrapError(stanza.RemoteServerTimeout, "Twilio did not answer in time", err)
	case errors.As(err, &ne):
		return core.WrapError(stanza.RemoteServerNotFound, "cannot reach Twilio at "+a.base.Host, err)
	}
	return core.WrapError(stanza.ServiceUnavailable, "Twilio's answer could not be read", err)
}

// oneLine trims a remote text for showing it to a user.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// twilioTime parses Twilio's RFC 2822 dates ("Mon, 16 Aug 2010 03:45:01 +0000").
func twilioTime(s *string) time.Time {
	if s == nil {
		return time.Time{}
	}
	for _, layout := range []string{time.RFC1123Z, time.RFC1123, time.RFC3339} {
		if t, err := time.Parse(layout, *s); err == nil {
			return t
		}
	}
	return time.Time{}
}

func str(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// findNumber returns the account's incoming phone number resource for an
// E.164 number, or nil when the account has no such number.
func (a *api) findNumber(number string) (*openapi.ApiV2010IncomingPhoneNumber, error) {
	list, err := a.ListIncomingPhoneNumber(new(openapi.ListIncomingPhoneNumberParams).SetPhoneNumber(number).SetLimit(20))
	if err != nil {
		return nil, err
	}
	for i := range list {
		if str(list[i].PhoneNumber) == number {
			return &list[i], nil
		}
	}
	return nil, nil
}

// ensureWebhook points the number's incoming SMS webhook at the gateway
// (POST), unless it already is. It reports whether it changed anything.
func (a *api) ensureWebhook(pn *openapi.ApiV2010IncomingPhoneNumber, hook string) (bool, error) {
	if str(pn.SmsUrl) == hook && strings.EqualFold(str(pn.SmsMethod), http.MethodPost) {
		return false, nil
	}
	_, err := a.UpdateIncomingPhoneNumber(str(pn.Sid), new(openapi.UpdateIncomingPhoneNumberParams).SetSmsUrl(hook).SetSmsMethod(http.MethodPost))
	return err == nil, err
}
