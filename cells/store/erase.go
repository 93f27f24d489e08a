package store

import (
	"bytes"
	"encoding/binary"

	"github.com/cellplane/cellplane/internal/cperr"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/cockroachdb/pebble/v2"
	"google.golang.org/protobuf/proto"
)

// Erasure (docs/contexts.md "Erasure"). erase_subject deletes a subject's
// data and scrubs what the tenant's logs still hold of it, in one apply:
//
//   - data: the contexts it names (a context: that one; a principal: those
//     labelled PrincipalLabel = P) with their entries, and (a principal)
//     the memory keys whose current value P wrote, as the audit record or
//     change-log event of the key's revision says;
//   - change log: every event by P (command principal) or naming an erased
//     context or key is replaced by a placeholder with the same tseq and
//     time (the log stays contiguous, so standbys and Watch keep their
//     positions); a placeholder applies nothing;
//   - dedup: the records of those tseqs (a retry of an erased write
//     applies again);
//   - audit: those tseqs' records keep only tseq, time, origin and op,
//     with erased_at_tseq (redactedAudit); the erase's own record names
//     the subject by digest and says what was erased.
//
// The command carries only the subject's digest (SubjectDigest), so the
// erase's own change-log event and Raft entry hold no name. A standby
// applies the erase event like its source did (apply_changes), scrubbing
// its own logs alike; events it had not applied yet reach it as
// placeholders. The scans are over the tenant's contexts, memory keys,
// change log, audit log and dedup window: erasure is rare and all of them
// are bounded by the tenant's quotas and the logs' retention.

func applyEraseSubject(o *opCtx) (*cellv1.CommandResult, error) {
	op := o.c.GetEraseSubject()
	if op.GetErasedOp() != "" {
		return nil, nil // a placeholder: nothing to apply
	}
	kind, digest := op.GetKind(), op.GetSubjectSha256()
	if kind != cellv1.EraseSubjectOp_KIND_PRINCIPAL && kind != cellv1.EraseSubjectOp_KIND_CONTEXT {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "erase_subject.kind", Description: "must be KIND_PRINCIPAL or KIND_CONTEXT"})
	}
	if len(digest) != 32 {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "erase_subject.subject_sha256", Description: "must be 32 bytes"})
	}
	e := &eraser{o: o, tenant: o.c.GetTenant(), kind: kind, digest: digest, at: o.st.rec.GetTseq() + 1,
		contexts: map[string]bool{}, keys: map[string]bool{}, scrubbed: map[uint64]bool{}}
	e.deleteContexts()
	if kind == cellv1.EraseSubjectOp_KIND_PRINCIPAL {
		e.deleteMemory()
	}
	e.scrubChanges()
	e.scrubAudit()
	e.scrubDedup()
	o.changed = true
	return &cellv1.CommandResult{Result: &cellv1.CommandResult_EraseSubject{EraseSubject: &e.res}}, nil
}

type eraser struct {
	o      *opCtx
	tenant string
	kind   cellv1.EraseSubjectOp_Kind
	digest []byte
	at     uint64 // the erase's tseq
	// contexts and keys erased (or, for a context, the one named);
	// scrubbed the tseqs whose events and records were scrubbed.
	contexts map[string]bool
	keys     map[string]bool
	scrubbed map[uint64]bool
	res      cellv1.EraseSubjectResult
}

func (e *eraser) is(subject string) bool {
	return subject != "" && bytes.Equal(SubjectDigest(e.tenant, e.kind, subject), e.digest)
}

// each calls fn with every key and value of one of the tenant's kinds (fn
// may not write: the caller collects, then writes).
func (e *eraser) each(kind byte, fn func(k, v []byte)) {
	p := tenantKey(e.tenant, kind, 0)
	it, err := e.o.tx.b.NewIter(&pebble.IterOptions{LowerBound: p, UpperBound: prefixEnd(p)})
	if err != nil {
		e.o.tx.fail(err)
		return
	}
	for ok := it.First(); ok; ok = it.Next() {
		fn(bytes.Clone(it.Key()), bytes.Clone(it.Value()))
	}
	if err := it.Close(); err != nil {
		e.o.tx.fail(err)
	}
}

