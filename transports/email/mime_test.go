package email

import (
	"github.com/emersion/go-imap/v2"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

func crlf(s string) string { return strings.ReplaceAll(s, "\n", "\r\n") }

func TestParseMail(t *testing.T) {
	for i, tc := range []struct {
		name    string
		raw     string
		from    string
		nick    string
		subject string
		body    string // exact
		parts   []string
		check   func(t *testing.T, pm *parsedMail)
	}{
		0: {
			name: "plain",
			raw: `From: Jane Doe <Jane@Example.org>
To: me@a.test
Subject: Hello
Date: Mon, 02 Jan 2006 15:04:05 -0700
Message-ID: <abc@example.org>

Hi there,
how are you?
`,
			from: "jane@example.org", nick: "Jane Doe", subject: "Hello",
			body: "Hi there,\nhow are you?",
			check: func(t *testing.T, pm *parsedMail) {
				if !pm.Date.Equal(time.Date(2006, 1, 2, 22, 4, 5, 0, time.UTC)) {
					t.Errorf("date = %v", pm.Date)
				}
				if pm.MessageID != "abc@example.org" {
					t.Errorf("message id = %q", pm.MessageID)
				}
			},
		},
		1: {
			name: "html only",
			raw: `From: shop@example.com
Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=
Content-Type: text/html; charset=utf-8

<html><head><title>x</title><style>p{color:red}</style></head><body>
<p>Hello <b>World</b>!</p><p>Visit <a href="https://example.com/x">our shop</a> or <a href="https://example.com/">https://example.com/</a>.</p>
<img src="https://tracker.example/p.gif" alt=""><img src="cid:logo" alt="Logo">
<script>alert(1)</script>
<blockquote>quoted<br>text</blockquote>
<ul><li>one</li><li>two</li></ul>
</body></html>
`,
			from: "shop@example.com", subject: "Grüße",
			body: "Hello *World*!\n\nVisit our shop (https://example.com/x) or https://example.com/.\n\n[Logo]\n\n> quoted\n> text\n\n• one\n• two",
		},
		2: {
			name: "alternative prefers plain",
			raw: `From: a@b.example
Subject: alt
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="XX"

--XX
Content-Type: text/plain; charset=us-ascii

plain version
--XX
Content-Type: text/html

<p>html version</p>
--XX--
`,
			from: "a@b.example", subject: "alt", body: "plain version",
		},
		3: {
			name: "nested mixed with attachment and iso-8859-1",
			raw: `From: "M\xfcller" <mueller@example.de>
Subject: =?iso-8859-1?q?F=FCr_dich?=
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain; charset=iso-8859-1
Content-Transfer-Encoding: quoted-printable

Gr=FC=DFe aus K=F6ln
--inner
Content-Type: text/html; charset=iso-8859-1

<p>ignored</p>
--inner--
--outer
Content-Type: application/pdf; name="report.pdf"
Content-Disposition: attachment; filename="report.pdf"
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfsj6IK
--outer
Content-Type: image/png
Content-Disposition: inline
Content-Transfer-Encoding: base64

iVBORw0KGgo=
--outer--
`,
			from: "mueller@example.de", subject: "Für dich", body: "Grüße aus Köln",
			parts: []string{"2 report.pdf application/pdf 15", "3 attachment-2.png image/png 8"},
		},
		4: {
			name: "flowed",
			raw: `From: x@y.example
Content-Type: text/plain; format=flowed; delsp=no

This is a long 
paragraph that was 
wrapped.
> quoted and 
> wrapped
-- 
sig
`,
			from: "x@y.example", body: "This is a long paragraph that was wrapped.\n> quoted and wrapped\n--\nsig",
		},
		5: {
			name: "unknown sender",
			raw:  "From: undisclosed-recipients:;\nSubject: s\n\nbody\n",
			from: unknownSender, subject: "s", body: "From: undisclosed-recipients:;\n\nbody",
		},
		6: {
			name: "single part attachment",
			raw:  "From: a@b.example\nContent-Type: application/zip\nContent-Disposition: attachment; filename=\"a/../b.zip\"\nContent-Transfer-Encoding: base64\n\nUEsDBA==\n",
			from: "a@b.example", body: "", parts: []string{"1 a_.._b.zip application/zip 4"},
		},
		7: {
			name: "unknown charset still readable",
			raw:  "From: a@b.example\nContent-Type: text/plain; charset=x-no-such\n\nhello\x01 world\n",
			from: "a@b.example", body: "hello world",
		},
		8: {
			name: "threading headers",
			raw:  "From: a@b.example\nMessage-ID: <m3@b>\nIn-Reply-To: <m2@b>\nReferences: <m1@b> <m2@b>\n\nx\n",
			from: "a@b.example", body: "x",
			check: func(t *testing.T, pm *parsedMail) {
				if pm.InReplyTo != "m2@b" || len(pm.References) != 2 || pm.References[0] != "m1@b" || threadRoot(pm) != "m1@b" {
					t.Errorf("threading: %+v", pm)
				}
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pm := parseMail(strings.NewReader(crlf(tc.raw)), defaultLimits)
			if pm.From != tc.from || pm.Subject != tc.subject || (tc.nick != "" && pm.Nick != tc.nick) {
				t.Errorf("%d: from %q nick %q subject %q", i, pm.From, pm.Nick, pm.Subject)
			}
			if pm.Body != tc.body {
				t.Errorf("%d: body\n%q\nwant\n%q", i, pm.Body, tc.body)
			}
			var parts []string
			for _, p := range pm.Parts {
				var path []string
				for _, n := range p.Path {
					path = append(path, string(rune('0'+n)))
				}
				parts = append(parts, strings.Join(path, ".")+" "+p.Name+" "+p.Type+" "+itoa64(p.Size))
			}
			if strings.Join(parts, "|") != strings.Join(tc.parts, "|") {
				t.Errorf("%d: parts %q, want %q", i, parts, tc.parts)
			}
			if tc.check != nil {
				tc.check(t, pm)
			}
		})
	}
}

func itoa64(n int64) string { return strings.TrimSpace(strings.Repeat(" ", 0) + fmtInt(n)) }

func fmtInt(n int64) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for n > 0 {
		b = append([]byte{byte('0' + n%10)}, b...)
		n /= 10
	}
	return string(b)
}

