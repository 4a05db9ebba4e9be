package config

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var known = []string{"email", "irc", "sms"}

// testSecret and testKey are what the fixture's secret and key files hold.
const testSecret = "s3cr3t-Component-Pa55"

var testKey = []byte("0123456789abcdef0123456789abcdef")

// fixture writes the files a config refers to into a new directory and
// returns it.
func fixture(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("key", base64.StdEncoding.EncodeToString(testKey)+"\n")
	write("email.secret", "  "+testSecret+"\n")
	write("sms.secret", testSecret+"-sms")
	write("empty", "\n \n")
	write("short.key", base64.StdEncoding.EncodeToString([]byte("too short")))
	write("notbase64.key", "this is *not* base64!!")
	return dir
}

// minimal is the smallest valid config, relative to a fixture directory.
const minimal = `
[xmpp]
component_addr = "127.0.0.1:5347"
[store]
path = "transportd.db"
key_file = "key"
[domains."example.net".transports.email]
secret_file = "email.secret"
`

func parse(t *testing.T, dir, config string) (*Config, *Errors) {
	t.Helper()
	cfg, err := Parse([]byte(config), dir, known)
	if err == nil {
		return cfg, nil
	}
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Parse returned %T %v, want *Errors", err, err)
	}
	if cfg != nil {
		t.Errorf("Parse returned both a config and an error")
	}
	return nil, errs
}

func TestMinimalDefaults(t *testing.T) {
	dir := fixture(t)
	cfg, errs := parse(t, dir, minimal)
	if errs != nil {
		t.Fatal(errs)
	}
	want := XMPP{ComponentAddr: "127.0.0.1:5347", ReconnectMin: time.Second, ReconnectMax: time.Minute,
		MaxStanzaBytes: 262144, MaxStanzaDepth: 32}
	if cfg.XMPP != want {
		t.Errorf("XMPP = %+v, want %+v", cfg.XMPP, want)
	}
	if cfg.Store.Path != filepath.Join(dir, "transportd.db") {
		t.Errorf("Store.Path = %q, want it resolved against %s", cfg.Store.Path, dir)
	}
	if string(cfg.Store.Key) != string(testKey) || cfg.Store.KeySource != "file "+filepath.Join(dir, "key") {
		t.Errorf("Store key = %x from %q", cfg.Store.Key, cfg.Store.KeySource)
	}
	if cfg.HTTP.Listen != "" || cfg.HTTP.PublicURL != nil {
		t.Errorf("HTTP = %+v, want none", cfg.HTTP)
	}
	if cfg.Log != (Log{Level: slog.LevelInfo}) {
		t.Errorf("Log = %+v", cfg.Log)
	}
	if len(cfg.Domains) != 1 {
		t.Fatalf("Domains = %v", cfg.Domains)
	}
	d := cfg.Domains[0]
	if d.Name != "example.net" || !reflect.DeepEqual(d.Users, []string{"example.net"}) ||
		d.Registration != RegistrationOpen || d.Allow != nil || d.Admins != nil {
		t.Errorf("Domain = %+v", d)
	}
	wantT := Transport{Name: "email", Enabled: true, JID: "email.example.net", Secret: testSecret,
		SecretSource: "file " + filepath.Join(dir, "email.secret"), Defaults: map[string]string{}, RoomArchiveDays: DefaultRoomArchiveDays}
	if len(d.Transports) != 1 || !reflect.DeepEqual(d.Transports[0], wantT) {
		t.Errorf("Transports = %#v, want %#v", d.Transports, wantT)
	}
}

