package core

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/stanza"

	"transportd/core/store"
	"transportd/registration"
)

// Admin commands (XEP-0050) on every transport JID, for the domain's admins
// (config domains."D".admins). Every one is refused with forbidden to
// anyone else, and hidden from them.

const adminPageSize = 50

// componentStats are the counters the statistics command shows.
type componentStats struct {
	toLegacy atomic.Int64
	toXMPP   atomic.Int64
	errors   hourCounter
}

// hourCounter counts events over the last hour in one-minute buckets.
type hourCounter struct {
	mu      sync.Mutex
	buckets [60]int64
	minutes [60]int64 // the minute (unix/60) each bucket holds
}

func (h *hourCounter) add() {
	m := time.Now().Unix() / 60
	h.mu.Lock()
	defer h.mu.Unlock()
	i := m % 60
	if h.minutes[i] != m {
		h.minutes[i], h.buckets[i] = m, 0
	}
	h.buckets[i]++
}

func (h *hourCounter) total() int64 {
	now := time.Now().Unix() / 60
	h.mu.Lock()
	defer h.mu.Unlock()
	var n int64
	for i := range h.buckets {
		if now-h.minutes[i] < 60 {
			n += h.buckets[i]
		}
	}
	return n
}

func adminCommands(c *component) []Command {
	return []Command{
		{Node: "admin-users", Name: "Admin: list registered users", Admin: true, Execute: c.cmdListUsers},
		{Node: "admin-user", Name: "Admin: manage a user", Admin: true, Execute: c.cmdManageUser},
		{Node: "admin-announce", Name: "Admin: announce to all users", Admin: true, Execute: c.cmdAnnounce},
		{Node: "admin-stats", Name: "Admin: statistics", Admin: true, Execute: c.cmdStats},
		{Node: "admin-transports", Name: "Admin: enable or disable transports", Admin: true, Execute: c.cmdTransports},
	}
}

func (c *component) cmdListUsers(ctx context.Context, req *CommandRequest) *CommandResponse {
	form := registration.Schema{
		Title: "Registered users of " + c.jid.String(),
		Fields: []registration.Field{
			{Var: "filter", Label: "JID contains", Type: registration.TextSingle},
			{Var: "page", Label: "Page", Type: registration.TextSingle, Default: "1", Validate: positive},
		},
	}
	if req.Form == nil {
		return &CommandResponse{Form: form.RenderForm(nil)}
	}
	vals, err := form.Validate(req.Form)
	if err != nil {
		return &CommandResponse{Err: err}
	}
	accts, err := c.g.store.ListAccounts(ctx, c.dom().Name, c.info.Name)
	if err != nil {
		return &CommandResponse{Err: err}
	}
	var lines []string
	for _, a := range accts {
		if f := vals["filter"]; f != "" && !strings.Contains(a.JID, strings.ToLower(f)) {
			continue
		}
		name := a.JID
		if a.Label != "" {
			name += " (" + a.Label + ")"
		}
		lines = append(lines, name+" — "+c.userState(a))
	}
	page, _ := strconv.Atoi(vals["page"])
	pages := max(1, (len(lines)+adminPageSize-1)/adminPageSize)
	page = min(page, pages)
	from := (page - 1) * adminPageSize
	shown := lines[min(from, len(lines)):min(from+adminPageSize, len(lines))]
	note := fmt.Sprintf("%d user(s); page %d of %d\n%s", len(lines), page, pages, strings.Join(shown, "\n"))
	return &CommandResponse{Note: note}
}

func positive(s string) error {
	if n, err := strconv.Atoi(s); err != nil || n < 1 {
		return fmt.Errorf("must be a positive number")
	}
	return nil
}

// userState describes an account's state in a few words.
func (c *component) userState(a *store.Account) string {
	if !a.Enabled {
		return "disabled"
	}
	u := c.accountUser(a)
	if u == nil {
		return "no session"
	}
	st := u.stateNow.Load()
	s := st.State.String()
	if st.Text != "" && st.Text != s {
		s += " (" + st.Text + ")"
	}
	return s
}

