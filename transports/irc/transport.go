package irc

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/core/jidesc"
	"transportd/registration"
)

func init() {
	core.Register("irc", func() core.Transport { return New() })
}

// Transport is the IRC transport of one component (one XMPP domain).
type Transport struct {
	mu       sync.Mutex
	host     core.Host
	sessions map[int64]*session // live sessions by account ID
	chans    sync.Map           // server → ISUPPORT CHANTYPES seen there
	// opts are the options parsed lately, shared by the sessions of
	// accounts with the same defaults (sessionOptions).
	opts []*sharedOptions

	// dial replaces net.Dialer in tests; nil in production.
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// timing is defaultTiming as New found it; its sessions read it.
	timing timing
}

// timing holds the intervals of a transport's sessions. They are fields
// rather than package variables so that a test shortening them for its
// own transport does not change them under the sessions of another
// (the race detector saw that).
type timing struct {
	// tick: how often a session with something waiting expires what
	// waited too long.
	tick time.Duration
	// ison: how often a server without MONITOR is asked which of the
	// contacts are online.
	ison time.Duration
	// privateIdle: a connection used for private chats only is closed
	// after this long without one.
	privateIdle time.Duration
}

// defaultTiming is what New gives a transport; tests that start a whole
// gateway change it before, and put it back after.
var defaultTiming = timing{tick: 5 * time.Second, ison: time.Minute, privateIdle: 10 * time.Minute}

type sharedOptions struct {
	defaults map[string]string // a copy
	o        *options
}

// sessionOptions returns the options of defaults, parsed once for every
// session with the same: a copy in each session was some 250 bytes of
// every user's (the parsed list of allowed servers with it). Sessions
// only read them. The last few sets of defaults are remembered (one per
// domain served, mostly; a reload makes new ones).
func (t *Transport) sessionOptions(defaults map[string]string) *options {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, so := range t.opts {
		if maps.Equal(so.defaults, defaults) {
			return so.o
		}
	}
	o := parseOptions(defaults)
	if len(t.opts) >= 8 {
		t.opts = t.opts[1:]
	}
	t.opts = append(t.opts, &sharedOptions{defaults: maps.Clone(defaults), o: &o})
	return &o
}

// New returns an IRC transport; core.Register calls it per component.
func New() *Transport {
	return &Transport{sessions: map[int64]*session{}, timing: defaultTiming}
}

var (
	_ core.Transport     = (*Transport)(nil)
	_ core.GroupChats    = (*Transport)(nil)
	_ core.AccountPolicy = (*Transport)(nil)
	_ core.Starter       = (*Transport)(nil)
	_ core.Commander     = (*Transport)(nil)
	_ core.Configurable  = (*Transport)(nil)
	_ core.Gatewayer     = (*Transport)(nil)
	_ core.RateKeyer     = (*Transport)(nil)
	_ core.GroupSession  = (*session)(nil)
)

// Info implements core.Transport.
func (t *Transport) Info() core.Info {
	return core.Info{
		Name:                 "irc",
		DisplayName:          "IRC",
		DiscoType:            "irc",
		Policy:               core.FollowPresence,
		RegistrationOptional: true,
		// IRC acknowledges nothing: core relays at once while both sides
		// are up (see core.Info.Relay).
		Relay: true,
	}
}

// Start implements core.Starter: it keeps the host for the domain's
// defaults (the default server of addresses without %server).
func (t *Transport) Start(ctx context.Context, h core.Host) error {
	if err := checkOptions(h.Defaults()); err != nil {
		return fmt.Errorf("irc transport of %s: %w", h.Domain(), err)
	}
	if addr := strings.TrimSpace(h.Defaults()[dIdentdListen]); addr != "" {
		stop, err := startIdentd(addr, h.Logger())
		if err != nil {
			return fmt.Errorf("irc transport of %s: %w", h.Domain(), err)
		}
		context.AfterFunc(ctx, stop)
	}
	t.mu.Lock()
	t.host = h
	t.mu.Unlock()
	return nil
}

func (t *Transport) options() options {
	t.mu.Lock()
	h := t.host
	t.mu.Unlock()
	if h == nil {
		return parseOptions(nil)
	}
	return parseOptions(h.Defaults())
}

// PolicyFor implements core.AccountPolicy: "persistent" keeps the IRC
// connections up while the user is offline.
func (t *Transport) PolicyFor(fields map[string]string) core.SessionPolicy {
	if v, _ := strconv.ParseBool(fields[fPersistent]); v {
		return core.Persistent
	}
	return core.FollowPresence
}

// Schema implements core.Transport.
func (t *Transport) Schema(defaults map[string]string) registration.Schema {
	return schema(defaults)
}

// Settings implements core.Configurable: what users who joined without
// registering can still set.
func (t *Transport) Settings(defaults map[string]string) registration.Schema {
	return registration.Schema{
		Instructions: "Defaults for every IRC network. Per-network settings: the \"Configure network\" command.",
		Fields:       settingsFields(),
	}
}

// RegistrationRateKey implements core.RateKeyer: password guesses are
// limited per IRC network too.
func (t *Transport) RegistrationRateKey(values map[string]string) string {
	if values[fPassword] == "" {
		return ""
	}
	return "irc:" + strings.ToLower(values[fNetwork])
}

