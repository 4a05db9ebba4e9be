package email

import "transportd/core"

// VCard tells what the address says of a correspondent; core adds the
// display name it learnt from their mail.
func (t *Transport) VCard(address string) core.VCard {
	return core.VCard{Email: address}
}
