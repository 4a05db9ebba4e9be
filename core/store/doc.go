// Package store is transportd's persistence: registered accounts, per-account
// transport state, the mapping between XMPP stanza ids and legacy message ids,
// the durable outbox of messages in both directions, and runtime settings.
//
// Everything goes through the [Store] interface, every method of which takes
// a context first. [SQLite] (github.com/mattn/go-sqlite3) is the only
// implementation today; its schema is embedded and upgraded on [Open] by
// numbered migrations, and it refuses a database written by a newer
// transportd.
//
// The outbox is what lets the gateway acknowledge a message to its sender
// before it is delivered: [Store.Enqueue] returns only after the item is
// committed to disk (synchronous=FULL; concurrent outbox writes share one
// commit), deduplicates by idempotency key, and
// [Store.Due] hands out only the head of each conversation so delivery order
// per conversation survives retries and restarts.
//
// What this package must never do:
//   - see plaintext secrets: [Account.Secrets] is sealed by the caller
//     (package registration) and stored as opaque bytes; Fields holds only
//     non-secret values. Nothing here encrypts, decrypts or logs them;
//   - interpret payloads: outbox payloads are opaque bytes;
//   - import core, a transport or anything XMPP: it is a leaf package that
//     everything else may import.
package store
