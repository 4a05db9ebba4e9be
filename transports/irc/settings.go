package irc

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/ergochat/irc-go/ircmsg"

	"transportd/registration"
)

// Registration fields (Account.Values keys): the defaults for every
// network, and the credentials of one network (the "network" field).
const (
	fNick       = "nick"       // nick when a connection is not opened by joining a room
	fUsername   = "username"   // IRC user name (ident)
	fRealname   = "realname"   // IRC real name (GECOS)
	fPersistent = "persistent" // "true": stay connected while offline
	fNetwork    = "network"    // the server the password and autojoin are for
	fAuth       = "auth"       // sasl, nickserv or none
	fPassword   = "password"   // secret: SASL PLAIN or NickServ password
	fTLS        = "tls"        // "true"/"false" for that network
	fPort       = "port"       // port for that network
	fAutojoin   = "autojoin"   // channels joined on connect, comma-separated
	// fFingerprint is the SHA-256 fingerprint of a TLS certificate to
	// trust though no authority signed it (a bouncer's, a small
	// network's self-signed one), as biboumi's "trusted fingerprint".
	fFingerprint = "fingerprint"
	// fCommands are raw IRC lines sent once connected, before channels
	// are joined (biboumi's "after-connection commands": a user mode, a
	// login to a service other than NickServ). Kept sealed: they may hold
	// a password.
	fCommands = "commands"
	// fEncoding is the network's character set when it is not UTF-8
	// (charsets; biboumi's per-server encoding).
	fEncoding = "encoding"
	// fFloodBurst and fFloodRate are the network's own flood control
	// (biboumi's per-server throttle limit): a bouncer the user runs
	// takes more than a public network; empty for the operator's.
	fFloodBurst = "flood_burst"
	fFloodRate  = "flood_rate"
)

// charsetOptions are the forms' choices of fEncoding, first.
func charsetOptions(first ...registration.Option) []registration.Option {
	opts := append(first, registration.Option{Label: "UTF-8", Value: charsetUTF8})
	for _, c := range charsets {
		opts = append(opts, registration.Option{Label: c.label, Value: c.name})
	}
	return opts
}

// Authentication methods.
const (
	authSASL     = "sasl"
	authNickServ = "nickserv"
	authPass     = "pass" // the server password (PASS): bouncers such as ZNC, closed servers
	authNone     = "none"
)

// authOptions are the choices of the forms' Authentication field.
func authOptions(none string) []registration.Option {
	return []registration.Option{
		{Label: "SASL PLAIN", Value: authSASL},
		{Label: "NickServ IDENTIFY", Value: authNickServ},
		{Label: "Server password (PASS: a bouncer such as ZNC, a closed server)", Value: authPass},
		{Label: none, Value: authNone},
	}
}

// passwordAuth reports whether auth is a way of using a password.
func passwordAuth(auth string) bool {
	return auth == authSASL || auth == authNickServ || auth == authPass
}

// Operator defaults (domains."D".transports.irc.defaults), never in a form
// except where a field takes its default from them.
const (
	dAllowedServers = "allowed_servers" // comma/space-separated hosts or *.suffix; "" = any
	dDefaultServer  = "default_server"  // server of addresses without %server
	dPort           = "port"            // default port (6697 with TLS, 6667 without)
	dTLS            = "tls"             // default TLS on/off (true)
	dTLSInsecure    = "tls_insecure"    // "true": no certificate check (tests only)
	dFloodBurst     = "flood_burst"     // lines sent at once before the rate applies (5)
	dFloodRate      = "flood_rate"      // lines per second after the burst (2)
	dPingInterval   = "ping_interval"   // silence before we PING (60s)
	dPingTimeout    = "ping_timeout"    // time for the answer (60s)
	dConnectTimeout = "connect_timeout" // dial + registration (30s)
	dReconnectMin   = "reconnect_min"   // first reconnection delay (2s)
	dReconnectMax   = "reconnect_max"   // longest delay (5m)
	dHistoryLines   = "history_lines"   // channel lines kept while no client is in the room (30)
	dQuitMessage    = "quit_message"    // QUIT reason when the session ends
	dTrace          = "trace"           // "true": IRC wire trace at debug level (passwords redacted)
	dRealname       = "realname"        // default real name
	dIdentdListen   = "identd_listen"   // host:port of the ident server (RFC 1413; port 113); "" = none
	dOutgoingBind   = "outgoing_bind"   // local address the connections to IRC servers leave from; "" = the system's choice
)

