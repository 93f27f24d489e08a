package catalog

import (
	"context"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The automatic promotion policy: policies/failover holds a FailoverPolicy
// (absent: the controller's flags apply).

// GetFailoverPolicy reads policies/failover (topo.ErrNotFound: none is
// stored).
func GetFailoverPolicy(ctx context.Context, st topo.Store) (*cpv1.FailoverPolicy, topo.Version, error) {
	p := &cpv1.FailoverPolicy{}
	v, err := Get(ctx, st, topo.FailoverPolicyKey, p)
	return p, v, err
}
