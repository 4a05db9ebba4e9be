package irc

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ergochat/irc-go/ircmsg"
)

func TestStyledText(t *testing.T) {
	for i, tc := range []struct{ in, want string }{
		0:  {"plain", "plain"},
		1:  {"\x02bold\x02 text", "*bold* text"},
		2:  {"\x1ditalic\x1d", "_italic_"},
		3:  {"\x02\x1dboth\x0f!", "*_both_*!"},
		4:  {"\x0304red\x03 and \x0302,08blue", "red and blue"},
		5:  {"\x02 spaced \x02x", " *spaced* x"},
		6:  {"\x02\x0304bo\x0303ld\x02", "*bold*"}, // colour change inside bold
		7:  {"\x1estrike\x1e \x11mono\x11", "~strike~ `mono`"},
		8:  {"\x1funder\x1f\x16rev", "underrev"},
		9:  {"caf\xe9", "café"},            // Windows-1252 / Latin-1 fallback
		10: {"\x93quoted\x94", "“quoted”"}, // Windows-1252
		11: {"a\x00b\x07c\x7fd", "abcd"},
		12: {"tab\there", "tab here"},
		13: {"\x02\x02", ""},
		14: {"x\uFFFEy\uFFFF", "xy"},
	} {
		if got := styledText(tc.in); got != tc.want {
			t.Errorf("%d: styledText(%q) = %q, want %q", i, tc.in, got, tc.want)
		}
	}
}

func TestBodyLinesAndSplit(t *testing.T) {
	got := bodyLines("one\r\ntwo\rthree\n\n  \nfour\x00\x01 ")
	want := []string{"one", "two", "three", "four"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("bodyLines = %q, want %q", got, want)
	}
	text := strings.Repeat("héllo wörld ", 100)
	pieces := splitText(text, 100)
	if strings.Join(pieces, "") != text {
		t.Fatal("splitText lost text")
	}
	for _, p := range pieces {
		if len(p) > 100 || !utf8.ValidString(p) {
			t.Errorf("piece %q: %d bytes, valid UTF-8 %v", p, len(p), utf8.ValidString(p))
		}
	}
	if oneLine("a\r\nQUIT :x\x00\tb ") != "a QUIT :x b" {
		t.Errorf("oneLine = %q", oneLine("a\r\nQUIT :x\x00\tb "))
	}
}

func TestTextMessagesFit(t *testing.T) {
	me := self{nick: "somebody", user: "~some", host: "very.long.host.name.example.org"}
	body := "first line\n/me waves\n" + strings.Repeat("ü", 700) + "\r\nQUIT :bye"
	msgs, err := textMessages("PRIVMSG", "#chan", body, me)
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, m := range msgs {
		b, err := serialize(m)
		if err != nil {
			t.Fatalf("serialize %v: %v", m, err)
		}
		relayed := ":" + me.nick + "!" + me.user + "@" + me.host + " " + string(b)
		if len(relayed) > 512 {
			t.Errorf("relayed line is %d bytes", len(relayed))
		}
		back, err := ircmsg.ParseLine(string(b))
		if err != nil || back.Command != "PRIVMSG" || back.Params[0] != "#chan" {
			t.Errorf("line %q parses as %v %v", b, back, err)
		}
		texts = append(texts, back.Params[1])
	}
	if texts[0] != "first line" || texts[1] != "\x01ACTION waves\x01" || texts[len(texts)-1] != "QUIT :bye" {
		t.Errorf("texts = %q", texts)
	}
	if n := len(texts); n < 5 {
		t.Errorf("1400 bytes of ü in %d lines", n)
	}
}

