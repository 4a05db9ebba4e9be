package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"mellium.im/xmpp/jid"
)

// validator turns a rawConfig into a Config, collecting every problem.
type validator struct {
	baseDir   string
	known     []string // sorted
	lookupEnv func(string) (string, bool)
	problems  []Error
}

func (v *validator) errorf(k toml.Key, format string, args ...any) {
	v.problems = append(v.problems, Error{Key: k.String(), Msg: fmt.Sprintf(format, args...)})
}

// sub returns the key of child under k, without sharing k's array.
func sub(k toml.Key, child ...string) toml.Key {
	return append(slices.Clip(k), child...)
}

// str returns x as a string; ok is false if x is unset or not a string
// (which is reported).
func (v *validator) str(k toml.Key, x value) (s string, ok bool) {
	if !x.set {
		return "", false
	}
	s, ok = x.v.(string)
	if !ok {
		v.errorf(k, "must be a string, not %s", tomlType(x.v))
	}
	return s, ok
}

func (v *validator) boolean(k toml.Key, x value, def bool) bool {
	if !x.set {
		return def
	}
	b, ok := x.v.(bool)
	if !ok {
		v.errorf(k, "must be true or false, not %s", tomlType(x.v))
		return def
	}
	return b
}

// strs returns x as a list of strings; ok is false if x is unset or not
// a list of strings (which is reported).
func (v *validator) strs(k toml.Key, x value) (list []string, ok bool) {
	if !x.set {
		return nil, false
	}
	a, isArray := x.v.([]any)
	if !isArray {
		v.errorf(k, "must be an array of strings, not %s", tomlType(x.v))
		return nil, false
	}
	ok = true
	for i, e := range a {
		s, isString := e.(string)
		if !isString {
			v.errorf(k, "element %d must be a string, not %s", i+1, tomlType(e))
			ok = false
		}
		list = append(list, s)
	}
	return list, ok
}

func (v *validator) intRange(k toml.Key, x value, def, lo, hi int) int {
	if !x.set {
		return def
	}
	n, ok := x.v.(int64)
	if !ok {
		v.errorf(k, "must be an integer, not %s", tomlType(x.v))
		return def
	}
	if n < int64(lo) || n > int64(hi) {
		v.errorf(k, "%d is out of range; it must be from %d to %d", n, lo, hi)
		return def
	}
	return int(n)
}

func (v *validator) duration(k toml.Key, x value, def time.Duration) time.Duration {
	s, ok := v.str(k, x)
	if !ok {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		v.errorf(k, "%q is not a duration (like \"1s\", \"1m30s\")", s)
		return def
	}
	if d <= 0 {
		v.errorf(k, "%q must be longer than zero", s)
		return def
	}
	return d
}

// path resolves p against the config file's directory.
func (v *validator) path(p string) string {
	if filepath.IsAbs(p) || v.baseDir == "" {
		return filepath.Clean(p)
	}
	return filepath.Join(v.baseDir, p)
}

// checkHostPort checks that s is host:port with a numeric port from 1 to
// 65535; the host may be empty unless hostRequired.
func checkHostPort(s string, hostRequired bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port", s)
	}
	if hostRequired && host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || strings.TrimLeft(port, "0123456789") != "" || n < 1 || n > 65535 {
		return fmt.Errorf("%q: the port must be a number from 1 to 65535", s)
	}
	return nil
}

// normDomain normalises a domain name as mellium.im/xmpp/jid does
// (lower-cased, U-labels, no trailing dot) and rejects anything else.
func normDomain(s string) (string, error) {
	j, err := jid.Parse(s)
	if err != nil {
		return "", err
	}
	if j.Localpart() != "" || j.Resourcepart() != "" {
		return "", errors.New("it is a JID, not a domain")
	}
	d := j.Domainpart()
	if slices.Contains(strings.Split(d, "."), "") {
		return "", errors.New("it has an empty label")
	}
	return d, nil
}