const full = `
[xmpp]
component_addr = "[::1]:5347"
reconnect_min = "500ms"
reconnect_max = "2m"
max_stanza_bytes = 65536
max_stanza_depth = 16

[store]
path = "/var/lib/transportd/transportd.db"
key_env = "TEST_TRANSPORTD_KEY"

[http]
listen = ":8480"
public_url = "https://gw.example.net/hooks/"

[log]
level = "debug"
format = "json"
redact_jids = true

[domains."Example.NET"]
users = ["example.net", "Staff.Example.net"]
registration = "allowlist"
allow = ["Friend@Other.net", "partner.org"]
admins = ["Admin@example.net"]

[domains."Example.NET".transports.email]
jid = "Mail.Example.net"
secret_file = "email.secret"
[domains."Example.NET".transports.email.defaults]
imap_host = "imap.example.net"
imap_port = 993
starttls = false

[domains."Example.NET".transports.sms]
secret_env = "TEST_TRANSPORTD_SMS_SECRET"

[domains."other.org"]
registration = "closed"
[domains."other.org".transports.irc]
enabled = false
room_archive_days = 0
`

func TestFull(t *testing.T) {
	dir := fixture(t)
	t.Setenv("TEST_TRANSPORTD_KEY", base64.StdEncoding.EncodeToString(testKey))
	t.Setenv("TEST_TRANSPORTD_SMS_SECRET", testSecret+"\n")
	cfg, errs := parse(t, dir, full)
	if errs != nil {
		t.Fatal(errs)
	}
	if cfg.XMPP != (XMPP{"[::1]:5347", 500 * time.Millisecond, 2 * time.Minute, 65536, 16}) {
		t.Errorf("XMPP = %+v", cfg.XMPP)
	}
	if cfg.Store.KeySource != "env TEST_TRANSPORTD_KEY" || string(cfg.Store.Key) != string(testKey) {
		t.Errorf("Store = %v", cfg.Store)
	}
	if cfg.HTTP.Listen != ":8480" || cfg.HTTP.PublicURL.String() != "https://gw.example.net/hooks/" {
		t.Errorf("HTTP = %+v", cfg.HTTP)
	}
	if cfg.Log != (Log{Level: slog.LevelDebug, JSON: true, RedactJIDs: true}) {
		t.Errorf("Log = %+v", cfg.Log)
	}
	if len(cfg.Domains) != 2 || cfg.Domains[0].Name != "example.net" || cfg.Domains[1].Name != "other.org" {
		t.Fatalf("Domains = %v", cfg.Domains)
	}
	d := cfg.Domain("EXAMPLE.net.")
	if d != &cfg.Domains[0] {
		t.Fatalf("Domain(EXAMPLE.net.) = %p, want %p", d, &cfg.Domains[0])
	}
	if !reflect.DeepEqual(d.Users, []string{"example.net", "staff.example.net"}) ||
		!reflect.DeepEqual(d.Allow, []string{"friend@other.net", "partner.org"}) ||
		!reflect.DeepEqual(d.Admins, []string{"admin@example.net"}) ||
		d.Registration != RegistrationAllowlist {
		t.Errorf("Domain = %+v", *d)
	}
	email, sms := d.Transport("email"), d.Transport("sms")
	if email == nil || sms == nil || len(d.Transports) != 2 {
		t.Fatalf("Transports = %v", d.Transports)
	}
	if email.JID != "mail.example.net" || !reflect.DeepEqual(email.Defaults,
		map[string]string{"imap_host": "imap.example.net", "imap_port": "993", "starttls": "false"}) {
		t.Errorf("email = %v", email)
	}
	if sms.JID != "sms.example.net" || sms.Secret != testSecret || sms.SecretSource != "env TEST_TRANSPORTD_SMS_SECRET" {
		t.Errorf("sms = %v", sms)
	}
	irc := cfg.Domain("other.org").Transport("irc")
	if irc == nil || irc.Enabled || irc.Secret != "" || irc.JID != "irc.other.org" || irc.RoomArchiveDays != 0 {
		t.Errorf("irc = %v", irc)
	}
	if cfg.Domain("nowhere.test") != nil {
		t.Errorf("Domain(nowhere.test) != nil")
	}
}

