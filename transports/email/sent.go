package email

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-message"
	"github.com/emersion/go-message/mail"

	"transportd/core"
)

// The Sent folder and the user's correspondents (with a core.ContactSink).
//
// Mail the user sends from another mail client lands in the Sent folder
// (SPECIAL-USE \Sent, else a usual name: findSent). The session watches it
// on its one IMAP connection, without a second IDLE: STATUS (UIDNEXT,
// UIDVALIDITY) on every turn of its loop (when the IDLE on the first
// watched folder wakes, at each keepalive, at each read marker) and at
// least every poll_interval. Only when UIDNEXT moved is Sent selected
// (read-only) and the new mails fetched, in UID order; each one the
// gateway did not send itself (its Message-IDs have a shape of their own:
// ownMessageID) goes to core with Sink.Sent, LegacyID "sent:UIDVALIDITY:UID"
// (core's outbox drops a replay), and "sentuid:<folder>" in the state store
// ("UIDVALIDITY lastUID") advances only after core committed it. A Sent
// folder seen for the first time, or rebuilt, starts at its UIDNEXT:
// nothing old is shown, nor a mail written more than maxSentAge ago (an
// import). Its contact is the first address of To, Cc, Bcc that is not
// the user's, its thread the one the same mail would have if it came in
// (thread.go), so the carbon lands in the conversation.
//
// Once per account (state "contacts"), the correspondents of the last
// harvestMails mails of Sent (To, Cc) and INBOX (From; mailing lists and
// automatic mail left out) become contacts, most recent first, at most
// harvestMax of them.

const (
	// harvestMails is how many of the latest mails of Sent and of INBOX
	// are looked at for correspondents.
	harvestMails = 50
	// harvestMax is the most contacts added from them.
	harvestMax = 30
	// harvestTries is how many connections try the harvest before the
	// session gives it up.
	harvestTries = 3
	harvestKey   = "contacts"
)

// sentKey is the state key of the Sent folder's last UID looked at.
func sentKey(folder string) string { return "sentuid:" + folder }

// sentLegacyID is the idempotency key of a mail of the Sent folder.
func sentLegacyID(uv uint32, uid imap.UID) string { return fmt.Sprintf("sent:%d:%d", uv, uid) }

// contactSink returns core's contact side of the sink, if it has one.
func (s *session) contactSink() (core.ContactSink, bool) {
	cs, ok := s.sink.(core.ContactSink)
	return cs, ok
}

// sentFolder returns the Sent folder to watch on this connection, "" for
// none (no contact sink, no such folder, or it is the folder IDLEd).
func (s *session) sentFolder(ctx context.Context, c *imapclient.Client, st *settings) string {
	if _, ok := s.contactSink(); !ok {
		return ""
	}
	name := findSent(ctx, c)
	if name == "" || name == st.Folders[0] {
		s.log.Debug("no Sent folder watched", "found", name)
		return ""
	}
	return name
}

func (s *session) loadSent(ctx context.Context, folder string) (uint32, imap.UID, bool, error) {
	return s.loadPos(ctx, sentKey(folder))
}

// statusSent returns the Sent folder's UIDVALIDITY and UIDNEXT (0 when the
// server gives none).
func statusSent(ctx context.Context, c *imapclient.Client, folder string) (*imap.StatusData, error) {
	var data *imap.StatusData
	err := timed(ctx, c, cmdTimeout, func() error {
		var err error
		data, err = c.Status(folder, &imap.StatusOptions{UIDNext: true, UIDValidity: true}).Wait()
		return err
	})
	return data, err
}