func (v *validator) config(raw *rawConfig) *Config {
	return &Config{
		XMPP:    v.xmpp(raw.XMPP),
		Store:   v.store(raw.Store),
		HTTP:    v.http(raw.HTTP),
		Log:     v.log(raw.Log),
		Domains: v.domains(raw.Domains),
	}
}

func (v *validator) xmpp(r rawXMPP) XMPP {
	k := toml.Key{"xmpp"}
	var x XMPP
	before := len(v.problems)
	x.ReconnectMin = v.duration(sub(k, "reconnect_min"), r.ReconnectMin, DefaultReconnectMin)
	x.ReconnectMax = v.duration(sub(k, "reconnect_max"), r.ReconnectMax, DefaultReconnectMax)
	if len(v.problems) == before && x.ReconnectMin > x.ReconnectMax {
		v.errorf(sub(k, "reconnect_min"), "%v is longer than reconnect_max (%v)", x.ReconnectMin, x.ReconnectMax)
	}
	// RFC 6120 §13.12: a server must accept stanzas of at least 10000 bytes.
	x.MaxStanzaBytes = v.intRange(sub(k, "max_stanza_bytes"), r.MaxStanzaBytes, DefaultMaxStanzaBytes, 10000, 1<<30)
	x.MaxStanzaDepth = v.intRange(sub(k, "max_stanza_depth"), r.MaxStanzaDepth, DefaultMaxStanzaDepth, 4, 1024)
	ak := sub(k, "component_addr")
	if s, ok := v.str(ak, r.ComponentAddr); ok {
		if err := checkHostPort(s, true); err != nil {
			v.errorf(ak, "%v", err)
		} else {
			x.ComponentAddr = s
		}
	} else if !r.ComponentAddr.set {
		v.errorf(ak, "missing; set it to the host:port of the XMPP server's component (XEP-0114) listener")
	}
	return x
}

func (v *validator) store(r rawStore) Store {
	k := toml.Key{"store"}
	var s Store
	if p, ok := v.str(sub(k, "path"), r.Path); ok && p != "" {
		s.Path = v.path(p)
	} else if !r.Path.set || ok {
		v.errorf(sub(k, "path"), "missing; set it to the path of the database file")
	}
	key, source, ok := v.secret(k, "key_file", "key_env", r.KeyFile, r.KeyEnv, false)
	if !ok {
		return s
	}
	s.KeySource = source
	kk := sub(k, "key_file")
	if strings.HasPrefix(source, "env ") {
		kk = sub(k, "key_env")
	}
	const howto = "make one with: head -c 32 /dev/urandom | base64"
	b, err := base64.StdEncoding.DecodeString(key)
	switch {
	case err != nil:
		v.errorf(kk, "%s does not hold a key in base64 (standard alphabet); %s", describe(source), howto)
	case len(b) != KeySize:
		v.errorf(kk, "%s holds a %d-byte key; it must be %d bytes; %s", describe(source), len(b), KeySize, howto)
	default:
		s.Key = b
	}
	return s
}

func (v *validator) http(r rawHTTP) HTTP {
	k := toml.Key{"http"}
	var h HTTP
	if s, ok := v.str(sub(k, "listen"), r.Listen); ok && s != "" {
		if err := checkHostPort(s, false); err != nil {
			v.errorf(sub(k, "listen"), "%v", err)
		} else {
			h.Listen = s
		}
	}
	uk := sub(k, "public_url")
	if s, ok := v.str(uk, r.PublicURL); ok && s != "" {
		// The value is not quoted back: it might carry a password.
		u, err := url.Parse(s)
		switch {
		case err != nil:
			v.errorf(uk, "not a URL")
		case u.Scheme != "http" && u.Scheme != "https", u.Host == "":
			v.errorf(uk, "must be an absolute http:// or https:// URL")
		case u.User != nil:
			v.errorf(uk, "must not contain a user name or password")
		default:
			h.PublicURL = u
		}
	}
	return h
}

