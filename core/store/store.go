package store

import (
	"context"
	"errors"
	"time"
)

// ErrNotFound is returned (possibly wrapped) when the requested row does not exist.
var ErrNotFound = errors.New("store: not found")

// ErrSchemaTooNew is returned (wrapped, with the versions) by Open when the
// database was written by a newer transportd than this one.
var ErrSchemaTooNew = errors.New("database schema is newer than this transportd")

// DedupeWindow is how long the idempotency key of a delivered outbox item is
// remembered: within it, Enqueue of the same key reports a duplicate. Callers
// prune older keys with PruneDelivered(ctx, time.Now().Add(-DedupeWindow)).
const DedupeWindow = 7 * 24 * time.Hour

// Account is a user's registration with one transport on one XMPP domain.
type Account struct {
	ID        int64
	Domain    string            // XMPP domain the transport serves, e.g. "example.net"
	Transport string            // transport name, e.g. "email"
	JID       string            // user's bare JID, normalised
	Label     string            // "" for the user's main account; names each further one
	Fields    map[string]string // non-secret registration fields (stored as JSON)
	Secrets   []byte            // sealed (encrypted) secret fields; opaque to the store
	Enabled   bool
	Created   time.Time
	Updated   time.Time
}

// Contact is a legacy address an account exchanged messages with.
type Contact struct {
	AccountID int64
	Address   string
	Name      string // display name, if the network told one
	Pushed    bool   // added to the user's roster
	Removed   bool   // removed from the roster by the user (unsubscribed): not watched, not put back
	LastSeen  time.Time
}

// Direction says which way an outbox item travels.
type Direction string

const (
	ToLegacy Direction = "to_legacy" // accepted from XMPP, to be sent to the foreign network
	ToXMPP   Direction = "to_xmpp"   // taken from the foreign network, to be sent to the XMPP user
)

func (d Direction) valid() bool { return d == ToLegacy || d == ToXMPP }

// DeliveredKey is an idempotency key delivered outside the outbox.
type DeliveredKey struct {
	AccountID int64
	Direction Direction
	IdemKey   string
}

// Mapping says that an XMPP stanza id and a legacy message id name the same
// message of an account.
type Mapping struct {
	AccountID        int64
	XMPPID, LegacyID string
}

// ArchivedMessage is a room's message as an account's connection saw it
// (XEP-0313 on rooms).
type ArchivedMessage struct {
	AccountID int64
	Room      string // the room's legacy address
	ID        string // the room's stanza-id of the message; unique per (account, room)
	Time      time.Time
	Nick      string // who said it
	Body      string
	XMPPID    string // the message's XMPP id, when it was the user's own
}

// ArchiveQuery selects a page of one room's archive. The filters (Nick,
// Start, End) narrow what is counted and paged; After and Before are ids
// of archived messages (XEP-0059 paging) and exclusive. A page runs
// forward from the oldest match (or from After), or backward from the
// newest (Last, or from Before) when Before or Last is set; either way
// its messages are returned oldest first.
type ArchiveQuery struct {
	AccountID     int64
	Room          string
	Nick          string
	Start, End    time.Time // inclusive; zero for no limit
	After, Before string
	// IDs asks for those messages only (XEP-0313's ids field): all of
	// them must be in the archive (ErrNotFound otherwise).
	IDs  []string
	Last bool
	Max  int // the page's size; 0 asks only for the count
	// NoCount leaves ArchivePage.Count 0: a join's history needs no
	// count, and one query fewer runs.
	NoCount bool
}

// ArchivePage is a page of a room's archive.
type ArchivePage struct {
	Messages []ArchivedMessage // oldest first
	// Complete says the page reaches the end of the matches in the
	// direction it was read (the newest forward, the oldest backward).
	Complete bool
	Count    int // how many messages match the filters, all pages
}

