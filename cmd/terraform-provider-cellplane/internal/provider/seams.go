package provider

import (
	"context"
	"fmt"

	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The control-plane RPCs this provider needs that ControlPlaneService does
// not have yet (issue 15 adds them). Each seam below is the one place that
// calls the RPC: when it lands, its body calls it and the constant turns
// true, which also lifts the plan-time refusal.
const (
	haveUpdateRegion = false // UpdateRegion: a region's description in place
	haveDeleteRegion = false // DeleteRegion: destroy of a region
	haveUpdateTenant = false // UpdateTenant: a tenant's limits in place
)

// errNeedsRPC says that an operation needs an RPC the control plane lacks.
func errNeedsRPC(what, rpc string) error {
	return fmt.Errorf("%s needs the control plane's %s RPC, which this version of cellplane does not have yet; "+
		"to stop managing the object without deleting it, use a removed block with lifecycle { destroy = false }", what, rpc)
}

// updateRegion sets a region's description (UpdateRegion).
func updateRegion(_ context.Context, _ cpv1.ControlPlaneServiceClient, name, _ string) error {
	return errNeedsRPC(fmt.Sprintf("changing the description of region %q", name), "UpdateRegion")
}

// deleteRegion deletes an empty region (DeleteRegion).
func deleteRegion(_ context.Context, _ cpv1.ControlPlaneServiceClient, name string) error {
	return errNeedsRPC(fmt.Sprintf("destroying region %q", name), "DeleteRegion")
}

// updateTenantLimits sets a tenant's limits (UpdateTenant).
func updateTenantLimits(_ context.Context, _ cpv1.ControlPlaneServiceClient, id string, _ *cpv1.TenantLimits) error {
	return errNeedsRPC(fmt.Sprintf("changing the limits of tenant %q", id), "UpdateTenant")
}
