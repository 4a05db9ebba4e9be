package email

import (
	"io"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// Limits of the HTML conversion.
const (
	maxHTMLInput  = 2 << 20 // bytes of HTML read
	maxHTMLTokens = 200_000 // tokens looked at
)

// htmlToText turns an HTML mail body into readable plain text for a chat
// client: no markup, no remote content (images become their alt text),
// links kept as "text (URL)", and XEP-0393 message styling where it helps
// (*bold*, _italic_, ~strike~, `code`, ``` blocks, "> " quotes). It stops
// at max bytes of output and reports whether it did.
func htmlToText(r io.Reader, max int) (string, bool) {
	z := html.NewTokenizer(io.LimitReader(r, maxHTMLInput))
	z.SetMaxBuf(maxHTMLInput)
	w := &textWriter{max: max}
	skip := 0 // depth inside elements whose content is never shown
	var skipTag atom.Atom
	var links []linkState
	var lists []listState
	for tokens := 0; tokens < maxHTMLTokens && !w.full; tokens++ {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		tok := z.Token()
		if skip > 0 {
			switch {
			case tt == html.StartTagToken && tok.DataAtom == skipTag && tok.DataAtom != 0:
				skip++
			case tt == html.EndTagToken && tok.DataAtom == skipTag:
				skip--
			case skipTag == atom.Head && tt == html.StartTagToken && tok.DataAtom == atom.Body:
				skip = 0
			}
			continue
		}
		switch tt {
		case html.TextToken:
			w.text(tok.Data)
		case html.SelfClosingTagToken, html.StartTagToken:
			selfClosing := tt == html.SelfClosingTagToken
			switch tok.DataAtom {
			case atom.Script, atom.Style, atom.Head, atom.Title, atom.Template, atom.Noscript,
				atom.Svg, atom.Math, atom.Iframe, atom.Object, atom.Select, atom.Textarea, atom.Audio, atom.Video:
				if !selfClosing {
					skip, skipTag = 1, tok.DataAtom
				}
			case atom.Br:
				w.lineBreak(1)
			case atom.Hr:
				w.lineBreak(1)
				w.raw("----")
				w.lineBreak(1)
			case atom.P, atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6, atom.Table, atom.Ul, atom.Ol, atom.Dl:
				w.lineBreak(2)
				switch tok.DataAtom {
				case atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6:
					w.open("*")
				case atom.Ul, atom.Ol:
					if !selfClosing {
						lists = append(lists, listState{ordered: tok.DataAtom == atom.Ol})
					}
				}
			case atom.Div, atom.Tr, atom.Section, atom.Article, atom.Header, atom.Footer, atom.Address,
				atom.Center, atom.Form, atom.Fieldset, atom.Dt, atom.Dd, atom.Caption, atom.Figure, atom.Main, atom.Nav:
				w.lineBreak(1)
			case atom.Li:
				w.lineBreak(1)
				indent := ""
				if len(lists) > 1 {
					indent = strings.Repeat("  ", len(lists)-1)
				}
				if len(lists) > 0 && lists[len(lists)-1].ordered {
					l := &lists[len(lists)-1]
					l.n++
					w.raw(indent + strconv.Itoa(l.n) + ". ")
				} else {
					w.raw(indent + "• ")
				}
			case atom.Td, atom.Th:
				w.space = true
			case atom.Blockquote:
				w.lineBreak(2)
				if !selfClosing {
					w.quote++
				}
			case atom.Pre:
				w.lineBreak(2)
				if !selfClosing {
					w.raw("```")
					w.lineBreak(1)
					w.pre++
				}
			case atom.B, atom.Strong:
				w.open("*")
			case atom.I, atom.Em:
				w.open("_")
			case atom.S, atom.Strike, atom.Del:
				w.open("~")
			case atom.Code, atom.Tt, atom.Kbd, atom.Samp:
				if w.pre == 0 {
					w.open("`")
				}
			case atom.A:
				if !selfClosing {
					links = append(links, linkState{href: linkURL(attr(tok, "href")), start: w.b.Len()})
				}
			case atom.Img:
				if alt := strings.TrimSpace(attr(tok, "alt")); alt != "" {
					w.text("[" + alt + "]")
				}
			}
		case html.EndTagToken:
			switch tok.DataAtom {
			case atom.P, atom.Table, atom.Dl:
				w.lineBreak(2)
			case atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6:
				w.close("*")
				w.lineBreak(2)
			case atom.Ul, atom.Ol:
				if len(lists) > 0 {
					lists = lists[:len(lists)-1]
				}
				w.lineBreak(2)
			case atom.Div, atom.Tr, atom.Li, atom.Section, atom.Article, atom.Header, atom.Footer, atom.Address,
				atom.Center, atom.Form, atom.Fieldset, atom.Dt, atom.Dd, atom.Caption, atom.Figure, atom.Main, atom.Nav:
				w.lineBreak(1)
			case atom.Blockquote:
				if w.quote > 0 {
					w.lineBreak(1)
					w.quote--
					w.lineBreak(2)
				}
			case atom.Pre:
				if w.pre > 0 {
					w.pre--
					w.lineBreak(1)
					w.raw("```")
					w.lineBreak(2)
				}
			case atom.B, atom.Strong:
				w.close("*")
			case atom.I, atom.Em:
				w.close("_")
			case atom.S, atom.Strike, atom.Del:
				w.close("~")
			case atom.Code, atom.Tt, atom.Kbd, atom.Samp:
				if w.pre == 0 {
					w.close("`")
				}
			case atom.A:
				if len(links) > 0 {
					l := links[len(links)-1]
					links = links[:len(links)-1]
					w.link(l)
				}
			}
		}
	}
	return w.result()
}

type linkState struct {
	href  string // "" when not worth showing
	start int    // output offset where the link text starts
}

type listState struct {
	ordered bool
	n       int
}

func attr(t html.Token, name string) string {
	for _, a := range t.Attr {
		if a.Key == name {
			return a.Val
		}
	}
	return ""
}

// linkURL returns the URL worth showing for an href: absolute http(s),
// ftp and mailto links only (no javascript:, data:, cid:, anchors or
// relative links), with no control characters or spaces.
func linkURL(href string) string {
	href = strings.TrimSpace(href)
	if href == "" || len(href) > 2048 || strings.ContainsFunc(href, func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) }) {
		return ""
	}
	u, err := url.Parse(href)
	if err != nil {
		return ""
	}
	switch strings.ToLower(u.Scheme) {
	case "http", "https", "ftp":
		if u.Host == "" {
			return ""
		}
		return href
	case "mailto":
		return href
	}
	return ""
}

