package main

// The transports compiled into the binary: each registers itself by name
// from its init.
import (
	_ "transportd/transports/email"
	_ "transportd/transports/irc"
	_ "transportd/transports/sms"
)