func TestParseCaps(t *testing.T) {
	// Text beyond the cap is cut and marked.
	big := "From: a@b.example\n\n" + strings.Repeat("0123456789\n", 10000)
	pm := parseMail(strings.NewReader(big), defaultLimits)
	if !pm.Truncated || !strings.HasSuffix(pm.Body, truncatedNote) || len(pm.Body) > defaultLimits.MaxText+100 {
		t.Errorf("truncation: %v len %d", pm.Truncated, len(pm.Body))
	}
	// Deep nesting stops at the cap.
	var b strings.Builder
	b.WriteString("From: a@b.example\nContent-Type: multipart/mixed; boundary=b0\n\n")
	for i := 0; i < 40; i++ {
		b.WriteString("--b" + fmtInt(int64(i)) + "\nContent-Type: multipart/mixed; boundary=b" + fmtInt(int64(i+1)) + "\n\n")
	}
	b.WriteString("--b40\nContent-Type: text/plain\n\ndeep\n")
	pm = parseMail(strings.NewReader(crlf(b.String())), defaultLimits)
	if !pm.Incomplete || strings.Contains(pm.Body, "deep") {
		t.Errorf("nesting: incomplete %v body %q", pm.Incomplete, pm.Body)
	}
	// Many parts stop at the cap.
	b.Reset()
	b.WriteString("From: a@b.example\nContent-Type: multipart/mixed; boundary=z\n\n")
	for i := 0; i < 300; i++ {
		b.WriteString("--z\nContent-Type: application/octet-stream\n\nx\n")
	}
	b.WriteString("--z--\n")
	pm = parseMail(strings.NewReader(crlf(b.String())), defaultLimits)
	if len(pm.Parts) >= defaultLimits.MaxParts || !pm.Incomplete {
		t.Errorf("parts: %d incomplete %v", len(pm.Parts), pm.Incomplete)
	}
	// A huge header is refused without reading it all.
	huge := "From: a@b.example\nX-Junk: " + strings.Repeat("a", 1<<20) + "\n\nbody\n"
	pm = parseMail(strings.NewReader(huge), defaultLimits)
	if !pm.Incomplete {
		t.Errorf("huge header accepted")
	}
}