// defaultAllowed is allowed_servers when the operator says nothing.
const defaultAllowed = "irc.libera.chat,127.0.0.1"

// options are the operator's defaults, parsed.
type options struct {
	allowed        []string // nil = any
	defaultServer  string
	port           int // 0 = by TLS
	tls            bool
	tlsInsecure    bool
	floodBurst     int
	floodRate      float64
	pingInterval   time.Duration
	pingTimeout    time.Duration
	connectTimeout time.Duration
	reconnectMin   time.Duration
	reconnectMax   time.Duration
	historyLines   int
	quitMessage    string
	trace          bool
	realname       string
	identd         bool       // an ident server answers for the connections
	bind           netip.Addr // outgoing_bind; invalid when unset
}

// parseOptions reads the operator defaults; a value that does not parse
// keeps its default (config validation is the operator's `check`).
func parseOptions(d map[string]string) options {
	o := options{
		tls:            true,
		floodBurst:     5,
		floodRate:      2,
		pingInterval:   60 * time.Second,
		pingTimeout:    60 * time.Second,
		connectTimeout: 30 * time.Second,
		reconnectMin:   2 * time.Second,
		reconnectMax:   5 * time.Minute,
		historyLines:   30,
		quitMessage:    "XMPP session ended",
	}
	allowed, set := d[dAllowedServers]
	if !set {
		allowed = defaultAllowed
	}
	for _, h := range strings.FieldsFunc(strings.ToLower(allowed), func(r rune) bool { return r == ',' || r == ' ' }) {
		o.allowed = append(o.allowed, h)
	}
	o.defaultServer = strings.ToLower(strings.TrimSpace(d[dDefaultServer]))
	if p, err := strconv.Atoi(d[dPort]); err == nil && p > 0 && p < 65536 {
		o.port = p
	}
	if v, err := strconv.ParseBool(d[dTLS]); err == nil {
		o.tls = v
	}
	o.tlsInsecure, _ = strconv.ParseBool(d[dTLSInsecure])
	o.trace, _ = strconv.ParseBool(d[dTrace])
	if v, err := strconv.Atoi(d[dFloodBurst]); err == nil && v >= 1 {
		o.floodBurst = v
	}
	if v, err := strconv.ParseFloat(d[dFloodRate], 64); err == nil && v > 0 {
		o.floodRate = v
	}
	dur := func(key string, dst *time.Duration) {
		if v, err := time.ParseDuration(d[key]); err == nil && v > 0 {
			*dst = v
		}
	}
	dur(dPingInterval, &o.pingInterval)
	dur(dPingTimeout, &o.pingTimeout)
	dur(dConnectTimeout, &o.connectTimeout)
	dur(dReconnectMin, &o.reconnectMin)
	dur(dReconnectMax, &o.reconnectMax)
	if o.reconnectMax < o.reconnectMin {
		o.reconnectMax = o.reconnectMin
	}
	if v, err := strconv.Atoi(d[dHistoryLines]); err == nil && v >= 0 {
		o.historyLines = v
	}
	if v := oneLine(d[dQuitMessage]); v != "" {
		o.quitMessage = v
	}
	o.realname = oneLine(d[dRealname])
	o.identd = strings.TrimSpace(d[dIdentdListen]) != ""
	o.bind, _ = netip.ParseAddr(strings.TrimSpace(d[dOutgoingBind]))
	return o
}

