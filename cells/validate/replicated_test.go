package validate

import (
	"strings"
	"testing"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func TestReplicatedCommand(t *testing.T) {
	lim := DefaultLimits()
	cmd := func(tenant string, op any) *cellv1.Command {
		c := &cellv1.Command{Tenant: tenant}
		switch o := op.(type) {
		case *contextv1.CreateContextRequest:
			c.Op = &cellv1.Command_CreateContext{CreateContext: o}
		case *contextv1.AppendRequest:
			c.Op = &cellv1.Command_Append{Append: o}
		case *contextv1.PutMemoryRequest:
			c.Op = &cellv1.Command_PutMemory{PutMemory: o}
		case *contextv1.DeleteMemoryRequest:
			c.Op = &cellv1.Command_DeleteMemory{DeleteMemory: o}
		case *contextv1.DeleteContextRequest:
			c.Op = &cellv1.Command_DeleteContext{DeleteContext: o}
		case *cellv1.SetTenantOp:
			c.Op = &cellv1.Command_SetTenant{SetTenant: o}
		case *cellv1.ImportTenantOp:
			c.Op = &cellv1.Command_ImportTenant{ImportTenant: o}
		}
		return c
	}
	tests := []struct {
		name   string
		c      *cellv1.Command
		fields []string
	}{
		{"create ok", cmd("t", &contextv1.CreateContextRequest{ContextId: "c", RequestId: "r"}), nil},
		{"create without id", cmd("t", &contextv1.CreateContextRequest{}), []string{"command.create_context.context_id"}},
		{"append ok", cmd("t", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{text("user", "x")}}), nil},
		{"append bad entry", cmd("t", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{text("", strings.Repeat("x", lim.MaxEntryContentBytes+1))}}),
			[]string{"command.append.entries[0].role", "command.append.entries[0].content"}},
		{"put ok", cmd("t", &contextv1.PutMemoryRequest{Key: "k", Value: []byte("v")}), nil},
		{"put nul key", cmd("t", &contextv1.PutMemoryRequest{Key: "k\x00"}), []string{"command.put_memory.key"}},
		{"delete memory ok", cmd("t", &contextv1.DeleteMemoryRequest{Key: "k"}), nil},
		{"delete context bad", cmd("t", &contextv1.DeleteContextRequest{ContextId: "a/b"}), []string{"command.delete_context.context_id"}},
		{"bad tenant", cmd("a\x00b", &contextv1.DeleteMemoryRequest{Key: "k"}), []string{"command.tenant"}},
		{"bad request id", &cellv1.Command{Tenant: "t", RequestId: "r r", Op: &cellv1.Command_DeleteMemory{DeleteMemory: &contextv1.DeleteMemoryRequest{Key: "k"}}}, []string{"command.request_id"}},
		{"bad op request id", cmd("t", &contextv1.DeleteMemoryRequest{Key: "k", RequestId: "r r"}), []string{"command.delete_memory.request_id"}},
		{"fence ok", cmd("t", &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_FENCED, Epoch: 2}), nil},
		{"owner ok", cmd("t", &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_OWNER, Epoch: 3}), nil},
		{"standby is never logged", cmd("t", &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_STANDBY, Epoch: 3, SourceCell: "x"}), []string{"command.set_tenant.role"}},
		{"owner epoch 0", cmd("t", &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_OWNER}), []string{"command.set_tenant.epoch"}},
		{"other ops are the store's rule", cmd("t", &cellv1.ImportTenantOp{}), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { checkFields(t, ReplicatedCommand(lim, tt.c), tt.fields...) })
	}
}