func TestPolicy(t *testing.T) {
	d := Domain{
		Name:         "example.net",
		Users:        []string{"example.net", "staff.example.net"},
		Registration: RegistrationAllowlist,
		Allow:        []string{"friend@example.net", "staff.example.net"},
		Admins:       []string{"admin@example.net"},
	}
	for i, tc := range []struct {
		jid                     string
		allowed, allowlist, adm bool
	}{
		0: {"friend@example.net", true, true, false},
		1: {"Friend@Example.NET/phone", true, true, false},
		2: {"stranger@example.net", true, false, false},
		3: {"anyone@staff.example.net", true, true, false},
		4: {"friend@elsewhere.net", false, false, false},
		5: {"admin@example.net", true, false, true},
		6: {"x@sub.staff.example.net", false, false, false}, // no suffix match
		7: {"x@evilexample.net", false, false, false},
		8: {"not a jid@@", false, false, false},
		9: {"example.net", false, false, false}, // a server, not a user
	} {
		if got := d.UserAllowed(tc.jid); got != tc.allowed {
			t.Errorf("%d: UserAllowed(%q) = %t", i, tc.jid, got)
		}
		for _, reg := range []Registration{RegistrationOpen, RegistrationAllowlist, RegistrationClosed} {
			d.Registration = reg
			want := map[Registration]bool{RegistrationOpen: tc.allowed, RegistrationAllowlist: tc.allowlist}[reg]
			if got := d.MayRegister(tc.jid); got != want {
				t.Errorf("%d: with %s, MayRegister(%q) = %t, want %t", i, reg, tc.jid, got, want)
			}
		}
		if got := d.IsAdmin(tc.jid); got != tc.adm {
			t.Errorf("%d: IsAdmin(%q) = %t", i, tc.jid, got)
		}
	}
}

// replace applies old→new replacements to the minimal config, failing if
// an old string is not in it.
func replace(t *testing.T, config string, oldnew ...string) string {
	t.Helper()
	for i := 0; i < len(oldnew); i += 2 {
		if !strings.Contains(config, oldnew[i]) {
			t.Fatalf("config has no %q", oldnew[i])
		}
		config = strings.Replace(config, oldnew[i], oldnew[i+1], 1)
	}
	return config
}

