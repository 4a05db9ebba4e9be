package core

import (
	"context"
	"encoding/xml"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/commands"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"transportd/core/store"
	"transportd/registration"
)

// Command is an ad-hoc command (XEP-0050) on the gateway JID.
type Command struct {
	Node, Name string
	// Admin restricts the command to the domain's admins; others get
	// forbidden and do not see it.
	Admin bool
	// Registered restricts the command to registered users.
	Registered bool
	// Room offers the command on the rooms' JIDs (XEP-0050 on a MUC room,
	// as biboumi's channel configuration) instead of the gateway's: the
	// request's Room is the room's address and its Account the account
	// the room's JID names (its label).
	Room bool
	// Contact offers the command on the JIDs of the legacy addresses it
	// accepts instead of the gateway's (biboumi's IRC server JIDs, whose
	// Configure sets up that server): the request's Contact is the
	// address, its Account the account the JID names (its label).
	Contact func(address string) bool
	// Execute runs one stage. On the first stage req.Form is nil. It runs
	// on its own goroutine and may do I/O.
	Execute func(ctx context.Context, req *CommandRequest) *CommandResponse
}

// CommandRequest is one stage of a command as the user sent it.
type CommandRequest struct {
	From     jid.JID
	Account  *store.Account   // the main account (else the first); nil when the user is not registered
	Accounts []*store.Account // all of the user's accounts, main first
	Form     *registration.Submission
	Stage    int
	// Room is the room's address for a Room command; "" otherwise.
	Room string
	// Contact is the address for a Contact command; "" otherwise.
	Contact string
	// State is what the previous stage returned in CommandResponse.State.
	State any
}

// CommandResponse is what a stage answers.
type CommandResponse struct {
	// Form, if set, is shown and the command continues (status executing).
	Form xml.TokenReader
	// Result, if set, is a type=result form shown with a completed command.
	Result   xml.TokenReader
	Note     string
	NoteType string // info (default), warn, error
	State    any
	// Err ends the command with a stanza error.
	Err error
}

// Commander is implemented by transports that add user commands (settings).
type Commander interface {
	Commands() []Command
}

type cmdSession struct {
	node    string
	from    string
	to      string // the JID the command runs on: the gateway's or a room's
	stage   int
	state   any
	expires time.Time
}

type commandRegistry struct {
	c    *component
	cmds []Command

	mu       sync.Mutex
	sessions map[string]*cmdSession
}

func newCommandRegistry(c *component) *commandRegistry {
	r := &commandRegistry{c: c, sessions: map[string]*cmdSession{}}
	r.cmds = append(r.cmds, userCommands(c)...)
	r.cmds = append(r.cmds, adminCommands(c)...)
	r.cmds = append(r.cmds, settingsCommand(c), diagnoseCommand(c))
	if tc, ok := c.t.(Commander); ok {
		r.cmds = append(r.cmds, tc.Commands()...)
	}
	sort.SliceStable(r.cmds, func(i, j int) bool { return r.cmds[i].Name < r.cmds[j].Name })
	return r
}

// cmdTarget is the JID a command runs on: a room's (room, its address),
// a legacy address's (contact), or the gateway's (neither).
type cmdTarget struct{ room, contact string }

// runsOn says whether cmd is offered on t's JID.
func (cmd *Command) runsOn(t cmdTarget) bool {
	switch {
	case t.room != "":
		return cmd.Room
	case t.contact != "":
		return cmd.Contact != nil && cmd.Contact(t.contact)
	}
	return !cmd.Room && cmd.Contact == nil
}

func (r *commandRegistry) allowed(cmd *Command, from jid.JID) bool {
	if cmd.Admin && !r.c.dom().IsAdmin(from.Bare().String()) {
		return false
	}
	if cmd.Registered && len(r.c.usersOf(from.Bare().String())) == 0 {
		return false
	}
	return true
}

// visible are the commands offered to from on t's JID.
func (r *commandRegistry) visible(from jid.JID, t cmdTarget) []*Command {
	var out []*Command
	for i := range r.cmds {
		if r.cmds[i].runsOn(t) && r.allowed(&r.cmds[i], from) {
			out = append(out, &r.cmds[i])
		}
	}
	return out
}

// hasRoom: some command runs on the rooms' JIDs.
func (r *commandRegistry) hasRoom() bool {
	return slices.ContainsFunc(r.cmds, func(c Command) bool { return c.Room })
}

// hasContact: some command runs on addr's JID.
func (r *commandRegistry) hasContact(addr string) bool {
	return slices.ContainsFunc(r.cmds, func(c Command) bool { return c.Contact != nil && c.Contact(addr) })
}

func (r *commandRegistry) lookup(node string, t cmdTarget) *Command {
	for i := range r.cmds {
		if r.cmds[i].Node == node && r.cmds[i].runsOn(t) {
			return &r.cmds[i]
		}
	}
	return nil
}

