package core

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"sync"
	"time"

	"transportd/registration"
)

// Info describes a transport to core and, through service discovery, to
// users' clients.
type Info struct {
	// Name is the transport's registered name and the default first label of
	// its component JID ("email" serves email.example.net).
	Name string
	// DisplayName is shown in disco identities and the gateway's presence.
	DisplayName string
	// DiscoType is the gateway identity type (XEP-0100 registry: "smtp",
	// "sms", "irc", ...).
	DiscoType string
	// Features are extra disco features beyond the ones core provides.
	Features []string
	// Policy says whether a legacy session follows the user's presence.
	Policy SessionPolicy
	// DeferredReceipts says that the network confirms delivery later than
	// Send returns (SMS status callbacks): core then sends the user's
	// requested receipt when the session calls Sink.Receipt, not when Send
	// succeeds.
	DeferredReceipts bool
	// RegistrationOptional lets users who never registered use the
	// transport (joining an IRC channel needs no credentials): core creates
	// an empty account for them on first use, if the domain's registration
	// policy allows them to register.
	RegistrationOptional bool
	// Relay says the network acknowledges nothing in either direction
	// (IRC): core then relays messages at once, committing them to the
	// outbox only while a side is down or the outbox still holds messages
	// of the account (relay.go says what that keeps and what it gives up).
	// Deliver then returns once the message is written, not committed.
	// Not with DeferredReceipts.
	Relay bool
}

// AccountPolicy is implemented by transports whose session policy is a
// user's choice (stay connected while offline, or not). fields are the
// account's non-secret registration fields and settings.
type AccountPolicy interface {
	PolicyFor(fields map[string]string) SessionPolicy
}

// SessionPolicy decides when core runs a registered account's session.
type SessionPolicy int

const (
	// FollowPresence runs the session while at least one of the user's
	// resources is available to the gateway.
	FollowPresence SessionPolicy = iota
	// Persistent runs the session whenever the account is registered and
	// enabled, whether the user is online or not (messages wait in the
	// outbox).
	Persistent
)

// Account is what a transport knows of one registration.
type Account struct {
	ID        int64
	Domain    string // the XMPP domain served
	Transport string
	JID       string            // the user's bare JID
	Label     string            // "" for the user's main account; names each further one
	Values    map[string]string // every registration field, secrets included
	Defaults  map[string]string // the domain's configured defaults for this transport
}

// Transport is one foreign network. Implementations register themselves by
// name with Register, usually from init.
//
// A transport never builds XML and never sees the component stream: it gets
// neutral values from core and hands neutral values back.
type Transport interface {
	Info() Info

	// Schema returns the registration form for a domain, with defaults from
	// that domain's configuration already filled in.
	Schema(defaults map[string]string) registration.Schema

	// Verify proves that the submitted credentials work (logs in and out)
	// before anything is stored. It may fill in a.Values (servers it
	// discovered, normalised values): core stores a.Values as they are when
	// Verify returns nil. Its error is shown to the user: wrap it
	// with an Error carrying the right condition (NotAuthorized for refused
	// credentials, RemoteServerNotFound when a host does not answer).
	Verify(ctx context.Context, a *Account) error

	// NewSession returns the live session of a registered account. It does
	// no I/O; core calls Run.
	NewSession(a *Account, sink Sink) Session

	// Localpart turns a legacy address into a JID localpart and Address the
	// reverse, rejecting what is not a valid address on the network with an
	// Error (JIDMalformed, ItemNotFound, ...).
	Localpart(address string) string
	Address(localpart string) (string, error)
}

// Session is the live connection of one account to the foreign network.
type Session interface {
	// Run connects and serves until ctx is cancelled. It reports connection
	// state through the Sink, retries transient failures by itself and
	// returns only when ctx is done or the credentials are refused for good.
	Run(ctx context.Context)

	// Send delivers one message from the XMPP user to the network and returns
	// the legacy ID the network gave it, if any. An error wrapping ErrTemporary
	// is retried by the outbox; any other error is reported to the user.
	Send(ctx context.Context, m *Message) (legacyID string, err error)
}

