package email

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime/quotedprintable"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// Hostile input on both sides of the e-mail transport: what the user
// writes must not add a header or end the SMTP DATA early, and what a mail
// contains must not make the gateway run long, eat memory or show markup
// and remote content.

// FuzzCompose: whatever the user writes (subject, body) and whatever a
// mail answered carried (In-Reply-To, References: they come from the
// network), a composed mail has exactly the gateway's headers, CRLF line
// ends only, lines within RFC 5322's 998 bytes, a subject and body that
// read back as written, and a DATA stream that SMTP dot-stuffing cannot
// end early. Addresses and IDs that are not safe are refused, never
// cleaned into something else.
func FuzzCompose(f *testing.F) {
	f.Add("me@a.test", "you@b.test", "hi", "p@b", "r@b p@b", "hello\n.\nworld")
	f.Add("me@a.test", "you@b.test", "hi\r\nBcc: victim@x.example", "p@b>\r\nBcc: x", "a b", "line\r.\r\nMAIL FROM:<x@y>\n")
	f.Add("me@a.test", "you@b.test\r\nRCPT TO:<x@y>", "s", "", "", "b")
	f.Add("\"a b\"@a.test", "you@[127.0.0.1]", "=?utf-8?q?x?=", "", "", ".\r\n.\n.\r")
	f.Add("me@a.test", "you@b.test", strings.Repeat("Grüße ", 200), "", "", strings.Repeat("x", 2000)+"\r\n.")
	f.Add("me@a.test", "you@b.test", strings.Repeat("a", 1200), "", "", "\x00\r\x00\n.\x00")
	f.Add("me@a.test", "you@b.test", "\u2028Subject:\u2029x\x85y", "", "", "\xff\xfe.\r\n")
	f.Fuzz(func(t *testing.T, from, to, subject, inReplyTo, refs, body string) {
		o := &outgoing{
			From: from, To: to, Subject: subject, MessageID: "xmpp.fz@a.test",
			InReplyTo: inReplyTo, References: strings.Fields(refs), Body: body,
			Date: time.Unix(1700000000, 0).UTC(),
		}
		data, err := compose(o)
		safe := validAddress(from) && validAddress(to)
		for _, id := range append([]string{inReplyTo}, o.References...) {
			if _, ok := cleanMsgID(id); id != "" && !ok {
				safe = false
			}
		}
		if err != nil {
			if safe {
				t.Fatalf("refused a safe mail: %v", err)
			}
			return
		}
		if !safe {
			t.Fatalf("composed a mail from unsafe addresses or IDs: %q", data)
		}
		s := string(data)
		for i := 0; i < len(s); i++ {
			switch {
			case s[i] == 0:
				t.Fatalf("NUL at %d", i)
			case s[i] == '\r' && (i+1 >= len(s) || s[i+1] != '\n'):
				t.Fatalf("bare CR at %d: %q", i, s)
			case s[i] == '\n' && (i == 0 || s[i-1] != '\r'):
				t.Fatalf("bare LF at %d: %q", i, s)
			}
		}
		for _, l := range strings.Split(s, "\r\n") {
			if len(l) > 998 {
				t.Fatalf("line of %d bytes", len(l))
			}
		}
		hdr, bodyPart, ok := strings.Cut(s, "\r\n\r\n")
		if !ok {
			t.Fatalf("no header/body separator: %q", s)
		}
		// Exactly the gateway's header fields, each once, From and To as
		// given.
		allowed := map[string]bool{"from": true, "to": true, "subject": true, "date": true, "message-id": true,
			"in-reply-to": true, "references": true, "mime-version": true, "content-type": true,
			"content-transfer-encoding": true, "user-agent": true}
		seen := map[string]bool{}
		for _, l := range strings.Split(hdr, "\r\n") {
			if l == "" || l[0] == ' ' || l[0] == '\t' {
				continue
			}
			name, val, ok := strings.Cut(l, ":")
			name = strings.ToLower(name)
			if !ok || !allowed[name] || seen[name] {
				t.Fatalf("header line %q (injected or repeated) in\n%s", l, hdr)
			}
			seen[name] = true
			if name == "from" && strings.TrimSpace(val) != from || name == "to" && strings.TrimSpace(val) != to {
				t.Fatalf("%s: %q, want %q", name, val, map[string]string{"from": from, "to": to}[name])
			}
		}
		// The subject and body read back as the user wrote them (subject
		// folded onto one line, body with CRLF line ends).
		pm := parseMail(strings.NewReader(s), defaultLimits)
		if want := strings.TrimSpace(oneLine(subject, 900)); pm.Subject != want {
			t.Fatalf("subject %q read back as %q", want, pm.Subject)
		}
		dec, err := io.ReadAll(quotedprintable.NewReader(strings.NewReader(bodyPart)))
		if err != nil {
			t.Fatalf("body is not quoted-printable: %v", err)
		}
		want := string(toCRLF([]byte(strings.ToValidUTF8(body, "\uFFFD"))))
		if strings.TrimRight(string(dec), "\r\n") != strings.TrimRight(want, "\r\n") {
			t.Fatalf("body %q read back as %q", want, dec)
		}
		// SMTP DATA: dot-stuffed as go-smtp does (textproto), the stream
		// ends exactly once, at the end, and reads back whole.
		var wire bytes.Buffer
		dw := textproto.NewWriter(bufio.NewWriter(&wire)).DotWriter()
		if _, err := dw.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := dw.Close(); err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(wire.String(), "\r\n.\r\n"); n != 1 || !strings.HasSuffix(wire.String(), "\r\n.\r\n") {
			t.Fatalf("DATA ends %d times: %q", n, wire.String())
		}
		back, err := io.ReadAll(textproto.NewReader(bufio.NewReader(&wire)).DotReader())
		if err != nil || string(back) != strings.ReplaceAll(s, "\r\n", "\n") {
			t.Fatalf("DATA does not read back: %v", err)
		}
	})
}

