package controller_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"google.golang.org/protobuf/types/known/durationpb"
)

// testRealQuota: UpdateTenant lowers a tenant's max_bytes below what the
// next write needs; the call returns once the owner cell (and its
// standby, through the change log) has the new quota, and the write is
// refused QUOTA_EXCEEDED with nothing applied. Raising it back (0: the
// cell's default) lets the same write through.
func testRealQuota(t *testing.T, e *realEnv) {
	const id, owner, standby = "quotee", "us-b", "eu-a"
	e.create(t, id, owner, "eu")
	api := e.api(t)
	ctx := testutil.Context(t, 30*time.Second)
	mem := e.memory(t, owner)
	tctx := tenantmd.Outgoing(ctx, id, 0)
	value := []byte(strings.Repeat("x", 1024))
	if _, err := mem.PutMemory(tctx, &contextv1.PutMemoryRequest{Key: "first", Value: value, RequestId: id + "-first"}); err != nil {
		t.Fatalf("put under the default quota: %v", err)
	}
	info, _, err := e.cells.GetTenant(ctx, owner, id)
	if err != nil {
		t.Fatal(err)
	}
	quota := info.GetUsage().GetBytes() + 100 // room for less than the next value

	resp, err := api.UpdateTenant(ctx, &cpv1.UpdateTenantRequest{Id: id, Limits: &cpv1.TenantLimits{MaxBytes: quota}})
	if err != nil {
		t.Fatalf("update max_bytes: %v", err)
	}
	if resp.GetTenant().GetQuotaPending() || resp.GetTenant().GetLimits().GetMaxBytes() != quota {
		t.Fatalf("update answered %v: want max_bytes %d, not pending", resp.GetTenant(), quota)
	}
	// Returned: the owner enforces it already (no waiting here).
	if info, _, err := e.cells.GetTenant(ctx, owner, id); err != nil || info.GetQuota().GetMaxBytes() != quota {
		t.Fatalf("owner %s quota %v (%v), want max_bytes %d", owner, info.GetQuota(), err, quota)
	}
	_, err = mem.PutMemory(tctx, &contextv1.PutMemoryRequest{Key: "second", Value: value, RequestId: id + "-second"})
	if !errors.Is(rpcerr.FromStatus(err), cperr.ErrQuotaExceeded) {
		t.Fatalf("put over the new quota: %v, want QUOTA_EXCEEDED", err)
	}
	if _, err := mem.GetMemory(tctx, &contextv1.GetMemoryRequest{Key: "second"}); !errors.Is(rpcerr.FromStatus(err), cperr.ErrKeyNotFound) {
		t.Fatalf("get the refused write: %v, want KEY_NOT_FOUND (nothing applied)", err)
	}
	// The standby follows the owner's log: a promotion keeps the quota.
	testutil.Eventually(t, 10*time.Second, func() error {
		info, _, err := e.cells.GetTenant(ctx, standby, id)
		if err != nil {
			return err
		}
		if info.GetQuota().GetMaxBytes() != quota {
			return fmt.Errorf("standby %s quota %v, want max_bytes %d", standby, info.GetQuota(), quota)
		}
		return nil
	})

	if _, err := api.UpdateTenant(ctx, &cpv1.UpdateTenantRequest{Id: id, Limits: &cpv1.TenantLimits{}}); err != nil {
		t.Fatalf("update max_bytes back to the default: %v", err)
	}
	if _, err := mem.PutMemory(tctx, &contextv1.PutMemoryRequest{Key: "second", Value: value, RequestId: id + "-second-again"}); err != nil {
		t.Fatalf("put under the default quota again: %v", err)
	}
}

// testRealRetention: UpdateTenant's default_retention reaches the owner
// cell (and its standby through the change log) as the tenant's own
// default retention: a memory key written without an expiry gets one.
func testRealRetention(t *testing.T, e *realEnv) {
	const id, owner, standby = "retainee", "us-b", "eu-a"
	e.create(t, id, owner, "eu")
	api := e.api(t)
	ctx := testutil.Context(t, 30*time.Second)
	if _, err := api.UpdateTenant(ctx, &cpv1.UpdateTenantRequest{Id: id, Limits: &cpv1.TenantLimits{DefaultRetention: durationpb.New(time.Hour)}}); err != nil {
		t.Fatalf("update default_retention: %v", err)
	}
	for _, cell := range []string{owner, standby} {
		testutil.Eventually(t, 10*time.Second, func() error {
			info, _, err := e.cells.GetTenant(ctx, cell, id)
			if err != nil {
				return err
			}
			if got := info.GetQuota().GetDefaultRetentionNanos(); got != int64(time.Hour) {
				return fmt.Errorf("cell %s default retention %v", cell, time.Duration(got))
			}
			return nil
		})
	}
	put, err := e.memory(t, owner).PutMemory(tenantmd.Outgoing(ctx, id, 0), &contextv1.PutMemoryRequest{Key: "k", Value: []byte("v"), RequestId: id + "-k"})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(put.GetExpireTime().AsTime()); d <= 0 || d > time.Hour {
		t.Fatalf("put under a 1h default retention expires at %v", put.GetExpireTime())
	}
}
