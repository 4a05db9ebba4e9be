// Package idring remembers the last few ids seen, as 64-bit hashes: a
// fixed ring of 8-byte slots instead of the strings (a user's last 64
// message ids took some 5 KB as strings, 512 bytes here). Two ids with
// one hash make Has wrongly true, one chance in 2^58 for each lookup
// against 64 slots; callers use it where that is harmless enough (a
// message dropped as a duplicate, a replayed line hidden).
package idring

import "hash/maphash"

var seed = maphash.MakeSeed()

// Ring holds the hashes of the last N ids added; the zero Ring holds
// nothing and allocates its slots on the first Add. Not safe for
// concurrent use.
type Ring struct {
	slots []uint64
	next  int
}

// hash hashes the id made of a and b joined by sep; never 0, the empty
// slot.
func hash(a string, sep byte, b string) uint64 {
	var h maphash.Hash
	h.SetSeed(seed)
	h.WriteString(a)
	h.WriteByte(sep)
	h.WriteString(b)
	return max(h.Sum64(), 1)
}

// Add remembers the id a+sep+b, forgetting the oldest of n once full.
func (r *Ring) Add(n int, a string, sep byte, b string) {
	if r.slots == nil {
		r.slots = make([]uint64, n)
	}
	r.slots[r.next] = hash(a, sep, b)
	r.next = (r.next + 1) % len(r.slots)
}

// Has reports whether the id a+sep+b is among those remembered.
func (r *Ring) Has(a string, sep byte, b string) bool {
	if r.slots == nil {
		return false
	}
	h := hash(a, sep, b)
	for _, s := range r.slots {
		if s == h {
			return true
		}
	}
	return false
}
