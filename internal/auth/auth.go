package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/golang-jwt/jwt/v5"
)

// Mode selects which credentials an edge (the router, an MCP worker) accepts.
type Mode string

const (
	// ModeAPIKey accepts tenant API keys only.
	ModeAPIKey Mode = "apikey"
	// ModeJWT accepts JWT bearer tokens verified against a JWKS file, and
	// tenant API keys when a KeyLookup is given.
	ModeJWT Mode = "jwt"
	// ModeNone accepts every request without credentials. Development only.
	ModeNone Mode = "none"
)

// Identity is who a request authenticated as.
type Identity struct {
	// Tenant is the tenant the credentials belong to; empty in ModeNone.
	Tenant string
	// Subject is the JWT "sub", or the key id for an API key: the
	// credential itself, which changes when a key is rotated. Revocations
	// name it; nothing is owned by it.
	Subject string
	// Principal is who the calls are made for inside the tenant, stable
	// across key rotation: "key:" + the key's principal (its id when it
	// has none), or "jwt:" + the subject. Contexts and memory belong to
	// it (tenantmd.PrincipalKey carries it to the cell). Empty in
	// ModeNone.
	Principal string
	// Scopes is what the credential may do: an API key's stored scopes, a
	// JWT's "scope" claim (DefaultScopes when absent); FullScopes in
	// ModeNone.
	Scopes Scopes
	// Method is how the request authenticated: "apikey", "jwt" or "none".
	Method string
	// KeyID is the API key id, or the kid of the JWT's signing key.
	KeyID string
	// JTI and IssuedAt are a JWT's "jti" and "iat" (empty and zero when
	// absent): the revocation list names tokens by them.
	JTI      string
	IssuedAt time.Time
}

// The values of Identity.Method.
const (
	MethodAPIKey = "apikey"
	MethodJWT    = "jwt"
	MethodNone   = "none"
)

// TenantHeader is the metadata/header a caller names its tenant with.
const TenantHeader = "x-cellplane-tenant"

// KeyLookup is the registry's credential data as a verifier sees it (the
// routing table implements it): API keys and the JWT revocation list.
//
// APIKey finds a tenant API key by id; ok is false for an unknown or
// revoked key. KeysFresh says whether those answers may be trusted now:
// an error (CREDENTIALS_STALE) when the view of the keys is older than its
// staleness bound, so that a key revoked meanwhile is not honoured; every
// API key is then refused with that error.
//
// TokenRevoked checks a verified JWT against its tenant's revocation list
// (see Revoked): nil if it may be used, an UNAUTHENTICATED error if it is
// revoked, CREDENTIALS_STALE if the list is too old to tell.
type KeyLookup interface {
	APIKey(keyID string) (tenant string, hash []byte, ok bool)
	// APIKeyGrant returns what a key found by APIKey acts as: its
	// principal name ("" for the key id) and its scopes.
	APIKeyGrant(keyID string) (principal string, scopes Scopes)
	KeysFresh() error
	TokenRevoked(id Identity) error
}

// TokenRevokedError is the error of a revoked JWT (UNAUTHENTICATED).
func TokenRevokedError() error { return cperr.New(cperr.Unauthenticated, "the token has been revoked") }

