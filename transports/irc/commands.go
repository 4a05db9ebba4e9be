package irc

import (
	"cmp"
	"context"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"

	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/registration"
)

// The "Configure network" ad-hoc command: per-network settings (nick,
// user name, real name, TLS, port, channels joined on connect), stored in
// the account's state by the live session and used from its next
// connection to that network. Passwords stay in the registration, which
// core keeps encrypted: the account state is not.

const nodeConfigure = "configure-network"

// Commands implements core.Commander.
func (t *Transport) Commands() []core.Command {
	return []core.Command{{
		Node: nodeConfigure, Name: "Configure network", Registered: true,
		Execute: t.configureNetwork,
	}, {
		Node: nodeConfigureChannel, Name: "Configure channel", Registered: true,
		Execute: t.configureChannel,
	}, {
		Node: nodeConfigureRoom, Name: "Configure", Registered: true, Room: true,
		Execute: t.configureRoom,
	}, {
		Node: nodeConfigureRoom, Name: "Configure", Registered: true, Contact: t.isServer,
		Execute: t.configureServer,
	}, {
		Node: nodeConnections, Name: "IRC connections", Registered: true,
		Execute: t.connections,
	}, {
		Node: nodeDisconnect, Name: "Disconnect from a network", Registered: true,
		Execute: t.disconnectCommand,
	}}
}

func networkForm(defaultServer string) registration.Schema {
	return registration.Schema{
		Title:        "Configure an IRC network",
		Instructions: "Which IRC server (like irc.libera.chat)?",
		Fields: []registration.Field{
			{Var: fNetwork, Label: "IRC server", Type: registration.TextSingle, Required: true, Default: defaultServer, Validate: checkHost, MaxLen: 253},
		},
	}
}

// netSettingsForm is the settings form of one network; withPassword
// adds the password fields, where core keeps them sealed.
func netSettingsForm(server string, withPassword bool) registration.Schema {
	s := netSettingsFields(server)
	if withPassword {
		s.Fields = append(s.Fields,
			registration.Field{Var: fAuth, Label: "Authentication", Type: registration.ListSingle, Default: authNone, Options: authOptions("None (forget the password)")},
			registration.Field{Var: fPassword, Label: "Password (empty: keep the stored one)", Type: registration.TextPrivate, Secret: true, MaxLen: 400},
			commandsField(true))
	}
	return s
}

func netSettingsFields(server string) registration.Schema {
	return registration.Schema{
		Title: "IRC network " + server,
		Instructions: "Settings for " + server + "; empty fields use your registration's defaults. " +
			"They apply from the next connection (the Reconnect command starts one now), the character set and flood control at once. " +
			"Passwords are kept encrypted: here where the gateway offers it, else in the registration (one network).",
		Fields: []registration.Field{
			{Var: fNick, Label: "Nick", Type: registration.TextSingle, Validate: checkNick, MaxLen: 64},
			{Var: fUsername, Label: "User name (ident)", Type: registration.TextSingle, Validate: checkUsername, MaxLen: 32},
			{Var: fRealname, Label: "Real name", Type: registration.TextSingle, MaxLen: 128},
			{Var: fTLS, Label: "TLS", Type: registration.ListSingle, Default: "default", Options: []registration.Option{
				{Label: "Gateway default", Value: "default"}, {Label: "On", Value: "true"}, {Label: "Off", Value: "false"}}},
			{Var: fPort, Label: "Port (empty: 6697 with TLS, 6667 without)", Type: registration.TextSingle, Validate: checkPort, MaxLen: 5},
			{Var: fAutojoin, Label: "Channels to join on connect (#a, #b)", Type: registration.TextSingle, Validate: checkChannels},
			{Var: fFingerprint, Label: "Trusted TLS certificate (SHA-256 fingerprint), for a server whose certificate no authority signed", Type: registration.TextSingle, Validate: checkFingerprint, MaxLen: 100},
			{Var: fEncoding, Label: "Character set", Desc: "For a network whose users do not write UTF-8: their lines are read in it, yours written in it", Type: registration.ListSingle, Default: "default",
				Options: charsetOptions(registration.Option{Label: "As registered (UTF-8 unless set there)", Value: "default"})},
			{Var: fFloodBurst, Label: "Flood control: lines sent at once (empty: the gateway's)", Type: registration.TextSingle, Validate: checkFloodBurst, MaxLen: 5},
			{Var: fFloodRate, Label: "Flood control: lines a second after them (empty: the gateway's)", Desc: "More than a network allows gets you disconnected for flooding; a bouncer of your own takes more", Type: registration.TextSingle, Validate: checkFloodRate, MaxLen: 10},
		},
	}
}