// checkSent shows the user the mails new in the Sent folder. It reports
// whether it selected another folder (the caller selects its own again).
// A folder the server refuses (gone, renamed) is left alone.
func (s *session) checkSent(ctx context.Context, c *imapclient.Client, st *settings, folder string) (bool, error) {
	data, err := statusSent(ctx, c, folder)
	if err != nil {
		if isIMAPNo(err) {
			s.log.Debug("Sent folder not checked", "folder", folder, "error", err)
			return false, nil
		}
		return false, imapTransient("checking "+folder, err)
	}
	uv, last, ok, err := s.loadSent(ctx, folder)
	if err != nil {
		return false, core.Temporary(err)
	}
	if ok && uv == data.UIDValidity && data.UIDNext != 0 && data.UIDNext <= last+1 {
		return false, nil // nothing new
	}
	if (!ok || uv != data.UIDValidity) && data.UIDNext != 0 {
		// First sight, or rebuilt: start at the end.
		if ok {
			s.log.Warn("Sent folder UIDVALIDITY changed: starting over at its end", "folder", folder, "old", uv, "new", data.UIDValidity)
		}
		return false, s.storeSent(ctx, folderState{name: folder, validity: data.UIDValidity}, data.UIDNext-1)
	}
	fs, err := s.examineFolder(ctx, c, folder)
	if err != nil {
		if isIMAPNo(err) {
			return true, nil
		}
		return true, err
	}
	if !ok || uv != fs.validity {
		if ok {
			s.log.Warn("Sent folder UIDVALIDITY changed: starting over at its end", "folder", folder, "old", uv, "new", fs.validity)
		}
		return true, s.storeSent(ctx, fs, fs.next-1)
	}
	cs, _ := s.contactSink()
	for {
		uids, err := newMail(ctx, c, last)
		if err != nil {
			return true, imapTransient("listing new mail in "+folder, err)
		}
		if len(uids) == 0 {
			return true, nil
		}
		if len(uids) > maxBatch {
			uids = uids[:maxBatch]
		}
		// The envelopes first: the gateway's own mails and old ones
		// filed late (an import) are passed over without fetching them.
		envs, err := envelopes(ctx, c, uids)
		if err != nil {
			return true, imapTransient("listing new mail in "+folder, err)
		}
		for _, u := range uids {
			show := true
			if e, ok := envs[u.uid]; ok {
				switch {
				case ownMessageID(st.Address, e.id):
					s.log.Debug("sent mail is the gateway's own", "uid", u.uid)
					show = false
				case time.Since(e.date) > maxSentAge && time.Since(e.internal) > maxSentAge:
					s.log.Debug("sent mail too old to show", "uid", u.uid, "date", e.date)
					show = false
				}
			}
			if show {
				if err := s.showSent(ctx, c, st, cs, fs, u); err != nil {
					return true, err
				}
			}
			if err := s.storeSent(ctx, fs, u.uid); err != nil {
				return true, err
			}
			last = u.uid
		}
	}
}

// maxSentAge: a mail filed in Sent that was written longer ago than this
// is not news (an import, a migration) and is not shown.
const maxSentAge = 7 * 24 * time.Hour

// envelope is what is looked at of a mail before fetching it.
type envelope struct {
	id             string // Message-ID, without brackets
	date, internal time.Time
}

// envelopes returns the Message-ID and dates of mails of the selected
// folder.
func envelopes(ctx context.Context, c *imapclient.Client, uids []newUID) (map[imap.UID]envelope, error) {
	var set imap.UIDSet
	for _, u := range uids {
		set.AddNum(u.uid)
	}
	out := map[imap.UID]envelope{}
	err := timed(ctx, c, cmdTimeout, func() error {
		msgs, err := c.Fetch(set, &imap.FetchOptions{UID: true, Envelope: true, InternalDate: true}).Collect()
		if err != nil {
			return err
		}
		for _, m := range msgs {
			e := envelope{internal: m.InternalDate}
			if m.Envelope != nil {
				e.id, e.date = m.Envelope.MessageID, m.Envelope.Date
			}
			out[m.UID] = e
		}
		return nil
	})
	return out, err
}

func (s *session) storeSent(ctx context.Context, fs folderState, uid imap.UID) error {
	if err := s.storePos(ctx, sentKey(fs.name), fs.validity, uid); err != nil {
		return core.Temporary(err)
	}
	return nil
}

