package irc

import (
	"bytes"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/ergochat/irc-go/ircfmt"
	"github.com/ergochat/irc-go/ircmsg"
	"golang.org/x/text/encoding"
	"golang.org/x/text/encoding/charmap"
	"golang.org/x/text/encoding/japanese"
	"golang.org/x/text/encoding/korean"
	"golang.org/x/text/encoding/simplifiedchinese"
	"golang.org/x/text/encoding/traditionalchinese"
)

// Text from IRC to XMPP: bytes of unknown encoding, with formatting codes.
// XMPP wants valid UTF-8 without the control characters XML 1.0 cannot
// carry (encoding/xml would turn them into U+FFFD on output).

// decodeIRC returns s as UTF-8: unchanged when it is valid UTF-8, else
// decoded as Windows-1252 (a superset of ISO-8859-1 for printable
// characters, which is what non-UTF-8 IRC clients send in practice).
func decodeIRC(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	out, err := charmap.Windows1252.NewDecoder().String(s)
	if err != nil || !utf8.ValidString(out) {
		return strings.ToValidUTF8(s, "\uFFFD")
	}
	return out
}

// charsets are the character sets a network can be set to (fEncoding)
// when it does not speak UTF-8, as biboumi's per-server encoding: lines
// that are not valid UTF-8 are decoded with it (instead of Windows-1252)
// and what the user sends is encoded in it. Only sets whose encoding of
// a text is never longer than its UTF-8 (lines are cut under 512 bytes
// as UTF-8, and FuzzCharset checks it), which leaves out ISO-2022-JP
// (escape sequences) and EUC-JP (three bytes for some Cyrillic and Latin
// letters of two in UTF-8).
var charsets = []struct {
	name, label string
	enc         encoding.Encoding
}{
	{"iso-8859-1", "ISO-8859-1 (Latin-1, Western European)", charmap.ISO8859_1},
	{"iso-8859-2", "ISO-8859-2 (Latin-2, Central European)", charmap.ISO8859_2},
	{"iso-8859-15", "ISO-8859-15 (Latin-9, Western European with €)", charmap.ISO8859_15},
	{"windows-1250", "Windows-1250 (Central European)", charmap.Windows1250},
	{"windows-1251", "Windows-1251 (Cyrillic)", charmap.Windows1251},
	{"windows-1252", "Windows-1252 (Western European)", charmap.Windows1252},
	{"koi8-r", "KOI8-R (Russian)", charmap.KOI8R},
	{"koi8-u", "KOI8-U (Ukrainian)", charmap.KOI8U},
	{"shift_jis", "Shift_JIS (Japanese)", japanese.ShiftJIS},
	{"gbk", "GBK (Simplified Chinese)", simplifiedchinese.GBK},
	{"big5", "Big5 (Traditional Chinese)", traditionalchinese.Big5},
	{"euc-kr", "EUC-KR (Korean)", korean.EUCKR},
}

// charsetUTF8 is the forms' value for UTF-8, the default.
const charsetUTF8 = "utf-8"

// charsetOf is the encoding of a charset name; nil for UTF-8 or an
// unknown name.
func charsetOf(name string) encoding.Encoding {
	for _, c := range charsets {
		if c.name == name {
			return c.enc
		}
	}
	return nil
}

// decodeLine decodes a line from a network set to a charset, unless it
// is valid UTF-8 (as biboumi does: clients of such a network may well
// send UTF-8).
func decodeLine(cs encoding.Encoding, b []byte) []byte {
	if cs == nil || utf8.Valid(b) {
		return b
	}
	if d, err := cs.NewDecoder().Bytes(b); err == nil {
		return d
	}
	return b
}

// encodeLine encodes a serialised line for a network set to a charset:
// what the set lacks becomes "?" (the encoders' own substitute is the
// control character SUB, which never stands for text in these sets).
func encodeLine(cs encoding.Encoding, b []byte) []byte {
	if cs == nil || isASCII(b) {
		return b
	}
	out, err := encoding.ReplaceUnsupported(cs.NewEncoder()).Bytes(b)
	if err != nil {
		return b
	}
	return bytes.ReplaceAll(out, []byte{0x1a}, []byte{'?'})
}