func (t *Transport) configureNetwork(ctx context.Context, req *core.CommandRequest) *core.CommandResponse {
	s := t.session(req.Account.ID)
	if s == nil {
		return noSession()
	}
	o := t.options()
	switch req.Stage {
	case 0:
		form := networkForm(o.defaultServer)
		return &core.CommandResponse{Form: form.RenderForm(nil)}
	case 1:
		form := networkForm(o.defaultServer)
		vals, err := form.Validate(req.Form)
		if err != nil {
			return &core.CommandResponse{Err: err}
		}
		return netSettingsStage(ctx, s, &o, strings.ToLower(vals[fNetwork]))
	default:
		return netSaveStage(ctx, s, req)
	}
}

// configureServer is Configure on an IRC server's JID (biboumi's
// "configure" node there): the network's settings without asking which.
func (t *Transport) configureServer(ctx context.Context, req *core.CommandRequest) *core.CommandResponse {
	s, o, a, resp := t.commandTarget(req, req.Contact, kindServer, "not an IRC server's JID")
	if resp != nil {
		return resp
	}
	if req.Stage == 0 {
		return netSettingsStage(ctx, s, &o, a.server)
	}
	return netSaveStage(ctx, s, req)
}

// commandTarget is what a command on a room's or a server's JID works
// with: the user's session, the operator's options, and the JID's
// address (addr), which must be of kind (item-not-found, notIt, else); a
// response when the command ends there.
func (t *Transport) commandTarget(req *core.CommandRequest, addr string, kind addrKind, notIt string) (*session, options, address, *core.CommandResponse) {
	s := t.session(req.Account.ID)
	if s == nil {
		return nil, options{}, address{}, noSession()
	}
	a, err := parseAddress(addr, t.chanTypesOf)
	if err != nil || a.kind != kind {
		return nil, options{}, address{}, &core.CommandResponse{Err: core.NewError(stanza.ItemNotFound, notIt)}
	}
	return s, t.options(), a, nil
}

// isServer says whether a legacy address is an IRC server's.
func (t *Transport) isServer(addr string) bool {
	a, err := parseAddress(addr, nil) // a server's address needs no channel types
	return err == nil && a.kind == kindServer
}

// netSettingsStage shows a network's settings form.
func netSettingsStage(ctx context.Context, s *session, o *options, server string) *core.CommandResponse {
	if !o.allowedServer(server) {
		return &core.CommandResponse{Err: core.NewError(stanza.NotAllowed, "this gateway does not connect to "+server)}
	}
	ns, err := loadNetSettings(ctx, s.sink.Store(), server)
	if err != nil {
		return &core.CommandResponse{Err: err}
	}
	current := registration.Values{fNick: ns.Nick, fUsername: ns.Username, fRealname: ns.Realname, fTLS: ns.TLS, fAutojoin: strings.Join(ns.Autojoin, ", "), fAuth: ns.Auth}
	if fp, ok := parseFingerprint(ns.Fingerprint); ok {
		current[fFingerprint] = fingerprintText(fp)
	}
	current[fEncoding] = cmp.Or(ns.Encoding, "default")
	if ns.TLS == "" {
		current[fTLS] = "default"
	}
	if ns.Port > 0 {
		current[fPort] = strconv.Itoa(ns.Port)
	}
	if ns.FloodBurst > 0 {
		current[fFloodBurst] = strconv.Itoa(ns.FloodBurst)
	}
	if ns.FloodRate > 0 {
		current[fFloodRate] = strconv.FormatFloat(ns.FloodRate, 'g', -1, 64)
	}
	form := netSettingsForm(server, s.secrets() != nil)
	return &core.CommandResponse{Form: form.RenderForm(current), State: server}
}

