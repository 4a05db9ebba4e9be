package email

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"mellium.im/xmpp/stanza"

	"transportd/core"
)

// Reconnection backoff bounds. Variables so that tests can shorten them.
var (
	backoffMin = 1 * time.Second
	backoffMax = 5 * time.Minute
	// refusedRetry is how long a session waits before trying again a
	// server it refused (certificate, no TLS).
	refusedRetry = 15 * time.Minute
)

// maxBatch is the most mails delivered before IDLE is entered again (the
// rest follow right after).
const maxBatch = 50

// session is one account's mailbox. Its Run goroutine owns the IMAP
// connection and everything about it; Send and MarkRead only use their own
// short connections or hand work to Run through ops.
type session struct {
	t    *Transport
	a    *core.Account
	sink core.Sink
	log  *slog.Logger

	seq  uint64        // creation number (Transport.register)
	wake chan struct{} // cap 1: the server announced a change in the IDLEd folder
	ops  chan *imapOp  // work for Run's connection (read markers)
	key  []byte        // attachment link key, set by Run before it is registered

	// Set by Run before it is registered, then read-only: which mailbox
	// push notices (push.go) name.
	login, imapHost string
	pushAsked       bool // Run's: the push METADATA entry was looked at
}

// imapOp is work handed to Run's connection.
type imapOp struct {
	folder string
	uv     uint32
	uid    imap.UID
	done   chan error // cap 1
}

func newSession(t *Transport, a *core.Account, sink core.Sink) *session {
	return &session{t: t, a: a, sink: sink, log: sink.Logger(), wake: make(chan struct{}, 1), ops: make(chan *imapOp), seq: t.seq.Next()}
}

// settings types the account and finds servers left empty. A problem here
// will not go away by retrying.
func (s *session) settings(ctx context.Context) (*settings, error) {
	st, err := parseSettings(s.a.Values, s.a.Defaults)
	if err != nil {
		return nil, core.NewError(stanza.NotAcceptable, "the registration is not usable: "+err.Error()+"; register again")
	}
	if err := s.t.fillServers(ctx, st, nil); err != nil {
		return nil, err
	}
	return st, nil
}

func (s *session) trace(proto string) io.Writer {
	if s.a.Defaults[dTrace] != "true" {
		return nil
	}
	return traceWriter{log: s.log, proto: proto}
}

