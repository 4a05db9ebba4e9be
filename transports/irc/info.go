package irc

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/registration"
)

// The "IRC connections" and "Disconnect from a network" ad-hoc commands:
// biboumi's "Get connection information" and "Disconnect from the IRC
// server", for the user's own connections.

const (
	nodeConnections = "irc-connections"
	nodeDisconnect  = "irc-disconnect"
)

// netInfo is what the commands show of one network.
type netInfo struct {
	server     string
	port       int
	tls        bool
	pinned     bool // TLS certificate trusted by its fingerprint
	charset    string
	chanSets   string // channels with their own character set
	auth       string
	connected  bool
	since      time.Time
	nick       string
	host       string
	caps       []string
	channels   []string // joined, with the rooms the user is in marked
	queued     int      // lines waiting for the flood limiter
	lastErr    string
	persistent bool
	contacts   int    // the user's contacts on this network (in the roster)
	watched    int    // of those, how many the server is asked about
	watchLimit string // the server's MONITOR limit; "ison" without MONITOR
	floodBurst int
	floodRate  float64
}

type evNetInfo struct{ reply chan []netInfo }

type evDisconnect struct{ server, reason string }

// netInfos asks the session's drain for its networks.
func (s *session) netInfos(ctx context.Context) ([]netInfo, error) {
	reply := make(chan []netInfo, 1)
	return await(ctx, s, evNetInfo{reply: reply}, reply, "the IRC session did not answer in time")
}

// sessionInfos are the user's session and its networks, for a command;
// a response when the command ends there.
func (t *Transport) sessionInfos(ctx context.Context, req *core.CommandRequest) (*session, []netInfo, *core.CommandResponse) {
	s := t.session(req.Account.ID)
	if s == nil {
		return nil, nil, noSession()
	}
	infos, err := s.netInfos(ctx)
	if err != nil {
		return nil, nil, &core.CommandResponse{Err: err}
	}
	if len(infos) == 0 {
		return nil, nil, &core.CommandResponse{Note: "Not connected to any IRC network: join a room (#channel%server at this gateway) to connect."}
	}
	return s, infos, nil
}

// infos handles evNetInfo (drain only).
func (s *session) infos() []netInfo {
	var out []netInfo
	for _, n := range s.nets {
		in := netInfo{
			server: n.server, port: n.cfg.port, tls: n.cfg.tls, pinned: n.cfg.fingerprint != nil,
			charset: n.cfg.charset, chanSets: channelCharsets(n.cfg.chanCharsets), auth: n.cfg.auth, nick: n.me.nick, host: n.me.host,
			lastErr: n.lastError(), persistent: s.persistent(),
			floodBurst: n.cfg.floodBurst, floodRate: n.cfg.floodRate,
		}
		if c := n.conn; c != nil {
			in.connected = true
			in.since = time.Unix(c.upAt, 0)
			in.queued = c.queued()
			in.caps = n.caps.names()
			in.contacts = len(s.watch[n.server])
			if n.watchState != nil {
				in.watched = len(n.monitored)
			}
			in.watchLimit = "ison"
			if limit, ok := n.feat.m["MONITOR"]; ok {
				in.watchLimit = limit
			}
		}
		for _, ch := range n.sortedChannels() {
			if !ch.joined {
				continue
			}
			name := ch.name
			if !ch.xmpp {
				name += " (not in the room)"
			}
			in.channels = append(in.channels, name)
		}
		out = append(out, in)
	}
	slices.SortFunc(out, func(a, b netInfo) int { return strings.Compare(a.server, b.server) })
	return out
}

