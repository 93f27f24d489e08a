package cells

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/ratelimit"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/tenanttoken"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// TestDirectRateLimit (H4): calls authorised by a tenant token (direct
// callers, past every router) are charged to their tenant's request and
// byte buckets at the cell: a flood of large appends is refused with
// RATE_LIMITED, RetryInfo and the tenant named, nothing of it reaching the
// handler, while the same tenant's calls through a router (a router's
// certificate) and another tenant's token calls pass.
func TestDirectRateLimit(t *testing.T) {
	az, ca, key := tokenAuthz(t)
	cfg := DefaultDirectRateLimit()
	cfg.DefaultRate, cfg.DefaultBurst = 1e6, 1e6
	cfg.BytesRate, cfg.BytesBurst = 1, 64<<10 // 64 KiB, then 1 B/s
	az.limit = ratelimit.New(cfg)
	now := time.Now()
	acme := mint(t, key, tenanttoken.Claims{Tenant: "acme", Cell: "c1", Epoch: 3, Audience: "test"}, now)
	other := mint(t, key, tenanttoken.Claims{Tenant: "other", Cell: "c1", Epoch: 1, Audience: "test"}, now)
	router := pki.RouterIdentity("test", "r1")
	big := &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: strings.Repeat("x", 16<<10)}}}}
	info := &grpc.UnaryServerInfo{FullMethod: "/cellplane.context.v1.ContextService/Append"}
	handled := 0
	h := func(context.Context, any) (any, error) { handled++; return &contextv1.AppendResponse{}, nil }
	call := func(ctx context.Context) error {
		_, err := az.Unary(ctx, big, info, h)
		return err
	}

	// The direct flood: about 64 KiB pass, then refusals.
	var passed, limited int
	for range 10 {
		err := call(callCtx(t, ca, nil, tenantmd.TokenKey, acme))
		if err == nil {
			passed++
			continue
		}
		limited++
		var ce *cperr.Error
		if !errors.As(err, &ce) || ce.Reason != cperr.RateLimited || ce.RetryAfter <= 0 ||
			ce.Metadata[cperr.MetaTenant] != "acme" || ce.Metadata[cperr.MetaQuota] != "bytes_per_second" {
			t.Fatalf("direct flood refusal: %v, want RATE_LIMITED bytes_per_second for acme with a retry delay", err)
		}
	}
	if passed != 3 || limited != 7 || handled != 3 {
		t.Fatalf("direct flood: %d passed, %d limited, %d handled; want 3, 7, 3 (64 KiB of 16 KiB+ appends)", passed, limited, handled)
	}
	// The same tenant through a router, and another tenant directly, pass.
	for i := range 10 {
		if err := call(callCtx(t, ca, &router, tenantmd.TenantKey, "acme")); err != nil {
			t.Fatalf("router-forwarded call %d: %v", i, err)
		}
	}
	for i := range 3 {
		if err := call(callCtx(t, ca, nil, tenantmd.TokenKey, other)); err != nil {
			t.Fatalf("another tenant's direct call %d: %v", i, err)
		}
	}

	// The request bucket: two calls of burst, then RATE_LIMITED.
	cfg.DefaultRate, cfg.DefaultBurst, cfg.BytesRate = 0.001, 2, 0
	az.limit = ratelimit.New(cfg)
	for i := range 2 {
		if err := call(callCtx(t, ca, nil, tenantmd.TokenKey, acme)); err != nil {
			t.Fatalf("direct call %d within the request burst: %v", i, err)
		}
	}
	err := call(callCtx(t, ca, nil, tenantmd.TokenKey, acme))
	var ce *cperr.Error
	if !errors.As(err, &ce) || ce.Reason != cperr.RateLimited || ce.Metadata[cperr.MetaQuota] != "requests_per_second" {
		t.Fatalf("direct call past the request burst: %v, want RATE_LIMITED requests_per_second", err)
	}
	if err := call(callCtx(t, ca, &router, tenantmd.TenantKey, "acme")); err != nil {
		t.Fatalf("router-forwarded call past the direct burst: %v", err)
	}
}
