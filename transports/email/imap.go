package email

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/charset"
	"github.com/emersion/go-message/mail"
	"mellium.im/xmpp/stanza"

	"transportd/core"
)

// Timeouts of the IMAP side. Variables so that tests can shorten them.
var (
	// cmdTimeout bounds one IMAP command (imapclient waits for an answer
	// forever: a dead server would hang it).
	cmdTimeout = 60 * time.Second
	// fetchTimeout bounds fetching and parsing one mail.
	fetchTimeout = 3 * time.Minute
	// keepalive is how often IDLE is ended for a NOOP that proves the
	// connection alive (and restarts IDLE well before the 29 minutes of
	// RFC 2177).
	keepalive = 9 * time.Minute
)

// errAuth marks a login the server refused.
var errAuth = errors.New("email: login refused")

var wordDecoder = &mime.WordDecoder{CharsetReader: charset.Reader}

// dialIMAP connects and logs in. mailbox, if set, is told when the server
// announces a mailbox change (it must not block: imapclient calls it from
// its reader). Errors carry the stanza condition to show: not-authorized
// (wrapping errAuth) for a refused login, remote-server-not-found for a
// server that does not answer.
func dialIMAP(ctx context.Context, st *settings, trace io.Writer, mailbox func(*imapclient.UnilateralDataMailbox)) (*imapclient.Client, error) {
	conn, err := dialServer(ctx, "IMAP", st.IMAP, st.insecure(st.IMAP.Host))
	if err != nil {
		return nil, err
	}
	opts := &imapclient.Options{
		DebugWriter: trace,
		WordDecoder: wordDecoder,
		TLSConfig:   tlsConfig(st.IMAP.Host, st.insecure(st.IMAP.Host)),
	}
	if mailbox != nil {
		opts.UnilateralDataHandler = &imapclient.UnilateralDataHandler{Mailbox: mailbox}
	}
	var c *imapclient.Client
	done := make(chan error, 1)
	go func() {
		var err error
		if st.IMAP.Security == secSTARTTLS {
			c, err = imapclient.NewStartTLS(conn, opts)
		} else {
			c = imapclient.New(conn, opts)
			err = c.WaitGreeting()
		}
		done <- err
	}()
	t := time.NewTimer(dialTimeout)
	defer t.Stop()
	select {
	case err = <-done:
	case <-t.C:
		conn.Close()
		<-done
		return nil, core.NewError(stanza.RemoteServerTimeout, fmt.Sprintf("the IMAP server %s does not greet", st.IMAP.addr()))
	case <-ctx.Done():
		conn.Close()
		<-done
		return nil, core.Temporary(ctx.Err())
	}
	if err != nil {
		conn.Close()
		if isTLSError(err) {
			return nil, tlsError("IMAP", st.IMAP, err)
		}
		var ie *imap.Error
		if st.IMAP.Security == secSTARTTLS && errors.As(err, &ie) {
			// The server answered STARTTLS with NO or BAD: it does not
			// offer TLS, and the password is never sent in clear instead.
			return nil, core.WrapError(stanza.NotAcceptable, fmt.Sprintf("the IMAP server %s does not offer STARTTLS", st.IMAP.addr()), err)
		}
		return nil, core.WrapError(stanza.RemoteServerNotFound, fmt.Sprintf("the IMAP server %s does not answer as an IMAP server", st.IMAP.addr()), err)
	}
	if c.Caps().Has(imap.CapLoginDisabled) {
		c.Close()
		return nil, core.NewError(stanza.NotAcceptable, fmt.Sprintf("the IMAP server %s does not allow logging in on this connection: use TLS", st.IMAP.addr()))
	}
	err = timed(ctx, c, cmdTimeout, func() error { return c.Login(st.Login, st.Password).Wait() })
	if err != nil {
		c.Close()
		var ie *imap.Error
		if errors.As(err, &ie) && ie.Type == imap.StatusResponseTypeNo && ie.Code != imap.ResponseCodeUnavailable {
			return nil, core.WrapError(stanza.NotAuthorized, fmt.Sprintf("the IMAP server %s refused the login: %s", st.IMAP.addr(), oneLine(ie.Text, 200)), errAuth)
		}
		return nil, imapTransient("logging in", err)
	}
	return c, nil
}

