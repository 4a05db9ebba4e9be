package email

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"mellium.im/xmpp/jid"

	"transportd/core"
)

// Attachments uploaded to the user's XMPP server (attachments = "upload").
// Before a mail is handed to core, each attachment is fetched decoded from
// IMAP (on a connection of its own, so that a slow fetch never breaks the
// session's) into an unlinked temporary file, and put on the server's HTTP
// upload service (XEP-0363) through core's Uploader; the message carries
// the service's GET URL instead of the gateway link. A part larger than
// the service or upload_max_size takes keeps the gateway link, or says it
// is too large when the gateway has no public URL. All the uploads of one
// mail share upload_timeout; whatever fails or is left when it runs out
// (no service, a refused slot or PUT, IMAP trouble) keeps the gateway link
// and is logged: the mail is delivered either way.
//
// Order and crashes: upload, then Sink.Deliver (the outbox commit), then
// the stored UID. A crash after an upload and before the UID is stored
// fetches the mail again and uploads its attachments again; the outbox
// drops the second message (same LegacyID) if the first was committed, so
// the user gets one message, and the service keeps an orphaned copy until
// it expires it (mod_http_file_share: http_file_share_expires_after, a
// week by default).

// Upload options (operator defaults).
const (
	attLink   = "link"   // links on the gateway's HTTP listener (default)
	attUpload = "upload" // the XMPP server's HTTP upload service, links as fallback

	defaultUploadMax     = 25 << 20 // the common mail size limit: larger are rare
	defaultUploadTimeout = time.Minute
	// maxUploads bounds the mails of one domain whose attachments are
	// being uploaded at once (disk of the temporary files, IMAP logins).
	maxUploads = 4
)

// uploadOptions are the operator's upload settings, checked.
type uploadOptions struct {
	Upload  bool
	Service string        // "" : found in the domain's disco#items
	Max     int64         // bytes per attachment
	Timeout time.Duration // for all the uploads of one mail
}

// parseUploadOptions reads and checks the upload options of a domain's
// defaults; each error names its option.
func parseUploadOptions(d map[string]string) (uploadOptions, error) {
	o := uploadOptions{Max: defaultUploadMax, Timeout: defaultUploadTimeout}
	switch v := d[dAttachments]; v {
	case "", attLink:
	case attUpload:
		o.Upload = true
	default:
		return o, fmt.Errorf("%s must be %q or %q, not %q", dAttachments, attLink, attUpload, v)
	}
	if v := d[dUploadService]; v != "" {
		j, err := jid.Parse(v)
		if err != nil || j.Resourcepart() != "" {
			return o, fmt.Errorf("%s must be the JID of an HTTP upload service (upload.example.net), not %q", dUploadService, v)
		}
		o.Service = j.String()
	}
	if v := d[dUploadMaxSize]; v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return o, fmt.Errorf("%s must be a number of bytes (like %d), not %q", dUploadMaxSize, defaultUploadMax, v)
		}
		o.Max = n
	}
	if v := d[dUploadTimeout]; v != "" {
		t, err := time.ParseDuration(v)
		if err != nil || t < time.Second || t > 10*time.Minute {
			return o, fmt.Errorf("%s must be a duration from 1s to 10m (like \"1m\"), not %q", dUploadTimeout, v)
		}
		o.Timeout = t
	}
	return o, nil
}

// uploaded is what became of one attachment.
type uploaded struct {
	URL      string // its GET URL on the upload service; "": the gateway link
	Size     int64  // its decoded size, when uploaded
	TooLarge int64  // >0: larger than this limit, so not uploaded
}

// errPartTooLarge stops a fetch at the upload limit.
var errPartTooLarge = errors.New("attachment larger than the upload limit")

