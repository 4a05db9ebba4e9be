package idring

import (
	"strconv"
	"testing"
)

// The last n ids are remembered, older ones forgotten, and the parts
// count as joined (a/b is not ab/).
func TestRing(t *testing.T) {
	var r Ring
	if r.Has("res", '/', "id0") {
		t.Fatal("an empty ring has an id")
	}
	for i := 0; i < 10; i++ {
		r.Add(4, "res", '/', "id"+strconv.Itoa(i))
	}
	for i := 0; i < 10; i++ {
		if got, want := r.Has("res", '/', "id"+strconv.Itoa(i)), i >= 6; got != want {
			t.Errorf("id%d: Has = %v, want %v", i, got, want)
		}
	}
	if r.Has("other", '/', "id9") || r.Has("res", ' ', "id9") {
		t.Error("another resource or separator matched")
	}
}
