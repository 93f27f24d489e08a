package tenanttoken

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
)

// Version is the token format's prefix.
const Version = "cpt1"

// MaxKeyIDLen bounds a key id.
const MaxKeyIDLen = 64

// Config bounds the tokens a process mints and accepts. Minting and
// verifying parties must agree on MaxTTL (a verifier refuses a token that
// lives longer) and the control plane keeps a retired public key for
// MaxTTL + ClockSkew after its last token was signed.
type Config struct {
	// TTL is the lifetime of a minted token (MinTTL ≤ TTL ≤ MaxTTL).
	TTL time.Duration
	// MinTTL and MaxTTL bound a token's lifetime (expiry − issued-at).
	MinTTL, MaxTTL time.Duration
	// ClockSkew is tolerated between the minting router's clock and the
	// verifier's: a token issued up to ClockSkew in the future is
	// accepted, and one is refused only once now > expiry + ClockSkew.
	ClockSkew time.Duration
	// MaxTokenBytes bounds a token's length; longer ones are refused
	// before any decoding.
	MaxTokenBytes int
}

// Defaults.
const (
	DefaultTTL           = 5 * time.Minute
	DefaultMinTTL        = 5 * time.Second
	DefaultMaxTTL        = 15 * time.Minute
	DefaultClockSkew     = 30 * time.Second
	DefaultMaxTokenBytes = 1024
)

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{TTL: DefaultTTL, MinTTL: DefaultMinTTL, MaxTTL: DefaultMaxTTL, ClockSkew: DefaultClockSkew, MaxTokenBytes: DefaultMaxTokenBytes}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if c.MinTTL <= 0 {
		errs = append(errs, fmt.Errorf("tenanttoken: MinTTL %v must be positive", c.MinTTL))
	}
	if c.MaxTTL < c.MinTTL {
		errs = append(errs, fmt.Errorf("tenanttoken: MaxTTL %v is below MinTTL %v", c.MaxTTL, c.MinTTL))
	}
	if c.TTL < c.MinTTL || c.TTL > c.MaxTTL {
		errs = append(errs, fmt.Errorf("tenanttoken: TTL %v is not within [%v, %v]", c.TTL, c.MinTTL, c.MaxTTL))
	}
	if c.ClockSkew < 0 || c.ClockSkew > c.MaxTTL {
		errs = append(errs, fmt.Errorf("tenanttoken: ClockSkew %v is not within [0, MaxTTL]", c.ClockSkew))
	}
	if c.MaxTokenBytes < 256 || c.MaxTokenBytes > 16<<10 {
		errs = append(errs, fmt.Errorf("tenanttoken: MaxTokenBytes %d is not within [256, 16384]", c.MaxTokenBytes))
	}
	return errors.Join(errs...)
}

// Claims are what a token binds.
type Claims struct {
	// Tenant the token is for.
	Tenant string `json:"t"`
	// Cell is the owner cell the token is valid at.
	Cell string `json:"c"`
	// Epoch is the tenant's ownership epoch at Cell (≥ 1): calls are
	// pinned to it, so a token minted before a move or a failover is
	// refused (STALE_EPOCH) once the epoch changed.
	Epoch uint64 `json:"e"`
	// IssuedAt and Expiry, Unix seconds.
	IssuedAt int64 `json:"iat"`
	Expiry   int64 `json:"exp"`
	// Audience is the cluster (the PKI trust domain) the token is for.
	Audience string `json:"aud"`
	// Principal is who the direct calls are made for inside the tenant
	// (auth.Identity.Principal of the credential the router
	// authenticated): the cell sets it as the calls' principal, so memory
	// and ownership are the same on the direct path as through the
	// router. Optional (absent: the calls act as the tenant); printable
	// ASCII, at most MaxPrincipalLen bytes. A node that predates it
	// refuses a token carrying it (the decoder is strict): upgrade cells
	// before routers.
	Principal string `json:"p,omitempty"`
}

// MaxPrincipalLen bounds Claims.Principal.
const MaxPrincipalLen = 256

// ValidPrincipal reports whether a token can carry p ("" included: no
// principal).
func ValidPrincipal(p string) bool {
	if len(p) > MaxPrincipalLen {
		return false
	}
	for i := 0; i < len(p); i++ {
		if b := p[i]; b < 0x20 || b > 0x7e {
			return false
		}
	}
	return true
}

