// Package registration implements the user-facing half of signing up for a
// transport: XEP-0077 in-band registration carrying XEP-0004 data forms, the
// same forms for XEP-0050 ad-hoc commands, validation of what the user
// submitted, and encryption at rest of the credentials the user gave.
//
// A transport declares a [Schema]: the fields it needs, which of them are
// secret, their defaults. Core fills the defaults from the domain's config,
// checks the schema once with [Schema.Check], renders it for a user with
// [Schema.Render] (or [Schema.RenderForm] inside a command), parses the
// user's answer with [ParseQuery] (or [ParseForm]), turns it into clean
// [Values] with [Schema.Validate], divides those with [Schema.Split] and
// seals the secret half with a [Sealer] before storing it.
//
// The package knows XML, because it is part of the XMPP-facing side, but
// nothing about any transport, the network, the store or the XMPP session:
// it reads and returns xml.TokenReaders, and it does no I/O besides that and
// reading random bytes. It does not log.
//
// Every error from parsing and validation is a [*FieldError]; its Condition
// is the stanza error condition to answer with ("bad-request" for something
// missing or malformed, "not-acceptable" for something well-formed but not
// allowed) and its Text is written for the user and names the field by its
// label and var.
//
// What this package must never do:
//
//   - put a submitted value into an error, whether the field is secret or
//     not (a user may type a password into the wrong box); errors name
//     fields, never their contents. A Field.Validate function supplied by a
//     transport is held to the same rule, since its error text is shown to
//     the user and logged.
//   - render the value of a Secret field, not even its default: a form shows
//     a secret that is set only as a note in its description.
//   - hand out or keep plaintext credentials beyond the call that needs
//     them: secrets are stored only as blobs from [Sealer.Seal], bound to
//     their account by additional data, and a Sealer prints no key material.
//
// Limits: [ParseQuery] and [ParseForm] refuse more than [MaxFields] fields,
// a value longer than [MaxValueLen] bytes and more than [MaxTotal] bytes in
// all, while reading tokens, so an oversized submission is refused before it
// is all in memory. They cannot bound a single token: encoding/xml reads one
// text node whole, so the XMPP stream reader must cap the size of a stanza.
package registration
