package core

import (
	"context"
	"errors"
	"strconv"
	"time"

	"mellium.im/xmpp/commands"
	"mellium.im/xmpp/disco"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"transportd/registration"
)

// A room's configuration (XEP-0045 §10.2: a muc#owner get answered with
// the muc#roomconfig form, a set submitting it), for networks whose rooms
// have settings their operators change (IRC's channel modes).

const (
	nsMUCOwner      = "http://jabber.org/protocol/muc#owner"
	nsMUCRoomConfig = "http://jabber.org/protocol/muc#roomconfig"
)

// RoomConfigurer is implemented by a GroupSession whose network's rooms
// have settings (IRC's channel modes +m +i +s +t +k +l).
type RoomConfigurer interface {
	// RoomConfig asks the network for a room's settings and waits for
	// them (or ctx).
	RoomConfig(ctx context.Context, room string) (RoomConfig, error)
	// ConfigureRoom asks the network to change a room's settings from
	// old (what RoomConfig returned just before) to new. It returns once
	// the change is queued; the network's refusal (not a channel
	// operator) comes back as a room notice.
	ConfigureRoom(ctx context.Context, room string, old, new RoomConfig) error
}

// RoomConfig is what XEP-0045's room configuration form shows of a room.
type RoomConfig struct {
	Moderated     bool   // only occupants with voice speak (IRC +m)
	MembersOnly   bool   // joined by invitation only (+i)
	Hidden        bool   // not in the network's room list (+s, +p)
	LockedSubject bool   // only moderators change the subject (+t)
	Password      string // needed to join, "" if none (+k)
	MaxUsers      int    // 0 if no limit (+l)
}

// Fields of the muc#roomconfig form (XEP-0045 §15.5.3).
const (
	rcModerated     = "muc#roomconfig_moderatedroom"
	rcMembersOnly   = "muc#roomconfig_membersonly"
	rcPublic        = "muc#roomconfig_publicroom"
	rcChangeSubject = "muc#roomconfig_changesubject"
	rcProtected     = "muc#roomconfig_passwordprotectedroom"
	rcSecret        = "muc#roomconfig_roomsecret"
	rcMaxUsers      = "muc#roomconfig_maxusers"
)

// roomConfigForm is the form core shows; the standard field names, so a
// client can render its own dialog for them.
var roomConfigForm = &registration.Schema{
	Title:        "Room configuration",
	Instructions: "The room's settings on its network. Only the room's operators there can change them.",
	Fields: []registration.Field{
		{Var: "FORM_TYPE", Type: registration.Hidden, Default: nsMUCRoomConfig},
		{Var: rcModerated, Type: registration.Boolean, Label: "Only occupants with voice may send messages (moderated)"},
		{Var: rcMembersOnly, Type: registration.Boolean, Label: "Invitation only"},
		{Var: rcPublic, Type: registration.Boolean, Label: "Listed in the room list (not secret)"},
		{Var: rcChangeSubject, Type: registration.Boolean, Label: "Occupants may change the subject"},
		{Var: rcProtected, Type: registration.Boolean, Label: "A password is needed to join"},
		{Var: rcSecret, Type: registration.TextPrivate, Label: "Password", MaxLen: 64},
		{Var: rcMaxUsers, Type: registration.TextSingle, Label: "Maximum number of occupants (empty: no limit)", MaxLen: 9, Validate: positiveNumber},
	},
}

func positiveNumber(v string) error {
	if n, err := strconv.Atoi(v); err != nil || n <= 0 {
		return errors.New("must be a whole number above 0, or empty for no limit")
	}
	return nil
}

// values is the form's view of a configuration.
func (rc RoomConfig) values() registration.Values {
	b := strconv.FormatBool
	v := registration.Values{
		rcModerated:     b(rc.Moderated),
		rcMembersOnly:   b(rc.MembersOnly),
		rcPublic:        b(!rc.Hidden),
		rcChangeSubject: b(!rc.LockedSubject),
		rcProtected:     b(rc.Password != ""),
	}
	if rc.Password != "" {
		v[rcSecret] = rc.Password
	}
	if rc.MaxUsers > 0 {
		v[rcMaxUsers] = strconv.Itoa(rc.MaxUsers)
	}
	return v
}

