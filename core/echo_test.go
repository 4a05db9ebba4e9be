package core_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/stanza"

	"transportd/core"
	"transportd/core/jidesc"
	"transportd/registration"
)

// echoTransport is a test-only network: every message sent to a contact
// comes back from that contact as "echo: BODY". It lives in a test file so
// it never ships in the binary.
type echoTransport struct{}

func init() {
	core.Register("echo", func() core.Transport { return echoTransport{} })
}

func (echoTransport) Info() core.Info {
	return core.Info{Name: "echo", DisplayName: "Echo", DiscoType: "echo", Policy: core.FollowPresence}
}

func (echoTransport) Schema(defaults map[string]string) registration.Schema {
	mode := defaults["mode"]
	if mode == "" {
		mode = "fast"
	}
	return registration.Schema{
		Title:        "Echo registration",
		Instructions: "Enter your echo network login.",
		Fields: []registration.Field{
			{Var: "username", Label: "User name", Type: registration.TextSingle, Required: true, Legacy: "username"},
			{Var: "password", Label: "Password", Type: registration.TextPrivate, Required: true, Secret: true, Legacy: "password"},
			{Var: "mode", Label: "Mode", Type: registration.ListSingle, Default: mode, Options: []registration.Option{{Label: "Fast", Value: "fast"}, {Label: "Slow", Value: "slow"}}},
			{Var: "verbose", Label: "Verbose", Type: registration.Boolean},
		},
	}
}

func (echoTransport) Verify(ctx context.Context, a *core.Account) error {
	switch {
	case a.Values["username"] == "unreachable":
		return core.NewError(stanza.RemoteServerNotFound, "the echo server does not answer")
	case a.Values["password"] == "wrong":
		return core.NewError(stanza.NotAuthorized, "the echo network refused the login")
	}
	return nil
}

func (echoTransport) NewSession(a *core.Account, sink core.Sink) core.Session {
	return &echoSession{a: a, sink: sink}
}

func (echoTransport) Localpart(address string) string { return jidesc.Escape(address) }

func (echoTransport) Address(localpart string) (string, error) {
	addr := jidesc.Unescape(localpart)
	if addr == "nobody" {
		return "", core.NewError(stanza.ItemNotFound, "no such echo user")
	}
	return addr, nil
}

func (echoTransport) GatewayPrompt() (string, string) {
	return "Enter the echo user name", "Echo user"
}

func (echoTransport) TranslateAddress(input string, _ map[string]string) (string, error) {
	return input, nil
}

var echoSeq atomic.Int64

type echoSession struct {
	a    *core.Account
	sink core.Sink
}

func (s *echoSession) Run(ctx context.Context) {
	if s.a.Values["password"] == "expired" {
		s.sink.State(core.StateBadCredentials, "password expired")
		<-ctx.Done()
		return
	}
	s.sink.State(core.StateConnected, "")
	<-ctx.Done()
}

func (s *echoSession) Send(ctx context.Context, m *core.Message) (string, error) {
	if m.Contact == "refuser" {
		return "", core.NewError(stanza.NotAcceptable, "refused by the echo network")
	}
	id := fmt.Sprintf("echo-%d", echoSeq.Add(1))
	if m.Body == "whoami" {
		m.Body = "whoami: " + s.a.Values["username"]
	}
	if rest, ok := strings.CutPrefix(m.Body, "elsewhere:"); ok {
		// Pretend the user also wrote this from another client of the network.
		return id, s.sink.(core.ContactSink).Sent(ctx, &core.Message{Contact: m.Contact, Body: rest, LegacyID: id + "-sent", Time: time.Now()})
	}
	nick := "Echo " + m.Contact
	if rest, ok := strings.CutPrefix(m.Body, "rename:"); ok {
		nick = rest // the contact tells a new name
	}
	reply := &core.Message{Contact: m.Contact, Nick: nick, Body: "echo: " + m.Body, Subject: m.Subject, Thread: m.Thread, LegacyID: id + "-reply", Time: time.Now()}
	if err := s.sink.Deliver(ctx, reply); err != nil {
		return "", err
	}
	return id, nil
}

// roomTransport is echoTransport with group chats: addresses starting with
// "#" are rooms where alice and bob sit; alice answers every message.
type roomTransport struct{ echoTransport }

func init() {
	core.Register("echoroom", func() core.Transport { return roomTransport{} })
}

func (roomTransport) Info() core.Info {
	return core.Info{Name: "echoroom", DisplayName: "Echo rooms", DiscoType: "irc", Policy: core.FollowPresence, RegistrationOptional: true}
}