// netSaveStage saves a network's settings form and hands them to the
// session.
func netSaveStage(ctx context.Context, s *session, req *core.CommandRequest) *core.CommandResponse {
	server, _ := req.State.(string)
	if server == "" {
		return &core.CommandResponse{Err: core.NewError(stanza.BadRequest, "start the command again")}
	}
	sec := s.secrets()
	form := netSettingsForm(server, sec != nil)
	vals, err := form.Validate(req.Form)
	if err != nil {
		return &core.CommandResponse{Err: err}
	}
	old, err := loadNetSettings(ctx, s.sink.Store(), server)
	if err != nil {
		return &core.CommandResponse{Err: err}
	}
	ns := netSettings{Nick: vals[fNick], Username: vals[fUsername], Realname: oneLine(vals[fRealname]), Autojoin: splitChannels(vals[fAutojoin]), Channels: old.Channels}
	if v := vals[fTLS]; v == "true" || v == "false" {
		ns.TLS = v
	}
	ns.Port, _ = strconv.Atoi(vals[fPort])
	ns.FloodBurst, _ = strconv.Atoi(vals[fFloodBurst])
	ns.FloodRate, _ = strconv.ParseFloat(vals[fFloodRate], 64)
	if fp, ok := parseFingerprint(vals[fFingerprint]); ok {
		ns.Fingerprint = hex.EncodeToString(fp)
	}
	if v := vals[fEncoding]; v == charsetUTF8 || charsetOf(v) != nil {
		ns.Encoding = v
	}
	ev := evNetConfig{server: server}
	if sec != nil {
		switch ns.Auth = vals[fAuth]; {
		case ns.Auth == authNone || ns.Auth == "":
			ns.Auth, ev.clearPw = "", true
			if err := sec.Delete(ctx, netPasswordKey(server)); err != nil {
				return &core.CommandResponse{Err: err}
			}
		case vals[fPassword] != "":
			if err := sec.Set(ctx, netPasswordKey(server), vals[fPassword]); err != nil {
				return &core.CommandResponse{Err: err}
			}
			ev.password = vals[fPassword]
		}
		switch cmds := strings.TrimSpace(vals[fCommands]); cmds {
		case "":
		case "-":
			ev.clearCmd = true
			if err := sec.Delete(ctx, netCommandsKey(server)); err != nil {
				return &core.CommandResponse{Err: err}
			}
		default:
			if err := sec.Set(ctx, netCommandsKey(server), cmds); err != nil {
				return &core.CommandResponse{Err: err}
			}
			ev.commands = cmds
		}
	}
	if err := saveNetSettings(ctx, s.sink.Store(), server, ns); err != nil {
		return &core.CommandResponse{Err: err}
	}
	ev.ns = ns
	_ = s.postCtl(ev) // in order with joins; a session that ended reads them at its start
	return &core.CommandResponse{Note: "Settings for " + server + " saved."}
}

func loadNetSettings(ctx context.Context, st core.StateStore, server string) (netSettings, error) {
	v, ok, err := st.Get(ctx, netStateKey(server))
	if err != nil || !ok {
		return netSettings{}, err
	}
	ns, err := decodeNetSettings(v)
	if err != nil {
		return netSettings{}, nil // unreadable: start again from the defaults
	}
	return ns, nil
}

func saveNetSettings(ctx context.Context, st core.StateStore, server string, ns netSettings) error {
	if err := st.Set(ctx, netStateKey(server), ns.encode()); err != nil {
		return err
	}
	var hosts []string
	if v, ok, err := st.Get(ctx, netIndexKey); err == nil && ok {
		_ = json.Unmarshal([]byte(v), &hosts)
	}
	if !slices.Contains(hosts, server) {
		hosts = append(hosts, server)
		slices.Sort(hosts)
		b, _ := json.Marshal(hosts)
		return st.Set(ctx, netIndexKey, string(b))
	}
	return nil
}
