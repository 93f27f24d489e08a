package mcp

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/serve"
)

// The mux patterns of a worker's HTTP port (a cell node's --http-addr,
// a stand-alone worker's): the keys of HTTPPolicy.
const (
	PatternMCP      = "/t/"
	PatternMetadata = metadataPrefix + "/"
	PatternMetrics  = "GET /metrics"
	PatternHealthz  = "GET /healthz"
	PatternReadyz   = "GET /readyz"
)

// HTTPAccess says who may call one handler of a worker's HTTP port when
// it serves mutual TLS: identities of these kinds, and operators of these
// roles.
type HTTPAccess struct {
	Kinds     []pki.Kind
	Operators []pki.Role
}

// Allows reports whether id may call the handler.
func (a HTTPAccess) Allows(id pki.Identity) bool {
	if id.Kind == pki.KindOperator {
		return slices.Contains(a.Operators, id.Role)
	}
	return slices.Contains(a.Kinds, id.Kind)
}

// Describe renders the access for docs/security.md's table: the kinds,
// then "operator <role>" per role, separated by "; ".
func (a HTTPAccess) Describe() string {
	var parts []string
	for _, k := range a.Kinds {
		parts = append(parts, string(k))
	}
	for _, r := range a.Operators {
		parts = append(parts, "operator "+string(r))
	}
	return strings.Join(parts, "; ")
}

// components are the kinds of the platform's processes.
var components = []pki.Kind{pki.KindNode, pki.KindRouter, pki.KindControlPlane, pki.KindWorker}

// HTTPPolicy returns the authorisation table of a worker's HTTP port
// (cells.Node's and mcpserver's) when it serves mutual TLS: mux pattern →
// who may call it. A pattern not in it is refused to everyone.
// docs/security.md mirrors it (a test checks).
//
//   - MCP (/t/<tenant>/mcp) and its RFC 9728 metadata: routers only. The
//     router authenticates the tenant's API key or JWT and proxies the
//     request (router/mcpproxy); the worker checks the credential again.
//     Nothing else in the platform calls MCP on a worker.
//   - /metrics, /healthz, /readyz: every component of the cluster and
//     operators of either role (a Prometheus scraper or a probe gets an
//     operator certificate, `cellplane cert create-operator --role
//     read-only`). Never a tenant's client certificate: tenants reach MCP
//     through the router, and the pages are the platform's, not theirs.
func HTTPPolicy() map[string]HTTPAccess {
	mcp := HTTPAccess{Kinds: []pki.Kind{pki.KindRouter}}
	monitoring := HTTPAccess{Kinds: components, Operators: pki.Roles()}
	return map[string]HTTPAccess{
		PatternMCP:      mcp,
		PatternMetadata: mcp,
		PatternMetrics:  monitoring,
		PatternHealthz:  monitoring,
		PatternReadyz:   monitoring,
	}
}

// ServerTLSConfig returns the tls.Config of a worker's HTTP port served
// with src's identity: mutual TLS 1.3 with a client certificate of the
// cluster's CA, of a component or an operator (a tenant's client
// certificate is refused at the handshake), HTTP/1.1 (the router's MCP
// proxy keeps connections alive and streams server-sent events over
// them). Authorise each request with Authorize.
func ServerTLSConfig(src *pki.Source) *tls.Config {
	cfg := src.ServerTLSConfig(pki.ExpectKinds(append(slices.Clone(components), pki.KindOperator)...))
	cfg.NextProtos = []string{"http/1.1"}
	return cfg
}

// Authorize returns h guarded by HTTPPolicy's row for pattern: a request
// whose TLS peer identity the row does not allow (or without one, which a
// listener of ServerTLSConfig never lets through) gets 403
// PERMISSION_DENIED before h runs, and is logged at Warn (keys
// "peer_identity", "path"). A pattern not in the policy refuses every
// request. Use it for every handler of a port that serves mutual TLS.
func Authorize(pattern string, h http.Handler, log *slog.Logger) http.Handler {
	access, known := HTTPPolicy()[pattern]
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var (
			id     pki.Identity
			refuse *cperr.Error
		)
		if r.TLS == nil {
			refuse = cperr.New(cperr.Unauthenticated, "a client certificate of the cluster is required")
		} else if who, err := pki.IdentityFromState(*r.TLS); err != nil {
			refuse = cperr.New(cperr.Unauthenticated, "client certificate: %v", err)
		} else if id = who; !known || !access.Allows(id) {
			refuse = cperr.New(cperr.PermissionDenied, "%s may not call %s", id, r.URL.Path)
		}
		if refuse == nil {
			h.ServeHTTP(w, r)
			return
		}
		peer := ""
		if id.Kind != "" {
			peer = id.String()
		}
		log.Warn("HTTP request refused", "peer_identity", peer, "path", r.URL.Path, "err", refuse)
		serve.WriteError(w, rpcerr.HTTPStatus(refuse.Reason), string(refuse.Reason), refuse.Message)
	})
}

// Guard returns a function registering handlers on mux: each guarded by
// Authorize when secure, as is otherwise (a port without TLS has no
// identities to authorise). pattern must be one of HTTPPolicy's.
func Guard(mux *http.ServeMux, secure bool, log *slog.Logger) func(pattern string, h http.Handler) {
	return func(pattern string, h http.Handler) {
		if _, ok := HTTPPolicy()[pattern]; !ok {
			panic(fmt.Sprintf("mcp: pattern %q is not in HTTPPolicy", pattern))
		}
		if secure {
			h = Authorize(pattern, h, log)
		}
		mux.Handle(pattern, h)
	}
}