// checkOptions reports every operator default that does not parse (each
// error names its key); parseOptions would ignore them.
func checkOptions(d map[string]string) error {
	var errs []error
	bad := func(key, want string) {
		errs = append(errs, fmt.Errorf("defaults.%s = %q: %s", key, d[key], want))
	}
	for _, h := range strings.FieldsFunc(strings.ToLower(d[dAllowedServers]), func(r rune) bool { return r == ',' || r == ' ' }) {
		if h != "*" && !validHost(strings.TrimPrefix(h, "*.")) {
			bad(dAllowedServers, "not a list of host names (or *.suffix)")
			break
		}
	}
	if v := d[dDefaultServer]; v != "" && !validHost(strings.ToLower(v)) {
		bad(dDefaultServer, "not a host name")
	}
	if v := d[dPort]; v != "" && checkPort(v) != nil {
		bad(dPort, "must be a port number")
	}
	if v := strings.TrimSpace(d[dIdentdListen]); v != "" {
		if _, p, err := net.SplitHostPort(v); err != nil || checkPort(p) != nil {
			bad(dIdentdListen, "must be host:port, like 0.0.0.0:113 (IRC servers ask port 113)")
		}
	}
	if v := strings.TrimSpace(d[dOutgoingBind]); v != "" {
		if _, err := netip.ParseAddr(v); err != nil {
			bad(dOutgoingBind, "must be an IP address of this host, like 192.0.2.7 or 2001:db8::7")
		}
	}
	for _, k := range []string{dTLS, dTLSInsecure, dTrace} {
		if v := d[k]; v != "" {
			if _, err := strconv.ParseBool(v); err != nil {
				bad(k, "must be true or false")
			}
		}
	}
	for _, k := range []string{dFloodBurst, dHistoryLines} {
		if v := d[k]; v != "" {
			if n, err := strconv.Atoi(v); err != nil || n < 0 || (k == dFloodBurst && n < 1) {
				bad(k, "must be a whole number (flood_burst at least 1)")
			}
		}
	}
	if v := d[dFloodRate]; v != "" {
		if f, err := strconv.ParseFloat(v, 64); err != nil || f <= 0 {
			bad(dFloodRate, "must be a positive number of lines per second")
		}
	}
	for _, k := range []string{dPingInterval, dPingTimeout, dConnectTimeout, dReconnectMin, dReconnectMax} {
		if v := d[k]; v != "" {
			if t, err := time.ParseDuration(v); err != nil || t <= 0 {
				bad(k, "must be a duration like 30s or 5m")
			}
		}
	}
	return errors.Join(errs...)
}

// allowedServer reports whether users may reach a server.
func (o *options) allowedServer(host string) bool {
	if o.allowed == nil {
		return true
	}
	for _, a := range o.allowed {
		switch {
		case a == "*", a == host:
			return true
		case strings.HasPrefix(a, "*.") && strings.HasSuffix(host, a[1:]):
			return true
		}
	}
	return false
}

// netSettings are one network's settings as the user gave them; empty
// values fall back to the registration's, then to the operator's.
type netSettings struct {
	Nick     string   `json:"nick,omitempty"`
	Username string   `json:"username,omitempty"`
	Realname string   `json:"realname,omitempty"`
	TLS      string   `json:"tls,omitempty"` // "", "true", "false"
	Port     int      `json:"port,omitempty"`
	Autojoin []string `json:"autojoin,omitempty"`
	// Fingerprint: see fFingerprint; lower-case hex without colons.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Encoding: see fEncoding; "" as the registration says.
	Encoding string `json:"encoding,omitempty"`
	// Auth is how the network's password (kept sealed, apart: see
	// netPasswordKey) is used: authSASL, authNickServ or authPass.
	Auth string `json:"auth,omitempty"`
	// Channels are the channels' character sets where they differ from
	// the network's (Configure channel), by lower-cased name.
	Channels map[string]string `json:"channels,omitempty"`
	// FloodBurst and FloodRate: see fFloodBurst; 0 for the operator's.
	FloodBurst int     `json:"flood_burst,omitempty"`
	FloodRate  float64 `json:"flood_rate,omitempty"`
}

