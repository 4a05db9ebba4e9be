package irc

import "testing"

func TestVCard(t *testing.T) {
	v := (&Transport{}).VCard("alice%irc.example.org")
	if v.Nick != "alice" || v.URL != "irc://irc.example.org/alice" || v.Note != "IRC: alice on irc.example.org" {
		t.Errorf("vCard = %+v", v)
	}
}
