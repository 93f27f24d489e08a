package service

import (
	"context"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// keywordContexts returns the best limit entries for req.Query, best
// first, filtered as req says and scoped to the caller.
func (s *ContextServer) keywordContexts(ctx context.Context, tenant string, epoch uint64, req *contextv1.SearchContextsRequest, limit int) ([]*contextv1.ContextHit, error) {
	return nil, status.Error(codes.Unimplemented, "keyword search is not built yet")
}

// keywordMemory returns the best limit memory items for req.Query.
func (s *ContextServer) keywordMemory(ctx context.Context, tenant string, epoch uint64, req *contextv1.SearchMemoryRequest, limit int) ([]*contextv1.MemoryHit, error) {
	return nil, status.Error(codes.Unimplemented, "keyword search is not built yet")
}