func (c *component) cmdManageUser(ctx context.Context, req *CommandRequest) *CommandResponse {
	form := registration.Schema{
		Title: "Manage a user of " + c.jid.String(),
		Fields: []registration.Field{
			{Var: "jid", Label: "User", Type: registration.JIDSingle, Required: true},
			{Var: "account", Label: "Account name (empty: the main account)", Type: registration.TextSingle},
			{Var: "action", Label: "Action", Type: registration.ListSingle, Default: "show", Options: []registration.Option{
				{Label: "Show state", Value: "show"},
				{Label: "Disable the account", Value: "disable"},
				{Label: "Enable the account", Value: "enable"},
				{Label: "Kick: restart the session", Value: "kick"},
				{Label: "Delete the registration", Value: "delete"},
			}},
		},
	}
	if req.Form == nil {
		return &CommandResponse{Form: form.RenderForm(nil)}
	}
	vals, err := form.Validate(req.Form)
	if err != nil {
		return &CommandResponse{Err: err}
	}
	a, err := c.g.store.GetAccountLabel(ctx, c.dom().Name, c.info.Name, vals["jid"], vals["account"])
	if errors.Is(err, store.ErrNotFound) {
		a, err = nil, nil
	}
	if err != nil {
		return &CommandResponse{Err: err}
	}
	if a == nil {
		return &CommandResponse{Err: NewError(stanza.ItemNotFound, vals["jid"]+" is not registered with "+c.jid.String())}
	}
	u := c.accountUser(a)
	action := vals["action"]
	c.log.Info("admin command", "admin", c.redact(req.From.Bare().String()), "action", action, "user", c.redact(a.JID))
	switch action {
	case "disable", "enable":
		a.Enabled = action == "enable"
		if err := c.g.store.PutAccount(ctx, a); err != nil {
			return &CommandResponse{Err: err}
		}
		if u != nil {
			u.post(evEnable{on: a.Enabled})
		}
		return &CommandResponse{Note: a.JID + ": account " + action + "d."}
	case "kick":
		if u == nil {
			return &CommandResponse{Note: a.JID + " has no session."}
		}
		u.post(evReconnect{})
		return &CommandResponse{Note: a.JID + ": session restarted."}
	case "delete":
		if err := c.unregister(a); err != nil {
			return &CommandResponse{Err: err}
		}
		return &CommandResponse{Note: a.JID + ": registration deleted."}
	}
	toLegacy, _ := c.g.store.Pending(ctx, a.ID, store.ToLegacy)
	toXMPP, _ := c.g.store.Pending(ctx, a.ID, store.ToXMPP)
	resources := 0
	if u != nil {
		resources = u.stateNow.Load().Resources
	}
	note := fmt.Sprintf("%s\nRegistered: %s\nUpdated: %s\nSession: %s\nOnline resources seen: %d\nQueued to the network: %d\nQueued to XMPP: %d",
		a.JID, a.Created.Format(time.RFC3339), a.Updated.Format(time.RFC3339), c.userState(a), resources, toLegacy, toXMPP)
	return &CommandResponse{Note: note}
}

