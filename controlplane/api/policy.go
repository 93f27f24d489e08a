package api

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Bounds of a stored failover policy.
const (
	// minUnhealthyFor: shorter would promote on a leader election.
	minUnhealthyFor = time.Second
	// maxPolicyRegions bounds the policy's region list.
	maxPolicyRegions = 1000
)

// GetFailoverPolicy implements ControlPlaneService: the stored policy, or
// (stored false) this replica's flag defaults.
func (s *Server) GetFailoverPolicy(ctx context.Context, _ *cpv1.GetFailoverPolicyRequest) (*cpv1.GetFailoverPolicyResponse, error) {
	p, v, err := catalog.GetFailoverPolicy(ctx, s.st)
	switch {
	case errors.Is(err, topo.ErrNotFound):
		def := s.cfg.FailoverPolicyDefaults
		if def == nil {
			def = &cpv1.FailoverPolicy{}
		}
		return &cpv1.GetFailoverPolicyResponse{Policy: def}, nil
	case err != nil:
		return nil, err
	}
	return &cpv1.GetFailoverPolicyResponse{Policy: p, Stored: true, Version: uint64(v)}, nil
}

// SetFailoverPolicy implements ControlPlaneService: one guarded write of
// policies/failover.
func (s *Server) SetFailoverPolicy(ctx context.Context, req *cpv1.SetFailoverPolicyRequest) (*cpv1.SetFailoverPolicyResponse, error) {
	p := req.GetPolicy()
	if p == nil {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "policy", Description: "is required"})
	}
	var vs []cperr.FieldViolation
	if d := p.GetUnhealthyFor(); d != nil && (!d.IsValid() || (d.AsDuration() != 0 && d.AsDuration() < minUnhealthyFor)) {
		vs = append(vs, cperr.FieldViolation{Field: "policy.unhealthy_for", Description: fmt.Sprintf("0 (the leader's default) or at least %v", minUnhealthyFor)})
	}
	if len(p.GetRegions()) > maxPolicyRegions {
		vs = append(vs, cperr.FieldViolation{Field: "policy.regions", Description: fmt.Sprintf("at most %d", maxPolicyRegions)})
	}
	for i, r := range p.GetRegions() {
		if err := s.checkID(fmt.Sprintf("policy.regions[%d]", i), r); err != nil {
			var ce *cperr.Error
			if errors.As(err, &ce) {
				vs = append(vs, ce.Violations...)
			}
		}
	}
	if len(vs) > 0 {
		return nil, cperr.Invalid(vs...)
	}
	next := proto.Clone(p).(*cpv1.FailoverPolicy)
	next.UpdateTime = timestamppb.Now()
	_, cur, err := catalog.GetFailoverPolicy(ctx, s.st)
	if err != nil && !errors.Is(err, topo.ErrNotFound) {
		return nil, err
	}
	if ev := req.GetExpectedVersion(); ev != 0 && topo.Version(ev) != cur {
		return nil, cperr.New(cperr.RevisionMismatch, "the failover policy is at version %d, not %d: read it again", cur, ev).
			With(cperr.MetaRevision, fmt.Sprint(cur))
	}
	if _, err := s.st.Txn(ctx, []topo.Cond{topo.IfVersion(topo.FailoverPolicyKey, cur)}, []topo.Op{topo.Put(topo.FailoverPolicyKey, catalog.Encode(next))}); err != nil {
		if errors.Is(err, topo.ErrConditionFailed) {
			return nil, cperr.New(cperr.RevisionMismatch, "the failover policy changed while it was set: read it again")
		}
		return nil, err
	}
	_, v, err := catalog.GetFailoverPolicy(ctx, s.st)
	if err != nil {
		return nil, err
	}
	s.log.Warn("failover policy set", "enabled", next.GetEnabled(), "unhealthy_for", next.GetUnhealthyFor().AsDuration(),
		"regions", next.GetRegions(), "max_concurrent", next.GetMaxConcurrent())
	return &cpv1.SetFailoverPolicyResponse{Policy: next, Version: uint64(v)}, nil
}
