package core

import (
	"fmt"
	"testing"

	"mellium.im/xmpp/jid"
)

// parseJID answers as jid.Parse does, the first time and from memory, and
// its memory stays bounded.
func TestParseJIDRemembers(t *testing.T) {
	c := &component{}
	for _, s := range []string{"user@a.test/phone", "User@EXAMPLE.com/Res", "#chan%irc.test@irc.a.test/nick", "caf\u00e9@a.test", "", "@a.test", "a@b@c", "user@a.test/\u0000"} {
		want, wantErr := jid.Parse(s)
		for i := 0; i < 2; i++ {
			got, err := c.parseJID(s)
			if (err != nil) != (wantErr != nil) || (err == nil && (!got.Equal(want) || got.String() != want.String())) {
				t.Errorf("parseJID(%q) #%d = %v, %v; jid.Parse: %v, %v", s, i, got, err, want, wantErr)
			}
		}
	}
	for i := 0; i < 3*jidMemory; i++ {
		if _, err := c.parseJID(fmt.Sprintf("u%d@a.test/r", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.jids); n > jidMemory {
		t.Errorf("%d addresses remembered, at most %d wanted", n, jidMemory)
	}
}
