package sms

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/nyaruka/phonenumbers"
	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/core/jidesc"
)

// e164RE is the shape of an E.164 number: a plus, a country code that does
// not start with 0, at most 15 digits in all.
var e164RE = regexp.MustCompile(`^\+[1-9][0-9]{1,14}$`)

func isE164(s string) bool { return e164RE.MatchString(s) }

// errNotNumber is returned by normalize for input that is no phone number.
var errNotNumber = errors.New("not a phone number")

// normalize turns a phone number as a user types it ("+1 555 123-4567",
// "(555) 123 4567", "00 44 20 7946 0000") into E.164, reading national
// formats in region. It does not judge whether the number can be reached;
// see (*config).destination.
func normalize(input, region string) (e164 string, n *phonenumbers.PhoneNumber, err error) {
	defer func() {
		// The parser is a port with a large surface; a panic on hostile
		// input must not take the caller's goroutine down.
		if r := recover(); r != nil {
			e164, n, err = "", nil, errNotNumber
		}
	}()
	s := strings.TrimSpace(input)
	if s == "" || len(s) > 64 {
		return "", nil, errNotNumber
	}
	n, err = phonenumbers.Parse(s, region)
	if err != nil || n.GetExtension() != "" {
		return "", nil, errNotNumber
	}
	e164 = phonenumbers.Format(n, phonenumbers.E164)
	if !isE164(e164) {
		return "", nil, errNotNumber
	}
	// The E.164 form must read back as itself, or the JID built from it
	// would name another number ("000000000" in AX formats as
	// +35800000000, which parses as +3580000000).
	if again, err := phonenumbers.Parse(e164, "ZZ"); err != nil || phonenumbers.Format(again, phonenumbers.E164) != e164 {
		return "", nil, errNotNumber
	}
	return e164, n, nil
}

// ownNumber validates the number a user registers: a full (not short)
// number, returned in E.164.
func ownNumber(input, region string) (string, error) {
	e, n, err := normalize(input, region)
	if err != nil {
		return "", errors.New("is not a phone number (write it as +15551234567)")
	}
	if !phonenumbers.IsPossibleNumber(n) {
		return "", errors.New("is not a full phone number: short codes and partial numbers cannot be registered")
	}
	return e, nil
}

// numberRegion is the region code of a number: its own when the number is
// valid, else the main region of its country calling code ("US" for +1), so
// that numbers in ranges the metadata does not know yet are judged by their
// country code. "" when not even that is known.
func numberRegion(n *phonenumbers.PhoneNumber) string {
	if r := phonenumbers.GetRegionCodeForNumber(n); r != "" && r != "ZZ" {
		return r
	}
	if r := phonenumbers.GetRegionCodeForCountryCode(int(n.GetCountryCode())); r != "ZZ" {
		return r
	}
	return ""
}

// destination checks that a number may be sent to under the domain's
// policy and returns its E.164 form: a full number (no short code), not
// premium-rate or shared-cost, in an allowed country.
func (c *config) destination(addr string) (string, error) {
	e, n, err := normalize(addr, c.region)
	if err != nil {
		return "", core.NewError(stanza.JIDMalformed, "not a phone number: contacts are numbers in international form such as +15551234567")
	}
	if !phonenumbers.IsPossibleNumber(n) {
		return "", core.NewError(stanza.NotAllowed, e+" is a short code or too short to be a phone number: short codes cannot be reached through this gateway")
	}
	switch phonenumbers.GetNumberType(n) {
	case phonenumbers.PREMIUM_RATE:
		return "", core.NewError(stanza.NotAllowed, e+" is a premium-rate number: this gateway does not send to premium-rate numbers")
	case phonenumbers.SHARED_COST:
		return "", core.NewError(stanza.NotAllowed, e+" is a shared-cost number: this gateway does not send to shared-cost numbers")
	}
	if c.countries != nil {
		r := numberRegion(n)
		if !c.countries[r] {
			where := r
			if where == "" || where == "001" {
				where = "non-geographic"
			}
			return "", core.NewError(stanza.NotAllowed, fmt.Sprintf("SMS to %s numbers (+%d) is not enabled on this gateway (allowed: %s)", where, n.GetCountryCode(), c.countryList()))
		}
	}
	return e, nil
}

// localpart maps a legacy address to a JID localpart: E.164 numbers as they
// are; anything else a sender can be (alphanumeric sender IDs, short codes)
// XEP-0106-escaped.
func localpart(addr string) string {
	if isE164(addr) {
		return addr
	}
	return jidesc.Escape(addr)
}

// address maps a JID localpart back to a number the user may write to. The
// localpart must be the number in canonical E.164: a national form is
// refused with the JID to use instead, so one contact never has two JIDs.
func (c *config) address(local string) (string, error) {
	if !isE164(local) {
		if e, n, err := normalize(jidesc.Unescape(local), c.region); err == nil && phonenumbers.IsPossibleNumber(n) {
			return "", core.NewError(stanza.JIDMalformed, "write to "+e+" instead: contacts are phone numbers in international (E.164) form")
		}
		return "", core.NewError(stanza.JIDMalformed, "not a phone number that can receive SMS: contacts are numbers in international form such as +15551234567")
	}
	if e, _, err := normalize(local, "ZZ"); err != nil {
		return "", core.NewError(stanza.JIDMalformed, "not a phone number: contacts are numbers in international form such as +15551234567")
	} else if e != local {
		return "", core.NewError(stanza.JIDMalformed, "write to "+e+" instead: contacts are phone numbers in E.164 form")
	}
	return c.destination(local)
}