// applyRoomConfig is cur with a submitted form over it: fields not sent
// keep their value. A password given without the "password needed" box
// sets one; the box without a password is refused.
func applyRoomConfig(cur RoomConfig, sub *registration.Submission) (RoomConfig, error) {
	v, err := roomConfigForm.ValidateWith(sub, cur.values())
	if err != nil {
		return cur, err
	}
	rc := RoomConfig{
		Moderated:     v[rcModerated] == "true",
		MembersOnly:   v[rcMembersOnly] == "true",
		Hidden:        v[rcPublic] == "false",
		LockedSubject: v[rcChangeSubject] == "false",
	}
	if n, err := strconv.Atoi(v[rcMaxUsers]); err == nil {
		rc.MaxUsers = n
	}
	_, boxSent := sub.Raw[rcProtected]
	switch {
	case v[rcProtected] == "true" && v[rcSecret] == "":
		return cur, &registration.FieldError{Field: rcSecret, Condition: registration.CondBadRequest, Text: `field "Password" (` + rcSecret + `): required when a password is needed to join`}
	case v[rcProtected] == "true", !boxSent && v[rcSecret] != "" && v[rcSecret] != cur.Password:
		rc.Password = v[rcSecret]
	}
	return rc, nil
}

// evRoomOwner is a muc#owner get (sub nil) or set from one of the user's
// resources.
type evRoomOwner struct {
	reply          *iqReply
	resource, room string
	sub            *registration.Submission
}

// roomOwnerIQ takes a muc#owner get or set to a room: the form asked
// for, submitted or cancelled, or a request to destroy the room.
func (c *component) roomOwnerIQ(r *iqReply, typ string, from, to jid.JID, addr string, q *Element) {
	var sub *registration.Submission
	if typ == "set" {
		if q.Child("", "destroy") != nil || q.Child(nsMUCOwner, "destroy") != nil {
			r.error(NewError(stanza.NotAllowed, "a room of this network cannot be destroyed: it ends when its last occupant leaves"))
			return
		}
		x := q.Child(nsData, "x")
		if x == nil {
			r.error(NewError(stanza.BadRequest, "submit the room configuration form (or cancel it)"))
			return
		}
		s, err := registration.ParseForm(x.ExplicitTokenReader())
		if err != nil {
			r.error(err)
			return
		}
		if s.Cancel {
			r.result(nil)
			return
		}
		if s.FormType != "" && s.FormType != nsMUCRoomConfig {
			r.error(NewError(stanza.BadRequest, "not a room configuration form: FORM_TYPE "+quote(s.FormType)))
			return
		}
		sub = s
	}
	label, _ := splitLabel(to.Localpart())
	u := c.lookupLabel(from.Bare().String(), label)
	if u == nil || !u.post(evRoomOwner{reply: r, resource: from.Resourcepart(), room: addr, sub: sub}) {
		r.error(NewError(stanza.NotAcceptable, "join the room before configuring it"))
	}
}

// roomOwner answers a resource in the room: asks the network for the
// room's configuration (off the drain), then shows it or changes it.
func (u *user) roomOwner(ev evRoomOwner) {
	r := u.rooms.get(ev.room)
	if r == nil || !r.joined || !r.resources.has(ev.resource) {
		ev.reply.error(NewError(stanza.NotAcceptable, "join the room before configuring it"))
		return
	}
	rc, ok := u.groupSession().(RoomConfigurer)
	if !ok {
		ev.reply.error(NewError(stanza.FeatureNotImplemented, "this network's rooms have no settings to change"))
		return
	}
	u.c.g.goWork("room-config", 30*time.Second, func(ctx context.Context) {
		cur, err := rc.RoomConfig(ctx, ev.room)
		if err != nil {
			ev.reply.error(err)
			return
		}
		if ev.sub == nil {
			form, err := ElementFromTokens(roomConfigForm.RenderForm(cur.values()))
			if err != nil {
				ev.reply.error(err)
				return
			}
			q := NewElement(nsMUCOwner, "query")
			q.Add(form)
			ev.reply.result(q)
			return
		}
		next, err := applyRoomConfig(cur, ev.sub)
		if err != nil {
			ev.reply.error(err)
			return
		}
		if next != cur {
			if err := rc.ConfigureRoom(ctx, ev.room, cur, next); err != nil {
				ev.reply.error(err)
				return
			}
		}
		ev.reply.result(nil)
	})
}

