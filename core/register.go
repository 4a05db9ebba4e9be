package core

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"transportd/core/store"
	"transportd/registration"
)

// aad binds sealed secrets to their account row.
func aad(a *store.Account) []byte {
	if a.Label != "" {
		return []byte(a.Domain + "|" + a.Transport + "|" + a.JID + "|" + a.Label)
	}
	return []byte(a.Domain + "|" + a.Transport + "|" + a.JID)
}

// values returns an account's fields and secrets merged.
func (c *component) values(a *store.Account) (map[string]string, error) {
	v := maps.Clone(a.Fields)
	if v == nil {
		v = map[string]string{}
	}
	if len(a.Secrets) > 0 {
		secrets, err := c.g.sealer.Open(a.Secrets, aad(a))
		if err != nil {
			return nil, err
		}
		maps.Copy(v, secrets)
	}
	return v, nil
}

func (c *component) schema() registration.Schema {
	return c.t.Schema(c.tcfg().Defaults)
}

// registrationSchema is the transport's form with core's account field in
// front: the name of the account the submission registers or updates.
func (c *component) registrationSchema() registration.Schema {
	s := c.schema()
	s.Fields = append([]registration.Field{{
		Var: fieldAccount, Label: "Account name (optional)", Type: registration.TextSingle,
		Desc:     "Leave empty for your main account. A new name adds another account (its contacts get the name and a colon in front); an existing name updates that account.",
		Validate: func(v string) error { return validLabel(v) },
	}}, s.Fields...)
	return s
}

// submittedLabel is the account label a registration names ("" = main).
func submittedLabel(sub *registration.Submission) string {
	if v := sub.Raw[fieldAccount]; len(v) == 1 {
		return strings.ToLower(strings.TrimSpace(v[0]))
	}
	return ""
}

// handleRegister is XEP-0077 on the gateway JID. A get is answered at once;
// a set validates, runs the transport's credential check (network I/O) on
// its own goroutine and answers from there.
func (c *component) handleRegister(r *iqReply, from jid.JID, payload *Element) {
	bare := from.Bare().String()
	ctx, cancel := c.g.workCtx(5 * time.Second)
	acct, err := c.account(ctx, bare)
	cancel()
	if err != nil {
		c.log.Error("reading account", "error", err)
		r.error(err)
		return
	}
	schema := c.registrationSchema()
	if r.el.Get("type") == "get" {
		if acct == nil && !c.dom().MayRegister(bare) {
			r.error(NewError(stanza.NotAllowed, "registration is closed for "+from.Domainpart()+" users on this gateway"))
			return
		}
		var current registration.Values
		if acct != nil {
			current = registration.Values(maps.Clone(acct.Fields))
		}
		el, err := ElementFromTokens(schema.Render(current, acct != nil))
		if err != nil {
			r.error(err)
			return
		}
		r.result(el)
		return
	}

	sub, err := registration.ParseQuery(payload.ExplicitTokenReader())
	if err != nil {
		c.log.Info("malformed registration", "from", c.redact(bare), "error", err)
		r.error(err)
		return
	}
	if sub.Remove {
		// XEP-0077 unregisters from the service: every account goes.
		accts, err := c.accountsOf(bare)
		if err != nil {
			r.error(err)
			return
		}
		if len(accts) == 0 {
			r.error(NewError(stanza.RegistrationRequired, "you are not registered with this gateway"))
			return
		}
		c.g.goSafe("unregister", func() {
			for _, a := range accts {
				if err := c.unregister(a); err != nil {
					r.error(err)
					return
				}
			}
			r.result(nil)
		})
		return
	}
	if label := submittedLabel(sub); label != "" {
		if err := validLabel(label); err != nil {
			r.error(err)
			return
		}
		ctx, cancel := c.g.workCtx(5 * time.Second)
		acct, err = c.g.store.GetAccountLabel(ctx, c.dom().Name, c.info.Name, bare, label)
		cancel()
		if errors.Is(err, store.ErrNotFound) {
			acct, err = nil, nil
		}
		if err != nil {
			r.error(err)
			return
		}
	}
	if sub.Cancel {
		r.error(NewError(stanza.BadRequest, "registration cancelled"))
		return
	}
	if acct != nil && !acct.Enabled {
		r.error(errDisabled)
		return
	}
	if acct == nil && !c.dom().MayRegister(bare) {
		r.error(NewError(stanza.NotAllowed, "registration is closed for "+from.Domainpart()+" users on this gateway"))
		return
	}
	var current registration.Values
	if acct != nil {
		// Secret fields are never sent back in the form; left empty on
		// re-registration they keep their stored value.
		old, err := c.values(acct)
		if err != nil {
			c.log.Error("opening stored secrets", "error", err)
		}
		current = old
	}
	vals, err := schema.ValidateWith(sub, current)
	if err != nil {
		c.log.Info("registration refused", "from", c.redact(bare), "error", err)
		r.error(err)
		return
	}
	label := vals[fieldAccount]
	delete(vals, fieldAccount)
	rateKey := ""
	if rk, ok := c.t.(RateKeyer); ok {
		rateKey = rk.RegistrationRateKey(vals)
	}
	if wait := c.g.limiter.allow(c.dom().Name+"|"+c.info.Name+"|"+bare, rateKey); wait > 0 {
		c.log.Warn("registration rate-limited", "from", c.redact(bare), "legacy_host", rateKey)
		r.error(NewError(stanza.ResourceConstraint, "too many registration attempts; try again in "+wait.Round(time.Second).String()))
		return
	}
	c.g.goSafe("register", func() {
		if err := c.register(bare, label, acct, schema, vals); err != nil {
			c.log.Info("registration failed", "from", c.redact(bare), "error", err)
			r.error(err)
			return
		}
		r.result(nil)
	})
}

