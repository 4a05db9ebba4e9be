package email

import (
	"errors"
	"fmt"
	"net"
	"net/mail"
	"strconv"
	"strings"
	"time"

	"transportd/registration"
)

// Registration fields (Account.Values keys).
const (
	fEmail         = "email"
	fPassword      = "password"
	fLogin         = "login"
	fIMAPHost      = "imap_host"
	fIMAPPort      = "imap_port"
	fIMAPSecurity  = "imap_security"
	fSMTPHost      = "smtp_host"
	fSMTPPort      = "smtp_port"
	fSMTPSecurity  = "smtp_security"
	fInitialUnread = "initial_unread"
)

// Settings fields (the "Settings" command; Account.Values keys too).
const (
	fFolders        = "folders"
	fMessageType    = "message_type"
	fSignature      = "signature"
	fDefaultSubject = "default_subject"
	fSaveSent       = "save_sent"
)

// Operator-only defaults (never in a form).
const (
	dAllowPlaintext   = "allow_plaintext"    // "true": offer security "plain" (no TLS)
	dSMTPAuth         = "smtp_auth"          // "password" (default) or "none" (trusted relay)
	dTrace            = "trace"              // "true": wire trace of IMAP and SMTP in the debug log, credentials included
	dDiscover         = "discover"           // "false": no DNS/host-name discovery of servers
	dPollInterval     = "poll_interval"      // Go duration: polling of servers without IDLE and of extra folders (default 60s)
	dAttachmentTTL    = "attachment_ttl"     // Go duration: life of attachment links (default 720h)
	dTLSInsecure      = "tls_insecure"       // "true": skip certificate verification for every host (tests only)
	dTLSInsecureHosts = "tls_insecure_hosts" // comma-separated host names whose certificates are not verified (the operator's per-host opt-out)
	dIMAPKeepalive    = "imap_keepalive"     // Go duration, 30s to 29m: how often an idle IMAP connection is proven alive (default 9m)
	dIdle             = "idle"               // "false": poll even where the server has IDLE (servers whose IDLE is broken)
	dAttachments      = "attachments"        // "link" (default): gateway links; "upload": the XMPP server's HTTP upload service (upload.go)
	dUploadService    = "upload_service"     // JID of the XEP-0363 service (default: found in the domain's disco#items)
	dUploadMaxSize    = "upload_max_size"    // bytes: largest attachment uploaded (default 25 MiB; the service's own limit applies too)
	dUploadTimeout    = "upload_timeout"     // Go duration, 1s to 10m: time the uploads of one mail may take (default 1m)
)

// Security of a connection.
const (
	secTLS      = "tls"      // implicit TLS (993, 465)
	secSTARTTLS = "starttls" // STARTTLS on the plain port (143, 587)
	secPlain    = "plain"    // no TLS at all; only where the operator allows it
)

// server is where one protocol of an account connects.
type server struct {
	Host     string
	Port     int
	Security string
}

func (s server) addr() string { return net.JoinHostPort(s.Host, strconv.Itoa(s.Port)) }

// settings are an account's values, typed and with defaults applied.
type settings struct {
	Address  string // the registered address, lower-cased
	Login    string // IMAP and SMTP user name (default: Address)
	Password string

	IMAP, SMTP server
	SMTPAuth   bool // authenticate to SMTP (false: operator's smtp_auth = "none")

	Folders        []string // first one is IDLEd, others polled
	Normal         bool     // deliver as type=normal
	Signature      string
	DefaultSubject string
	SaveSent       bool
	InitialUnread  int

	AllowPlaintext bool
	Trace          bool
	TLSInsecure    bool            // no certificate verified (tls_insecure)
	InsecureHosts  map[string]bool // hosts whose certificates are not verified (tls_insecure_hosts)
	Keepalive      time.Duration   // NOOP interval of an idle IMAP connection
	Discover       bool
	NoIdle         bool
	Poll           time.Duration
	AttachmentTTL  time.Duration
	Upload         uploadOptions // attachments put on the XMPP server's upload service
	UploadErr      error         // the upload options are wrong (after a reload): links only
}

