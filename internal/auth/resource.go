package auth

import (
	"encoding/json"
	"net/http"
)

// ProtectedResource is the RFC 9728 protected-resource metadata of one
// tenant's MCP endpoint: the URL a token's audience must name, and the
// authorization servers that issue such tokens. The router's MCP proxy and
// the cells' MCP workers serve the same document.
type ProtectedResource struct {
	Resource               string   `json:"resource"`
	AuthorizationServers   []string `json:"authorization_servers,omitempty"`
	BearerMethodsSupported []string `json:"bearer_methods_supported"`
	ScopesSupported        []string `json:"scopes_supported,omitempty"`
	ResourceName           string   `json:"resource_name,omitempty"`
}

// NewProtectedResource is the document for tenant's endpoint at resource
// (its public URL, never derived from a request's Host header). It lists
// every scope (scopes_supported): what a client may ask an authorization
// server for.
func NewProtectedResource(resource, tenant string, servers []string) ProtectedResource {
	return ProtectedResource{
		Resource:               resource,
		AuthorizationServers:   servers,
		BearerMethodsSupported: []string{"header"},
		ScopesSupported:        AllScopeStrings(),
		ResourceName:           "cellplane MCP (" + tenant + ")",
	}
}

// WriteProtectedResource answers with doc: a public document that
// browser-based clients read, cached for five minutes.
func WriteProtectedResource(w http.ResponseWriter, doc ProtectedResource) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Access-Control-Allow-Origin", "*")
	w.Header().Set("Cache-Control", "max-age=300")
	w.WriteHeader(http.StatusOK)
	_ = json.NewEncoder(w).Encode(doc)
}
