package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

// apiKeyPrefix starts every API key secret.
const apiKeyPrefix = "cpk_"

// keyIDLen is the key id's length in hex characters.
const keyIDLen = 16

// NewKey returns a fresh key id, its secret and the secret's hash.
func NewKey() (id, secret string, hash []byte, err error) {
	var idb [keyIDLen / 2]byte
	var rnd [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", "", nil, err
	}
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", "", nil, err
	}
	id = hex.EncodeToString(idb[:])
	secret = apiKeyPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(rnd[:])
	return id, secret, HashKey(secret), nil
}

// HashKey is the stored form of a secret.
func HashKey(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// KeyID extracts the key id from a secret; ok is false if it is not shaped
// like one of ours.
func KeyID(secret string) (id string, ok bool) {
	rest, found := strings.CutPrefix(secret, apiKeyPrefix)
	if !found || len(rest) < keyIDLen+2 || rest[keyIDLen] != '_' {
		return "", false
	}
	id = rest[:keyIDLen]
	if _, err := hex.DecodeString(id); err != nil {
		return "", false
	}
	return id, true
}

// VerifyKey reports whether secret hashes to hash, in constant time.
func VerifyKey(secret string, hash []byte) bool {
	return len(hash) == sha256.Size && subtle.ConstantTimeCompare(HashKey(secret), hash) == 1
}