// Room information (XEP-0045 §6.4): a room's disco#info. To one of the
// user's resources in the room it tells what the network says of it (its
// modes, through RoomConfigurer), its subject and how many are in it;
// to anyone else what every room of the gateway is.

// roomInfoWait bounds how long a disco#info waits for the network's
// answer; a client may ask before it joins from another resource.
const roomInfoWait = 5 * time.Second

// evRoomInfo is a room's disco#info from one of the user's resources.
type evRoomInfo struct {
	reply          *iqReply
	resource, room string
}

// roomInfoIQ answers a disco#info of a room (without a node).
func (c *component) roomInfoIQ(r *iqReply, from, to jid.JID, addr string) {
	label, _ := splitLabel(to.Localpart())
	u := c.lookupLabel(from.Bare().String(), label)
	if u == nil || !u.post(evRoomInfo{reply: r, resource: from.Resourcepart(), room: addr}) {
		r.result(c.roomInfo(addr, nil, nil))
	}
}

// roomInfo answers a resource: what the network says of the room if
// the resource is in it.
func (u *user) roomInfo(ev evRoomInfo) {
	r := u.rooms.get(ev.room)
	if r == nil || !r.joined || !r.resources.has(ev.resource) {
		ev.reply.result(u.c.roomInfo(ev.room, nil, nil))
		return
	}
	st := &roomState{subject: r.subject, occupants: len(r.occupants)}
	if _, ok := r.occupants.get(r.nick); !ok {
		st.occupants++
	}
	rc, ok := u.groupSession().(RoomConfigurer)
	if !ok {
		ev.reply.result(u.c.roomInfo(ev.room, nil, st))
		return
	}
	u.c.g.goWork("room-info", roomInfoWait, func(ctx context.Context) {
		cfg, err := rc.RoomConfig(ctx, ev.room)
		if err != nil {
			u.logger().Debug("room information without the network's settings", "room", ev.room, "error", err)
			ev.reply.result(u.c.roomInfo(ev.room, nil, st))
			return
		}
		ev.reply.result(u.c.roomInfo(ev.room, &cfg, st))
	})
}

// roomState is what core knows of a room the user is in.
type roomState struct {
	subject   string
	occupants int
}

// roomInfo is a room's disco#info: its features, with the network's
// settings when known (else what a room is until told otherwise), and
// the muc#roominfo form when the user is in it.
func (c *component) roomInfo(addr string, cfg *RoomConfig, st *roomState) *Element {
	var rc RoomConfig
	if cfg != nil {
		rc = *cfg
	}
	pick := func(cond bool, yes, no string) string {
		if cond {
			return yes
		}
		return no
	}
	q := NewElement(disco.NSInfo, "query")
	q.Add(NewElement("", "identity", "category", "conference", "type", "text", "name", addr))
	features := []string{disco.NSInfo, nsMUC, "muc_persistent", "muc_nonanonymous", nsSelfPing,
		pick(rc.MembersOnly, "muc_membersonly", "muc_open"),
		pick(rc.Hidden, "muc_hidden", "muc_public"),
		pick(rc.Password != "", "muc_passwordprotected", "muc_unsecured"),
	}
	if cfg != nil {
		features = append(features, pick(rc.Moderated, "muc_moderated", "muc_unmoderated"))
	}
	if c.archiveDays() > 0 {
		features = append(features, nsMAM, nsMAMExtended, nsStanzaID)
	}
	if c.cmds != nil && c.cmds.hasRoom() {
		features = append(features, commands.NS)
	}
	for _, f := range features {
		q.Add(NewElement("", "feature", "var", f))
	}
	if st == nil {
		return q
	}
	x := NewElement(nsData, "x", "type", "result")
	field := func(v, label, value string) {
		x.Add(NewElement("", "field", "var", v, "label", label).AddText("", "value", value))
	}
	x.Add(NewElement("", "field", "var", "FORM_TYPE", "type", "hidden").AddText("", "value", "http://jabber.org/protocol/muc#roominfo"))
	field("muc#roominfo_subject", "Subject", st.subject)
	field("muc#roominfo_occupants", "Number of occupants", strconv.Itoa(st.occupants))
	if cfg != nil {
		field(rcChangeSubject, "Occupants may change the subject", strconv.FormatBool(!rc.LockedSubject))
		if rc.MaxUsers > 0 {
			field(rcMaxUsers, "Maximum number of occupants", strconv.Itoa(rc.MaxUsers))
		}
	}
	return q.Add(x)
}
