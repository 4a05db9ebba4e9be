package core

import (
	"errors"
	"testing"

	"transportd/registration"
)

// TestApplyRoomConfig: a submitted room configuration form changes the
// fields it sends and keeps the others; the password box and the
// password go together.
func TestApplyRoomConfig(t *testing.T) {
	cur := RoomConfig{LockedSubject: true, Password: "k1", MaxUsers: 10}
	form := func(kv ...string) *registration.Submission {
		s := &registration.Submission{Form: true, Raw: map[string][]string{"FORM_TYPE": {nsMUCRoomConfig}}}
		for i := 0; i+1 < len(kv); i += 2 {
			s.Raw[kv[i]] = []string{kv[i+1]}
		}
		return s
	}
	for _, tc := range []struct {
		name string
		sub  *registration.Submission
		want RoomConfig
		cond string // error condition, "" if none
	}{
		{"nothing changed", form(), cur, ""},
		{"moderated", form(rcModerated, "1"), RoomConfig{Moderated: true, LockedSubject: true, Password: "k1", MaxUsers: 10}, ""},
		{"subject open, hidden", form(rcChangeSubject, "true", rcPublic, "false"), RoomConfig{Hidden: true, Password: "k1", MaxUsers: 10}, ""},
		{"no limit", form(rcMaxUsers, ""), RoomConfig{LockedSubject: true, Password: "k1"}, ""},
		{"password off", form(rcProtected, "0"), RoomConfig{LockedSubject: true, MaxUsers: 10}, ""},
		{"new password, box as it was", form(rcSecret, "k2"), RoomConfig{LockedSubject: true, Password: "k2", MaxUsers: 10}, ""},
		{"box without password", form(rcProtected, "1", rcSecret, ""), cur, registration.CondBadRequest},
		{"limit not a number", form(rcMaxUsers, "many"), cur, registration.CondNotAcceptable},
		{"limit zero", form(rcMaxUsers, "0"), cur, registration.CondNotAcceptable},
		{"two values", &registration.Submission{Form: true, Raw: map[string][]string{rcModerated: {"1", "0"}}}, cur, registration.CondBadRequest},
	} {
		got, err := applyRoomConfig(cur, tc.sub)
		var fe *registration.FieldError
		switch {
		case tc.cond == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.cond != "" && (!errors.As(err, &fe) || fe.Condition != tc.cond):
			t.Errorf("%s: error %v, want %s", tc.name, err, tc.cond)
		case got != tc.want:
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	// A room without a password: a password typed in sets one.
	if got, err := applyRoomConfig(RoomConfig{}, form(rcSecret, "k3")); err != nil || got.Password != "k3" {
		t.Errorf("password typed in without the box: %+v, %v", got, err)
	}
}
