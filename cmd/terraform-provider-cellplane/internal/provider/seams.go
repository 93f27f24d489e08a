package provider

import (
	"context"
	"fmt"

	"github.com/cellplane/cellplane/internal/rpcerr"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The control-plane RPCs that change or delete what exists. Each seam
// below is the one place that calls its RPC; a constant false would turn
// the operation into a plan-time refusal again (errNeedsRPC), for a
// control plane without the RPC.
const (
	haveUpdateRegion = true // UpdateRegion: a region's description in place
	haveDeleteRegion = true // DeleteRegion: destroy of an empty region
	haveUpdateTenant = true // UpdateTenant: a tenant's limits and deletion protection in place
)

// errNeedsRPC says that an operation needs an RPC the control plane lacks.
func errNeedsRPC(what, rpc string) error {
	return fmt.Errorf("%s needs the control plane's %s RPC, which this version of cellplane does not have yet; "+
		"to stop managing the object without deleting it, use a removed block with lifecycle { destroy = false }", what, rpc)
}

// updateRegion sets a region's description (UpdateRegion).
func updateRegion(ctx context.Context, api cpv1.ControlPlaneServiceClient, name, description string) error {
	if !haveUpdateRegion || api == nil {
		return errNeedsRPC(fmt.Sprintf("changing the description of region %q", name), "UpdateRegion")
	}
	_, err := api.UpdateRegion(ctx, &cpv1.UpdateRegionRequest{Name: name, Description: description})
	return rpcerr.FromStatus(err)
}

// deleteRegion deletes an empty region (DeleteRegion).
func deleteRegion(ctx context.Context, api cpv1.ControlPlaneServiceClient, name string) error {
	if !haveDeleteRegion || api == nil {
		return errNeedsRPC(fmt.Sprintf("destroying region %q", name), "DeleteRegion")
	}
	_, err := api.DeleteRegion(ctx, &cpv1.DeleteRegionRequest{Name: name})
	return rpcerr.FromStatus(err)
}

// updateTenantLimits sets a tenant's limits (UpdateTenant).
func updateTenantLimits(ctx context.Context, api cpv1.ControlPlaneServiceClient, id string, limits *cpv1.TenantLimits) error {
	if !haveUpdateTenant || api == nil {
		return errNeedsRPC(fmt.Sprintf("changing the limits of tenant %q", id), "UpdateTenant")
	}
	_, err := api.UpdateTenant(ctx, &cpv1.UpdateTenantRequest{Id: id, Limits: limits})
	return rpcerr.FromStatus(err)
}

// updateTenantProtection turns a tenant's deletion protection on or off
// (UpdateTenant with deletion_protection only), over version (its
// expected_version; 0: unguarded).
func updateTenantProtection(ctx context.Context, api cpv1.ControlPlaneServiceClient, id string, on bool, version uint64) (*cpv1.UpdateTenantResponse, error) {
	if !haveUpdateTenant || api == nil {
		return nil, errNeedsRPC(fmt.Sprintf("changing the deletion protection of tenant %q", id), "UpdateTenant")
	}
	return api.UpdateTenant(ctx, &cpv1.UpdateTenantRequest{Id: id, DeletionProtection: &on, ExpectedVersion: version})
}