// netPasswordKey is the sealed-state key of a network's password (only
// where core offers sealed state: core.SecretSink).
func netPasswordKey(server string) string { return "password:" + server }

// netCommandsKey is the sealed-state key of a network's after-connect
// commands (fCommands).
func netCommandsKey(server string) string { return "commands:" + server }

// maxCommands bounds the after-connect commands of a network.
const maxCommands = 10

// parseCommands reads after-connect commands: one IRC line each, a
// leading "/" allowed, blank lines skipped; not the lines the gateway
// itself handles (refusedRaw).
func parseCommands(v string) ([]ircmsg.Message, error) {
	if strings.TrimSpace(v) == "-" {
		return nil, nil // none (Configure network: remove them)
	}
	var out []ircmsg.Message
	for _, line := range strings.Split(v, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "/"))
		if line == "" {
			continue
		}
		msg, err := ircmsg.ParseLine(line)
		if err != nil || msg.Source != "" || len(msg.AllTags()) > 0 {
			return nil, fmt.Errorf("one IRC command per line, like MODE mynick +x")
		}
		if refusedRaw[msg.Command] {
			return nil, fmt.Errorf("%s is handled by the gateway", msg.Command)
		}
		out = append(out, msg)
	}
	if len(out) > maxCommands {
		return nil, fmt.Errorf("at most %d commands", maxCommands)
	}
	return out, nil
}

func checkCommands(v string) error {
	_, err := parseCommands(v)
	return err
}

// commandsField is the form field of after-connect commands.
func commandsField(keep bool) registration.Field {
	desc := "Sent once connected, before joining channels: a user mode (MODE mynick +x), a login to a service other than NickServ (PRIVMSG Q@CServe.quakenet.org :AUTH name password). Kept encrypted."
	if keep {
		desc += " Empty keeps the stored ones; a single - removes them."
	}
	return registration.Field{Var: fCommands, Label: "IRC commands after connecting, one per line", Desc: desc, Type: registration.TextMulti, Secret: true, Validate: checkCommands, MaxLen: 2000}
}

// netStateKey is the account-state key holding a network's settings.
func netStateKey(server string) string { return "network:" + server }

func decodeNetSettings(v string) (netSettings, error) {
	var ns netSettings
	err := json.Unmarshal([]byte(v), &ns)
	return ns, err
}

func (ns netSettings) encode() string {
	b, _ := json.Marshal(ns)
	return string(b)
}

// netConfig is everything a connection to one server needs.
type netConfig struct {
	server   string
	port     int
	tls      bool
	nick     string // the network's own nick (overrides the room nick); ""
	account  string // SASL login: the network's nick, else the default nick
	username string
	realname string
	auth     string // authSASL, authNickServ, authPass, authNone
	password string
	autojoin []string
	// fingerprint is the SHA-256 of a certificate trusted without an
	// authority's signature; nil if none.
	fingerprint []byte
	commands    []ircmsg.Message // after-connect commands (fCommands)
	charset     string           // fEncoding; "" for UTF-8
	// chanCharsets are netSettings.Channels.
	chanCharsets map[string]string
	// floodBurst and floodRate: the network's flood control (the
	// operator's, unless netSettings says otherwise).
	floodBurst int
	floodRate  float64
}

// lineCharsets are the character sets of a connection with this
// configuration.
func (c netConfig) lineCharsets() *lineCharsets {
	return newLineCharsets(c.charset, c.chanCharsets)
}

