package router_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestByteRateLimitIsolation (S25 with bytes, H4): a tenant flooding large
// appends, well within its request rate, is refused RESOURCE_EXHAUSTED
// RATE_LIMITED with RetryInfo and a QuotaFailure naming it once it sends
// more bytes than its byte bucket allows, while another tenant's appends,
// a large one included, all pass.
func TestByteRateLimitIsolation(t *testing.T) {
	p := newPlatform(t,
		&cpv1.CreateTenantRequest{Id: "flood", Limits: &cpv1.TenantLimits{Rate: 1e6, Burst: 1e6}},
		&cpv1.CreateTenantRequest{Id: "quiet", Limits: &cpv1.TenantLimits{Rate: 1e6, Burst: 1e6}})
	r := p.startRouterWith(t, func(c *router.Config) {
		c.RateLimit.BytesRate, c.RateLimit.BytesBurst = 256<<10, 512<<10 // 256 KiB/s, 512 KiB
	})
	conn := dial(t, r.GRPCAddr())
	cs := contextv1.NewContextServiceClient(conn)
	ctx := testutil.Context(t, 60*time.Second)
	fctx, qctx := p.as(ctx, "flood"), p.as(ctx, "quiet")
	// The new router serves once its view of the keys is synced.
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := cs.CreateContext(fctx, &contextv1.CreateContextRequest{ContextId: "f", RequestId: "f"})
		return err
	})
	if _, err := cs.CreateContext(qctx, &contextv1.CreateContextRequest{ContextId: "q"}); err != nil {
		t.Fatal(err)
	}
	// Binary content: what is measured is the router's byte bucket, not
	// the cell's token counting of 128 KiB of text (slow under -race, so
	// slow that the bucket refilled between appends in CI).
	big := &contextv1.Entry{Role: "user", Content: &contextv1.Entry_Data{Data: bytes.Repeat([]byte("x"), 128<<10)}}

	// The flood: 128 KiB appends back to back, 4 MiB in all; the bucket
	// passes about its burst plus what accrues meanwhile.
	var passed, limited int
	for range 32 {
		_, err := cs.Append(fctx, &contextv1.AppendRequest{ContextId: "f", Entries: []*contextv1.Entry{big}})
		if err == nil {
			passed++
			continue
		}
		if status.Code(err) != codes.ResourceExhausted {
			t.Fatalf("flood append: %v, want RESOURCE_EXHAUSTED", err)
		}
		limited++
		var ce *cperr.Error
		if !errors.As(rpcerr.FromStatus(err), &ce) || ce.Reason != cperr.RateLimited || ce.RetryAfter <= 0 || ce.Metadata[cperr.MetaQuota] != "bytes_per_second" {
			t.Fatalf("flood refusal %v, want RATE_LIMITED bytes_per_second with RetryInfo", err)
		}
		var qf *errdetails.QuotaFailure
		for _, d := range status.Convert(err).Details() {
			if q, ok := d.(*errdetails.QuotaFailure); ok {
				qf = q
			}
		}
		if qf == nil || qf.GetViolations()[0].GetSubject() != "tenant:flood" {
			t.Fatalf("flood refusal details %v, want a QuotaFailure on tenant:flood", status.Convert(err).Details())
		}
		// Meanwhile the quiet tenant is served, a large append included.
		if _, err := cs.Append(qctx, &contextv1.AppendRequest{ContextId: "q", Entries: []*contextv1.Entry{
			{Role: "user", Content: &contextv1.Entry_Text{Text: "hello"}}}}); err != nil {
			t.Fatalf("quiet append during the flood: %v", err)
		}
	}
	if limited == 0 || passed == 0 {
		t.Fatalf("flood: %d passed, %d limited; want both", passed, limited)
	}
	if _, err := cs.Append(qctx, &contextv1.AppendRequest{ContextId: "q", Entries: []*contextv1.Entry{big}}); err != nil {
		t.Fatalf("quiet large append: %v", err)
	}
	t.Logf("flood: %d of 32 × 128 KiB appends passed, %d limited", passed, limited)
}

// TestTenantByteRateOverride (H4): a tenant's own byte rate and burst
// (TenantLimits.bytes_rate/bytes_burst, `cellctl tenant create
// --bytes-rate`) reach the router through the placement and bound its
// requests' bytes, also with the router's default byte limit off, while a
// tenant without its own limits is not bounded.
func TestTenantByteRateOverride(t *testing.T) {
	p := newPlatform(t,
		&cpv1.CreateTenantRequest{Id: "capped", Limits: &cpv1.TenantLimits{Rate: 1e6, Burst: 1e6, BytesRate: 1 << 10, BytesBurst: 300 << 10}},
		&cpv1.CreateTenantRequest{Id: "free", Limits: &cpv1.TenantLimits{Rate: 1e6, Burst: 1e6}})
	r := p.startRouterWith(t, func(c *router.Config) {
		c.RateLimit.BytesRate, c.RateLimit.BytesBurst = 0, 0 // the default: off
	})
	cs := contextv1.NewContextServiceClient(dial(t, r.GRPCAddr()))
	ctx := testutil.Context(t, 60*time.Second)
	cctx, fctx := p.as(ctx, "capped"), p.as(ctx, "free")
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := cs.CreateContext(cctx, &contextv1.CreateContextRequest{ContextId: "c", RequestId: "c"})
		return err
	})
	if _, err := cs.CreateContext(fctx, &contextv1.CreateContextRequest{ContextId: "f"}); err != nil {
		t.Fatal(err)
	}
	// Binary content: what is measured is the router's byte bucket, not
	// the cell's token counting of 128 KiB of text (slow under -race, so
	// slow that the bucket refilled between appends in CI).
	big := &contextv1.Entry{Role: "user", Content: &contextv1.Entry_Data{Data: bytes.Repeat([]byte("x"), 128<<10)}}
	// 300 KiB of burst at 1 KiB/s: two 128 KiB appends pass, the third
	// is refused with the tenant's own limits in the message.
	for i := range 2 {
		if _, err := cs.Append(cctx, &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{big}}); err != nil {
			t.Fatalf("capped append %d within its burst: %v", i, err)
		}
	}
	_, err := cs.Append(cctx, &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{big}})
	var ce *cperr.Error
	if !errors.As(rpcerr.FromStatus(err), &ce) || ce.Reason != cperr.RateLimited || ce.Metadata[cperr.MetaQuota] != "bytes_per_second" ||
		ce.Metadata[cperr.MetaTenant] != "capped" || !strings.Contains(ce.Error(), "1024 bytes/s (burst 307200)") {
		t.Fatalf("capped append past its burst: %v, want RATE_LIMITED bytes_per_second at the tenant's 1024 B/s", err)
	}
	for i := range 8 {
		if _, err := cs.Append(fctx, &contextv1.AppendRequest{ContextId: "f", Entries: []*contextv1.Entry{big}}); err != nil {
			t.Fatalf("free append %d: %v (no byte limit of its own, the default off)", i, err)
		}
	}
}
