package irc

import (
	"errors"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/ergochat/irc-go/ircmsg"
)

// lineOf makes an untagged line of a message.
func lineOf(m ircmsg.Message) inLine { return inLine{Message: m} }

// libraryParse is how lines were parsed before inLine: ircmsg.ParseLine,
// again without the tags when they did not parse.
func libraryParse(line string) (ircmsg.Message, error) {
	m, err := ircmsg.ParseLine(line)
	if err != nil && strings.HasPrefix(line, "@") {
		if i := strings.IndexByte(line, ' '); i > 0 {
			m, err = ircmsg.ParseLine(line[i+1:])
		}
	}
	if err != nil && !errors.Is(err, ircmsg.ErrorBodyTooLong) {
		return ircmsg.Message{}, err
	}
	return m, nil
}

// sameAsLibrary fails t unless parseLine reads line as ircmsg does: the
// same error or none, the same source, command, parameters and tags.
func sameAsLibrary(t *testing.T, line string) {
	t.Helper()
	if strings.HasPrefix(line, "@") {
		if _, rest, ok := strings.Cut(line, " "); ok && strings.HasPrefix(strings.TrimLeft(rest, " "), "@") {
			if _, err := parseLine(line); err == nil {
				t.Fatalf("%.200q: a second @ taken", line)
			}
			return
		}
	}
	want, werr := libraryParse(line)
	got, gerr := parseLine(line)
	if (werr == nil) != (gerr == nil) {
		t.Fatalf("%.200q: error %v, ircmsg %v", line, gerr, werr)
	}
	if werr != nil {
		return
	}
	if got.Source != want.Source || got.Command != want.Command || !slices.Equal(got.Params, want.Params) {
		t.Fatalf("%.200q: %q %q %q, ircmsg %q %q %q", line, got.Source, got.Command, got.Params, want.Source, want.Command, want.Params)
	}
	wtags := want.AllTags()
	if gtags := got.AllTags(); !maps.Equal(gtags, wtags) {
		t.Fatalf("%.200q: tags %q, ircmsg %q", line, gtags, wtags)
	}
	for k, v := range wtags {
		if ok, gv := got.GetTag(k); !ok || gv != v {
			t.Fatalf("%.200q: tag %q: %v %q, ircmsg %q", line, k, ok, gv, v)
		}
	}
	for _, k := range []string{"label", "batch", "msgid", "time", "+typing", "+draft/typing", "account"} {
		wok, wv := want.GetTag(k)
		if gok, gv := got.GetTag(k); gok != wok || gv != wv {
			t.Fatalf("%.200q: tag %q: %v %q, ircmsg %v %q", line, k, gok, gv, wok, wv)
		}
	}
}

var tagLines = []string{
	"@time=2026-12-07T10:00:00.000Z;msgid=abc;label=t42 :me!~u@h PRIVMSG alice :hello there",
	"@label=a\\sb\\:c\\\\d\\r\\n;label=second :s PRIVMSG #c :x",
	"@+typing=active;+draft/typing=paused :bob!b@h TAGMSG #c",
	"@batch=xyz :s PRIVMSG #c :in a batch",
	"@a;b=;c=1 :s NOTICE me :flags",
	"@bad_name=\xff;label=ok :s PRIVMSG me :skipped name",
	"@label=\xff :s PRIVMSG me :invalid value drops the tags",
	"@label=x\x00y :s PRIVMSG me :a NUL in the tags",
	"@ :s PING x",
	"@label=x",
	"@label=x    PING   :spaced",
	"@;;=;label=trail\\ PING x",
	"@+ PING x",
	"@a=1 @b=2 PING x",
	"@ @",
	"@=v;label=1 PING x",
	"PRIVMSG #c :no tags",
	"@msgid=1 :s PRIVMSG #c :" + strings.Repeat("x", 600),
}

func TestTagsAsIRCMsg(t *testing.T) {
	for _, line := range tagLines {
		sameAsLibrary(t, line)
	}
	sameAsLibrary(t, "@label="+strings.Repeat("a", ircmsg.MaxlenTagData)+" PING x")
}

func TestDeleteTag(t *testing.T) {
	m, err := parseLine("@batch=1;label=L;batch=2;msgid=m :s PRIVMSG #c :x")
	if err != nil {
		t.Fatal(err)
	}
	m.DeleteTag("batch")
	if m.HasTag("batch") {
		t.Errorf("batch still there: %q", m.tags)
	}
	if _, l := m.GetTag("label"); l != "L" {
		t.Errorf("label %q after DeleteTag", l)
	}
	if _, id := m.GetTag("msgid"); id != "m" {
		t.Errorf("msgid %q after DeleteTag", id)
	}
}

// BenchmarkParseLine: a message's echo as InspIRCd sends it, parsed as
// the gateway does (tags read when asked: label, batch, msgid, time) and
// with ircmsg's map of tags.
func BenchmarkParseLine(b *testing.B) {
	const line = "@label=t42;msgid=JfnGRswVRg0bRO3VYHXtAQ;time=2026-12-07T10:00:00.123Z :bx1!~bx1@127.0.0.1 PRIVMSG braw1 :bpx1-1234"
	b.Run("inLine", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m, _ := parseLine(line)
			m.GetTag("label")
			m.GetTag("batch")
			m.GetTag("msgid")
			m.GetTag("time")
		}
	})
	b.Run("ircmsg", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			m, _ := libraryParse(line)
			m.GetTag("label")
			m.GetTag("batch")
			m.GetTag("msgid")
			m.GetTag("time")
		}
	})
}