// showSent hands one mail of the Sent folder to core as the user's own
// message; it returns once core committed it.
func (s *session) showSent(ctx context.Context, c *imapclient.Client, st *settings, cs core.ContactSink, fs folderState, u newUID) error {
	if u.size == 0 {
		u.size = 1
	}
	pm, internal, err := fetchMail(ctx, c, u.uid, u.size, defaultLimits)
	if err != nil {
		return imapTransient("fetching a sent mail", err)
	}
	if pm == nil {
		return nil // expunged meanwhile
	}
	if ownMessageID(st.Address, pm.MessageID) {
		s.log.Debug("sent mail is the gateway's own", "uid", u.uid)
		return nil
	}
	// The first recipient but the user (To, then Cc, then Bcc).
	var to correspondent
	for _, r := range pm.Recipients {
		if r.Address != st.Address {
			to = r
			break
		}
	}
	if to.Address == "" {
		s.log.Debug("sent mail without a recipient an XMPP contact can stand for", "uid", u.uid)
		return nil
	}
	thread, err := incomingThread(ctx, s.sink.Store(), pm)
	if err != nil {
		return core.Temporary(err)
	}
	m := &core.Message{
		Contact:  to.Address,
		Subject:  pm.Subject,
		Thread:   thread,
		Time:     mailTime(pm, internal),
		LegacyID: sentLegacyID(fs.validity, u.uid),
	}
	m.Body, m.Attachments = s.mailText(st, fs, u.uid, pm, "", nil)
	if err := cs.AddContact(ctx, to.Address, to.Name); err != nil {
		s.log.Warn("recording a contact", "error", err)
	}
	if err := cs.Sent(ctx, m); err != nil {
		return core.Temporary(fmt.Errorf("handing a sent mail to core: %w", err))
	}
	return nil
}

// ownMessageID reports whether id is a Message-ID the gateway gives the
// mails it sends for the account of address (messageID): "xmpp.", 24
// base32 or 32 hex digits, "@" and the address's domain. The copy the
// gateway appends to Sent, or the one the provider files there by itself,
// is not shown to the user again.
func ownMessageID(address, id string) bool {
	at := strings.LastIndexByte(id, '@')
	if at < 0 || !strings.EqualFold(id[at+1:], domainOf(address)) {
		return false
	}
	seed, ok := strings.CutPrefix(strings.ToLower(id[:at]), "xmpp.")
	if !ok {
		return false
	}
	alphabet := ""
	switch len(seed) {
	case 24:
		alphabet = "abcdefghijklmnopqrstuvwxyz234567"
	case 32:
		alphabet = "0123456789abcdef"
	default:
		return false
	}
	for i := 0; i < len(seed); i++ {
		if strings.IndexByte(alphabet, seed[i]) < 0 {
			return false
		}
	}
	return true
}

// examineFolder selects a folder read-only and returns its state.
func (s *session) examineFolder(ctx context.Context, c *imapclient.Client, name string) (folderState, error) {
	var data *imap.SelectData
	err := timed(ctx, c, cmdTimeout, func() error {
		var err error
		data, err = c.Select(name, &imap.SelectOptions{ReadOnly: true}).Wait()
		return err
	})
	if err != nil {
		if isIMAPNo(err) {
			return folderState{}, err
		}
		return folderState{}, imapTransient("examining "+name, err)
	}
	fs := folderState{name: name, validity: data.UIDValidity, next: data.UIDNext, count: data.NumMessages}
	if fs.next == 0 {
		max, err := highestUID(ctx, c)
		if err != nil {
			return fs, imapTransient("searching "+name, err)
		}
		fs.next = max + 1
	}
	return fs, nil
}

// harvest adds the user's recent correspondents as contacts, once per
// account. It reports whether it selected another folder. A failure is
// logged, and tried again on the next connections, harvestTries in all.
func (s *session) harvest(ctx context.Context, c *imapclient.Client, st *settings, sent string) (bool, error) {
	cs, ok := s.contactSink()
	if !ok {
		return false, nil
	}
	store := s.sink.Store()
	v, _, err := store.Get(ctx, harvestKey)
	if err != nil {
		return false, core.Temporary(err)
	}
	tries, _ := strconv.Atoi(strings.TrimPrefix(v, "tries "))
	if v == "done" || tries >= harvestTries {
		return false, nil
	}
	if err := store.Set(ctx, harvestKey, fmt.Sprintf("tries %d", tries+1)); err != nil {
		return false, core.Temporary(err)
	}
	var found []dated
	folders := []struct {
		name string
		sent bool
	}{{"INBOX", false}}
	if sent != "" {
		folders = append(folders, struct {
			name string
			sent bool
		}{sent, true})
	}
	for _, f := range folders {
		got, err := s.correspondents(ctx, c, st, f.name, f.sent)
		if err != nil {
			if isIMAPNo(err) {
				s.log.Debug("no correspondents from this folder", "folder", f.name, "error", err)
				continue
			}
			s.log.Info("looking for correspondents failed", "folder", f.name, "error", err)
			return true, err
		}
		found = append(found, got...)
	}
	list := rankCorrespondents(found, st.Address, harvestMax)
	for _, p := range list {
		if err := cs.AddContact(ctx, p.Address, p.Name); err != nil {
			return true, core.Temporary(fmt.Errorf("adding contacts: %w", err))
		}
	}
	s.log.Debug("recent correspondents added as contacts", "count", len(list))
	if err := store.Set(ctx, harvestKey, "done"); err != nil {
		return true, core.Temporary(err)
	}
	return true, nil
}

