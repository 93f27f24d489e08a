package platform_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// TestDirectCallerRateLimited (H4): a tenant's program calling its cell
// directly with a router-minted token passes no router's limits; the
// cell's own per-tenant limiter (cells.Config.DirectRateLimit, `cellplane
// cell --direct-bytes-rate`) refuses its flood of large appends with
// RESOURCE_EXHAUSTED RATE_LIMITED, RetryInfo and a QuotaFailure on the
// tenant, while the same tenant's appends through the router and another
// tenant's direct appends pass.
func TestDirectCallerRateLimited(t *testing.T) {
	p := startTokenPlatform(t, func(c *platform.Config) {
		c.Node.DirectRateLimit.BytesRate, c.Node.DirectRateLimit.BytesBurst = 1024, 512<<10 // 512 KiB, then 1 KiB/s
	})
	ctx := testutil.Context(t, 2*time.Minute)
	p.tenant(t, ctx, "acme", cellA)
	p.tenant(t, ctx, "other", cellA)
	router := contextv1.NewContextServiceClient(p.RouterConn())
	for _, tn := range []string{"acme", "other"} {
		testutil.Eventually(t, 30*time.Second, func() error {
			_, err := router.CreateContext(p.asTenant(ctx, tn, tn), &contextv1.CreateContextRequest{ContextId: "c", RequestId: "create-c"})
			return err
		})
	}
	direct := contextv1.NewContextServiceClient(p.noCertConn(t, p.nodeAddr(cellA)))
	tokenCtx := func(tn string) context.Context {
		var tok string
		testutil.Eventually(t, 30*time.Second, func() error {
			l, err := p.lookup(ctx, tn)
			tok = l.GetToken()
			return err
		})
		return metadata.AppendToOutgoingContext(ctx, tenantmd.TokenKey, tok)
	}
	acmeDirect, otherDirect := tokenCtx("acme"), tokenCtx("other")
	big := []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: strings.Repeat("x", 128<<10)}}}
	appendBig := func(ctx context.Context, cs contextv1.ContextServiceClient) error {
		_, err := cs.Append(ctx, &contextv1.AppendRequest{ContextId: "c", Entries: big})
		return err
	}

	// The direct flood: 3 of 128 KiB within the 512 KiB burst, then
	// refusals.
	var passed, limited int
	for range 8 {
		err := appendBig(acmeDirect, direct)
		if err == nil {
			passed++
			continue
		}
		limited++
		var ce *cperr.Error
		if !errors.As(rpcerr.FromStatus(err), &ce) || ce.Reason != cperr.RateLimited || ce.RetryAfter <= 0 || ce.Metadata[cperr.MetaQuota] != "bytes_per_second" {
			t.Fatalf("direct flood: %v, want RATE_LIMITED bytes_per_second with RetryInfo", err)
		}
		var qf *errdetails.QuotaFailure
		for _, d := range status.Convert(err).Details() {
			if q, ok := d.(*errdetails.QuotaFailure); ok {
				qf = q
			}
		}
		if qf == nil || qf.GetViolations()[0].GetSubject() != "tenant:acme" {
			t.Fatalf("direct flood refusal details %v, want a QuotaFailure on tenant:acme", status.Convert(err).Details())
		}
	}
	if passed < 3 || limited < 4 {
		t.Fatalf("direct flood: %d passed, %d limited; want about 3 and 5", passed, limited)
	}
	// Meanwhile: acme through the router, and another tenant directly.
	for i := range 6 {
		if err := appendBig(p.asTenant(ctx, "acme", "acme"), router); err != nil {
			t.Fatalf("acme's append %d through the router: %v", i, err)
		}
	}
	for i := range 3 {
		if err := appendBig(otherDirect, direct); err != nil {
			t.Fatalf("other's direct append %d: %v", i, err)
		}
	}
	t.Logf("direct flood: %d of 8 × 128 KiB appends passed, %d limited", passed, limited)
}