// insecure reports whether the certificate of host is not to be verified:
// the operator opted out for every host (tls_insecure) or for this one
// (tls_insecure_hosts).
func (s *settings) insecure(host string) bool {
	return s.TLSInsecure || s.InsecureHosts[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// value returns the account's value for key, else the operator's default.
func value(values, defaults map[string]string, key string) string {
	if v, ok := values[key]; ok && v != "" {
		return v
	}
	return defaults[key]
}

// parseSettings types an account's values. Missing hosts stay empty (the
// caller discovers them); everything else gets its default.
func parseSettings(values, defaults map[string]string) (*settings, error) {
	get := func(k string) string { return strings.TrimSpace(value(values, defaults, k)) }
	s := &settings{
		Password:       values[fPassword],
		AllowPlaintext: defaults[dAllowPlaintext] == "true",
		Trace:          defaults[dTrace] == "true",
		TLSInsecure:    defaults[dTLSInsecure] == "true",
		Discover:       defaults[dDiscover] != "false",
		NoIdle:         defaults[dIdle] == "false",
		SMTPAuth:       defaults[dSMTPAuth] != "none",
		Normal:         get(fMessageType) == "normal",
		Signature:      strings.TrimRight(value(values, defaults, fSignature), " \t\r\n"),
		DefaultSubject: oneLine(get(fDefaultSubject), 200),
		SaveSent:       get(fSaveSent) != "false",
		Poll:           60 * time.Second,
		Keepalive:      keepalive,
		AttachmentTTL:  30 * 24 * time.Hour,
	}
	addr := strings.ToLower(get(fEmail))
	if !validAddress(addr) {
		return nil, errors.New("the registered e-mail address is not valid")
	}
	s.Address = addr
	s.Login = get(fLogin)
	if s.Login == "" {
		s.Login = addr
	}
	var err error
	if s.IMAP, err = parseServer(get(fIMAPHost), get(fIMAPPort), get(fIMAPSecurity), 993, 143, s.AllowPlaintext); err != nil {
		return nil, fmt.Errorf("IMAP: %w", err)
	}
	if s.SMTP, err = parseServer(get(fSMTPHost), get(fSMTPPort), get(fSMTPSecurity), 465, 587, s.AllowPlaintext); err != nil {
		return nil, fmt.Errorf("SMTP: %w", err)
	}
	for _, f := range strings.Split(get(fFolders), ",") {
		if f = strings.TrimSpace(f); f != "" && headerSafe(f) && len(s.Folders) < 10 {
			s.Folders = append(s.Folders, f)
		}
	}
	if len(s.Folders) == 0 {
		s.Folders = []string{"INBOX"}
	}
	if v := get(fInitialUnread); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, errors.New("initial_unread must be a number")
		}
		s.InitialUnread = min(n, 50)
	}
	if v := defaults[dPollInterval]; v != "" {
		if d, err := time.ParseDuration(v); err == nil && d >= 100*time.Millisecond {
			s.Poll = d
		}
	}
	for _, h := range strings.Split(defaults[dTLSInsecureHosts], ",") {
		if h = strings.ToLower(strings.TrimSpace(h)); h != "" {
			if s.InsecureHosts == nil {
				s.InsecureHosts = map[string]bool{}
			}
			s.InsecureHosts[h] = true
		}
	}
	if v := defaults[dIMAPKeepalive]; v != "" {
		// RFC 2177: a server may drop an IDLE after 30 minutes; below 30 s
		// the NOOPs would be traffic for nothing.
		if d, err := time.ParseDuration(v); err == nil && d >= 30*time.Second && d <= 29*time.Minute {
			s.Keepalive = d
		}
	}
	s.Upload, s.UploadErr = parseUploadOptions(defaults)
	if v := defaults[dAttachmentTTL]; v != "" {
		if d, err := time.ParseDuration(v); err == nil && d > 0 {
			s.AttachmentTTL = d
		}
	}
	return s, nil
}

func parseServer(host, port, sec string, tlsPort, plainPort int, allowPlain bool) (server, error) {
	sv := server{Host: strings.ToLower(strings.TrimSuffix(host, ".")), Security: sec}
	switch sec {
	case "":
		sv.Security = secTLS
	case secTLS, secSTARTTLS:
	case secPlain:
		if !allowPlain {
			return sv, errors.New("connections without TLS are not allowed on this gateway")
		}
	default:
		return sv, fmt.Errorf("unknown security %q", sec)
	}
	if port != "" {
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return sv, errors.New("the port must be a number between 1 and 65535")
		}
		sv.Port = p
	} else if sv.Security == secTLS {
		sv.Port = tlsPort
	} else {
		sv.Port = plainPort
	}
	return sv, nil
}

func validatePort(v string) error {
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		return errors.New("must be a number between 1 and 65535")
	}
	return nil
}

func validateHost(v string) error {
	if strings.ContainsAny(v, " /:@[]\\") || !headerSafe(v) {
		return errors.New("must be a host name or an IP address, without a port")
	}
	return nil
}

func validateEmail(v string) error {
	a, err := mail.ParseAddress(v)
	if err != nil || a.Name != "" || a.Address != v || !validAddress(strings.ToLower(v)) {
		return errors.New("must be an e-mail address like jane@example.org")
	}
	return nil
}

func validateCount(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 50 {
		return errors.New("must be a number between 0 and 50")
	}
	return nil
}

func validateFolders(v string) error {
	for _, f := range strings.Split(v, ",") {
		if strings.TrimSpace(f) == "" {
			return errors.New("must be folder names separated by commas, like INBOX, Lists")
		}
	}
	return nil
}