func (v *validator) log(r rawLog) Log {
	k := toml.Key{"log"}
	l := Log{Level: DefaultLogLevel}
	levels := map[string]slog.Level{"debug": slog.LevelDebug, "info": slog.LevelInfo, "warn": slog.LevelWarn, "error": slog.LevelError}
	if s, ok := v.str(sub(k, "level"), r.Level); ok {
		if lvl, known := levels[s]; known {
			l.Level = lvl
		} else {
			v.errorf(sub(k, "level"), "%q is not one of debug, info, warn, error", s)
		}
	}
	if s, ok := v.str(sub(k, "format"), r.Format); ok {
		switch s {
		case "text":
		case "json":
			l.JSON = true
		default:
			v.errorf(sub(k, "format"), "%q is not one of text, json", s)
		}
	}
	l.RedactJIDs = v.boolean(sub(k, "redact_jids"), r.RedactJIDs, false)
	return l
}

// component is a component JID already claimed, and by which key.
type component struct {
	jid string
	key toml.Key
}

func (v *validator) domains(raw map[string]rawDomain) []Domain {
	k := toml.Key{"domains"}
	if len(raw) == 0 {
		if slices.ContainsFunc(v.problems, func(e Error) bool { return e.Key == "domains" }) {
			return nil // domains is not a table, reported
		}
		v.errorf(k, `no domains configured; add a [domains."example.net"] table with at least one transport`)
		return nil
	}
	var (
		domains    []Domain
		seen       = map[string]string{} // normalised name → name as written
		components []component
	)
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		dk := sub(k, name)
		norm, err := normDomain(name)
		if err != nil {
			v.errorf(dk, "%q is not a valid domain name: %v", name, err)
			continue
		}
		if other, dup := seen[norm]; dup {
			v.errorf(dk, "the same domain as %s", sub(k, other))
			continue
		}
		seen[norm] = name
		d := v.domain(dk, norm, raw[name])
		for _, t := range d.Transports {
			components = append(components, component{t.JID, sub(dk, "transports", t.Name, "jid")})
		}
		domains = append(domains, d)
	}
	slices.SortFunc(domains, func(a, b Domain) int { return strings.Compare(a.Name, b.Name) })

	// A component JID must be unique and must not be an XMPP server's own
	// domain: the server would refuse the component, or route to it what
	// belongs to its users.
	claimed := map[string]toml.Key{}
	for _, c := range components {
		if other, dup := claimed[c.jid]; dup {
			v.errorf(c.key, "component JID %s is already used by %s", c.jid, other[:len(other)-1])
			continue
		}
		claimed[c.jid] = c.key
		for _, d := range domains {
			if c.jid == d.Name || slices.Contains(d.Users, c.jid) {
				v.errorf(c.key, "component JID %s is the name or a user domain of %s; a component needs a domain of its own",
					c.jid, sub(k, seen[d.Name]))
				break
			}
		}
	}
	return domains
}

