package irc

import (
	"cmp"
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/registration"
)

// Configure channel: a channel's character set apart from its network's
// (biboumi's per-channel encodings: a Cyrillic channel on a network that
// otherwise writes Latin-1). Kept in the network's settings
// (netSettings.Channels) and applied at once to a live connection.

const (
	nodeConfigureChannel = "configure-channel"
	// nodeConfigureRoom is Configure on a room's JID, biboumi's node name.
	nodeConfigureRoom = "configure"
	fChannel          = "channel"
	// maxChanCharsets bounds the channels set apart on one network.
	maxChanCharsets = 100
	// charsetNetwork is the form's value for "as the network".
	charsetNetwork = "default"
)

func channelForm(defaultServer string) registration.Schema {
	return registration.Schema{
		Title:        "Configure an IRC channel",
		Instructions: "Which channel: its name (#chan) and server, or its room address's local part (#chan%irc.example.org)?",
		Fields: []registration.Field{
			{Var: fChannel, Label: "Channel", Type: registration.TextSingle, Required: true, Validate: checkChannelArg, MaxLen: maxNameLen + 254},
			{Var: fNetwork, Label: "IRC server (when the channel does not name one)", Type: registration.TextSingle, Default: defaultServer, Validate: checkHostOrEmpty, MaxLen: 253},
		},
	}
}

func chanSettingsForm(ch, server, netCharset string) registration.Schema {
	netLabel := "UTF-8"
	for _, c := range charsets {
		if c.name == netCharset {
			netLabel = c.label
		}
	}
	return registration.Schema{
		Title:        "IRC channel " + ch + " on " + server,
		Instructions: "Settings for " + ch + " on " + server + ". They apply at once.",
		Fields: []registration.Field{
			{Var: fEncoding, Label: "Character set", Desc: "For a channel whose users do not write what the rest of the network writes: its lines that are not UTF-8 are read in it, yours written in it",
				Type: registration.ListSingle, Default: charsetNetwork,
				Options: charsetOptions(registration.Option{Label: "As the network (" + netLabel + ")", Value: charsetNetwork})},
		},
	}
}

// splitChannelArg reads the form's channel: "#chan" on the form's server,
// or "#chan%server".
func splitChannelArg(v, server string) (ch, srv string) {
	v = strings.TrimSpace(v)
	if i := strings.LastIndexByte(v, '%'); i > 0 {
		return v[:i], strings.ToLower(v[i+1:])
	}
	return v, strings.ToLower(strings.TrimSpace(server))
}

func checkChannelArg(v string) error {
	ch, srv := splitChannelArg(v, "")
	if !validChannel(ch) || !isChanPrefix(ch[0], defaultChanTypes+"+!") {
		return fmt.Errorf("not a channel like #chan or #chan%%irc.example.org")
	}
	if srv != "" && !validHost(srv) {
		return fmt.Errorf("not a host name after %%: %s", srv)
	}
	return nil
}

func checkHostOrEmpty(v string) error {
	if strings.TrimSpace(v) == "" {
		return nil
	}
	return checkHost(v)
}

type chanState struct{ ch, server string }

func (t *Transport) configureChannel(ctx context.Context, req *core.CommandRequest) *core.CommandResponse {
	s := t.session(req.Account.ID)
	if s == nil {
		return noSession()
	}
	o := t.options()
	switch req.Stage {
	case 0:
		form := channelForm(o.defaultServer)
		return &core.CommandResponse{Form: form.RenderForm(nil)}
	case 1:
		form := channelForm(o.defaultServer)
		vals, err := form.Validate(req.Form)
		if err != nil {
			return &core.CommandResponse{Err: err}
		}
		ch, server := splitChannelArg(vals[fChannel], vals[fNetwork])
		if server == "" {
			return &core.CommandResponse{Err: core.NewError(stanza.BadRequest, "channel: name its server (#chan%irc.example.org) or fill in the IRC server")}
		}
		return chanSettingsStage(ctx, s, &o, req, ch, server)
	default:
		return chanSaveStage(ctx, s, req)
	}
}

// configureRoom is Configure on a channel's room JID (biboumi's
// "configure" node there): the same settings without asking which
// channel.
func (t *Transport) configureRoom(ctx context.Context, req *core.CommandRequest) *core.CommandResponse {
	s, o, a, resp := t.commandTarget(req, req.Room, kindChannel, "not an IRC channel's room")
	if resp != nil {
		return resp
	}
	if req.Stage == 0 {
		return chanSettingsStage(ctx, s, &o, req, a.name, cmp.Or(a.server, o.defaultServer))
	}
	return chanSaveStage(ctx, s, req)
}

// chanSettingsStage shows a channel's settings form.
func chanSettingsStage(ctx context.Context, s *session, o *options, req *core.CommandRequest, ch, server string) *core.CommandResponse {
	if server == "" {
		return &core.CommandResponse{Err: core.NewError(stanza.BadRequest, "this gateway has no default IRC server: name the channel's")}
	}
	if !o.allowedServer(server) {
		return &core.CommandResponse{Err: core.NewError(stanza.NotAllowed, "this gateway does not connect to "+server)}
	}
	ns, err := loadNetSettings(ctx, s.sink.Store(), server)
	if err != nil {
		return &core.CommandResponse{Err: err}
	}
	cur := registration.Values{fEncoding: cmp.Or(ns.Channels[strings.ToLower(ch)], charsetNetwork)}
	form := chanSettingsForm(ch, server, configFor(o, req.Account.Fields, server, ns, "", "").charset)
	return &core.CommandResponse{Form: form.RenderForm(cur), State: chanState{ch, server}}
}

// chanSaveStage saves a channel's settings form and hands them to the
// session.
func chanSaveStage(ctx context.Context, s *session, req *core.CommandRequest) *core.CommandResponse {
	st, ok := req.State.(chanState)
	if !ok {
		return &core.CommandResponse{Err: core.NewError(stanza.BadRequest, "start the command again")}
	}
	form := chanSettingsForm(st.ch, st.server, "")
	vals, err := form.Validate(req.Form)
	if err != nil {
		return &core.CommandResponse{Err: err}
	}
	ns, err := loadNetSettings(ctx, s.sink.Store(), st.server)
	if err != nil {
		return &core.CommandResponse{Err: err}
	}
	key := strings.ToLower(st.ch)
	chans := maps.Clone(ns.Channels)
	switch v := vals[fEncoding]; {
	case v == charsetUTF8 || charsetOf(v) != nil:
		if _, had := chans[key]; !had && len(chans) >= maxChanCharsets {
			return &core.CommandResponse{Err: core.NewError(stanza.NotAllowed, fmt.Sprintf("at most %d channels of %s have their own character set: set one of them back to the network's first", maxChanCharsets, st.server))}
		}
		if chans == nil {
			chans = map[string]string{}
		}
		chans[key] = v
	default:
		delete(chans, key)
	}
	if len(chans) == 0 {
		chans = nil
	}
	ns.Channels = chans
	if err := saveNetSettings(ctx, s.sink.Store(), st.server, ns); err != nil {
		return &core.CommandResponse{Err: err}
	}
	_ = s.postCtl(evNetConfig{server: st.server, ns: ns})
	return &core.CommandResponse{Note: "Settings for " + st.ch + " on " + st.server + " saved."}
}

// channelCharsets describes a network's channels set apart, for the
// connections' information: "#a koi8-r, #b utf-8".
func channelCharsets(chans map[string]string) string {
	var parts []string
	for _, ch := range slices.Sorted(maps.Keys(chans)) {
		parts = append(parts, ch+" "+chans[ch])
	}
	return strings.Join(parts, ", ")
}