// handle runs a stage of a command sent to the gateway's JID, a room's
// or a legacy address's (to, which t names).
func (r *commandRegistry) handle(rep *iqReply, from, to jid.JID, t cmdTarget, payload *Element) {
	node := payload.Get("node")
	cmd := r.lookup(node, t)
	if cmd == nil {
		rep.error(NewError(stanza.ItemNotFound, "no such command: "+quote(node)))
		return
	}
	if cmd.Admin && !r.c.dom().IsAdmin(from.Bare().String()) {
		r.c.log.Warn("admin command refused", "from", r.c.redact(from.Bare().String()), "node", node)
		rep.error(NewError(stanza.Forbidden, "this command is for the domain's administrators"))
		return
	}
	action := payload.Get("action")
	if action == "" {
		action = "execute"
	}
	sid := payload.Get("sessionid")
	r.mu.Lock()
	now := time.Now()
	for id, s := range r.sessions {
		if now.After(s.expires) {
			delete(r.sessions, id)
		}
	}
	var sess *cmdSession
	if sid != "" {
		sess = r.sessions[sid]
		if sess == nil || sess.from != from.String() || sess.node != node || sess.to != to.Bare().String() {
			r.mu.Unlock()
			rep.error(NewError(stanza.BadRequest, "unknown or expired command session"))
			return
		}
	} else {
		if len(r.sessions) > 10000 {
			r.mu.Unlock()
			rep.error(NewError(stanza.ResourceConstraint, "too many open command sessions"))
			return
		}
		sid = randomID()
		sess = &cmdSession{node: node, from: from.String(), to: to.Bare().String()}
		r.sessions[sid] = sess
	}
	sess.expires = now.Add(10 * time.Minute)
	r.mu.Unlock()

	reply := func(status string, resp *CommandResponse) {
		el := NewElement(commands.NS, "command", "node", node, "sessionid", sid, "status", status)
		if resp != nil {
			if resp.Form != nil {
				el.Add(NewElement("", "actions", "execute", "complete").Add(NewElement("", "complete")))
				if f, err := ElementFromTokens(resp.Form); err == nil {
					el.Add(f)
				}
			}
			if resp.Result != nil {
				if f, err := ElementFromTokens(resp.Result); err == nil {
					el.Add(f)
				}
			}
			if resp.Note != "" {
				t := resp.NoteType
				if t == "" {
					t = "info"
				}
				n := NewElement("", "note", "type", t)
				n.Text = resp.Note
				el.Add(n)
			}
		}
		rep.result(el)
	}
	end := func() {
		r.mu.Lock()
		delete(r.sessions, sid)
		r.mu.Unlock()
	}
	if action == "cancel" {
		end()
		reply("canceled", nil)
		return
	}
	var sub *registration.Submission
	if x := payload.Child(nsData, "x"); x != nil {
		s, err := registration.ParseForm(x.ExplicitTokenReader())
		if err != nil {
			end()
			rep.error(err)
			return
		}
		if s.Cancel {
			end()
			reply("canceled", nil)
			return
		}
		sub = s
	}
	req := &CommandRequest{From: from, Form: sub, Stage: sess.stage, State: sess.state, Room: t.room, Contact: t.contact}
	r.c.g.goWork("command", 60*time.Second, func(ctx context.Context) {
		if accts, err := r.c.accountsOf(from.Bare().String()); err == nil && len(accts) > 0 {
			req.Accounts, req.Account = accts, accts[0]
			if t != (cmdTarget{}) { // the account the room's or contact's JID names
				label, _ := splitLabel(to.Localpart())
				req.Account = nil
				if i := slices.IndexFunc(accts, func(a *store.Account) bool { return a.Label == label }); i >= 0 {
					req.Account = accts[i]
				}
			}
		}
		if cmd.Registered && req.Account == nil {
			end()
			rep.error(NewError(stanza.RegistrationRequired, "register with "+r.c.jid.String()+" first"))
			return
		}
		resp := cmd.Execute(ctx, req)
		if resp == nil {
			resp = &CommandResponse{}
		}
		if resp.Err != nil {
			end()
			rep.error(resp.Err)
			return
		}
		if resp.Form != nil {
			r.mu.Lock()
			sess.stage++
			sess.state = resp.State
			r.mu.Unlock()
			reply("executing", resp)
			return
		}
		end()
		reply("completed", resp)
	})
}