// Config configures an Authenticator.
type Config struct {
	// Mode selects the accepted credentials.
	Mode Mode
	// JWKSFile is the path of a JSON Web Key Set holding the RS256 and
	// ES256 verification keys, by kid (ModeJWT; required there).
	JWKSFile string
	// Issuer must equal a token's "iss" exactly (ModeJWT; required there).
	Issuer string
	// Audience must be one of a token's "aud" values (ModeJWT; required
	// there unless PerRequestAudience).
	Audience string
	// PerRequestAudience: the audience is given with each call
	// (AuthenticateFor), e.g. the tenant's MCP URL; Audience may be empty.
	PerRequestAudience bool
	// TenantClaim names the string claim that carries the tenant.
	TenantClaim string
	// Leeway is the clock skew allowed when checking exp, nbf and iat.
	Leeway time.Duration
	// Realm is the realm of WWW-Authenticate challenges.
	Realm string
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: API keys only, tenant claim
// "tenant", 30s leeway, realm "cellplane".
func DefaultConfig() Config {
	return Config{
		Mode:        ModeAPIKey,
		TenantClaim: "tenant",
		Leeway:      30 * time.Second,
		Realm:       "cellplane",
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	switch c.Mode {
	case ModeAPIKey, ModeNone:
	case ModeJWT:
		if c.JWKSFile == "" {
			errs = append(errs, errors.New("auth: Config.JWKSFile is required in mode jwt"))
		}
		if c.Issuer == "" {
			errs = append(errs, errors.New("auth: Config.Issuer is required in mode jwt"))
		}
		if c.Audience == "" && !c.PerRequestAudience {
			errs = append(errs, errors.New("auth: Config.Audience is required in mode jwt"))
		}
	default:
		errs = append(errs, fmt.Errorf("auth: Config.Mode must be apikey, jwt or none, got %q", c.Mode))
	}
	if c.TenantClaim == "" {
		errs = append(errs, errors.New("auth: Config.TenantClaim must not be empty"))
	}
	if c.Leeway < 0 {
		errs = append(errs, fmt.Errorf("auth: Config.Leeway must be >= 0, got %v", c.Leeway))
	}
	if c.Realm == "" || !safeQuoted(c.Realm) {
		errs = append(errs, fmt.Errorf("auth: Config.Realm must be non-empty printable ASCII without quotes or backslashes, got %q", c.Realm))
	}
	return errors.Join(errs...)
}

// Authenticator checks the credentials of requests at an edge. It is safe for
// concurrent use; ReloadJWKS may run while requests are authenticated.
type Authenticator struct {
	cfg    Config
	keys   KeyLookup
	log    *slog.Logger
	jwks   atomic.Pointer[map[string]jwk]
	parser *jwt.Parser
	now    func() time.Time
}

// New returns an Authenticator. keys may be nil in ModeJWT (API keys are
// then refused) and ModeNone; ModeJWT loads cfg.JWKSFile. ModeNone logs a
// warning that authentication is off.
func New(cfg Config, keys KeyLookup) (*Authenticator, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Mode == ModeAPIKey && keys == nil {
		return nil, errors.New("auth: mode apikey needs a KeyLookup")
	}
	a := &Authenticator{cfg: cfg, keys: keys, log: cfg.Logger, now: time.Now}
	if a.log == nil {
		a.log = slog.Default()
	}
	a.log = a.log.With("component", "auth")
	a.parser = a.newParser(cfg.Audience)
	switch cfg.Mode {
	case ModeJWT:
		if err := a.ReloadJWKS(); err != nil {
			return nil, err
		}
	case ModeNone:
		a.log.Warn("authentication is OFF (--auth=none): every request is accepted and names its tenant with " +
			TenantHeader + "; development only, never expose this router")
	}
	return a, nil
}

// newParser returns the JWT parser for an audience.
func (a *Authenticator) newParser(audience string) *jwt.Parser {
	return jwt.NewParser(
		jwt.WithValidMethods([]string{"RS256", "ES256"}),
		jwt.WithIssuer(a.cfg.Issuer),
		jwt.WithAudience(audience),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithLeeway(a.cfg.Leeway),
		jwt.WithTimeFunc(func() time.Time { return a.now() }),
	)
}

// Mode returns the configured mode.
func (a *Authenticator) Mode() Mode { return a.cfg.Mode }

// ReloadJWKS re-reads the JWKS file (keys rotate). On error the previous
// keys stay in use. It does nothing outside ModeJWT.
func (a *Authenticator) ReloadJWKS() error {
	if a.cfg.Mode != ModeJWT {
		return nil
	}
	keys, err := loadJWKS(a.cfg.JWKSFile)
	if err != nil {
		a.log.Warn("JWKS not loaded; keeping the previous keys", "err", err)
		return err
	}
	a.jwks.Store(&keys)
	a.log.Info("JWKS loaded", "keys", len(keys))
	return nil
}

// The messages of authentication failures. They are safe to return: they
// never contain the credentials.
const (
	msgMissing        = "missing credentials"
	msgScheme         = "unsupported authorization scheme"
	msgInvalidAPIKey  = "invalid API key"
	msgJWTDisabled    = "bearer tokens other than API keys are not accepted"
	msgAPIKeyDisabled = "API keys are not accepted"
	msgMalformed      = "malformed token"
	msgAlg            = "unsupported token algorithm"
	msgUnknownKey     = "unknown signing key"
	msgSignature      = "invalid token signature"
	msgExpired        = "token expired"
	msgNotYetValid    = "token not yet valid"
	msgIssuedAt       = "token issued in the future"
	msgIssuer         = "invalid token issuer"
	msgAudience       = "invalid token audience"
	msgClaimMissing   = "token is missing a required claim (exp, iss or aud)"
	msgTenantClaim    = "token has no tenant claim"
	msgInvalid        = "invalid token"
	msgScope          = "token has a malformed scope claim"
)

// jwtScopes reads the "scope" claim (RFC 9068 §2.2.3: one space-separated
// string): absent, DefaultScopes; not a string, or too long, an error.
func jwtScopes(claims jwt.MapClaims) (Scopes, error) {
	raw, ok := claims["scope"]
	if !ok {
		return DefaultScopes, nil
	}
	s, ok := raw.(string)
	if !ok {
		return 0, errors.New("scope claim is not a string")
	}
	return ParseScopes(s)
}

func unauthenticated(msg string) *cperr.Error {
	return &cperr.Error{Reason: cperr.Unauthenticated, Message: msg}
}

// Authenticate checks the value of the "authorization" metadata or header:
// "Bearer <JWT>" or "Bearer cpk_..." (an API key). Failures are
// UNAUTHENTICATED *cperr.Error values; an empty value is "missing
// credentials". In ModeNone every request succeeds with Method "none" and
// no tenant (see CheckTenant).
func (a *Authenticator) Authenticate(ctx context.Context, authorization string) (Identity, error) {
	if a.cfg.Mode == ModeNone {
		return Identity{Method: MethodNone, Scopes: FullScopes}, nil
	}
	authorization = strings.TrimSpace(authorization)
	if authorization == "" {
		return Identity{}, unauthenticated(msgMissing)
	}
	if strings.EqualFold(authorization, "Bearer") {
		return Identity{}, unauthenticated(msgMissing)
	}
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return Identity{}, unauthenticated(msgScheme)
	}
	token = strings.TrimLeft(token, " ")
	if token == "" {
		return Identity{}, unauthenticated(msgMissing)
	}
	if strings.HasPrefix(token, apiKeyPrefix) {
		return a.AuthenticateAPIKey(token)
	}
	if a.cfg.Mode != ModeJWT {
		return Identity{}, unauthenticated(msgJWTDisabled)
	}
	return a.authenticateJWT(a.parser, token)
}

// AuthenticateFor is Authenticate with the JWT audience given per call
// (an MCP worker checks that a token was issued for the tenant's MCP URL).
// API keys are checked as in Authenticate.
func (a *Authenticator) AuthenticateFor(ctx context.Context, authorization, audience string) (Identity, error) {
	if a.cfg.Mode != ModeJWT {
		return a.Authenticate(ctx, authorization)
	}
	_, token, _ := strings.Cut(strings.TrimSpace(authorization), " ")
	token = strings.TrimLeft(token, " ")
	if token == "" || strings.HasPrefix(token, apiKeyPrefix) {
		return a.Authenticate(ctx, authorization)
	}
	if scheme, _, _ := strings.Cut(strings.TrimSpace(authorization), " "); !strings.EqualFold(scheme, "Bearer") {
		return Identity{}, unauthenticated(msgScheme)
	}
	return a.authenticateJWT(a.newParser(audience), token)
}

// dummyHash is compared against when a key id is unknown, so that unknown
// and wrong keys take the same time.
var dummyHash = HashKey("cpk_0000000000000000_dummy")

// AuthenticateAPIKey checks an API key secret, as sent in the x-api-key
// header (or as a bearer token, through Authenticate). An empty secret is
// "missing credentials"; a malformed, unknown, revoked or wrong one is
// "invalid API key".
func (a *Authenticator) AuthenticateAPIKey(secret string) (Identity, error) {
	if a.cfg.Mode == ModeNone {
		return Identity{Method: MethodNone, Scopes: FullScopes}, nil
	}
	if secret == "" {
		return Identity{}, unauthenticated(msgMissing)
	}
	if a.keys == nil {
		return Identity{}, unauthenticated(msgAPIKeyDisabled)
	}
	id, ok := KeyID(secret)
	if !ok {
		return Identity{}, unauthenticated(msgInvalidAPIKey)
	}
	if err := a.keys.KeysFresh(); err != nil {
		return Identity{}, err
	}
	tenant, hash, found := a.keys.APIKey(id)
	if !found {
		hash = dummyHash
	}
	if !VerifyKey(secret, hash) || !found || tenant == "" {
		return Identity{}, unauthenticated(msgInvalidAPIKey)
	}
	name, scopes := a.keys.APIKeyGrant(id)
	return Identity{Tenant: tenant, Subject: id, Principal: KeyPrincipal(id, name), Scopes: scopes, Method: MethodAPIKey, KeyID: id}, nil
}

// authenticateJWT verifies a compact JWS and its claims.
func (a *Authenticator) authenticateJWT(parser *jwt.Parser, raw string) (Identity, error) {
	keysp := a.jwks.Load()
	if keysp == nil {
		return Identity{}, unauthenticated(msgUnknownKey)
	}
	keys := *keysp
	var kid string
	claims := jwt.MapClaims{}
	token, err := parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
		alg, _ := t.Header["alg"].(string)
		if alg != "RS256" && alg != "ES256" {
			return nil, unauthenticated(msgAlg)
		}
		kid, _ = t.Header["kid"].(string)
		k, ok := keys[kid]
		if !ok || k.alg != alg {
			return nil, unauthenticated(msgUnknownKey)
		}
		switch k.key.(type) {
		case *rsa.PublicKey, *ecdsa.PublicKey:
			return k.key, nil
		}
		return nil, unauthenticated(msgUnknownKey)
	})
	if err != nil {
		return Identity{}, unauthenticated(jwtErrorMessage(token, err))
	}
	tenant, _ := claims[a.cfg.TenantClaim].(string)
	if tenant == "" {
		return Identity{}, unauthenticated(msgTenantClaim)
	}
	sub, _ := claims["sub"].(string)
	jti, _ := claims["jti"].(string)
	scopes, err := jwtScopes(claims)
	if err != nil {
		return Identity{}, unauthenticated(msgScope)
	}
	// A token without a subject still gets a principal ("jwt:"), shared
	// by every such token of the tenant: never the absence of one, which
	// would mean "no owner to check".
	id := Identity{Tenant: tenant, Subject: sub, Principal: PrincipalJWTPrefix + sub, Scopes: scopes, Method: MethodJWT, KeyID: kid, JTI: jti}
	if iat, err := claims.GetIssuedAt(); err == nil && iat != nil {
		id.IssuedAt = iat.Time
	}
	if a.keys != nil {
		if err := a.keys.TokenRevoked(id); err != nil {
			return Identity{}, err
		}
	}
	return id, nil
}