// Verify implements core.Transport. A SASL password is tried on its
// network; NickServ passwords cannot be checked without sending them
// where a typo would be public, so they are not.
func (t *Transport) Verify(ctx context.Context, a *core.Account) error {
	o := parseOptions(a.Defaults)
	server := strings.ToLower(a.Values[fNetwork])
	if server == "" {
		if a.Values[fPassword] != "" || a.Values[fAutojoin] != "" {
			return core.NewError(stanza.BadRequest, "field \"network\": say which IRC server the password and channels are for")
		}
		return nil
	}
	if !o.allowedServer(server) {
		return core.NewError(stanza.NotAllowed, "this gateway does not connect to "+server)
	}
	cfg := configFor(&o, a.Values, server, netSettings{}, "", "")
	if cfg.auth != authSASL || cfg.password == "" {
		return nil
	}
	nick := cfg.account
	if !validNick(nick) {
		nick = "transportd"
	}
	username := cfg.username
	if username == "" {
		username = usernameFrom(nick)
	}
	dc := dialConfig{
		server: server, addr: net.JoinHostPort(server, strconv.Itoa(cfg.port)),
		tls: cfg.tls, tlsInsecure: o.tlsInsecure, tlsTrusted: cfg.fingerprint, charsets: newLineCharsets(cfg.charset, nil),
		nick: nick, username: username, realname: cfg.realname,
		saslUser: cfg.account, saslPass: cfg.password,
		timeout: o.connectTimeout, floodBurst: o.floodBurst, floodRate: o.floodRate,
		pingEvery: o.pingInterval, pingWait: o.pingTimeout,
		log: slog.New(slog.DiscardHandler), dial: t.dial, bind: o.bind,
	}
	if o.identd {
		dc.ident = identName(a.JID)
	}
	c, _, err := dialIRCWait(ctx, dc)
	if err != nil {
		ce, _ := err.(*connError)
		switch {
		case ce != nil && ce.auth:
			return core.WrapError(stanza.NotAuthorized, errorText(err), err)
		case ce != nil && ce.permanent:
			return core.WrapError(stanza.NotAcceptable, errorText(err), err)
		}
		return core.WrapError(stanza.RemoteServerNotFound, errorText(err), err)
	}
	c.start(func(inLine, bool) bool { return true }, func(error) {})
	c.quit("checking credentials", 2*time.Second)
	return nil
}

// NewSession implements core.Transport.
func (t *Transport) NewSession(a *core.Account, sink core.Sink) core.Session {
	s := newSession(t, a, sink)
	t.mu.Lock()
	t.sessions[a.ID] = s
	t.mu.Unlock()
	return s
}

// forget drops a session that ended from the registry.
func (t *Transport) forget(s *session) {
	t.mu.Lock()
	if t.sessions[s.acct.ID] == s {
		delete(t.sessions, s.acct.ID)
	}
	t.mu.Unlock()
}

func (t *Transport) session(accountID int64) *session {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.sessions[accountID]
}

// Addresses.

// Localpart implements core.Transport.
func (t *Transport) Localpart(address string) string { return localpart(address) }

// Address implements core.Transport.
func (t *Transport) Address(local string) (string, error) {
	addr, _, err := t.RoomAddress(local)
	return addr, err
}

// RoomAddress implements core.RoomAddresser: Address and IsRoom of it.
func (t *Transport) RoomAddress(local string) (string, bool, error) {
	addr := jidesc.Unescape(local)
	a, err := parseAddress(addr, t.chanTypesOf)
	if err != nil {
		return "", false, addressError(err)
	}
	if a.server == "" && a.kind != kindServer && t.options().defaultServer == "" {
		return "", false, addressError(errNoServer)
	}
	room := a.kind == kindChannel
	if a.is(addr) {
		return addr, room, nil
	}
	return a.String(), room, nil
}

// IsRoom implements core.GroupChats.
func (t *Transport) IsRoom(address string) bool {
	a, err := parseAddress(address, t.chanTypesOf)
	return err == nil && a.kind == kindChannel
}

// OccupantContact implements core.OccupantContacts: a channel member is
// the contact nick%server, as private chats address them.
func (t *Transport) OccupantContact(room, nick string) string {
	a, err := parseAddress(room, t.chanTypesOf)
	if err != nil || a.kind != kindChannel || !validNick(nick) {
		return ""
	}
	server := a.server
	if server == "" {
		server = t.options().defaultServer
	}
	if server == "" {
		return ""
	}
	return strings.ToLower(nick) + "%" + server
}

func (t *Transport) chanTypesOf(server string) string {
	if server == "" {
		server = t.options().defaultServer
	}
	if v, ok := t.chans.Load(server); ok {
		return v.(string)
	}
	return ""
}

// learnChanTypes records a server's CHANTYPES for IsRoom.
func (t *Transport) learnChanTypes(server, types string) {
	if types == "" {
		return
	}
	t.chans.Store(server, types)
}

// Gatewayer (XEP-0100 jabber:iq:gateway).

// GatewayPrompt implements core.Gatewayer.
func (t *Transport) GatewayPrompt() (string, string) {
	return "Enter an IRC nick or channel, with its server: nick%irc.libera.chat or #channel%irc.libera.chat", "IRC nick or channel"
}

// TranslateAddress implements core.Gatewayer.
func (t *Transport) TranslateAddress(input string, defaults map[string]string) (string, error) {
	in := strings.TrimSpace(input)
	if i := strings.IndexByte(in, '@'); i > 0 && !strings.Contains(in, "%") {
		in = in[:i] + "%" + in[i+1:] // nick@server
	}
	a, err := parseAddress(in, t.chanTypesOf)
	if err != nil {
		return "", addressError(err)
	}
	if a.server == "" && a.kind != kindServer {
		o := parseOptions(defaults)
		if o.defaultServer == "" {
			return "", addressError(errNoServer)
		}
		a.server = o.defaultServer
	}
	return a.String(), nil
}