// FuzzHTMLToText: an HTML mail becomes plain text with no markup, no
// remote content (an image's URL never shows), and every link as its text
// followed by its URL. The fuzzer writes the text, the link and some raw
// HTML around them.
func FuzzHTMLToText(f *testing.F) {
	f.Add("Hello", "report", "q=1", "<p>tail</p>")
	f.Add("<b>x</b>", "", "a&b", "<script>alert(1)</script><img src=https://t.example/x.gif>")
	f.Add("", "https://l.example/q?x", "", "<!--")
	f.Add("a\x00b", "\u202eevil", "%00", "<a href='javascript:alert(1)'>js</a><style>p{}</style>")
	f.Add(strings.Repeat("<div>", 500), "x", "y", strings.Repeat("</div>", 500))
	f.Fuzz(func(t *testing.T, text, linkText, query, rawHTML string) {
		const img = "IMGMARKER"
		href := "https://l.example/path?" + url.QueryEscape(query)
		doc := "<html><head><title>T</title></head><body><p>" + htmlEscape(text) +
			` <a href="` + htmlEscape(href) + `">` + htmlEscape(linkText) + `</a>` +
			`<img src="https://tracker.example/` + img + `.gif" alt="">` +
			`<b>BOLD</b></p>` + rawHTML
		start := time.Now()
		got, full := htmlToText(strings.NewReader(doc), 16<<10)
		if d := time.Since(start); d > 2*time.Second {
			t.Fatalf("conversion took %v", d)
		}
		if !utf8.ValidString(got) || len(got) > 16<<10+64 {
			t.Fatalf("bad output (%d bytes)", len(got))
		}
		for _, r := range got {
			if r < 0x20 && r != '\n' && r != '\t' {
				t.Fatalf("control character %U in %q", r, got)
			}
		}
		if strings.Contains(got, img) && !strings.Contains(text+linkText+rawHTML, img) {
			t.Fatalf("an image's URL shows: %q", got)
		}
		if strings.Contains(got, "<b>") || strings.Contains(got, "<img") || strings.Contains(got, "<a ") {
			if !strings.Contains(text+linkText+rawHTML+query, "<") {
				t.Fatalf("markup shows: %q", got)
			}
		}
		// (links over 2048 bytes are dropped by design; a full output may
		// have been cut before the link)
		if !full && len(href) <= 2048 && !strings.Contains(got, href) && !strings.Contains(strings.ToLower(got), strings.ToLower(strings.TrimPrefix(href, "https://"))) {
			t.Fatalf("link %q lost: %q", href, got)
		}
	})
}

func htmlEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;", "'", "&#39;").Replace(s)
}

// bombs are hostile mails: deep nesting, many parts, huge headers,
// pathological addresses and encodings. They are also the seed corpus of
// FuzzMIMEToMessage (testdata/fuzz/FuzzMIMEToMessage/bomb-*).
func bombs(div int) map[string]string {
	n := func(k int) int { return max(k/div, 2) }
	b := map[string]string{}
	// A multipart nested 2,000 deep.
	var nest strings.Builder
	nest.WriteString("From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\"b0\"\r\n\r\n")
	for i := 0; i < n(2000); i++ {
		fmt.Fprintf(&nest, "--b%d\r\nContent-Type: multipart/mixed; boundary=\"b%d\"\r\n\r\n", i, i+1)
	}
	fmt.Fprintf(&nest, "--b%d\r\nContent-Type: text/plain\r\n\r\ndeep\r\n", n(2000))
	b["nesting"] = nest.String()
	// message/rfc822 inside message/rfc822, 2,000 deep.
	b["rfc822-nesting"] = strings.Repeat("Content-Type: message/rfc822\r\n\r\n", n(2000)) + "From: x@y.example\r\n\r\nin\r\n"
	// 20,000 parts.
	var parts strings.Builder
	parts.WriteString("From: a@b.example\r\nContent-Type: multipart/mixed; boundary=p\r\n\r\n")
	for i := 0; i < n(20000); i++ {
		parts.WriteString("--p\r\nContent-Type: application/octet-stream; name=a.bin\r\n\r\nx\r\n")
	}
	parts.WriteString("--p--\r\n")
	b["parts"] = parts.String()
	// A header of 4 MB in one field, and one of 200,000 short fields
	// (at div 1; the counts are divided by div).
	b["huge-field"] = "From: a@b.example\r\nX-Junk: " + strings.Repeat("a", n(4<<20)) + "\r\n\r\nbody\r\n"
	b["many-fields"] = "From: a@b.example\r\n" + strings.Repeat("X-A: b\r\n", n(200000)) + "\r\nbody\r\n"
	// A folded Subject of 1 MB of encoded words.
	b["encoded-words"] = "From: a@b.example\r\nSubject:" + strings.Repeat(" =?utf-8?b?w6k=?=", n(60000)) + "\r\n\r\nx\r\n"
	// Pathological addresses: nested comments, a huge group, 50,000
	// recipients, quoted local parts full of escapes, an endless route.
	b["address-comments"] = "From: " + strings.Repeat("(", n(50000)) + "a@b.example" + strings.Repeat(")", n(50000)) + "\r\n\r\nx\r\n"
	b["address-group"] = "From: g:" + strings.Repeat("a@b.example,", n(50000)) + ";\r\n\r\nx\r\n"
	b["address-list"] = "From: a@b.example\r\nTo: " + strings.Repeat("\"x\" <a@b.example>, ", n(50000)) + "c@d.example\r\nCc: " + strings.Repeat("e@f.example,", n(50000)) + "g@h.example\r\n\r\nx\r\n"
	b["address-quoted"] = "From: \"" + strings.Repeat("\\\"\\\\", n(100000)) + "\"@b.example\r\n\r\nx\r\n"
	b["address-route"] = "From: <" + strings.Repeat("@a.example,", n(50000)) + "@b.example:c@d.example>\r\n\r\nx\r\n"
	// References with 100,000 IDs; a boundary longer than any line.
	b["references"] = "From: a@b.example\r\nReferences: " + strings.Repeat("<a@b> ", n(100000)) + "\r\n\r\nx\r\n"
	b["boundary"] = "From: a@b.example\r\nContent-Type: multipart/mixed; boundary=\"" + strings.Repeat("b", n(70000)) + "\"\r\n\r\n--" + strings.Repeat("b", n(70000)) + "\r\n\r\nx\r\n"
	// 8 MB of base64 text and of HTML tags.
	b["base64"] = "From: a@b.example\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + strings.Repeat("QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\r\n", n(100000))
	b["html-tags"] = "From: a@b.example\r\nContent-Type: text/html\r\n\r\n" + strings.Repeat("<div><span><b><i>", n(400000))
	b["html-lists"] = "From: a@b.example\r\nContent-Type: text/html\r\n\r\n" + strings.Repeat("<ul>", n(90000)) + strings.Repeat("<li>x", n(90000))
	b["html-links"] = "From: a@b.example\r\nContent-Type: text/html\r\n\r\n" + strings.Repeat(`<a href="https://x.example/">`, n(60000)) + strings.Repeat("ABCDEFGH ", n(6000)) + strings.Repeat("</a>", n(60000))
	b["html-quotes"] = "From: a@b.example\r\nContent-Type: text/html\r\n\r\n" + strings.Repeat("<blockquote>", n(150000)) + strings.Repeat("x<br>", n(20000))
	return b
}