func TestErrors(t *testing.T) {
	const (
		xmppT  = "[xmpp]\n"
		storeT = "[store]\n"
		emailT = "[domains.\"example.net\".transports.email]\n"
		addr   = `component_addr = "127.0.0.1:5347"`
		keyF   = `key_file = "key"`
		secF   = `secret_file = "email.secret"`
	)
	for i, tc := range []struct {
		oldnew []string // applied to minimal
		key    string   // of the single expected problem
		msg    string   // in its message
	}{
		0:  {[]string{addr, ""}, "xmpp.component_addr", "missing"},
		1:  {[]string{addr, `component_addr = "localhost"`}, "xmpp.component_addr", "not host:port"},
		2:  {[]string{addr, `component_addr = "localhost:0"`}, "xmpp.component_addr", "from 1 to 65535"},
		3:  {[]string{addr, `component_addr = "localhost:65536"`}, "xmpp.component_addr", "from 1 to 65535"},
		4:  {[]string{addr, `component_addr = "localhost:xmpp"`}, "xmpp.component_addr", "from 1 to 65535"},
		5:  {[]string{addr, `component_addr = ":5347"`}, "xmpp.component_addr", "no host"},
		6:  {[]string{addr, `component_addr = 5347`}, "xmpp.component_addr", "must be a string, not an integer"},
		7:  {[]string{xmppT, xmppT + "reconnect_min = \"soon\"\n"}, "xmpp.reconnect_min", `"soon" is not a duration`},
		8:  {[]string{xmppT, xmppT + "reconnect_max = \"-1s\"\n"}, "xmpp.reconnect_max", "longer than zero"},
		9:  {[]string{xmppT, xmppT + "reconnect_min = \"2m\"\n"}, "xmpp.reconnect_min", "longer than reconnect_max"},
		10: {[]string{xmppT, xmppT + "max_stanza_bytes = 100\n"}, "xmpp.max_stanza_bytes", "out of range"},
		11: {[]string{xmppT, xmppT + "max_stanza_depth = \"deep\"\n"}, "xmpp.max_stanza_depth", "must be an integer, not a string"},
		12: {[]string{`path = "transportd.db"`, ""}, "store.path", "missing"},
		13: {[]string{keyF, ""}, "store", "one of key_file or key_env is required"},
		14: {[]string{keyF, keyF + "\nkey_env = \"HOME\""}, "store", "set only one of key_file and key_env"},
		15: {[]string{keyF, `key_file = "nokey"`}, "store.key_file", "file " + "DIR/nokey does not exist"},
		16: {[]string{keyF, `key_file = "empty"`}, "store.key_file", "file DIR/empty is empty"},
		17: {[]string{keyF, `key_file = "short.key"`}, "store.key_file", "holds a 9-byte key; it must be 32 bytes"},
		18: {[]string{keyF, `key_file = "notbase64.key"`}, "store.key_file", "does not hold a key in base64"},
		19: {[]string{keyF, `key_env = "TEST_TRANSPORTD_UNSET"`}, "store.key_env", "environment variable TEST_TRANSPORTD_UNSET is not set"},
		20: {[]string{keyF, `key_env = "TEST_TRANSPORTD_EMPTY"`}, "store.key_env", "environment variable TEST_TRANSPORTD_EMPTY is empty"},
		21: {[]string{storeT, "[http]\nlisten = \"localhost\"\n" + storeT}, "http.listen", "not host:port"},
		22: {[]string{storeT, "[http]\npublic_url = \"/relative\"\n" + storeT}, "http.public_url", "absolute http:// or https:// URL"},
		23: {[]string{storeT, "[http]\npublic_url = \"ftp://x.test/\"\n" + storeT}, "http.public_url", "absolute http:// or https:// URL"},
		24: {[]string{storeT, "[http]\npublic_url = \"https://u:p@x.test/\"\n" + storeT}, "http.public_url", "user name or password"},
		25: {[]string{storeT, "[log]\nlevel = \"verbose\"\n" + storeT}, "log.level", `"verbose" is not one of debug, info, warn, error`},
		26: {[]string{storeT, "[log]\nformat = \"xml\"\n" + storeT}, "log.format", `"xml" is not one of text, json`},
		27: {[]string{storeT, "[log]\nredact_jids = \"yes\"\n" + storeT}, "log.redact_jids", "must be true or false, not a string"},
		28: {[]string{emailT + secF, ""}, "domains", "no domains configured"},
		29: {[]string{`"example.net"`, `"bad domain!"`}, `domains."bad domain!"`, "not a valid domain name"},
		30: {[]string{`"example.net"`, `"user@example.net"`}, `domains."user@example.net"`, "not a valid domain name"},
		31: {[]string{emailT, "[domains.\"example.net\"]\nusers = []\n" + emailT}, `domains."example.net".users`, "is empty"},
		32: {[]string{emailT, "[domains.\"example.net\"]\nusers = [\"a..b\"]\n" + emailT}, `domains."example.net".users`, `"a..b" is not a valid domain name`},
		33: {[]string{emailT, "[domains.\"example.net\"]\nusers = [\"ok.net\", 3]\n" + emailT}, `domains."example.net".users`, "element 2 must be a string, not an integer"},
		34: {[]string{emailT, "[domains.\"example.net\"]\nregistration = \"invite\"\n" + emailT}, `domains."example.net".registration`, `"invite" is not one of open, allowlist, closed`},
		35: {[]string{emailT, "[domains.\"example.net\"]\nregistration = \"allowlist\"\n" + emailT}, `domains."example.net".registration`, "allow is not set"},
		36: {[]string{emailT, "[domains.\"example.net\"]\nallow = [\"a@b.test\"]\n" + emailT}, `domains."example.net".allow`, `registration is "open"`},
		37: {[]string{emailT, "[domains.\"example.net\"]\nregistration = \"allowlist\"\nallow = [\"a@b.test/res\"]\n" + emailT}, `domains."example.net".allow`, "neither a bare JID nor a domain"},
		38: {[]string{emailT, "[domains.\"example.net\"]\nadmins = [\"example.net\"]\n" + emailT}, `domains."example.net".admins`, `"example.net" is not a bare JID`},
		39: {[]string{emailT, "[domains.\"example.net\"]\nadmins = \"a@example.net\"\n" + emailT}, `domains."example.net".admins`, "must be an array of strings, not a string"},
		40: {[]string{"transports.email]", "transports.fax]"}, `domains."example.net".transports.fax`, `unknown transport "fax" (known: email, irc, sms)`},
		41: {[]string{secF, ""}, `domains."example.net".transports.email`, "one of secret_file or secret_env is required"},
		42: {[]string{secF, `secret_file = "/nonexistent/x"`}, `domains."example.net".transports.email.secret_file`, "file /nonexistent/x does not exist"},
		43: {[]string{secF, `secret_file = "empty"`}, `domains."example.net".transports.email.secret_file`, "file DIR/empty is empty"},
		44: {[]string{secF, `secret_env = "TEST_TRANSPORTD_UNSET"`}, `domains."example.net".transports.email.secret_env`, "environment variable TEST_TRANSPORTD_UNSET is not set"},
		45: {[]string{secF, `secret_env = "TEST_TRANSPORTD_EMPTY"`}, `domains."example.net".transports.email.secret_env`, "environment variable TEST_TRANSPORTD_EMPTY is empty"},
		46: {[]string{secF, secF + "\nsecret_env = \"HOME\""}, `domains."example.net".transports.email`, "set only one of secret_file and secret_env"},
		47: {[]string{secF, `secret = "hunter2"`}, `domains."example.net".transports.email.secret`, "use secret_file or secret_env"},
		48: {[]string{secF, secF + "\njid = \"a@b\""}, `domains."example.net".transports.email.jid`, "not a valid component JID"},
		49: {[]string{secF, secF + "\nenabled = 1"}, `domains."example.net".transports.email.enabled`, "must be true or false, not an integer"},
		50: {[]string{secF, secF + "\ndefaults = { port = 1.5 }"}, `domains."example.net".transports.email.defaults.port`, "must be a string, an integer or a boolean, not a float"},
		51: {[]string{secF, secF + "\njid = \"example.net\""}, `domains."example.net".transports.email.jid`, "component JID example.net is the name or a user domain"},
		52: {[]string{secF, secF + "\nsecrt_file = \"x\""}, `domains."example.net".transports.email.secrt_file`, "unknown key"},
		53: {[]string{storeT, "[xmpp.tls]\ncert = \"x\"\n" + storeT}, "xmpp.tls", "unknown key"},
		54: {[]string{xmppT, "[xmp]\nfoo = 1\n" + xmppT}, "xmp", "unknown key"},
		55: {[]string{xmppT, "[xmpp\n"}, "", "not valid TOML: line 3"},
		56: {[]string{secF, secF + "\nextra = \"\\uZZZZ-hunter2\""}, "", `invalid \x, \u or \U escape`},
		57: {[]string{xmppT, "log = 3\n" + xmppT}, "log", "line 2: must be a table, not an integer"},
		59: {[]string{emailT + secF, "[domains.\"example.net\"]\ntransports = [1]\n"}, `domains."example.net".transports`, "must be a table, not an array"},
		60: {[]string{emailT + secF, "", xmppT, "domains = \"example.net\"\n" + xmppT}, "domains", "must be a table, not a string"},
		61: {[]string{secF, secF + "\ndefaults = 5"}, `domains."example.net".transports.email.defaults`, "must be a table, not an integer"},
		62: {[]string{xmppT, "[[xmpp]]\n"}, "xmpp", "must be a table, not an array of tables"},
		63: {[]string{secF, `secret_env = "hunter2 with spaces"`}, `domains."example.net".transports.email.secret_env`, "is not an environment variable name"},
		64: {[]string{secF, secF + "\nroom_archive_days = -1"}, `domains."example.net".transports.email.room_archive_days`, "-1 is out of range; it must be from 0 to 3650"},
		65: {[]string{secF, secF + "\nroom_archive_days = \"7d\""}, `domains."example.net".transports.email.room_archive_days`, "must be an integer, not a string"},
		58: {[]string{emailT, "[domains.\"Example.net\"]\n" + emailT}, `domains."example.net"`, `the same domain as domains."Example.net"`},
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			dir := fixture(t)
			t.Setenv("TEST_TRANSPORTD_EMPTY", " ")
			t.Setenv("TEST_TRANSPORTD_UNSET", "")
			os.Unsetenv("TEST_TRANSPORTD_UNSET")
			_, errs := parse(t, dir, replace(t, minimal, tc.oldnew...))
			if errs == nil {
				t.Fatalf("no error, want %s: ...%s...", tc.key, tc.msg)
			}
			msg := strings.ReplaceAll(tc.msg, "DIR", dir)
			if len(errs.List) != 1 || errs.List[0].Key != tc.key || !strings.Contains(errs.List[0].Msg, msg) {
				t.Errorf("got %d problems:\n%v\nwant one, %s: ...%s...", len(errs.List), errs, tc.key, msg)
			}
			if strings.Contains(errs.Error(), "hunter2") {
				t.Errorf("error shows a secret: %v", errs)
			}
		})
	}
}