// Run serves the mailbox until ctx ends or the login is refused.
func (s *session) Run(ctx context.Context) {
	s.sink.State(core.StateConnecting, "connecting")
	var st *settings
	backoff := backoffMin
	for {
		var err error
		if st == nil {
			st, err = s.settings(ctx)
			if err == nil && s.key == nil {
				s.login, s.imapHost = st.Login, st.IMAP.Host
			}
		}
		if err == nil && s.key == nil {
			err = s.loadKey(ctx)
			if err == nil {
				s.t.register(s)
				defer s.t.unregister(s)
			}
		}
		start := time.Now()
		if err == nil {
			err = s.serve(ctx, st)
		}
		if ctx.Err() != nil {
			return
		}
		var ce *core.Error
		if errors.Is(err, errAuth) {
			// Trying the same password again would only count as more
			// failed logins (and can lock the account): the user
			// registers again with the right one.
			s.log.Info("mailbox refused the login", "error", err)
			s.sink.State(core.StateBadCredentials, userText(err))
			return
		}
		if errors.As(err, &ce) && ce.Condition == stanza.NotAcceptable && !errors.Is(err, core.ErrTemporary) {
			// A certificate that does not verify, or TLS no longer
			// offered: nothing was sent but the handshake, and the cause
			// is usually fixed on the server's side (a certificate
			// renewed), so the mailbox is tried again, rarely, with the
			// reason shown meanwhile.
			s.log.Info("mailbox refused; trying again later", "error", err, "in", refusedRetry)
			s.sink.State(core.StateBadCredentials, userText(err))
			t := time.NewTimer(refusedRetry)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
			continue
		}
		if time.Since(start) > 2*time.Minute {
			backoff = backoffMin
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		s.log.Info("mailbox connection lost; retrying", "error", err, "in", wait.Round(time.Millisecond))
		s.sink.State(core.StateTransientFail, userText(err))
		backoff = min(backoff*2, backoffMax)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// userText is what the user sees of an error.
func userText(err error) string {
	var ce *core.Error
	if errors.As(err, &ce) && ce.Text != "" {
		return ce.Text
	}
	if err == nil {
		return "disconnected"
	}
	return oneLine("connection lost: "+err.Error(), 300)
}

// onMailbox is imapclient's unilateral data handler: it runs on the
// client's reader, so it only pokes Run.
func (s *session) onMailbox(d *imapclient.UnilateralDataMailbox) {
	if d.NumMessages != nil {
		if h := testHookExists; h != nil {
			h()
		}
		select {
		case s.wake <- struct{}{}:
		default:
		}
	}
}

// testHookExists, if set, is called when the server announces new mail
// (the benchmark measures the gateway's part of the latency from there).
var testHookExists func()

// folderState is a folder's UIDVALIDITY and UIDNEXT as last selected.
type folderState struct {
	name     string
	validity uint32
	next     imap.UID
	count    uint32 // messages in it (set by examineFolder)
}

// serve runs one connection: log in, deliver what arrived meanwhile, then
// IDLE (or poll) until something happens, and again. The Sent folder and
// the folders beyond the first are looked at on the same connection
// (sent.go); the first folder is synced again after one of them was
// selected, so that nothing that arrived meanwhile waits for the next turn.
func (s *session) serve(ctx context.Context, st *settings) error {
	c, err := dialIMAP(ctx, st, s.trace("imap"), s.onMailbox)
	if err != nil {
		return err
	}
	defer c.Close()
	main, err := s.selectFolder(ctx, c, st.Folders[0])
	if err != nil {
		return err
	}
	s.sink.State(core.StateConnected, "")
	if !s.pushAsked {
		s.askPush(ctx, c, st)
		s.pushAsked = true
	}
	// The Sent folder is looked at first (STATUS; the first time, that
	// is where showing the mails filed there starts).
	sent := s.sentFolder(ctx, c, st)
	if sent != "" {
		if other, err := s.checkSent(ctx, c, st, sent); err != nil {
			return err
		} else if other {
			if main, err = s.selectFolder(ctx, c, st.Folders[0]); err != nil {
				return err
			}
		}
	}
	s.log.Debug("mailbox connected", "folder", main.name, "idle", hasIdle(c) && !st.NoIdle, "sent", sent)
	if err := s.syncFolder(ctx, c, st, main, true); err != nil {
		return err
	}
	if other, err := s.harvest(ctx, c, st, sent); err != nil {
		return err
	} else if other {
		if main, err = s.resync(ctx, c, st); err != nil {
			return err
		}
	}
	idle := hasIdle(c) && !st.NoIdle
	// Polling: the only way to see new mail without IDLE, and how the
	// Sent folder and the folders beyond the first are watched. An IDLE
	// on one folder, without Sent, needs none.
	var pollC <-chan time.Time
	if !idle || len(st.Folders) > 1 || sent != "" {
		poll := time.NewTicker(st.Poll)
		defer poll.Stop()
		pollC = poll.C
	}
	ka := time.NewTimer(st.Keepalive)
	defer ka.Stop()
	for {
		var ic *imapclient.IdleCommand
		if idle {
			if err := timed(ctx, c, cmdTimeout, func() error { var err error; ic, err = c.Idle(); return err }); err != nil {
				return imapTransient("starting IDLE", err)
			}
		}
		var op *imapOp
		polled, alive := false, false
		select {
		case <-ctx.Done():
		case <-c.Closed():
		case <-s.wake:
		case op = <-s.ops:
		case <-pollC:
			polled = true
		case <-ka.C:
			alive = true
			ka.Reset(st.Keepalive)
		}
		if ic != nil {
			err := timed(ctx, c, cmdTimeout, func() error {
				if err := ic.Close(); err != nil {
					return err
				}
				return ic.Wait()
			})
			if err != nil {
				if op != nil {
					op.done <- core.Temporary(err)
				}
				return imapTransient("ending IDLE", err)
			}
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		other := false // another folder was selected
		if op != nil {
			err := s.runOp(ctx, c, st, main, op)
			op.done <- err
			if err != nil && !isIMAPNo(err) {
				return err
			}
			other = op.folder != main.name
		}
		if alive || !idle {
			if err := timed(ctx, c, cmdTimeout, func() error { return c.Noop().Wait() }); err != nil {
				return imapTransient("keepalive", err)
			}
		}
		if other {
			if main, err = s.selectFolder(ctx, c, st.Folders[0]); err != nil {
				return err
			}
			other = false
		}
		if err := s.syncFolder(ctx, c, st, main, false); err != nil {
			return err
		}
		if sent != "" {
			sel, err := s.checkSent(ctx, c, st, sent)
			if err != nil {
				return err
			}
			other = other || sel
		}
		if polled && len(st.Folders) > 1 {
			if err := s.pollFolders(ctx, c, st); err != nil {
				return err
			}
			other = true
		}
		if other {
			if main, err = s.resync(ctx, c, st); err != nil {
				return err
			}
		}
	}
}

// resync selects the first folder again and delivers what arrived in it
// while another one was selected.
func (s *session) resync(ctx context.Context, c *imapclient.Client, st *settings) (folderState, error) {
	main, err := s.selectFolder(ctx, c, st.Folders[0])
	if err != nil {
		return main, err
	}
	return main, s.syncFolder(ctx, c, st, main, false)
}

func isIMAPNo(err error) bool {
	var ie *imap.Error
	return errors.As(err, &ie)
}

// selectFolder selects a folder and returns its state.
func (s *session) selectFolder(ctx context.Context, c *imapclient.Client, name string) (folderState, error) {
	var data *imap.SelectData
	err := timed(ctx, c, cmdTimeout, func() error {
		var err error
		data, err = c.Select(name, nil).Wait()
		return err
	})
	if err != nil {
		var ie *imap.Error
		if errors.As(err, &ie) {
			return folderState{}, core.Temporary(core.WrapError(stanza.ItemNotFound, fmt.Sprintf("the folder %q cannot be opened: %s", name, oneLine(ie.Text, 200)), err))
		}
		return folderState{}, imapTransient("selecting "+name, err)
	}
	fs := folderState{name: name, validity: data.UIDValidity, next: data.UIDNext}
	if fs.next == 0 {
		max, err := highestUID(ctx, c)
		if err != nil {
			return fs, imapTransient("searching "+name, err)
		}
		fs.next = max + 1
	}
	return fs, nil
}

// pollFolders checks the folders beyond the first with STATUS and delivers
// what is new in them.
func (s *session) pollFolders(ctx context.Context, c *imapclient.Client, st *settings) error {
	for _, name := range st.Folders[1:] {
		var data *imap.StatusData
		err := timed(ctx, c, cmdTimeout, func() error {
			var err error
			data, err = c.Status(name, &imap.StatusOptions{UIDNext: true, UIDValidity: true}).Wait()
			return err
		})
		if err != nil {
			if isIMAPNo(err) {
				s.log.Debug("folder not polled", "folder", name, "error", err)
				continue
			}
			return imapTransient("polling "+name, err)
		}
		uv, last, ok, err := s.loadUID(ctx, name)
		if err != nil {
			return err
		}
		if ok && uv == data.UIDValidity && data.UIDNext != 0 && data.UIDNext <= last+1 {
			continue // nothing new
		}
		fs, err := s.selectFolder(ctx, c, name)
		if err != nil {
			if isIMAPNo(err) {
				continue
			}
			return err
		}
		if err := s.syncFolder(ctx, c, st, fs, false); err != nil {
			return err
		}
	}
	return nil
}

// runOp does one piece of work handed to the connection.
func (s *session) runOp(ctx context.Context, c *imapclient.Client, st *settings, main folderState, op *imapOp) error {
	fs := main
	if op.folder != main.name {
		var err error
		if fs, err = s.selectFolder(ctx, c, op.folder); err != nil {
			return err
		}
	}
	if fs.validity != op.uv {
		return nil // the folder was rebuilt: the mail is not there any more
	}
	return markSeen(ctx, c, op.uid)
}

// uidKey is the state key of a folder's last delivered UID.
func uidKey(folder string) string { return "uid:" + folder }

// loadUID returns the stored UIDVALIDITY and last delivered UID of a folder.
func (s *session) loadUID(ctx context.Context, folder string) (uint32, imap.UID, bool, error) {
	return s.loadPos(ctx, uidKey(folder))
}

// loadPos reads a "UIDVALIDITY UID" state value.
func (s *session) loadPos(ctx context.Context, key string) (uint32, imap.UID, bool, error) {
	v, ok, err := s.sink.Store().Get(ctx, key)
	if err != nil || !ok {
		return 0, 0, false, err
	}
	a, b, _ := strings.Cut(v, " ")
	uv, err1 := strconv.ParseUint(a, 10, 32)
	uid, err2 := strconv.ParseUint(b, 10, 32)
	if err1 != nil || err2 != nil {
		return 0, 0, false, nil
	}
	return uint32(uv), imap.UID(uid), true, nil
}

func (s *session) storeUID(ctx context.Context, folder string, uv uint32, uid imap.UID) error {
	return s.storePos(ctx, uidKey(folder), uv, uid)
}

func (s *session) storePos(ctx context.Context, key string, uv uint32, uid imap.UID) error {
	return s.sink.Store().Set(ctx, key, fmt.Sprintf("%d %d", uv, uid))
}

// syncFolder delivers the mails of the selected folder that arrived since
// the last one delivered, one by one, recording each UID only after core
// committed its message. A folder seen for the first time, or whose
// UIDVALIDITY changed, starts at its current end: nothing old is delivered
// (but the latest InitialUnread unread mails on first registration).
func (s *session) syncFolder(ctx context.Context, c *imapclient.Client, st *settings, fs folderState, first bool) error {
	uv, last, ok, err := s.loadUID(ctx, fs.name)
	if err != nil {
		return core.Temporary(err)
	}
	if !ok || uv != fs.validity {
		end := fs.next - 1
		if ok {
			s.log.Warn("folder UIDVALIDITY changed: starting over at its end, old mail is not delivered again", "folder", fs.name, "old", uv, "new", fs.validity)
		}
		if !ok && st.InitialUnread > 0 && fs.name == st.Folders[0] {
			unseen, err := unseenUIDs(ctx, c, end)
			if err != nil {
				return imapTransient("searching unread mail", err)
			}
			if len(unseen) > st.InitialUnread {
				unseen = unseen[len(unseen)-st.InitialUnread:]
			}
			for _, u := range unseen {
				if err := s.deliverUID(ctx, c, st, fs, newUID{uid: u}); err != nil {
					return err
				}
			}
		}
		if err := s.storeUID(ctx, fs.name, fs.validity, end); err != nil {
			return core.Temporary(err)
		}
		last = end
	}
	for {
		uids, err := newMail(ctx, c, last)
		if err != nil {
			return imapTransient("listing new mail", err)
		}
		if len(uids) == 0 {
			return nil
		}
		if len(uids) > maxBatch {
			uids = uids[:maxBatch]
		}
		for _, u := range uids {
			if err := s.deliverUID(ctx, c, st, fs, u); err != nil {
				return err
			}
			if err := s.storeUID(ctx, fs.name, fs.validity, u.uid); err != nil {
				return core.Temporary(err)
			}
			last = u.uid
		}
	}
}

// legacyID is the idempotency key of an incoming mail:
// "UIDVALIDITY:UID" in INBOX, "UIDVALIDITY:UID:folder" elsewhere.
func legacyID(folder string, uv uint32, uid imap.UID) string {
	id := fmt.Sprintf("%d:%d", uv, uid)
	if !strings.EqualFold(folder, "INBOX") {
		id += ":" + folder
	}
	return id
}

// parseLegacyID is the reverse of legacyID.
func parseLegacyID(id string) (folder string, uv uint32, uid imap.UID, ok bool) {
	parts := strings.SplitN(id, ":", 3)
	if len(parts) < 2 {
		return "", 0, 0, false
	}
	a, err1 := strconv.ParseUint(parts[0], 10, 32)
	b, err2 := strconv.ParseUint(parts[1], 10, 32)
	if err1 != nil || err2 != nil || b == 0 {
		return "", 0, 0, false
	}
	folder = "INBOX"
	if len(parts) == 3 {
		folder = parts[2]
	}
	return folder, uint32(a), imap.UID(b), true
}

// deliverUID fetches one mail and hands it to core; it returns once core
// committed it.
func (s *session) deliverUID(ctx context.Context, c *imapclient.Client, st *settings, fs folderState, u newUID) error {
	if u.size == 0 {
		// (size unknown: the initial unread ones) fetch whole up to the cap
		u.size = 1
	}
	pm, internal, err := fetchMail(ctx, c, u.uid, u.size, defaultLimits)
	if err != nil {
		return imapTransient("fetching mail", err)
	}
	if pm == nil {
		return nil // expunged meanwhile
	}
	up := s.uploadParts(ctx, st, fs, u.uid, pm.Parts)
	m, err := s.toMessage(ctx, st, fs, u.uid, pm, internal, up)
	if err != nil {
		return core.Temporary(err)
	}
	if err := s.sink.Deliver(ctx, m); err != nil {
		return core.Temporary(fmt.Errorf("delivering: %w", err))
	}
	return nil
}

// toMessage turns a parsed mail into the message for the user; up (from
// uploadParts, may be nil) says which attachments were uploaded.
func (s *session) toMessage(ctx context.Context, st *settings, fs folderState, uid imap.UID, pm *parsedMail, internal time.Time, up []uploaded) (*core.Message, error) {
	thread, err := incomingThread(ctx, s.sink.Store(), pm)
	if err != nil {
		return nil, err
	}
	m := &core.Message{
		Contact:  pm.From,
		Nick:     pm.Nick,
		Subject:  pm.Subject,
		Thread:   thread,
		Time:     mailTime(pm, internal),
		LegacyID: legacyID(fs.name, fs.validity, uid),
		Normal:   st.Normal,
	}
	prefix := ""
	if !strings.EqualFold(fs.name, "INBOX") {
		prefix = "[" + fs.name + "]\n"
	}
	m.Body, m.Attachments = s.mailText(st, fs, uid, pm, prefix, up)
	return m, nil
}

// mailTime is when a mail was written: its Date, else (missing, or more
// than a day ahead) when the server got it, else now.
func mailTime(pm *parsedMail, internal time.Time) time.Time {
	when := pm.Date
	if when.IsZero() || when.After(time.Now().Add(24*time.Hour)) {
		when = internal
	}
	if when.IsZero() {
		when = time.Now()
	}
	return when
}

// mailText is the text shown for a mail: its body after prefix, then a
// line (with a link) per attachment; never empty. up, when not nil, has
// an entry per attachment: the uploaded file's URL replaces the gateway
// link.
func (s *session) mailText(st *settings, fs folderState, uid imap.UID, pm *parsedMail, prefix string, up []uploaded) (string, []core.Attachment) {
	body := prefix + pm.Body
	var atts []core.Attachment
	var lines []string
	for i, p := range pm.Parts {
		var u uploaded
		if i < len(up) {
			u = up[i]
		}
		url := u.URL
		if url == "" {
			url = s.t.attachmentURL(s, st, fs, uid, p)
		}
		size := p.Size
		if u.Size > 0 {
			size = u.Size
		}
		atts = append(atts, core.Attachment{Name: p.Name, Type: p.Type, Size: size, URL: url})
		line := fmt.Sprintf("📎 %s (%s, %s)", p.Name, p.Type, humanSize(size))
		switch {
		case url != "":
			line += ": " + url
		case u.TooLarge > 0:
			line += fmt.Sprintf(": too large to upload here (the limit is %s)", humanSize(u.TooLarge))
		}
		lines = append(lines, line)
	}
	if len(lines) > 0 {
		body = strings.TrimSpace(body + "\n\n" + strings.Join(lines, "\n"))
	}
	if strings.TrimSpace(body) == "" {
		body = "[no text]"
	}
	return body, atts
}

func humanSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.0f KB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}

// Send mails a message from the user: see doc.go for the Message-ID and
// the resend check.
func (s *session) Send(ctx context.Context, m *core.Message) (string, error) {
	st, err := parseSettings(s.a.Values, s.a.Defaults)
	if err != nil {
		return "", core.NewError(stanza.NotAcceptable, "the registration is not usable: "+err.Error())
	}
	if err := s.t.fillServers(ctx, st, nil); err != nil {
		return "", core.Temporary(err)
	}
	to := strings.ToLower(strings.TrimSpace(m.Contact))
	if !validAddress(to) {
		return "", core.NewError(stanza.JIDMalformed, "not an e-mail address that can be written to")
	}
	store := s.sink.Store()
	var info *threadInfo
	if m.Thread != "" {
		if info, err = getThread(ctx, store, m.Thread); err != nil {
			return "", core.Temporary(err)
		}
	}
	inReplyTo, refs, reSubject := outgoingThread(info)
	subject := oneLine(m.Subject, 900)
	switch {
	case subject != "":
	case reSubject != "":
		subject = reSubject
	default:
		subject = st.DefaultSubject
	}
	body := m.Body
	if st.Signature != "" {
		body = strings.TrimRight(body, "\r\n") + "\n\n-- \n" + st.Signature
	}
	accountKey := strconv.FormatInt(s.a.ID, 10) + ":" + st.Address
	id := messageID(accountKey, m.XMPPID, m.UserResource, to, subject, body, randomHex)
	data, err := compose(&outgoing{
		From: st.Address, To: to, Subject: subject, MessageID: id,
		InReplyTo: inReplyTo, References: refs, Body: body, Date: time.Now(),
	})
	if err != nil {
		return "", core.NewError(stanza.BadRequest, "the message cannot be written as a mail safely")
	}

	// The Sent folder first: a mail with this Message-ID there was sent
	// before a crash and is not sent again.
	var ic *imapclient.Client
	sent := ""
	if st.SaveSent || m.XMPPID != "" {
		ic, err = dialIMAP(ctx, st, s.trace("imap"), nil)
		if err != nil {
			s.log.Warn("IMAP unavailable for the Sent folder", "error", err)
			ic = nil
		} else {
			defer func() {
				_ = timed(context.Background(), ic, 5*time.Second, func() error { return ic.Logout().Wait() })
				ic.Close()
			}()
			sent = findSent(ctx, ic)
		}
	}
	if ic != nil && sent != "" && m.XMPPID != "" {
		if found, err := searchMessageID(ctx, ic, sent, id); err == nil && found {
			s.log.Info("mail already in Sent: not sending it again", "message_id", id)
			return "<" + id + ">", s.recordSent(ctx, m.Thread, id, inReplyTo, refs, subject)
		}
	}

	sc, err := dialSMTP(ctx, st, s.localName(), s.trace("smtp"))
	if err != nil {
		var ce *core.Error
		if errors.As(err, &ce) && ce.Condition == stanza.RemoteServerNotFound {
			return "", core.Temporary(err)
		}
		return "", err
	}
	err = sc.send(st.Address, to, data)
	sc.close()
	if err != nil {
		s.log.Info("mail refused", "error", err)
		return "", err
	}
	if err := s.recordSent(ctx, m.Thread, id, inReplyTo, refs, subject); err != nil {
		s.log.Warn("thread state not saved", "error", err)
	}
	if ic != nil && sent != "" && st.SaveSent {
		if err := appendMail(ctx, ic, sent, data); err != nil {
			s.log.Warn("copy to Sent failed", "folder", sent, "error", err)
		}
	}
	return "<" + id + ">", nil
}

func (s *session) recordSent(ctx context.Context, thread, id, inReplyTo string, refs []string, subject string) error {
	if inReplyTo != "" && len(refs) == 0 {
		refs = []string{inReplyTo}
	}
	return recordSent(ctx, s.sink.Store(), thread, id, refs, subject)
}

// localName is the name the gateway gives in EHLO.
func (s *session) localName() string {
	if s.t.host != nil {
		return s.t.host.Domain()
	}
	return "localhost"
}

func randomHex() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// MarkRead sets \Seen on the mail a displayed marker or receipt of the
// user is about (legacyID as delivered); core calls it (core.Marker). The
// STORE runs on Run's connection, between two IDLEs.
func (s *session) MarkRead(ctx context.Context, contact, legacyID string) error {
	folder, uv, uid, ok := parseLegacyID(legacyID)
	if !ok {
		return nil // not a mail of ours (a Message-ID of a sent one)
	}
	op := &imapOp{folder: folder, uv: uv, uid: uid, done: make(chan error, 1)}
	select {
	case s.ops <- op:
	case <-ctx.Done():
		return core.Temporary(ctx.Err())
	}
	select {
	case err := <-op.done:
		return err
	case <-ctx.Done():
		return core.Temporary(ctx.Err())
	}
}

// traceWriter is the wire trace: what goes over IMAP and SMTP, logged at
// debug level. It contains the credentials (LOGIN, AUTH PLAIN): the
// operator turns it on with trace = "true" for debugging only.
type traceWriter struct {
	log   *slog.Logger
	proto string
}

func (w traceWriter) Write(p []byte) (int, error) {
	w.log.Debug("wire", "proto", w.proto, "data", string(p))
	return len(p), nil
}
