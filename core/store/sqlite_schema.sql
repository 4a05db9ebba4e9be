-- transportd SQLite schema: the whole current schema, applied to an empty
-- database. Times are Unix nanoseconds (INTEGER, UTC). Changes to an existing
-- database go in sqliteMigrations (sqlite.go) AND here.

CREATE TABLE account (
	id INTEGER PRIMARY KEY,
	domain TEXT NOT NULL,
	transport TEXT NOT NULL,
	jid TEXT NOT NULL,
	label TEXT NOT NULL DEFAULT '',    -- '' for the user's main account; names the others
	fields TEXT NOT NULL DEFAULT '{}', -- JSON object of non-secret fields
	secrets BLOB,                      -- sealed by the caller, opaque here
	enabled INTEGER NOT NULL DEFAULT 1,
	created INTEGER NOT NULL,
	updated INTEGER NOT NULL,
	UNIQUE(domain, transport, jid, label)
);

CREATE INDEX account_jid ON account(jid);

CREATE TABLE account_state (
	account INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
	key TEXT NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY(account, key)
);

CREATE TABLE message_id (
	account INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
	xmpp_id TEXT NOT NULL,
	legacy_id TEXT NOT NULL,
	created INTEGER NOT NULL,
	UNIQUE(account, xmpp_id)
);

CREATE INDEX message_id_legacy ON message_id(account, legacy_id);
CREATE INDEX message_id_created ON message_id(created);

-- AUTOINCREMENT: ids are never reused, so ID order is enqueue order and an id
-- remembered in outbox_delivered never names a later item.
CREATE TABLE outbox (
	id INTEGER PRIMARY KEY AUTOINCREMENT,
	account INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
	direction TEXT NOT NULL CHECK(direction IN ('to_legacy', 'to_xmpp')),
	conversation TEXT NOT NULL,
	idem_key TEXT, -- NULL: no deduplication
	payload BLOB NOT NULL,
	attempts INTEGER NOT NULL DEFAULT 0,
	next_attempt INTEGER NOT NULL,
	last_error TEXT NOT NULL DEFAULT '',
	created INTEGER NOT NULL,
	UNIQUE(account, direction, idem_key)
);

-- Finds the head of a conversation queue.
CREATE INDEX outbox_conversation ON outbox(account, direction, conversation, id);
CREATE INDEX outbox_due ON outbox(direction, next_attempt);

-- Idempotency keys of delivered items, kept for DedupeWindow.
CREATE TABLE outbox_delivered (
	account INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
	direction TEXT NOT NULL,
	idem_key TEXT NOT NULL,
	outbox_id INTEGER NOT NULL,
	delivered INTEGER NOT NULL,
	PRIMARY KEY(account, direction, idem_key)
);

CREATE INDEX outbox_delivered_at ON outbox_delivered(delivered);

CREATE TABLE setting (
	key TEXT PRIMARY KEY,
	value TEXT NOT NULL
);

-- One row, rewritten by Ping to prove the database takes writes.
CREATE TABLE ping (
	id INTEGER PRIMARY KEY CHECK(id = 1),
	at INTEGER NOT NULL
);

-- Legacy contacts an account exchanged messages with, for the roster.
CREATE TABLE contact (
	account INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
	address TEXT NOT NULL,
	name TEXT NOT NULL DEFAULT '',
	pushed INTEGER NOT NULL DEFAULT 0, -- added to the user's roster
	last_seen INTEGER NOT NULL,
	-- the user removed it from the roster (unsubscribed): its presence is
	-- not watched, and the gateway does not put it back (migration 2 -> 3)
	removed INTEGER NOT NULL DEFAULT 0,
	PRIMARY KEY(account, address)
);

CREATE INDEX contact_recent ON contact(account, last_seen);

-- Messages of the rooms an account is in (XEP-0313 on a room), each
-- account's copy of what its own connection to the network saw. seq is
-- archive order; id is the stanza-id the room gave the message (the
-- network's message id, or one core made). Mirrors sqlRoomArchiveSchema
-- (sqlite_archive.go), migration 1 -> 2.
CREATE TABLE room_archive (
	seq INTEGER PRIMARY KEY AUTOINCREMENT,
	account INTEGER NOT NULL REFERENCES account(id) ON DELETE CASCADE,
	room TEXT NOT NULL,
	id TEXT NOT NULL,
	at INTEGER NOT NULL,
	nick TEXT NOT NULL DEFAULT '',
	body TEXT NOT NULL,
	xmpp_id TEXT NOT NULL DEFAULT '',
	UNIQUE(account, room, id)
);

-- An index on (account, room) holds the rowid (seq) in order too: a
-- room's page of messages is one range scan.
CREATE INDEX room_archive_room ON room_archive(account, room);
CREATE INDEX room_archive_at ON room_archive(at);