// uploadParts uploads the attachments of a mail of the selected folder fs
// (see above). It returns nil when uploading is off, else one entry per
// part.
func (s *session) uploadParts(ctx context.Context, st *settings, fs folderState, uid imap.UID, parts []attachmentPart) []uploaded {
	if len(parts) == 0 || (!st.Upload.Upload && st.UploadErr == nil) {
		return nil
	}
	if st.UploadErr != nil {
		s.log.Warn("attachments not uploaded, the options are wrong: gateway links instead", "error", st.UploadErr)
		return nil
	}
	up, ok := s.t.host.(core.Uploader)
	if !ok {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, st.Upload.Timeout)
	defer cancel()
	out := make([]uploaded, len(parts))
	select {
	case s.t.uploads <- struct{}{}:
		defer func() { <-s.t.uploads }()
	case <-ctx.Done():
		s.log.Warn("attachments not uploaded: other uploads took all of upload_timeout; gateway links instead", "uid", uid)
		return out
	}
	svc, err := up.UploadService(ctx, st.Upload.Service)
	if err != nil {
		s.log.Warn("attachments not uploaded: gateway links instead", "uid", uid, "error", err)
		return out
	}
	limit := st.Upload.Max
	if svc.MaxSize > 0 && svc.MaxSize < limit {
		limit = svc.MaxSize
	}
	var c *imapclient.Client
	defer func() {
		if c != nil {
			_ = timed(context.Background(), c, 5*time.Second, func() error { return c.Logout().Wait() })
			c.Close()
		}
	}()
	for i, p := range parts {
		if tooLarge(p, limit) {
			out[i].TooLarge = limit
			s.log.Info("attachment too large to upload", "uid", uid, "part", i+1, "size", p.Size, "limit", limit)
			continue
		}
		if ctx.Err() != nil {
			s.log.Warn("attachment not uploaded: upload_timeout reached; gateway link instead", "uid", uid, "part", i+1)
			continue
		}
		if c == nil {
			if c, err = dialIMAP(ctx, st, s.trace("imap"), nil); err != nil {
				c = nil
				s.log.Warn("attachments not uploaded: IMAP: gateway links instead", "uid", uid, "error", err)
				return out
			}
		}
		url, n, err := s.uploadPart(ctx, up, svc, c, fs, uid, p, limit)
		switch {
		case err == nil:
			out[i] = uploaded{URL: url, Size: n}
		case errors.Is(err, errPartTooLarge) || errors.Is(err, core.ErrUploadTooLarge):
			out[i].TooLarge = limit
			s.log.Info("attachment too large to upload", "uid", uid, "part", i+1, "limit", limit, "error", err)
		default:
			s.log.Warn("attachment not uploaded: gateway link instead", "uid", uid, "part", i+1, "error", err)
		}
		if err != nil && !errors.Is(err, core.ErrUploadTooLarge) {
			// The fetch may have been cut: the next part gets a fresh
			// connection.
			c.Close()
			c = nil
		}
	}
	return out
}

// uploadPart fetches one part into a temporary file, then uploads it;
// it returns the GET URL and the decoded size.
func (s *session) uploadPart(ctx context.Context, up core.Uploader, svc core.UploadService, c *imapclient.Client, fs folderState, uid imap.UID, p attachmentPart, limit int64) (string, int64, error) {
	f, err := os.CreateTemp("", "transportd-upload-*")
	if err != nil {
		return "", 0, err
	}
	// Unlinked at once: nothing is left on disk, even after a crash
	// (where the system allows removing an open file).
	_ = os.Remove(f.Name())
	defer f.Close()
	w := &capWriter{w: f, left: limit}
	var found bool
	d := time.Until(deadline(ctx))
	err = timed(ctx, c, d, func() error {
		var err error
		found, err = fetchPart(ctx, c, fs.name, fs.validity, uid, p.Path, p.Encoding, func() io.Writer { return w })
		return err
	})
	switch {
	case errors.Is(err, errPartTooLarge):
		return "", 0, err
	case err != nil:
		return "", 0, fmt.Errorf("fetching the part: %w", err)
	case !found:
		return "", 0, errors.New("the part is not in the mailbox any more")
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return "", 0, err
	}
	url, err := up.Upload(ctx, svc, core.UploadFile{Name: p.Name, Type: p.Type, Size: w.n}, f)
	return url, w.n, err
}

func deadline(ctx context.Context) time.Time {
	if d, ok := ctx.Deadline(); ok {
		return d
	}
	return time.Now().Add(defaultUploadTimeout)
}

// tooLarge reports whether a part is clearly larger than limit, so that
// it is not fetched at all. Its size is exact for mails parsed whole; for
// large ones BODYSTRUCTURE gives the encoded size, and base64's decoded
// size is estimated for 76-character lines (57 bytes per 78), with 2% to
// spare for other line lengths: near the limit the fetch decides (it
// stops at the limit).
func tooLarge(p attachmentPart, limit int64) bool {
	if p.Encoded && p.Encoding == "base64" {
		return p.Size/78*57 > limit+limit/50
	}
	return p.Size > limit
}

// capWriter writes up to left bytes, then fails with errPartTooLarge.
type capWriter struct {
	w    io.Writer
	left int64
	n    int64
}

func (c *capWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > c.left {
		return 0, errPartTooLarge
	}
	n, err := c.w.Write(p)
	c.left -= int64(n)
	c.n += int64(n)
	return n, err
}
