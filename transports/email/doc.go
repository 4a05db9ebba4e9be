// Package email is the e-mail transport: a user registers a mailbox (IMAP
// to read it, SMTP submission to answer from it) and then reads and
// answers mail from any XMPP client. The sender jane@example.org is the
// contact jane\40example.org@email.<domain> (jane%example.org is accepted
// too).
//
// Incoming mail. One goroutine per account (session.Run) owns one IMAP
// connection: it logs in, selects the first watched folder (INBOX by
// default), delivers what arrived since the last mail delivered, and waits
// in IDLE (polling every poll_interval where the server has no IDLE).
// imapclient's unilateral-data handler only pokes a channel. Every
// keepalive (9 minutes) IDLE is ended for a NOOP, which both restarts IDLE
// well before RFC 2177's 29 minutes and proves the socket alive; every
// command is bounded by a timeout that closes the connection. Other
// watched folders are checked with STATUS every poll_interval; after one
// of them was selected, the first folder is synced again. Connection
// failures retry with jittered exponential backoff (1 s to 5 min) and show
// as a transient failure; a refused login shows as bad credentials and
// ends Run. A server refused for its TLS (a certificate that does not
// verify, STARTTLS not offered) shows as bad credentials too, with the
// reason, and is tried again every 15 minutes without a login (a renewed
// certificate is picked up without registering again).
//
// How soon new mail shows (push.go). Dovecot tells a client in IDLE of
// new mail only NOTIFY_DELAY_MSECS (500 ms, fixed at compile time in
// src/lib-storage/mailbox-watch.c) after its inotify watch fired, to batch
// changes; so with IDLE alone a mail reaches the user ~510 ms after
// Dovecot stored it (the gateway's own part, from "* n EXISTS" to the
// client, is ~4 ms). Polling faster would cost every mailbox a command
// per interval. Where the IMAP server is the operator's own Dovecot, its
// push_notification plugin (OX driver) can call the gateway instead: the
// operator sets push_secret_file (or push_secret_env) and push_hosts (the
// IMAP host names of that Dovecot), and points the driver at
// http://USER:SECRET@<listener>/email/<domain>/push. A session on one of
// those hosts then sets the METADATA entry
// /private/vendor/vendor.dovecot/http-notify to "user=<login>" (once per
// session; not where another application set it; servers without
// METADATA are logged and left to IDLE), and Dovecot PUTs a JSON notice
// when mail is delivered to that INBOX. The endpoint takes PUT or POST
// with the secret as HTTP Basic password or Bearer token (else 405 or
// 401), reads at most 64 KiB of JSON (413, 400) and uses only its "user":
// the sessions whose IMAP login that is are woken (404 when none), which
// end IDLE and look for new mail at once. Measured on loopback
// (BenchmarkMailToXMPPLMTP and BenchmarkMailToXMPPLMTPPush, 200 mails): p50
// 510 ms / p99 523 ms with IDLE alone, 10 ms / 19 ms with push; through
// OpenSMTPD (BenchmarkMailToXMPP, ...Push) 511 / 516 ms and 16 / 25 ms. A
// mail the notice missed (gateway down, notice refused) still comes
// through IDLE. The entry stays in the mailbox after unregistering; notices
// for it are then answered 404, which Dovecot logs.
//
// Exactly once. Per folder, the state store keeps "UIDVALIDITY lastUID".
// Mails above lastUID are fetched one at a time in UID order, handed to
// core with LegacyID "UIDVALIDITY:UID" (plus ":folder" outside INBOX), and
// lastUID is advanced only after Sink.Deliver returned (core committed the
// message). A crash in between delivers the mail again with the same
// LegacyID, which core's outbox drops. A folder seen for the first time
// starts at its UIDNEXT (only new mail; initial_unread asks for the latest
// unread ones); a changed UIDVALIDITY starts over at the new UIDNEXT and
// delivers nothing old.
//
// Mail to text. parseMail streams the message through go-message within
// caps (limits): 10 MB fetched whole (bigger: header, BODYSTRUCTURE and
// text parts only), a 256 KiB header, MIME depth 20 and 100 parts, 64 KiB
// of text forwarded then "[truncated]", and a wall-clock bound. The text
// is the text/plain part (format=flowed undone), else the HTML one turned
// into text (html.go: no markup, no remote images, links as "text (URL)",
// XEP-0393 styling). It never panics, whatever the input.
//
// Threads (thread.go): an incoming mail's XMPP thread is a hash of its
// thread's root Message-ID (first of References, else In-Reply-To, else
// its own), so a conversation stays one thread; an answer sent in a thread
// gets In-Reply-To, References and "Re: subject" from the thread's last
// mail, and a reply to a mail started in a client's own thread comes back
// in that thread.
//
// Attachments (attach.go) are links on the gateway's HTTP listener, sealed
// with an HMAC and expiring, that fetch the part from IMAP on demand: no
// copy is kept. With attachments = "upload" (upload.go), each attachment
// is fetched and put on the XMPP server's HTTP upload service (XEP-0363,
// through core's Uploader) before the mail is handed to core, and the
// message carries that URL; parts too large for it, and any failure, keep
// the gateway link (logged), within upload_timeout per mail; mails shown
// from the Sent folder keep gateway links. A crash
// between the upload and the stored UID uploads again (the outbox still
// delivers one message) and leaves an orphaned copy on the service until
// it expires it.
//
// The user's own mail and correspondents (sent.go; with core's
// ContactSink). The Sent folder (SPECIAL-USE \Sent, else "Sent" and the
// like) is watched on the same connection, without a second IDLE: STATUS
// on every turn of the loop (the IDLE waking for new mail, a read marker,
// the keepalive) and at least every poll_interval, so a mail written in
// another client reaches the XMPP clients as a sent carbon within
// poll_interval (60 s by default) of landing in Sent, sooner when mail
// comes in. Its contact is the first To/Cc address but the user's (mails
// written over a week ago, imports, are not shown), its thread the one
// the same mail would have coming in, its LegacyID "sent:UIDVALIDITY:UID"
// ("sentuid:<folder>" keeps the position, from UIDNEXT on first sight);
// the gateway's own copies are recognised by their Message-ID
// (ownMessageID) and not shown again. Once per account, the senders of
// the last 50 mails of INBOX (lists and automatic mail left out) and the
// recipients of the last 50 of Sent become contacts, most recent first,
// 30 at most (state "contacts").
//
// Read state (Session.MarkRead, core.Marker): a displayed marker
// (XEP-0333) or a receipt (XEP-0184) the user's client sends for a
// delivered mail sets \Seen on it (LegacyID gives folder, UIDVALIDITY and
// UID; a folder rebuilt since is left alone), over the session's own
// connection between two IDLEs. Clients that acknowledge every message
// with a receipt therefore mark mail read as soon as it reaches them.
//
// Sending (Session.Send): a text/plain UTF-8 quoted-printable mail from
// the registered address over SMTP submission, then a copy appended to the
// Sent folder (SPECIAL-USE \Sent, else "Sent"). The Message-ID is derived
// from the account, the stanza id and resource and the content, so the
// same stanza sent again after a crash has the same Message-ID: before
// sending, Sent is searched for it, and a mail found there is not sent
// again. SMTP first, Sent second: a crash between the two can send a mail
// twice (never zero times). A 5xx reply is the server's refusal (shown to
// the user), a 4xx reply or a network failure is temporary (the outbox
// retries).
//
// What this package must never do:
//
//   - let anything the user or a mail says reach a header or an SMTP
//     command raw: header values are checked (addresses with net/mail,
//     Message-IDs character by character) or folded onto one line and
//     encoded (subjects), and every line end of what goes into DATA is
//     turned into CRLF first (a lone CR or LF is how SMTP smuggling
//     starts);
//   - log credentials, except in the wire trace the operator turns on with
//     trace = "true" (it contains LOGIN and AUTH PLAIN in clear);
//   - fetch remote content of a mail (images, links);
//   - advance the stored UID before core committed the message.
//
// Operator defaults (domains."D".transports.email.defaults): imap_host,
// imap_port, imap_security, smtp_host, smtp_port, smtp_security, login
// (prefill the form); allow_plaintext = "true" (offer connections without
// TLS); smtp_auth = "none" (submit without logging in, to a trusted relay);
// discover = "false" (no SRV/host-name discovery); idle = "false" (poll
// even where the server has IDLE); poll_interval, imap_keepalive (30s to
// 29m, default 9m), attachment_ttl (Go durations); attachments ("link" or
// "upload"), upload_service (JID), upload_max_size (bytes),
// upload_timeout (1s to 10m); tls_insecure_hosts
// (comma-separated mail server host names whose certificates are not
// verified: the operator's per-host opt-out; tls_insecure = "true" skips
// verification everywhere and is for tests); push_secret_file or
// push_secret_env, push_hosts (push notices, above); trace = "true" (wire trace at debug level,
// credentials included); folders, message_type, signature,
// default_subject, save_sent (settings' defaults).
package email
