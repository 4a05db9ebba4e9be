package registration

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// KeyLen is the length of a sealing key: AES-256.
const KeyLen = 32

const (
	sealVersion = 1
	nonceLen    = 12
)

// ErrOpen is returned by Sealer.Open for a blob that does not open: wrong
// key, wrong additional data, tampered, truncated or of an unknown version.
// It says no more, on purpose.
var ErrOpen = errors.New("registration: sealed credentials do not open (wrong key, wrong account or damaged)")

// Sealer encrypts credentials at rest with AES-256-GCM. It is safe for
// concurrent use. It keeps no copy of the key it was made from, and prints
// as "registration.Sealer" whatever the verb.
type Sealer struct {
	aead cipher.AEAD
}

// NewSealer returns a Sealer for a key of KeyLen bytes.
func NewSealer(key []byte) (*Sealer, error) {
	if len(key) != KeyLen {
		return nil, fmt.Errorf("registration: sealing key must be %d bytes, got %d", KeyLen, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("registration: sealing key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("registration: sealing key: %w", err)
	}
	return &Sealer{aead: aead}, nil
}

// String and GoString keep key material out of logs.
func (*Sealer) String() string   { return "registration.Sealer" }
func (*Sealer) GoString() string { return "registration.Sealer" }

// Seal JSON-encodes secrets and encrypts them. The blob is the version byte
// 1, a random 12-byte nonce and the ciphertext with its tag. aad binds the
// blob to its account (core passes "domain|transport|jid"): Open with other
// aad fails, so a blob copied to another row is useless there. The version
// byte is authenticated too.
func (s *Sealer) Seal(secrets map[string]string, aad []byte) ([]byte, error) {
	if secrets == nil {
		secrets = map[string]string{}
	}
	plain, err := json.Marshal(secrets)
	if err != nil {
		return nil, fmt.Errorf("registration: encoding secrets: %w", err)
	}
	defer clear(plain)
	out := make([]byte, 1+nonceLen, 1+nonceLen+len(plain)+s.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1 : 1+nonceLen]); err != nil {
		return nil, fmt.Errorf("registration: nonce: %w", err)
	}
	return s.aead.Seal(out, out[1:1+nonceLen], plain, additional(aad)), nil
}

// Open decrypts a blob from Seal given the same aad. Any failure is ErrOpen.
func (s *Sealer) Open(blob []byte, aad []byte) (map[string]string, error) {
	if len(blob) < 1+nonceLen+s.aead.Overhead() || blob[0] != sealVersion {
		return nil, ErrOpen
	}
	plain, err := s.aead.Open(nil, blob[1:1+nonceLen], blob[1+nonceLen:], additional(aad))
	if err != nil {
		return nil, ErrOpen
	}
	defer clear(plain)
	var secrets map[string]string
	if err := json.Unmarshal(plain, &secrets); err != nil || secrets == nil {
		// Authentic but not ours: only a bug writes this. Say nothing of it.
		return nil, ErrOpen
	}
	return secrets, nil
}

// additional is the GCM additional data: the version byte, then aad.
func additional(aad []byte) []byte {
	return append([]byte{sealVersion}, aad...)
}

// GenerateKey returns KeyLen random bytes for NewSealer.
func GenerateKey() ([]byte, error) {
	k := make([]byte, KeyLen)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("registration: generating key: %w", err)
	}
	return k, nil
}

// EncodeKey returns a key in standard base64, as a config file holds it.
func EncodeKey(k []byte) string {
	return base64.StdEncoding.EncodeToString(k)
}

// DecodeKey decodes standard base64 with surrounding whitespace trimmed
// (a key file usually ends with a newline) and checks the length.
func DecodeKey(s string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, errors.New("registration: sealing key is not valid standard base64")
	}
	if len(k) != KeyLen {
		return nil, fmt.Errorf("registration: sealing key must be %d bytes, got %d", KeyLen, len(k))
	}
	return k, nil
}
