package core

import (
	"context"
	"strconv"
	"time"
)

// The history a client asks for when it joins a room (XEP-0045 §7.2.14:
// <history maxstanzas maxchars seconds since/>): a client that has the
// room's recent messages (from its own store or an archive) asks for
// none, or for those since its last one, and would otherwise be shown
// them again.

// HistoryRequest is what a join asks of the room's history. The zero
// value asks for whatever the room gives.
type HistoryRequest struct {
	None  bool      // maxstanzas or maxchars 0: no history at all
	Max   int       // at most this many of the latest; 0 for no limit
	Since time.Time // only messages after this; zero for no limit
}

// HistoryJoiner is implemented by a GroupSession that replays history
// when the user joins (IRC: what was said while the user was away, the
// server's chathistory): core passes the joining resource's request.
type HistoryJoiner interface {
	// JoinRoomHistory is JoinRoom with the history the client asked for.
	JoinRoomHistory(ctx context.Context, room, nick, password string, h HistoryRequest) error
}

// HistoryReplayer is implemented by GroupSessions whose network may
// replay a room's history itself when the user joins (IRC's CHATHISTORY).
// Once the room is joined, RoomReplaysHistory says whether it does for
// this room: core then sends none from its archive, which would show
// the same messages twice. Safe for concurrent use.
type HistoryReplayer interface {
	RoomReplaysHistory(room string) bool
}

// RoomArchiver is implemented by the Sink core gives a GroupChats
// session. ArchivesRooms says whether core keeps an archive of the
// user's rooms now: the session then delivers the messages of a room it
// is in while the user is not (a persistent connection) as they come,
// instead of holding them for the next join. Core archives them and
// gives them, as the join asks, with the room's history; that history
// and the session's own would otherwise overlap.
type RoomArchiver interface {
	ArchivesRooms() bool
}

// ArchivesRooms implements RoomArchiver.
func (s *sink) ArchivesRooms() bool { return s.u.archived() }

// Limited reports whether h asks for less than everything.
func (h HistoryRequest) Limited() bool { return h.None || h.Max > 0 || !h.Since.IsZero() }

// Filter keeps of msgs (oldest first) those h asks for: none, those
// after Since (a message without a time is kept), the last Max.
func (h HistoryRequest) Filter(msgs []*Message) []*Message {
	if h.None {
		return nil
	}
	if !h.Since.IsZero() {
		kept := msgs[:0:0]
		for _, m := range msgs {
			if m.Time.IsZero() || m.Time.After(h.Since) {
				kept = append(kept, m)
			}
		}
		msgs = kept
	}
	if h.Max > 0 && len(msgs) > h.Max {
		msgs = msgs[len(msgs)-h.Max:]
	}
	return msgs
}

// parseHistory reads a join's <history/> (nil: none asked for). Values
// that do not parse are ignored, as the XEP has a room do with what it
// does not understand; the latest of since and now-seconds wins.
func parseHistory(el *Element, now time.Time) HistoryRequest {
	var h HistoryRequest
	if el == nil {
		return h
	}
	if n, err := strconv.Atoi(el.Get("maxstanzas")); err == nil && n >= 0 {
		h.None, h.Max = n == 0, n
	}
	if n, err := strconv.Atoi(el.Get("maxchars")); err == nil && n == 0 {
		h.None = true
	}
	if t, err := time.Parse(time.RFC3339Nano, el.Get("since")); err == nil {
		h.Since = t
	}
	if n, err := strconv.Atoi(el.Get("seconds")); err == nil && n >= 0 {
		if t := now.Add(-time.Duration(n) * time.Second); t.After(h.Since) {
			h.Since = t
		}
	}
	return h
}
