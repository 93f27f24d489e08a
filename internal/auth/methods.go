package auth

import (
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// MethodScopes is the scope each tenant-facing gRPC method needs, by full
// method name: the router checks it on every call it authenticated, and a
// cell refuses a tenant-token call (the smart client's direct path) to a
// method needing a scope outside DefaultScopes (tenant tokens are minted
// only for credentials holding all of DefaultScopes).
//
// Every ContextService method must have a row (a test checks): a new RPC
// without one fails the test rather than being open or closed by accident.
// A method missing at run time is refused (RequiredScope's ok is false).
var MethodScopes = map[string]Scope{
	contextv1.ContextService_CreateContext_FullMethodName:  ScopeContextsWrite,
	contextv1.ContextService_GetContext_FullMethodName:     ScopeContextsRead,
	contextv1.ContextService_ListContexts_FullMethodName:   ScopeContextsRead,
	contextv1.ContextService_DeleteContext_FullMethodName:  ScopeContextsWrite,
	contextv1.ContextService_Append_FullMethodName:         ScopeContextsWrite,
	contextv1.ContextService_Read_FullMethodName:           ScopeContextsRead,
	contextv1.ContextService_Watch_FullMethodName:          ScopeContextsRead,
	contextv1.ContextService_PutMemory_FullMethodName:      ScopeMemoryWrite,
	contextv1.ContextService_GetMemory_FullMethodName:      ScopeMemoryRead,
	contextv1.ContextService_DeleteMemory_FullMethodName:   ScopeMemoryWrite,
	contextv1.ContextService_ListMemory_FullMethodName:     ScopeMemoryRead,
	contextv1.ContextService_Fork_FullMethodName:           ScopeContextsWrite,
	contextv1.ContextService_Compact_FullMethodName:        ScopeContextsWrite,
	contextv1.ContextService_ReadAudit_FullMethodName:      ScopeAdmin,
	contextv1.ContextService_Erase_FullMethodName:          ScopeAdmin,
	contextv1.ContextService_SearchContexts_FullMethodName: ScopeContextsRead,
	contextv1.ContextService_SearchMemory_FullMethodName:   ScopeMemoryRead,
	// WatchChanges: memory changes are sent only to callers holding
	// memory:read too (the cell filters them).
	contextv1.ContextService_WatchChanges_FullMethodName: ScopeContextsRead,
}

// RequiredScope returns the scope method needs; ok is false for a method
// not in MethodScopes.
func RequiredScope(method string) (s Scope, ok bool) {
	s, ok = MethodScopes[method]
	return s, ok
}

// CheckScope is the one refusal: nil when id holds the scope need, else
// PERMISSION_DENIED naming what was missing (metadata "scope").
func CheckScope(id Identity, what string, need Scope) error {
	if id.Scopes.Has(need) {
		return nil
	}
	return insufficientScope(what, need)
}