// TestTextMessagesOneLine: a body of one clean line (the common case,
// made without bodyLines' slices) gives the lines the general case does.
func TestTextMessagesOneLine(t *testing.T) {
	me := self{nick: "somebody", user: "~some", host: "host.example.org"}
	for body, want := range map[string][]string{
		"hello world":              {"PRIVMSG #chan :hello world"},
		"/me waves":                {"PRIVMSG #chan :\x01ACTION waves\x01"},
		"tab\there":                {"PRIVMSG #chan tab\there"},
		"trailing ":                {"PRIVMSG #chan trailing"},
		" :lead":                   {"PRIVMSG #chan : :lead"},
		"two\nlines":               {"PRIVMSG #chan two", "PRIVMSG #chan lines"},
		strings.Repeat("ab ", 300): nil, // split: checked by length below
	} {
		msgs, err := textMessages("PRIVMSG", "#chan", body, me)
		if err != nil {
			t.Fatalf("%q: %v", body, err)
		}
		var got []string
		for _, m := range msgs {
			b, err := serialize(m)
			if err != nil {
				t.Fatalf("%q: serialize: %v", body, err)
			}
			got = append(got, strings.TrimSuffix(string(b), "\r\n"))
		}
		if want == nil {
			if len(got) < 2 {
				t.Errorf("%d bytes in %d line(s)", len(body), len(got))
			}
			continue
		}
		if !slices.Equal(got, want) {
			t.Errorf("%q: lines %q, want %q", body, got, want)
		}
	}
}

// BenchmarkTextMessages: one line of a group chat message to IRC, as
// relayed (allocs/op is what the relay path pays for it).
func BenchmarkTextMessages(b *testing.B) {
	me := self{nick: "somebody", user: "~some", host: "host.example.org"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := textMessages("PRIVMSG", "#chan", "hello there, how are you all doing today?", me); err != nil {
			b.Fatal(err)
		}
	}
}

func TestAddresses(t *testing.T) {
	for i, tc := range []struct {
		in   string
		kind addrKind
		name string
		srv  string
		err  bool
	}{
		0:  {in: "#chan%irc.example.org", kind: kindChannel, name: "#chan", srv: "irc.example.org"},
		1:  {in: "#50%off%irc.example.org", kind: kindChannel, name: "#50%off", srv: "irc.example.org"},
		2:  {in: "nick%IRC.Example.org", kind: kindNick, name: "nick", srv: "irc.example.org"},
		3:  {in: "irc.example.org", kind: kindServer, srv: "irc.example.org"},
		4:  {in: "#chan", kind: kindChannel, name: "#chan"},
		5:  {in: "&local%127.0.0.1", kind: kindChannel, name: "&local", srv: "127.0.0.1"},
		6:  {in: "+modeless%127.0.0.1", err: true}, // '+' is not a channel by default, nor a nick
		7:  {in: "#a b%x.org", err: true},
		8:  {in: "ni ck%x.org", err: true},
		9:  {in: "%x.org", err: true},
		10: {in: "#chan%bad_host!", err: true},
		11: {in: "#chan%", err: true},
		12: {in: "[m]%x.org", kind: kindNick, name: "[m]", srv: "x.org"},
		13: {in: "#c\r\nQUIT%x.org", err: true},
	} {
		a, err := parseAddress(tc.in, nil)
		if (err != nil) != tc.err {
			t.Errorf("%d: parseAddress(%q) error %v, want error %v", i, tc.in, err, tc.err)
			continue
		}
		if err != nil {
			continue
		}
		if a.kind != tc.kind || a.name != tc.name || a.server != tc.srv {
			t.Errorf("%d: parseAddress(%q) = %+v", i, tc.in, a)
		}
	}
	// The server's CHANTYPES decide.
	a, err := parseAddress("+modeless%irc2.test", func(string) string { return "#&+" })
	if err != nil || a.kind != kindChannel {
		t.Errorf("with CHANTYPES #&+: %+v %v", a, err)
	}
	// Escaping round trip: &chan needs \26.
	tr := New()
	l := tr.Localpart("&chan's%x.org")
	if l != `\26chan\27s%x.org` {
		t.Errorf("Localpart = %q", l)
	}
	if back, err := tr.Address(l); err != nil || back != "&chan's%x.org" {
		t.Errorf("Address(%q) = %q, %v", l, back, err)
	}
}