// ExpiresAt is Expiry as a time.
func (c Claims) ExpiresAt() time.Time { return time.Unix(c.Expiry, 0) }

// Sentinels; every error of Verify wraps one of them and a cperr
// UNAUTHENTICATED error (metadata "token": Error.Kind).
var (
	// ErrMalformed: not a token of this format, too long, bad base64 or
	// JSON, a missing or unknown claim, a claim that is not a valid id.
	ErrMalformed = errors.New("tenanttoken: malformed token")
	// ErrUnknownKey: the key id is not in the verifier's key set (never
	// published, or retired and deleted).
	ErrUnknownKey = errors.New("tenanttoken: unknown signing key")
	// ErrSignature: the signature does not verify.
	ErrSignature = errors.New("tenanttoken: bad signature")
	// ErrExpired: now is past the expiry (+ ClockSkew).
	ErrExpired = errors.New("tenanttoken: expired")
	// ErrNotYetValid: issued in the future (beyond ClockSkew).
	ErrNotYetValid = errors.New("tenanttoken: not yet valid")
	// ErrLifetime: expiry − issued-at is outside [MinTTL, MaxTTL].
	ErrLifetime = errors.New("tenanttoken: lifetime out of bounds")
	// ErrAudience: the token is for another cluster.
	ErrAudience = errors.New("tenanttoken: wrong audience")
)

// Error is a token refusal: a sentinel and a cperr UNAUTHENTICATED error
// at once (errors.Is works with both; rpcerr maps it as the latter).
type Error struct {
	// Kind names the sentinel for logs and the error's metadata:
	// malformed, unknown_key, signature, expired, not_yet_valid,
	// lifetime, audience.
	Kind     string
	sentinel error
	cp       *cperr.Error
}

func (e *Error) Error() string   { return e.cp.Message }
func (e *Error) Unwrap() []error { return []error{e.sentinel, e.cp} }

func refuse(kind string, sentinel error, format string, args ...any) error {
	msg := sentinel.Error()
	if format != "" {
		msg += ": " + fmt.Sprintf(format, args...)
	}
	return &Error{Kind: kind, sentinel: sentinel, cp: cperr.New(cperr.Unauthenticated, "%s", msg).With(cperr.MetaToken, kind)}
}

// SigningKey is a private key and its id.
type SigningKey struct {
	ID      string
	Private ed25519.PrivateKey
}

// KeySet is the public keys a verifier trusts, by key id.
type KeySet interface {
	PublicKey(kid string) (ed25519.PublicKey, bool)
}

// Keys is a KeySet in a map.
type Keys map[string]ed25519.PublicKey

// PublicKey implements KeySet.
func (k Keys) PublicKey(kid string) (ed25519.PublicKey, bool) {
	p, ok := k[kid]
	return p, ok
}

// NewKeyID returns a random key id (16 hex characters).
func NewKeyID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// GenerateKey returns a new signing key with a random id.
func GenerateKey() (SigningKey, ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return SigningKey{}, nil, err
	}
	return SigningKey{ID: NewKeyID(), Private: priv}, pub, nil
}

