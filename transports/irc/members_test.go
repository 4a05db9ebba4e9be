package irc

import (
	"testing"
	"unsafe"

	"github.com/ergochat/irc-go/ircmsg"
)

// TestMembersShared: two users in the same channel keep its members'
// nicks, user names and hosts once for both (interned), and what each
// sees stays right through a nick change.
func TestMembersShared(t *testing.T) {
	var views []*channel
	var nets []*network
	for range 2 {
		_, n, _ := fuzzSession(t)
		n.handle(ircmsg.MakeMessage(nil, "irc.example.org", "353", "me", "=", "#c", "me @Alice!~alice@gateway/web/alice +bob!~b@host.example.org"), "")
		n.handle(ircmsg.MakeMessage(nil, "irc.example.org", "366", "me", "#c", "End of /NAMES list."), "")
		ch := n.channels.get("#c")
		if ch == nil || ch.members["alice"] == nil || ch.members["bob"] == nil {
			t.Fatalf("members after NAMES: %v", ch.members)
		}
		views = append(views, ch)
		nets = append(nets, n)
	}
	a, b := views[0].members["alice"], views[1].members["alice"]
	if a == b {
		t.Fatal("two users share one member struct")
	}
	same := func(x, y istr) bool { return unsafe.StringData(x.String()) == unsafe.StringData(y.String()) }
	if !same(a.nick, b.nick) || !same(a.user, b.user) || !same(a.host, b.host) {
		t.Error("the same member's nick, user and host are kept twice")
	}
	if got := a.nick.String() + "!" + a.user.String() + "@" + a.host.String(); got != "Alice!~alice@gateway/web/alice" {
		t.Errorf("member = %q", got)
	}
	if a.modes != "o" || views[0].members["bob"].modes != "v" {
		t.Errorf("modes %q %q", a.modes, views[0].members["bob"].modes)
	}
	nets[0].handle(ircmsg.MakeMessage(nil, "Alice!~alice@gateway/web/alice", "NICK", "Alicia"), "")
	if m := views[0].members["alicia"]; m == nil || m.nick.String() != "Alicia" || views[0].members["alice"] != nil {
		t.Errorf("after NICK: %v", views[0].members)
	}
	if m := views[1].members["alice"]; m == nil || m.nick.String() != "Alice" {
		t.Error("one user's view changed with the other's")
	}
}

// TestFoldKeepsFolded: a name already folded is not copied (fold runs
// for every line).
func TestFoldKeepsFolded(t *testing.T) {
	_, n, _ := fuzzSession(t)
	for in, want := range map[string]string{"alice": "alice", "Alice[m]": "alice{m}", "a~b\\": "a^b|", "#chan": "#chan"} {
		if got := n.fold(in); got != want {
			t.Errorf("fold(%q) = %q, want %q", in, got, want)
		}
	}
	if a := testing.AllocsPerRun(100, func() { _ = n.fold("already-folded") }); a != 0 {
		t.Errorf("fold of a folded name: %v allocations", a)
	}
}
