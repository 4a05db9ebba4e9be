package registration

import (
	"fmt"
)

// Namespaces used by the rendered and parsed payloads.
const (
	NS     = "jabber:iq:register" // XEP-0077 <query/>
	NSData = "jabber:x:data"      // XEP-0004 <x/>
)

// Limits on what ParseQuery and ParseForm accept, and the default length of
// a field value.
const (
	MaxFields     = 64       // fields in a form plus legacy elements in a query
	MaxValueLen   = 4 << 10  // bytes in one value
	MaxTotal      = 64 << 10 // bytes of text, attributes and element names in all
	DefaultMaxLen = 1024     // bytes in a validated value when Field.MaxLen is 0
	maxVarLen     = 256      // bytes in a field's var
)

// FieldType is the XEP-0004 type of a field. Every value a transport asks
// for is one line; TextMulti (several lines, joined with "\n" in Values)
// is for commands such as an operator's announcement.
type FieldType string

// The field types a Schema may use.
const (
	TextSingle  FieldType = "text-single"
	TextPrivate FieldType = "text-private"
	ListSingle  FieldType = "list-single"
	Boolean     FieldType = "boolean"
	JIDSingle   FieldType = "jid-single"
	TextMulti   FieldType = "text-multi"
	Fixed       FieldType = "fixed"
	Hidden      FieldType = "hidden"
)

func (t FieldType) known() bool {
	switch t {
	case TextSingle, TextPrivate, ListSingle, Boolean, JIDSingle, Fixed, Hidden, TextMulti:
		return true
	}
	return false
}

// Option is one choice of a ListSingle field.
type Option struct {
	Label, Value string
}

// Field is one field of a registration or command form.
type Field struct {
	// Var names the field in forms and in Values. Required except for Fixed.
	Var string
	// Label and Desc are shown to the user; Label also names the field in errors.
	Label, Desc string
	Type        FieldType
	// Required fields must have a value after defaults are applied.
	Required bool
	// Secret fields are sealed at rest and never rendered with a value: a
	// user who has one set sees it empty, with Desc noting that it is set,
	// and keeps it by leaving it empty.
	Secret bool
	// Default is used when the user gives no value. Core fills it from the
	// domain's config before rendering. It is trusted: Check validates it,
	// Validate does not. For Fixed fields it is the text shown.
	Default string
	// Options are the choices of a ListSingle field; a submitted value must
	// be the Value of one of them.
	Options []Option
	// Legacy names the XEP-0077 element ("username", "password", "email",
	// ...) this field maps to, for clients that send no data form. Empty
	// means the field can only be filled through the form.
	Legacy string
	// Validate is an optional extra check of a normalised, non-empty
	// submitted value. Its error text is shown to the user after the field's
	// name; it must not contain the value.
	Validate func(string) error
	// MaxLen is the longest value accepted, in bytes; 0 means DefaultMaxLen.
	MaxLen int
}

func (f *Field) maxLen() int {
	if f.MaxLen > 0 {
		return f.MaxLen
	}
	return DefaultMaxLen
}

// name is how errors refer to a field: by label and var.
func (f *Field) name() string {
	if f.Label != "" && f.Label != f.Var {
		return fmt.Sprintf("field %q (%s)", f.Label, f.Var)
	}
	return fmt.Sprintf("field %q", f.Var)
}

// Schema is the form a transport asks a user to fill in.
type Schema struct {
	Title, Instructions string
	Fields              []Field
}

// Values are the submitted field values after parsing and validation,
// keyed by Var. Booleans are "true" or "false"; JIDs are bare and
// normalised; fields without a value are absent.
type Values map[string]string

// legacyNames are the XEP-0077 elements a Field.Legacy may name.
var legacyNames = map[string]bool{
	"username": true, "nick": true, "password": true, "name": true,
	"first": true, "last": true, "email": true, "address": true,
	"city": true, "state": true, "zip": true, "phone": true, "url": true,
	"date": true, "misc": true, "text": true, "key": true,
}

// Check reports the first mistake in a schema: a missing or duplicate var,
// an unknown type or legacy name, a list without options, a bad MaxLen, or
// a Default that the field itself would refuse. Call it once the defaults
// are filled in; Validate and Render assume a schema that passes.
func (s *Schema) Check() error {
	vars := map[string]bool{}
	legacy := map[string]string{}
	for i := range s.Fields {
		f := &s.Fields[i]
		where := fmt.Sprintf("registration: schema field %d (%q)", i, f.Var)
		if !f.Type.known() {
			return fmt.Errorf("%s: unknown type %q", where, f.Type)
		}
		if f.Var == "" && f.Type != Fixed {
			return fmt.Errorf("%s: missing var", where)
		}
		if f.Var == "FORM_TYPE" {
			return fmt.Errorf("%s: FORM_TYPE is reserved", where)
		}
		if len(f.Var) > maxVarLen {
			return fmt.Errorf("%s: var longer than %d bytes", where, maxVarLen)
		}
		if f.Var != "" {
			if vars[f.Var] {
				return fmt.Errorf("%s: duplicate var", where)
			}
			vars[f.Var] = true
		}
		if f.MaxLen < 0 || f.MaxLen > MaxValueLen {
			return fmt.Errorf("%s: MaxLen must be between 0 and %d", where, MaxValueLen)
		}
		if f.Legacy != "" {
			if !legacyNames[f.Legacy] {
				return fmt.Errorf("%s: unknown legacy element %q", where, f.Legacy)
			}
			if other, ok := legacy[f.Legacy]; ok {
				return fmt.Errorf("%s: legacy element %q already mapped to %q", where, f.Legacy, other)
			}
			if f.Type == Fixed {
				return fmt.Errorf("%s: a fixed field cannot have a legacy element", where)
			}
			legacy[f.Legacy] = f.Var
		}
		if f.Type == ListSingle && len(f.Options) == 0 {
			return fmt.Errorf("%s: list-single without options", where)
		}
		if f.Type != ListSingle && len(f.Options) > 0 {
			return fmt.Errorf("%s: options on a %s field", where, f.Type)
		}
		if f.Default != "" && f.Type != Fixed {
			// Defaults are never passed to f.Validate here: it may want
			// network-free but user-specific context; Check only enforces
			// what the package itself would refuse.
			if _, ferr := f.normalise(f.clean(f.Default)); ferr != nil {
				return fmt.Errorf("%s: default: %s", where, ferr.Text)
			}
		}
	}
	return nil
}

// Split divides validated values into the non-secret fields and the secret
// ones, by the schema. Values of vars the schema does not have are dropped.
// Both maps are non-nil.
func (s *Schema) Split(v Values) (fields, secrets map[string]string) {
	fields, secrets = map[string]string{}, map[string]string{}
	for i := range s.Fields {
		f := &s.Fields[i]
		val, ok := v[f.Var]
		if !ok || f.Var == "" {
			continue
		}
		if f.Secret {
			secrets[f.Var] = val
		} else {
			fields[f.Var] = val
		}
	}
	return fields, secrets
}

// Field returns the schema's field with the given var, or nil.
func (s *Schema) Field(name string) *Field {
	for i := range s.Fields {
		if s.Fields[i].Var == name && name != "" {
			return &s.Fields[i]
		}
	}
	return nil
}