// textWriter builds the converted text. Whitespace and line breaks are
// written lazily, so that collapsing, quoting and styling markers come out
// right however the HTML is laid out.
type textWriter struct {
	b       strings.Builder
	max     int
	full    bool
	quote   int    // blockquote depth: each line starts with "> " this many times
	pre     int    // inside <pre>: whitespace kept
	breaks  int    // line breaks owed before the next text (at most 2)
	space   bool   // a space is owed before the next word
	opening string // style markers owed before the next word
	atStart bool   // the last thing written ended a line
	bquote  int    // quote depth of the owed blank lines
}

func (w *textWriter) lineBreak(n int) {
	if w.b.Len() == 0 {
		return
	}
	if w.breaks == 0 {
		w.bquote = w.quote
	}
	w.bquote = min(w.bquote, w.quote)
	w.breaks = max(w.breaks, n)
	w.space = false
}

// flush writes what is owed before new text.
func (w *textWriter) flush(word bool) {
	if w.breaks > 0 {
		for i := 0; i < w.breaks; i++ {
			w.write("\n")
			if q := min(w.bquote, w.quote); i < w.breaks-1 && q > 0 {
				w.write(strings.Repeat(">", q))
			}
		}
		w.breaks, w.space = 0, false
		w.atStart = true
	}
	if w.atStart || w.b.Len() == 0 {
		if w.quote > 0 {
			w.write(strings.Repeat("> ", w.quote))
		}
		w.atStart = false
	} else if w.space && w.b.Len() > 0 {
		w.write(" ")
	}
	w.space = false
	if word && w.opening != "" {
		w.write(w.opening)
		w.opening = ""
	}
}

