// Package irc is the IRC transport: IRC channels as XEP-0045 group chats
// and IRC users as XMPP contacts, with biboumi's addressing so that users
// can switch between the two gateways:
//
//	#chan%irc.example.org@irc.example.net        a channel (a MUC room)
//	#chan%irc.example.org@irc.example.net/nick   an occupant
//	nick%irc.example.org@irc.example.net         a private chat
//	irc.example.org@irc.example.net              the server itself (its
//	                                             notices; raw commands)
//
// Core plays the MUC service; this package only reports what happens on
// IRC (joins, parts, nick and mode changes, topics, messages) through the
// core.RoomSink and core.Sink, and turns what the user does into IRC lines.
//
// Each user's session owns one IRC connection per server, shared by all
// the user's resources and rooms. The session's state is owned by the
// goroutine draining its events (session.active), none while nothing
// happens. One poller reads every connection of the process, plain or
// TLS (poll_linux.go), and posts the lines to the sessions; without it
// (not Linux) each connection has a reader goroutine. A message from the
// user is written by the drain itself when the flood control (a token
// bucket) lets it through and the socket takes it at once (plain
// connections: conn.flush); otherwise, while lines wait to be written, a
// writer goroutine applies the flood control and writes them. A message
// from the user is sent at most once: see
// session.Send. Connections are
// written by hand on top of ircmsg (parsing and serialising lines),
// ircfmt and ircutils from github.com/ergochat/irc-go (lines are cut by
// hand, not by ircreader, so that an idle connection keeps no read
// buffer: see conn.nextLine);
// ircevent's own goroutines, callbacks and fixed reconnect delay do not fit
// the one-goroutine-per-user model, so it is not used.
//
// What this package must never do: write a line that was not built by
// ircmsg from sanitised parameters (no CR, LF or NUL ever reaches the
// wire from user input), hand core text that XML cannot carry, log a
// password (SASL and NickServ lines are redacted in the wire trace), or
// block core: every GroupSession method only queues work.
package irc