// timed runs fn, closing the connection if it takes longer than d or ctx
// ends (which makes fn return).
func timed(ctx context.Context, c *imapclient.Client, d time.Duration, fn func() error) error {
	t := time.AfterFunc(d, func() { c.Close() })
	stop := context.AfterFunc(ctx, func() { c.Close() })
	err := fn()
	expired := !t.Stop()
	stop()
	if ctx.Err() != nil {
		return core.Temporary(ctx.Err())
	}
	if expired && err != nil {
		return fmt.Errorf("no answer within %v: %w", d, err)
	}
	return err
}

func imapTransient(what string, err error) error {
	var ce *core.Error
	if errors.As(err, &ce) {
		return err
	}
	return core.Temporary(fmt.Errorf("%s: %w", what, err))
}

// hasIdle reports whether the server has IDLE.
func hasIdle(c *imapclient.Client) bool {
	caps := c.Caps()
	return caps.Has(imap.CapIdle) || caps.Has(imap.CapIMAP4rev2)
}

// findSent returns the Sent folder: the one with the \Sent special use,
// else a usual name, else "".
func findSent(ctx context.Context, c *imapclient.Client) string {
	var list []*imap.ListData
	err := timed(ctx, c, cmdTimeout, func() error {
		var opts *imap.ListOptions
		if c.Caps().Has(imap.CapSpecialUse) {
			opts = &imap.ListOptions{ReturnSpecialUse: true}
		}
		var err error
		list, err = c.List("", "*", opts).Collect()
		return err
	})
	if err != nil {
		return ""
	}
	for _, l := range list {
		for _, a := range l.Attrs {
			if strings.EqualFold(string(a), string(imap.MailboxAttrSent)) {
				return l.Mailbox
			}
		}
	}
	for _, want := range []string{"Sent", "Sent Items", "Sent Messages", "INBOX.Sent", "INBOX/Sent"} {
		for _, l := range list {
			if strings.EqualFold(l.Mailbox, want) {
				return l.Mailbox
			}
		}
	}
	return ""
}

// searchMessageID returns whether folder holds a mail with that Message-ID
// (received in the last 30 days).
func searchMessageID(ctx context.Context, c *imapclient.Client, folder, id string) (bool, error) {
	var found bool
	err := timed(ctx, c, cmdTimeout, func() error {
		if _, err := c.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait(); err != nil {
			return err
		}
		data, err := c.UIDSearch(&imap.SearchCriteria{
			Since:  time.Now().Add(-30 * 24 * time.Hour),
			Header: []imap.SearchCriteriaHeaderField{{Key: "Message-ID", Value: "<" + id + ">"}},
		}, nil).Wait()
		if err != nil {
			return err
		}
		found = len(data.AllUIDs()) > 0
		return nil
	})
	return found, err
}

// appendMail stores a copy of a sent mail in folder, marked \Seen.
func appendMail(ctx context.Context, c *imapclient.Client, folder string, data []byte) error {
	return timed(ctx, c, cmdTimeout, func() error {
		cmd := c.Append(folder, int64(len(data)), &imap.AppendOptions{Flags: []imap.Flag{imap.FlagSeen}, Time: time.Now()})
		if _, err := cmd.Write(data); err != nil {
			cmd.Close()
			return err
		}
		if err := cmd.Close(); err != nil {
			return err
		}
		_, err := cmd.Wait()
		return err
	})
}

// markSeen sets \Seen on a mail of the selected folder.
func markSeen(ctx context.Context, c *imapclient.Client, uid imap.UID) error {
	return timed(ctx, c, cmdTimeout, func() error {
		return c.Store(imap.UIDSetNum(uid), &imap.StoreFlags{Op: imap.StoreFlagsAdd, Silent: true, Flags: []imap.Flag{imap.FlagSeen}}, nil).Close()
	})
}

// newUID is a mail found beyond the last one delivered.
type newUID struct {
	uid  imap.UID
	size int64
}

