// Package jidesc implements XEP-0106 (JID Escaping) and the mapping between
// e-mail addresses and JID localparts that the e-mail transport uses
// (alice@example.org ↔ alice\40example.org@email.example.net).
//
// It is written by hand on purpose: the Escape/Unescape transformers in
// mellium.im/xmpp/jid v0.23.0 are broken. jid.Unescape picks the hex digits
// of an escape sequence from the wrong offset whenever the sequence is not at
// the start of its chunk, so `john.doe\40example.com` becomes
// "john.doe\x0eexample.com", and it indexes out of range and panics on a
// sequence at the end of the input such as `ab\5c` or `abcdefgh\40`. Do not
// call jid.Escape or jid.Unescape anywhere in transportd; use this package.
//
// The package is pure string manipulation: it does no I/O, never panics on
// any input, and never logs.
package jidesc
