package sms

import (
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
)

// Encoding is how an SMS body travels: GSM-7 when every character is in the
// GSM 03.38 alphabet (the extension table counting twice), UCS-2 otherwise.
type Encoding string

const (
	GSM7 Encoding = "GSM-7"
	UCS2 Encoding = "UCS-2"
)

// Segment sizes: one SMS carries 160 GSM-7 septets or 70 UCS-2 code units;
// a concatenated message loses room to its header: 153 and 67 per segment.
const (
	gsmSingle, gsmMulti   = 160, 153
	ucs2Single, ucs2Multi = 70, 67
)

// maxAPIBody is the longest body Twilio's API accepts in one message
// (1600 characters); longer bodies are split by splitBody. It is counted in
// UTF-16 code units, which is never less than characters.
const maxAPIBody = 1600

// gsmBasic is the GSM 03.38 default alphabet (one septet each); gsmExt the
// extension table (escape plus one septet: two each).
var (
	gsmBasic = map[rune]bool{}
	gsmExt   = map[rune]bool{}
)

func init() {
	const basic = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?" +
		"¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
	for _, r := range basic {
		gsmBasic[r] = true
	}
	for _, r := range "\f^{}\\[~]|€" {
		gsmExt[r] = true
	}
}

// Segments returns how many SMS segments a body costs and its encoding. It
// packs greedily the way handsets and Twilio do: an escaped GSM-7
// character or a UTF-16 surrogate pair is never split across segments. An
// empty body is one segment.
func Segments(body string) (int, Encoding) {
	enc := GSM7
	for _, r := range body {
		if !gsmBasic[r] && !gsmExt[r] {
			enc = UCS2
			break
		}
	}
	single, multi := gsmSingle, gsmMulti
	width := func(r rune) int {
		if gsmExt[r] {
			return 2
		}
		return 1
	}
	if enc == UCS2 {
		single, multi = ucs2Single, ucs2Multi
		width = func(r rune) int {
			if r >= 0x10000 && r <= unicode.MaxRune {
				return 2
			}
			return 1
		}
	}
	total := 0
	for _, r := range body {
		total += width(r)
	}
	if total <= single {
		return 1, enc
	}
	n, used := 1, 0
	for _, r := range body {
		w := width(r)
		if used+w > multi {
			n++
			used = 0
		}
		used += w
	}
	return n, enc
}

// utf16Len is the length of s in UTF-16 code units.
func utf16Len(s string) int {
	n := 0
	for _, r := range s {
		n += utf16.RuneLen(r) // range yields no surrogates: never -1
	}
	return n
}

// splitBody cuts a body into parts of at most max UTF-16 code units, on
// character boundaries, preferring the last white space in the second half
// of a part (kept at the end of that part, so the parts joined are the
// body), and otherwise never separating a character from the combining
// marks, joiners and variation selectors that follow it. max must be at
// least 2, the most one character takes.
func splitBody(body string, max int) []string {
	var parts []string
	for utf16Len(body) > max {
		// cut: the largest rune boundary with at most max units before it.
		cut, units := 0, 0
		for i, r := range body {
			w := utf16.RuneLen(r)
			if units+w > max {
				cut = i
				break
			}
			units += w
		}
		head := body[:cut]
		best := -1
		for i, r := range head {
			if unicode.IsSpace(r) && i >= len(head)/2 {
				best = i + utf8.RuneLen(r)
			}
		}
		if best > 0 {
			cut = best
		} else {
			for c := cut; c > 0; {
				r, _ := utf8.DecodeRuneInString(body[c:])
				prev, size := utf8.DecodeLastRuneInString(body[:c])
				if !extends(r) && prev != 0x200D {
					cut = c
					break
				}
				c -= size
				if c == 0 {
					break // one unbreakable cluster longer than a part: cut it anyway
				}
			}
		}
		if cut == 0 {
			_, cut = utf8.DecodeRuneInString(body)
		}
		parts = append(parts, body[:cut])
		body = body[cut:]
	}
	return append(parts, body)
}

// extends reports whether r belongs to the character before it: combining
// marks, the zero-width joiner, variation selectors, emoji modifiers and
// tag characters.
func extends(r rune) bool {
	switch {
	case unicode.In(r, unicode.Mn, unicode.Me, unicode.Mc):
		return true
	case r == 0x200D, r >= 0xFE00 && r <= 0xFE0F, r >= 0xE0100 && r <= 0xE01EF:
		return true
	case r >= 0x1F3FB && r <= 0x1F3FF, r >= 0xE0020 && r <= 0xE007F:
		return true
	}
	return false
}
