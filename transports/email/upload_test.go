package email

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"transportd/core"
	"transportd/internal/xmpptest"
)

// attachmentMail is a mail from jane@example.org to rcpt with a text and
// one attachment per name.
func attachmentMail(rcpt, subject string, files map[string][]byte, order ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: Jane <jane@example.org>\nTo: %s\nSubject: %s\nMessage-ID: <%s@example.org>\nDate: %s\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\"\n\n--b1\nContent-Type: text/plain; charset=utf-8\n\nSee attached.\n",
		rcpt, subject, xmpptest.RandomID(), time.Now().Format(time.RFC1123Z))
	for _, name := range order {
		fmt.Fprintf(&b, "--b1\nContent-Type: application/octet-stream; name=%q\nContent-Disposition: attachment; filename=%q\nContent-Transfer-Encoding: base64\n\n%s\n",
			name, name, wrap76(base64.StdEncoding.EncodeToString(files[name])))
	}
	b.WriteString("--b1--\n")
	return crlf(b.String())
}

// oobURLs returns the OOB URLs of a message by description (file name).
func oobURLs(m *core.Element) map[string]string {
	out := map[string]string{}
	for _, x := range m.Children {
		if x.Name.Space == nsOOB && x.Name.Local == "x" {
			out[x.ChildText("", "desc")] = x.ChildText("", "url")
		}
	}
	return out
}

func httpGet(t *testing.T, u string) (int, []byte) {
	t.Helper()
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, b
}

func uploadEnv(t *testing.T) (jid, httpAddr string) {
	t.Helper()
	jid, httpAddr = os.Getenv("TRANSPORTD_TEST_UPLOAD_JID"), os.Getenv("TRANSPORTD_TEST_XMPP_HTTP")
	if jid == "" || httpAddr == "" {
		t.Fatal("TRANSPORTD_TEST_UPLOAD_JID or TRANSPORTD_TEST_XMPP_HTTP not set: the Prosody of scripts/testenv.sh exports them")
	}
	return jid, httpAddr
}

// TestAttachmentUpload: with attachments = "upload", an attachment arrives
// as a link on Prosody's upload service (mod_http_file_share) that returns
// the exact bytes, in the OOB data and the text; one larger than the
// service takes (16 MiB here) keeps the gateway's own link, which works.
func TestAttachmentUpload(t *testing.T) {
	e := testMailEnv(t)
	_, httpAddr := uploadEnv(t)
	g := startGW(t, e, gwOpts{extra: `attachments = "upload"`})
	c := dialUser(t, e, "user11", "a.test")
	run := xmpptest.RandomID()[:6]
	small := bytes.Repeat([]byte("upload-"+run+"\x00\xff\r\n"), 3000)
	big := bytes.Repeat([]byte{0xa5}, 16<<20+1)
	raw := attachmentMail("user11@a.test", "Files "+run, map[string][]byte{"small.bin": small, "big.bin": big, "ünïcode name.bin": small[:100]}, "small.bin", "big.bin", "ünïcode name.bin")
	if err := lmtpDeliver(e.lmtp, "user11@a.test", raw); err != nil {
		t.Fatal(err)
	}
	m := c.Expect(wait, "the mail with attachments", isChatFrom(`jane\40example.org@email.a.test`))
	body := m.ChildText("", "body")
	urls := oobURLs(m)
	if len(urls) != 3 {
		t.Fatalf("%d OOB links, want 3: %s", len(urls), m)
	}
	for _, name := range []string{"small.bin", "ünïcode name.bin"} {
		u := urls[name]
		if !strings.HasPrefix(u, "http://"+httpAddr+"/") || !strings.Contains(body, u) {
			t.Errorf("%s: link %q is not on the upload service (%s) or not in the text:\n%s", name, u, httpAddr, body)
			continue
		}
		want := small
		if name != "small.bin" {
			want = small[:100]
		}
		if code, got := httpGet(t, u); code != 200 || !bytes.Equal(got, want) {
			t.Errorf("GET %s: %d, %d bytes (want 200, %d bytes)", u, code, len(got), len(want))
		}
	}
	u := urls["big.bin"]
	if !strings.HasPrefix(u, g.httpURL+"/email/a.test/att/") || !strings.Contains(body, u) {
		t.Fatalf("the too large attachment's link %q is not the gateway's:\n%s", u, body)
	}
	if code, got := httpGet(t, u); code != 200 || !bytes.Equal(got, big) {
		t.Errorf("GET %s: %d, %d bytes (want 200, %d bytes)", u, code, len(got), len(big))
	}
}

