package core

import (
	"context"
	"errors"

	"mellium.im/xmpp/stanza"

	"transportd/registration"
)

// Error is an error that knows which XMPP stanza error it becomes. Transports
// return it (wrapped or not) to tell core what the user should see.
type Error struct {
	Condition stanza.Condition
	Type      stanza.ErrorType // empty: derived from Condition
	Text      string           // shown to the user
	Err       error            // cause, for logs (never shown)
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Text + ": " + e.Err.Error()
	}
	return e.Text
}

func (e *Error) Unwrap() error { return e.Err }

// NewError returns an *Error with a condition and a user-facing text.
func NewError(cond stanza.Condition, text string) *Error {
	return &Error{Condition: cond, Text: text}
}

// WrapError returns an *Error with a condition, a user-facing text and the
// underlying cause.
func WrapError(cond stanza.Condition, text string, err error) *Error {
	return &Error{Condition: cond, Text: text, Err: err}
}

// defaultErrorType is RFC 6120's suggested type per condition.
var defaultErrorType = map[stanza.Condition]stanza.ErrorType{
	stanza.BadRequest:            stanza.Modify,
	stanza.Conflict:              stanza.Cancel,
	stanza.FeatureNotImplemented: stanza.Cancel,
	stanza.Forbidden:             stanza.Auth,
	stanza.Gone:                  stanza.Cancel,
	stanza.InternalServerError:   stanza.Cancel,
	stanza.ItemNotFound:          stanza.Cancel,
	stanza.JIDMalformed:          stanza.Modify,
	stanza.NotAcceptable:         stanza.Modify,
	stanza.NotAllowed:            stanza.Cancel,
	stanza.NotAuthorized:         stanza.Auth,
	stanza.PolicyViolation:       stanza.Modify,
	stanza.RecipientUnavailable:  stanza.Wait,
	stanza.RegistrationRequired:  stanza.Auth,
	stanza.RemoteServerNotFound:  stanza.Cancel,
	stanza.RemoteServerTimeout:   stanza.Wait,
	stanza.ResourceConstraint:    stanza.Wait,
	stanza.ServiceUnavailable:    stanza.Cancel,
	stanza.UndefinedCondition:    stanza.Cancel,
	stanza.UnexpectedRequest:     stanza.Wait,
}

// toStanzaError maps any error to the stanza error the user sees. Errors that
// do not say what they are become internal-server-error with a generic
// text, so no internal detail leaks.
func toStanzaError(err error) *Error {
	var e *Error
	var fe *registration.FieldError
	switch {
	case errors.As(err, &e):
		out := *e
		if out.Type == "" {
			out.Type = defaultErrorType[out.Condition]
			if out.Type == "" {
				out.Type = stanza.Cancel
			}
		}
		return &out
	case errors.As(err, &fe):
		cond := stanza.Condition(fe.Condition)
		if cond == "" {
			cond = stanza.BadRequest
		}
		return &Error{Condition: cond, Type: defaultErrorType[cond], Text: fe.Text}
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Condition: stanza.RemoteServerTimeout, Type: stanza.Wait, Text: "the remote server did not answer in time"}
	case errors.Is(err, ErrTemporary):
		return &Error{Condition: stanza.ServiceUnavailable, Type: stanza.Wait, Text: "temporarily unavailable, try again later"}
	}
	return &Error{Condition: stanza.InternalServerError, Type: stanza.Cancel, Text: "internal error"}
}

// element renders the error as a stanza <error/> child.
func (e *Error) element() *Element {
	el := NewElement("", "error", "type", string(e.Type))
	el.Add(NewElement(stanza.NSError, string(e.Condition)))
	if e.Text != "" {
		el.AddText(stanza.NSError, "text", e.Text)
	}
	return el
}
