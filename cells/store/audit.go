package store

import (
	"crypto/sha256"
	"encoding/binary"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// The audit log (docs/contexts.md "Audit"). finishMutation writes one
// AuditRecord per tenant mutation, at the mutation's tseq, in the same
// Pebble batch as the mutation and its change-log event: a crash keeps
// both or neither, and a standby, which logs its source's events through
// finishMutation too, writes the same record with the source's tseq and
// time. The record is built from the command alone (auditRecordOf), so an
// operation added later gets records without knowing of them: its oneof
// field names the op, and a string field named context_id or key of its
// request names what it touched.
//
// The records of a tenant are contiguous by tseq, [audit_first_tseq,
// audit_first_tseq+audit_count); they are trimmed by count and by age
// (CellSettings audit_max_records, audit_retention_nanos) in chunks, like
// the dedup window: once the log is a sixteenth of the bound past it.

// auditKey is the key of a tenant's audit record at tseq.
func auditKey(tenant string, tseq uint64) []byte {
	return binary.BigEndian.AppendUint64(tenantKey(tenant, kindAudit, 8), tseq)
}

// withAudit sets the audit bounds of settings s and returns s.
func withAudit(s *cellv1.CellSettings, a AuditConfig) *cellv1.CellSettings {
	s.AuditRetentionNanos, s.AuditMaxRecords = int64(a.RetentionAge), a.MaxRecords
	return s
}

// auditTrimBatch bounds the records one command trims by age (one scan);
// the following writes trim the rest.
const auditTrimBatch = 4096

// auditRecordOf is the audit record of command c logged at tseq with
// result res. A placeholder (an erased event's stand-in) gives the
// redacted record an erase leaves in place of the original one.
func auditRecordOf(c *cellv1.Command, tseq uint64, res *cellv1.CommandResult) *cellv1.AuditRecord {
	if e := c.GetEraseSubject(); e.GetErasedOp() != "" {
		return redactedAudit(tseq, c.GetTimeUnixNano(), c.GetOrigin(), e.GetErasedOp(), e.GetErasedAtTseq())
	}
	r := &cellv1.AuditRecord{
		Tseq:         tseq,
		TimeUnixNano: c.GetTimeUnixNano(),
		Principal:    c.GetPrincipal(),
		Origin:       c.GetOrigin(),
		RequestId:    c.GetRequestId(),
		Op:           commandOpName(c),
	}
	if e := c.GetEraseSubject(); e != nil {
		r.EraseKind, r.EraseSubjectSha256 = e.GetKind(), e.GetSubjectSha256()
		r.Erased = res.GetEraseSubject()
		return r
	}
	r.ContextId, r.MemoryKey = opTarget(c)
	return r
}

// redactedAudit is what an erase leaves of an audit record: when, how
// (origin) and what kind of operation, not who or on what.
func redactedAudit(tseq uint64, t int64, origin, op string, erasedAt uint64) *cellv1.AuditRecord {
	return &cellv1.AuditRecord{Tseq: tseq, TimeUnixNano: t, Origin: origin, Op: op, ErasedAtTseq: erasedAt}
}

// commandOpName is the name of the command's oneof field, also for an
// operation this node has no apply for (a newer source's ignorable one):
// "unknown" only when this binary does not know the field at all.
func commandOpName(c *cellv1.Command) string {
	if fd := c.ProtoReflect().WhichOneof(opOneof); fd != nil {
		return string(fd.Name())
	}
	return "unknown"
}

// opTarget is the context id and memory key the command's request names:
// its string fields context_id and key, whatever the operation.
func opTarget(c *cellv1.Command) (contextID, key string) {
	m := c.ProtoReflect()
	fd := m.WhichOneof(opOneof)
	if fd == nil || fd.Message() == nil {
		return "", ""
	}
	op := m.Get(fd).Message()
	str := func(name protoreflect.Name) string {
		if f := op.Descriptor().Fields().ByName(name); f != nil && f.Kind() == protoreflect.StringKind && f.Cardinality() != protoreflect.Repeated {
			return op.Get(f).String()
		}
		return ""
	}
	return str("context_id"), str("key")
}

// writeAudit records a mutation's audit record and trims the tenant's
// audit log to its bounds.
func (tx *txn) writeAudit(tenant string, rec *cellv1.TenantRecord, ar *cellv1.AuditRecord) {
	tx.put(auditKey(tenant, ar.GetTseq()), ar)
	if rec.AuditCount == 0 {
		rec.AuditFirstTseq = ar.GetTseq()
		rec.AuditFirstTimeUnixNano = ar.GetTimeUnixNano()
	}
	rec.AuditCount++
	tx.trimAudit(tenant, rec, ar.GetTimeUnixNano())
}

// trimAudit drops the oldest audit records past the count bound (once the
// excess is a chunk) and those older than the retention (once the oldest
// is a sixteenth of the retention past it, at most auditTrimBatch).
func (tx *txn) trimAudit(tenant string, rec *cellv1.TenantRecord, now int64) {
	maxN, age := tx.settings.GetAuditMaxRecords(), tx.settings.GetAuditRetentionNanos()
	var n uint64
	if maxN > 0 && rec.AuditCount > maxN && rec.AuditCount-maxN >= max(1, maxN/16) {
		n = rec.AuditCount - maxN
	}
	if age > 0 && now-rec.AuditFirstTimeUnixNano > age+age/16 {
		cutoff := now - age
		it, err := tx.b.NewIter(&pebble.IterOptions{
			LowerBound: auditKey(tenant, rec.AuditFirstTseq+n),
			UpperBound: auditKey(tenant, rec.AuditFirstTseq+rec.AuditCount),
		})
		if err != nil {
			tx.fail(err)
			return
		}
		for ok := it.First(); ok && n < rec.AuditCount && n < auditTrimBatch; ok = it.Next() {
			if eventTime(it.Value()) >= cutoff { // AuditRecord.time_unix_nano is field 2, like ChangeEvent's
				break
			}
			n++
		}
		if err := it.Close(); err != nil {
			tx.fail(err)
			return
		}
	}
	if n == 0 {
		return
	}
	tx.delRange(auditKey(tenant, rec.AuditFirstTseq), auditKey(tenant, rec.AuditFirstTseq+n))
	rec.AuditFirstTseq += n
	rec.AuditCount -= n
	rec.AuditFirstTimeUnixNano = 0
	if rec.AuditCount > 0 {
		rec.AuditFirstTimeUnixNano = eventTime(tx.getRaw(auditKey(tenant, rec.AuditFirstTseq)))
	}
}

// SubjectDigest names an erasure's subject in commands and logs: a
// SHA-256 of the tenant, the kind and the subject, so the name itself is
// never stored. It is pseudonymous, not anonymous: whoever knows a name
// can check it against a digest.
func SubjectDigest(tenant string, kind cellv1.EraseSubjectOp_Kind, subject string) []byte {
	h := sha256.New()
	h.Write([]byte("cellplane-erase\x00"))
	h.Write([]byte(tenant))
	h.Write([]byte{0})
	h.Write([]byte(kind.String()))
	h.Write([]byte{0})
	h.Write([]byte(subject))
	return h.Sum(nil)
}

// AuditQuery selects audit records (TenantView.Audit).
type AuditQuery struct {
	// AfterTseq: records above this tseq.
	AfterTseq uint64
	// Limit: at most this many records (required, positive).
	Limit int
	// Principal: only this principal's records ("" any).
	Principal string
	// SinceUnixNano: only records at or after this command time.
	SinceUnixNano int64
}

// auditScanMax bounds the records one Audit call reads past a filter, so
// that a filter matching nothing cannot scan a whole log in one call: the
// caller pages on from next.
const auditScanMax = 10000

// Audit returns the tenant's audit records matching q, oldest first, and
// the tseq to continue after (0: no more).
func (v *TenantView) Audit(q AuditQuery) (recs []*cellv1.AuditRecord, next uint64, err error) {
	prefix := tenantKey(v.tenant, kindAudit, 0)
	scanned, last := 0, uint64(0)
	more := false
	err = scan(v.r, auditKey(v.tenant, q.AfterTseq+1), prefixEnd(prefix), func(_, val []byte) (bool, error) {
		if len(recs) >= q.Limit || scanned >= auditScanMax {
			more = true
			return false, nil
		}
		scanned++
		var ar cellv1.AuditRecord
		if err := proto.Unmarshal(val, &ar); err != nil {
			return false, err
		}
		last = ar.GetTseq()
		if (q.Principal == "" || ar.GetPrincipal() == q.Principal) && ar.GetTimeUnixNano() >= q.SinceUnixNano {
			recs = append(recs, &ar)
		}
		return true, nil
	})
	if more {
		next = last
	}
	return recs, next, err
}