// ContactPinger is implemented by a Session whose network can ping a
// contact and hear back (IRC's CTCP PING): core relays an XMPP ping
// (XEP-0199) to a contact's JID, or to a room occupant other than the
// user, and answers once the contact does, as biboumi does. Without it
// the gateway answers such pings itself.
type ContactPinger interface {
	// PingContact returns once the contact answered, or with an error
	// (no such contact; no answer before ctx is done).
	PingContact(ctx context.Context, contact string) error
}

// ContactVersioner is implemented by a Session that can ask a contact's
// client what it is (IRC's CTCP VERSION): core relays a software version
// request (XEP-0092) to a contact's JID, or to a room occupant's, and
// answers with the contact's, as biboumi does. Without it such a request
// is service-unavailable.
type ContactVersioner interface {
	// ContactVersion returns the contact's answer, or an error (no such
	// contact; no answer before ctx is done).
	ContactVersion(ctx context.Context, contact string) (SoftwareVersion, error)
}

// SoftwareVersion is a client's name, version and system (XEP-0092).
type SoftwareVersion struct {
	Name, Version, OS string
}

// PanicReporter is implemented by core's Sink: a session that recovers a
// panic in a goroutine of its own reports it there, to be logged and
// counted with core's own (transportd_panics_total), so an operator's
// alert on that counter sees it.
type PanicReporter interface {
	Panicked(where string, v any, stack []byte)
}

// SessionStarter is implemented by sessions that keep no goroutine while
// idle (IRC's: one per account would be most of an idle user's memory).
// Core calls Start instead of Run: it does what Run does but returns at once,
// and calls done exactly once, from any goroutine, when the session has
// ended (ctx done and the session shut down, or it ended by itself).
// The gateway's shutdown waits for done as it waits for Run. Start is
// called on the goroutine that handles the account's events: it must not
// wait, nor call the Sink.
type SessionStarter interface {
	Start(ctx context.Context, done func())
}

// AsyncSender is implemented by sessions of Info.Relay transports that take
// relayed messages without a goroutine waiting on each: core hands a burst
// over at once, and the session can write it with few system calls.
//
// SendAsync never blocks on the network and never calls done before it
// returns. done is called exactly once per message, from a goroutine of
// the session, in the order the messages were handed over (for messages to
// the same contact), with what Send would have returned. Once done
// reported a temporary error, every later message handed over by
// SendAsync fails with a temporary error too, until the session is given
// a message with FromOutbox: core moves them all to the outbox in the
// order their done calls came, so none overtakes another.
type AsyncSender interface {
	SendAsync(m *Message, done func(legacyID string, err error))
}

// Marker is implemented by sessions whose network has read state. Core
// calls MarkRead when the user's client sends a displayed marker (XEP-0333)
// or a receipt (XEP-0184) for a message core delivered; legacyID is that
// message's Message.LegacyID. It may be called more than once for the same
// message (a receipt, then a marker).
type Marker interface {
	MarkRead(ctx context.Context, contact, legacyID string) error
}

// Gatewayer is implemented by transports that translate what a user types
// into a contact JID (XEP-0100 jabber:iq:gateway).
type Gatewayer interface {
	// GatewayPrompt returns the description and the prompt label.
	GatewayPrompt() (desc, prompt string)
	// TranslateAddress turns user input ("555 123 4567", "jane@example.org")
	// into a legacy address.
	TranslateAddress(input string, defaults map[string]string) (string, error)
}

// RateKeyer is implemented by transports whose registrations log in to a
// host that a stolen-password tester could aim at: the key (for example the
// IMAP host) is rate-limited on top of the per-user limit.
type RateKeyer interface {
	RegistrationRateKey(values map[string]string) string
}

