package irc

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"transportd/core"
	"transportd/internal/xmpptest"
)

const (
	nsMAM     = "urn:xmpp:mam:2"
	nsRSM     = "http://jabber.org/protocol/rsm"
	nsForward = "urn:xmpp:forward:0"
	nsSID     = "urn:xmpp:sid:0"
)

// mamPage is what a client got for one archive query.
type mamPage struct {
	bodies, ids, from, innerIDs []string
	stamps                      []time.Time
	complete                    bool
	first, last, count          string
	err                         *core.Element // the IQ's error, if it failed
}

// queryArchive sends a XEP-0313 query to a room: fields of its form
// (with, start, end, after-id, before-id; ids as a comma-separated list)
// and RSM paging (max, after, before; before "<last>" for the last page;
// "flip-page" adds the query's <flip-page/> instead), and collects the
// results sent before the IQ's answer.
func queryArchive(t *testing.T, c *xmpptest.Client, room string, form map[string]string, rsm map[string]string) mamPage {
	t.Helper()
	qid := xmpptest.RandomID()
	q := core.NewElement(nsMAM, "query", "queryid", qid)
	if len(form) > 0 {
		x := core.NewElement("jabber:x:data", "x", "type", "submit")
		x.Add(core.NewElement("", "field", "var", "FORM_TYPE", "type", "hidden").AddText("", "value", nsMAM))
		for k, v := range form {
			f := core.NewElement("", "field", "var", k)
			values := []string{v}
			if k == "ids" {
				values = strings.Split(v, ",")
			}
			for _, v := range values {
				f.AddText("", "value", v)
			}
			x.Add(f)
		}
		q.Add(x)
	}
	if len(rsm) > 0 {
		set := core.NewElement(nsRSM, "set")
		for k, v := range rsm {
			if k == "flip-page" {
				q.Add(core.NewElement(nsMAM, "flip-page"))
				continue
			}
			if v == "<last>" {
				v = ""
			}
			set.AddText("", k, v)
		}
		q.Add(set)
	}
	res := c.IQ(core.NewElement("", "iq", "type", "set", "to", room).Add(q))
	var p mamPage
	if res.Get("type") == "error" {
		p.err = res
		return p
	}
	fin := res.Child(nsMAM, "fin")
	if fin == nil {
		t.Fatalf("archive query answered without <fin/>: %s", res)
	}
	p.complete = fin.Get("complete") == "true"
	if set := fin.Child(nsRSM, "set"); set != nil {
		p.first, p.last, p.count = set.ChildText("", "first"), set.ChildText("", "last"), set.ChildText("", "count")
	}
	// The results came before the answer, on the same stream: all are
	// in the backlog now.
	for {
		m, err := c.Next(0, func(el *core.Element) bool {
			r := el.Child(nsMAM, "result")
			return el.Name.Local == "message" && r != nil && r.Get("queryid") == qid
		})
		if err != nil {
			break
		}
		r := m.Child(nsMAM, "result")
		if m.Get("from") != room {
			t.Errorf("archive result from %q, want the room %s", m.Get("from"), room)
		}
		fwd := r.Child(nsForward, "forwarded")
		inner := fwd.Child("jabber:client", "message")
		if inner == nil {
			t.Fatalf("archive result without a forwarded jabber:client message: %s", m)
		}
		stamp, err := time.Parse(time.RFC3339Nano, fwd.Child("urn:xmpp:delay", "delay").Get("stamp"))
		if err != nil {
			t.Errorf("archive result's delay: %v in %s", err, m)
		}
		p.ids = append(p.ids, r.Get("id"))
		p.bodies = append(p.bodies, inner.ChildText("", "body"))
		p.from = append(p.from, inner.Get("from"))
		p.innerIDs = append(p.innerIDs, inner.Get("id"))
		p.stamps = append(p.stamps, stamp)
	}
	return p
}

