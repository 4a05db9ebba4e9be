package core

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/disco"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/upload"
)

// HTTP File Upload (XEP-0363) through the XMPP server the component is
// attached to: a transport that has a file for the user (an e-mail
// attachment) puts it on the server's upload service, so the link works in
// the user's clients wherever they are, without a public URL for the
// gateway.
//
// The slot is requested by the component's own JID (mod_http_file_share
// accepts any host of the same Prosody by default; with
// http_file_share_access set, the component's JID must be listed). The
// service's per-uploader quotas therefore apply to the whole component,
// not per user.
//
// The payload types (request, slot, the PUT request with only the headers
// XEP-0363 allows) are mellium's upload package; its GetSlot needs an
// xmpp.Session, which core does not use for requests (sendIQ does), so the
// IQ round trip is core's.

// UploadService is an HTTP upload service of the XMPP server.
type UploadService struct {
	JID string
	// MaxSize is the largest file the service takes (its max-file-size);
	// 0 when it states no limit.
	MaxSize int64
}

// UploadFile describes a file to upload.
type UploadFile struct {
	Name string // file name, without "/"
	Type string // media type; "" or an invalid one is sent as application/octet-stream
	Size int64  // exact size in bytes of what the body yields
}

// Uploader is implemented by the Host core hands to Starter transports.
type Uploader interface {
	// UploadService returns the service at the JID given (the operator's
	// choice) or, when jid is "", the first item of the domain's server
	// (disco#items) that offers urn:xmpp:http:upload:0. Answers, and the
	// absence of a service, are remembered for a few minutes. It fails with
	// ErrNoUploadService when there is none.
	UploadService(ctx context.Context, jid string) (UploadService, error)
	// Upload requests a slot for f from svc, PUTs body (exactly f.Size
	// bytes) with the slot's headers and returns the URL to GET the file
	// from. ctx bounds the whole exchange. A file larger than the service
	// takes fails with ErrUploadTooLarge, before anything is sent when its
	// limit is known.
	Upload(ctx context.Context, svc UploadService, f UploadFile, body io.Reader) (string, error)
}

var (
	// ErrNoUploadService: the server offers no HTTP upload service, or the
	// configured JID is not one.
	ErrNoUploadService = errors.New("no HTTP upload service")
	// ErrUploadTooLarge: the file is larger than the service takes.
	ErrUploadTooLarge = errors.New("file too large for the HTTP upload service")
)

const (
	uploadFound  = 10 * time.Minute // how long a found service is remembered
	uploadAbsent = time.Minute      // how long "no service" is remembered
)

// uploadCache remembers what UploadService found, per JID asked for.
type uploadCache struct {
	mu sync.Mutex
	m  map[string]uploadEntry
}

type uploadEntry struct {
	svc UploadService
	err error
	at  time.Time
}

// uploadClient PUTs files. It follows no redirect: the slot names the one
// URL the service expects the file at. Time is bounded by the caller's
// context.
var uploadClient = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

var _ Uploader = host{}

func (h host) UploadService(ctx context.Context, j string) (UploadService, error) {
	return h.c.uploadService(ctx, j)
}

func (h host) Upload(ctx context.Context, svc UploadService, f UploadFile, body io.Reader) (string, error) {
	get, err := h.c.upload(ctx, svc, f, body)
	result := "ok"
	switch {
	case errors.Is(err, ErrUploadTooLarge):
		result = "too_large"
	case err != nil:
		result = "failed"
	}
	h.c.g.metrics.uploads.WithLabelValues(h.c.info.Name, result).Inc()
	return get, err
}

func (c *component) uploadService(ctx context.Context, j string) (UploadService, error) {
	if j != "" {
		p, err := jid.Parse(j)
		if err != nil {
			return UploadService{}, fmt.Errorf("%w: %q is not a JID: %v", ErrNoUploadService, j, err)
		}
		j = p.String()
	}
	c.uploads.mu.Lock()
	e, ok := c.uploads.m[j]
	c.uploads.mu.Unlock()
	if ok && ((e.err == nil && time.Since(e.at) < uploadFound) || (e.err != nil && time.Since(e.at) < uploadAbsent)) {
		return e.svc, e.err
	}
	var svc UploadService
	var err error
	if j == "" {
		svc, err = c.findUpload(ctx, c.dom().Name)
	} else {
		svc, err = c.uploadInfo(ctx, j)
	}
	if err != nil && !errors.Is(err, ErrNoUploadService) {
		// No answer (link down, timeout): says nothing about the server,
		// so not remembered.
		return svc, err
	}
	c.uploads.mu.Lock()
	if c.uploads.m == nil {
		c.uploads.m = map[string]uploadEntry{}
	}
	c.uploads.m[j] = uploadEntry{svc: svc, err: err, at: time.Now()}
	c.uploads.mu.Unlock()
	return svc, err
}

// askIQ is sendIQ whose error says whether the entity answered: an error
// answer wraps ErrNoUploadService (a definite "no"), no answer does not.
func (c *component) askIQ(ctx context.Context, iq *Element) (*Element, error) {
	to := iq.Get("to")
	res, err := c.sendIQ(ctx, iq)
	switch {
	case err == nil:
		return res, nil
	case res != nil:
		return nil, fmt.Errorf("%w: %s answered %v", ErrNoUploadService, to, iqError(res, err))
	}
	return nil, fmt.Errorf("asking %s: %w", to, err)
}

