package config

import (
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"time"

	"mellium.im/xmpp/jid"
)

// Defaults for optional settings.
const (
	DefaultReconnectMin   = 1 * time.Second
	DefaultReconnectMax   = 60 * time.Second
	DefaultMaxStanzaBytes = 256 << 10
	DefaultMaxStanzaDepth = 32
	DefaultLogLevel       = slog.LevelInfo
)

// KeySize is the length in bytes of the store key.
const KeySize = 32

// Config is a validated transportd configuration.
type Config struct {
	XMPP    XMPP
	Store   Store
	HTTP    HTTP
	Log     Log
	Domains []Domain // sorted by Name
}

// XMPP holds the settings of the connections to the XMPP server.
type XMPP struct {
	ComponentAddr  string        // host:port of the server's XEP-0114 component listener
	ReconnectMin   time.Duration // first delay before reconnecting
	ReconnectMax   time.Duration // longest delay between reconnection attempts
	MaxStanzaBytes int           // larger stanzas are refused
	MaxStanzaDepth int           // more deeply nested stanzas are refused
}

// Store holds the settings of the database.
type Store struct {
	Path      string // the SQLite database file; a relative path in the config is resolved against the config's directory
	Key       []byte // KeySize bytes; secret
	KeySource string // where Key came from, for messages: "file PATH" or "env NAME"
}

// HTTP holds the settings of the HTTP listener (webhooks, metrics).
type HTTP struct {
	Listen    string   // host:port; "" means no listener
	PublicURL *url.URL // absolute http(s) URL the listener is reachable at from outside; nil if unset
}

// Log holds the logging settings.
type Log struct {
	Level      slog.Level
	JSON       bool // JSON lines instead of slog's text format
	RedactJIDs bool // replace JIDs and legacy addresses in logs by a stable hash
}

// Registration is a domain's registration policy.
type Registration string

// Registration policies.
const (
	RegistrationOpen      Registration = "open"      // every user of Users may register
	RegistrationAllowlist Registration = "allowlist" // only users of Users that Allow lists by JID or domain
	RegistrationClosed    Registration = "closed"    // nobody may register; existing registrations keep working
)

// Domain is the configuration of one XMPP domain served by transportd.
// All JIDs and domain names in it are normalised with mellium.im/xmpp/jid.
type Domain struct {
	Name         string
	Users        []string // user domains whose users may use these transports
	Registration Registration
	Allow        []string    // bare JIDs and domains, used with RegistrationAllowlist
	Admins       []string    // bare JIDs
	Transports   []Transport // sorted by Name
}

// Transport is the configuration of one transport in one domain, i.e. of
// one XEP-0114 component.
type Transport struct {
	Name         string // the transport's registered name, e.g. "email"
	Enabled      bool
	JID          string // the component's JID, a bare domain
	Secret       string // the XEP-0114 secret, surrounding white space trimmed; "" if disabled
	SecretSource string // where Secret came from, for messages: "file PATH" or "env NAME"
	// RoomArchiveDays is how long the messages of the rooms a user is in
	// are kept for the user's client to fetch (XEP-0313 on the room);
	// 0 keeps none. Default DefaultRoomArchiveDays.
	RoomArchiveDays int
	Defaults        map[string]string
}

// DefaultRoomArchiveDays is Transport.RoomArchiveDays when the config
// says nothing: a week, as Prosody keeps its rooms' archives by default.
const DefaultRoomArchiveDays = 7

// Load reads and validates the config file at path. knownTransports are
// the names of the transports compiled in. Relative paths in the file are
// resolved against the file's directory. Any failure, including a missing
// or unreadable file, is returned as an *Errors listing every problem.
func Load(path string, knownTransports []string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &Errors{File: path, List: []Error{{Msg: err.Error()}}}
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		abs = path
	}
	cfg, err := Parse(data, filepath.Dir(abs), knownTransports)
	if errs, ok := err.(*Errors); ok {
		errs.File = path
	}
	return cfg, err
}

// Parse is Load for a config already read into data; relative paths in it
// are resolved against baseDir. A non-nil error is always an *Errors.
func Parse(data []byte, baseDir string, knownTransports []string) (*Config, error) {
	raw, problems := decode(data)
	if raw == nil {
		return nil, &Errors{List: problems}
	}
	v := &validator{
		baseDir:   baseDir,
		known:     slices.Sorted(slices.Values(knownTransports)),
		lookupEnv: os.LookupEnv,
		problems:  problems,
	}
	cfg := v.config(raw)
	if len(v.problems) > 0 {
		return nil, newErrors(v.problems)
	}
	return cfg, nil
}

// Domain returns the configuration of the domain called name, or nil.
func (c *Config) Domain(name string) *Domain {
	name, err := normDomain(name)
	if err != nil {
		return nil
	}
	i, ok := slices.BinarySearchFunc(c.Domains, name, func(d Domain, name string) int {
		switch {
		case d.Name < name:
			return -1
		case d.Name > name:
			return 1
		}
		return 0
	})
	if !ok {
		return nil
	}
	return &c.Domains[i]
}

// Transport returns the configuration of the domain's transport called
// name, or nil.
func (d *Domain) Transport(name string) *Transport {
	for i := range d.Transports {
		if d.Transports[i].Name == name {
			return &d.Transports[i]
		}
	}
	return nil
}

// UserAllowed reports whether the user with the given JID belongs to one of
// the domain's user domains (Users), and so may use its transports. A
// resource, if any, is ignored; an invalid JID, or one without a localpart
// (a server or component), is not allowed.
func (d *Domain) UserAllowed(bareJID string) bool {
	j, err := jid.Parse(bareJID)
	return err == nil && d.UserJIDAllowed(j)
}

// UserJIDAllowed is UserAllowed for a parsed address (of any kind).
func (d *Domain) UserJIDAllowed(j jid.JID) bool {
	return j.Localpart() != "" && slices.Contains(d.Users, j.Domainpart())
}

// MayRegister reports whether the user may register with the domain's
// transports under its registration policy: with "open", every allowed
// user (see UserAllowed); with "allowlist", allowed users whose bare JID or
// domain Allow lists; with "closed", nobody.
func (d *Domain) MayRegister(bareJID string) bool {
	switch d.Registration {
	case RegistrationOpen:
		return d.UserAllowed(bareJID)
	case RegistrationAllowlist:
		if !d.UserAllowed(bareJID) {
			return false
		}
		j, _ := jid.Parse(bareJID) // valid: UserAllowed parsed it
		return slices.Contains(d.Allow, j.Bare().String()) || slices.Contains(d.Allow, j.Domainpart())
	}
	return false
}

// IsAdmin reports whether the bare JID is one of the domain's admins. A
// resource, if any, is ignored.
func (d *Domain) IsAdmin(bareJID string) bool {
	j, err := jid.Parse(bareJID)
	if err != nil || j.Localpart() == "" {
		return false
	}
	return slices.Contains(d.Admins, j.Bare().String())
}