func (c *component) cmdAnnounce(ctx context.Context, req *CommandRequest) *CommandResponse {
	form := registration.Schema{
		Title:        "Announcement",
		Instructions: "Sent as a message from " + c.jid.String() + " to every registered, enabled user.",
		Fields: []registration.Field{
			{Var: "subject", Label: "Subject", Type: registration.TextSingle, Default: "Announcement"},
			{Var: "body", Label: "Message", Type: registration.TextMulti, Required: true, MaxLen: 4096},
		},
	}
	if req.Form == nil {
		return &CommandResponse{Form: form.RenderForm(nil)}
	}
	vals, err := form.Validate(req.Form)
	if err != nil {
		return &CommandResponse{Err: err}
	}
	accts, err := c.g.store.ListAccounts(ctx, c.dom().Name, c.info.Name)
	if err != nil {
		return &CommandResponse{Err: err}
	}
	sent := 0
	for _, a := range accts {
		if !a.Enabled {
			continue
		}
		m := c.stanza("message", "", "", a.JID, "normal")
		m.SetAttr("id", randomID())
		m.AddText("", "subject", vals["subject"])
		m.AddText("", "body", vals["body"])
		if err := c.send(m); err != nil {
			return &CommandResponse{Err: err, Note: fmt.Sprintf("sent to %d user(s) before an error", sent)}
		}
		sent++
	}
	c.log.Info("announcement sent", "admin", c.redact(req.From.Bare().String()), "users", sent)
	return &CommandResponse{Note: fmt.Sprintf("Sent to %d user(s).", sent)}
}

func (c *component) cmdStats(ctx context.Context, req *CommandRequest) *CommandResponse {
	accts, err := c.g.store.ListAccounts(ctx, c.dom().Name, c.info.Name)
	if err != nil {
		return &CommandResponse{Err: err}
	}
	states := map[string]int{}
	for _, a := range accts {
		if !a.Enabled {
			states["disabled"]++
			continue
		}
		if u := c.accountUser(a); u != nil {
			states[u.stateNow.Load().State.String()]++
		}
	}
	var parts []string
	for k, v := range states {
		parts = append(parts, fmt.Sprintf("%s %d", k, v))
	}
	sort.Strings(parts)
	toLegacy, _ := c.g.store.Pending(ctx, 0, store.ToLegacy)
	toXMPP, _ := c.g.store.Pending(ctx, 0, store.ToXMPP)
	note := fmt.Sprintf("%s (up since %s)\nRegistered users: %d\nSessions: %s\nMessages to the network: %d\nMessages to XMPP: %d\nOutbox (all transports): %d to networks, %d to XMPP\nErrors in the last hour: %d",
		c.jid, c.g.started.Format(time.RFC3339), len(accts), strings.Join(parts, ", "),
		c.stats.toLegacy.Load(), c.stats.toXMPP.Load(), toLegacy, toXMPP, c.stats.errors.total())
	return &CommandResponse{Note: note}
}

func (c *component) cmdTransports(ctx context.Context, req *CommandRequest) *CommandResponse {
	d := c.dom()
	form := registration.Schema{
		Title:        "Transports of " + d.Name,
		Instructions: "Disabling a transport disconnects its component after telling its users; the choice is kept across restarts.",
	}
	current := registration.Values{}
	for _, tc := range d.Transports {
		form.Fields = append(form.Fields, registration.Field{Var: tc.Name, Label: tc.JID, Type: registration.Boolean})
		current[tc.Name] = strconv.FormatBool(c.g.enabled(ctx, d.Name, tc))
	}
	if req.Form == nil {
		return &CommandResponse{Form: form.RenderForm(current)}
	}
	vals, err := form.ValidateWith(req.Form, current)
	if err != nil {
		return &CommandResponse{Err: err}
	}
	var changed []string
	for _, tc := range d.Transports {
		if vals[tc.Name] != current[tc.Name] {
			changed = append(changed, tc.Name)
		}
	}
	if len(changed) == 0 {
		return &CommandResponse{Note: "Nothing changed."}
	}
	admin := c.redact(req.From.Bare().String())
	// Apply after answering: disabling this very transport stops the
	// component that carries the answer.
	c.g.goSafe("admin-transports", func() {
		time.Sleep(200 * time.Millisecond)
		for _, name := range changed {
			on := vals[name] == "true"
			c.g.log.Info("transport switched by an admin", "domain", d.Name, "transport", name, "enabled", on, "admin", admin)
			if err := c.g.SetEnabled(context.Background(), d.Name, name, on); err != nil {
				c.g.log.Error("switching transport", "error", err)
			}
		}
	})
	return &CommandResponse{Note: "Applying: " + strings.Join(changed, ", ") + "."}
}
