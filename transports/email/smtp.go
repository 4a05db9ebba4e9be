package email

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"mellium.im/xmpp/stanza"

	"transportd/core"
)

// smtpTimeout bounds one SMTP conversation (connect to QUIT).
var smtpTimeout = 2 * time.Minute

// dialTimeout bounds connecting (TCP and TLS) to IMAP and SMTP servers.
var dialTimeout = 15 * time.Second

// tlsConfig is the TLS configuration for host.
func tlsConfig(host string, insecure bool) *tls.Config {
	return &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure} //nolint:gosec // operator's test-only switch
}

// dialServer connects to sv with implicit TLS or in plain text (STARTTLS
// is the protocol's business). Failures are remote-server-not-found,
// except certificate problems (not-acceptable).
func dialServer(ctx context.Context, proto string, sv server, insecure bool) (net.Conn, error) {
	d := &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", sv.addr())
	if err != nil {
		return nil, core.WrapError(stanza.RemoteServerNotFound, fmt.Sprintf("the %s server %s does not answer", proto, sv.addr()), err)
	}
	if sv.Security != secTLS {
		return conn, nil
	}
	tc := tls.Client(conn, tlsConfig(sv.Host, insecure))
	hctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		conn.Close()
		return nil, tlsError(proto, sv, err)
	}
	return tc, nil
}

func tlsError(proto string, sv server, err error) error {
	var cv *tls.CertificateVerificationError
	if errors.As(err, &cv) {
		return core.WrapError(stanza.NotAcceptable, fmt.Sprintf("the %s server %s has a certificate that is not valid for it", proto, sv.addr()), err)
	}
	return core.WrapError(stanza.RemoteServerNotFound, fmt.Sprintf("the %s server %s does not speak TLS on this port", proto, sv.addr()), err)
}

// smtpConn is a logged-in SMTP submission connection.
type smtpConn struct {
	c    *smtp.Client
	stop func() bool // ends the watch of the context
}

