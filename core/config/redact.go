package config

import (
	"encoding/json"
	"fmt"
	"strings"
)

// Printing or logging a Config must never show a secret. Store and
// Transport, the two types that hold one, implement fmt.Stringer,
// fmt.GoStringer and json.Marshaler without it; fmt applies these to
// nested values too, and slog's text and JSON handlers go through them.

// String describes the store without its key.
func (s Store) String() string {
	return fmt.Sprintf("store %s (key from %s)", s.Path, s.KeySource)
}

// GoString is String, so that %#v does not show the key either.
func (s Store) GoString() string { return s.String() }

// MarshalJSON leaves the key out.
func (s Store) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct{ Path, KeySource string }{s.Path, s.KeySource})
}

// String describes the transport without its secret.
func (t Transport) String() string {
	state := "enabled"
	if !t.Enabled {
		state = "disabled"
	}
	src := t.SecretSource
	if src == "" {
		src = "none"
	}
	return fmt.Sprintf("%s as %s, %s, secret from %s, defaults %v", t.Name, t.JID, state, src, t.Defaults)
}

// GoString is String, so that %#v does not show the secret either.
func (t Transport) GoString() string { return t.String() }

// MarshalJSON leaves the secret out.
func (t Transport) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Name, JID, SecretSource string
		Enabled                 bool
		Defaults                map[string]string
	}{t.Name, t.JID, t.SecretSource, t.Enabled, t.Defaults})
}

// String summarises the effective configuration, one setting a line,
// without secrets; `transportd check` prints it.
func (c *Config) String() string {
	var b strings.Builder
	x := c.XMPP
	fmt.Fprintf(&b, "xmpp: component_addr %s, reconnect %v..%v, max stanza %d bytes, depth %d\n",
		x.ComponentAddr, x.ReconnectMin, x.ReconnectMax, x.MaxStanzaBytes, x.MaxStanzaDepth)
	fmt.Fprintf(&b, "%v\n", c.Store)
	if c.HTTP.Listen == "" {
		b.WriteString("http: no listener\n")
	} else {
		fmt.Fprintf(&b, "http: listen %s, public URL %v\n", c.HTTP.Listen, c.HTTP.PublicURL)
	}
	fmt.Fprintf(&b, "log: level %v, json %t, redact JIDs %t\n", c.Log.Level, c.Log.JSON, c.Log.RedactJIDs)
	for _, d := range c.Domains {
		fmt.Fprintf(&b, "domain %s: users %v, registration %s, allow %v, admins %v\n",
			d.Name, d.Users, d.Registration, d.Allow, d.Admins)
		for _, t := range d.Transports {
			fmt.Fprintf(&b, "  transport %v\n", t)
		}
	}
	return b.String()
}