// TestAttachmentUploadLimit: upload_max_size below the service's limit
// keeps larger parts on the gateway's links; the others are uploaded.
func TestAttachmentUploadLimit(t *testing.T) {
	e := testMailEnv(t)
	_, httpAddr := uploadEnv(t)
	startGW(t, e, gwOpts{extra: "attachments = \"upload\"\nupload_max_size = 5000"})
	c := dialUser(t, e, "user12", "a.test")
	run := xmpptest.RandomID()[:6]
	files := map[string][]byte{"fits.txt": []byte("fits " + run), "over.bin": bytes.Repeat([]byte("x"), 5001)}
	if err := lmtpDeliver(e.lmtp, "user12@a.test", attachmentMail("user12@a.test", "Limit "+run, files, "fits.txt", "over.bin")); err != nil {
		t.Fatal(err)
	}
	m := c.Expect(wait, "the mail", isChatFrom(`jane\40example.org@email.a.test`))
	urls := oobURLs(m)
	if !strings.HasPrefix(urls["fits.txt"], "http://"+httpAddr+"/") {
		t.Errorf("fits.txt: %q is not on the upload service", urls["fits.txt"])
	}
	if strings.HasPrefix(urls["over.bin"], "http://"+httpAddr+"/") {
		t.Errorf("over.bin (over upload_max_size) was uploaded: %q", urls["over.bin"])
	}
}

// fakeUpload is an upload service the test controls, connected to Prosody
// as the external component echo5.b.test (a JID no other test package
// takes): it refuses slots, or hands out slots whose PUT fails.
type fakeUpload struct {
	conn net.Conn
	mode atomic.Value // "refuse" or "badput"
	put  *httptest.Server
	puts atomic.Int32
}

const fakeUploadJID = "echo5.b.test"

func startFakeUpload(t *testing.T, e mailEnv) *fakeUpload {
	t.Helper()
	f := &fakeUpload{}
	f.mode.Store("refuse")
	f.put = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.puts.Add(1)
		http.Error(w, "storage full", http.StatusInsufficientStorage)
	}))
	t.Cleanup(f.put.Close)
	conn, err := net.DialTimeout("tcp", e.xmpp.Component, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	f.conn = conn
	t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, `<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='%s'>`, fakeUploadJID)
	dec := xml.NewDecoder(conn)
	id := ""
	for id == "" {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("fake upload service: %v", err)
		}
		if st, ok := tok.(xml.StartElement); ok && st.Name.Local == "stream" {
			for _, a := range st.Attr {
				if a.Name.Local == "id" {
					id = a.Value
				}
			}
		}
	}
	fmt.Fprintf(conn, "<handshake>%x</handshake>", sha1.Sum([]byte(id+e.xmpp.Secret)))
	hs, err := core.ElementFromTokens(dec)
	if err != nil || hs.Name.Local != "handshake" {
		t.Fatalf("fake upload service: handshake refused: %v %v", hs, err)
	}
	go f.serve(dec)
	return f
}

