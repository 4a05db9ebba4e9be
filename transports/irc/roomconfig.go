package irc

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ergochat/irc-go/ircmsg"
	"mellium.im/xmpp/stanza"

	"transportd/core"
)

// A channel's modes as its room's configuration (core.RoomConfigurer):
// MODE #channel, answered by 324 RPL_CHANNELMODEIS, is read as XEP-0045's
// room configuration form (+m moderated, +i invitation only, +s or +p
// not listed, +t subject locked, +k password, +l most occupants); a
// submitted form is the MODE line from the modes read to the ones asked.

type modeResult struct {
	rc  core.RoomConfig
	err error
}

// modeReq is one RoomConfig waiting for its channel's modes.
type modeReq struct {
	folded string
	at     time.Time // MODE sent
	reply  chan modeResult
}

type evRoomConfig struct {
	room string
	req  *modeReq
}

type evConfigure struct {
	room     string
	old, new core.RoomConfig
	reply    chan error
}

// RoomConfig implements core.RoomConfigurer.
func (s *session) RoomConfig(ctx context.Context, room string) (core.RoomConfig, error) {
	req := &modeReq{reply: make(chan modeResult, 1)}
	r, err := await(ctx, s, evRoomConfig{room: room, req: req}, req.reply, "the IRC server did not send the channel's modes in time")
	if err != nil {
		return core.RoomConfig{}, err
	}
	return r.rc, r.err
}

// ConfigureRoom implements core.RoomConfigurer.
func (s *session) ConfigureRoom(ctx context.Context, room string, old, new core.RoomConfig) error {
	if new.Password != "" && !validMask(new.Password) {
		return core.NewError(stanza.NotAcceptable, "not an IRC channel key: one word, without commas, not starting with ':'")
	}
	reply := make(chan error, 1)
	err, werr := await(ctx, s, evConfigure{room: room, old: old, new: new, reply: reply}, reply, "the IRC connection did not take the change in time")
	if werr != nil {
		return werr
	}
	return err
}

// askModes sends MODE #channel for a request, unless the channel's modes
// were asked for already (less than banWait ago).
func (s *session) askModes(room string, req *modeReq) {
	n, ch := s.joinedChannel(room)
	if ch == nil {
		req.reply <- modeResult{err: core.NewError(stanza.NotAcceptable, "not in this channel on IRC now: join the room again")}
		return
	}
	req.folded, req.at = ch.folded, time.Now()
	asked := false
	rare := n.rare()
	for _, r := range rare.modeReqs {
		asked = asked || (r.folded == ch.folded && time.Since(r.at) < banWait)
	}
	if !asked {
		if err := n.send(ircmsg.MakeMessage(nil, "", "MODE", ch.name)); err != nil {
			req.reply <- modeResult{err: core.Temporary(err)}
			return
		}
	}
	rare.modeReqs = append(rare.modeReqs, req)
}

// gotModes takes a 324 line: me channel modes [params...].
func (n *network) gotModes(p []string) {
	if len(p) < 3 {
		return
	}
	n.endModes(p[1], readModes(n.feat, p[2], p[3:]), nil)
}

// endModes answers the requests for a channel's modes: with rc, or with
// err (the server refused them).
func (n *network) endModes(channel string, rc core.RoomConfig, err error) {
	if n.netRare == nil || len(n.modeReqs) == 0 {
		return
	}
	key := n.fold(channel)
	keep := n.modeReqs[:0]
	for _, r := range n.modeReqs {
		if r.folded == key || key == "" {
			r.reply <- modeResult{rc: rc, err: err}
			continue
		}
		keep = append(keep, r)
	}
	clear(n.modeReqs[len(keep):])
	n.modeReqs = keep
	if len(keep) == 0 {
		n.modeReqs = nil
	}
}

// readModes reads a channel's modes (324's, all set: "+ntk key") as a
// room configuration.
// configModes are the channel modes readModes reads.
const configModes = "mistpkl"

func readModes(f *features, modes string, params []string) core.RoomConfig {
	var rc core.RoomConfig
	for i := 0; i < len(modes); i++ {
		c := modes[i]
		arg := ""
		if c != '+' && modeTakesArg(f, c, true) && len(params) > 0 {
			arg, params = params[0], params[1:]
		}
		switch c {
		case 'm':
			rc.Moderated = true
		case 'i':
			rc.MembersOnly = true
		case 's', 'p':
			rc.Hidden = true
		case 't':
			rc.LockedSubject = true
		case 'k':
			if validMask(arg) { // else no MODE -k could name it
				rc.Password = arg
			}
		case 'l':
			rc.MaxUsers, _ = strconv.Atoi(arg)
		}
	}
	return rc
}

