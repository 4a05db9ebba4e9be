package sms

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/nyaruka/phonenumbers"

	"transportd/core"
)

func TestNormalize(t *testing.T) {
	for i, tc := range []struct {
		in, region, want string
	}{
		0:  {"+1 (202) 555-0100", "US", "+12025550100"},
		1:  {"202-555-0100", "US", "+12025550100"},
		2:  {"(202) 555 0100", "US", "+12025550100"},
		3:  {"  +12025550100 ", "US", "+12025550100"},
		4:  {"011 44 20 7946 0000", "US", "+442079460000"},
		5:  {"020 7946 0000", "GB", "+442079460000"},
		6:  {"00 33 6 12 34 56 78", "DE", "+33612345678"},
		7:  {"06 12 34 56 78", "FR", "+33612345678"},
		8:  {"+15551234567", "US", "+15551234567"},
		9:  {"555 123 4567", "US", "+15551234567"},
		10: {"+1-800-FLOWERS", "US", "+18003569377"},
		11: {"", "US", ""},
		12: {"abc", "US", ""},
		13: {"+1 202 555 0100 ext. 12", "US", ""},
		14: {"+", "US", ""},
		15: {strings.Repeat("1", 100), "US", ""},
		16: {"+339", "US", ""},
	} {
		got, _, err := normalize(tc.in, tc.region)
		if tc.want == "" {
			if err == nil {
				t.Errorf("%d: normalize(%q) = %q, want an error", i, tc.in, got)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%d: normalize(%q, %s) = %q, %v; want %q", i, tc.in, tc.region, got, err, tc.want)
		}
	}
}

func TestOwnNumber(t *testing.T) {
	if got, err := ownNumber("(202) 555-0100", "US"); err != nil || got != "+12025550100" {
		t.Errorf("ownNumber = %q, %v", got, err)
	}
	for _, in := range []string{"911", "12345", "+1 55512", "hello"} {
		if got, err := ownNumber(in, "US"); err == nil {
			t.Errorf("ownNumber(%q) = %q, want an error", in, got)
		} else if strings.Contains(err.Error(), in) {
			t.Errorf("error %q quotes the input", err)
		}
	}
}

func condition(err error) string {
	var ce *core.Error
	if errors.As(err, &ce) {
		return string(ce.Condition)
	}
	return ""
}

func TestDestinationPolicy(t *testing.T) {
	us, err := parseConfig(map[string]string{"region": "US"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	usfr, _ := parseConfig(map[string]string{"region": "US", "countries": "US, FR"}, nil)
	anyc, _ := parseConfig(map[string]string{"countries": "*"}, nil)
	// example is a number of a type from the metadata's examples, in the
	// first region (sorted) that has one.
	example := func(typ phonenumbers.PhoneNumberType) string {
		regions := slices.Sorted(maps.Keys(phonenumbers.GetSupportedRegions()))
		for _, r := range regions {
			if n := phonenumbers.GetExampleNumberForType(r, typ); n != nil {
				return phonenumbers.Format(n, phonenumbers.E164)
			}
		}
		t.Fatalf("no example number of type %v", typ)
		return ""
	}
	for i, tc := range []struct {
		cfg     *config
		addr    string
		cond    string // "" means allowed
		textHas string
	}{
		0:  {us, "+12025550100", "", ""},
		1:  {us, "+15551234567", "", ""}, // unknown range: judged by its country code
		2:  {us, "+18005551234", "", ""}, // toll-free is fine
		3:  {us, "+19005551234", "not-allowed", "premium-rate"},
		4:  {us, "+33612345678", "not-allowed", "FR"},
		5:  {usfr, "+33612345678", "", ""},
		6:  {anyc, "+33612345678", "", ""},
		7:  {us, "+1911", "not-allowed", "short code"},
		8:  {us, "12345", "not-allowed", "short code"},
		9:  {anyc, example(phonenumbers.PREMIUM_RATE), "not-allowed", "premium-rate"},
		10: {anyc, example(phonenumbers.SHARED_COST), "not-allowed", "shared-cost"},
		11: {us, "+18765550100", "not-allowed", "JM"}, // Jamaica shares +1 but is not the US
		12: {us, "hello", "jid-malformed", ""},
		13: {anyc, "+88216000000", "", ""},
		14: {us, "+88216000000", "not-allowed", "non-geographic"},
	} {
		got, err := tc.cfg.destination(tc.addr)
		if tc.cond == "" {
			if err != nil {
				t.Errorf("%d: destination(%s): %v", i, tc.addr, err)
			} else if !isE164(got) {
				t.Errorf("%d: destination(%s) = %q, not E.164", i, tc.addr, got)
			}
			continue
		}
		if c := condition(err); c != tc.cond || !strings.Contains(err.Error(), tc.textHas) {
			t.Errorf("%d: destination(%s) = %v (%s), want %s mentioning %q", i, tc.addr, err, c, tc.cond, tc.textHas)
		}
	}
}

func TestAddressAndLocalpart(t *testing.T) {
	cfg, _ := parseConfig(nil, nil)
	if a, err := cfg.address("+12025550100"); err != nil || a != "+12025550100" {
		t.Errorf("address(E.164) = %q, %v", a, err)
	}
	_, err := cfg.address("2025550100")
	if condition(err) != "jid-malformed" || !strings.Contains(err.Error(), "+12025550100") {
		t.Errorf("address(national) = %v; want jid-malformed naming the E.164 form", err)
	}
	for _, local := range []string{"+012345", "Twilio", "", `a\20b`, "+1202555010000000"} {
		if _, err := cfg.address(local); condition(err) != "jid-malformed" {
			t.Errorf("address(%q) = %v; want jid-malformed", local, err)
		}
	}
	if _, err := cfg.address("+19005551234"); condition(err) != "not-allowed" {
		t.Errorf("address(premium) = %v", err)
	}
	if l := localpart("+12025550100"); l != "+12025550100" {
		t.Errorf("localpart(E.164) = %q", l)
	}
	if l := localpart("My Bank"); l != `My\20Bank` {
		t.Errorf("localpart(alphanumeric) = %q", l)
	}
	if l := localpart("12345"); l != "12345" {
		t.Errorf("localpart(short code) = %q", l)
	}
}

func TestParseConfig(t *testing.T) {
	c, err := parseConfig(nil, nil)
	if err != nil || c.region != "US" || !c.countries["US"] || len(c.countries) != 1 || c.dailyCap != 200 || c.rate != 1 || c.apiBase.String() != "https://api.twilio.com" || c.shared != nil {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	env := func(name string) (string, bool) {
		if name == "TOKEN" {
			return "abcdef0123456789abcdef0123456789", true
		}
		return "", false
	}
	sid := "AC" + strings.Repeat("0", 32)
	c, err = parseConfig(map[string]string{"region": "gb", "rate_per_second": "0.5", "daily_cap": "0", "account_sid": sid, "auth_token_env": "TOKEN"}, env)
	if err != nil || c.region != "GB" || c.rate != 0.5 || c.dailyCap != 0 || c.shared == nil || c.shared.SID != sid {
		t.Fatalf("custom: %+v, %v", c, err)
	}
	for i, tc := range []struct {
		d   map[string]string
		key string
	}{
		0: {map[string]string{"region": "XX"}, "defaults.region"},
		1: {map[string]string{"countries": "US,ZZZ"}, "defaults.countries"},
		2: {map[string]string{"api_base_url": "ftp://x"}, "defaults.api_base_url"},
		3: {map[string]string{"rate_per_second": "0"}, "defaults.rate_per_second"},
		4: {map[string]string{"daily_cap": "-1"}, "defaults.daily_cap"},
		5: {map[string]string{"auth_token": "inline", "account_sid": sid, "auth_token_env": "TOKEN"}, "defaults.auth_token:"},
		6: {map[string]string{"account_sid": sid}, "defaults.account_sid"},
		7: {map[string]string{"auth_token_file": "/nonexistent"}, "defaults.account_sid"},
		8: {map[string]string{"account_sid": sid, "auth_token_file": "/nonexistent/token"}, "defaults.auth_token_file"},
		9: {map[string]string{"account_sid": "nope", "auth_token_env": "TOKEN"}, "defaults.account_sid"},
	} {
		_, err := parseConfig(tc.d, env)
		if err == nil || !strings.Contains(err.Error(), tc.key) {
			t.Errorf("%d: %v; want an error naming %s", i, err, tc.key)
		}
		if err != nil && strings.Contains(err.Error(), "inline\"") {
			t.Errorf("%d: error quotes a secret: %v", i, err)
		}
	}
}

func FuzzNormalizeNumber(f *testing.F) {
	for _, s := range []string{"+12025550100", "(202) 555-0100", "011 44 20 7946 0000", "+1-800-FLOWERS", "911", "", "+", "++1", "+1 202 555 0100 ext 5", "٠١٢٣٤٥٦٧٨٩", "+𝟏𝟐𝟎𝟐𝟓𝟓𝟓𝟎𝟏𝟎𝟎", "tel:+12025550100"} {
		for _, r := range []string{"US", "GB", "DE", "ZZ", ""} {
			f.Add(s, r)
		}
	}
	cfg, _ := parseConfig(map[string]string{"countries": "*"}, nil)
	f.Fuzz(func(t *testing.T, in, region string) {
		e, n, err := normalize(in, region)
		if err != nil {
			return
		}
		if !isE164(e) || n == nil {
			t.Fatalf("normalize(%q, %q) = %q: not E.164", in, region, e)
		}
		// Normal form is a fixed point, whatever the region.
		if again, _, err := normalize(e, "ZZ"); err != nil || again != e {
			t.Fatalf("normalize(%q) = %q, then %q, %v", in, e, again, err)
		}
		// What Address accepts is what it returns, and maps back to itself.
		if a, err := cfg.address(e); err == nil && (a != e || localpart(a) != e) {
			t.Fatalf("address(%q) = %q", e, a)
		}
		_, _ = ownNumber(in, region)
		_, _ = cfg.destination(in)
	})
}

func TestSchema(t *testing.T) {
	tr := &Transport{}
	for _, shared := range []bool{false, true} {
		if shared {
			c, _ := parseConfig(nil, nil)
			c.shared = &creds{SID: "AC" + strings.Repeat("0", 32), Token: strings.Repeat("a", 32)}
			tr.cfg.Store(c)
		}
		s := tr.Schema(nil)
		if err := s.Check(); err != nil {
			t.Errorf("shared=%v: %v", shared, err)
		}
		if f := s.Field("auth_token"); f != nil && !f.Secret {
			t.Error("auth_token is not secret")
		}
	}
}