func (e *eraser) deleteContexts() {
	var gone []*contextv1.Context
	e.each(kindContext, func(_, v []byte) {
		var c contextv1.Context
		if err := proto.Unmarshal(v, &c); err != nil {
			e.o.tx.fail(err)
			return
		}
		subject := c.GetContextId()
		if e.kind == cellv1.EraseSubjectOp_KIND_PRINCIPAL {
			subject = c.GetLabels()[PrincipalLabel]
		}
		if e.is(subject) {
			gone = append(gone, &c)
		}
	})
	for _, c := range gone {
		id := c.GetContextId()
		e.contexts[id] = true
		if !c.GetDeleted() {
			e.res.ContextsDeleted++
		}
		// Removed as a delete removes it (owner and expiry indexes, its
		// summaries, its sources' fork references)...
		e.o.removeContext(id, proto.Clone(c).(*contextv1.Context))
		// ...and a context forks still read loses its entries and
		// summaries too: erased data is gone from the forks as well (they
		// read their own entries only from then on).
		var kept contextv1.Context
		if !e.o.tx.get(contextKey(e.tenant, id), &kept) {
			continue
		}
		p := entryPrefix(e.tenant, id)
		e.o.tx.delRange(p, prefixEnd(p))
		e.o.dropContextVectors(id, &kept)
		e.o.unindexPrefix(entryDocPrefix(id))
		sp := summaryPrefix(e.tenant, id)
		e.o.tx.delRange(sp, prefixEnd(sp))
		u := usage(e.o.st.rec)
		u.Entries = sub(u.Entries, kept.GetEntryCount())
		u.Bytes = sub(u.Bytes, kept.GetSizeBytes())
		kept.EntryCount, kept.SizeBytes, kept.TotalTokens, kept.CompactedSeq, kept.Labels, kept.VectorCount = 0, 0, 0, 0, nil, 0
		e.o.tx.put(contextKey(e.tenant, id), &kept)
	}
}

// deleteMemory deletes the memory keys whose current value the principal
// wrote: the audit record of the key's revision names the writer (or, if
// that record was trimmed, the change-log event).
func (e *eraser) deleteMemory() {
	var gone []*contextv1.MemoryItem
	e.each(kindMemory, func(_, v []byte) {
		var m contextv1.MemoryItem
		if err := proto.Unmarshal(v, &m); err != nil {
			e.o.tx.fail(err)
			return
		}
		if e.is(e.writerOf(m.GetRevision())) {
			gone = append(gone, &m)
		}
	})
	u := usage(e.o.st.rec)
	for _, m := range gone {
		e.keys[m.GetKey()] = true
		e.o.tx.del(memoryKey(e.tenant, m.GetKey()))
		e.o.dropMemoryVector("", m.GetKey(), m.GetEmbeddingDims())
		e.o.reindexMemory("", m.GetKey(), nil)
		e.o.indexExpiry(kindMemory, m.GetKey(), m.GetExpireTime(), nil)
		u.MemoryKeys = sub(u.MemoryKeys, 1)
		u.Bytes = sub(u.Bytes, memoryBytes(m))
		e.res.MemoryKeysDeleted++
	}
	// The principal's own memory (scope principal) is wholly theirs.
	type owned struct {
		k []byte
		m *contextv1.MemoryItem
		p string
	}
	var own []owned
	e.each(kindPrincipalMemory, func(k, v []byte) {
		p, _, ok := splitPrincipalKey(k[len(tenantKey(e.tenant, kindPrincipalMemory, 0)):])
		if !ok || !e.is(p) {
			return
		}
		var m contextv1.MemoryItem
		if err := proto.Unmarshal(v, &m); err != nil {
			e.o.tx.fail(err)
			return
		}
		own = append(own, owned{k: k, m: &m, p: p})
	})
	for _, o := range own {
		e.keys[o.m.GetKey()] = true
		e.o.tx.del(o.k)
		e.o.dropMemoryVector(o.p, o.m.GetKey(), o.m.GetEmbeddingDims())
		e.o.reindexMemory(o.p, o.m.GetKey(), nil)
		kind, id := memoryIndexID(o.p, o.m.GetKey())
		e.o.indexExpiry(kind, id, o.m.GetExpireTime(), nil)
		u.MemoryKeys = sub(u.MemoryKeys, 1)
		u.Bytes = sub(u.Bytes, memoryBytes(o.m))
		e.res.MemoryKeysDeleted++
	}
}

// splitPrincipalKey splits a principal-prefixed key rest (uvarint length,
// principal, remainder).
func splitPrincipalKey(rest []byte) (principal, tail string, ok bool) {
	n, w := binary.Uvarint(rest)
	if w <= 0 || uint64(len(rest)-w) < n {
		return "", "", false
	}
	return string(rest[w : w+int(n)]), string(rest[w+int(n):]), true
}