func (roomTransport) IsRoom(address string) bool { return strings.HasPrefix(address, "#") }

func (roomTransport) NewSession(a *core.Account, sink core.Sink) core.Session {
	return &roomSession{echoSession: echoSession{a: a, sink: sink}, rooms: sink.(core.RoomSink)}
}

type roomSession struct {
	echoSession
	rooms core.RoomSink
	mu    sync.Mutex
	nicks map[string]string
}

func (s *roomSession) JoinRoom(ctx context.Context, room, nick, password string) error {
	if nick == "taken" {
		s.rooms.RoomError(room, core.NewError(stanza.Conflict, "nick already in use"))
		return nil
	}
	s.mu.Lock()
	if s.nicks == nil {
		s.nicks = map[string]string{}
	}
	s.nicks[room] = nick
	s.mu.Unlock()
	s.rooms.RoomJoined(room, core.Occupant{Nick: nick, Role: "participant"},
		[]core.Occupant{{Nick: "alice", Role: "participant"}, {Nick: "bob", Role: "moderator", Affiliation: "admin"}}, "Welcome to "+room)
	if strings.HasPrefix(room, "#busy") {
		// A busy room: alice talks from the moment the user is in, a line
		// every few milliseconds, while the room's state is still on its
		// way to the client.
		go func() {
			for i := range busyLines {
				if s.sink.Deliver(context.Background(), &core.Message{Contact: room, Groupchat: true, Nick: "alice", Body: fmt.Sprintf("chatter %d", i), LegacyID: fmt.Sprintf("%s-chatter-%d", room, i)}) != nil {
					return
				}
				time.Sleep(3 * time.Millisecond)
			}
		}()
	}
	return nil
}

// busyLines is how many lines alice says in a #busy room.
const busyLines = 300

func (s *roomSession) LeaveRoom(ctx context.Context, room string) error { return nil }

func (s *roomSession) ChangeNick(ctx context.Context, room, nick string) error {
	s.mu.Lock()
	old := s.nicks[room]
	s.nicks[room] = nick
	s.mu.Unlock()
	s.rooms.RoomNick(room, old, nick)
	return nil
}

func (s *roomSession) SetSubject(ctx context.Context, room, subject string) error {
	s.rooms.RoomSubject(room, subject, "bob")
	return nil
}

// roomRunning counts the running room sessions, by user JID.
var roomRunning sync.Map

func (s *roomSession) Run(ctx context.Context) {
	n, _ := roomRunning.LoadOrStore(s.a.JID, new(atomic.Int32))
	n.(*atomic.Int32).Add(1)
	defer n.(*atomic.Int32).Add(-1)
	s.echoSession.Run(ctx)
}

func roomSessions(jid string) int32 {
	n, _ := roomRunning.LoadOrStore(jid, new(atomic.Int32))
	return n.(*atomic.Int32).Load()
}

// ListRooms: every server has #lobby (2 users) and #quiet.
func (s *roomSession) ListRooms(ctx context.Context, server string) ([]core.RoomItem, error) {
	return []core.RoomItem{{Address: "#lobby", Name: "#lobby", Users: 2, Topic: "on " + server}, {Address: "#quiet", Name: "#quiet"}}, nil
}

// roomBusy counts the failed sends of "later:" messages, by XMPP id.
var roomBusy sync.Map

func (s *roomSession) Send(ctx context.Context, m *core.Message) (string, error) {
	if !m.Groupchat {
		return s.echoSession.Send(ctx, m)
	}
	if strings.HasPrefix(m.Body, "later:") {
		// The network is busy for the first two attempts: the message
		// goes to the outbox and is retried a second later.
		n, _ := roomBusy.LoadOrStore(m.XMPPID, new(atomic.Int32))
		if n.(*atomic.Int32).Add(1) <= 2 {
			return "", core.Temporary(errors.New("the room is busy"))
		}
	}
	id := fmt.Sprintf("room-%d", echoSeq.Add(1))
	s.mu.Lock()
	self := s.nicks[m.Contact]
	s.mu.Unlock()
	// The network reflects the user's message, then alice answers.
	if err := s.sink.Deliver(ctx, &core.Message{Contact: m.Contact, Groupchat: true, Nick: self, Body: m.Body, XMPPID: m.XMPPID, LegacyID: id}); err != nil {
		return "", err
	}
	if err := s.sink.Deliver(ctx, &core.Message{Contact: m.Contact, Groupchat: true, Nick: "alice", Body: "alice heard: " + m.Body, LegacyID: id + "-alice"}); err != nil {
		return "", err
	}
	return id, nil
}