// jwtErrorMessage turns a golang-jwt error into a short, safe message.
func jwtErrorMessage(token *jwt.Token, err error) string {
	var ce *cperr.Error
	switch {
	case errors.As(err, &ce):
		return ce.Message
	case errors.Is(err, jwt.ErrTokenMalformed):
		return msgMalformed
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		if token != nil && token.Method != nil {
			if alg := token.Method.Alg(); alg != "RS256" && alg != "ES256" {
				return msgAlg
			}
		}
		return msgSignature
	case errors.Is(err, jwt.ErrTokenUnverifiable):
		return msgAlg // no signing method known for the header's alg
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing):
		return msgClaimMissing
	case errors.Is(err, jwt.ErrTokenExpired):
		return msgExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return msgNotYetValid
	case errors.Is(err, jwt.ErrTokenUsedBeforeIssued):
		return msgIssuedAt
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return msgIssuer
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return msgAudience
	}
	return msgInvalid
}

// CheckTenant resolves the tenant of a request from the identity and the
// tenant the caller asked for (the x-cellplane-tenant value, may be empty):
//
//   - authenticated, requested empty: the identity's tenant;
//   - authenticated, requested differs: PERMISSION_DENIED;
//   - ModeNone (Method "none"): requested is required (INVALID_ARGUMENT).
func CheckTenant(id Identity, requested string) (string, error) {
	if id.Method == MethodNone {
		if requested == "" {
			return "", &cperr.Error{
				Reason:     cperr.InvalidArgument,
				Message:    TenantHeader + " is required",
				Violations: []cperr.FieldViolation{{Field: TenantHeader, Description: "required when authentication is off"}},
			}
		}
		// The one id rule, as the cells check it: a malformed id is a bad
		// request, not an unknown tenant.
		if err := ids.Check(TenantHeader, requested, ids.MaxLen); err != nil {
			return "", err
		}
		return requested, nil
	}
	if id.Tenant == "" {
		return "", unauthenticated(msgMissing)
	}
	if requested == "" || requested == id.Tenant {
		return id.Tenant, nil
	}
	return "", cperr.New(cperr.PermissionDenied, "the credentials are not valid for the requested tenant").
		With(cperr.MetaTenant, requested)
}

