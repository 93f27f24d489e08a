package controller

import (
	"errors"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// Guarded deletes (docs/reliability.md "Guarded deletes (M1)"): every
// delete the controller sends a cell says which copy it means to remove,
// as the role(s) and epoch the tenant has there. The cell checks them in
// its state machine, atomically with the delete, so a controller that
// acts late (deposed and paused, or a stray retry) cannot remove a copy
// that has changed since it decided: say the tenant moved back to that
// cell as OWNER at a higher epoch.

// guardedDelete is a delete of tenant on a cell that holds it as one of
// roles (none: any role) at epoch (0: any epoch).
func guardedDelete(tenant, requestID string, epoch uint64, roles ...cellv1.Role) *cellv1.DeleteTenantRequest {
	return &cellv1.DeleteTenantRequest{Tenant: tenant, RequestId: requestID, ExpectedEpoch: epoch, AllowedRoles: roles}
}

// isDeleteRefused reports whether err is a guarded delete's refusal: the
// cell's copy is not the one the delete meant (WRONG_CELL: another role;
// STALE_EPOCH: another epoch), and nothing was deleted.
func isDeleteRefused(err error) bool {
	return errors.Is(err, cperr.ErrWrongCell) || errors.Is(err, cperr.ErrStaleEpoch)
}
