package core

import (
	"context"
	"log/slog"
	"maps"
	"net/http"
	"strconv"
	"strings"

	"mellium.im/xmpp/stanza"

	"transportd/registration"
)

// host is a component's view of the gateway, handed to Starter transports.
type host struct{ c *component }

func (h host) prefix() string { return "/" + h.c.info.Name + "/" + h.c.dom().Name }

func (h host) Handle(path string, hd http.Handler) {
	h.c.httpMux.Handle(h.prefix()+path, hd)
}

// serveComponentHTTP routes /<transport>/<domain>/... to the running
// component's own routes, so a component restarted by a reload registers
// its routes again without clashing with the old ones.
func (g *Gateway) serveComponentHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/"), "/", 3)
	if len(parts) < 2 {
		http.NotFound(w, r)
		return
	}
	c := g.component(parts[1], parts[0])
	if c == nil {
		http.NotFound(w, r)
		return
	}
	c.httpMux.ServeHTTP(w, r)
}

func (h host) URL(path string) string {
	pub := h.c.g.config().HTTP.PublicURL
	if pub == nil {
		return ""
	}
	u := *pub
	u.Path = strings.TrimSuffix(u.Path, "/") + h.prefix() + path
	u.RawQuery, u.Fragment = "", ""
	return u.String()
}

func (h host) Domain() string              { return h.c.dom().Name }
func (h host) Defaults() map[string]string { return maps.Clone(h.c.tcfg().Defaults) }
func (h host) Logger() *slog.Logger        { return h.c.log }

// settingsCommand is the "Settings" command of Configurable transports.
func settingsCommand(c *component) Command {
	return Command{
		Node: "settings", Name: "Settings", Registered: true,
		Execute: func(ctx context.Context, req *CommandRequest) *CommandResponse {
			schema := registration.Schema{Title: c.info.DisplayName + " settings"}
			schema.Fields = append(schema.Fields, registration.Field{
				Var: settingRoster, Label: "Add the people I exchange messages with to my roster", Type: registration.Boolean, Default: "true",
			})
			if _, ok := c.t.(GroupChats); ok && c.archiveDays() > 0 {
				schema.Fields = append(schema.Fields, registration.Field{
					Var: settingArchive, Type: registration.Boolean, Default: "true",
					Label: "Keep my rooms' messages for my clients to fetch (" + strconv.Itoa(c.archiveDays()) + " days)",
				})
			}
			if cf, ok := c.t.(Configurable); ok {
				ts := cf.Settings(c.tcfg().Defaults)
				schema.Instructions = ts.Instructions
				schema.Fields = append(schema.Fields, ts.Fields...)
			}
			// With several accounts, the first stage asks which one.
			acct := req.Account
			if len(req.Accounts) > 1 {
				switch req.Stage {
				case 0:
					pick := registration.Schema{Title: schema.Title, Fields: []registration.Field{accountChoice(req.Accounts, false)}}
					return &CommandResponse{Form: pick.RenderForm(nil)}
				case 1:
					pick := registration.Schema{Fields: []registration.Field{accountChoice(req.Accounts, false)}}
					vals, err := pick.Validate(req.Form)
					if err != nil {
						return &CommandResponse{Err: err}
					}
					as := chosen(req.Accounts, vals[fieldAccount])
					if len(as) != 1 {
						return &CommandResponse{Err: NewError(stanza.ItemNotFound, "no such account")}
					}
					current := registration.Values(maps.Clone(as[0].Fields))
					return &CommandResponse{Form: schema.RenderForm(current), State: as[0].ID}
				}
				id, _ := req.State.(int64)
				acct = nil
				for _, a := range req.Accounts {
					if a.ID == id {
						acct = a
					}
				}
				if acct == nil {
					return &CommandResponse{Err: NewError(stanza.ItemNotFound, "the account is gone")}
				}
			}
			current := registration.Values(maps.Clone(acct.Fields))
			if req.Form == nil {
				return &CommandResponse{Form: schema.RenderForm(current)}
			}
			vals, err := schema.ValidateWith(req.Form, current)
			if err != nil {
				return &CommandResponse{Err: err}
			}
			a := *acct
			a.Fields = maps.Clone(a.Fields)
			if a.Fields == nil {
				a.Fields = map[string]string{}
			}
			for _, f := range schema.Fields {
				if f.Secret {
					continue // settings hold no secrets
				}
				if v, ok := vals[f.Var]; ok {
					a.Fields[f.Var] = v
				}
			}
			if err := c.g.store.PutAccount(ctx, &a); err != nil {
				return &CommandResponse{Err: err}
			}
			if a.Fields[settingArchive] == "false" && acct.Fields[settingArchive] != "false" {
				// Turned off: what was kept goes too, and what waits to
				// be written (nothing more is archived from now on).
				if err := c.archive.flush(ctx, c); err != nil {
					return &CommandResponse{Err: err}
				}
				if err := c.g.store.ClearRoomArchive(ctx, a.ID); err != nil {
					return &CommandResponse{Err: err}
				}
			}
			if u := c.accountUser(&a); u != nil {
				u.post(evRegistered{account: &a})
			}
			return &CommandResponse{Note: "Settings saved."}
		},
	}
}
