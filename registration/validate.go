package registration

import (
	"slices"
	"strings"
	"unicode/utf8"

	"mellium.im/xmpp/jid"
)

// Validate checks a submission against the schema and returns the cleaned
// values, or a *FieldError about the first bad field in schema order. It is
// ValidateWith with no current values.
func (s *Schema) Validate(sub *Submission) (Values, error) {
	return s.ValidateWith(sub, nil)
}

// ValidateWith checks a submission from a user whose current values
// (fields and opened secrets) are known, e.g. one who is registered and
// changes the registration.
//
// Values come from the data form when one was sent, else from the legacy
// elements through Field.Legacy. For each field, in order:
//   - a value is cleaned: surrounding whitespace is trimmed except for
//     text-private and hidden fields; a boolean "1"/"true"/"0"/"false" (any
//     case) or an empty one becomes "true" or "false"; a JID is parsed and
//     made bare;
//   - more than one value is bad-request; a line break, NUL or other control
//     character except tab is not-acceptable; so is a value longer than
//     MaxLen, a list value not among the options, or one Field.Validate
//     refuses; a malformed boolean or JID is bad-request;
//   - an empty value is missing. A missing value is taken from current when
//     the field is secret (the form never shows it, so empty means "keep")
//     or was not sent at all, else from Default; a boolean left without
//     either is "false" unless required. A required field still missing is
//     bad-request; when no form was sent and the field has no legacy
//     element, the text tells the user to use a client with data forms.
//
// Defaults and current values are trusted and not checked again (see
// Schema.Check). Fixed fields and vars the schema does not know are
// ignored; Schema.Unknown lists the latter. Fields without a value are
// absent from the result.
func (s *Schema) ValidateWith(sub *Submission, current Values) (Values, error) {
	switch {
	case sub == nil:
		return nil, badRequest("", "nothing was submitted")
	case sub.Cancel:
		return nil, badRequest("", "the form was cancelled")
	case sub.Remove:
		return nil, badRequest("", "a removal request carries no registration fields")
	}
	out := Values{}
	for i := range s.Fields {
		f := &s.Fields[i]
		if f.Type == Fixed || f.Var == "" {
			continue
		}
		raw, sent := f.raw(sub)
		if f.Type == TextMulti && len(raw) > 1 {
			raw = []string{strings.Join(raw, "\n")}
		}
		if len(raw) > 1 {
			return nil, badRequest(f.Var, "%s: expects one value, got %d", f.name(), len(raw))
		}
		val := ""
		if len(raw) == 1 {
			val = f.clean(raw[0])
		}
		if val == "" && f.Type == Boolean && sent {
			val = "false" // a checkbox sent empty
		}
		if val != "" {
			v, ferr := f.normalise(val)
			if ferr != nil {
				return nil, ferr
			}
			if f.Validate != nil {
				if err := f.Validate(v); err != nil {
					return nil, &FieldError{
						Field:     f.Var,
						Condition: CondNotAcceptable,
						Text:      f.name() + ": " + err.Error(),
						err:       err,
					}
				}
			}
			out[f.Var] = v
			continue
		}
		// Missing.
		if f.Secret || !sent {
			if c := current[f.Var]; c != "" {
				out[f.Var] = c
				continue
			}
		}
		if f.Default != "" {
			v, ferr := f.normalise(f.clean(f.Default))
			if ferr != nil {
				v = f.Default // Check refuses such a schema; do not blame the user
			}
			out[f.Var] = v
			continue
		}
		switch {
		case f.Required && !sub.Form && f.Legacy == "":
			return nil, badRequest(f.Var, "%s: required, and it can only be given in the data form; use a client that supports data forms (XEP-0004)", f.name())
		case f.Required:
			return nil, badRequest(f.Var, "%s: required", f.name())
		case f.Type == Boolean:
			out[f.Var] = "false"
		}
	}
	return out, nil
}

// raw returns the values sent for f and whether it was sent at all.
func (f *Field) raw(sub *Submission) ([]string, bool) {
	if sub.Form {
		v, ok := sub.Raw[f.Var]
		return v, ok
	}
	if f.Legacy != "" {
		if v, ok := sub.Legacy[f.Legacy]; ok {
			return []string{v}, true
		}
	}
	return nil, false
}

// clean trims surrounding whitespace, except where it may be meant.
func (f *Field) clean(v string) string {
	switch f.Type {
	case TextPrivate, Hidden:
		return v
	}
	return strings.TrimSpace(v)
}

// normalise checks a cleaned, non-empty value against the field's type and
// limits and returns it in normal form. It does not call f.Validate.
func (f *Field) normalise(v string) (string, *FieldError) {
	if f.Type == Boolean {
		switch strings.ToLower(v) {
		case "1", "true":
			return "true", nil
		case "0", "false", "":
			return "false", nil
		}
		return "", badRequest(f.Var, "%s: must be true or false", f.name())
	}
	if !utf8.ValidString(v) {
		return "", badRequest(f.Var, "%s: not valid UTF-8", f.name())
	}
	if f.Type == TextMulti {
		v = strings.ReplaceAll(strings.ReplaceAll(v, "\r\n", "\n"), "\r", "\n")
		for _, line := range strings.Split(v, "\n") {
			if err := f.checkLine(line); err != nil {
				return "", err
			}
		}
		if len(v) > f.maxLen() {
			return "", notAcceptable(f.Var, "%s: longer than %d bytes", f.name(), f.maxLen())
		}
		return v, nil
	}
	if strings.ContainsAny(v, "\r\n") {
		return "", notAcceptable(f.Var, "%s: must be a single line", f.name())
	}
	if err := f.checkLine(v); err != nil {
		return "", err
	}
	if len(v) > f.maxLen() {
		return "", notAcceptable(f.Var, "%s: longer than %d bytes", f.name(), f.maxLen())
	}
	switch f.Type {
	case ListSingle:
		if !slices.ContainsFunc(f.Options, func(o Option) bool { return o.Value == v }) {
			return "", notAcceptable(f.Var, "%s: not one of the offered options", f.name())
		}
	case JIDSingle:
		j, err := jid.Parse(v)
		if err != nil {
			return "", badRequest(f.Var, "%s: not a valid JID", f.name())
		}
		return j.Bare().String(), nil
	}
	return v, nil
}

// checkLine refuses NUL and other control characters except tab.
func (f *Field) checkLine(v string) *FieldError {
	for i := 0; i < len(v); i++ {
		if v[i] < 0x20 && v[i] != '\t' {
			return notAcceptable(f.Var, "%s: must not contain NUL or other control characters", f.name())
		}
	}
	return nil
}

// Unknown returns, sorted, what a submission carried that the schema does
// not use: the vars of form fields it has no field for, or, when no form was
// sent, the legacy elements no field maps. For the caller's log.
func (s *Schema) Unknown(sub *Submission) []string {
	var out []string
	if sub == nil {
		return nil
	}
	if sub.Form || sub.Cancel {
		for v := range sub.Raw {
			if s.Field(v) == nil {
				out = append(out, v)
			}
		}
	} else {
		for name := range sub.Legacy {
			if !slices.ContainsFunc(s.Fields, func(f Field) bool { return f.Legacy == name }) {
				out = append(out, name)
			}
		}
	}
	slices.Sort(out)
	return out
}