// modeTakesArg reports whether a channel mode letter has a parameter
// when set (add) or unset, by the server's CHANMODES and PREFIX.
func modeTakesArg(f *features, c byte, add bool) bool {
	switch {
	case strings.IndexByte(f.prefixM, c) >= 0, strings.IndexByte(f.chanM[0], c) >= 0, strings.IndexByte(f.chanM[1], c) >= 0:
		return true
	case strings.IndexByte(f.chanM[2], c) >= 0:
		return add
	}
	return false
}

// configure sends the MODE lines that make a channel's modes new, if the
// user is one of its operators.
func (s *session) configure(ev evConfigure) {
	n, ch := s.joinedChannel(ev.room)
	if ch == nil {
		ev.reply <- core.NewError(stanza.NotAcceptable, "not in this channel on IRC now: join the room again")
		return
	}
	if !n.isOperator(ch) {
		ev.reply <- core.NewError(stanza.Forbidden, "only the channel's operators can change its modes, and you are not one of "+ch.name+"'s")
		return
	}
	for _, m := range configLines(n.feat, ch.name, ev.old, ev.new) {
		if err := n.send(m); err != nil {
			ev.reply <- core.Temporary(err)
			return
		}
	}
	ev.reply <- nil
}

// isOperator reports whether the user holds a channel operator's prefix
// mode (o, or one above it) in ch; true when the server has no o.
func (n *network) isOperator(ch *channel) bool {
	op := strings.IndexByte(n.feat.prefixM, 'o')
	if op < 0 {
		return true
	}
	self := ch.members.get(n.fold(n.me.nick))
	if self == nil {
		return false
	}
	for i := 0; i <= op; i++ {
		if strings.IndexByte(self.modes, n.feat.prefixM[i]) >= 0 {
			return true
		}
	}
	return false
}

// modeChange is one mode letter set (+) or unset (-), with its parameter.
type modeChange struct {
	sign, mode byte
	arg        string
}

// configLines are the MODE lines from old to new, at most MODES changes
// (ISUPPORT; 3 unless said) a line. A letter the server lacks (no +p, say)
// is not sent.
func configLines(f *features, channel string, old, new core.RoomConfig) []ircmsg.Message {
	var ch []modeChange
	has := func(c byte) bool {
		for _, g := range f.chanM {
			if strings.IndexByte(g, c) >= 0 {
				return true
			}
		}
		return false
	}
	flag := func(c byte, was, is bool) {
		switch {
		case was == is || !has(c):
		case is:
			ch = append(ch, modeChange{'+', c, ""})
		default:
			ch = append(ch, modeChange{'-', c, ""})
		}
	}
	flag('m', old.Moderated, new.Moderated)
	flag('i', old.MembersOnly, new.MembersOnly)
	flag('s', old.Hidden, new.Hidden)
	if !new.Hidden && old.Hidden {
		ch = append(ch, modeChange{'-', 'p', ""}) // +p, the older "private"
	}
	flag('t', old.LockedSubject, new.LockedSubject)
	if old.Password != new.Password && has('k') {
		if old.Password != "" {
			// The key is removed by naming it; a new one is set after.
			ch = append(ch, modeChange{'-', 'k', old.Password})
		}
		if new.Password != "" {
			ch = append(ch, modeChange{'+', 'k', new.Password})
		}
	}
	if old.MaxUsers != new.MaxUsers && has('l') {
		if new.MaxUsers > 0 {
			ch = append(ch, modeChange{'+', 'l', strconv.Itoa(new.MaxUsers)})
		} else {
			ch = append(ch, modeChange{'-', 'l', ""})
		}
	}
	if !has('p') {
		ch = slices.DeleteFunc(ch, func(c modeChange) bool { return c.mode == 'p' })
	}
	per := 3
	if v, err := strconv.Atoi(f.m["MODES"]); err == nil && v > 0 {
		per = v
	}
	var out []ircmsg.Message
	for len(ch) > 0 {
		k := min(per, len(ch))
		var modes []byte
		params := []string{channel, ""}
		sign := byte(0)
		for _, c := range ch[:k] {
			if c.sign != sign {
				modes = append(modes, c.sign)
				sign = c.sign
			}
			modes = append(modes, c.mode)
			if c.arg != "" {
				params = append(params, c.arg)
			}
		}
		params[1] = string(modes)
		out = append(out, ircmsg.MakeMessage(nil, "", "MODE", params...))
		ch = ch[k:]
	}
	return out
}
