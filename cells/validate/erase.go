package validate

import (
	"strings"
	"time"
	"unicode/utf8"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// principal checks a principal name: what the router and the MCP worker
// stamp (an authenticated subject) and what the MCP worker writes in the
// cellplane.principal label, so it is bounded like a label value.
func (v *violations) principal(lim Limits, field, p string, required bool) {
	switch {
	case p == "":
		if required {
			v.add(field, "required")
		}
	case len(p) > lim.Labels.MaxValueBytes:
		v.add(field, "%d bytes exceeds the limit of %d bytes", len(p), lim.Labels.MaxValueBytes)
	case !utf8.ValidString(p) || strings.ContainsRune(p, 0):
		v.add(field, "must be UTF-8 without NUL")
	}
}

// EraseSubject validates an EraseSubjectRequest: a tenant and exactly one
// of principal and context_id.
func EraseSubject(lim Limits, req *cellv1.EraseSubjectRequest) error {
	var v violations
	v.id("tenant", req.GetTenant(), lim.MaxIDLen)
	v.requestID(lim, req.GetRequestId())
	v.subject(lim, req.GetPrincipal(), req.GetContextId())
	return v.err()
}

// subject checks an erasure's subject: exactly one of a principal and a
// context id.
func (v *violations) subject(lim Limits, p, c string) {
	switch {
	case p != "" && c != "":
		v.add("context_id", "exactly one of principal and context_id")
	case p == "" && c == "":
		v.add("principal", "one of principal and context_id is required")
	case c != "":
		v.id("context_id", c, lim.MaxIDLen)
	default:
		v.principal(lim, "principal", p, true)
	}
}

// ListAudit validates a ListAuditRequest.
func ListAudit(lim Limits, req *cellv1.ListAuditRequest) error {
	var v violations
	v.id("tenant", req.GetTenant(), lim.MaxIDLen)
	if req.GetLimit() > 1000 {
		v.add("limit", "must be at most 1000")
	}
	v.principal(lim, "principal", req.GetPrincipal(), false)
	if req.GetSinceUnixNano() < 0 {
		v.add("since_unix_nano", "must not be negative")
	}
	return v.err()
}

// maxOpName bounds a placeholder's erased_op (an operation's field name).
const maxOpName = 64

// eraseOp checks a replicated erase_subject: an erase (a kind and a
// 32-byte digest) or a placeholder (the erased op's name and the erase's
// tseq, nothing else).
func (v *violations) eraseOp(op *cellv1.EraseSubjectOp) {
	const f = "command.erase_subject."
	if name := op.GetErasedOp(); name != "" {
		if len(name) > maxOpName || strings.Trim(name, "abcdefghijklmnopqrstuvwxyz_") != "" {
			v.add(f+"erased_op", "must be an operation name ([a-z_], at most %d bytes)", maxOpName)
		}
		if op.GetErasedAtTseq() == 0 {
			v.add(f+"erased_at_tseq", "required in a placeholder")
		}
		if op.GetKind() != cellv1.EraseSubjectOp_KIND_UNSPECIFIED || len(op.GetSubjectSha256()) != 0 {
			v.add(f+"kind", "a placeholder names no subject")
		}
		return
	}
	if k := op.GetKind(); k != cellv1.EraseSubjectOp_KIND_PRINCIPAL && k != cellv1.EraseSubjectOp_KIND_CONTEXT {
		v.add(f+"kind", "must be KIND_PRINCIPAL or KIND_CONTEXT")
	}
	if len(op.GetSubjectSha256()) != 32 {
		v.add(f+"subject_sha256", "must be 32 bytes")
	}
	if op.GetErasedAtTseq() != 0 {
		v.add(f+"erased_at_tseq", "only in a placeholder")
	}
}

// Erase validates a ContextService EraseRequest: exactly one of principal
// and context_id, the request id, and a wait between 0 and maxWait.
func Erase(lim Limits, req *contextv1.EraseRequest, maxWait time.Duration) error {
	var v violations
	v.requestID(lim, req.GetRequestId())
	v.subject(lim, req.GetPrincipal(), req.GetContextId())
	if w := req.GetWait(); w != nil {
		if err := w.CheckValid(); err != nil || w.AsDuration() < 0 || w.AsDuration() > maxWait {
			v.add("wait", "must be between 0 and %v", maxWait)
		}
	}
	return v.err()
}
