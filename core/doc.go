// Package core is transportd's host: the XEP-0114 component links, the
// XMPP-facing behaviour every transport shares (service discovery, in-band
// registration, XEP-0100 presence and address translation, ad-hoc commands,
// version and ping), the per-account sessions of registered users, the
// durable outbox in both directions, and the HTTP listener with health and
// metrics.
//
// Core never speaks a foreign protocol and never imports a transport:
// transports implement Transport and register themselves by name. A
// transport never builds XML: it gets and returns neutral Messages.
//
// Every IQ get or set core receives gets exactly one answer, a handler never
// ends the component stream, and every stanza core writes goes through one
// function (link.send) that guarantees a from at the component's domain and
// a non-empty to.
//
// An idle account costs no goroutine of core's: its events are handled by
// a goroutine started per burst of them (user.drain). A session that
// implements SessionStarter keeps none of its own either; any other runs
// on a goroutine of its own (Session.Run).
package core