// accountChoice is the form field choosing one of a user's accounts; "-"
// is the main account (labels never start with "-"), "*" all of them.
func accountChoice(accts []*store.Account, withAll bool) registration.Field {
	f := registration.Field{Var: fieldAccount, Label: "Account", Type: registration.ListSingle, Default: "-"}
	for _, a := range accts {
		if a.Label == "" {
			f.Options = append(f.Options, registration.Option{Label: "Main account", Value: "-"})
		} else {
			f.Options = append(f.Options, registration.Option{Label: a.Label, Value: a.Label})
		}
	}
	if withAll {
		f.Options = append(f.Options, registration.Option{Label: "All accounts", Value: "*"})
	}
	if len(accts) > 0 && accts[0].Label != "" {
		f.Default = accts[0].Label
	}
	return f
}

// chosen returns the accounts a choice names.
func chosen(accts []*store.Account, v string) []*store.Account {
	if v == "*" {
		return accts
	}
	if v == "-" {
		v = ""
	}
	for _, a := range accts {
		if a.Label == v {
			return []*store.Account{a}
		}
	}
	return nil
}

func accountName(a *store.Account) string {
	if a.Label == "" {
		return "main account"
	}
	return "account " + a.Label
}

// userCommands are the commands core gives every transport.
func userCommands(c *component) []Command {
	return []Command{
		{
			Node: "status", Name: "Status", Registered: true,
			Execute: func(ctx context.Context, req *CommandRequest) *CommandResponse {
				var b strings.Builder
				for i, a := range req.Accounts {
					st := &stateSnapshot{State: StateDisconnected}
					if u := c.accountUser(a); u != nil {
						st = u.stateNow.Load()
					}
					queued, _ := c.g.store.Pending(ctx, a.ID, store.ToLegacy)
					incoming, _ := c.g.store.Pending(ctx, a.ID, store.ToXMPP)
					if i > 0 {
						b.WriteString("\n\n")
					}
					if len(req.Accounts) > 1 {
						fmt.Fprintf(&b, "%s\n", accountName(a))
					}
					fmt.Fprintf(&b, "Session: %s", st.State)
					if st.Text != "" && st.Text != st.State.String() {
						fmt.Fprintf(&b, " (%s)", st.Text)
					}
					fmt.Fprintf(&b, "\nRegistered: %s\nYour online resources seen: %d\nMessages waiting to be sent: %d\nMessages waiting for you: %d",
						a.Created.Format(time.RFC3339), st.Resources, queued, incoming)
				}
				a := req.Account
				st := &stateSnapshot{State: StateDisconnected}
				if u := c.accountUser(a); u != nil {
					st = u.stateNow.Load()
				}
				fields := []registration.Field{{Var: "state", Label: "Session", Type: registration.TextSingle}}
				vals := registration.Values{"state": st.State.String()}
				for _, f := range c.schema().Fields {
					if f.Secret || f.Type == registration.Fixed {
						continue
					}
					fields = append(fields, registration.Field{Var: f.Var, Label: f.Label, Type: registration.TextSingle})
					vals[f.Var] = a.Fields[f.Var]
				}
				return &CommandResponse{Note: b.String(), Result: registration.ResultForm("Status", fields, vals)}
			},
		},
		{
			Node: "unregister", Name: "Unregister", Registered: true,
			Execute: func(ctx context.Context, req *CommandRequest) *CommandResponse {
				confirm := registration.Schema{
					Title:        "Unregister",
					Instructions: "This deletes your " + c.info.DisplayName + " credentials from the gateway and ends the session.",
					Fields:       []registration.Field{{Var: "confirm", Label: "Delete my registration", Type: registration.Boolean, Required: true}},
				}
				if len(req.Accounts) > 1 {
					confirm.Fields = append([]registration.Field{accountChoice(req.Accounts, true)}, confirm.Fields...)
				}
				if req.Form == nil {
					return &CommandResponse{Form: confirm.RenderForm(nil)}
				}
				vals, err := confirm.Validate(req.Form)
				if err != nil {
					return &CommandResponse{Err: err}
				}
				if vals["confirm"] != "true" {
					return &CommandResponse{Note: "Nothing was changed."}
				}
				targets := req.Accounts[:1]
				if len(req.Accounts) > 1 {
					targets = chosen(req.Accounts, vals[fieldAccount])
				}
				for _, a := range targets {
					if err := c.unregister(a); err != nil {
						return &CommandResponse{Err: err}
					}
				}
				return &CommandResponse{Note: fmt.Sprintf("Deleted: %d registration(s).", len(targets))}
			},
		},
		{
			Node: "reconnect", Name: "Reconnect", Registered: true,
			Execute: func(ctx context.Context, req *CommandRequest) *CommandResponse {
				n := 0
				for _, a := range req.Accounts {
					if u := c.accountUser(a); u != nil {
						u.post(evReconnect{})
						n++
					}
				}
				if n == 0 {
					return &CommandResponse{Err: NewError(stanza.ItemNotFound, "no session")}
				}
				return &CommandResponse{Note: "Reconnecting."}
			},
		},
	}
}
