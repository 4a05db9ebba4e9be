package email

import "testing"

func TestVCard(t *testing.T) {
	if v := (&Transport{}).VCard("jane@example.org"); v.Email != "jane@example.org" {
		t.Errorf("vCard = %+v", v)
	}
}
