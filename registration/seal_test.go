package registration

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"strings"
	"testing"
)

func newSealer(t *testing.T) *Sealer {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewSealer(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestSealOpen(t *testing.T) {
	s := newSealer(t)
	aad := []byte("example.net|email|alice@example.net")
	for i, secrets := range []map[string]string{
		{"password": "correct horse battery staple", "app_token": "tok-ABCDEFGH"},
		{},
		nil,
		{"p": strings.Repeat("\u00e9\x00\"\\", 100)},
	} {
		blob, err := s.Seal(secrets, aad)
		if err != nil {
			t.Fatalf("%d: %v", i, err)
		}
		if blob[0] != 1 || len(blob) < 1+12+16 {
			t.Errorf("%d: blob %x", i, blob)
		}
		for _, v := range secrets {
			if bytes.Contains(blob, []byte(v)) {
				t.Errorf("%d: blob contains the plaintext", i)
			}
		}
		if bytes.Contains(blob, []byte("password")) {
			t.Errorf("%d: blob contains a field name", i)
		}
		got, err := s.Open(blob, aad)
		if err != nil {
			t.Fatalf("%d: Open: %v", i, err)
		}
		if got == nil || !maps.Equal(got, secrets) {
			t.Errorf("%d: got %v, want %v", i, got, secrets)
		}
	}
	// The nonce is random: sealing twice differs.
	a, _ := s.Seal(map[string]string{"p": "x"}, aad)
	b, _ := s.Seal(map[string]string{"p": "x"}, aad)
	if bytes.Equal(a, b) {
		t.Error("two seals are equal")
	}
}

func TestOpenFails(t *testing.T) {
	s := newSealer(t)
	aad := []byte("example.net|email|alice@example.net")
	blob, err := s.Seal(map[string]string{"password": "hunter2"}, aad)
	if err != nil {
		t.Fatal(err)
	}
	tamper := func(i int) []byte {
		b := bytes.Clone(blob)
		b[i] ^= 0x01
		return b
	}
	for name, tc := range map[string]struct {
		s    *Sealer
		blob []byte
		aad  []byte
	}{
		"wrong key":     {newSealer(t), blob, aad},
		"wrong aad":     {s, blob, []byte("example.net|email|mallory@example.net")},
		"nil aad":       {s, blob, nil},
		"version":       {s, tamper(0), aad},
		"nonce":         {s, tamper(1), aad},
		"ciphertext":    {s, tamper(14), aad},
		"tag":           {s, tamper(len(blob) - 1), aad},
		"truncated":     {s, blob[:len(blob)-1], aad},
		"short":         {s, blob[:5], aad},
		"empty":         {s, nil, aad},
		"appended byte": {s, append(bytes.Clone(blob), 0), aad},
	} {
		got, err := tc.s.Open(tc.blob, tc.aad)
		if !errors.Is(err, ErrOpen) || got != nil {
			t.Errorf("%s: got %v, %v; want ErrOpen", name, got, err)
		}
	}
}

func TestKeys(t *testing.T) {
	k, err := GenerateKey()
	if err != nil || len(k) != KeyLen {
		t.Fatalf("GenerateKey: %d bytes, %v", len(k), err)
	}
	k2, err := DecodeKey("  " + EncodeKey(k) + "\n")
	if err != nil || !bytes.Equal(k, k2) {
		t.Errorf("DecodeKey(EncodeKey(k)) = %x, %v", k2, err)
	}
	for _, bad := range []string{"", "not base64!", EncodeKey(k[:16]), EncodeKey(append(k, 0))} {
		if _, err := DecodeKey(bad); err == nil {
			t.Errorf("DecodeKey(%q) accepted", bad)
		}
	}
	for _, n := range []int{0, 16, 24, 31, 33} {
		if _, err := NewSealer(make([]byte, n)); err == nil {
			t.Errorf("NewSealer accepted a %d-byte key", n)
		}
	}
}

func TestSealerPrintsNoKey(t *testing.T) {
	s := newSealer(t)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if got := fmt.Sprintf(verb, s); got != "registration.Sealer" {
			t.Errorf("%s: %s", verb, got)
		}
	}
}