func (f *fakeUpload) serve(dec *xml.Decoder) {
	for {
		el, err := core.ElementFromTokens(dec)
		if err != nil {
			return
		}
		if el.Name.Local != "iq" || el.Get("type") != "get" {
			continue
		}
		head := func(typ string) string {
			return fmt.Sprintf(`<iq type='%s' id='%s' to='%s' from='%s'>`, typ, xmlEscape(el.Get("id")), xmlEscape(el.Get("from")), fakeUploadJID)
		}
		switch p := el.FirstChild(); {
		case p != nil && p.Name.Local == "query" && p.Name.Space == nsDiscoI:
			fmt.Fprintf(f.conn, `%s<query xmlns='%s'><identity category='store' type='file'/><feature var='urn:xmpp:http:upload:0'/></query></iq>`, head("result"), nsDiscoI)
		case p != nil && p.Name.Local == "request" && f.mode.Load() == "badput":
			u := f.put.URL + "/slot/1"
			fmt.Fprintf(f.conn, `%s<slot xmlns='urn:xmpp:http:upload:0'><put url='%s'><header name='Authorization'>Bearer x</header></put><get url='%s'/></slot></iq>`, head("result"), u, u)
		default:
			fmt.Fprintf(f.conn, `%s<error type='cancel'><not-allowed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>uploads closed</text></error></iq>`, head("error"))
		}
	}
}

func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// TestAttachmentUploadFallback: when the upload service refuses the slot,
// fails the PUT, or is down, the mail still arrives, once, with the
// gateway's working link.
func TestAttachmentUploadFallback(t *testing.T) {
	e := testMailEnv(t)
	f := startFakeUpload(t, e)
	g := startGW(t, e, gwOpts{extra: fmt.Sprintf("attachments = \"upload\"\nupload_service = %q", fakeUploadJID)})
	c := dialUser(t, e, "user11", "b.test")
	run := xmpptest.RandomID()[:6]
	for _, step := range []string{"refuse", "badput", "down"} {
		payload := []byte("payload " + step + " " + run)
		switch step {
		case "down":
			f.conn.Close()
		default:
			f.mode.Store(step)
		}
		subject := "Fallback " + step + " " + run
		raw := attachmentMail("user11@b.test", subject, map[string][]byte{"doc.bin": payload}, "doc.bin")
		if err := lmtpDeliver(e.lmtp, "user11@b.test", raw); err != nil {
			t.Fatal(err)
		}
		m := c.Expect(wait, "the mail ("+step+")", isChatFrom(`jane\40example.org@email.b.test`))
		if m.ChildText("", "subject") != subject {
			t.Fatalf("%s: got %s", step, m)
		}
		u := oobURLs(m)["doc.bin"]
		if !strings.HasPrefix(u, g.httpURL+"/email/b.test/att/") || !strings.Contains(m.ChildText("", "body"), u) {
			t.Fatalf("%s: link %q is not the gateway's: %s", step, u, m)
		}
		if code, got := httpGet(t, u); code != 200 || !bytes.Equal(got, payload) {
			t.Errorf("%s: GET %s: %d %q", step, u, code, got)
		}
	}
	if f.puts.Load() != 1 {
		t.Errorf("%d PUTs to the failing slot, want 1", f.puts.Load())
	}
	// Each mail once.
	if m, err := c.Next(2*time.Second, isChatFrom(`jane\40example.org@email.b.test`)); err == nil {
		t.Errorf("a mail arrived twice: %s", m)
	}
}

// TestAttachmentLines: what the text says of each attachment, uploaded,
// linked by the gateway, or too large with no gateway link to fall back on
// (no public URL).
func TestAttachmentLines(t *testing.T) {
	s := &session{t: New()}
	pm := &parsedMail{Body: "Hi", Parts: []attachmentPart{
		{Path: []int{2}, Name: "a.pdf", Type: "application/pdf", Size: 2048},
		{Path: []int{3}, Name: "b.iso", Type: "application/octet-stream", Size: 40 << 20},
		{Path: []int{4}, Name: "c.txt", Type: "text/plain", Size: 10},
	}}
	up := []uploaded{{URL: "https://up.example/x/a.pdf", Size: 2000}, {TooLarge: 16 << 20}, {}}
	body, atts := s.mailText(&settings{}, folderState{name: "INBOX"}, 7, pm, "", up)
	want := "Hi\n\n📎 a.pdf (application/pdf, 2 KB): https://up.example/x/a.pdf\n" +
		"📎 b.iso (application/octet-stream, 40.0 MB): too large to upload here (the limit is 16.0 MB)\n" +
		"📎 c.txt (text/plain, 10 bytes)"
	if body != want {
		t.Errorf("body =\n%s\nwant\n%s", body, want)
	}
	if len(atts) != 3 || atts[0].URL != "https://up.example/x/a.pdf" || atts[0].Size != 2000 || atts[1].URL != "" {
		t.Errorf("attachments = %+v", atts)
	}
}