// lineCharsets are the character sets of one connection: the network's
// and its channels' (biboumi's per-channel encodings), for lines that are
// not UTF-8 (decode) and the user's lines (encode). Immutable: a change
// makes a new one, which the connection swaps in while it reads.
type lineCharsets struct {
	net encoding.Encoding // nil: UTF-8
	// chans are the channels set apart from the network, by
	// strings.ToLower of the name; a nil value is UTF-8.
	chans map[string]encoding.Encoding
}

// newLineCharsets makes a connection's character sets from their names
// (charsetUTF8, a name of charsets, or "" for the network's); nil when
// every line is UTF-8.
func newLineCharsets(network string, chans map[string]string) *lineCharsets {
	l := &lineCharsets{net: charsetOf(network)}
	for ch, name := range chans {
		enc := charsetOf(name)
		if name != charsetUTF8 && enc == nil || enc == l.net {
			continue // the network's
		}
		if l.chans == nil {
			l.chans = map[string]encoding.Encoding{}
		}
		l.chans[strings.ToLower(ch)] = enc
	}
	if l.net == nil && l.chans == nil {
		return nil
	}
	return l
}

// forLine is the character set of a line: its channel's, else the
// network's. The channel is the first parameter but the text (the last)
// that names one set apart: "PRIVMSG #c :text", "JOIN #c", "332 me #c
// :topic", "353 me = #c :names". Only lines that need it are parsed (not
// UTF-8 in, not ASCII out) and only when channels are set apart.
func (l *lineCharsets) forLine(b []byte) encoding.Encoding {
	if l.chans == nil {
		return l.net
	}
	m, err := ircmsg.ParseLine(string(bytes.TrimRight(b, "\r\n")))
	if err != nil {
		return l.net
	}
	ps := m.Params
	if len(ps) > 1 {
		ps = ps[:len(ps)-1]
	}
	for _, p := range ps {
		if enc, ok := l.chans[strings.ToLower(p)]; ok {
			return enc
		}
	}
	return l.net
}

// decode decodes a line read (see decodeLine).
func (l *lineCharsets) decode(b []byte) []byte {
	if l == nil || utf8.Valid(b) {
		return b
	}
	return decodeLine(l.forLine(b), b)
}