// newMail lists the mails of the selected folder with a UID above last, in
// UID order.
func newMail(ctx context.Context, c *imapclient.Client, last imap.UID) ([]newUID, error) {
	var out []newUID
	err := timed(ctx, c, cmdTimeout, func() error {
		var set imap.UIDSet
		set.AddRange(last+1, 0) // last+1:*
		msgs, err := c.Fetch(set, &imap.FetchOptions{UID: true, RFC822Size: true}).Collect()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			if m.UID > last { // "n:*" also matches the highest UID when n is beyond it
				out = append(out, newUID{uid: m.UID, size: m.RFC822Size})
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	sortUIDs(out)
	return out, nil
}

func sortUIDs(l []newUID) {
	for i := 1; i < len(l); i++ {
		for j := i; j > 0 && l[j].uid < l[j-1].uid; j-- {
			l[j], l[j-1] = l[j-1], l[j]
		}
	}
}

// highestUID returns the highest UID in the selected folder (0 if empty),
// for servers that send no UIDNEXT.
func highestUID(ctx context.Context, c *imapclient.Client) (imap.UID, error) {
	var max imap.UID
	err := timed(ctx, c, cmdTimeout, func() error {
		data, err := c.UIDSearch(&imap.SearchCriteria{}, nil).Wait()
		if err != nil {
			return err
		}
		for _, u := range data.AllUIDs() {
			max = imap.UID(maxU32(uint32(max), uint32(u)))
		}
		return nil
	})
	return max, err
}

func maxU32(a, b uint32) uint32 {
	if a > b {
		return a
	}
	return b
}

// unseenUIDs returns the UIDs of unseen mails up to last.
func unseenUIDs(ctx context.Context, c *imapclient.Client, last imap.UID) ([]imap.UID, error) {
	var out []imap.UID
	err := timed(ctx, c, cmdTimeout, func() error {
		data, err := c.UIDSearch(&imap.SearchCriteria{NotFlag: []imap.Flag{imap.FlagSeen}}, nil).Wait()
		if err != nil {
			return err
		}
		for _, u := range data.AllUIDs() {
			if u <= last {
				out = append(out, u)
			}
		}
		return nil
	})
	return out, err
}

// fetchMail fetches and parses one mail of the selected folder: whole when
// it is at most maxFullFetch bytes, else its header, structure and text
// parts only. It returns nil when the mail is gone (expunged meanwhile).
func fetchMail(ctx context.Context, c *imapclient.Client, uid imap.UID, size int64, lim limits) (*parsedMail, time.Time, error) {
	var pm *parsedMail
	var internal time.Time
	err := timed(ctx, c, fetchTimeout, func() error {
		if size > maxFullFetch {
			var err error
			pm, internal, err = fetchLarge(c, uid, size, lim)
			return err
		}
		cmd := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{
			UID: true, InternalDate: true,
			BodySection: []*imap.FetchItemBodySection{{Peek: true}},
		})
		defer cmd.Close()
		msg := cmd.Next()
		if msg == nil {
			return cmd.Close()
		}
		for {
			item := msg.Next()
			if item == nil {
				break
			}
			switch it := item.(type) {
			case imapclient.FetchItemDataInternalDate:
				internal = it.Time
			case imapclient.FetchItemDataBodySection:
				if it.Literal != nil {
					pm = parseMail(it.Literal, lim)
				}
			}
		}
		return cmd.Close()
	})
	return pm, internal, err
}

// fetchLarge reads a mail too big to fetch whole: the header, the
// structure, and at most MaxText*4 bytes of each text part shown.
func fetchLarge(c *imapclient.Client, uid imap.UID, size int64, lim limits) (*parsedMail, time.Time, error) {
	hdrSection := &imap.FetchItemBodySection{Specifier: imap.PartSpecifierHeader, Peek: true, Partial: &imap.SectionPartial{Offset: 0, Size: lim.MaxHeader}}
	msgs, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{
		UID: true, InternalDate: true,
		BodyStructure: &imap.FetchItemBodyStructure{Extended: true},
		BodySection:   []*imap.FetchItemBodySection{hdrSection},
	}).Collect()
	if err != nil || len(msgs) == 0 {
		return nil, time.Time{}, err
	}
	m := msgs[0]
	pm := &parsedMail{From: unknownSender}
	hdr := m.FindBodySection(hdrSection)
	if e, err := message.Read(bytes.NewReader(append(hdr, "\r\n\r\n"...))); e != nil {
		_ = err
		pm.header(mail.Header{Header: e.Header})
	}
	if m.BodyStructure == nil {
		pm.Incomplete = true
		pm.finish(lim)
		return pm, m.InternalDate, nil
	}
	// Texts shown: the plain parts, or the HTML ones where there is no
	// plain one; every other leaf is an attachment.
	type leaf struct {
		path []int
		bs   *imap.BodyStructureSinglePart
	}
	var leaves []leaf
	hasPlain := false
	m.BodyStructure.Walk(func(path []int, bs imap.BodyStructure) bool {
		if len(leaves) >= lim.MaxParts || len(path) > lim.MaxDepth {
			pm.Incomplete = true
			return false
		}
		if sp, ok := bs.(*imap.BodyStructureSinglePart); ok {
			leaves = append(leaves, leaf{append([]int(nil), path...), sp})
			if sp.MediaType() == "text/plain" && !isAttachment(sp) {
				hasPlain = true
			}
		}
		return true
	})
	var texts []string
	for _, l := range leaves {
		mt := l.bs.MediaType()
		isText := !isAttachment(l.bs) && (mt == "text/plain" || (mt == "text/html" && !hasPlain))
		if !isText {
			pm.Parts = append(pm.Parts, attachmentPart{
				Path: l.path, Name: attachmentName(l.bs.Filename(), mt, len(pm.Parts)+1),
				Type: mt, Encoding: strings.ToLower(l.bs.Encoding), Size: int64(l.bs.Size), Encoded: true,
			})
			continue
		}
		sec := &imap.FetchItemBodySection{Part: l.path, Peek: true, Partial: &imap.SectionPartial{Offset: 0, Size: int64(lim.MaxText) * 4}}
		parts, err := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
		if err != nil {
			return nil, time.Time{}, err
		}
		if len(parts) == 0 {
			continue
		}
		var h message.Header
		h.Set("Content-Type", mime.FormatMediaType(mt, l.bs.Params))
		h.Set("Content-Transfer-Encoding", l.bs.Encoding)
		e, _ := message.New(h, bytes.NewReader(parts[0].FindBodySection(sec)))
		if e == nil {
			continue
		}
		var t string
		var full bool
		if mt == "text/html" {
			t, full = htmlToText(e.Body, lim.MaxText)
		} else {
			t, full = readText(e.Body, lim.MaxText)
		}
		pm.Truncated = pm.Truncated || full || int64(l.bs.Size) > int64(lim.MaxText)*4
		texts = append(texts, t)
	}
	pm.Body = strings.Join(texts, "\n\n") + fmt.Sprintf("\n\n[a large mail (%.1f MB): only its text was fetched]", float64(size)/(1<<20))
	pm.finish(lim)
	return pm, m.InternalDate, nil
}

func isAttachment(bs *imap.BodyStructureSinglePart) bool {
	d := bs.Disposition()
	if d != nil && strings.EqualFold(d.Value, "attachment") {
		return true
	}
	return bs.Filename() != "" && (d == nil || !strings.EqualFold(d.Value, "inline"))
}

// fetchPart streams the decoded content of one MIME part of a mail to w.
// It returns false when the mail or the part is not there.
func fetchPart(ctx context.Context, c *imapclient.Client, folder string, uidValidity uint32, uid imap.UID, part []int, encoding string, w func() io.Writer) (bool, error) {
	sel, err := c.Select(folder, &imap.SelectOptions{ReadOnly: true}).Wait()
	if err != nil {
		return false, err
	}
	if sel.UIDValidity != uidValidity {
		return false, nil
	}
	sec := &imap.FetchItemBodySection{Part: part, Peek: true}
	cmd := c.Fetch(imap.UIDSetNum(uid), &imap.FetchOptions{UID: true, BodySection: []*imap.FetchItemBodySection{sec}})
	defer cmd.Close()
	msg := cmd.Next()
	if msg == nil {
		return false, cmd.Close()
	}
	found := false
	for {
		item := msg.Next()
		if item == nil {
			break
		}
		it, ok := item.(imapclient.FetchItemDataBodySection)
		if !ok || it.Literal == nil {
			continue
		}
		var h message.Header
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Transfer-Encoding", encoding)
		e, _ := message.New(h, it.Literal)
		if e == nil {
			continue
		}
		found = true
		if _, err := io.Copy(w(), e.Body); err != nil {
			return true, err
		}
	}
	return found, cmd.Close()
}
