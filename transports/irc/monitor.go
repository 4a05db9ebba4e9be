package irc

import (
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ergochat/irc-go/ircmsg"

	"transportd/core"
)

// Contacts' presence with IRC's MONITOR (IRCv3; InspIRCd's monitor
// module, Solanum's, Ergo's): core hands the session the contacts in the
// user's roster (core.ContactWatcher); each connection asks its server to
// tell when those of its nicks come online (730) and go offline (731),
// and core shows them as the contacts' presence. A server without
// MONITOR (ngIRCd) is asked with USERHOST every timing.ison instead, while
// the connection is up and has contacts to watch: its answer says who is
// online and who of them is away (ISON says only the first).

// watchState is a network's contacts' presence: monitored, the nicks on
// the server's MONITOR list (or polled with USERHOST); monOnline those
// it said are online, monAway those of them a poll found away; isons the
// nicks of each USERHOST not answered yet, polledAt when the last was
// sent. Made when the network first has contacts to watch: most users
// have none, and in the network it took 120 bytes of each.
type watchState struct {
	monitored, monOnline, monAway nameList
	isons                         [][]string
	polledAt                      time.Time
}

// evWatch is WatchContacts' request.
type evWatch struct{ addrs []string }

// WatchContacts implements core.ContactWatcher.
func (s *session) WatchContacts(addrs []string) {
	_ = s.postCtl(evWatch{addrs: addrs})
}

// setWatch takes the contacts to watch, by server, and updates the
// connections' MONITOR lists.
func (s *session) setWatch(addrs []string) {
	s.watch = nil
	for _, addr := range addrs {
		a, server, err := s.resolve(addr)
		if err != nil || a.kind != kindNick {
			continue
		}
		if s.watch == nil {
			s.watch = map[string][]string{}
		}
		s.watch[server] = append(s.watch[server], strings.ToLower(a.name))
	}
	for _, n := range s.nets {
		n.monitor()
	}
}

// polled says whether the contacts of this network are watched with
// USERHOST: connected, contacts to watch, and no MONITOR.
func (n *network) polled() bool {
	_, mon := n.feat.m["MONITOR"]
	return n.conn != nil && !mon && len(n.s.watch[n.server]) > 0
}

// poll asks for the watched contacts with USERHOST when it is time
// (tick). Each line asks for up to 5 (RFC 2812); its 302 answer names
// those online, each marked away or not.
func (n *network) poll(now time.Time) {
	if !n.polled() {
		return
	}
	if n.watchState == nil {
		n.watchState = &watchState{}
	}
	if now.Sub(n.polledAt) < n.s.t.timing.ison {
		return
	}
	n.polledAt = now
	want := n.s.watch[n.server]
	n.unwatched(want)
	n.monitored = append(nameList(nil), want...)
	n.askUserhost(want)
}

// askUserhost sends USERHOST for nicks, 5 a line (RFC 2812), each line's
// nicks queued for its answer (userhostReply).
func (n *network) askUserhost(nicks []string) {
	for len(nicks) > 0 {
		i := min(len(nicks), 5)
		if n.send(ircmsg.MakeMessage(nil, "", "USERHOST", nicks[:i]...)) != nil {
			return // no answer will come to match
		}
		n.isons = append(n.isons, nicks[:i:i])
		nicks = nicks[i:]
	}
}

// userhostReply takes a 302 ("nick=+user@host nick*=-user@host": '*' an
// operator, '-' away): of the nicks the oldest USERHOST asked for, those
// named are online, away when so marked; the others are not online.
func (n *network) userhostReply(text string) {
	if n.watchState == nil || len(n.isons) == 0 {
		return
	}
	asked := n.isons[0]
	n.isons = n.isons[1:]
	replies := strings.Fields(text)
	for _, nick := range asked {
		online, away := false, false
		for _, r := range replies {
			name, rest, ok := strings.Cut(r, "=")
			if ok && strings.EqualFold(strings.TrimSuffix(name, "*"), nick) {
				online, away = true, strings.HasPrefix(rest, "-")
				break
			}
		}
		if online == n.monOnline.has(nick) && away == n.monAway.has(nick) {
			continue
		}
		if online {
			if !n.monOnline.has(nick) {
				n.monOnline = append(n.monOnline, nick)
			}
		} else {
			n.monOnline.del(nick)
		}
		if !away {
			n.monAway.del(nick)
		} else if !n.monAway.has(nick) {
			n.monAway = append(n.monAway, nick)
		}
		n.s.contactPresence(nick+"%"+n.server, core.ContactStatus{Online: online, Away: away})
	}
}