// findUpload looks for an HTTP upload service among the items of a server.
func (c *component) findUpload(ctx context.Context, host string) (UploadService, error) {
	iq := c.stanza("iq", "", "", host, "get")
	iq.Add(NewElement(disco.NSItems, "query"))
	res, err := c.askIQ(ctx, iq)
	if err != nil {
		return UploadService{}, err
	}
	items := res.Child(disco.NSItems, "query")
	if items == nil {
		return UploadService{}, fmt.Errorf("%w: %s answered disco#items without a query", ErrNoUploadService, host)
	}
	var lastErr error
	for _, it := range items.Children {
		j := it.Get("jid")
		if j == "" || j == c.jid.String() || it.Get("node") != "" {
			continue
		}
		svc, err := c.uploadInfo(ctx, j)
		if err == nil {
			return svc, nil
		}
		if !errors.Is(err, ErrNoUploadService) {
			lastErr = err // unanswered: maybe it was the one
		}
		if ctx.Err() != nil {
			return UploadService{}, ctx.Err()
		}
	}
	if lastErr != nil {
		return UploadService{}, lastErr
	}
	return UploadService{}, fmt.Errorf("%w among the items of %s", ErrNoUploadService, host)
}

// uploadInfo asks j whether it is an upload service, and its size limit.
func (c *component) uploadInfo(ctx context.Context, j string) (UploadService, error) {
	q := c.stanza("iq", "", "", j, "get")
	q.Add(NewElement(disco.NSInfo, "query"))
	res, err := c.askIQ(ctx, q)
	if err != nil {
		return UploadService{}, err
	}
	var info disco.Info
	if q := res.Child(disco.NSInfo, "query"); q == nil || q.Decode(&info) != nil {
		return UploadService{}, fmt.Errorf("%w: %s: unreadable disco#info", ErrNoUploadService, j)
	}
	found := false
	for _, f := range info.Features {
		found = found || f.Var == upload.NS
	}
	if !found {
		return UploadService{}, fmt.Errorf("%w: %s does not offer %s", ErrNoUploadService, j, upload.NS)
	}
	svc := UploadService{JID: j}
	for _, f := range info.Form {
		if t, _ := f.Raw("FORM_TYPE"); len(t) != 1 || t[0] != upload.NS {
			continue
		}
		if v, ok := f.Raw("max-file-size"); ok && len(v) == 1 {
			if n, err := strconv.ParseInt(strings.TrimSpace(v[0]), 10, 64); err == nil && n > 0 {
				svc.MaxSize = n
			}
		}
	}
	return svc, nil
}

func (c *component) upload(ctx context.Context, svc UploadService, f UploadFile, body io.Reader) (string, error) {
	if f.Size < 0 || f.Name == "" || strings.ContainsAny(f.Name, "/\x00") {
		return "", fmt.Errorf("upload: invalid file (name %q, size %d)", f.Name, f.Size)
	}
	if svc.MaxSize > 0 && f.Size > svc.MaxSize {
		return "", fmt.Errorf("%w: %d bytes, %s takes %d", ErrUploadTooLarge, f.Size, svc.JID, svc.MaxSize)
	}
	ct := f.Type
	if _, _, err := mime.ParseMediaType(ct); err != nil || ct == "" {
		ct = "application/octet-stream"
	}
	if f.Size > int64(^uint(0)>>1) {
		return "", fmt.Errorf("%w: %d bytes", ErrUploadTooLarge, f.Size)
	}
	req, err := ElementFromTokens(upload.File{Name: f.Name, Size: int(f.Size), Type: ct}.TokenReader())
	if err != nil {
		return "", err
	}
	iq := c.stanza("iq", "", "", svc.JID, "get")
	iq.Add(req)
	res, err := c.sendIQ(ctx, iq)
	if err != nil {
		if res != nil && res.Child("", "error").Child(upload.NS, "file-too-large") != nil {
			return "", fmt.Errorf("%w: %s: %v", ErrUploadTooLarge, svc.JID, iqError(res, err))
		}
		return "", fmt.Errorf("upload slot refused by %s: %v", svc.JID, iqError(res, err))
	}
	var slot upload.Slot
	if el := res.Child(upload.NS, "slot"); el == nil || el.Decode(&slot) != nil {
		return "", fmt.Errorf("upload: %s answered without a readable slot", svc.JID)
	}
	if !webURL(slot.PutURL) || !webURL(slot.GetURL) {
		return "", fmt.Errorf("upload: %s gave a slot without http(s) URLs", svc.JID)
	}
	put, err := slot.Put(ctx, body)
	if err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	put.ContentLength = f.Size
	if f.Size == 0 {
		put.Body = http.NoBody
	}
	put.Header.Set("Content-Type", ct)
	resp, err := uploadClient.Do(put)
	if err != nil {
		// The error names the PUT URL: some services carry their
		// authorisation in it, so it stays out of the message.
		if ctx.Err() != nil {
			return "", fmt.Errorf("upload to %s: %w", svc.JID, ctx.Err())
		}
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("upload to %s failed: %v", svc.JID, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusRequestEntityTooLarge:
		return "", fmt.Errorf("%w: %s answered the PUT with %s", ErrUploadTooLarge, svc.JID, resp.Status)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return "", fmt.Errorf("upload to %s refused: HTTP %s", svc.JID, resp.Status)
	}
	return slot.GetURL.String(), nil
}

func webURL(u *url.URL) bool {
	return u != nil && (u.Scheme == "https" || u.Scheme == "http") && u.Host != ""
}

// iqError describes the error answer res (or err when there is none) for
// logs: condition and text, not the whole stanza.
func iqError(res *Element, err error) error {
	e := res.Child("", "error")
	if e == nil {
		return err
	}
	cond := ""
	for _, ch := range e.Children {
		if ch.Name.Space == stanza.NSError && ch.Name.Local != "text" {
			cond = ch.Name.Local
		}
	}
	if t := e.ChildText(stanza.NSError, "text"); t != "" {
		return fmt.Errorf("%s (%s)", cond, t)
	}
	return errors.New(cond)
}
