package core

import (
	"testing"
	"time"
)

// TestHistoryRequest: a join's <history/> read, and the messages it keeps.
func TestHistoryRequest(t *testing.T) {
	now := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	hist := func(kv ...string) HistoryRequest { return parseHistory(NewElement("", "history", kv...), now) }
	for _, tc := range []struct {
		h    HistoryRequest
		want HistoryRequest
	}{
		{parseHistory(nil, now), HistoryRequest{}},
		{hist("maxstanzas", "0"), HistoryRequest{None: true}},
		{hist("maxchars", "0"), HistoryRequest{None: true}},
		{hist("maxstanzas", "20"), HistoryRequest{Max: 20}},
		{hist("maxstanzas", "-3", "maxchars", "x"), HistoryRequest{}},
		{hist("seconds", "60"), HistoryRequest{Since: now.Add(-time.Minute)}},
		{hist("since", "2026-12-06T11:00:00Z"), HistoryRequest{Since: now.Add(-time.Hour)}},
		// The later of the two.
		{hist("since", "2026-12-06T11:00:00Z", "seconds", "60"), HistoryRequest{Since: now.Add(-time.Minute)}},
		{hist("since", "2026-12-06T11:59:30Z", "seconds", "60"), HistoryRequest{Since: now.Add(-30 * time.Second)}},
		{hist("since", "yesterday"), HistoryRequest{}},
	} {
		if tc.h != tc.want {
			t.Errorf("parsed %+v, want %+v", tc.h, tc.want)
		}
	}
	msgs := []*Message{
		{Body: "1", Time: now.Add(-3 * time.Minute)},
		{Body: "2", Time: now.Add(-2 * time.Minute)},
		{Body: "3"}, // no time: kept by since
		{Body: "4", Time: now.Add(-time.Minute)},
	}
	bodies := func(ms []*Message) (s string) {
		for _, m := range ms {
			s += m.Body
		}
		return s
	}
	for _, tc := range []struct {
		h    HistoryRequest
		want string
	}{
		{HistoryRequest{}, "1234"},
		{HistoryRequest{None: true}, ""},
		{HistoryRequest{Max: 2}, "34"},
		{HistoryRequest{Since: now.Add(-150 * time.Second)}, "234"},
		{HistoryRequest{Since: now.Add(-150 * time.Second), Max: 1}, "4"},
	} {
		if got := bodies(tc.h.Filter(msgs)); got != tc.want {
			t.Errorf("%+v kept %q, want %q", tc.h, got, tc.want)
		}
	}
	if bodies(msgs) != "1234" {
		t.Errorf("Filter changed its input: %q", bodies(msgs))
	}
}
