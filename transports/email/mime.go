package email

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // charsets beyond UTF-8 and ASCII (iso-8859-*, windows-*, ...)
	"github.com/emersion/go-message/mail"
)

// limits bound the work and memory spent on one incoming mail, whatever it
// contains.
type limits struct {
	MaxHeader int64         // bytes of the top-level header
	MaxDepth  int           // MIME nesting
	MaxParts  int           // MIME parts looked at
	MaxText   int           // bytes of decoded text forwarded (then "[truncated]")
	MaxSource int64         // bytes of the message read at all
	Timeout   time.Duration // wall time of one parse
}

var defaultLimits = limits{
	MaxHeader: 256 << 10,
	MaxDepth:  20,
	MaxParts:  100,
	MaxText:   64 << 10,
	MaxSource: maxFullFetch + 1<<20,
	Timeout:   10 * time.Second,
}

// maxFullFetch is the largest mail fetched whole; bigger ones are read from
// their BODYSTRUCTURE and text parts only.
const maxFullFetch = 10 << 20

const truncatedNote = "[truncated]"

// attachmentPart is a MIME part shown as an attachment, found by its IMAP
// part path (1-based, "1" for the body of a single-part message).
type attachmentPart struct {
	Path     []int
	Name     string
	Type     string
	Encoding string // Content-Transfer-Encoding, lower-case
	Size     int64  // decoded size (from BODYSTRUCTURE: encoded size)
	Encoded  bool   // Size is the encoded size (from BODYSTRUCTURE)
}

// parsedMail is what the gateway takes from a mail.
type parsedMail struct {
	From    string // bare address a JID can carry, or unknownSender
	Nick    string // display name of From
	RawFrom string // From as written, when From is unknownSender
	// Recipients are the addresses of To, then Cc, then Bcc that a JID
	// can carry, with their display names (at most maxRecipients).
	Recipients []correspondent
	Subject    string
	Date       time.Time
	MessageID  string
	InReplyTo  string
	References []string
	Body       string
	Truncated  bool // the text was cut at MaxText
	Incomplete bool // parsing stopped early: caps, time or malformed MIME
	Parts      []attachmentPart
}

var errParseTimeout = errors.New("email: parsing took too long")

// deadlineReader fails reads after a deadline, so a parse cannot run for
// long whatever the input does.
type deadlineReader struct {
	r        io.Reader
	deadline time.Time
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if time.Now().After(d.deadline) {
		return 0, errParseTimeout
	}
	return d.r.Read(p)
}

// parseMail reads one message. It never fails and never panics: whatever
// cannot be read shows up as Incomplete and a note in the body.
func parseMail(r io.Reader, lim limits) (pm *parsedMail) {
	pm = &parsedMail{From: unknownSender}
	defer func() {
		if v := recover(); v != nil {
			pm.Incomplete = true
		}
		pm.finish(lim)
	}()
	src := &deadlineReader{r: io.LimitReader(r, lim.MaxSource), deadline: time.Now().Add(lim.Timeout)}
	e, err := message.ReadWithOptions(bufio.NewReaderSize(src, 4096), &message.ReadOptions{MaxHeaderBytes: lim.MaxHeader})
	if e == nil {
		pm.Incomplete = true
		return pm
	}
	pm.header(mail.Header{Header: e.Header})
	p := &mimeParser{lim: lim, pm: pm}
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		pm.Incomplete = true
	}
	pm.Body = p.entity(e, nil, 0).text
	return pm
}

// header takes the addressing and threading fields.
func (pm *parsedMail) header(h mail.Header) {
	if subj, err := h.Subject(); err == nil {
		pm.Subject = subj
	} else {
		pm.Subject = h.Get("Subject")
	}
	pm.Subject = oneLine(pm.Subject, 998)
	if froms, err := h.AddressList("From"); err == nil && len(froms) > 0 {
		pm.Nick = oneLine(froms[0].Name, maxNick)
		if a, ok := contactAddress(froms[0].Address); ok {
			pm.From = a
		}
	}
	if pm.From == unknownSender {
		pm.RawFrom = oneLine(h.Get("From"), 200)
		if pm.Nick == "" {
			pm.Nick = oneLine(pm.RawFrom, maxNick)
		}
	}
	pm.Recipients = recipients(h, "To", "Cc", "Bcc")
	if d, err := h.Date(); err == nil && !d.IsZero() {
		pm.Date = d
	}
	pm.MessageID = msgIDOf(&h, "Message-Id")
	pm.InReplyTo = msgIDOf(&h, "In-Reply-To")
	refs, _ := h.MsgIDList("References")
	for _, id := range refs {
		if id, ok := cleanMsgID(id); ok && len(pm.References) < maxRefs {
			pm.References = append(pm.References, id)
		}
	}
}

