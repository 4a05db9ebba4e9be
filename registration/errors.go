package registration

import "fmt"

// Stanza error conditions carried by a FieldError.
const (
	// CondBadRequest: something is missing or malformed.
	CondBadRequest = "bad-request"
	// CondNotAcceptable: well-formed but not allowed (not one of the
	// options, too long, refused by Field.Validate, a forbidden character).
	CondNotAcceptable = "not-acceptable"
)

// FieldError is the error of every parse and validation failure. It never
// contains a submitted value.
type FieldError struct {
	// Field is the var of the field at fault, or empty when the fault is not
	// in one field (malformed XML, too many fields, a cancelled form).
	Field string
	// Condition is the XMPP stanza error condition to reply with:
	// CondBadRequest or CondNotAcceptable.
	Condition string
	// Text is for the user and the log, and names the field by label and
	// var, e.g. `field "IMAP port" (imap_port): must be a number between 1
	// and 65535`.
	Text string

	err error // the Field.Validate error or the reader's error, for errors.Is/As
}

// Error returns Text.
func (e *FieldError) Error() string {
	if e.Text == "" {
		return "registration: " + e.Condition
	}
	return e.Text
}

// Unwrap returns the error of a Field.Validate function or of the token
// reader, if that is what caused this one.
func (e *FieldError) Unwrap() error { return e.err }

func badRequest(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Condition: CondBadRequest, Text: fmt.Sprintf(format, args...)}
}

func notAcceptable(field, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Condition: CondNotAcceptable, Text: fmt.Sprintf(format, args...)}
}