// dialSMTP connects, upgrades with STARTTLS when asked, says EHLO and logs
// in (unless the operator set smtp_auth = "none"). A refused login is
// not-authorized; a server that cannot be reached remote-server-not-found.
// The connection is closed when ctx ends.
func dialSMTP(ctx context.Context, st *settings, localName string, trace io.Writer) (*smtpConn, error) {
	conn, err := dialServer(ctx, "SMTP", st.SMTP, st.insecure(st.SMTP.Host))
	if err != nil {
		return nil, err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	var c *smtp.Client
	fail := func(err error) (*smtpConn, error) {
		stop()
		if c != nil {
			c.Close()
		} else {
			conn.Close()
		}
		if ctx.Err() != nil {
			return nil, core.Temporary(ctx.Err())
		}
		return nil, err
	}
	if st.SMTP.Security == secSTARTTLS {
		c, err = smtp.NewClientStartTLS(conn, tlsConfig(st.SMTP.Host, st.insecure(st.SMTP.Host)))
		if err != nil {
			c = nil
			if strings.Contains(err.Error(), "STARTTLS") {
				return fail(core.NewError(stanza.NotAcceptable, fmt.Sprintf("the SMTP server %s does not offer STARTTLS", st.SMTP.addr())))
			}
			return fail(smtpError("the SMTP server "+st.SMTP.addr(), err, true))
		}
	} else {
		c = smtp.NewClient(conn)
	}
	c.CommandTimeout = smtpTimeout
	c.SubmissionTimeout = smtpTimeout
	c.DebugWriter = trace
	if err := c.Hello(localName); err != nil {
		if isTLSError(err) {
			return fail(tlsError("SMTP", st.SMTP, err))
		}
		return fail(smtpError("the SMTP server "+st.SMTP.addr(), err, true))
	}
	if st.SMTPAuth {
		ok, mechs := c.Extension("AUTH")
		if !ok {
			return fail(core.NewError(stanza.NotAcceptable, fmt.Sprintf("the SMTP server %s does not offer to log in (AUTH) on this port: use its submission port", st.SMTP.addr())))
		}
		var mech sasl.Client
		switch {
		case hasWord(mechs, "PLAIN"):
			mech = sasl.NewPlainClient("", st.Login, st.Password)
		case hasWord(mechs, "LOGIN"):
			mech = sasl.NewLoginClient(st.Login, st.Password)
		default:
			return fail(core.NewError(stanza.NotAcceptable, fmt.Sprintf("the SMTP server %s offers no password login (PLAIN or LOGIN)", st.SMTP.addr())))
		}
		if err := c.Auth(mech); err != nil {
			var se *smtp.SMTPError
			if errors.As(err, &se) && (se.Code == 535 || se.Code == 534 || se.Code == 530) {
				return fail(core.WrapError(stanza.NotAuthorized, fmt.Sprintf("the SMTP server %s refused the login: %s", st.SMTP.addr(), oneLine(se.Message, 200)), err))
			}
			return fail(smtpError("the SMTP server "+st.SMTP.addr(), err, true))
		}
	}
	return &smtpConn{c: c, stop: stop}, nil
}

func isTLSError(err error) bool {
	var cv *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	var ae tls.AlertError
	return errors.As(err, &cv) || errors.As(err, &rh) || errors.As(err, &ae)
}

func hasWord(list, w string) bool {
	for _, f := range strings.Fields(list) {
		if strings.EqualFold(f, w) {
			return true
		}
	}
	return false
}

// send submits one mail. data must come from compose (CRLF only).
func (s *smtpConn) send(from, to string, data []byte) error {
	if !validAddress(from) || !validAddress(to) || bytes.IndexByte(data, 0) >= 0 {
		return core.NewError(stanza.BadRequest, "refusing to send: an address or the text is not safe for SMTP")
	}
	if err := s.c.Mail(from, nil); err != nil {
		return smtpError("the mail server", err, false)
	}
	if err := s.c.Rcpt(to, nil); err != nil {
		return smtpError("the mail server", err, false)
	}
	w, err := s.c.Data()
	if err != nil {
		return smtpError("the mail server", err, false)
	}
	if _, err := w.Write(data); err != nil {
		w.Close()
		return core.Temporary(err)
	}
	if err := w.Close(); err != nil {
		return smtpError("the mail server", err, false)
	}
	return nil
}

func (s *smtpConn) close() {
	_ = s.c.Quit()
	_ = s.c.Close()
	s.stop()
}

// smtpError maps an SMTP failure: a 5xx reply is the server's final word
// (item-not-found for unknown mailboxes, not-acceptable otherwise, with the
// server's text), a 4xx reply or a network failure is temporary.
func smtpError(who string, err error, connecting bool) error {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		if connecting {
			return core.Temporary(core.WrapError(stanza.RemoteServerTimeout, who+" failed: "+oneLine(err.Error(), 200), err))
		}
		return core.Temporary(err)
	}
	text := fmt.Sprintf("%s refused the mail: %d %s", who, se.Code, oneLine(se.Message, 300))
	switch {
	case se.Code/100 == 4:
		return core.Temporary(core.WrapError(stanza.ServiceUnavailable, text, err))
	case se.Code == 550 || se.Code == 551 || se.Code == 553 || se.EnhancedCode[0] == 5 && se.EnhancedCode[1] == 1:
		return core.WrapError(stanza.ItemNotFound, text, err)
	case se.Code == 535 || se.Code == 530:
		return core.WrapError(stanza.NotAuthorized, text, err)
	}
	return core.WrapError(stanza.NotAcceptable, text, err)
}

// verifySMTP logs in to SMTP and out again.
func verifySMTP(ctx context.Context, st *settings, localName string, trace io.Writer) error {
	c, err := dialSMTP(ctx, st, localName, trace)
	if err != nil {
		return err
	}
	c.close()
	return nil
}
