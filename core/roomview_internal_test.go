package core

import (
	"testing"

	"transportd/core/store"
)

// A room message for a room whose join is under way waits, told from
// the same look at the room's view as the stanzas it would make: asked
// again after (as before), a join that ended in between dropped the
// message as if nobody were in the room. With no room in the view, the
// message is dropped, not held.
func TestRoomMessageWaitsForTheJoin(t *testing.T) {
	u := &user{bare: "u@a.test"}
	c := &component{users: map[string][]*user{"u@a.test": {u}}}
	a := &store.Account{JID: "u@a.test"}
	m := Message{Contact: "#r", Groupchat: true, Nick: "alice", Body: "hi"}

	u.roomsView.Store(&[]roomView{{addr: "#r", res: []string{}, joining: true}})
	if els, _, wait := c.renderRoomMessage(a, m); !wait || len(els) != 0 {
		t.Errorf("joining: wait %v, %d stanzas; want it to wait", wait, len(els))
	}
	if _, _, wait := c.renderToXMPP(a, envelope{Kind: kindMessage, Msg: m}); !wait {
		t.Error("renderToXMPP: the message for a joining room does not wait")
	}
	u.roomsView.Store(&[]roomView{})
	if els, _, wait := c.renderRoomMessage(a, m); wait || len(els) != 0 {
		t.Errorf("not in the room: wait %v, %d stanzas; want it dropped", wait, len(els))
	}
}
