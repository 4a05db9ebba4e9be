package config

import (
	"cmp"
	"slices"
	"strings"
)

// Error is one problem found in a configuration.
type Error struct {
	// Key is the TOML key the problem is about, quoted as TOML quotes it:
	// domains."a.test".transports.email.secret_file. It is "" for problems
	// with the file as a whole (unreadable, not TOML).
	Key string
	// Msg says what is wrong. It never contains a secret.
	Msg string
}

func (e Error) Error() string {
	if e.Key == "" {
		return e.Msg
	}
	return e.Key + ": " + e.Msg
}

// Errors is every problem found in a configuration. Load and Parse return
// it as *Errors.
type Errors struct {
	File string  // the config file, "" if it came from Parse
	List []Error // sorted by Key, so a misspelt key sits next to what it was meant to be
}

func newErrors(list []Error) *Errors {
	slices.SortStableFunc(list, func(a, b Error) int { return cmp.Compare(a.Key, b.Key) })
	return &Errors{List: list}
}

// Error returns one line per problem, each prefixed with the file name if
// known.
func (e *Errors) Error() string {
	var b strings.Builder
	for i, p := range e.List {
		if i > 0 {
			b.WriteByte('\n')
		}
		if e.File != "" {
			b.WriteString(e.File)
			b.WriteString(": ")
		}
		b.WriteString(p.Error())
	}
	return b.String()
}
