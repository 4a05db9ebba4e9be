package sms

import (
	"github.com/nyaruka/phonenumbers"

	"transportd/core"
)

// VCard gives a contact's phone number (E.164) and its country.
func (t *Transport) VCard(address string) core.VCard {
	v := core.VCard{Tel: address}
	if n, err := phonenumbers.Parse(address, ""); err == nil {
		if region := numberRegion(n); region != "" {
			v.Note = "Phone number in " + region
		}
	}
	return v
}
