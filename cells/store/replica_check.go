package store

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// A standby applies what its source streams (invariant 9), so the source
// is the one party that writes into this cell's state without the owner,
// epoch and authority checks of a client write. What it may write is
// therefore bounded here (invariant 12, docs/security.md "Replicated
// events"): every event of an apply_changes batch must be the stream
// tenant's own, carry an operation a source's change log holds, and come
// in tseq order; otherwise the whole batch is refused with
// REPLICATION_EVENT_REJECTED and nothing of it is applied.
//
// checkEvents is that rule. It reads nothing but the batch, so every
// replica decides alike (invariant 3); it runs in the state machine
// (applyChanges) and, with the client validators added, before proposing
// on the leader (Store.checkReplicated).

// rejectEvents is the refusal of a batch because of event i.
func rejectEvents(tenant string, i int, ev *cellv1.ChangeEvent, format string, args ...any) *cperr.Error {
	return cperr.New(cperr.ReplicationEventRejected, "change event %d (tseq %d): %s", i, ev.GetTseq(), fmt.Sprintf(format, args...)).
		With(cperr.MetaTenant, tenant).With(cperr.MetaTseq, strconv.FormatUint(ev.GetTseq(), 10))
}

// checkEvents checks an apply_changes batch of the stream tenant.
func checkEvents(tenant string, evs []*cellv1.ChangeEvent) *cperr.Error {
	var prev uint64
	for i, ev := range evs {
		if ev == nil {
			return rejectEvents(tenant, i, ev, "the event is null")
		}
		if t := ev.GetTseq(); t == 0 || (i > 0 && t <= prev) {
			return rejectEvents(tenant, i, ev, "tseq does not follow the batch's previous event (%d)", prev)
		}
		prev = ev.GetTseq()
		c := ev.GetCommand()
		if c == nil {
			return rejectEvents(tenant, i, ev, "the event has no command")
		}
		if c.GetTenant() != tenant {
			return rejectEvents(tenant, i, ev, "the command names tenant %q, not the stream's", c.GetTenant())
		}
		if ev.GetResult().GetError() != nil {
			return rejectEvents(tenant, i, ev, "the event carries a rejection (a source logs only applied mutations)")
		}
		spec, known := lookupOp(c)
		if !known || c.GetVersion() > commandVersion {
			if !c.GetIgnorable() {
				return rejectEvents(tenant, i, ev, "the command's operation or version is unknown to this node (upgrade it before its source)")
			}
			continue // logged, not applied (a newer source's ignorable operation)
		}
		if !spec.replicated {
			return rejectEvents(tenant, i, ev, "%s is not an operation a source's change log holds", spec.name)
		}
		if st := c.GetSetTenant(); st != nil && st.GetRole() != cellv1.Role_ROLE_OWNER && st.GetRole() != cellv1.Role_ROLE_FENCED {
			return rejectEvents(tenant, i, ev, "set_tenant to %s is not logged by a source", st.GetRole())
		}
	}
	return nil
}

// checkReplicated refuses, before proposing, an apply_changes batch that
// the state machine would refuse (checkEvents) or whose commands fail the
// client validators with this node's limits. It runs on the leader only,
// before Raft: its answer does not need to be the same on every replica
// (a refused batch is never in the log), so it may depend on
// configuration.
func (s *Store) checkReplicated(cmd *cellv1.Command) error {
	tenant, evs := cmd.GetTenant(), cmd.GetApplyChanges().GetEvents()
	err := checkEvents(tenant, evs)
	if err == nil {
		for i, ev := range evs {
			verr := validate.ReplicatedCommand(s.cfg.ReplicatedLimits, ev.GetCommand())
			var ce *cperr.Error
			if verr == nil || !errors.As(verr, &ce) {
				continue
			}
			err = rejectEvents(tenant, i, ev, "the command fails the client validator")
			err.Violations = ce.Violations
			break
		}
	}
	if err == nil {
		return nil
	}
	s.reportRejected("propose", tenant, s.sourceCellOf(tenant), err)
	return err
}

// sourceCellOf is the tenant's source cell here, for logs ("" if unknown).
func (s *Store) sourceCellOf(tenant string) string {
	var src string
	_ = s.ReadReplica(tenant, func(v *TenantView) error {
		src = v.rec.GetSourceCell()
		return nil
	})
	return src
}

// reportRejected counts and logs a refused batch (stage: propose or apply).
func (s *Store) reportRejected(stage, tenant, source string, err *cperr.Error) {
	s.metrics.eventsRejected.WithLabelValues(stage).Inc()
	logRejected(s.log, stage, tenant, source, err)
}

// logRejected logs a refused batch at Error with stable keys: a source
// sent what no standby may apply (a bug or an attack), and the stream
// stays at its position until someone looks.
func logRejected(log *slog.Logger, stage, tenant, source string, err *cperr.Error) {
	tseq, _ := strconv.ParseUint(err.Metadata[cperr.MetaTseq], 10, 64)
	log.Error("replicated change events refused; nothing of the batch was applied",
		"tenant", tenant, "source_cell", source, "tseq", tseq, "stage", stage, "err", err)
}