// TestUploadOptions: wrong upload options are refused with the option's
// name; right ones are read.
func TestUploadOptions(t *testing.T) {
	for i, tc := range []struct {
		d    map[string]string
		want string // in the error; "" for none
	}{
		0: {map[string]string{}, ""},
		1: {map[string]string{"attachments": "upload", "upload_service": "upload.a.test", "upload_max_size": "1000", "upload_timeout": "30s"}, ""},
		2: {map[string]string{"attachments": "uplaod"}, `attachments must be "link" or "upload", not "uplaod"`},
		3: {map[string]string{"upload_service": "upload.a.test/res"}, "upload_service must be the JID"},
		4: {map[string]string{"upload_service": "@@"}, "upload_service must be the JID"},
		5: {map[string]string{"upload_max_size": "25MB"}, "upload_max_size must be a number of bytes"},
		6: {map[string]string{"upload_max_size": "0"}, "upload_max_size must be a number of bytes"},
		7: {map[string]string{"upload_timeout": "1h"}, "upload_timeout must be a duration from 1s to 10m"},
	} {
		o, err := parseUploadOptions(tc.d)
		switch {
		case tc.want == "" && err != nil:
			t.Errorf("%d: %v", i, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%d: error %v, want %q", i, err, tc.want)
		}
		if i == 1 && (!o.Upload || o.Service != "upload.a.test" || o.Max != 1000 || o.Timeout != 30*time.Second) {
			t.Errorf("%d: %+v", i, o)
		}
	}
}

func TestTooLarge(t *testing.T) {
	const limit = 16 << 20
	for i, tc := range []struct {
		p    attachmentPart
		want bool
	}{
		0: {attachmentPart{Size: limit}, false},
		1: {attachmentPart{Size: limit + 1}, true},
		// Encoded sizes of base64 parts: 76-character lines decode to 57/78.
		2: {attachmentPart{Size: limit / 57 * 78, Encoded: true, Encoding: "base64"}, false},
		3: {attachmentPart{Size: (limit + 1) / 57 * 78, Encoded: true, Encoding: "base64"}, false}, // near: fetched, the fetch decides
		4: {attachmentPart{Size: limit * 2, Encoded: true, Encoding: "base64"}, true},
		5: {attachmentPart{Size: limit + 1, Encoded: true, Encoding: "7bit"}, true},
	} {
		if got := tooLarge(tc.p, limit); got != tc.want {
			t.Errorf("%d: tooLarge(%+v) = %v", i, tc.p, got)
		}
	}
}

// optionsHost is a core.Host with the given defaults and nothing else.
type optionsHost struct{ d map[string]string }

func (h optionsHost) Handle(string, http.Handler) {}
func (h optionsHost) URL(string) string           { return "" }
func (h optionsHost) Domain() string              { return "a.test" }
func (h optionsHost) Defaults() map[string]string { return h.d }
func (h optionsHost) Logger() *slog.Logger        { return slog.New(slog.DiscardHandler) }

// TestUploadOptionsAtStart: the gateway does not start with wrong upload
// options, and says which.
func TestUploadOptionsAtStart(t *testing.T) {
	err := New().Start(context.Background(), optionsHost{map[string]string{"attachments": "upload", "upload_timeout": "0"}})
	if err == nil || !strings.Contains(err.Error(), `domains."a.test".transports.email.defaults: upload_timeout must be`) {
		t.Errorf("Start = %v", err)
	}
	if err := New().Start(context.Background(), optionsHost{map[string]string{"attachments": "upload"}}); err != nil {
		t.Errorf("Start = %v", err)
	}
}
