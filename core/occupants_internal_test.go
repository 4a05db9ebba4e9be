package core

import (
	"fmt"
	"testing"
	"unsafe"

	"mellium.im/xmpp/jid"
)

// TestOccupantListKeepsWhatWasSet: a room's occupants come back as they
// were set (known and unknown roles, affiliations and shows, a status),
// one per nick, in the compact form (a channel's every member is kept in
// every user's room).
func TestOccupantListKeepsWhatWasSet(t *testing.T) {
	var l occupantList
	in := []Occupant{
		{Nick: "op", Role: "moderator", Affiliation: "admin"},
		{Nick: "v", Role: "participant", Affiliation: "member", Show: "away", Status: "lunch"},
		{Nick: "odd", Role: "x-role", Affiliation: "x-aff", Show: "x-show"},
		{Nick: "gone", Role: "none", Affiliation: "none"},
	}
	for _, o := range in {
		l.set(o)
	}
	l.set(Occupant{Nick: "op", Role: "moderator", Affiliation: "owner"}) // replaced
	l.del("gone")
	if len(l) != 3 {
		t.Fatalf("%d occupants", len(l))
	}
	want := map[string]Occupant{"op": {Nick: "op", Role: "moderator", Affiliation: "owner"}, "v": in[1], "odd": in[2]}
	for nick, w := range want {
		if got, ok := l.get(nick); !ok || got != w {
			t.Errorf("get(%q) = %+v, %v; want %+v", nick, got, ok, w)
		}
	}
	if _, ok := l.get("gone"); ok {
		t.Error("a deleted occupant is still there")
	}
	for i := 0; i < 600; i++ {
		l.set(Occupant{Nick: fmt.Sprint("n", i), Role: "participant", Affiliation: "none"})
	}
	if c := cap(l); c > len(l)+len(l)/4 {
		t.Errorf("603 occupants in a list of capacity %d", c)
	}
	if s := unsafe.Sizeof(roomOccupant{}); s > 40 {
		t.Errorf("an occupant takes %d bytes", s)
	}
}

func TestOccupantValuesBounded(t *testing.T) {
	saved := occValues.t.Load()
	defer occValues.t.Store(saved)
	for i := 0; i < 300; i++ {
		occIndex(fmt.Sprint("value-", i))
	}
	if n := len(occValues.t.Load().list); n > 256 {
		t.Errorf("%d values", n)
	}
	if v := occValue(occIndex("moderator")); v != "moderator" {
		t.Errorf("moderator is %q after the table filled", v)
	}
}

// A ban list shows an IRC mask as the JID it reads as, and a pattern
// that reads otherwise under the room's JID; roomAdminIQ reads both back.
func TestBanJID(t *testing.T) {
	room := jid.MustParse("#chan%irc.example.org@irc.a.test")
	for _, tc := range []struct{ mask, want string }{
		{"*!*@spam.example", "*!*@spam.example"},
		{"nick!user@host.example", "nick!user@host.example"},
		{"*!*@Spam.Example", "#chan%irc.example.org@irc.a.test/*!*@Spam.Example"}, // reads back lower-cased
		{"nick!*@*", "#chan%irc.example.org@irc.a.test/nick!*@*"},
		{"*!*@irc.a.test", "#chan%irc.example.org@irc.a.test/*!*@irc.a.test"}, // the gateway's own domain
		{"$a:account", "#chan%irc.example.org@irc.a.test/$a:account"},
		{"*!*@unaffiliated/bob", "*!*@unaffiliated/bob"},
	} {
		if got := banJID(room, tc.mask); got != tc.want {
			t.Errorf("banJID(%q) = %q, want %q", tc.mask, got, tc.want)
		}
	}
}