// OutboxItem is one message waiting to be delivered.
type OutboxItem struct {
	ID           int64
	AccountID    int64
	Direction    Direction
	Conversation string // ordering key: items of one (account, direction, conversation) are delivered in ID order
	IdemKey      string // idempotency key: stanza id, Message-ID, "UIDVALIDITY:UID", MessageSid...; "" = no deduplication
	Payload      []byte // opaque (JSON of a neutral message)
	Attempts     int
	NextAttempt  time.Time
	LastError    string
	Created      time.Time
}

// Store is the gateway's persistence. Every method is safe for concurrent use.
// Times are returned in UTC.
type Store interface {
	// Accounts. (Domain, Transport, JID) is unique.

	// PutAccount inserts or updates the account by (Domain, Transport, JID)
	// (a.ID is ignored on input) and sets a.ID, a.Created and a.Updated.
	PutAccount(ctx context.Context, a *Account) error
	// GetAccount returns ErrNotFound if there is no such account.
	GetAccount(ctx context.Context, domain, transport, jid string) (*Account, error) // the main account (label "")
	GetAccountLabel(ctx context.Context, domain, transport, jid, label string) (*Account, error)
	// GetAccountByID returns ErrNotFound if there is no such account.
	GetAccountByID(ctx context.Context, id int64) (*Account, error)
	// ListAccounts returns accounts ordered by JID; domain or transport "" matches any.
	ListAccounts(ctx context.Context, domain, transport string) ([]*Account, error)
	// DeleteAccount deletes the account and, in the same transaction, its
	// state, mappings, queued outbox items and delivered keys. ErrNotFound if absent.
	DeleteAccount(ctx context.Context, id int64) error

	// Per-account transport state (e.g. "INBOX.uidvalidity"): small key/value strings.

	// GetState returns ErrNotFound if the key is absent.
	GetState(ctx context.Context, accountID int64, key string) (string, error)
	SetState(ctx context.Context, accountID int64, key, value string) error
	// DeleteState deletes the key; deleting an absent key is not an error.
	DeleteState(ctx context.Context, accountID int64, key string) error

	// Message ID mapping between XMPP stanza ids and legacy ids, per account,
	// for receipts, threads and corrections.

	// PutMapping records that xmppID and legacyID name the same message. An
	// xmppID maps to one legacyID (a later PutMapping replaces it); several
	// xmppIDs may map to the same legacyID.
	PutMapping(ctx context.Context, accountID int64, xmppID, legacyID string) error
	// PutMappings is PutMapping for several mappings in one commit.
	PutMappings(ctx context.Context, ms []Mapping) error
	// LegacyID returns ErrNotFound if xmppID is not mapped.
	LegacyID(ctx context.Context, accountID int64, xmppID string) (string, error)
	// XMPPID returns the first xmppID recorded for legacyID (the id a
	// correction or receipt must refer to), or ErrNotFound.
	XMPPID(ctx context.Context, accountID int64, legacyID string) (string, error)
	// PruneMappings deletes mappings recorded before the given time and
	// returns how many it deleted.
	PruneMappings(ctx context.Context, before time.Time) (int, error)

	// Durable outbox.

	// Enqueue commits the item durably before returning. If an item with the
	// same (AccountID, Direction, IdemKey) is queued now, or was delivered
	// within DedupeWindow and not yet pruned, it inserts nothing and returns
	// dup=true and the existing id. An empty IdemKey is never a duplicate.
	// On insert it sets it.ID and it.Created, and it.NextAttempt to now if zero.
	Enqueue(ctx context.Context, it *OutboxItem) (id int64, dup bool, err error)
	// Due returns up to limit (<= 0: no limit) items of dir whose NextAttempt
	// <= now, but only the head (lowest ID) of each (AccountID, Direction,
	// Conversation) queue, so order per conversation holds even while the
	// head waits for a retry. Ordered by ID.
	Due(ctx context.Context, dir Direction, now time.Time, limit int) ([]*OutboxItem, error)
	// Done deletes a delivered item and records its idempotency key as
	// delivered, in one transaction. ErrNotFound if the item is not queued.
	Done(ctx context.Context, id int64) error
	// MakeDue makes an account's queued items of one direction due now
	// (their session just connected), and says how many were waiting.
	MakeDue(ctx context.Context, accountID int64, dir Direction) (int64, error)
	// DoneMany is Done for several items in one commit.
	DoneMany(ctx context.Context, ids []int64) error
	// Retry records a failed attempt: Attempts++, NextAttempt=next (zero:
	// now), LastError=errText. ErrNotFound if the item is not queued.
	Retry(ctx context.Context, id int64, next time.Time, errText string) error
	// Postpone makes an item wait until next (zero: now) without counting
	// an attempt, for a wait that is no failure of the item (the XMPP link
	// is down, the user's session is not connected): NextAttempt=next,
	// LastError=reason, Attempts unchanged. ErrNotFound if the item is not
	// queued.
	Postpone(ctx context.Context, id int64, next time.Time, reason string) error
	// RecordDelivered records idempotency keys of messages delivered
	// without passing through the outbox (core's relay path), in one
	// commit, so a later Enqueue of the same key is a duplicate.
	RecordDelivered(ctx context.Context, keys []DeliveredKey) error
	// Pending counts queued items; accountID 0 = all accounts, dir "" = both directions.
	Pending(ctx context.Context, accountID int64, dir Direction) (int, error)
	// NextDue returns the earliest NextAttempt among the heads of the
	// conversation queues of dir (the items Due can return), or ErrNotFound
	// if none is queued, so a worker can sleep until then. Items behind a
	// waiting head are not counted: they cannot be sent before it.
	NextDue(ctx context.Context, dir Direction) (time.Time, error)
	// PruneDelivered forgets idempotency keys delivered before the given
	// time and returns how many it deleted.
	PruneDelivered(ctx context.Context, before time.Time) (int, error)

	// Runtime settings (operator changes persisted at runtime), a plain key/value table.

	// GetSetting returns ErrNotFound if the key is absent.
	GetSetting(ctx context.Context, key string) (string, error)
	SetSetting(ctx context.Context, key, value string) error

	// Contacts: legacy addresses an account exchanged messages with.
	// PutContact records one as seen now (a non-empty name replaces the
	// stored one) and reports whether it is new.
	PutContact(ctx context.Context, accountID int64, address, name string) (isNew bool, err error)
	GetContact(ctx context.Context, accountID int64, address string) (*Contact, error) // ErrNotFound
	// ListContacts returns up to limit contacts (<= 0: all), most recently seen first.
	ListContacts(ctx context.Context, accountID int64, limit int) ([]*Contact, error)
	// SetContactPushed records whether the contact is in the user's roster.
	SetContactPushed(ctx context.Context, accountID int64, address string, pushed bool) error // ErrNotFound
	// SetContactRemoved records whether the user removed the contact from
	// their roster (unsubscribed from its presence).
	SetContactRemoved(ctx context.Context, accountID int64, address string, removed bool) error // ErrNotFound

	// Rooms' message archive.

	// ArchiveRoomMessages records messages in one commit; one whose
	// (AccountID, Room, ID) is archived already is skipped.
	ArchiveRoomMessages(ctx context.Context, ms []ArchivedMessage) error
	// QueryRoomArchive returns a page of a room's archive; ErrNotFound
	// (wrapped) if After or Before names no archived message.
	QueryRoomArchive(ctx context.Context, q ArchiveQuery) (ArchivePage, error)
	// ClearRoomArchive deletes an account's archived messages.
	ClearRoomArchive(ctx context.Context, accountID int64) error
	// PruneRoomArchive deletes the archived messages older than before of
	// the accounts of one transport on one domain, and returns how many
	// it deleted.
	PruneRoomArchive(ctx context.Context, domain, transport string, before time.Time) (int, error)

	// Ping checks the database is writable by committing a tiny write (used by /readyz).
	Ping(ctx context.Context) error
	Close() error
}