// Host is what core offers a transport at start: HTTP routes on the
// gateway's listener (webhooks, attachment links) and their public URLs.
type Host interface {
	// Handle registers h under the component's own prefix
	// "/<transport>/<domain>" (for example "/sms/example.net/webhook").
	Handle(path string, h http.Handler)
	// URL returns the public URL of a path registered with Handle, built
	// from the configured http.public_url (never from request headers);
	// "" when no public URL is configured.
	URL(path string) string
	// Domain is the XMPP domain this instance serves; Defaults its
	// configured defaults.
	Domain() string
	Defaults() map[string]string
	Logger() *slog.Logger
}

// Starter is implemented by transports that need the Host. Start is called
// once, before any session runs; an error stops the gateway from starting.
type Starter interface {
	Start(ctx context.Context, host Host) error
}

// Configurable is implemented by transports with user settings beyond the
// registration (folders to watch, signature...). Core offers them as the
// ad-hoc command "Settings", stores them with the account's fields and
// restarts the session when they change.
type Configurable interface {
	Settings(defaults map[string]string) registration.Schema
}

// Sink is how a session talks back to core. Its methods are safe to call
// from any goroutine; Deliver blocks until the message is committed
// (or, with Info.Relay, written).
type Sink interface {
	// State reports the session's connection state; core shows it to the
	// user as the gateway's presence.
	State(s State, text string)
	// Deliver durably queues a message for the XMPP user and returns once it
	// is committed; only then may the transport acknowledge it upstream
	// (with Info.Relay: once it is written to the XMPP link, or committed
	// when it cannot be; see Info.Relay). A
	// message with the same LegacyID (the idempotency key) as one already
	// queued or delivered is dropped, and Deliver returns nil.
	Deliver(ctx context.Context, m *Message) error
	// Receipt tells the user that the network delivered the message that
	// Send returned legacyID for (used with Info.DeferredReceipts). Core
	// sends a receipt only if the user asked for one.
	Receipt(ctx context.Context, contact, legacyID string) error
	// Failed tells the user that the message Send returned legacyID for
	// was not delivered after all; err's text (an *Error's Text) is shown.
	Failed(ctx context.Context, contact, legacyID string, err error) error
	// Store is this account's small key/value state (UIDs, cursors).
	Store() StateStore
	// Logger is the account's logger (transport, domain and user attached;
	// the JID redacted when the operator asks). It is made on each call:
	// keep it for a burst of lines, not for the life of the session.
	Logger() *slog.Logger
}

// SecretSink is implemented by core's Sink. Secrets is a StateStore for
// credentials a transport learns outside the registration form (a
// password per IRC network): values are sealed at rest like registration
// secrets (AES-256-GCM, bound to the account) and deleted with the account.
type SecretSink interface {
	Secrets() StateStore
}

// StateStore is per-account persistent state for a transport.
type StateStore interface {
	Get(ctx context.Context, key string) (string, bool, error)
	Set(ctx context.Context, key, value string) error
	Delete(ctx context.Context, key string) error
}

// State is a legacy session's connection state.
type State int

const (
	StateDisconnected   State = iota // not running (user offline)
	StateConnecting                  // first connection under way
	StateConnected                   // logged in and working
	StateTransientFail               // lost or failing; retrying
	StateBadCredentials              // refused; will not retry until re-registration
)

func (s State) String() string {
	switch s {
	case StateDisconnected:
		return "disconnected"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateTransientFail:
		return "transient-failure"
	case StateBadCredentials:
		return "bad-credentials"
	}
	return fmt.Sprintf("state(%d)", int(s))
}