// configFor merges the operator's options, the account's values and the
// network's own settings (and password) for one server.
func configFor(o *options, values map[string]string, server string, ns netSettings, password, commands string) netConfig {
	c := netConfig{server: server, tls: o.tls, port: o.port, auth: authNone, floodBurst: o.floodBurst, floodRate: o.floodRate}
	c.username = values[fUsername]
	c.realname = values[fRealname]
	if strings.EqualFold(values[fNetwork], server) {
		if values[fPassword] != "" {
			c.auth = values[fAuth]
			if c.auth == "" {
				c.auth = authSASL
			}
			c.password = values[fPassword]
		}
		if v, err := strconv.ParseBool(values[fTLS]); err == nil {
			c.tls = v
		}
		if p, err := strconv.Atoi(values[fPort]); err == nil && p > 0 {
			c.port = p
		}
		c.autojoin = splitChannels(values[fAutojoin])
		c.fingerprint, _ = parseFingerprint(values[fFingerprint])
		c.commands, _ = parseCommands(values[fCommands])
		if charsetOf(values[fEncoding]) != nil {
			c.charset = values[fEncoding]
		}
	}
	if commands != "" {
		c.commands, _ = parseCommands(commands)
	}
	c.nick = ns.Nick
	c.account = ns.Nick
	if c.account == "" {
		c.account = values[fNick]
	}
	if ns.Username != "" {
		c.username = ns.Username
	}
	if ns.Realname != "" {
		c.realname = ns.Realname
	}
	if v, err := strconv.ParseBool(ns.TLS); err == nil {
		c.tls = v
	}
	if ns.Port > 0 {
		c.port = ns.Port
	}
	if ns.Autojoin != nil {
		c.autojoin = ns.Autojoin
	}
	if fp, ok := parseFingerprint(ns.Fingerprint); ok {
		c.fingerprint = fp
	}
	switch {
	case ns.Encoding == charsetUTF8:
		c.charset = ""
	case charsetOf(ns.Encoding) != nil:
		c.charset = ns.Encoding
	}
	c.chanCharsets = ns.Channels
	if ns.FloodBurst > 0 {
		c.floodBurst = ns.FloodBurst
	}
	if ns.FloodRate > 0 {
		c.floodRate = ns.FloodRate
	}
	if password != "" && passwordAuth(ns.Auth) {
		c.auth, c.password = ns.Auth, password
	}
	if c.port == 0 {
		c.port = 6667
		if c.tls {
			c.port = 6697
		}
	}
	c.realname = oneLine(c.realname)
	if c.realname == "" {
		c.realname = o.realname
	}
	return c
}

// splitChannels reads a comma- or space-separated channel list.
func splitChannels(s string) []string {
	var out []string
	for _, c := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		if validChannel(c) && isChanPrefix(c[0], defaultChanTypes+"+!") {
			out = append(out, c)
		}
	}
	return out
}

// Field checks shared by the registration form and the commands.

func checkNick(v string) error {
	if !validNick(v) {
		return fmt.Errorf("not a valid IRC nick")
	}
	return nil
}

func checkUsername(v string) error {
	for _, r := range v {
		if r <= ' ' || r == '@' || r == '!' || r == ':' || r > '~' {
			return fmt.Errorf("letters, digits and punctuation only, no spaces")
		}
	}
	return nil
}

// maxFlood bounds a user's flood control settings (lines).
const maxFlood = 10000

func checkFloodBurst(v string) error {
	if n, err := strconv.Atoi(v); err != nil || n < 1 || n > maxFlood {
		return fmt.Errorf("must be a number of lines between 1 and %d", maxFlood)
	}
	return nil
}

func checkFloodRate(v string) error {
	if f, err := strconv.ParseFloat(v, 64); err != nil || !(f > 0 && f <= maxFlood) {
		return fmt.Errorf("must be a number of lines per second above 0 and at most %d, like 2 or 0.5", maxFlood)
	}
	return nil
}

func checkPort(v string) error {
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("must be a number between 1 and 65535")
	}
	return nil
}

