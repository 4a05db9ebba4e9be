package core

import (
	"encoding/xml"
	"strings"
	"testing"
)

// writeStanza writes what a server accepts whatever the element carries:
// no attribute twice (a copied element keeps the xmlns attribute its
// decoder saw), the stanza in the component namespace, an id.
func TestWriteStanza(t *testing.T) {
	el := NewElement("", "message", "to", "u@a.test", "from", "c.a.test", "id", "")
	x := NewElement("jabber:x:data", "x", "xmlns", "jabber:x:data", "type", "form")
	x.Add(NewElement("jabber:x:data", "field", "var", "a<&\"b"))
	el.Add(x)
	el.AddText("", "body", "hi <there> & \x01")
	var b strings.Builder
	enc := xml.NewEncoder(&b)
	if err := writeStanza(enc, el); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	d := xml.NewDecoder(strings.NewReader(out))
	var start xml.StartElement
	n := 0
	for {
		tok, err := d.Token()
		if err != nil {
			break
		}
		if s, ok := tok.(xml.StartElement); ok {
			if n == 0 {
				start = s
			}
			n++
			seen := map[xml.Name]bool{}
			for _, a := range s.Attr {
				if seen[a.Name] {
					t.Errorf("attribute %v twice in %s", a.Name, out)
				}
				seen[a.Name] = true
			}
		}
	}
	if n != 4 {
		t.Fatalf("%d elements read back from %s (not well-formed?)", n, out)
	}
	if start.Name.Space != "jabber:component:accept" {
		t.Errorf("stanza namespace %q", start.Name.Space)
	}
	id := ""
	for _, a := range start.Attr {
		if a.Name.Local == "id" {
			id = a.Value
		}
	}
	if id == "" {
		t.Errorf("no id: %s", out)
	}
}