// WWWAuthenticate returns the WWW-Authenticate value for a response to err
// (RFC 6750 §3): a bare challenge when credentials were missing (or err is
// not an authentication error), error="invalid_token" with the error's
// message for other UNAUTHENTICATED errors, error="insufficient_scope" for
// PERMISSION_DENIED and error="invalid_request" for INVALID_ARGUMENT.
func (a *Authenticator) WWWAuthenticate(err error) string {
	challenge := `Bearer realm="` + a.cfg.Realm + `"`
	var ce *cperr.Error
	if !errors.As(err, &ce) {
		return challenge
	}
	var code string
	switch ce.Reason {
	case cperr.Unauthenticated:
		if ce.Message == msgMissing || ce.Message == "" {
			return challenge
		}
		code = "invalid_token"
	case cperr.PermissionDenied:
		code = "insufficient_scope"
	case cperr.InvalidArgument:
		code = "invalid_request"
	default:
		return challenge
	}
	challenge += `, error="` + code + `"`
	if d := sanitize(ce.Message); d != "" {
		challenge += `, error_description="` + d + `"`
	}
	return challenge
}

// sanitize keeps the characters RFC 6750 allows in error_description
// (%x20-21 / %x23-5B / %x5D-7E).
func sanitize(s string) string {
	if safeQuoted(s) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if c := s[i]; allowedQuoted(c) {
			b.WriteByte(c)
		}
	}
	return b.String()
}

func safeQuoted(s string) bool {
	for i := 0; i < len(s); i++ {
		if !allowedQuoted(s[i]) {
			return false
		}
	}
	return true
}

func allowedQuoted(c byte) bool {
	return c >= 0x20 && c <= 0x7e && c != '"' && c != '\\'
}
