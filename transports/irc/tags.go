package irc

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/ergochat/irc-go/ircmsg"
)

// inLine is a line from a server: ircmsg's message, parsed without its
// IRCv3 tags, and the tags as they came, read when asked for (GetTag).
//
// Written by hand rather than left to ircmsg.ParseLine, which builds a
// map of every line's tags: InspIRCd tags every message with its time and
// msgid, and the echo of each of the user's messages with its label too.
// Such an echo parsed and its four tags read (BenchmarkParseLine): 298 ns,
// 48 B and 2 allocations here, against 380 ns, 384 B and 4 with ircmsg's
// map, whose parse was some 5 % of the gateway's CPU relaying private
// messages toward IRC (a CPU profile of scripts/bench-irc.sh). End to
// end the difference is inside the benchmark's noise (a few per cent,
// where one run differs from the next by a fifth); what it keeps off
// the heap is 336 bytes of every tagged line a busy channel sends. Here
// the tags stay a substring of the line, checked once as ircmsg checks
// them (FuzzTags holds the two to the same reading) and read when asked
// for: the gateway reads a few (label, batch, msgid, time, typing).
type inLine struct {
	ircmsg.Message
	tags string // the tags as sent, without '@'; "" for none
}

// GetTag is ircmsg.Message.GetTag for the line's tags: whether the tag is
// there and its value, unescaped. The last of a name counts, as in
// ircmsg.
func (l *inLine) GetTag(name string) (present bool, value string) {
	for rest := l.tags; rest != ""; {
		var pair string
		pair, rest, _ = strings.Cut(rest, ";")
		k, v, _ := strings.Cut(pair, "=")
		if k == name {
			present, value = true, v
		}
	}
	if present {
		value = ircmsg.UnescapeTagValue(value)
	}
	return present, value
}

// DeleteTag removes a tag (every one of the name) from the line.
func (l *inLine) DeleteTag(name string) {
	if present, _ := l.GetTag(name); !present {
		return
	}
	var kept []string
	for pair := range strings.SplitSeq(l.tags, ";") {
		if k, _, _ := strings.Cut(pair, "="); k != name {
			kept = append(kept, pair)
		}
	}
	l.tags = strings.Join(kept, ";")
}

// parseLine parses a line from a server. Tags that ircmsg would refuse
// (a NUL or CR, a value that is not UTF-8) are dropped and the line kept,
// rather than the line dropped. A second @ after the tags is refused.
func parseLine(line string) (inLine, error) {
	var tags string
	if strings.HasPrefix(line, "@") {
		i := strings.IndexByte(line, ' ')
		if i < 0 {
			return inLine{}, ircmsg.ErrorLineIsEmpty
		}
		tags, line = line[1:i], line[i+1:]
		if !validTags(tags) {
			tags = ""
		}
		if strings.HasPrefix(strings.TrimLeft(line, " "), "@") {
			// Tags again, or a command starting with @: no server sends
			// either (ircmsg read the one as a command or as tags,
			// depending on the rest).
			return inLine{}, ircmsg.ErrorLineIsEmpty
		}
	}
	m, err := ircmsg.ParseLine(line)
	if err != nil && !errors.Is(err, ircmsg.ErrorBodyTooLong) {
		return inLine{}, err
	}
	return inLine{Message: m, tags: tags}, nil
}

// validTags tells whether ircmsg would take a line's tags: no NUL or CR,
// and every value of a well-formed name valid UTF-8 (a malformed name is
// skipped, whatever its value).
func validTags(tags string) bool {
	if strings.ContainsAny(tags, "\x00\r\n") {
		return false
	}
	if utf8.ValidString(tags) {
		return true
	}
	for pair := range strings.SplitSeq(tags, ";") {
		k, v, _ := strings.Cut(pair, "=")
		if validTagName(k) && !utf8.ValidString(v) {
			return false
		}
	}
	return true
}

// validTagName is ircmsg's rule for a tag's name (letters, digits and
// -./, after an optional + for a client-only tag): ircmsg keeps only the
// tags so named.
func validTagName(name string) bool {
	name = strings.TrimPrefix(name, "+")
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !('-' <= c && c <= '/' || '0' <= c && c <= '9' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

// HasTag is GetTag's present (ircmsg.Message's would read no tags).
func (l *inLine) HasTag(name string) bool {
	present, _ := l.GetTag(name)
	return present
}

// AllTags returns the line's tags as ircmsg.Message.AllTags does (the
// ones of well-formed names, the last of each name), or nil for none.
func (l *inLine) AllTags() map[string]string {
	var all map[string]string
	for pair := range strings.SplitSeq(l.tags, ";") {
		k, v, _ := strings.Cut(pair, "=")
		if !validTagName(k) {
			continue
		}
		if all == nil {
			all = map[string]string{}
		}
		all[k] = ircmsg.UnescapeTagValue(v)
	}
	return all
}