// TestParseBombs: each hostile mail is parsed within the caps: in bounded
// time and memory, without a panic, with a body within MaxText.
func TestParseBombs(t *testing.T) {
	for name, raw := range bombs(1) {
		t.Run(name, func(t *testing.T) {
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			start := time.Now()
			pm := parseMail(strings.NewReader(raw), defaultLimits)
			took := time.Since(start)
			runtime.ReadMemStats(&after)
			alloc := after.TotalAlloc - before.TotalAlloc
			t.Logf("%d bytes in: %v, %d MB allocated, %d parts, incomplete %v, body %d bytes", len(raw), took.Round(time.Millisecond), alloc>>20, len(pm.Parts), pm.Incomplete, len(pm.Body))
			if took > defaultLimits.Timeout+2*time.Second {
				t.Errorf("parsing took %v (cap %v)", took, defaultLimits.Timeout)
			}
			// Everything read is bounded by MaxSource; allow a few copies of
			// it, not a blow-up.
			if limit := uint64(8 * defaultLimits.MaxSource); alloc > limit {
				t.Errorf("%d MB allocated for %d bytes of mail (limit %d MB)", alloc>>20, len(raw), limit>>20)
			}
			if len(pm.Body) > defaultLimits.MaxText+300 || len(pm.Parts) > defaultLimits.MaxParts {
				t.Errorf("body %d bytes, %d parts: beyond the caps", len(pm.Body), len(pm.Parts))
			}
			if len(pm.References) > maxRefs || len(pm.Subject) > 998 || len(pm.Nick) > maxNick {
				t.Errorf("header fields beyond their caps: %d refs, subject %d, nick %d", len(pm.References), len(pm.Subject), len(pm.Nick))
			}
		})
	}
}

// TestWriteBombCorpus writes the bombs, scaled down (still beyond the
// fuzz target's caps), as seeds of FuzzMIMEToMessage. Run with
// TRANSPORTD_WRITE_FUZZ_CORPUS=1 after changing bombs.
func TestWriteBombCorpus(t *testing.T) {
	if os.Getenv("TRANSPORTD_WRITE_FUZZ_CORPUS") == "" {
		t.Skip("TRANSPORTD_WRITE_FUZZ_CORPUS not set")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzMIMEToMessage")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for name, raw := range bombs(100) {
		data := "go test fuzz v1\n[]byte(" + strconv.Quote(raw) + ")\n"
		if err := os.WriteFile(filepath.Join(dir, "bomb-"+name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