// monitor brings the server's MONITOR list to the session's contacts of
// this network (after a change, and once connected: the list is the
// connection's). Without MONITOR, the contacts are polled (poll).
func (n *network) monitor() {
	limit, ok := n.feat.m["MONITOR"]
	if n.conn == nil {
		return
	}
	if !ok {
		n.unwatched(n.s.watch[n.server]) // at once: with none left, no poll follows
		if n.watchState != nil {
			n.polledAt = time.Time{} // at the next tick
		}
		return
	}
	want := n.s.watch[n.server]
	if n.watchState == nil {
		if len(want) == 0 {
			return
		}
		n.watchState = &watchState{}
	}
	if max, err := strconv.Atoi(limit); err == nil && max > 0 && len(want) > max {
		want = want[:max]
	}
	var add, del []string
	for _, nick := range want {
		if !n.monitored.has(nick) {
			add = append(add, nick)
		}
	}
	for _, nick := range n.monitored {
		if !slices.Contains(want, nick) {
			del = append(del, nick)
			if n.monOnline.has(nick) {
				n.monOnline.del(nick)
				n.s.contactPresence(nick+"%"+n.server, core.ContactStatus{})
			}
		}
	}
	n.sendMonitor("-", del)
	n.sendMonitor("+", add)
	n.monitored = append(nameList(nil), want...)
}

// unwatched shows offline the contacts last seen online that are no
// longer among those to watch (want).
func (n *network) unwatched(want []string) {
	if n.watchState == nil {
		return
	}
	for _, nick := range slices.Clone(n.monOnline) {
		if !slices.Contains(want, nick) {
			n.monOnline.del(nick)
			n.monAway.del(nick)
			n.s.contactPresence(nick+"%"+n.server, core.ContactStatus{})
		}
	}
}

// sendMonitor sends MONITOR + or - for nicks, as many to a line as fit.
func (n *network) sendMonitor(op string, nicks []string) {
	for len(nicks) > 0 {
		line, i := "", 0
		for ; i < len(nicks) && len(line)+len(nicks[i]) < 400; i++ {
			if line != "" {
				line += ","
			}
			line += nicks[i]
		}
		if i == 0 { // a nick longer than a line: skipped
			i = 1
		} else {
			_ = n.send(ircmsg.MakeMessage(nil, "", "MONITOR", op, line))
		}
		nicks = nicks[i:]
	}
}

// monitorReply takes 730 (online: nick!user@host,...) and 731 (offline:
// nick,...). MONITOR does not say whether a contact that comes online is
// away (extended-monitor tells changes only): USERHOST asks, and its
// answer (userhostReply) shows the contacts that are away so.
func (n *network) monitorReply(online bool, targets string) {
	if n.watchState == nil {
		return
	}
	var ask []string
	for _, t := range strings.Split(targets, ",") {
		nick, _, _ := strings.Cut(t, "!")
		nick = strings.ToLower(nick)
		if nick == "" || !n.monitored.has(nick) || n.monOnline.has(nick) == online {
			continue
		}
		if online {
			n.monOnline = append(n.monOnline, nick)
			ask = append(ask, nick)
		} else {
			n.monOnline.del(nick)
			n.monAway.del(nick)
		}
		n.s.contactPresence(nick+"%"+n.server, core.ContactStatus{Online: online})
	}
	n.askUserhost(ask)
}

// monitorAway takes an AWAY of a monitored contact (away-notify, and
// extended-monitor for one in no channel with the user).
func (n *network) monitorAway(nick string, away bool, text string) {
	if n.watchState == nil {
		return
	}
	nick = strings.ToLower(nick)
	if !n.monOnline.has(nick) {
		return
	}
	st := core.ContactStatus{Online: true, Away: away}
	if away {
		st.Status = plainText(text)
		if !n.monAway.has(nick) {
			n.monAway = append(n.monAway, nick)
		}
	} else {
		n.monAway.del(nick)
	}
	n.s.contactPresence(nick+"%"+n.server, st)
}

// monitorLost: the connection ended, and with it what it told.
func (n *network) monitorLost() {
	if n.watchState == nil {
		return
	}
	for _, nick := range n.monOnline {
		n.s.contactPresence(nick+"%"+n.server, core.ContactStatus{})
	}
	n.watchState = nil
}

// contactPresence reports a contact's presence to core.
func (s *session) contactPresence(addr string, st core.ContactStatus) {
	if ps, ok := s.sink.(core.ContactPresenceSink); ok {
		ps.ContactPresence(addr, st)
	}
}

// nameList is a small list of nicks (a network's MONITOR list).
type nameList []string

func (l nameList) has(nick string) bool { return slices.Contains(l, nick) }

func (l *nameList) del(nick string) {
	if i := slices.Index(*l, nick); i >= 0 {
		*l = slices.Delete(*l, i, i+1)
	}
}
