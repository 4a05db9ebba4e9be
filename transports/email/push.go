package email

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
)

// Push notifications from the operator's Dovecot (see doc.go): Dovecot's
// push_notification plugin with its OX driver PUTs a small JSON notice to
// /email/<domain>/push when mail is delivered to an INBOX whose
// /private/vendor/vendor.dovecot/http-notify METADATA entry is set. The
// notice only makes the sessions of that mailbox look at once instead of
// after Dovecot's IDLE delay (0.5 s); nothing else in it is used.

// Operator defaults of push notifications.
const (
	dPushSecretFile = "push_secret_file" // file holding the shared secret Dovecot sends (HTTP Basic password, or Bearer token)
	dPushSecretEnv  = "push_secret_env"  // or the environment variable holding it
	dPushHosts      = "push_hosts"       // comma-separated IMAP host names (the operator's Dovecot) whose mailboxes ask for push
)

// pushMetadataKey is the METADATA entry that turns Dovecot's OX push
// driver on for a mailbox; its value is "user=<name sent in the notice>".
const pushMetadataKey = "/private/vendor/vendor.dovecot/http-notify"

// maxPushBody caps a push notice (Dovecot's are a few hundred bytes: a
// snippet of the mail is in it).
const maxPushBody = 64 << 10

// minPushSecret is the shortest shared secret accepted.
const minPushSecret = 16

// pushConfig is the operator's push setup; nil when push is off.
type pushConfig struct {
	secret []byte
	hosts  map[string]bool // lower-case IMAP host names
}

// parsePush reads the push setup from a domain's defaults: off (nil, nil)
// unless push_secret_file or push_secret_env is set. Errors name the key
// and never quote the secret. lookupEnv is os.LookupEnv outside tests.
func parsePush(d map[string]string, lookupEnv func(string) (string, bool)) (*pushConfig, error) {
	file, hasFile := d[dPushSecretFile]
	env, hasEnv := d[dPushSecretEnv]
	if _, inline := d["push_secret"]; inline {
		return nil, errors.New("push_secret: inline secrets are not allowed; put the secret in a file named by push_secret_file, or in the environment variable named by push_secret_env")
	}
	hosts := map[string]bool{}
	for _, h := range strings.Split(d[dPushHosts], ",") {
		if h = strings.ToLower(strings.TrimSuffix(strings.TrimSpace(h), ".")); h != "" {
			hosts[h] = true
		}
	}
	switch {
	case !hasFile && !hasEnv:
		if len(hosts) > 0 {
			return nil, errors.New("push_hosts: needs push_secret_file or push_secret_env (the secret the mail server sends with its notices)")
		}
		return nil, nil
	case hasFile && hasEnv:
		return nil, errors.New("push_secret_file: set only one of push_secret_file and push_secret_env")
	case len(hosts) == 0:
		return nil, errors.New("push_hosts: set it to the IMAP host names of the mail server that sends push notices (comma-separated)")
	}
	var secret string
	if hasFile {
		b, err := os.ReadFile(file)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("push_secret_file: file %s does not exist", file)
			}
			return nil, fmt.Errorf("push_secret_file: cannot read %s: %v", file, errors.Unwrap(err))
		}
		secret = strings.TrimSpace(string(b))
	} else {
		v, ok := lookupEnv(env)
		if !ok {
			return nil, fmt.Errorf("push_secret_env: environment variable %s is not set", env)
		}
		secret = strings.TrimSpace(v)
	}
	key := dPushSecretFile
	if !hasFile {
		key = dPushSecretEnv
	}
	if len(secret) < minPushSecret {
		return nil, fmt.Errorf("%s: the push secret is shorter than %d characters", key, minPushSecret)
	}
	if strings.ContainsAny(secret, ":@/ \t\r\n") {
		return nil, fmt.Errorf("%s: the push secret must not contain ':', '@', '/' or white space (it goes into a URL)", key)
	}
	return &pushConfig{secret: []byte(secret), hosts: hosts}, nil
}

// wants reports whether mailboxes on that IMAP host are set up for push.
func (p *pushConfig) wants(host string) bool {
	return p != nil && p.hosts[strings.ToLower(strings.TrimSuffix(host, "."))]
}

// authorized checks the shared secret: the password of HTTP Basic
// authentication (what Dovecot sends for a URL with user:password@) or a
// Bearer token.
func (p *pushConfig) authorized(r *http.Request) bool {
	var got string
	if _, pw, ok := r.BasicAuth(); ok {
		got = pw
	} else if tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		got = strings.TrimSpace(tok)
	} else {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(got), p.secret) == 1
}