// text is one network's paragraph of the "IRC connections" note.
func (in netInfo) text(now time.Time) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s, port %d", in.server, in.port)
	switch {
	case in.tls && in.pinned:
		b.WriteString(", TLS (certificate trusted by its fingerprint)")
	case in.tls:
		b.WriteString(", TLS")
	default:
		b.WriteString(", no TLS")
	}
	if in.charset != "" {
		b.WriteString(", character set " + in.charset)
	}
	if in.chanSets != "" {
		b.WriteString(" (channels: " + in.chanSets + ")")
	}
	if !in.connected {
		b.WriteString("\nNot connected")
		if in.lastErr != "" {
			b.WriteString(": " + in.lastErr)
		}
		return b.String()
	}
	fmt.Fprintf(&b, "\nConnected since %s (%s)", in.since.UTC().Format("2006-01-02 15:04 MST"), now.Sub(in.since).Round(time.Second))
	fmt.Fprintf(&b, "\nNick: %s", in.nick)
	if in.host != "" {
		b.WriteString(", host " + in.host)
	}
	switch in.auth {
	case authSASL:
		b.WriteString("\nLogin: SASL PLAIN")
	case authNickServ:
		b.WriteString("\nLogin: NickServ")
	case authPass:
		b.WriteString("\nLogin: server password")
	}
	if len(in.channels) > 0 {
		b.WriteString("\nChannels: " + strings.Join(in.channels, ", "))
	} else {
		b.WriteString("\nChannels: none")
	}
	if len(in.caps) > 0 {
		b.WriteString("\nIRCv3: " + strings.Join(in.caps, ", "))
	}
	switch {
	case in.contacts == 0:
	case in.watchLimit == "ison":
		fmt.Fprintf(&b, "\nContacts watched: %d (asked with USERHOST once a minute: the server has no MONITOR)", in.contacts)
	case in.watched < in.contacts:
		fmt.Fprintf(&b, "\nContacts watched: %d of %d (the server's MONITOR limit is %s)", in.watched, in.contacts, in.watchLimit)
	default:
		fmt.Fprintf(&b, "\nContacts watched: %d", in.watched)
	}
	fmt.Fprintf(&b, "\nFlood control: %d lines at once, then %s a second", in.floodBurst, strconv.FormatFloat(in.floodRate, 'g', -1, 64))
	if in.queued > 0 {
		fmt.Fprintf(&b, "\nLines waiting for flood control: %d", in.queued)
	}
	return b.String()
}

func noSession() *core.CommandResponse {
	return &core.CommandResponse{Err: core.NewError(stanza.UnexpectedRequest,
		"you have no IRC session right now: be online with this gateway in your contacts, or join a channel, then run this command again")}
}

// connections is the "IRC connections" command.
func (t *Transport) connections(ctx context.Context, req *core.CommandRequest) *core.CommandResponse {
	_, infos, res := t.sessionInfos(ctx, req)
	if res != nil {
		return res
	}
	now := time.Now()
	parts := make([]string, len(infos))
	for i, in := range infos {
		parts[i] = in.text(now)
	}
	if infos[0].persistent {
		parts = append(parts, "You stay connected while offline (registration setting).")
	}
	return &core.CommandResponse{Note: strings.Join(parts, "\n\n")}
}

// disconnectCommand is the "Disconnect from a network" command: the
// network's rooms are left, the connection quits with the message given.
func (t *Transport) disconnectCommand(ctx context.Context, req *core.CommandRequest) *core.CommandResponse {
	s, infos, res := t.sessionInfos(ctx, req)
	if res != nil {
		return res
	}
	var opts []registration.Option
	for _, in := range infos {
		label := in.server
		if len(in.channels) > 0 {
			label += " (" + strings.Join(in.channels, ", ") + ")"
		}
		opts = append(opts, registration.Option{Label: label, Value: in.server})
	}
	form := registration.Schema{
		Title:        "Disconnect from an IRC network",
		Instructions: "You leave the network's rooms and the gateway quits it. Joining one of its rooms connects again.",
		Fields: []registration.Field{
			{Var: fNetwork, Label: "IRC network", Type: registration.ListSingle, Required: true, Default: infos[0].server, Options: opts},
			{Var: "reason", Label: "Quit message (empty: the gateway's)", Type: registration.TextSingle, MaxLen: 300},
		},
	}
	if req.Stage == 0 {
		return &core.CommandResponse{Form: form.RenderForm(nil)}
	}
	vals, err := form.Validate(req.Form)
	if err != nil {
		return &core.CommandResponse{Err: err}
	}
	if err := s.postCtx(ctx, evDisconnect{server: vals[fNetwork], reason: oneLine(vals["reason"])}); err != nil {
		return &core.CommandResponse{Err: err}
	}
	return &core.CommandResponse{Note: "Disconnected from " + vals[fNetwork] + "."}
}

// disconnect handles evDisconnect (drain only).
func (s *session) disconnect(server, reason string) {
	n := s.nets.get(server)
	if n == nil {
		return
	}
	text := "disconnected from " + server + " at your request"
	for _, ch := range n.sortedChannels() {
		switch {
		case ch.reported:
			s.rooms.RoomLeft(ch.room, n.me.nick, text, false)
		case ch.xmpp:
			s.roomError(ch.room, core.NewError(stanza.RemoteServerNotFound, text))
		}
		ch.xmpp, ch.reported = false, false
	}
	for _, r := range n.waiting {
		r.answer("", core.NewError(stanza.RecipientUnavailable, text))
	}
	n.waiting = nil
	n.failLists(core.NewError(stanza.RemoteServerNotFound, text))
	s.logger().Info("IRC network disconnected at the user's request", "irc_server", server)
	n.drop(cmp.Or(reason, s.opts.quitMessage))
}