// correspondent is an address a mail was exchanged with.
type correspondent struct {
	Address string // as contactAddress returns it
	Name    string // display name, one line, at most maxNick bytes
}

// maxRecipients is the most recipients taken from one mail.
const maxRecipients = 50

// recipients returns the addresses of the header fields, in order, without
// repeats.
func recipients(h mail.Header, keys ...string) []correspondent {
	var out []correspondent
	seen := map[string]bool{}
	for _, k := range keys {
		list, _ := h.AddressList(k)
		for _, a := range list {
			addr, ok := contactAddress(a.Address)
			if !ok || seen[addr] || len(out) >= maxRecipients {
				continue
			}
			seen[addr] = true
			name := oneLine(a.Name, maxNick)
			if strings.EqualFold(name, addr) {
				name = ""
			}
			out = append(out, correspondent{Address: addr, Name: name})
		}
	}
	return out
}

// maxRefs is the most References kept from a mail and written into one.
const maxRefs = 20

// msgIDOf returns the first message ID of a header field, tolerating the
// malformed ones seen in the wild.
func msgIDOf(h *mail.Header, key string) string {
	ids, _ := h.MsgIDList(key)
	if len(ids) > 0 {
		if id, ok := cleanMsgID(ids[0]); ok {
			return id
		}
	}
	v := strings.TrimSpace(h.Get(key))
	if i := strings.IndexByte(v, '<'); i >= 0 {
		if j := strings.IndexByte(v[i:], '>'); j > 0 {
			v = v[i+1 : i+j]
		}
	}
	id, _ := cleanMsgID(v)
	return id
}

// cleanMsgID accepts a message ID (without angle brackets) that can be
// written back into a header as is: printable ASCII without spaces or
// brackets, at most 250 bytes.
func cleanMsgID(id string) (string, bool) {
	if id == "" || len(id) > 250 {
		return "", false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if c <= ' ' || c >= 0x7f || c == '<' || c == '>' || c == '"' || c == '\\' {
			return "", false
		}
	}
	return id, true
}

// finish caps and cleans the body and adds notes.
func (pm *parsedMail) finish(lim limits) {
	body := cleanText(pm.Body)
	if len(body) > lim.MaxText {
		body = strings.TrimRightFunc(truncateRunes(body, lim.MaxText), unicode.IsSpace)
		pm.Truncated = true
	}
	if pm.Truncated {
		body += "\n" + truncatedNote
	}
	if pm.Incomplete {
		body += "\n[this mail could not be read completely]"
	}
	if pm.RawFrom != "" {
		body = "From: " + pm.RawFrom + "\n\n" + body
	}
	pm.Body = strings.TrimSpace(body)
}

type mimeParser struct {
	lim   limits
	pm    *parsedMail
	parts int
}

// textPart is what one entity contributes to the body.
type textPart struct {
	text string
	html bool // converted from HTML
}

// entity reads one MIME entity (and its children) at IMAP path.
func (p *mimeParser) entity(e *message.Entity, path []int, depth int) textPart {
	p.parts++
	if p.parts > p.lim.MaxParts || depth > p.lim.MaxDepth {
		p.pm.Incomplete = true
		return textPart{}
	}
	mt, params, err := e.Header.ContentType()
	if err != nil || mt == "" {
		mt, params = "text/plain", map[string]string{}
	}
	if mr := e.MultipartReader(); mr != nil {
		return p.multipart(mr, mt, path, depth)
	}
	disp, dparams, _ := e.Header.ContentDisposition()
	name := dparams["filename"]
	if name == "" {
		name = params["name"]
	}
	inline := disp != "attachment" && (name == "" || disp == "inline")
	switch {
	case inline && (mt == "text/plain" || mt == "text/enriched" || mt == "text/markdown"):
		text, full := readText(e.Body, p.lim.MaxText)
		p.pm.Truncated = p.pm.Truncated || full
		if strings.EqualFold(params["format"], "flowed") {
			text = unflow(text, strings.EqualFold(params["delsp"], "yes"))
		}
		return textPart{text: text}
	case inline && mt == "text/html":
		text, full := htmlToText(e.Body, p.lim.MaxText)
		p.pm.Truncated = p.pm.Truncated || full
		return textPart{text: text, html: true}
	}
	ipath := path
	if len(ipath) == 0 {
		ipath = []int{1}
	}
	n, err := io.Copy(io.Discard, e.Body)
	if errors.Is(err, errParseTimeout) {
		p.pm.Incomplete = true
	}
	p.pm.Parts = append(p.pm.Parts, attachmentPart{
		Path:     append([]int(nil), ipath...),
		Name:     attachmentName(name, mt, len(p.pm.Parts)+1),
		Type:     mt,
		Encoding: strings.ToLower(strings.TrimSpace(e.Header.Get("Content-Transfer-Encoding"))),
		Size:     n,
	})
	return textPart{}
}

