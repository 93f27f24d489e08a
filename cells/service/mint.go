package service

import (
	"crypto/rand"
	"encoding/base32"
	"strings"
)

// idEncoding is lowercase-friendly base32 without padding: 16 random
// bytes give 26 characters.
var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// mintContextID returns "ctx-" and 26 lowercase base32 characters of a
// random 128-bit value: a valid id (30 characters of [a-z2-7-]) that does
// not collide in practice. crypto/rand.Read never fails (Go ≥ 1.24).
func mintContextID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return "ctx-" + strings.ToLower(idEncoding.EncodeToString(b[:]))
}