func (v *validator) domain(k toml.Key, name string, r rawDomain) Domain {
	d := Domain{Name: name, Users: []string{name}, Registration: RegistrationOpen}

	uk := sub(k, "users")
	if users, ok := v.strs(uk, r.Users); ok {
		d.Users = nil
		if len(users) == 0 {
			v.errorf(uk, "is empty; list at least one user domain, or leave it out to default to [%q]", name)
		}
		for _, u := range users {
			n, err := normDomain(u)
			if err != nil {
				v.errorf(uk, "%q is not a valid domain name: %v", u, err)
				continue
			}
			if !slices.Contains(d.Users, n) {
				d.Users = append(d.Users, n)
			}
		}
	}

	rk := sub(k, "registration")
	if s, ok := v.str(rk, r.Registration); ok {
		switch reg := Registration(s); reg {
		case RegistrationOpen, RegistrationAllowlist, RegistrationClosed:
			d.Registration = reg
		default:
			v.errorf(rk, "%q is not one of open, allowlist, closed", s)
		}
	}

	ak := sub(k, "allow")
	if allow, ok := v.strs(ak, r.Allow); ok {
		for _, a := range allow {
			j, err := jid.Parse(a)
			if err != nil || j.Resourcepart() != "" {
				v.errorf(ak, "%q is neither a bare JID nor a domain", a)
				continue
			}
			d.Allow = append(d.Allow, j.String())
		}
	}
	switch {
	case d.Registration == RegistrationAllowlist && len(d.Allow) == 0 && !r.Allow.set:
		v.errorf(rk, `is "allowlist" but allow is not set; list the JIDs and domains that may register in allow`)
	case d.Registration == RegistrationOpen && len(d.Allow) > 0:
		v.errorf(ak, `is set but registration is "open", so anyone may register; set registration = "allowlist" to use it`)
	}

	adk := sub(k, "admins")
	if admins, ok := v.strs(adk, r.Admins); ok {
		for _, a := range admins {
			j, err := jid.Parse(a)
			if err != nil || j.Localpart() == "" || j.Resourcepart() != "" {
				v.errorf(adk, "%q is not a bare JID (user@domain)", a)
				continue
			}
			d.Admins = append(d.Admins, j.String())
		}
	}

	for _, name := range slices.Sorted(maps.Keys(r.Transports)) {
		if t, ok := v.transport(sub(k, "transports", name), d.Name, name, r.Transports[name]); ok {
			d.Transports = append(d.Transports, t)
		}
	}
	return d
}

func (v *validator) transport(k toml.Key, domain, name string, r rawTransport) (Transport, bool) {
	if !slices.Contains(v.known, name) {
		known := "none"
		if len(v.known) > 0 {
			known = strings.Join(v.known, ", ")
		}
		v.errorf(k, "unknown transport %q (known: %s)", name, known)
		return Transport{}, false
	}
	t := Transport{
		Name:     name,
		Enabled:  v.boolean(sub(k, "enabled"), r.Enabled, true),
		JID:      name + "." + domain,
		Defaults: map[string]string{},
		// Ten years is "for good" without overflowing a time.Duration.
		RoomArchiveDays: v.intRange(sub(k, "room_archive_days"), r.ArchiveDays, DefaultRoomArchiveDays, 0, 3650),
	}

	jk := sub(k, "jid")
	if s, ok := v.str(jk, r.JID); ok {
		if n, err := normDomain(s); err != nil {
			v.errorf(jk, "%q is not a valid component JID (a domain such as %s.%s): %v", s, name, domain, err)
		} else {
			t.JID = n
		}
	}

	inline := r.Secret.set
	if inline {
		v.errorf(sub(k, "secret"), "inline secrets are not allowed; use secret_file or secret_env to read the component secret from a file or the environment")
	}
	if t.Enabled {
		if secret, source, ok := v.secret(k, "secret_file", "secret_env", r.SecretFile, r.SecretEnv, inline); ok {
			t.Secret, t.SecretSource = secret, source
		}
	} else {
		// Not loaded: a disabled transport needs no secret. Still check types.
		v.str(sub(k, "secret_file"), r.SecretFile)
		v.str(sub(k, "secret_env"), r.SecretEnv)
	}

	for _, dkey := range slices.Sorted(maps.Keys(r.Defaults)) {
		switch x := r.Defaults[dkey].v.(type) {
		case string:
			t.Defaults[dkey] = x
		case int64:
			t.Defaults[dkey] = strconv.FormatInt(x, 10)
		case bool:
			t.Defaults[dkey] = strconv.FormatBool(x)
		default:
			v.errorf(sub(k, "defaults", dkey), "must be a string, an integer or a boolean, not %s", tomlType(x))
		}
	}
	return t, true
}
