package mcp

import (
	"errors"
	"fmt"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/readcache"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Authenticator checks the credentials of an MCP request. The worker
// calls it after the path, method, Origin and body-size checks and before
// the SDK sees the request.
type Authenticator interface {
	// Authenticate checks r's credentials for tenant's MCP endpoint
	// (audience = resource, the tenant's public MCP URL). It returns the
	// identity (its Principal owns what the calls create; its Scopes say
	// which tools it may call) or a *cperr.Error (UNAUTHENTICATED /
	// PERMISSION_DENIED).
	Authenticate(r *http.Request, tenant, resource string) (auth.Identity, error)
	// Challenge is the WWW-Authenticate value for a 401 (the worker
	// appends resource_metadata="…").
	Challenge(err error) string
	// AuthorizationServers for the RFC 9728 metadata (may be empty).
	AuthorizationServers() []string
}

// Config configures a Worker.
type Config struct {
	// MaxBodyBytes bounds a request body: 413 above it, before the SDK
	// reads it (Content-Length) or while it reads it (chunked bodies).
	MaxBodyBytes int64
	// AllowedOrigins are the browser origins (scheme://host[:port]) allowed
	// to call the endpoint. A request with an Origin header must match one
	// of them or the request's own Host, else 403 (DNS-rebinding and
	// cross-site protection). Empty: same host only. Requests without an
	// Origin header (non-browser clients) are not affected.
	AllowedOrigins []string
	// PublicURL is the base URL clients reach the MCP endpoint at
	// ("https://mcp.example.com", optionally with a path prefix): tenant
	// t's MCP URL is PublicURL+"/t/<t>/mcp". That URL is the audience a
	// bearer JWT must carry (RFC 8707) and the "resource" of the RFC 9728
	// metadata. It comes from configuration only, never from the request's
	// Host header (which the client chooses). Required by New; cells and
	// the stand-alone worker default it to "http://" + their advertised
	// HTTP address.
	PublicURL string
	// CallTimeout bounds each backend (ContextService) call, retries of
	// transient failures included.
	CallTimeout time.Duration
	// MaxReadEntries and MaxReadBytes cap context_read (and a resource
	// read); MaxReadEntries is also the default when a call gives no bound.
	MaxReadEntries int
	MaxReadBytes   int64
	// DefaultReadBytes bounds a context_read that gives no max_bytes (and
	// a resource read): its newest entries within this many bytes, so a
	// default read fits common clients' result caps.
	DefaultReadBytes int64
	// FastToolCalls serves a single JSON-RPC tools/call POST without the
	// SDK's per-request session (the same checks, tool code, response and
	// errors; everything else goes to the SDK). False: every request goes
	// through the SDK, the fallback should the two ever differ.
	FastToolCalls bool
	// ReadCache is the worker's change-coherent read cache
	// (internal/readcache, docs/cache.md): context_read and memory_get
	// calls that accept stale answers (max_staleness_ms) are served from
	// it. Off (MaxBytes 0) by default.
	ReadCache readcache.Config
	// MaxChangesWait caps how long changes_read waits for a change
	// (wait_ms), MaxChangesPerRead how many changes it returns at once.
	MaxChangesWait    time.Duration
	MaxChangesPerRead int
	// MaxSessions caps the 2025-era sessions (an initialize with a
	// protocol version before 2026-07-28 opens one) a worker holds at
	// once: beyond it an initialize is refused with 429 QUOTA_EXCEEDED.
	// MaxSubscriptionsPerSession caps a session's resources/subscribe
	// URIs (QUOTA_EXCEEDED beyond). SessionIdleTimeout ends a session
	// that received no request for that long (0: never; clients keep a
	// session alive with pings).
	MaxSessions                int
	MaxSubscriptionsPerSession int
	SessionIdleTimeout         time.Duration
	// Logger receives the worker's logs (nil: discarded).
	Logger *slog.Logger
}

// DefaultConfig returns the defaults: 4 MiB bodies, same-host origins,
// 10 s per backend call, reads capped at 1000 entries and 1 MiB (64 KiB,
// newest first, when a read names no bound), the tools/call fast path on.
func DefaultConfig() Config {
	return Config{
		MaxBodyBytes:      4 << 20,
		CallTimeout:       10 * time.Second,
		MaxReadEntries:    1000,
		MaxReadBytes:      1 << 20,
		DefaultReadBytes:  64 << 10,
		FastToolCalls:     true,
		MaxChangesWait:    30 * time.Second,
		MaxChangesPerRead: 1000,
		ReadCache:         readcache.DefaultConfig(),

		MaxSessions:                10000,
		MaxSubscriptionsPerSession: 100,
		SessionIdleTimeout:         10 * time.Minute,
	}
}

// Validate reports every unusable setting.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBodyBytes <= 0 {
		errs = append(errs, errors.New("MaxBodyBytes must be positive"))
	}
	if c.CallTimeout <= 0 {
		errs = append(errs, errors.New("CallTimeout must be positive"))
	}
	if c.MaxChangesWait < 0 || c.MaxChangesPerRead <= 0 {
		errs = append(errs, errors.New("MaxChangesWait must not be negative and MaxChangesPerRead must be positive"))
	}
	if c.MaxSessions <= 0 || c.MaxSubscriptionsPerSession <= 0 || c.SessionIdleTimeout < 0 {
		errs = append(errs, errors.New("MaxSessions and MaxSubscriptionsPerSession must be positive, SessionIdleTimeout not negative"))
	}
	if c.MaxReadEntries <= 0 {
		errs = append(errs, errors.New("MaxReadEntries must be positive"))
	}
	if c.MaxReadBytes <= 0 {
		errs = append(errs, errors.New("MaxReadBytes must be positive"))
	}
	if c.DefaultReadBytes <= 0 || c.DefaultReadBytes > c.MaxReadBytes {
		errs = append(errs, errors.New("DefaultReadBytes must be positive and at most MaxReadBytes"))
	}
	if c.PublicURL != "" {
		if _, err := ParsePublicURL(c.PublicURL); err != nil {
			errs = append(errs, fmt.Errorf("PublicURL: %w", err))
		}
	}
	if err := c.ReadCache.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("ReadCache: %w", err))
	}
	for _, o := range c.AllowedOrigins {
		if _, err := normalizeOrigin(o); err != nil {
			errs = append(errs, fmt.Errorf("AllowedOrigins: %q: %w", o, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("mcp: invalid config: %w", err)
	}
	return nil
}

// normalizeOrigin returns "scheme://host[:port]" in lower case, with the
// scheme's default port removed, or an error for anything else (paths,
// queries, user info, "null").
func normalizeOrigin(o string) (string, error) {
	u, err := url.Parse(o)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil ||
		(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("want scheme://host[:port] with scheme http or https")
	}
	host := strings.ToLower(u.Host)
	switch {
	case u.Scheme == "http" && strings.HasSuffix(host, ":80"):
		host = strings.TrimSuffix(host, ":80")
	case u.Scheme == "https" && strings.HasSuffix(host, ":443"):
		host = strings.TrimSuffix(host, ":443")
	}
	return u.Scheme + "://" + host, nil
}

// ParsePublicURL checks a public base URL (an absolute http or https URL
// without user info, query or fragment) and returns it without a trailing
// slash.
func ParsePublicURL(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil {
		return "", err
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" || u.User != nil ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" {
		return "", fmt.Errorf("%q: want an absolute http or https URL (scheme://host[:port][/prefix]) without user info, query or fragment", s)
	}
	// From the parsed URL, not s: the scheme is case-insensitive
	// ("HTTPS://…" is accepted) and the canonical form is lower case.
	return strings.TrimRight(u.String(), "/"), nil
}
