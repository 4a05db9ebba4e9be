package sms

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

func TestSegments(t *testing.T) {
	for i, tc := range []struct {
		body string
		n    int
		enc  Encoding
	}{
		0:  {"", 1, GSM7},
		1:  {"hello", 1, GSM7},
		2:  {strings.Repeat("a", 160), 1, GSM7},
		3:  {strings.Repeat("a", 161), 2, GSM7},
		4:  {strings.Repeat("a", 306), 2, GSM7},
		5:  {strings.Repeat("a", 307), 3, GSM7},
		6:  {strings.Repeat("€", 80), 1, GSM7}, // extension table: two septets each
		7:  {strings.Repeat("€", 81), 2, GSM7}, // 76 per segment: never split an escape
		8:  {strings.Repeat("a", 152) + "[", 1, GSM7},
		9:  {strings.Repeat("a", 159) + "[", 2, GSM7},
		10: {strings.Repeat("a", 152) + "[" + strings.Repeat("a", 8), 2, GSM7}, // 154+8: "[" moves to segment 2
		11: {"Grüße aus Köln", 1, GSM7},                                        // ü, ß and ö are in the GSM alphabet
		12: {strings.Repeat("ç", 70), 1, UCS2},                                 // lower-case ç is not in GSM 03.38
		13: {strings.Repeat("ç", 71), 2, UCS2},
		14: {strings.Repeat("ç", 134), 2, UCS2},
		15: {strings.Repeat("ç", 135), 3, UCS2},
		16: {strings.Repeat("😀", 35), 1, UCS2}, // surrogate pairs: two units each
		17: {strings.Repeat("😀", 36), 2, UCS2}, // 33 per segment
		18: {strings.Repeat("😀", 67), 3, UCS2},
		19: {"ÄÖÑÜäöñüàèéùìòÇØøÅåÆæßÉ¡¿§£$¥@", 1, GSM7},
		20: {"{}[]~|\\^€\f", 1, GSM7},
	} {
		n, enc := Segments(tc.body)
		if n != tc.n || enc != tc.enc {
			t.Errorf("%d: Segments(%.20q…) = %d %s, want %d %s", i, tc.body, n, enc, tc.n, tc.enc)
		}
	}
}

func checkSplit(t *testing.T, body string, max int) []string {
	t.Helper()
	parts := splitBody(body, max)
	if strings.Join(parts, "") != body {
		t.Fatalf("parts of %.30q… do not join back to it", body)
	}
	for i, p := range parts {
		if p == "" && len(parts) > 1 {
			t.Fatalf("part %d empty", i)
		}
		if utf16Len(p) > max {
			t.Fatalf("part %d: %d UTF-16 units > %d", i, utf16Len(p), max)
		}
		if !utf8.ValidString(p) && utf8.ValidString(body) {
			t.Fatalf("part %d cut inside a character", i)
		}
	}
	return parts
}

func TestSplitBody(t *testing.T) {
	if p := checkSplit(t, "hello", 1600); len(p) != 1 {
		t.Errorf("short body split: %q", p)
	}
	if p := checkSplit(t, strings.Repeat("a", 1600), 1600); len(p) != 1 {
		t.Errorf("1600 chars split into %d", len(p))
	}
	if p := checkSplit(t, strings.Repeat("a", 3000), 1600); len(p) != 2 || len(p[0]) != 1600 {
		t.Errorf("3000 chars: %d parts, first %d", len(p), len(p[0]))
	}
	// Words: parts end after a space, no word is cut.
	words := strings.Repeat("lorem ipsum dolor ", 200)
	for i, p := range checkSplit(t, words, 1600) {
		if i < 2 && !strings.HasSuffix(p, " ") {
			t.Errorf("part %d does not end on a word boundary: …%q", i, p[len(p)-10:])
		}
	}
	// Emoji are two UTF-16 units and never cut.
	for _, p := range checkSplit(t, strings.Repeat("😀", 1000), 1600) {
		if utf16Len(p) > 1600 || !utf8.ValidString(p) {
			t.Errorf("emoji part of %d units", utf16Len(p))
		}
	}
	// A letter keeps its combining accent.
	for i, p := range checkSplit(t, strings.Repeat("e\u0301", 1000), 1600) {
		if r, _ := utf8.DecodeRuneInString(p); unicode.Is(unicode.Mn, r) {
			t.Errorf("part %d starts with a combining mark", i)
		}
	}
	// ZWJ sequences stay whole.
	family := "👨\u200d👩\u200d👧"
	for i, p := range checkSplit(t, strings.Repeat(family, 300), 1600) {
		if !strings.HasPrefix(p, "👨") {
			t.Errorf("part %d starts inside a ZWJ sequence: %q", i, p[:8])
		}
	}
	// Random text: always joins back, never too long.
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []rune("ab €😀 \u0301\u200d\nçx")
	for range 200 {
		n := rng.IntN(5000)
		var b strings.Builder
		for range n {
			b.WriteRune(alphabet[rng.IntN(len(alphabet))])
		}
		checkSplit(t, b.String(), 2+rng.IntN(1600)) // a character takes up to 2 units
	}
}
