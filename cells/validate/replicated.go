package validate

import (
	"errors"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// ReplicatedCommand validates the command of a source's change event
// before a standby applies it (docs/security.md, "Replicated events"): the
// event's data operation goes through the validator its client request
// went through on the source, so a source cannot make a standby store what
// no client could have sent. The command's tenant and request id follow
// the id rule; a create_context names its (minted) context id; a role
// change is one a source logs (OWNER or FENCED, epoch ≥ 1, no source).
//
// Which operations an event may carry at all is the store's rule
// (cells/store); any other operation passes here. Field paths are
// prefixed with "command.".
func ReplicatedCommand(lim Limits, c *cellv1.Command) error {
	var v violations
	v.id("command.tenant", c.GetTenant(), lim.MaxIDLen)
	v.optionalID("command.request_id", c.GetRequestId(), lim.MaxRequestIDLen)
	var err error
	switch op := c.GetOp().(type) {
	case *cellv1.Command_CreateContext:
		v.id("command.create_context.context_id", op.CreateContext.GetContextId(), lim.MaxIDLen)
		err = CreateContext(lim, op.CreateContext)
	case *cellv1.Command_DeleteContext:
		err = DeleteContext(lim, op.DeleteContext)
	case *cellv1.Command_Append:
		err = Append(lim, op.Append)
	case *cellv1.Command_PutMemory:
		err = PutMemory(lim, op.PutMemory)
	case *cellv1.Command_DeleteMemory:
		err = DeleteMemory(lim, op.DeleteMemory)
	case *cellv1.Command_ForkContext:
		v.id("command.fork_context.new_context_id", op.ForkContext.GetNewContextId(), lim.MaxIDLen)
		err = Fork(lim, op.ForkContext)
	case *cellv1.Command_CompactContext:
		err = Compact(lim, op.CompactContext)
	case *cellv1.Command_EraseSubject:
		v.eraseOp(op.EraseSubject)
	case *cellv1.Command_SetTenant:
		s := op.SetTenant
		if r := s.GetRole(); r != cellv1.Role_ROLE_OWNER && r != cellv1.Role_ROLE_FENCED {
			v.add("command.set_tenant.role", "a source logs only OWNER and FENCED")
		}
		err = SetTenant(lim, &cellv1.SetTenantRequest{Tenant: c.GetTenant(), Role: s.GetRole(), Epoch: s.GetEpoch(),
			SourceCell: s.GetSourceCell(), Resume: s.GetResume()}) // tenant and request id: checked above
	}
	var ce *cperr.Error
	if errors.As(err, &ce) {
		for _, fv := range ce.Violations {
			if _, ok := c.GetOp().(*cellv1.Command_SetTenant); ok && fv.Field == "tenant" {
				continue // the command's, checked above
			}
			v.add("command."+opField(c)+"."+fv.Field, "%s", fv.Description)
		}
	} else if err != nil {
		return err
	}
	return v.err()
}

// opField names the command's operation (its oneof field).
func opField(c *cellv1.Command) string {
	if fd := c.ProtoReflect().WhichOneof(opOneof); fd != nil {
		return string(fd.Name())
	}
	return "op"
}

var opOneof = (&cellv1.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("op")
