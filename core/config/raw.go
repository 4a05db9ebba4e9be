package config

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// The raw structure mirrors the file. Its leaves are values, which accept
// any TOML type, so that a value of the wrong type becomes one problem
// among others instead of stopping the decoder.

type rawConfig struct {
	XMPP    rawXMPP              `toml:"xmpp"`
	Store   rawStore             `toml:"store"`
	HTTP    rawHTTP              `toml:"http"`
	Log     rawLog               `toml:"log"`
	Domains map[string]rawDomain `toml:"domains"`
}

type rawXMPP struct {
	ComponentAddr  value `toml:"component_addr"`
	ReconnectMin   value `toml:"reconnect_min"`
	ReconnectMax   value `toml:"reconnect_max"`
	MaxStanzaBytes value `toml:"max_stanza_bytes"`
	MaxStanzaDepth value `toml:"max_stanza_depth"`
}

type rawStore struct {
	Path    value `toml:"path"`
	KeyFile value `toml:"key_file"`
	KeyEnv  value `toml:"key_env"`
}

type rawHTTP struct {
	Listen    value `toml:"listen"`
	PublicURL value `toml:"public_url"`
}

type rawLog struct {
	Level      value `toml:"level"`
	Format     value `toml:"format"`
	RedactJIDs value `toml:"redact_jids"`
}

type rawDomain struct {
	Users        value                   `toml:"users"`
	Registration value                   `toml:"registration"`
	Allow        value                   `toml:"allow"`
	Admins       value                   `toml:"admins"`
	Transports   map[string]rawTransport `toml:"transports"`
}

type rawTransport struct {
	Enabled     value            `toml:"enabled"`
	JID         value            `toml:"jid"`
	Secret      value            `toml:"secret"` // decoded only to be rejected
	SecretFile  value            `toml:"secret_file"`
	SecretEnv   value            `toml:"secret_env"`
	ArchiveDays value            `toml:"room_archive_days"`
	Defaults    map[string]value `toml:"defaults"`
}

// value is a TOML value of any type, checked later.
type value struct {
	v   any
	set bool
}

// UnmarshalTOML implements toml.Unmarshaler.
func (x *value) UnmarshalTOML(v any) error {
	x.v, x.set = v, true
	return nil
}

// tomlType names the TOML type of a decoded value, for messages.
func tomlType(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	}
	return "a date or time" // time.Time, toml.LocalDate, ...
}

// parseMessage returns the TOML parser's message, except for the one kind
// that quotes a string value up to the error (a bad \x, \u or \U escape):
// the string could be a password.
func parseMessage(msg string) string {
	if strings.Contains(msg, "hexadecimal digits after") {
		return `invalid \x, \u or \U escape in a string`
	}
	return msg
}

// notTableRE matches the decoder's errors for a value where the raw
// structure has a table (a struct or a map).
var notTableRE = regexp.MustCompile(`^toml: line (\d+) \(last key ("(?:[^"\\]|\\.)*")\): ` +
	`(?:type mismatch for \S+: expected table but found|incompatible types: TOML value has type) ([^;]+)`)

// typeWords names the types of toml.MetaData.Type.
var typeWords = map[string]string{
	"String": "a string", "Integer": "an integer", "Float": "a float", "Bool": "a boolean",
	"Array": "an array", "ArrayHash": "an array of tables", "Hash": "a table",
	"Datetime": "a date or time", "DatetimeLocal": "a date or time", "DateLocal": "a date or time", "TimeLocal": "a date or time",
}

// notTable turns a decoder error other than a ParseError, which means a
// value where a table belongs, into a problem with its key.
func notTable(err error) Error {
	m := notTableRE.FindStringSubmatch(err.Error())
	if m == nil {
		return Error{Msg: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	key, qerr := strconv.Unquote(m[2])
	if qerr != nil {
		key = m[2]
	}
	found := map[string]string{
		"string": "a string", "int64": "an integer", "float64": "a float", "bool": "a boolean",
		"[]any": "an array", "[]interface {}": "an array", "[]map[string]any": "an array of tables",
		"[]map[string]interface {}": "an array of tables",
	}[strings.TrimSpace(m[3])]
	if found == "" {
		found = "a " + strings.TrimSpace(m[3])
	}
	return Error{Key: key, Msg: fmt.Sprintf("line %s: must be a table, not %s", m[1], found)}
}

// decode parses data into a rawConfig and reports the keys it does not
// know. It returns a nil rawConfig if data is not TOML or has the wrong
// shape at the table level.
func decode(data []byte) (*rawConfig, []Error) {
	var raw rawConfig
	md, err := toml.Decode(string(data), &raw)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, []Error{{Msg: fmt.Sprintf("not valid TOML: line %d, column %d: %s",
				pe.Position.Line, pe.Position.Col, parseMessage(pe.Message))}}
		}
		return nil, []Error{notTable(err)}
	}
	var problems []Error
	// The decoder silently skips a non-table value where the raw
	// structure has a map; find those.
	for _, k := range md.Keys() {
		isMap := len(k) == 1 && k[0] == "domains" ||
			len(k) == 3 && k[0] == "domains" && k[2] == "transports" ||
			len(k) == 5 && k[0] == "domains" && k[2] == "transports" && k[4] == "defaults"
		if t := md.Type(k...); isMap && t != "Hash" {
			problems = append(problems, Error{Key: k.String(), Msg: "must be a table, not " + typeWords[t]})
		}
	}
	undecoded := md.Undecoded()
	for _, k := range undecoded {
		// Report an unknown table once, not once per key in it.
		if len(k) > 1 && slices.ContainsFunc(undecoded, func(p toml.Key) bool { return p.String() == k[:len(k)-1].String() }) {
			continue
		}
		problems = append(problems, Error{Key: k.String(), Msg: "unknown key"})
	}
	return &raw, problems
}
