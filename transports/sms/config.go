package sms

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/nyaruka/phonenumbers"
	"golang.org/x/time/rate"
)

// The transport's defaults (domains."D".transports.sms.defaults), all
// optional:
//
//	region           default region for numbers typed in national form ("US")
//	countries        comma-separated region codes SMS may be sent to; "*" for
//	                 any country (default: region)
//	api_base_url     Twilio's REST base URL, for compatible providers and
//	                 tests (https://api.twilio.com)
//	account_sid      a Twilio account shared by the domain's users: they
//	                 then register only their number of that account
//	auth_token_file  file holding the shared account's auth token (or
//	auth_token_env   the environment variable holding it); never inline
//	rate_per_second  messages per second per sending number (1, as Twilio
//	                 asks for long codes; "0.5" for one every two seconds)
//	daily_cap        messages a user may send per UTC day (200; 0: no cap)
//	wire_trace       "true" logs each API request (method, path, status,
//	                 duration; never credentials or bodies) at debug level
const (
	defRegion  = "US"
	defAPIBase = "https://api.twilio.com"
	defRate    = 1.0
	defCap     = 200
)

// config is a domain's parsed defaults.
type config struct {
	region    string
	countries map[string]bool // region codes; nil means any
	apiBase   *url.URL
	shared    *creds // nil unless the domain shares one account
	rate      rate.Limit
	dailyCap  int // 0: none
	wireTrace bool
}

var (
	sidRE   = regexp.MustCompile(`^AC[0-9a-fA-F]{32}$`)
	tokenRE = regexp.MustCompile(`^[A-Za-z0-9]{16,128}$`)
)

// parseConfig validates the defaults. Every problem is reported, each
// naming its key; secrets are never quoted. lookupEnv is os.LookupEnv
// outside tests.
func parseConfig(d map[string]string, lookupEnv func(string) (string, bool)) (*config, error) {
	c := &config{region: defRegion, rate: defRate, dailyCap: defCap}
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("defaults.%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if v, ok := d["region"]; ok {
		r := strings.ToUpper(strings.TrimSpace(v))
		if !phonenumbers.GetSupportedRegions()[r] {
			bad("region", "%q is not a region code such as US, GB or DE", v)
		} else {
			c.region = r
		}
	}
	c.countries = map[string]bool{c.region: true}
	if v, ok := d["countries"]; ok {
		c.countries = map[string]bool{}
		for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' }) {
			r := strings.ToUpper(f)
			switch {
			case r == "*":
				c.countries = nil
			case phonenumbers.GetSupportedRegions()[r]:
				if c.countries != nil {
					c.countries[r] = true
				}
			default:
				bad("countries", "%q is not a region code such as US, GB or DE", f)
			}
		}
		if c.countries != nil && len(c.countries) == 0 {
			bad("countries", "lists no country; use \"*\" for any")
		}
	}
	base := defAPIBase
	if v, ok := d["api_base_url"]; ok {
		base = strings.TrimSpace(v)
	}
	if u, err := url.Parse(base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		bad("api_base_url", "must be an absolute http:// or https:// URL without credentials or query")
	} else {
		c.apiBase = u
	}
	if v, ok := d["rate_per_second"]; ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || f <= 0 || f > 1000 {
			bad("rate_per_second", "must be a number of messages per second above 0 (such as 1 or 0.5)")
		} else {
			c.rate = rate.Limit(f)
		}
	}
	if v, ok := d["daily_cap"]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 0 {
			bad("daily_cap", "must be a whole number of messages (0 for no cap)")
		} else {
			c.dailyCap = n
		}
	}
	if v, ok := d["wire_trace"]; ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			bad("wire_trace", "must be true or false")
		}
		c.wireTrace = b
	}
	if _, ok := d["auth_token"]; ok {
		bad("auth_token", "inline secrets are not allowed; put the token in a file named by auth_token_file, or in the environment variable named by auth_token_env")
	}
	sid, hasSID := d["account_sid"]
	file, hasFile := d["auth_token_file"]
	env, hasEnv := d["auth_token_env"]
	switch {
	case hasFile && hasEnv:
		bad("auth_token_file", "set only one of auth_token_file and auth_token_env")
	case (hasFile || hasEnv) && !hasSID:
		bad("account_sid", "is required with auth_token_file or auth_token_env")
	case hasSID && !hasFile && !hasEnv:
		bad("account_sid", "needs auth_token_file or auth_token_env for the shared account's token")
	case hasSID:
		if !sidRE.MatchString(sid) {
			bad("account_sid", "is not a Twilio Account SID (AC followed by 32 hexadecimal digits)")
		}
		var token string
		if hasFile {
			b, err := os.ReadFile(file)
			switch {
			case errors.Is(err, os.ErrNotExist):
				bad("auth_token_file", "file %s does not exist", file)
			case err != nil:
				bad("auth_token_file", "cannot read %s: %v", file, errors.Unwrap(err))
			default:
				token = strings.TrimSpace(string(b))
			}
		} else {
			v, set := lookupEnv(env)
			if !set {
				bad("auth_token_env", "environment variable %s is not set", env)
			}
			token = strings.TrimSpace(v)
		}
		if token != "" && !tokenRE.MatchString(token) {
			bad("auth_token_file", "the shared account's token is not a Twilio auth token (letters and digits)")
		} else if token == "" && len(errs) == 0 {
			bad("auth_token_file", "the shared account's token is empty")
		}
		c.shared = &creds{SID: sid, Token: token}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return c, nil
}

// countryList names the allowed countries for messages.
func (c *config) countryList() string {
	if c.countries == nil {
		return "any"
	}
	l := make([]string, 0, len(c.countries))
	for r := range c.countries {
		l = append(l, r)
	}
	slices.Sort(l)
	return strings.Join(l, ", ")
}