// dated is a correspondent met in a mail written at when.
type dated struct {
	correspondent
	when time.Time
}

// harvestFields are the header fields read for correspondents.
var harvestFields = []string{"From", "To", "Cc", "Date", "List-Id", "List-Unsubscribe", "Precedence", "Auto-Submitted"}

// correspondents returns the people in the latest harvestMails mails of a
// folder: the recipients of the user's mails in Sent, the senders of
// personal mail elsewhere.
func (s *session) correspondents(ctx context.Context, c *imapclient.Client, st *settings, folder string, sent bool) ([]dated, error) {
	fs, err := s.examineFolder(ctx, c, folder)
	if err != nil || fs.count == 0 {
		return nil, err
	}
	first := uint32(1)
	if fs.count > harvestMails {
		first = fs.count - harvestMails + 1
	}
	var seq imap.SeqSet
	seq.AddRange(first, fs.count)
	sec := &imap.FetchItemBodySection{
		Specifier: imap.PartSpecifierHeader, HeaderFields: harvestFields, Peek: true,
		Partial: &imap.SectionPartial{Offset: 0, Size: 64 << 10},
	}
	var msgs []*imapclient.FetchMessageBuffer
	err = timed(ctx, c, cmdTimeout, func() error {
		var err error
		msgs, err = c.Fetch(seq, &imap.FetchOptions{InternalDate: true, BodySection: []*imap.FetchItemBodySection{sec}}).Collect()
		return err
	})
	if err != nil {
		return nil, err
	}
	var out []dated
	for _, m := range msgs {
		raw := m.FindBodySection(sec)
		e, _ := message.Read(bytes.NewReader(append(bytes.TrimRight(raw, "\r\n"), "\r\n\r\n"...)))
		if e == nil {
			continue
		}
		h := mail.Header{Header: e.Header}
		when := m.InternalDate
		if d, err := h.Date(); err == nil && !d.IsZero() && d.Before(time.Now().Add(24*time.Hour)) {
			when = d
		}
		var people []correspondent
		if sent {
			people = recipients(h, "To", "Cc")
		} else if !bulk(h) {
			people = recipients(h, "From")
		}
		for _, p := range people {
			out = append(out, dated{p, when})
		}
	}
	return out, nil
}

// bulk reports whether a mail's header says it came from a list or a
// machine.
func bulk(h mail.Header) bool {
	if h.Get("List-Id") != "" || h.Get("List-Unsubscribe") != "" {
		return true
	}
	switch strings.ToLower(strings.TrimSpace(h.Get("Precedence"))) {
	case "bulk", "list", "junk":
		return true
	}
	as := strings.ToLower(strings.TrimSpace(h.Get("Auto-Submitted")))
	return as != "" && as != "no"
}

// machineAddress reports addresses nobody answers.
func machineAddress(addr string) bool {
	local, _, _ := strings.Cut(addr, "@")
	local = strings.NewReplacer("-", "", "_", "", ".", "").Replace(local)
	switch {
	case strings.HasPrefix(local, "noreply"), strings.HasPrefix(local, "donotreply"),
		local == "mailerdaemon", local == "postmaster", strings.HasPrefix(local, "bounce"):
		return true
	}
	return false
}

// rankCorrespondents orders correspondents most recent first, once each
// (with the most recent display name they had), without the user and
// machines, at most n.
func rankCorrespondents(found []dated, self string, n int) []correspondent {
	sort.SliceStable(found, func(i, j int) bool { return found[i].when.After(found[j].when) })
	idx := map[string]int{}
	var out []correspondent
	for _, d := range found {
		if d.Address == self || machineAddress(d.Address) {
			continue
		}
		if i, ok := idx[d.Address]; ok {
			if out[i].Name == "" {
				out[i].Name = d.Name
			}
			continue
		}
		if len(out) >= n {
			continue
		}
		idx[d.Address] = len(out)
		out = append(out, d.correspondent)
	}
	return out
}