func TestDuplicateComponentJID(t *testing.T) {
	dir := fixture(t)
	config := minimal + `
[domains."example.net".transports.sms]
jid = "email.example.net"
secret_file = "sms.secret"
[domains."other.net".transports.email]
jid = "EMAIL.example.net"
secret_file = "email.secret"
`
	_, errs := parse(t, dir, config)
	if errs == nil {
		t.Fatal("no error")
	}
	var keys []string
	for _, e := range errs.List {
		keys = append(keys, e.Key)
		if !strings.Contains(e.Msg, `component JID email.example.net is already used by domains."example.net".transports.email`) {
			t.Errorf("message: %v", e)
		}
	}
	want := []string{`domains."example.net".transports.sms.jid`, `domains."other.net".transports.email.jid`}
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("problems at %q, want %q", keys, want)
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	dir := fixture(t)
	config := `
[xmpp]
component_addr = "localhost"          # 1: no port
reconnect_max = "forever"             # 2: not a duration
[store]
path = "db"
key_file = "short.key"                # 3: wrong key length
[log]
levle = "debug"                       # 4: unknown key
[domains."example.net".transports.email]
secret_file = "missing.secret"        # 5: no such file
`
	_, errs := parse(t, dir, config)
	if errs == nil {
		t.Fatal("no error")
	}
	want := []string{
		`domains."example.net".transports.email.secret_file: file ` + filepath.Join(dir, "missing.secret") + " does not exist",
		"log.levle: unknown key",
		"store.key_file: file " + filepath.Join(dir, "short.key") + " holds a 9-byte key",
		`xmpp.component_addr: "localhost" is not host:port`,
		`xmpp.reconnect_max: "forever" is not a duration`,
	}
	lines := strings.Split(errs.Error(), "\n")
	if len(lines) != len(want) {
		t.Fatalf("got %d problems, want %d:\n%v", len(lines), len(want), errs)
	}
	for i := range want {
		if !strings.HasPrefix(lines[i], want[i]) {
			t.Errorf("problem %d = %q, want %q...", i, lines[i], want[i])
		}
	}
}