// register verifies credentials, stores the account and starts its session.
func (c *component) register(bare, label string, old *store.Account, schema registration.Schema, vals registration.Values) error {
	ctx, cancel := c.g.workCtx(60 * time.Second)
	defer cancel()
	acct := &Account{Domain: c.dom().Name, Transport: c.info.Name, JID: bare, Label: label, Values: vals, Defaults: c.tcfg().Defaults}
	if old != nil {
		acct.ID = old.ID
	}
	if err := c.t.Verify(ctx, acct); err != nil {
		return err
	}
	vals = registration.Values(acct.Values) // Verify may have filled some in
	fields, secrets := schema.Split(vals)
	if old != nil {
		// Settings (not part of the registration form) survive a
		// re-registration.
		for k, v := range old.Fields {
			if _, ok := fields[k]; !ok && schema.Field(k) == nil {
				fields[k] = v
			}
		}
	}
	delete(fields, fieldAccount)
	a := &store.Account{Domain: c.dom().Name, Transport: c.info.Name, JID: bare, Label: label, Fields: fields, Enabled: true}
	if old != nil {
		a.Enabled = old.Enabled
	}
	sealed, err := c.g.sealer.Seal(secrets, aad(a))
	if err != nil {
		return err
	}
	a.Secrets = sealed
	if err := c.g.store.PutAccount(ctx, a); err != nil {
		return err
	}
	c.log.Info("registered", "user", c.redact(bare), "account", label, "update", old != nil)
	first := len(c.usersOf(bare)) == 0
	u := c.userFor(ctx, a)
	u.post(evRegistered{account: a, first: first})
	return nil
}

// unregister deletes the credentials, ends the session and unsubscribes.
func (c *component) unregister(a *store.Account) error {
	ctx, cancel := c.g.workCtx(10 * time.Second)
	defer cancel()
	if err := c.g.store.DeleteAccount(ctx, a.ID); err != nil {
		return err
	}
	c.mu.Lock()
	u := c.userLocked(a.JID, a.Label)
	if u != nil {
		c.dropUserLocked(u)
	}
	last := len(c.users[a.JID]) == 0
	c.mu.Unlock()
	if u != nil {
		u.stop()
	}
	if last {
		for _, typ := range []string{"unsubscribe", "unsubscribed", "unavailable"} {
			_ = c.send(c.stanza("presence", "", "", a.JID, typ))
		}
	} else if others := c.usersOf(a.JID); len(others) > 0 {
		others[0].post(evProbe{}) // the gateway's presence without this account
	}
	c.log.Info("unregistered", "user", c.redact(a.JID), "account", a.Label)
	return nil
}