// Message is a neutral chat message in either direction.
type Message struct {
	Contact     string       `json:"contact"`            // legacy address of the other party
	Nick        string       `json:"nick,omitempty"`     // the contact's display name (inbound)
	Body        string       `json:"body"`               //
	Subject     string       `json:"subject,omitempty"`  //
	Thread      string       `json:"thread,omitempty"`   // conversation thread id
	ReplyTo     string       `json:"reply_to,omitempty"` // legacy id of the message answered
	Time        time.Time    `json:"time,omitzero"`      // original time (inbound: delay stamp)
	LegacyID    string       `json:"legacy_id,omitempty"`
	XMPPID      string       `json:"xmpp_id,omitempty"`
	Receipt     bool         `json:"receipt,omitempty"`   // the XMPP sender asked for a receipt
	Normal      bool         `json:"normal,omitempty"`    // deliver as type normal instead of chat
	Groupchat   bool         `json:"groupchat,omitempty"` // a room message: Contact is the room, Nick the speaker (inbound) or the addressee of a private message (outbound, Groupchat false)
	Attachments []Attachment `json:"attachments,omitempty"`
	// Invite is the legacy address of a room the contact invites the
	// user to (inbound): the message carries a XEP-0249 invitation, which
	// clients show as one to accept; Body is the text for the others.
	Invite string `json:"invite,omitempty"`
	// ConfigChanged marks a message from a room itself (inbound, Groupchat,
	// no Nick) telling of a change of the room's settings: it carries
	// XEP-0045's status 104, on which clients ask the room's disco#info
	// again (a password, moderation, the subject's lock).
	ConfigChanged bool `json:"config_changed,omitempty"`
	// StanzaID is set by core on a room message it archived (inbound,
	// Groupchat): the archive's id, which the message carries as its
	// stanza-id. Transports leave it empty.
	StanzaID string `json:"stanza_id,omitempty"`
	// UserResource is the resource the user sent from (outbound), so errors
	// and receipts go back to that client.
	UserResource string `json:"user_resource,omitempty"`
	// FromOutbox is set on a message Send gets from the outbox, which
	// sends it again after a crash before it was marked sent. A message
	// relayed at once (Info.Relay) is never sent again by core, so a
	// transport's guard against sending twice (IRC's send records) can
	// skip it.
	FromOutbox bool `json:"-"`
	// Replayable says the network may deliver this message again later
	// (IRC CHATHISTORY, a bouncer's playback), with the same LegacyID. A
	// message relayed at once toward XMPP (Info.Relay) is then recorded as
	// delivered, so that the replay is recognised; for others the relay
	// skips that write, the costliest part of relaying a line. Messages
	// through the outbox are always recorded.
	Replayable bool `json:"-"`
}

// Attachment is a file carried with a message.
type Attachment struct {
	Name string `json:"name"`
	Type string `json:"type"`
	Size int64  `json:"size"`
	URL  string `json:"url"`
}

// ErrTemporary marks errors worth retrying.
var ErrTemporary = errors.New("temporary failure")

// ErrUnconfirmed is what Send returns for a message it will not send
// again although it cannot tell whether the network got it: a send that
// sends at most once found, after a restart, that an earlier attempt had
// begun. The outbox drops the item without a receipt (a receipt promises
// delivery) and without an error (it was most likely sent).
var ErrUnconfirmed = errors.New("sent at most once; delivery not known")

// Temporary wraps err so that errors.Is(err, ErrTemporary) holds.
func Temporary(err error) error {
	if err == nil {
		return nil
	}
	return &tempError{err}
}

type tempError struct{ err error }

func (e *tempError) Error() string        { return e.err.Error() }
func (e *tempError) Unwrap() []error      { return []error{e.err, ErrTemporary} }
func (e *tempError) Is(target error) bool { return target == ErrTemporary }

var (
	regMu      sync.Mutex
	registered = map[string]func() Transport{}
)

// Register makes a transport available under its name. A duplicate name
// panics: it is a programming error.
func Register(name string, factory func() Transport) {
	regMu.Lock()
	defer regMu.Unlock()
	if _, dup := registered[name]; dup {
		panic("core: transport registered twice: " + name)
	}
	registered[name] = factory
}

// Transports lists the registered transport names, sorted.
func Transports() []string {
	regMu.Lock()
	defer regMu.Unlock()
	names := make([]string, 0, len(registered))
	for n := range registered {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func newTransport(name string) (Transport, bool) {
	regMu.Lock()
	defer regMu.Unlock()
	f, ok := registered[name]
	if !ok {
		return nil, false
	}
	return f(), true
}