func TestHTMLToText(t *testing.T) {
	for i, tc := range []struct{ in, want string }{
		0: {`<p>a</p><p>b</p>`, "a\n\nb"},
		1: {`x<br>y<br/>z`, "x\ny\nz"},
		2: {`<a href="javascript:alert(1)">click</a>`, "click"},
		3: {`<a href="mailto:jane@example.org">jane@example.org</a>`, "jane@example.org"},
		4: {`<a href="mailto:jane@example.org">Jane</a>`, "Jane (jane@example.org)"},
		5: {`<a href="https://x.example/a"><img src="https://x.example/i.png"></a>`, "https://x.example/a"},
		6: {`<pre>  code
  more</pre>`, "```\n  code\n  more\n```"},
		7:  {`<i>it</i> <s>gone</s> <code>x()</code>`, "_it_ ~gone~ `x()`"},
		8:  {`<ol><li>a</li><li>b</li></ol>`, "1. a\n2. b"},
		9:  {`<b> </b>x`, "x"},
		10: {`<blockquote><p>a</p><p>b</p></blockquote>after`, "> a\n>\n> b\n\nafter"},
		11: {`a &amp; b &lt;c&gt;`, "a & b <c>"},
		12: {`<table><tr><td>a</td><td>b</td></tr><tr><td>c</td></tr></table>`, "a b\nc"},
		13: {`<h1>Title</h1>text`, "*Title*\n\ntext"},
	} {
		got, _ := htmlToText(strings.NewReader(tc.in), 1000)
		if got != tc.want {
			t.Errorf("%d: %q → %q, want %q", i, tc.in, got, tc.want)
		}
	}
	got, full := htmlToText(strings.NewReader(strings.Repeat("<p>word</p>", 1000)), 100)
	if !full || len(got) > 100 {
		t.Errorf("cap: %v %d", full, len(got))
	}
}

// FuzzMIMEToMessage: no input makes parseMail panic, run long, or return
// text beyond the caps or unfit for XML.
func FuzzMIMEToMessage(f *testing.F) {
	seeds := []string{
		"From: a@b.example\n\nhi\n",
		"From: a@b.example\nContent-Type: multipart/mixed; boundary=x\n\n--x\nContent-Type: text/html\n\n<p>a<b>b</p>\n--x\nContent-Disposition: attachment; filename=a.txt\n\nzz\n--x--\n",
		"Content-Type: multipart/alternative; boundary=\"q\"\n\n--q\n\nA\n--q\nContent-Type: text/html; charset=iso-8859-1\nContent-Transfer-Encoding: quoted-printable\n\n=E9\n--q--\n",
		"Subject: =?utf-8?b?w6k=?=\nContent-Type: text/plain; format=flowed; delsp=yes\n\na \nb\n",
		"From: =?x?q?a?= <\x00@\x01>\nReferences: <a@b> <<<\n\n\r\r\n.\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
		f.Add([]byte(crlf(s)))
	}
	lim := defaultLimits
	lim.MaxText = 4096
	lim.MaxParts = 20
	lim.MaxDepth = 8
	lim.Timeout = 2 * time.Second
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		pm := parseMail(strings.NewReader(string(data)), lim)
		if time.Since(start) > 5*time.Second {
			t.Fatalf("parse took %v", time.Since(start))
		}
		if pm == nil {
			t.Fatal("nil result")
		}
		if len(pm.Body) > lim.MaxText+300 {
			t.Fatalf("body of %d bytes", len(pm.Body))
		}
		if len(pm.Parts) > lim.MaxParts {
			t.Fatalf("%d parts", len(pm.Parts))
		}
		for _, s := range []string{pm.Body, pm.Subject, pm.Nick} {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8: %q", s)
			}
			for _, r := range s {
				if r < 0x20 && r != '\n' && r != '\t' || r == 0xfffe || r == 0xffff {
					t.Fatalf("control character %U in %q", r, s)
				}
			}
		}
		if strings.ContainsAny(pm.Subject+pm.Nick, "\r\n") {
			t.Fatalf("line break in a one-line field")
		}
		if _, ok := contactAddress(pm.From); !ok && pm.From != unknownSender {
			t.Fatalf("contact %q cannot be a JID", pm.From)
		}
		for _, id := range append([]string{pm.MessageID, pm.InReplyTo}, pm.References...) {
			if id != "" {
				if _, ok := cleanMsgID(id); !ok {
					t.Fatalf("unsafe message id %q", id)
				}
			}
		}
		for _, p := range pm.Parts {
			if len(p.Path) == 0 || strings.ContainsAny(p.Name, "/\\\r\n\x00") || p.Name == "" {
				t.Fatalf("bad part %+v", p)
			}
		}
	})
}

func imapUID(n uint32) imap.UID { return imap.UID(n) }
