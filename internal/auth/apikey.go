// Package apikey makes and checks tenant API keys. A secret looks like
// "cpk_<id>_<random>": the id names the stored record
// (tenants/<t>/keys/<id>), the random part is 32 bytes from crypto/rand.
// Only SHA-256 of the whole secret is stored; Verify compares in constant
// time.
//
//	id, secret, hash, err := apikey.New()
//	...
//	if id, ok := apikey.ID(secret); ok { rec := load(id); ok = apikey.Verify(secret, rec.SecretHash) }
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"strings"
)

const prefix = "cpk_"

// idLen is the id's length in hex characters.
const idLen = 16

// NewKey returns a fresh key id, its secret and the secret's hash.
func NewKey() (id, secret string, hash []byte, err error) {
	var idb [idLen / 2]byte
	var rnd [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", "", nil, err
	}
	if _, err := rand.Read(rnd[:]); err != nil {
		return "", "", nil, err
	}
	id = hex.EncodeToString(idb[:])
	secret = prefix + id + "_" + base64.RawURLEncoding.EncodeToString(rnd[:])
	return id, secret, Hash(secret), nil
}

// Hash is the stored form of a secret.
func Hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}

// ID extracts the key id from a secret; ok is false if it is not shaped
// like one of ours.
func ID(secret string) (id string, ok bool) {
	rest, found := strings.CutPrefix(secret, prefix)
	if !found || len(rest) < idLen+2 || rest[idLen] != '_' {
		return "", false
	}
	id = rest[:idLen]
	if _, err := hex.DecodeString(id); err != nil {
		return "", false
	}
	return id, true
}

// Verify reports whether secret hashes to hash, in constant time.
func Verify(secret string, hash []byte) bool {
	return len(hash) == sha256.Size && subtle.ConstantTimeCompare(Hash(secret), hash) == 1
}