func TestCheckOptions(t *testing.T) {
	if err := checkOptions(map[string]string{dAllowedServers: "irc.libera.chat, *.oftc.net 127.0.0.1", dFloodRate: "0.5", dPingInterval: "90s", dIdentdListen: "[::]:113", dOutgoingBind: "2001:db8::7"}); err != nil {
		t.Errorf("good defaults refused: %v", err)
	}
	err := checkOptions(map[string]string{dAllowedServers: "irc libera!", dPort: "99999", dTLS: "maybe", dFloodBurst: "0", dReconnectMax: "soon", dIdentdListen: "113", dOutgoingBind: "gw.example.net"})
	for _, key := range []string{dAllowedServers, dPort, dTLS, dFloodBurst, dReconnectMax, dIdentdListen, dOutgoingBind} {
		if err == nil || !strings.Contains(err.Error(), "defaults."+key) {
			t.Errorf("no error naming %s: %v", key, err)
		}
	}
}

func TestRedactLine(t *testing.T) {
	for in, want := range map[string]string{
		"AUTHENTICATE Zm9vAGZvbwBiYXI=":        "AUTHENTICATE <redacted>",
		"AUTHENTICATE PLAIN":                   "AUTHENTICATE PLAIN",
		"PRIVMSG NickServ :REGISTER pw a@b.c":  "PRIVMSG NickServ :<redacted>",
		"PRIVMSG nickserv :identify secret":    "PRIVMSG nickserv :<redacted>",
		"NS IDENTIFY secret":                   "NS <redacted>",
		"PASS hunter2":                         "PASS <redacted>",
		"PRIVMSG #chan :hello":                 "PRIVMSG #chan :hello",
		"@label=t1 PRIVMSG Q@CServe :AUTH x y": "PRIVMSG Q@CServe :<redacted>", // a login in after-connect commands
		"PRIVMSG #chan :auth is hard":          "PRIVMSG #chan :auth is hard",
	} {
		if got := redactLine(in); got != want {
			t.Errorf("redactLine(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWithLabel(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"PRIVMSG #c :hi\r\n", "@label=t7 PRIVMSG #c :hi\r\n"},
		{"@+draft/reply=abc PRIVMSG #c :hi\r\n", "@label=t7;+draft/reply=abc PRIVMSG #c :hi\r\n"},
	} {
		got := string(withLabel([]byte(tc.line), "t7"))
		if got != tc.want {
			t.Errorf("withLabel(%q) = %q, want %q", tc.line, got, tc.want)
		}
		m, err := ircmsg.ParseLine(strings.TrimRight(got, "\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		if _, v := m.GetTag("label"); v != "t7" || m.Command != "PRIVMSG" {
			t.Errorf("%q parses as %+v", got, m)
		}
	}
}

// The connections of many users to one server share its ISUPPORT map
// while it is the same; a 005 line after registration (handled as in
// handle: on a copy) changes one connection's view only.
func TestISupportShared(t *testing.T) {
	const server = "share.example:6667"
	line := []string{"me", "CHANTYPES=#&", "PREFIX=(ov)@+", "TOPICLEN=300", "are supported"}
	regA, regB := map[string]string{}, map[string]string{}
	parseISupport(line, regA)
	parseISupport(line, regB)
	a := shareISupport(server, regA)
	b := shareISupport(server, regB)
	if a != b {
		t.Fatal("two connections with the same ISUPPORT hold a map each")
	}
	// B's server announces a change.
	m := maps.Clone(b.m)
	parseISupport([]string{"me", "TOPICLEN=90", "-CHANTYPES", "are supported"}, m)
	b = shareISupport(server, m)
	if a.m["TOPICLEN"] != "300" || a.m["CHANTYPES"] != "#&" || a.chanTyps != "#&" {
		t.Errorf("A's view changed with B's 005: %v", a.m)
	}
	if b.m["TOPICLEN"] != "90" || b.m["CHANTYPES"] != "" || b.chanTyps != defaultChanTypes {
		t.Errorf("B's view = %v", b.m)
	}
	// A connection registering now with A's tokens does not get B's map.
	regC := map[string]string{}
	parseISupport(line, regC)
	if c := shareISupport(server, regC); c.m["TOPICLEN"] != "300" {
		t.Errorf("C's view = %v", c)
	}
}

// A network set to a character set: lines that are not UTF-8 are read in
// it, the user's lines written in it, what it lacks as "?".
func TestCharset(t *testing.T) {
	cp := charsetOf("windows-1251")
	if cp == nil || charsetOf("utf-8") != nil || charsetOf("ebcdic") != nil {
		t.Fatal("charsetOf")
	}
	in := []byte("PRIVMSG #c :\xcf\xf0\xe8\xe2\xe5\xf2") // Привет in Windows-1251
	if got := string(decodeLine(cp, in)); got != "PRIVMSG #c :Привет" {
		t.Errorf("decodeLine = %q", got)
	}
	if got := string(decodeLine(cp, []byte("PRIVMSG #c :héllo"))); got != "PRIVMSG #c :héllo" {
		t.Errorf("a UTF-8 line from a Windows-1251 network = %q", got)
	}
	if got := string(decodeLine(nil, in)); got != string(in) {
		t.Errorf("decodeLine without a charset changed the line: %q", got)
	}
	out := encodeLine(cp, []byte("PRIVMSG #c :Да, мир € 日\r\n"))
	if want := "PRIVMSG #c :\xc4\xe0, \xec\xe8\xf0 \x88 ?\r\n"; string(out) != want {
		t.Errorf("encodeLine = %q, want %q", out, want)
	}
	sj := encodeLine(charsetOf("shift_jis"), []byte("PRIVMSG #c :日本\r\n"))
	if string(decodeLine(charsetOf("shift_jis"), sj)) != "PRIVMSG #c :日本\r\n" || len(sj) >= len("PRIVMSG #c :日本\r\n") {
		t.Errorf("Shift_JIS round trip: %q", sj)
	}
	// No set here writes a text longer than its UTF-8 (lines are cut as
	// UTF-8 under 512 bytes).
	sample := "Aé€ßПривет日本語한국어中文繁體ｶﾀｶﾅ"
	for _, c := range charsets {
		if b := encodeLine(c.enc, []byte(sample)); len(b) > len(sample) {
			t.Errorf("%s: %d bytes for %d of UTF-8", c.name, len(b), len(sample))
		}
	}
	// The user's choice per network wins over the registration's, and
	// "utf-8" there undoes one made at registration.
	o := parseOptions(nil)
	reg := map[string]string{fNetwork: "irc.example.org", fEncoding: "koi8-r"}
	if c := configFor(&o, reg, "irc.example.org", netSettings{}, "", ""); c.charset != "koi8-r" {
		t.Errorf("registration's charset: %q", c.charset)
	}
	if c := configFor(&o, reg, "irc.example.org", netSettings{Encoding: "utf-8"}, "", ""); c.charset != "" {
		t.Errorf("network set back to UTF-8: %q", c.charset)
	}
	if c := configFor(&o, reg, "other.example.org", netSettings{Encoding: "iso-8859-15"}, "", ""); c.charset != "iso-8859-15" {
		t.Errorf("another network's charset: %q", c.charset)
	}
}

// A channel set apart from its network: its lines that are not UTF-8 are
// read in its set, the user's lines to it written in it; other channels
// and private messages keep the network's.
func TestChannelCharsets(t *testing.T) {
	if newLineCharsets("", nil) != nil || newLineCharsets("utf-8", map[string]string{"#a": "utf-8", "#b": ""}) != nil {
		t.Error("all UTF-8 should need no character sets")
	}
	l := newLineCharsets("windows-1252", map[string]string{"#Cyr": "koi8-r", "#u": "utf-8", "#same": "windows-1252", "#x": "ebcdic"})
	if len(l.chans) != 2 {
		t.Errorf("channels kept: %v (want #cyr and #u)", l.chans)
	}
	koi := "\xf0\xd2\xc9\xd7\xc5\xd4" // Привет in KOI8-R
	for _, c := range []struct{ in, want string }{
		{":ivan!i@h PRIVMSG #cyr :" + koi, ":ivan!i@h PRIVMSG #cyr :Привет"},
		{":ivan!i@h PRIVMSG #CYR :" + koi, ":ivan!i@h PRIVMSG #CYR :Привет"},
		{"@time=x :ivan!i@h TOPIC #cyr :" + koi, "@time=x :ivan!i@h TOPIC #cyr :Привет"},
		{":srv 332 me #cyr :" + koi, ":srv 332 me #cyr :Привет"},
		{":ivan!i@h KICK #cyr bob :" + koi, ":ivan!i@h KICK #cyr bob :Привет"},
		{":ivan!i@h PRIVMSG #other :caf\xe9", ":ivan!i@h PRIVMSG #other :café"},     // the network's
		{":ivan!i@h PRIVMSG me :caf\xe9", ":ivan!i@h PRIVMSG me :café"},             // the network's
		{":ivan!i@h PRIVMSG #other :#cyr \xe9", ":ivan!i@h PRIVMSG #other :#cyr é"}, // the text names no channel
		{":ivan!i@h PRIVMSG #u :caf\xe9", ":ivan!i@h PRIVMSG #u :caf\xe9"},          // UTF-8: left to decodeIRC
		{":ivan!i@h PRIVMSG #cyr :héllo", ":ivan!i@h PRIVMSG #cyr :héllo"},          // UTF-8 stays
	} {
		if got := string(l.decode([]byte(c.in))); got != c.want {
			t.Errorf("decode %q = %q, want %q", c.in, got, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{"PRIVMSG #cyr :Привет\r\n", "PRIVMSG #cyr :" + koi + "\r\n"},
		{"@+draft/reply=1 PRIVMSG #Cyr :Привет\r\n", "@+draft/reply=1 PRIVMSG #Cyr :" + koi + "\r\n"},
		{"PRIVMSG #other :café\r\n", "PRIVMSG #other :caf\xe9\r\n"},
		{"PRIVMSG #u :café\r\n", "PRIVMSG #u :café\r\n"},
		{"PART #cyr :пока\r\n", "PART #cyr :\xd0\xcf\xcb\xc1\r\n"},
	} {
		if got := string(l.encode([]byte(c.in))); got != c.want {
			t.Errorf("encode %q = %q, want %q", c.in, got, c.want)
		}
	}
	// A UTF-8 network with one channel set apart leaves the rest alone.
	u := newLineCharsets("", map[string]string{"#cyr": "koi8-r"})
	if got := string(u.encode([]byte("PRIVMSG #other :Привет\r\n"))); got != "PRIVMSG #other :Привет\r\n" {
		t.Errorf("another channel's line encoded: %q", got)
	}
	var none *lineCharsets
	if got := string(none.decode([]byte(koi))); got != koi {
		t.Errorf("nil charsets changed a line: %q", got)
	}
	// Configure network keeps the channels; configFor hands them on.
	o := parseOptions(nil)
	if c := configFor(&o, nil, "irc.example.org", netSettings{Channels: map[string]string{"#cyr": "koi8-r"}}, "", ""); c.chanCharsets["#cyr"] != "koi8-r" {
		t.Errorf("configFor's channels: %v", c.chanCharsets)
	}
}