// parseFingerprint reads a SHA-256 fingerprint in hex, with or without
// colons or spaces between the bytes (as openssl and browsers show it).
func parseFingerprint(v string) ([]byte, bool) {
	v = strings.Map(func(r rune) rune {
		if r == ':' || r == ' ' {
			return -1
		}
		return r
	}, strings.TrimSpace(v))
	b, err := hex.DecodeString(v)
	if err != nil || len(b) != sha256.Size {
		return nil, false
	}
	return b, true
}

func checkFingerprint(v string) error {
	if _, ok := parseFingerprint(v); !ok {
		return fmt.Errorf("not a SHA-256 fingerprint: 64 hexadecimal digits, colons allowed (like AB:CD:...)")
	}
	return nil
}

// fingerprintText shows a fingerprint as openssl does (AB:CD:...).
func fingerprintText(fp []byte) string {
	var b strings.Builder
	for i, c := range fp {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}

func checkHost(v string) error {
	if !validHost(strings.ToLower(v)) {
		return fmt.Errorf("not a host name (like irc.libera.chat)")
	}
	return nil
}

func checkChannels(v string) error {
	for _, c := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
		if !validChannel(c) || !isChanPrefix(c[0], defaultChanTypes+"+!") {
			return fmt.Errorf("not a list of channels like #a, #b")
		}
	}
	return nil
}

// schema is the registration form: defaults for every network, and the
// credentials of one.
func schema(defaults map[string]string) registration.Schema {
	o := parseOptions(defaults)
	return registration.Schema{
		Title: "IRC",
		Instructions: "Joining IRC channels needs no registration: join #channel%server@ this gateway. " +
			"Register to choose your default nick, to stay connected while you are offline, " +
			"and to log in to one network with a password (SASL PLAIN, NickServ or the server's own password). " +
			"Other networks: use the \"Configure network\" command.",
		Fields: append(settingsFields(), []registration.Field{
			{Var: fNetwork, Label: "Network for the password and channels below", Type: registration.TextSingle, Default: o.defaultServer, Validate: checkHost, MaxLen: 253},
			{Var: fAuth, Label: "Authentication", Type: registration.ListSingle, Default: authSASL, Options: authOptions("None")},
			{Var: fPassword, Label: "Password", Type: registration.TextPrivate, Secret: true, Legacy: "password", MaxLen: 400},
			{Var: fTLS, Label: "Use TLS", Type: registration.Boolean, Default: strconv.FormatBool(o.tls)},
			{Var: fPort, Label: "Port (empty: 6697 with TLS, 6667 without)", Type: registration.TextSingle, Validate: checkPort, MaxLen: 5},
			{Var: fAutojoin, Label: "Channels to join on connect (#a, #b)", Type: registration.TextSingle, Validate: checkChannels},
			{Var: fFingerprint, Label: "Trusted TLS certificate (SHA-256 fingerprint), for a server whose certificate no authority signed", Type: registration.TextSingle, Validate: checkFingerprint, MaxLen: 100},
			{Var: fEncoding, Label: "Character set of the network", Desc: "For a network whose users do not write UTF-8: their lines are read in it, yours written in it", Type: registration.ListSingle, Default: charsetUTF8, Options: charsetOptions()},
			commandsField(false),
		}...),
	}
}

// settingsFields are what the Settings command offers (no secrets).
func settingsFields() []registration.Field {
	return []registration.Field{
		{Var: fNick, Label: "Default nick", Desc: "Used where no room nick is given (private messages, channels joined on connect)", Type: registration.TextSingle, Legacy: "nick", Validate: checkNick, MaxLen: 64},
		{Var: fUsername, Label: "User name (ident)", Type: registration.TextSingle, Legacy: "username", Validate: checkUsername, MaxLen: 32},
		{Var: fRealname, Label: "Real name", Type: registration.TextSingle, Legacy: "name", MaxLen: 128},
		{Var: fPersistent, Label: "Stay connected to IRC while I am offline", Type: registration.Boolean},
	}
}