// userFor returns the live user of an account, creating it.
func (c *component) userFor(ctx context.Context, a *store.Account) *user {
	c.mu.Lock()
	defer c.mu.Unlock()
	if u := c.userLocked(a.JID, a.Label); u != nil {
		return u
	}
	u := newUser(c, a)
	// A user's accounts in a slice sorted by label, not a map: most have
	// one, and a map of one took some 250 bytes.
	list := append(c.users[a.JID], u)
	slices.SortFunc(list, func(x, y *user) int { return strings.Compare(x.label, y.label) })
	c.users[a.JID] = list
	u.start()
	return u
}

// userLocked returns the live user of an account, or nil; c.mu held.
func (c *component) userLocked(bare, label string) *user {
	for _, u := range c.users[bare] {
		if u.label == label {
			return u
		}
	}
	return nil
}

// dropUserLocked forgets a live user; c.mu held.
func (c *component) dropUserLocked(u *user) {
	list := slices.DeleteFunc(c.users[u.bare], func(x *user) bool { return x == u })
	if len(list) == 0 {
		delete(c.users, u.bare)
		return
	}
	c.users[u.bare] = list
}

// replaceUser builds a user again, a second later, after its drain
// panicked (stopped): from its account as stored, which the server's
// answer to a probe tells which resources are online. The delay keeps a
// panic that comes back at once from spinning.
func (c *component) replaceUser(u *user) {
	time.AfterFunc(time.Second, func() {
		ctx := c.g.bg
		select {
		case <-c.done:
			return // the component stopped
		default:
		}
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		if c.userLocked(u.bare, u.label) != u {
			c.mu.Unlock()
			return // unregistered, or replaced meanwhile
		}
		c.dropUserLocked(u)
		c.mu.Unlock()
		c.log.Warn("user rebuilt after a panic", "user", c.redact(u.bare))
		c.userFor(ctx, u.acct).post(evLinkUp{})
	})
}

// lookupUser returns the live user of a user's main account, or nil.
func (c *component) lookupUser(bare string) *user { return c.lookupLabel(bare, "") }

// lookupLabel returns the live user of one of a user's accounts, or nil.
func (c *component) lookupLabel(bare, label string) *user {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.userLocked(bare, label)
}

// accountUser returns the live user of an account, or nil.
func (c *component) accountUser(a *store.Account) *user { return c.lookupLabel(a.JID, a.Label) }

// usersOf returns the live users of all of a user's accounts, main first.
func (c *component) usersOf(bare string) []*user {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.users[bare]) // sorted by label
}

// accountsOf returns all of a user's accounts on this component, main first.
func (c *component) accountsOf(bare string) ([]*store.Account, error) {
	ctx, cancel := c.g.workCtx(5 * time.Second)
	defer cancel()
	all, err := c.g.store.ListAccounts(ctx, c.dom().Name, c.info.Name)
	if err != nil {
		return nil, err
	}
	var out []*store.Account
	for _, a := range all {
		if a.JID == bare {
			out = append(out, a)
		}
	}
	return out, nil
}

// errDisabled answers users whose account an operator disabled.
var errDisabled = NewError(stanza.Forbidden, "your account on this gateway is disabled by the operator")

// autoRegister creates an empty account for a user of a transport whose
// registration is optional, if the domain's policy lets them register.
func (c *component) autoRegister(bare string) (*user, error) {
	if !c.info.RegistrationOptional {
		return nil, NewError(stanza.RegistrationRequired, "register with "+c.jid.String()+" first")
	}
	if !c.dom().MayRegister(bare) {
		return nil, NewError(stanza.NotAllowed, "registration is closed for your domain on this gateway")
	}
	ctx, cancel := c.g.workCtx(10 * time.Second)
	defer cancel()
	a, err := c.account(ctx, bare)
	if err != nil {
		return nil, err
	}
	if a == nil {
		a = &store.Account{Domain: c.dom().Name, Transport: c.info.Name, JID: bare, Fields: map[string]string{}, Enabled: true}
		sealed, err := c.g.sealer.Seal(map[string]string{}, aad(a))
		if err != nil {
			return nil, err
		}
		a.Secrets = sealed
		if err := c.g.store.PutAccount(ctx, a); err != nil {
			return nil, err
		}
		c.log.Info("account created on first use", "user", c.redact(bare))
	}
	return c.userFor(ctx, a), nil
}
