package irc

import (
	"fmt"
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
		n.handle(lineOf(ircmsg.MakeMessage(nil, "irc.example.org", "353", "me", "=", "#c", "me @Alice!~alice@gateway/web/alice +bob!~b@host.example.org")), "")
		n.handle(lineOf(ircmsg.MakeMessage(nil, "irc.example.org", "366", "me", "#c", "End of /NAMES list.")), "")
		ch := n.channels.get("#c")
		if ch == nil || ch.members.get("alice") == nil || ch.members.get("bob") == nil {
			t.Fatalf("members after NAMES: %v", ch.members)
		}
		views = append(views, ch)
		nets = append(nets, n)
	}
	a, b := views[0].members.get("alice"), views[1].members.get("alice")
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
	if a.modes != "o" || views[0].members.get("bob").modes != "v" {
		t.Errorf("modes %q %q", a.modes, views[0].members.get("bob").modes)
	}
	nets[0].handle(lineOf(ircmsg.MakeMessage(nil, "Alice!~alice@gateway/web/alice", "NICK", "Alicia")), "")
	if m := views[0].members.get("alicia"); m == nil || m.nick.String() != "Alicia" || views[0].members.get("alice") != nil {
		t.Errorf("after NICK: %v", views[0].members)
	}
	if m := views[1].members.get("alice"); m == nil || m.nick.String() != "Alice" {
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

// TestMemberSet: a channel's members kept in a slice while few, a map
// beyond memberSliceMax, the same answers either way.
func TestMemberSet(t *testing.T) {
	var s memberSet
	want := map[string]*member{}
	check := func(when string) {
		t.Helper()
		if s.len() != len(want) {
			t.Fatalf("%s: len %d, want %d", when, s.len(), len(want))
		}
		seen := 0
		for k, m := range s.all() {
			if want[k] != m {
				t.Fatalf("%s: all yields %q -> %p, want %p", when, k, m, want[k])
			}
			seen++
		}
		for k, m := range want {
			if s.get(k) != m {
				t.Fatalf("%s: get(%q) = %p, want %p", when, k, s.get(k), m)
			}
		}
		if seen != len(want) || s.get("nobody") != nil {
			t.Fatalf("%s: all yielded %d of %d, or found nobody", when, seen, len(want))
		}
	}
	for i := range memberSliceMax + 4 {
		k := fmt.Sprintf("n%d", i)
		m := &member{nick: intern(k)}
		s.set(k, m)
		want[k] = m
		check(fmt.Sprintf("after %d", i+1))
		if (s.many != nil) != (i+1 > memberSliceMax) {
			t.Fatalf("after %d members: map %v", i+1, s.many != nil)
		}
	}
	again := &member{nick: intern("n3")}
	s.set("n3", again)
	want["n3"] = again
	s.del("n0")
	delete(want, "n0")
	check("after a change and a removal")

	var small memberSet
	want = map[string]*member{}
	s = small
	for _, k := range []string{"a", "b", "c"} {
		want[k] = &member{nick: intern(k)}
		s.set(k, want[k])
	}
	s.del("b")
	delete(want, "b")
	s.del("b")
	check("slice after a removal")
	s.del("a")
	s.del("c")
	if s.len() != 0 || s.few != nil {
		t.Fatalf("emptied: %d members, slice %v", s.len(), s.few)
	}
}