// mamMetadata asks a room for its archive's metadata (XEP-0313 §6).
func mamMetadata(t *testing.T, c *xmpptest.Client, room string) *core.Element {
	t.Helper()
	res := c.IQ(core.NewElement("", "iq", "type", "get", "to", room).Add(core.NewElement(nsMAM, "metadata")))
	md := res.Child(nsMAM, "metadata")
	if res.Get("type") != "result" || md == nil {
		t.Fatalf("archive metadata: %s", res)
	}
	return md
}

// TestRoomArchive: a client fetches a room's history from the gateway's
// archive (XEP-0313 on the room, as Conversations, Gajim and Dino do on
// a room that offers it): pages both ways, by occupant and time; live
// messages carry the archive's id as their stanza-id, so a client asks
// for what came after the last it saw. Against InspIRCd through Prosody.
func TestRoomArchive(t *testing.T) {
	e := testIRCEnv(t)
	startGW(t, e.xmpp, port(e.irc), nil)
	const (
		ch   = "#it-archive"
		room = ch + "%127.0.0.1@" + gwJID
	)
	c := onlineUser(t, e, "user2@b.test")

	info := c.IQ(core.NewElement("", "iq", "type", "get", "to", room).Add(core.NewElement(nsDiscI, "query")))
	var features []string
	if q := info.Child(nsDiscI, "query"); q != nil {
		for _, f := range q.Children {
			features = append(features, f.Get("var"))
		}
	}
	if !slices.Contains(features, nsMAM) || !slices.Contains(features, nsSID) || !slices.Contains(features, nsMAM+"#extended") {
		t.Errorf("room's features %v lack %s, %s#extended or %s", features, nsMAM, nsMAM, nsSID)
	}

	if self := joinRoom(t, c, room, "keeper"); self.Get("type") == "error" {
		t.Fatalf("join: %s", self)
	}
	isSubject := func(el *core.Element) bool { return el.Name.Local == "message" && el.Child("", "subject") != nil }
	c.Expect(xwait, "subject", isSubject)
	// An archive with nothing yet: metadata without start and end.
	if md := mamMetadata(t, c, room); md == nil || len(md.Children) != 0 {
		t.Errorf("metadata of an empty archive: %v", md)
	}
	r := dialRaw(t, e.irc, "archivist")
	r.join(ch)
	c.Expect(xwait, "archivist's presence", xmpptest.IsFrom("presence", room+"/archivist", ""))
	before := time.Now().Add(-time.Second)
	live := map[string]string{} // body -> stanza-id of the live message
	for _, body := range []string{"one", "two", "three"} {
		r.send("PRIVMSG", ch, body)
		m := c.Expect(xwait, body, isGroupchatFrom(room+"/archivist", body))
		sid := m.Child(nsSID, "stanza-id")
		if sid == nil || sid.Get("by") != room || sid.Get("id") == "" {
			t.Fatalf("live message without a stanza-id by the room: %s", m)
		}
		live[body] = sid.Get("id")
	}
	time.Sleep(1100 * time.Millisecond) // a second between, for a query by time
	middle := time.Now()
	mine := groupchat(room, "mine")
	c.Send(mine)
	m := c.Expect(xwait, "reflection", isGroupchatFrom(room+"/keeper", "mine"))
	live["mine"] = m.Child(nsSID, "stanza-id").Get("id")
	r.expect("mine on IRC", cmdFrom("PRIVMSG", "keeper"))

	// Forward, two at a time.
	p := queryArchive(t, c, room, nil, map[string]string{"max": "2"})
	if fmt.Sprint(p.bodies) != "[one two]" || p.complete || p.count != "4" || p.first != p.ids[0] || p.last != p.ids[1] {
		t.Fatalf("first page: %+v", p)
	}
	for i, body := range p.bodies {
		if p.ids[i] != live[body] {
			t.Errorf("%q archived as %q, shown live with stanza-id %q", body, p.ids[i], live[body])
		}
		if p.from[i] != room+"/archivist" || p.stamps[i].Before(before) || p.stamps[i].After(time.Now()) {
			t.Errorf("%q: from %q at %v", body, p.from[i], p.stamps[i])
		}
	}
	p = queryArchive(t, c, room, nil, map[string]string{"max": "2", "after": p.last})
	if fmt.Sprint(p.bodies) != "[three mine]" || !p.complete {
		t.Fatalf("second page: %+v", p)
	}
	if p.from[1] != room+"/keeper" || p.innerIDs[1] != mine.Get("id") || p.ids[1] != live["mine"] {
		t.Errorf("the user's own message archived from %q with id %q (sent as %q), archive id %q (live %q)",
			p.from[1], p.innerIDs[1], mine.Get("id"), p.ids[1], live["mine"])
	}

	// Backward from the newest, as a client catching up does.
	p = queryArchive(t, c, room, nil, map[string]string{"max": "3", "before": "<last>"})
	if fmt.Sprint(p.bodies) != "[two three mine]" || p.complete {
		t.Errorf("last page: %+v", p)
	}
	p = queryArchive(t, c, room, nil, map[string]string{"max": "3", "before": p.first})
	if fmt.Sprint(p.bodies) != "[one]" || !p.complete {
		t.Errorf("page before it: %+v", p)
	}

	// By occupant, by time, and the extended form's after-id.
	if p = queryArchive(t, c, room, map[string]string{"with": room + "/archivist"}, nil); fmt.Sprint(p.bodies) != "[one two three]" || !p.complete {
		t.Errorf("with archivist: %+v", p)
	}
	if p = queryArchive(t, c, room, map[string]string{"start": middle.UTC().Format(time.RFC3339Nano)}, nil); fmt.Sprint(p.bodies) != "[mine]" {
		t.Errorf("since %v: %+v", middle, p)
	}
	if p = queryArchive(t, c, room, map[string]string{"after-id": live["two"]}, nil); fmt.Sprint(p.bodies) != "[three mine]" {
		t.Errorf("after-id two: %+v", p)
	}
	// The extended features (XEP-0313 §7.1): messages by id, in the
	// archive's order, and a page flipped (newest first; <first/> and
	// <last/> still the oldest and newest).
	if p = queryArchive(t, c, room, map[string]string{"ids": live["mine"] + "," + live["one"]}, nil); fmt.Sprint(p.bodies) != "[one mine]" || !p.complete {
		t.Errorf("ids mine and one: %+v", p)
	}
	p = queryArchive(t, c, room, nil, map[string]string{"max": "3", "before": "<last>", "flip-page": ""})
	if fmt.Sprint(p.bodies) != "[mine three two]" || p.first != live["two"] || p.last != live["mine"] || p.complete {
		t.Errorf("last page flipped: %+v", p)
	}
	// Metadata: the first and last message's id and time.
	md := mamMetadata(t, c, room)
	if md.Child("", "start").Get("id") != live["one"] || md.Child("", "end").Get("id") != live["mine"] {
		t.Errorf("metadata: %s, want start %s and end %s", md, live["one"], live["mine"])
	}
	if ts, err := time.Parse(time.RFC3339Nano, md.Child("", "start").Get("timestamp")); err != nil || ts.Before(before) || ts.After(middle) {
		t.Errorf("metadata's start time: %v, %v", ts, err)
	}

	// What a client gets wrong is answered precisely.
	for _, tc := range []struct {
		form, rsm map[string]string
		cond      string
	}{
		{nil, map[string]string{"after": "no-such-id"}, "item-not-found"},
		{map[string]string{"with": "someone@a.test"}, nil, "bad-request"},
		{map[string]string{"start": "yesterday"}, nil, "bad-request"},
		{map[string]string{"colour": "red"}, nil, "bad-request"},
		{nil, map[string]string{"max": "-1"}, "bad-request"},
		{map[string]string{"ids": live["one"] + ",no-such-id"}, nil, "item-not-found"},
	} {
		p := queryArchive(t, c, room, tc.form, tc.rsm)
		if p.err == nil || p.err.Child("", "error") == nil || p.err.Child("", "error").Child("urn:ietf:params:xml:ns:xmpp-stanzas", tc.cond) == nil {
			t.Errorf("query %v %v: %+v, want %s", tc.form, tc.rsm, p, tc.cond)
		} else if txt := p.err.Child("", "error").ChildText("urn:ietf:params:xml:ns:xmpp-stanzas", "text"); txt == "" {
			t.Errorf("query %v %v: %s without a text", tc.form, tc.rsm, tc.cond)
		}
	}

	// Joining again, a client gets the room's history from the archive
	// (InspIRCd replays none), as much as it asks for, between its
	// self-presence and the subject; the network's connection was closed
	// in between (the user left the last room).
	c.Send(core.NewElement("", "presence", "to", room+"/keeper", "type", "unavailable"))
	c.Expect(xwait, "left", xmpptest.IsFrom("presence", room+"/keeper", "unavailable"))
	r.expect("keeper's PART", cmdFrom("PART", "keeper"))
	for _, tc := range []struct {
		history []string
		want    string
	}{
		{nil, "[one two three mine]"}, // no limit asked: the last 20
		{[]string{"maxstanzas", "2"}, "[three mine]"},
		{[]string{"since", middle.UTC().Format(time.RFC3339Nano)}, "[mine]"},
		{[]string{"maxstanzas", "0"}, "[]"},
	} {
		if self := joinRoom(t, c, room, "keeper", tc.history...); self.Get("type") == "error" {
			t.Fatalf("join: %s", self)
		}
		var bodies []string
		for {
			m := c.Expect(xwait, "history or subject", func(el *core.Element) bool {
				return el.Name.Local == "message" && strings.HasPrefix(el.Get("from"), room)
			})
			if m.Child("", "subject") != nil {
				break
			}
			bodies = append(bodies, m.ChildText("", "body"))
			delay, sid := m.Child("urn:xmpp:delay", "delay"), m.Child(nsSID, "stanza-id")
			if delay == nil || sid == nil || sid.Get("id") != live[m.ChildText("", "body")] {
				t.Errorf("history message without its time or archive id: %s", m)
			}
		}
		if fmt.Sprint(bodies) != tc.want {
			t.Errorf("history %v: %v, want %s", tc.history, bodies, tc.want)
		}
		c.Send(core.NewElement("", "presence", "to", room+"/keeper", "type", "unavailable"))
		c.Expect(xwait, "left", xmpptest.IsFrom("presence", room+"/keeper", "unavailable"))
	}

	// The user turns the archive off in the gateway's Settings: what was
	// kept is deleted, queries are refused; on again, it starts empty.
	settings := func(on string) {
		t.Helper()
		res := command(t, c, "settings", "", nil)
		if !strings.Contains(res.String(), `var="core_room_archive"`) {
			t.Fatalf("settings form without the archive: %s", res)
		}
		command(t, c, "settings", res.Child(nsCommands, "command").Get("sessionid"), map[string]string{"core_room_archive": on})
	}
	settings("false")
	if p = queryArchive(t, c, room, nil, nil); p.err == nil || !strings.Contains(p.err.String(), "service-unavailable") {
		t.Errorf("query with the archive off: %+v, want service-unavailable", p)
	}
	settings("true")
	if p = queryArchive(t, c, room, nil, nil); p.err != nil || len(p.bodies) != 0 || p.count != "0" || !p.complete {
		t.Errorf("query after the archive was turned off and on: %+v, want it empty", p)
	}

	// The archive is the user's own: another user, without an account,
	// gets none of it.
	other := onlineUser(t, e, "user4@b.test")
	p = queryArchive(t, other, room, nil, nil)
	if p.err == nil || !strings.Contains(p.err.String(), "registration-required") {
		t.Errorf("another user's query: %+v, want registration-required", p)
	}
}