// ValidKeyID reports whether kid is a usable key id: 1–MaxKeyIDLen of
// [A-Za-z0-9_-] (no '.', the format's separator).
func ValidKeyID(kid string) bool {
	if kid == "" || len(kid) > MaxKeyIDLen {
		return false
	}
	for i := 0; i < len(kid); i++ {
		c := kid[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

var enc = base64.RawURLEncoding

// Mint signs a token for c with key, issued now and expiring now +
// cfg.TTL (c.IssuedAt and c.Expiry are set here). It returns the token
// and its expiry.
func Mint(cfg Config, key SigningKey, c Claims, now time.Time) (string, time.Time, error) {
	if err := cfg.Validate(); err != nil {
		return "", time.Time{}, err
	}
	if !ValidKeyID(key.ID) || len(key.Private) != ed25519.PrivateKeySize {
		return "", time.Time{}, errors.New("tenanttoken: unusable signing key")
	}
	c.IssuedAt = now.Unix()
	c.Expiry = now.Add(cfg.TTL).Unix()
	if err := c.check(); err != nil {
		return "", time.Time{}, err
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", time.Time{}, err
	}
	signed := Version + "." + key.ID + "." + enc.EncodeToString(payload)
	tok := signed + "." + enc.EncodeToString(ed25519.Sign(key.Private, []byte(signed)))
	if len(tok) > cfg.MaxTokenBytes {
		return "", time.Time{}, fmt.Errorf("tenanttoken: token of %d bytes exceeds MaxTokenBytes %d", len(tok), cfg.MaxTokenBytes)
	}
	return tok, c.ExpiresAt(), nil
}

// check validates the claims' ids and epoch.
func (c Claims) check() error {
	var errs []error
	for _, f := range []struct{ name, v string }{{"tenant", c.Tenant}, {"cell", c.Cell}, {"audience", c.Audience}} {
		if err := ids.Check(f.name, f.v, ids.MaxLen); err != nil {
			errs = append(errs, err)
		}
	}
	if c.Epoch == 0 {
		errs = append(errs, errors.New("epoch: must be at least 1"))
	}
	if !ValidPrincipal(c.Principal) {
		errs = append(errs, fmt.Errorf("principal: must be printable ASCII of at most %d bytes", MaxPrincipalLen))
	}
	return errors.Join(errs...)
}

// Verify checks a token against keys and returns its claims: the format
// and length, the key id, the signature, the claims (strictly decoded),
// the audience, the lifetime and the times. It does not check the tenant,
// cell or epoch against a call: the caller does (cells/authz.go). Every
// error is an *Error (UNAUTHENTICATED).
func Verify(cfg Config, keys KeySet, token, audience string, now time.Time) (Claims, error) {
	if len(token) > cfg.MaxTokenBytes {
		return Claims{}, refuse("malformed", ErrMalformed, "longer than %d bytes", cfg.MaxTokenBytes)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 4 || parts[0] != Version || !ValidKeyID(parts[1]) {
		return Claims{}, refuse("malformed", ErrMalformed, "")
	}
	sig, err := enc.DecodeString(parts[3])
	if err != nil || len(sig) != ed25519.SignatureSize {
		return Claims{}, refuse("malformed", ErrMalformed, "signature encoding")
	}
	pub, ok := keys.PublicKey(parts[1])
	if !ok || len(pub) != ed25519.PublicKeySize {
		return Claims{}, refuse("unknown_key", ErrUnknownKey, "key id %s", parts[1])
	}
	if !ed25519.Verify(pub, []byte(token[:len(token)-len(parts[3])-1]), sig) {
		return Claims{}, refuse("signature", ErrSignature, "")
	}
	payload, err := enc.DecodeString(parts[2])
	if err != nil {
		return Claims{}, refuse("malformed", ErrMalformed, "claims encoding")
	}
	c, err := decodeClaims(payload)
	if err != nil {
		return Claims{}, refuse("malformed", ErrMalformed, "%v", err)
	}
	if c.Audience != audience {
		return Claims{}, refuse("audience", ErrAudience, "")
	}
	life := time.Duration(c.Expiry-c.IssuedAt) * time.Second
	if c.Expiry <= c.IssuedAt || life < cfg.MinTTL.Truncate(time.Second) || life > cfg.MaxTTL {
		return Claims{}, refuse("lifetime", ErrLifetime, "%v", life)
	}
	skew := int64(cfg.ClockSkew / time.Second)
	if c.IssuedAt > now.Unix()+skew {
		return Claims{}, refuse("not_yet_valid", ErrNotYetValid, "")
	}
	if now.Unix() >= c.Expiry+skew {
		return Claims{}, refuse("expired", ErrExpired, "at %s", c.ExpiresAt().UTC().Format(time.RFC3339))
	}
	return c, nil
}

// decodeClaims decodes the claims JSON strictly: every field present
// (the principal optional, never empty), nothing else, one object, ids
// valid.
func decodeClaims(b []byte) (Claims, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return Claims{}, errors.New("claims are not a JSON object")
	}
	for _, k := range []string{"t", "c", "e", "iat", "exp", "aud"} {
		if _, ok := raw[k]; !ok {
			return Claims{}, fmt.Errorf("claim %q missing", k)
		}
	}
	want := 6
	if p, ok := raw["p"]; ok {
		if string(p) == `""` {
			return Claims{}, errors.New("claim \"p\" is empty") // omitted when empty: one encoding only
		}
		want++
	}
	if len(raw) != want {
		return Claims{}, errors.New("unknown claims")
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	var c Claims
	if err := d.Decode(&c); err != nil {
		return Claims{}, errors.New("claims do not decode")
	}
	if err := c.check(); err != nil {
		return Claims{}, err
	}
	return c, nil
}
