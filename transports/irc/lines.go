package irc

import (
	"errors"
	"strings"

	"github.com/ergochat/irc-go/ircmsg"
)

// Building the IRC messages the user's actions become. Every field from
// XMPP goes through here: text is cleaned of control characters (CR, LF
// and NUL included) and cut to fit, names are checked, and ircmsg
// serialises. conn.send refuses anything that still would not be one line.

var (
	errBadTarget = errors.New("not a valid IRC channel or nick")
	errNoRoom    = errors.New("the IRC server's name for you is too long to send anything")
)

// self is how the server shows us to others. A relayed line starts with
// ":nick!user@host ", which counts against the 512 bytes.
type self struct {
	nick, user, host string
}

func (s self) prefixLen() int {
	user, host := s.user, s.host
	if user == "" {
		user = "~xxxxxxxxxx" // USERLEN is 10 on most servers, plus '~'
	}
	if host == "" {
		host = strings.Repeat("x", 63)
	}
	return 1 + len(s.nick) + 1 + len(user) + 1 + len(host) + 1
}

// validTarget checks a channel or nick before it becomes a middle
// parameter.
func validTarget(t string) bool {
	return t != "" && t[0] != ':' && validChannel("#"+t) && !strings.ContainsAny(t, " ,")
}

// textMessages turns one XMPP body into PRIVMSG (or NOTICE) messages for
// target: one per line of the body, a line starting with "/me " as a CTCP
// ACTION, each cut to fit in 512 bytes once the server adds our prefix.
func textMessages(cmd, target, body string, me self) ([]ircmsg.Message, error) {
	if !validTarget(target) {
		return nil, errBadTarget
	}
	if singleLine(body) {
		// Most bodies: one clean line, which bodyLines would return as
		// it is. Without the slices of lines and pieces, and with the
		// message and its parameters in one allocation: one allocation
		// instead of five, 245 ns instead of 530 (BenchmarkTextMessages).
		return appendText(nil, cmd, target, body, me)
	}
	var out []ircmsg.Message
	for _, line := range bodyLines(body) {
		var err error
		if out, err = appendText(out, cmd, target, line, me); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// oneText is a single message's slice and parameters, allocated at once.
type oneText struct {
	msg    [1]ircmsg.Message
	params [2]string
}

// appendText appends the messages of one clean line of text to out.
func appendText(out []ircmsg.Message, cmd, target, line string, me self) ([]ircmsg.Message, error) {
	action := false
	if rest, ok := strings.CutPrefix(line, "/me "); ok && strings.TrimSpace(rest) != "" {
		line, action = rest, true
	}
	room := maxLine - me.prefixLen() - len(cmd) - 1 - len(target) - 2 - 2
	if action {
		room -= len("\x01ACTION \x01")
	}
	if room < 32 {
		return nil, errNoRoom
	}
	if out == nil && len(line) <= room {
		if action {
			line = "\x01ACTION " + line + "\x01"
		}
		one := &oneText{params: [2]string{target, line}}
		one.msg[0] = ircmsg.Message{Command: cmd, Params: one.params[:]}
		return one.msg[:], nil
	}
	for _, piece := range splitText(line, room) {
		if action {
			piece = "\x01ACTION " + piece + "\x01"
		}
		out = append(out, ircmsg.MakeMessage(nil, "", cmd, target, piece))
	}
	return out, nil
}

// topicMessage sets a channel topic; topicLen is ISUPPORT TOPICLEN (0:
// only the line limit applies).
func topicMessage(channel, topic string, topicLen int, me self) (ircmsg.Message, error) {
	if !validTarget(channel) {
		return ircmsg.Message{}, errBadTarget
	}
	t := oneLine(topic)
	room := maxLine - me.prefixLen() - len("TOPIC ") - len(channel) - 2 - 2
	if topicLen > 0 && topicLen < room {
		room = topicLen
	}
	if room < 1 {
		return ircmsg.Message{}, errNoRoom
	}
	if len(t) > room {
		t = splitText(t, room)[0]
	}
	return ircmsg.MakeMessage(nil, "", "TOPIC", channel, t), nil
}

// nickMessage asks for a new nick.
func nickMessage(nick string) (ircmsg.Message, error) {
	if !validNick(nick) {
		return ircmsg.Message{}, errBadTarget
	}
	return ircmsg.MakeMessage(nil, "", "NICK", nick), nil
}

// joinMessage joins a channel, with its key if it has one.
func joinMessage(channel, key string) (ircmsg.Message, error) {
	if !validTarget(channel) {
		return ircmsg.Message{}, errBadTarget
	}
	key = oneLine(key)
	if key != "" {
		if strings.ContainsAny(key, " ,") || key[0] == ':' || len(key) > 64 {
			return ircmsg.Message{}, errors.New("a channel key cannot contain spaces or commas")
		}
		return ircmsg.MakeMessage(nil, "", "JOIN", channel, key), nil
	}
	return ircmsg.MakeMessage(nil, "", "JOIN", channel), nil
}

// reasonMessage is PART channel :reason or QUIT :reason (channel "").
func reasonMessage(cmd, channel, reason string) (ircmsg.Message, error) {
	r := oneLine(reason)
	if len(r) > 300 {
		r = splitText(r, 300)[0]
	}
	if channel == "" {
		return ircmsg.MakeMessage(nil, "", cmd, r), nil
	}
	if !validTarget(channel) {
		return ircmsg.Message{}, errBadTarget
	}
	if r == "" {
		return ircmsg.MakeMessage(nil, "", cmd, channel), nil
	}
	return ircmsg.MakeMessage(nil, "", cmd, channel, r), nil
}

// ctcpReply answers a CTCP request with a NOTICE.
func ctcpReply(target, command, args string) (ircmsg.Message, error) {
	if !validTarget(target) {
		return ircmsg.Message{}, errBadTarget
	}
	text := command
	if args = oneLine(args); args != "" {
		text += " " + args
	}
	text = strings.ReplaceAll(text, "\x01", "")
	if len(text) > 300 {
		text = splitText(text, 300)[0]
	}
	return ircmsg.MakeMessage(nil, "", "NOTICE", target, "\x01"+text+"\x01"), nil
}
