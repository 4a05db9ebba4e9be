package email

import (
	"context"
	"crypto/hmac"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
)

// Attachment links. An attachment is not copied anywhere: its link names
// the part (folder, UIDVALIDITY, UID, MIME part path, transfer encoding,
// type, name) and an expiry, sealed with an HMAC under a random key kept
// per account in its state store ("attkey"). A GET checks the seal and the
// expiry, logs in to the mailbox with the account's credentials on a
// connection of its own, and streams the decoded part from IMAP. So links
// cost no disk, survive restarts, die with the account (unregistering
// deletes the key with the account's state, a running session is needed to
// serve them) and after attachment_ttl (default 30 days); a mail deleted
// from the mailbox makes its links 404. Unknown, forged or expired tokens
// are 404 too, all alike.
//
// URL: <public_url>/email/<domain>/att/<account id>/<token>/<file name>

const attKeyName = "attkey"

// loadKey loads or creates the account's attachment link key.
func (s *session) loadKey(ctx context.Context) error {
	st := s.sink.Store()
	v, ok, err := st.Get(ctx, attKeyName)
	if err != nil {
		return err
	}
	if ok {
		if k, err := hex.DecodeString(v); err == nil && len(k) == 32 {
			s.key = k
			return nil
		}
	}
	k := make([]byte, 32)
	if _, err := crand.Read(k); err != nil {
		return err
	}
	if err := st.Set(ctx, attKeyName, hex.EncodeToString(k)); err != nil {
		return err
	}
	s.key = k
	return nil
}

// attToken is what an attachment link carries.
type attToken struct {
	Expires  int64
	Folder   string
	Validity uint32
	UID      imap.UID
	Part     []int
	Encoding string
	Type     string
	Name     string
}

func (a *attToken) encode() string {
	parts := make([]string, len(a.Part))
	for i, p := range a.Part {
		parts[i] = strconv.Itoa(p)
	}
	return strings.Join([]string{"1", strconv.FormatInt(a.Expires, 36), strconv.FormatUint(uint64(a.Validity), 36),
		strconv.FormatUint(uint64(a.UID), 36), strings.Join(parts, "."), a.Encoding, a.Type, a.Folder, a.Name}, "\x1f")
}

func decodeToken(s string) (*attToken, bool) {
	f := strings.Split(s, "\x1f")
	if len(f) != 9 || f[0] != "1" {
		return nil, false
	}
	exp, err1 := strconv.ParseInt(f[1], 36, 64)
	uv, err2 := strconv.ParseUint(f[2], 36, 32)
	uid, err3 := strconv.ParseUint(f[3], 36, 32)
	if err1 != nil || err2 != nil || err3 != nil || uid == 0 {
		return nil, false
	}
	a := &attToken{Expires: exp, Validity: uint32(uv), UID: imap.UID(uid), Encoding: f[5], Type: f[6], Folder: f[7], Name: f[8]}
	for _, p := range strings.Split(f[4], ".") {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || len(a.Part) > 64 {
			return nil, false
		}
		a.Part = append(a.Part, n)
	}
	return a, true
}

func seal(key []byte, payload string) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(payload))
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(m.Sum(nil)[:18])
}

func unseal(key []byte, token string) (string, bool) {
	p, mac, ok := strings.Cut(token, ".")
	if !ok {
		return "", false
	}
	enc := base64.RawURLEncoding
	payload, err1 := enc.DecodeString(p)
	sum, err2 := enc.DecodeString(mac)
	if err1 != nil || err2 != nil {
		return "", false
	}
	m := hmac.New(sha256.New, key)
	m.Write(payload)
	if !hmac.Equal(m.Sum(nil)[:18], sum) {
		return "", false
	}
	return string(payload), true
}

// attachmentURL returns the link of an attachment, or "" when the gateway
// has no public URL.
func (t *Transport) attachmentURL(s *session, st *settings, fs folderState, uid imap.UID, p attachmentPart) string {
	if t.host == nil || s.key == nil {
		return ""
	}
	tok := &attToken{
		Expires: time.Now().Add(st.AttachmentTTL).Unix(), Folder: fs.name, Validity: fs.validity, UID: uid,
		Part: p.Path, Encoding: p.Encoding, Type: p.Type, Name: p.Name,
	}
	base := t.host.URL(fmt.Sprintf("/att/%d/%s/", s.a.ID, seal(s.key, tok.encode())))
	if base == "" {
		return ""
	}
	return base + url.PathEscape(p.Name)
}

// attachmentHandler serves GET <prefix>/att/<account>/<token>/<name>.
func (t *Transport) attachmentHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		i := strings.Index(r.URL.Path, "/att/")
		if i < 0 {
			http.NotFound(w, r)
			return
		}
		f := strings.SplitN(r.URL.Path[i+len("/att/"):], "/", 3)
		if len(f) < 2 {
			http.NotFound(w, r)
			return
		}
		id, err := strconv.ParseInt(f[0], 10, 64)
		s := t.lookup(id)
		if err != nil || s == nil || s.key == nil {
			http.NotFound(w, r)
			return
		}
		payload, ok := unseal(s.key, f[1])
		if !ok {
			http.NotFound(w, r)
			return
		}
		tok, ok := decodeToken(payload)
		if !ok || time.Now().Unix() > tok.Expires {
			http.NotFound(w, r)
			return
		}
		select {
		case t.fetches <- struct{}{}:
			defer func() { <-t.fetches }()
		default:
			w.Header().Set("Retry-After", "5")
			http.Error(w, "busy, try again", http.StatusServiceUnavailable)
			return
		}
		if err := s.serveAttachment(r.Context(), w, r.Method == http.MethodHead, tok); err != nil {
			s.log.Info("attachment not served", "error", err)
		}
	})
}

// serveAttachment streams one part from the mailbox.
func (s *session) serveAttachment(ctx context.Context, w http.ResponseWriter, head bool, tok *attToken) error {
	st, err := s.settings(ctx)
	if err != nil {
		http.Error(w, "mailbox unavailable", http.StatusServiceUnavailable)
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	c, err := dialIMAP(ctx, st, s.trace("imap"), nil)
	if err != nil {
		http.Error(w, "mailbox unavailable", http.StatusBadGateway)
		return err
	}
	defer c.Close()
	started := false
	writer := func() io.Writer {
		if !started {
			started = true
			h := w.Header()
			ct := tok.Type
			if _, _, err := mime.ParseMediaType(ct); err != nil || ct == "" {
				ct = "application/octet-stream"
			}
			h.Set("Content-Type", ct)
			h.Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": tok.Name}))
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Content-Security-Policy", "default-src 'none'; sandbox")
			h.Set("Referrer-Policy", "no-referrer")
			h.Set("Cache-Control", "private, max-age=3600")
			w.WriteHeader(http.StatusOK)
		}
		if head {
			return io.Discard
		}
		return w
	}
	var found bool
	err = timed(ctx, c, 10*time.Minute, func() error {
		var err error
		found, err = fetchPart(ctx, c, tok.Folder, tok.Validity, tok.UID, tok.Part, tok.Encoding, writer)
		return err
	})
	if !started {
		if err != nil && !isIMAPNo(err) {
			http.Error(w, "mailbox unavailable", http.StatusBadGateway)
			return err
		}
		if !found {
			http.Error(w, "404 page not found", http.StatusNotFound)
			return nil
		}
		writer()
	}
	return err
}
