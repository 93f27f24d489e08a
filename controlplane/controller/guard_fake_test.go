package controller_test

import (
	"slices"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// fakeDeleteGuard is a real cell's delete guard (cells/store) for the fake
// cells: the tenant's role there must be one the request allows and its
// epoch the expected one; an unguarded request must say force.
func fakeDeleteGuard(role cellv1.Role, epoch uint64, req *cellv1.DeleteTenantRequest) error {
	if req.GetExpectedEpoch() == 0 && len(req.GetAllowedRoles()) == 0 && !req.GetForce() {
		return cperr.Invalid(cperr.FieldViolation{Field: "expected_epoch", Description: "a delete needs a guard or force"})
	}
	if roles := req.GetAllowedRoles(); len(roles) > 0 && !slices.Contains(roles, role) {
		return cperr.New(cperr.WrongCell, "delete refused: %s here", role)
	}
	if e := req.GetExpectedEpoch(); e != 0 && e != epoch {
		return cperr.New(cperr.StaleEpoch, "delete refused: epoch %d here, not %d", epoch, e)
	}
	return nil
}
