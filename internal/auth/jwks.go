package auth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
)

// maxJWKSSize bounds the JWKS file read by New and ReloadJWKS.
const maxJWKSSize = 1 << 20

// minRSABits is the smallest RSA modulus accepted in a JWKS.
const minRSABits = 2048

// jwk is one verification key of a key set, ready for use.
type jwk struct {
	kid string
	alg string // the only JWS algorithm this key verifies: RS256 or ES256
	key crypto.PublicKey
}

// rawJWK is a JSON Web Key as written in a file (RFC 7517, RFC 7518 §6).
// Only the members needed for RSA and P-256 verification keys are read.
type rawJWK struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Use string `json:"use"`
	Alg string `json:"alg"`
	// RSA
	N string `json:"n"`
	E string `json:"e"`
	// EC
	Crv string `json:"crv"`
	X   string `json:"x"`
	Y   string `json:"y"`
	// Private members: a public key set must not carry them.
	D string `json:"d"`
}

// loadJWKS reads and parses a JWKS file.
func loadJWKS(path string) (map[string]jwk, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxJWKSSize+1))
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS %s: %w", path, err)
	}
	if len(data) > maxJWKSSize {
		return nil, fmt.Errorf("auth: JWKS %s: larger than %d bytes", path, maxJWKSSize)
	}
	keys, err := parseJWKS(data)
	if err != nil {
		return nil, fmt.Errorf("auth: JWKS %s: %w", path, err)
	}
	return keys, nil
}

// parseJWKS parses a JWK Set (RFC 7517 §5) holding RSA (RS256) and EC
// P-256 (ES256) signature keys, indexed by kid.
//
// Keys of other types or curves (oct, OKP, P-384, ...) and keys whose "use"
// is not "sig" are skipped, so that a shared key set can be used as is. A
// supported key that is malformed, lacks a kid, repeats a kid or carries a
// private member is an error, as is a set without any usable key.
func parseJWKS(data []byte) (map[string]jwk, error) {
	var set struct {
		Keys []rawJWK `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("not a JWK set: %w", err)
	}
	keys := make(map[string]jwk, len(set.Keys))
	for i, raw := range set.Keys {
		k, ok, err := parseJWK(raw)
		if err != nil {
			return nil, fmt.Errorf("key %d (kid %q): %w", i, raw.Kid, err)
		}
		if !ok {
			continue
		}
		if _, dup := keys[k.kid]; dup {
			return nil, fmt.Errorf("key %d: duplicate kid %q", i, k.kid)
		}
		keys[k.kid] = k
	}
	if len(keys) == 0 {
		return nil, errors.New("no usable RS256 or ES256 key")
	}
	return keys, nil
}

// parseJWK converts one key; ok is false for a key of a type we skip.
func parseJWK(raw rawJWK) (k jwk, ok bool, err error) {
	if raw.Use != "" && raw.Use != "sig" {
		return jwk{}, false, nil
	}
	switch {
	case raw.Kty == "RSA":
		if raw.Alg != "" && raw.Alg != "RS256" {
			return jwk{}, false, nil
		}
	case raw.Kty == "EC" && raw.Crv == "P-256":
		if raw.Alg != "" && raw.Alg != "ES256" {
			return jwk{}, false, nil
		}
	default:
		return jwk{}, false, nil
	}
	if raw.Kid == "" {
		return jwk{}, false, errors.New("kid is required")
	}
	if raw.D != "" {
		return jwk{}, false, errors.New("a private key in a public key set")
	}
	if raw.Kty == "RSA" {
		pub, err := parseRSA(raw.N, raw.E)
		if err != nil {
			return jwk{}, false, err
		}
		return jwk{kid: raw.Kid, alg: "RS256", key: pub}, true, nil
	}
	pub, err := parseP256(raw.X, raw.Y)
	if err != nil {
		return jwk{}, false, err
	}
	return jwk{kid: raw.Kid, alg: "ES256", key: pub}, true, nil
}

func parseRSA(n64, e64 string) (*rsa.PublicKey, error) {
	nb, err := base64.RawURLEncoding.DecodeString(n64)
	if err != nil || len(nb) == 0 {
		return nil, errors.New("bad RSA modulus n")
	}
	eb, err := base64.RawURLEncoding.DecodeString(e64)
	if err != nil || len(eb) == 0 || len(eb) > 4 {
		return nil, errors.New("bad RSA exponent e")
	}
	n := new(big.Int).SetBytes(nb)
	if n.BitLen() < minRSABits {
		return nil, fmt.Errorf("RSA modulus of %d bits, at least %d required", n.BitLen(), minRSABits)
	}
	var e uint64
	for _, b := range eb {
		e = e<<8 | uint64(b)
	}
	if e < 3 || e > 1<<31-1 || e%2 == 0 {
		return nil, errors.New("bad RSA exponent e")
	}
	return &rsa.PublicKey{N: n, E: int(e)}, nil
}

func parseP256(x64, y64 string) (*ecdsa.PublicKey, error) {
	x, err := base64.RawURLEncoding.DecodeString(x64)
	if err != nil || len(x) != 32 {
		return nil, errors.New("bad P-256 coordinate x")
	}
	y, err := base64.RawURLEncoding.DecodeString(y64)
	if err != nil || len(y) != 32 {
		return nil, errors.New("bad P-256 coordinate y")
	}
	point := make([]byte, 0, 65)
	point = append(point, 4)
	point = append(point, x...)
	point = append(point, y...)
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
	if err != nil {
		return nil, errors.New("P-256 point not on the curve")
	}
	return pub, nil
}