// encode encodes a serialised line to write (see encodeLine).
func (l *lineCharsets) encode(b []byte) []byte {
	if l == nil || isASCII(b) {
		return b
	}
	return encodeLine(l.forLine(b), b)
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// cleanText makes text from IRC fit for XMPP: tabs become spaces, every
// other control character (C0, DEL, C1) and the code points XML cannot
// carry are dropped, and invalid UTF-8 shows as U+FFFD.
func cleanText(s string) string {
	ok := true
	for _, r := range s {
		if !printable(r) || r == utf8.RuneError {
			ok = false
			break
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for _, r := range s {
		switch {
		case r == utf8.RuneError:
			b.WriteRune('\uFFFD')
		case r == '\t':
			b.WriteByte(' ')
		case printable(r):
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cleanOut drops from XMPP text what must not reach an IRC line: every
// control character but tab (CR, LF and NUL included).
func cleanOut(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.Map(func(r rune) rune {
		if keptOut(r) {
			return r
		}
		return -1
	}, s)
}

// keptOut says whether cleanOut keeps r: a tab or a printable character.
func keptOut(r rune) bool { return r == '\t' || printable(r) }

// plainText is IRC text for places without styling (nicks, reasons,
// topics): decoded, formatting codes stripped, cleaned.
func plainText(s string) string {
	s = decodeIRC(s)
	if strings.ContainsAny(s, formatCodes) {
		s = ircfmt.Strip(s)
	}
	return cleanText(s)
}

// formatCodes are the bytes that start IRC formatting: text without them
// is left as it is (no copy; a nick then stays the interned one).
const formatCodes = "\x02\x03\x04\x0f\x11\x16\x1d\x1e\x1f"

// styledText is an IRC message body for XMPP: bold, italic, strikethrough
// and monospace become XEP-0393 styling (*bold*, _italic_, ~strike~,
// `mono`); colours, underline and reverse are dropped.
func styledText(s string) string {
	s = decodeIRC(s)
	if !strings.ContainsAny(s, "\x02\x03\x0f\x11\x16\x1d\x1e\x1f") {
		return cleanText(s)
	}
	type style struct{ bold, italic, strike, mono bool }
	var (
		b      strings.Builder
		chunks []ircfmt.FormattedSubstring
	)
	// Merge neighbours whose styling (colours aside) is the same, so a
	// colour change inside a bold word does not close and reopen it.
	for _, c := range ircfmt.Split(s) {
		if n := len(chunks); n > 0 {
			p := &chunks[n-1]
			if p.Bold == c.Bold && p.Italic == c.Italic && p.Strikethrough == c.Strikethrough && p.Monospace == c.Monospace {
				p.Content += c.Content
				continue
			}
		}
		chunks = append(chunks, c)
	}
	for _, c := range chunks {
		st := style{c.Bold, c.Italic, c.Strikethrough, c.Monospace}
		text := cleanText(c.Content)
		if st == (style{}) {
			b.WriteString(text)
			continue
		}
		// XEP-0393: an opening directive must be followed, and a closing one
		// preceded, by a non-space; keep surrounding spaces outside.
		core := strings.TrimSpace(text)
		if core == "" {
			b.WriteString(text)
			continue
		}
		lead := text[:strings.Index(text, core)]
		trail := text[len(lead)+len(core):]
		var open, close string
		if st.bold {
			open, close = open+"*", "*"+close
		}
		if st.italic {
			open, close = open+"_", "_"+close
		}
		if st.strike {
			open, close = open+"~", "~"+close
		}
		if st.mono {
			open, close = open+"`", "`"+close
		}
		b.WriteString(lead)
		b.WriteString(open)
		b.WriteString(core)
		b.WriteString(close)
		b.WriteString(trail)
	}
	return b.String()
}

// Text from XMPP to IRC.

// oneLine makes s fit in one IRC parameter: line breaks and other control
// characters become spaces (NUL is dropped), runs of them collapse, and
// the ends are trimmed. Used for topics, reasons and the like.
func oneLine(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	b.Grow(len(s))
	space := false
	for _, r := range s {
		switch {
		case r == 0:
			continue
		case r == '\t' || r == ' ' || !printable(r):
			space = true
			continue
		}
		if space && b.Len() > 0 {
			b.WriteByte(' ')
		}
		space = false
		b.WriteRune(r)
	}
	return b.String()
}

// singleLine says whether bodyLines(body) is body alone: valid UTF-8,
// one line with nothing cleanOut removes, no blank at its end, not blank.
func singleLine(body string) bool {
	if body == "" || !utf8.ValidString(body) {
		return false
	}
	if c := body[len(body)-1]; c == ' ' || c == '\t' {
		return false
	}
	blank := true
	for _, r := range body {
		if !keptOut(r) {
			return false
		}
		if blank && !unicode.IsSpace(r) {
			blank = false
		}
	}
	return !blank
}

// bodyLines splits an XMPP body into the lines of text it holds (CR LF,
// CR and LF all end a line; the XML decoder turns &#13; into a real CR),
// dropping empty ones and cleaning each of control characters but tab.
func bodyLines(body string) []string {
	body = strings.ToValidUTF8(body, "\uFFFD")
	body = strings.ReplaceAll(body, "\r\n", "\n")
	body = strings.ReplaceAll(body, "\r", "\n")
	var out []string
	for _, l := range strings.Split(body, "\n") {
		l = strings.TrimRight(cleanOut(l), " \t")
		if strings.TrimSpace(l) == "" {
			continue
		}
		out = append(out, l)
	}
	return out
}

// splitText cuts text into pieces of at most max bytes, on UTF-8
// boundaries, preferring to cut after a space in the last quarter of a
// piece. max must be at least utf8.UTFMax.
func splitText(text string, max int) []string {
	if max < utf8.UTFMax {
		max = utf8.UTFMax
	}
	var out []string
	for len(text) > max {
		cut := max
		for cut > 0 && !utf8.RuneStart(text[cut]) {
			cut--
		}
		if sp := strings.LastIndexByte(text[:cut], ' '); sp > cut*3/4 {
			cut = sp + 1
		}
		if cut == 0 {
			cut = max // not UTF-8 after all; cut anywhere rather than loop
		}
		out = append(out, text[:cut])
		text = text[cut:]
	}
	if text != "" {
		out = append(out, text)
	}
	return out
}