func (w *textWriter) write(s string) {
	if w.full {
		return
	}
	if w.b.Len()+len(s) > w.max {
		w.b.WriteString(truncateRunes(s, w.max-w.b.Len()))
		w.full = true
		return
	}
	w.b.WriteString(s)
}

// raw writes s as is (list bullets, rules, fences).
func (w *textWriter) raw(s string) {
	w.flush(false)
	w.write(s)
}

// text writes character data.
func (w *textWriter) text(s string) {
	if w.pre > 0 {
		lines := strings.Split(strings.ReplaceAll(s, "\r\n", "\n"), "\n")
		for i, l := range lines {
			if i > 0 {
				w.breaks = max(w.breaks, 1)
			}
			if l != "" {
				w.flush(true)
				w.write(l)
			}
		}
		return
	}
	for len(s) > 0 {
		r, n := utf8.DecodeRuneInString(s)
		if isHTMLSpace(r) {
			w.space = true
			s = s[n:]
			continue
		}
		end := strings.IndexFunc(s, isHTMLSpace)
		if end < 0 {
			end = len(s)
		}
		w.flush(true)
		w.write(s[:end])
		s = s[end:]
	}
}

func isHTMLSpace(r rune) bool {
	return r == ' ' || r == '\t' || r == '\n' || r == '\r' || r == '\f'
}

// open owes a style marker to the next word; close writes it after the last
// one, or forgets it when nothing was written in between.
//
// Markers pending before a word are capped: styling nested deeper than a
// few levels says nothing, and an unbounded run of opening tags would make
// each append copy an ever longer string (a mail of 400,000 <b><i> cost
// gigabytes of allocation).
func (w *textWriter) open(m string) {
	if len(w.opening) < maxPendingMarkers {
		w.opening += m
	}
}

const maxPendingMarkers = 8

func (w *textWriter) close(m string) {
	if i := strings.LastIndex(w.opening, m); i >= 0 {
		w.opening = w.opening[:i] + w.opening[i+len(m):]
		return
	}
	if w.b.Len() == 0 || w.breaks > 0 {
		return
	}
	w.write(m)
}

// link ends a link: its URL follows its text unless the text already says
// it (or there was no text, then the URL stands alone).
func (w *textWriter) link(l linkState) {
	if l.href == "" || w.full {
		return
	}
	shown := l.href
	if strings.HasPrefix(strings.ToLower(shown), "mailto:") {
		shown = shown[len("mailto:"):]
		if i := strings.IndexByte(shown, '?'); i >= 0 {
			shown = shown[:i]
		}
		if u, err := url.PathUnescape(shown); err == nil {
			shown = u
		}
	}
	var text string
	if l.start <= w.b.Len() {
		text = w.b.String()[l.start:]
	}
	norm := func(s string) string {
		s = strings.TrimSpace(strings.Trim(s, "*_~`"))
		s = strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://"), "/")
		return strings.ToLower(s)
	}
	if strings.TrimSpace(text) == "" {
		w.text(shown)
		return
	}
	// Only a text about as long as the URL can say it: comparing a long
	// text (normalized, lower-cased copies) for every link is quadratic
	// work on hostile HTML.
	if len(text) <= 4*len(l.href)+64 && (norm(text) == norm(shown) || norm(text) == norm(l.href)) {
		return
	}
	if w.breaks > 0 {
		w.flush(false)
		w.write("(" + shown + ")")
		return
	}
	w.write(" (" + shown + ")")
}

// result is the text, cleaned, and whether it was cut.
func (w *textWriter) result() (string, bool) {
	return cleanText(w.b.String()), w.full
}