func (p *mimeParser) multipart(mr message.MultipartReader, mt string, path []int, depth int) textPart {
	var kids []textPart
	for i := 1; ; i++ {
		part, err := mr.NextPart()
		if err == io.EOF {
			break
		}
		if part == nil || (err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err)) {
			p.pm.Incomplete = true
			break
		}
		kids = append(kids, p.entity(part, append(append([]int(nil), path...), i), depth+1))
		if p.parts > p.lim.MaxParts {
			break
		}
	}
	if mt == "multipart/alternative" {
		// The last alternative is the richest; plain text reads best in a
		// chat client, so take it when it says something.
		var best textPart
		for _, k := range kids {
			if strings.TrimSpace(k.text) == "" {
				continue
			}
			if best.text == "" || (best.html && !k.html) {
				best = k
			}
		}
		return best
	}
	if mt == "multipart/related" && len(kids) > 0 {
		return kids[0] // the root; the rest are its images, listed as attachments
	}
	var texts []string
	for _, k := range kids {
		if t := strings.TrimSpace(k.text); t != "" {
			texts = append(texts, t)
		}
	}
	return textPart{text: strings.Join(texts, "\n\n")}
}

// readText reads at most max bytes of decoded text, and reports whether
// there was more.
func readText(r io.Reader, max int) (string, bool) {
	b, err := io.ReadAll(io.LimitReader(r, int64(max)+1))
	_ = err // what was read is shown; a decoding error cuts the part short
	if len(b) > max {
		return string(b[:max]), true
	}
	return string(b), false
}

// attachmentName returns a file name safe to show and to put in a URL.
func attachmentName(name, mt string, n int) string {
	if dec, err := new(mime.WordDecoder).DecodeHeader(name); err == nil {
		name = dec
	}
	name = oneLine(name, 200)
	name = strings.Map(func(r rune) rune {
		switch r {
		case '/', '\\', ':', '*', '?', '"', '<', '>', '|':
			return '_'
		}
		return r
	}, name)
	name = strings.Trim(name, ". ")
	if name == "" {
		ext := ""
		if exts, _ := mime.ExtensionsByType(mt); len(exts) > 0 {
			ext = exts[0]
		}
		name = fmt.Sprintf("attachment-%d%s", n, ext)
	}
	return name
}

// unflow undoes format=flowed (RFC 3676): a line ending in a space goes on
// in the next one of the same quote depth.
func unflow(s string, delsp bool) string {
	lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
	var b strings.Builder
	prevSoft, prevDepth := false, -1
	for _, l := range lines {
		depth := 0
		for depth < len(l) && l[depth] == '>' {
			depth++
		}
		content := l[depth:]
		if depth > 0 || strings.HasPrefix(content, " ") {
			content = strings.TrimPrefix(content, " ") // space-stuffing
		}
		soft := strings.HasSuffix(content, " ") && content != "-- "
		if prevSoft && depth == prevDepth {
			// continues the previous line
		} else if prevDepth >= 0 {
			b.WriteByte('\n')
			if depth > 0 {
				b.WriteString(strings.Repeat(">", depth) + " ")
			}
		} else if depth > 0 {
			b.WriteString(strings.Repeat(">", depth) + " ")
		}
		if soft && delsp {
			content = content[:len(content)-1]
		}
		b.WriteString(content)
		prevSoft, prevDepth = soft, depth
	}
	return b.String()
}

// cleanText makes text fit for an XMPP body: valid UTF-8, LF line ends, no
// control characters but tab and newline (XML refuses most), no trailing
// spaces, never two blank lines in a row.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	s = strings.ReplaceAll(s, "\r\n", "\n")
	var b strings.Builder
	b.Grow(len(s))
	blank := 0
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.Map(func(r rune) rune {
			switch {
			case r == '\t':
				return r
			case r == '\r' || r == '\u2028' || r == '\u2029':
				return ' '
			case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == 0xfffe || r == 0xffff || (r >= 0xd800 && r <= 0xdfff):
				return -1
			case r == utf8.RuneError:
				return r
			}
			return r
		}, line)
		line = strings.TrimRightFunc(line, unicode.IsSpace)
		if line == "" {
			blank++
			if blank > 1 {
				continue
			}
		} else {
			blank = 0
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return strings.Trim(b.String(), "\n")
}