// pushNotice is what is read of Dovecot's notice: only whose mailbox.
type pushNotice struct {
	User string `json:"user"`
}

// pushHandler serves /push: PUT or POST, authorized, with a JSON notice
// naming the mailbox (its login); the sessions of that mailbox on the
// push hosts look for new mail at once.
func (t *Transport) pushHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		log := t.host.Logger().With("http", "push", "remote", r.RemoteAddr)
		fail := func(code int, msg string) {
			log.Info("push notice refused", "status", code, "reason", msg)
			http.Error(w, msg, code)
		}
		if r.Method != http.MethodPut && r.Method != http.MethodPost {
			w.Header().Set("Allow", "PUT, POST")
			fail(http.StatusMethodNotAllowed, "push notices are sent with PUT or POST")
			return
		}
		if !t.push.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="transportd push"`)
			fail(http.StatusUnauthorized, "missing or wrong push secret")
			return
		}
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxPushBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				fail(http.StatusRequestEntityTooLarge, fmt.Sprintf("push notice larger than %d bytes", maxPushBody))
				return
			}
			fail(http.StatusBadRequest, "push notice not read: "+oneLine(err.Error(), 200))
			return
		}
		var n pushNotice
		if err := json.Unmarshal(body, &n); err != nil {
			fail(http.StatusBadRequest, "push notice is not a JSON object: "+oneLine(err.Error(), 200))
			return
		}
		user := strings.TrimSpace(n.User)
		if user == "" || len(user) > 320 || strings.ContainsAny(user, "\x00\r\n") {
			fail(http.StatusBadRequest, `push notice without a valid "user"`)
			return
		}
		woken := t.wakeLogin(user)
		if woken == 0 {
			fail(http.StatusNotFound, "no session of this gateway reads that mailbox")
			return
		}
		log.Debug("push notice: looking for new mail", "sessions", woken)
		w.WriteHeader(http.StatusNoContent)
	})
}

// wakeLogin pokes the running sessions whose IMAP login is user, on a push
// host, and returns how many.
func (t *Transport) wakeLogin(user string) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, s := range t.sessions.Values() {
		if !t.push.wants(s.imapHost) || !strings.EqualFold(s.login, user) {
			continue
		}
		select {
		case s.wake <- struct{}{}:
		default: // a wake is pending already
		}
		n++
	}
	return n
}

// askPush sets the mailbox's push METADATA entry ("user=<login>") where the
// operator asked for push on this server and the server has METADATA. An
// entry set by another application (with another user) is left alone.
// Failures only cost latency: they are logged, never returned.
func (s *session) askPush(ctx context.Context, c *imapclient.Client, st *settings) {
	if !s.t.push.wants(st.IMAP.Host) {
		return
	}
	log := s.log.With("imap", st.IMAP.Host)
	if !c.Caps().Has(imap.CapMetadata) {
		log.Warn("push notices configured for this server, but it does not offer METADATA: new mail is seen through IDLE only")
		return
	}
	want := "user=" + st.Login
	var data *imapclient.GetMetadataData
	err := timed(ctx, c, cmdTimeout, func() error {
		var err error
		data, err = c.GetMetadata("", []string{pushMetadataKey}, nil).Wait()
		return err
	})
	if err != nil {
		log.Warn("push notices: reading the METADATA entry failed", "entry", pushMetadataKey, "error", err)
		return
	}
	if v := data.Entries[pushMetadataKey]; v != nil {
		if string(*v) != want {
			log.Warn("push notices: the METADATA entry is set by another application; leaving it", "entry", pushMetadataKey)
		}
		return
	}
	val := []byte(want)
	err = timed(ctx, c, cmdTimeout, func() error {
		return c.SetMetadata("", map[string]*[]byte{pushMetadataKey: &val}).Wait()
	})
	if err != nil {
		log.Warn("push notices: setting the METADATA entry failed", "entry", pushMetadataKey, "error", err)
		return
	}
	log.Info("push notices asked for", "entry", pushMetadataKey)
}

// logPush says at start how push is set up.
func logPush(log *slog.Logger, p *pushConfig) {
	if p == nil {
		return
	}
	hosts := make([]string, 0, len(p.hosts))
	for h := range p.hosts {
		hosts = append(hosts, h)
	}
	log.Info("push notices accepted", "path", "/push", "hosts", strings.Join(hosts, ","))
}
