package irc

import "testing"

// address.is agrees with String on every form parseAddress gives.
func TestAddressIs(t *testing.T) {
	for _, s := range []string{"#chan%irc.example.org", "#Chan%IRC.Example.org", "nick%irc.example.org", "#chan", "nick", "irc.example.org", "#a%b%irc.example.org"} {
		a, err := parseAddress(s, nil)
		if err != nil {
			t.Fatalf("%q: %v", s, err)
		}
		if got, want := a.is(s), a.String() == s; got != want {
			t.Errorf("%q: is = %v, String = %q", s, got, a.String())
		}
		if !a.is(a.String()) {
			t.Errorf("%q: not its own String %q", s, a.String())
		}
	}
}