func TestLoad(t *testing.T) {
	dir := fixture(t)
	path := filepath.Join(dir, "transportd.toml")
	if err := os.WriteFile(path, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	// Relative paths resolve against the file's directory, not the working one.
	t.Chdir(t.TempDir())
	cfg, err := Load(path, known)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Store.Path != filepath.Join(dir, "transportd.db") {
		t.Errorf("Store.Path = %q", cfg.Store.Path)
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte(replace(t, minimal, `"key"`, `"nokey"`)), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(bad, known)
	var errs *Errors
	if !errors.As(err, &errs) || errs.File != bad || !strings.HasPrefix(err.Error(), bad+": store.key_file: file ") {
		t.Errorf("Load(bad) = %v", err)
	}

	_, err = Load(filepath.Join(dir, "nonexistent.toml"), known)
	if !errors.As(err, &errs) || len(errs.List) != 1 || !strings.Contains(err.Error(), "no such file") {
		t.Errorf("Load(nonexistent) = %v", err)
	}
}

func TestSecretsNeverShown(t *testing.T) {
	dir := fixture(t)
	t.Setenv("TEST_TRANSPORTD_SMS_SECRET", testSecret)
	t.Setenv("TEST_TRANSPORTD_KEY", base64.StdEncoding.EncodeToString(testKey))
	config := minimal + `
[domains."example.net".transports.sms]
secret_env = "TEST_TRANSPORTD_SMS_SECRET"
`
	cfg, errs := parse(t, dir, config)
	if errs != nil {
		t.Fatal(errs)
	}
	b64 := base64.StdEncoding.EncodeToString(testKey)
	check := func(what, s string) {
		t.Helper()
		for _, secret := range []string{testSecret, string(testKey), b64, fmt.Sprintf("%x", testKey), fmt.Sprint(testKey)} {
			if strings.Contains(s, secret) {
				t.Errorf("%s shows a secret: %s", what, s)
			}
		}
	}
	check("String", cfg.String())
	check("%v", fmt.Sprintf("%v", cfg))
	check("%+v", fmt.Sprintf("%+v", *cfg))
	check("%#v", fmt.Sprintf("%#v", *cfg))
	check("%v of domains", fmt.Sprintf("%v %+v %#v", cfg.Domains, cfg.Domains, cfg.Domains))
	js, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	check("JSON", string(js))
	var logs strings.Builder
	slog.New(slog.NewJSONHandler(&logs, nil)).Info("config", "cfg", cfg, "t", cfg.Domains[0].Transports[0], "store", cfg.Store)
	slog.New(slog.NewTextHandler(&logs, nil)).Info("config", "cfg", cfg, "t", cfg.Domains[0].Transports[0], "store", cfg.Store)
	check("logs", logs.String())
	if !strings.Contains(cfg.String(), "email.example.net") {
		t.Errorf("String() = %s", cfg)
	}

	// Secrets that fail validation are not quoted either.
	_, errs = parse(t, dir, replace(t, config, `key_file = "key"`, `key_env = "TEST_TRANSPORTD_SMS_SECRET"`,
		`"email.secret"`, `"email.secret"`+"\nsecret = \""+testSecret+"\""))
	if errs == nil || len(errs.List) != 2 {
		t.Fatalf("want 2 problems, got %v", errs)
	}
	check("errors", errs.Error())
}

// TestExample checks that configs/transportd.example.toml is a valid
// config apart from the files and variables it names, which do not exist
// here.
func TestExample(t *testing.T) {
	t.Setenv("TRANSPORTD_SMS_SECRET", "") // restored after the test
	os.Unsetenv("TRANSPORTD_SMS_SECRET")
	_, err := Load("../../configs/transportd.example.toml", known)
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Load = %v, want the missing files and variables", err)
	}
	var got []string
	for _, e := range errs.List {
		if strings.Contains(e.Msg, "does not exist") || strings.Contains(e.Msg, "is not set") {
			got = append(got, e.Key)
			continue
		}
		t.Errorf("unexpected problem: %v", e)
	}
	want := []string{
		`domains."example.net".transports.email.secret_file`,
		`domains."example.net".transports.sms.secret_env`,
		`domains."example.org".transports.email.secret_file`,
		"store.key_file",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems at %q, want %q", got, want)
	}
}
