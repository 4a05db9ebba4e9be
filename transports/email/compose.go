package email

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"errors"
	"mime"
	"mime/quotedprintable"
	"strings"
	"time"
)

// outgoing is a mail written by the XMPP user.
type outgoing struct {
	From, To   string // bare addresses, checked with validAddress
	Subject    string
	MessageID  string // without brackets, checked with cleanMsgID
	InReplyTo  string
	References []string
	Body       string
	Date       time.Time
}

var errHeader = errors.New("email: refusing to write an unsafe header value")

// compose writes the mail as it goes over SMTP and into Sent: every line
// ends in CRLF and no CR or LF appears anywhere else, the body is UTF-8
// text in quoted-printable, and every header value was checked or encoded
// so that nothing the user typed can add a header (CR, LF and NUL in a
// subject become spaces; addresses and IDs with them are refused).
func compose(o *outgoing) ([]byte, error) {
	if !validAddress(o.From) || !validAddress(o.To) {
		return nil, errHeader
	}
	ids := append([]string{o.MessageID}, o.References...)
	if o.InReplyTo != "" {
		ids = append(ids, o.InReplyTo)
	}
	for _, id := range ids {
		if _, ok := cleanMsgID(id); !ok {
			return nil, errHeader
		}
	}
	var b bytes.Buffer
	h := func(k, v string) {
		b.WriteString(k)
		b.WriteString(": ")
		b.WriteString(v)
		b.WriteString("\r\n")
	}
	h("From", o.From)
	h("To", o.To)
	if s := oneLine(o.Subject, 900); s != "" {
		h("Subject", encodeSubject(s))
	}
	h("Date", o.Date.Format(time.RFC1123Z))
	h("Message-ID", "<"+o.MessageID+">")
	if o.InReplyTo != "" {
		h("In-Reply-To", "<"+o.InReplyTo+">")
	}
	if len(o.References) > 0 {
		refs := make([]string, len(o.References))
		for i, r := range o.References {
			refs[i] = "<" + r + ">"
		}
		h("References", strings.Join(refs, "\r\n "))
	}
	h("MIME-Version", "1.0")
	h("Content-Type", "text/plain; charset=utf-8")
	h("Content-Transfer-Encoding", "quoted-printable")
	h("User-Agent", "transportd")
	b.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&b)
	if _, err := qp.Write(toCRLF([]byte(strings.ToValidUTF8(o.Body, "\uFFFD")))); err != nil {
		return nil, err
	}
	if err := qp.Close(); err != nil {
		return nil, err
	}
	b.WriteString("\r\n")
	return toCRLF(b.Bytes()), nil
}

// toCRLF turns every line end — CRLF, a lone CR, a lone LF — into CRLF.
// Go's textproto DotWriter passes a lone CR through, and a CR or LF alone
// in the DATA stream is how SMTP smuggling starts: none must reach it.
func toCRLF(p []byte) []byte {
	out := make([]byte, 0, len(p)+len(p)/32)
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(p) && p[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, c)
		}
	}
	return out
}

// encodeSubject returns a Subject value: printable ASCII folded at spaces,
// anything else as RFC 2047 encoded words, one per folded line.
func encodeSubject(s string) string {
	ascii := true
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			ascii = false
			break
		}
	}
	if ascii && !strings.Contains(s, "=?") {
		words := strings.Split(s, " ")
		long := false
		for _, w := range words {
			if len(w) > 900 {
				long = true
			}
		}
		if !long {
			return fold(words, " ")
		}
	}
	enc := mime.QEncoding.Encode("utf-8", s)
	return fold(strings.Split(enc, " "), " ")
}

// fold joins words with sep, starting a continuation line ("\r\n ") when a
// line would pass 76 characters.
func fold(words []string, sep string) string {
	var b strings.Builder
	line := len("Subject: ")
	for i, w := range words {
		if i > 0 {
			if line+len(sep)+len(w) > 76 && line > 1 {
				b.WriteString("\r\n ")
				line = 1
			} else {
				b.WriteString(sep)
				line += len(sep)
			}
		}
		b.WriteString(w)
		line += len(w)
	}
	return b.String()
}

// messageID returns the Message-ID of a mail the user sends: derived from
// the account, the XMPP stanza id and resource, and the mail's content, so
// that the same stanza sent again after a crash gets the same Message-ID
// (and is recognised in Sent), while a client that reuses stanza ids for
// different messages still gets distinct ones. Without a stanza id it is
// random.
func messageID(accountKey, xmppID, resource, to, subject, body string, random func() string) string {
	var seed string
	if xmppID == "" {
		seed = random()
	} else {
		sum := sha256.Sum256([]byte(strings.Join([]string{"transportd-mid-v1", accountKey, xmppID, resource, to, subject, body}, "\x00")))
		seed = strings.ToLower(base32.StdEncoding.WithPadding(base32.NoPadding).EncodeToString(sum[:15]))
	}
	return "xmpp." + seed + "@" + domainOf(accountKey)
}