func securityOptions(allowPlain bool) []registration.Option {
	opts := []registration.Option{
		{Label: "TLS (implicit, ports 993 and 465)", Value: secTLS},
		{Label: "STARTTLS (ports 143 and 587)", Value: secSTARTTLS},
	}
	if allowPlain {
		opts = append(opts, registration.Option{Label: "None (plain text, allowed on this gateway)", Value: secPlain})
	}
	return opts
}

// securityDefault is the default of a security field: the operator's if it
// is one of the options, else TLS.
func securityDefault(v string, allowPlain bool) string {
	switch v {
	case secTLS, secSTARTTLS:
		return v
	case secPlain:
		if allowPlain {
			return v
		}
	}
	return secTLS
}

// registrationSchema is the registration form, with the domain's defaults.
func registrationSchema(d map[string]string) registration.Schema {
	allowPlain := d[dAllowPlaintext] == "true"
	hostDesc := "Leave empty to find it from your address"
	if d[dDiscover] == "false" {
		hostDesc = "Required"
	}
	return registration.Schema{
		Title: "E-mail registration",
		Instructions: "Enter your e-mail address and its password. The servers are filled in " +
			"for this gateway's mail provider or found from your address; change them if your provider differs. " +
			"Mail from jane@example.org then comes from jane\\40example.org at this gateway.",
		Fields: []registration.Field{
			{Var: fEmail, Label: "E-mail address", Type: registration.TextSingle, Required: true, Legacy: "username", Validate: validateEmail, MaxLen: 320},
			{Var: fPassword, Label: "Password", Type: registration.TextPrivate, Required: true, Secret: true, Legacy: "password"},
			{Var: fLogin, Label: "Login name", Desc: "Leave empty to log in with the e-mail address", Type: registration.TextSingle, Default: d[fLogin], MaxLen: 320},
			{Var: fIMAPHost, Label: "IMAP server", Desc: hostDesc, Type: registration.TextSingle, Default: d[fIMAPHost], Validate: validateHost, MaxLen: 255},
			{Var: fIMAPPort, Label: "IMAP port", Desc: "Empty: 993 with TLS, 143 otherwise", Type: registration.TextSingle, Default: d[fIMAPPort], Validate: validatePort, MaxLen: 5},
			{Var: fIMAPSecurity, Label: "IMAP security", Type: registration.ListSingle, Default: securityDefault(d[fIMAPSecurity], allowPlain), Options: securityOptions(allowPlain)},
			{Var: fSMTPHost, Label: "SMTP submission server", Desc: hostDesc, Type: registration.TextSingle, Default: d[fSMTPHost], Validate: validateHost, MaxLen: 255},
			{Var: fSMTPPort, Label: "SMTP port", Desc: "Empty: 465 with TLS, 587 otherwise", Type: registration.TextSingle, Default: d[fSMTPPort], Validate: validatePort, MaxLen: 5},
			{Var: fSMTPSecurity, Label: "SMTP security", Type: registration.ListSingle, Default: securityDefault(d[fSMTPSecurity], allowPlain), Options: securityOptions(allowPlain)},
			{Var: fInitialUnread, Label: "Unread messages to deliver now", Desc: "On first registration only new mail is delivered; ask here for up to 50 of the latest unread ones", Type: registration.TextSingle, Default: d[fInitialUnread], Validate: validateCount, MaxLen: 2},
		},
	}
}

// settingsSchema is the "Settings" command's form.
func settingsSchema(d map[string]string) registration.Schema {
	folders := d[fFolders]
	if folders == "" {
		folders = "INBOX"
	}
	mt := d[fMessageType]
	if mt != "normal" {
		mt = "chat"
	}
	saveSent := "true"
	if d[fSaveSent] == "false" {
		saveSent = "false"
	}
	return registration.Schema{
		Title:        "E-mail settings",
		Instructions: "How your mailbox is read and how your answers are sent.",
		Fields: []registration.Field{
			{Var: fFolders, Label: "Folders to watch", Desc: "Comma-separated; the first is watched with IMAP IDLE, the others checked every minute", Type: registration.TextSingle, Default: folders, Validate: validateFolders, MaxLen: 512},
			{Var: fMessageType, Label: "Deliver mail as", Type: registration.ListSingle, Default: mt, Options: []registration.Option{{Label: "Chat messages", Value: "chat"}, {Label: "Normal messages", Value: "normal"}}},
			{Var: fSignature, Label: "Signature", Desc: "Plain text added below your answers", Type: registration.TextSingle, Default: d[fSignature], MaxLen: 512},
			{Var: fDefaultSubject, Label: "Subject of new mails", Desc: "Used when a message starts a conversation without a subject", Type: registration.TextSingle, Default: d[fDefaultSubject], MaxLen: 200},
			{Var: fSaveSent, Label: "Save a copy in the Sent folder", Type: registration.Boolean, Default: saveSent},
		},
	}
}