// writerOf is the principal of the mutation at tseq ("" unknown).
func (e *eraser) writerOf(tseq uint64) string {
	var ar cellv1.AuditRecord
	if e.o.tx.get(auditKey(e.tenant, tseq), &ar) {
		return ar.GetPrincipal()
	}
	var ev cellv1.ChangeEvent
	if e.o.tx.get(changeKey(e.tenant, tseq), &ev) {
		return ev.GetCommand().GetPrincipal()
	}
	return ""
}

// names reports whether a mutation by principal on (contextID, key)
// concerns the subject.
func (e *eraser) names(principal, contextID, key string) bool {
	if e.contexts[contextID] || e.keys[key] {
		return true
	}
	if e.kind == cellv1.EraseSubjectOp_KIND_PRINCIPAL {
		return e.is(principal)
	}
	return e.is(contextID)
}

func (e *eraser) scrubChanges() {
	type scrub struct {
		k  []byte
		ev *cellv1.ChangeEvent
		n  int
	}
	var todo []scrub
	e.each(kindChange, func(k, v []byte) {
		var ev cellv1.ChangeEvent
		if err := proto.Unmarshal(v, &ev); err != nil {
			e.o.tx.fail(err)
			return
		}
		c := ev.GetCommand()
		if c.GetEraseSubject() != nil {
			return // a placeholder or an erase: no name in it
		}
		ctxID, key := opTarget(c)
		if e.names(c.GetPrincipal(), ctxID, key) {
			todo = append(todo, scrub{k: k, ev: &ev, n: len(v)})
		}
	})
	rec := e.o.st.rec
	for _, s := range todo {
		c := s.ev.GetCommand()
		ph := &cellv1.ChangeEvent{
			Tseq:         s.ev.GetTseq(),
			TimeUnixNano: s.ev.GetTimeUnixNano(),
			Command: &cellv1.Command{
				Version:      c.GetVersion(),
				Tenant:       c.GetTenant(),
				TimeUnixNano: c.GetTimeUnixNano(),
				Origin:       c.GetOrigin(),
				Op: &cellv1.Command_EraseSubject{EraseSubject: &cellv1.EraseSubjectOp{
					ErasedOp: commandOpName(c), ErasedAtTseq: e.at}},
			},
			Result: &cellv1.CommandResult{Tseq: s.ev.GetTseq()},
		}
		n := e.o.tx.put(s.k, ph)
		rec.ChangelogBytes = rec.ChangelogBytes - min(uint64(s.n), rec.ChangelogBytes) + uint64(n)
		e.scrubbed[s.ev.GetTseq()] = true
		e.res.EventsScrubbed++
	}
}

// scrubAudit redacts the audit records of scrubbed events, and of
// mutations concerning the subject whose events were already trimmed.
func (e *eraser) scrubAudit() {
	var todo []*cellv1.AuditRecord
	e.each(kindAudit, func(_, v []byte) {
		var ar cellv1.AuditRecord
		if err := proto.Unmarshal(v, &ar); err != nil {
			e.o.tx.fail(err)
			return
		}
		if ar.GetErasedAtTseq() != 0 || ar.GetEraseKind() != cellv1.EraseSubjectOp_KIND_UNSPECIFIED {
			return // already redacted, or an erase's record
		}
		if e.scrubbed[ar.GetTseq()] || e.names(ar.GetPrincipal(), ar.GetContextId(), ar.GetMemoryKey()) {
			todo = append(todo, &ar)
		}
	})
	for _, ar := range todo {
		e.o.tx.put(auditKey(e.tenant, ar.GetTseq()), redactedAudit(ar.GetTseq(), ar.GetTimeUnixNano(), ar.GetOrigin(), ar.GetOp(), e.at))
		e.scrubbed[ar.GetTseq()] = true
		e.res.AuditRecordsRedacted++
	}
}

// scrubDedup forgets the request ids of the scrubbed tseqs: their records
// hold the writes' results. The ids stay in the eviction queue (an id is
// random, not data), whose eviction skips a missing record.
func (e *eraser) scrubDedup() {
	if len(e.scrubbed) == 0 {
		return
	}
	var todo [][]byte
	e.each(kindDedup, func(k, v []byte) {
		var d cellv1.DedupRecord
		if err := proto.Unmarshal(v, &d); err != nil {
			e.o.tx.fail(err)
			return
		}
		if e.scrubbed[d.GetTseq()] {
			todo = append(todo, k)
		}
	})
	for _, k := range todo {
		e.o.tx.del(k)
		e.res.DedupRecordsScrubbed++
	}
}
