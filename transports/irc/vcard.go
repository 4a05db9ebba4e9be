package irc

import (
	"strings"

	"transportd/core"
)

// VCard tells which IRC network a nick or channel is on.
func (t *Transport) VCard(address string) core.VCard {
	name, server, _ := strings.Cut(address, "%")
	v := core.VCard{Nick: name, Note: "IRC: " + name}
	if server != "" {
		v.Note += " on " + server
		v.URL = "irc://" + server + "/" + strings.TrimLeft(name, "#&+!")
	}
	return v
}
