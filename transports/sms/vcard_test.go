package sms

import "testing"

func TestVCard(t *testing.T) {
	v := (&Transport{}).VCard("+33612345678")
	if v.Tel != "+33612345678" || v.Note != "Phone number in FR" {
		t.Errorf("vCard = %+v", v)
	}
}
