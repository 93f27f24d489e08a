package service

import (
	"context"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// vectorContexts returns the best limit entries for req.Vector, best
// first, filtered as req says and scoped to the caller.
func (s *ContextServer) vectorContexts(ctx context.Context, tenant string, epoch uint64, req *contextv1.SearchContextsRequest, limit int) ([]*contextv1.ContextHit, error) {
	return nil, status.Error(codes.Unimplemented, "vector search is not built yet")
}

// vectorMemory returns the best limit memory items for req.Vector.
func (s *ContextServer) vectorMemory(ctx context.Context, tenant string, epoch uint64, req *contextv1.SearchMemoryRequest, limit int) ([]*contextv1.MemoryHit, error) {
	return nil, status.Error(codes.Unimplemented, "vector search is not built yet")
}
