package catalog

import (
	"context"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Workflows: workflows/<id> holds a Workflow (a tenant create or delete
// the controller leader drives).

// NewWorkflow is an empty Workflow, for the generic helpers.
func NewWorkflow() *cpv1.Workflow { return &cpv1.Workflow{} }

// GetWorkflow reads workflows/<id>.
func GetWorkflow(ctx context.Context, st topo.Store, id string) (*cpv1.Workflow, topo.Version, error) {
	w := &cpv1.Workflow{}
	v, err := Get(ctx, st, topo.WorkflowKey(id), w)
	return w, v, err
}

// ListWorkflows lists every workflow, by id, at one revision.
func ListWorkflows(ctx context.Context, st topo.Store) ([]Record[*cpv1.Workflow], topo.Revision, error) {
	return ListRecords(ctx, st, topo.WorkflowsPrefix, topo.KindWorkflow, NewWorkflow)
}

// WorkflowEvent decodes a watch event that puts a workflow.
func WorkflowEvent(ev topo.Event) (Record[*cpv1.Workflow], bool, error) {
	return DecodePut(ev, topo.KindWorkflow, NewWorkflow)
}
