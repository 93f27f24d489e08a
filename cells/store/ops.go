package store

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/tokens"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// opSpec describes one state-machine operation.
type opSpec struct {
	name string
	// tenant: the command needs Command.tenant.
	tenant bool
	// owner: the tenant must be OWNER here at the command's epoch.
	owner bool
	// mutation: a successful apply that changed something gets the next
	// tseq, a change-log event and (with a request id) a dedup record.
	mutation bool
	// replicated: the operation may appear in a source's change event
	// (what finishMutation logs: data mutations and OWNER/FENCED role
	// changes); apply_changes refuses a batch with any other (invariant 12).
	replicated bool
	apply      func(*opCtx) (*cellv1.CommandResult, error)
}

// opCtx is what an operation works with. An operation must check
// everything before it writes anything: a returned error means "rejected,
// nothing applied".
type opCtx struct {
	tx  *txn
	c   *cellv1.Command
	st  *tenantState
	now int64
	// changed is set by an operation that mutated the tenant.
	changed bool
	// replicated: a standby applies its source's event (apply_changes).
	// Quotas are not checked: the owner enforced them when it applied the
	// write, and a standby that refused would diverge from its source.
	replicated bool
	// source is the source's result of the event a standby applies
	// (replicated): what the source resolved (expiries) is taken from it.
	source *cellv1.CommandResult
}

func (o *opCtx) ts() *timestamppb.Timestamp { return timestamppb.New(time.Unix(0, o.now)) }

// ops is the dispatch table, keyed by the Command.op field number.
var ops = map[protoreflect.FieldNumber]opSpec{
	10: {name: "create_context", tenant: true, owner: true, mutation: true, replicated: true, apply: applyCreateContext},
	11: {name: "delete_context", tenant: true, owner: true, mutation: true, replicated: true, apply: applyDeleteContext},
	12: {name: "append", tenant: true, owner: true, mutation: true, replicated: true, apply: applyAppend},
	13: {name: "put_memory", tenant: true, owner: true, mutation: true, replicated: true, apply: applyPutMemory},
	14: {name: "delete_memory", tenant: true, owner: true, mutation: true, replicated: true, apply: applyDeleteMemory},
	16: {name: "fork_context", tenant: true, owner: true, mutation: true, replicated: true, apply: applyForkContext},
	17: {name: "expire_sweep", tenant: true, owner: true, mutation: true, replicated: true, apply: applyExpireSweep},
	15: {name: "compact_context", tenant: true, owner: true, mutation: true, replicated: true, apply: applyCompactContext},
	19: {name: "erase_subject", tenant: true, owner: true, mutation: true, replicated: true, apply: applyEraseSubject},
	20: {name: "set_tenant", tenant: true, mutation: true, replicated: true, apply: applySetTenant},
	21: {name: "delete_tenant", tenant: true, apply: applyDeleteTenant},
	23: {name: "import_tenant", tenant: true, apply: applyImport},
	24: {name: "replica_ack", tenant: true, apply: applyReplicaAck},
	30: {name: "register_node", apply: applyRegisterNode},
	31: {name: "noop", apply: func(*opCtx) (*cellv1.CommandResult, error) { return nil, nil }},
	32: {name: "cell_settings", apply: applyCellSettings},
	40: {name: "reindex_keywords", tenant: true, owner: true, mutation: true, replicated: true, apply: applyReindexKeywords},
}

var opOneof = (&cellv1.Command{}).ProtoReflect().Descriptor().Oneofs().ByName("op")

func lookupOp(c *cellv1.Command) (opSpec, bool) {
	fd := c.ProtoReflect().WhichOneof(opOneof)
	if fd == nil {
		return opSpec{}, false
	}
	spec, ok := ops[fd.Number()]
	return spec, ok
}

// opName names a command's operation for logs and metrics.
func opName(c *cellv1.Command) string {
	if spec, ok := lookupOp(c); ok {
		return spec.name
	}
	return "unknown"
}

// checkOwner is the write (and read) admission rule: the tenant is OWNER
// here, and the caller's epoch (0: any) is the tenant's epoch.
func checkOwner(rec *cellv1.TenantRecord, epoch uint64) *cperr.Error {
	if rec == nil {
		return cperr.New(cperr.WrongCell, "tenant is not served by this cell").With(cperr.MetaRole, "NONE")
	}
	if rec.GetRole() != cellv1.Role_ROLE_OWNER {
		return cperr.New(cperr.WrongCell, "tenant is not owned by this cell").
			With(cperr.MetaRole, rec.GetRole().String()).
			With(cperr.MetaEpoch, strconv.FormatUint(rec.GetEpoch(), 10))
	}
	if epoch != 0 && epoch != rec.GetEpoch() {
		return cperr.New(cperr.StaleEpoch, "request epoch %d is not the tenant's epoch %d", epoch, rec.GetEpoch()).
			With(cperr.MetaEpoch, strconv.FormatUint(rec.GetEpoch(), 10))
	}
	return nil
}

func applyCreateContext(o *opCtx) (*cellv1.CommandResult, error) {
	req := o.c.GetCreateContext()
	tenant, id := o.c.GetTenant(), req.GetContextId()
	if id == "" {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "context_id", Description: "required"})
	}
	clear, err := o.makeRoom(id)
	if err != nil {
		return nil, err
	}
	if err := o.checkQuota(1, 0, 0); err != nil {
		return nil, err
	}
	clear()
	labels := o.ownerLabels(req.GetLabels())
	ctx := &contextv1.Context{ContextId: id, Labels: labels, CreateTime: o.ts(), UpdateTime: o.ts(), TokenEncoding: req.GetTokenEncoding(),
		ExpireTime: o.expiry(req.GetExpireTime(), req.GetTtl(), resultContext(o).GetExpireTime())}
	o.tx.put(contextKey(tenant, id), ctx)
	o.indexOwner(id, labels)
	o.indexExpiry(kindContext, id, nil, ctx.GetExpireTime())
	o.st.rec.Usage = usage(o.st.rec)
	o.st.rec.Usage.Contexts++
	o.changed = true
	return &cellv1.CommandResult{Result: &cellv1.CommandResult_Context{Context: ctx}}, nil
}

func applyDeleteContext(o *opCtx) (*cellv1.CommandResult, error) {
	id := o.c.GetDeleteContext().GetContextId()
	ctx, ok := o.liveContext(id)
	if !ok {
		return nil, cperr.New(cperr.ContextNotFound, "context %q not found", id)
	}
	o.removeContext(id, ctx) // forks keep what they read (fork.go)
	o.changed = true
	return nil, nil
}

func applyAppend(o *opCtx) (*cellv1.CommandResult, error) {
	req := o.c.GetAppend()
	tenant, id := o.c.GetTenant(), req.GetContextId()
	if len(req.GetEntries()) == 0 {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "entries", Description: "at least one entry is required"})
	}
	ctx, ok := o.liveContext(id)
	if !ok {
		return nil, cperr.New(cperr.ContextNotFound, "context %q not found", id)
	}
	if req.ExpectedSeq != nil && req.GetExpectedSeq() != ctx.GetLastSeq() {
		return nil, cperr.New(cperr.SequenceMismatch, "expected last seq %d, context is at %d", req.GetExpectedSeq(), ctx.GetLastSeq()).
			With(cperr.MetaLastSeq, strconv.FormatUint(ctx.GetLastSeq(), 10))
	}
	var size uint64
	for _, e := range req.GetEntries() {
		size += EntrySize(e)
	}
	dims := 0
	for i, e := range req.GetEntries() {
		d := len(e.GetEmbedding())
		if d == 0 {
			continue
		}
		field := "entries[" + strconv.Itoa(i) + "].embedding"
		if dims != 0 && d != dims {
			return nil, cperr.Invalid(cperr.FieldViolation{Field: field, Description: fmt.Sprintf("has %d dimensions; an earlier entry's has %d", d, dims)})
		}
		if err := o.checkVectorDims(VectorContexts, field, d); err != nil {
			return nil, err
		}
		dims = d
	}
	if err := o.checkQuota(0, 0, int64(size)); err != nil {
		return nil, err // nothing of the append is written
	}
	var vectors uint64
	first := ctx.GetLastSeq() + 1
	ts := o.ts()
	// Token counts: the proposer's, stamped in the command, when it
	// counted with the context's encoding (the common case, and always a
	// standby's: it applies its source's command); counted here otherwise.
	// Either way the count is stored with the entry and never recomputed.
	enc := tokens.Resolve(ctx.GetTokenEncoding())
	stamped := req.GetTokenEncoding() != "" && tokens.Resolve(req.GetTokenEncoding()) == enc
	var total uint64
	for i, e := range req.GetEntries() {
		seq := first + uint64(i)
		ent := &contextv1.Entry{Seq: seq, Role: e.GetRole(), Metadata: e.GetMetadata(), CreateTime: ts, TokenCount: e.GetTokenCount()}
		if !stamped {
			ent.TokenCount = tokens.Entry(enc, e)
		}
		total += uint64(ent.TokenCount)
		switch c := e.GetContent().(type) {
		case *contextv1.Entry_Text:
			ent.Content = &contextv1.Entry_Text{Text: c.Text}
		case *contextv1.Entry_Data:
			ent.Content = &contextv1.Entry_Data{Data: c.Data}
		}
		if v := e.GetEmbedding(); len(v) > 0 {
			ent.EmbeddingDims = uint32(len(v))
			o.tx.setRaw(contextVectorKey(tenant, id, seq), encodeVector(v))
			vectors++
		}
		o.tx.put(entryKey(tenant, id, seq), ent)
		o.indexEntry(id, ent)
	}
	if vectors > 0 {
		ctx.VectorCount += vectors
		o.countVectors(VectorContexts, dims, int64(vectors))
	}
	n := uint64(len(req.GetEntries()))
	ctx.LastSeq += n
	ctx.EntryCount += n
	ctx.SizeBytes += size
	ctx.TotalTokens += total
	ctx.UpdateTime = ts
	o.tx.put(contextKey(tenant, id), ctx)
	u := usage(o.st.rec)
	u.Entries += n
	u.Bytes += size
	o.changed = true
	return &cellv1.CommandResult{Result: &cellv1.CommandResult_Append{Append: &contextv1.AppendResponse{FirstSeq: first, LastSeq: ctx.LastSeq}}}, nil
}

// applyCompactContext stores a compaction summary of entries
// 1..up_to_seq. Summaries nest: each must reach past the context's
// compacted_seq, so the newest one covers every earlier one and is the one
// reads return; earlier ones stay stored (retention removes them with the
// entries). The summary's bytes count as the context's (and tenant's).
func applyCompactContext(o *opCtx) (*cellv1.CommandResult, error) {
	req := o.c.GetCompactContext()
	tenant, id := o.c.GetTenant(), req.GetContextId()
	pc, ok := o.liveContext(id) // deleted (kept for forks) or expired: missing
	if !ok {
		return nil, cperr.New(cperr.ContextNotFound, "context %q not found", id)
	}
	ctx := pc
	upTo := req.GetUpToSeq()
	switch {
	case upTo == 0 || upTo > ctx.GetLastSeq():
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "up_to_seq",
			Description: fmt.Sprintf("is %d; it must be between 1 and the context's last_seq %d", upTo, ctx.GetLastSeq())})
	case upTo <= ctx.GetCompactedSeq():
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "up_to_seq",
			Description: fmt.Sprintf("is %d; the context is compacted up to %d already: a new summary must cover more", upTo, ctx.GetCompactedSeq())})
	}
	size := uint64(len(req.GetSummary()))
	if err := o.checkQuota(0, 0, int64(size)); err != nil {
		return nil, err
	}
	enc := tokens.Resolve(ctx.GetTokenEncoding())
	n := req.GetSummaryTokens()
	if req.GetTokenEncoding() == "" || tokens.Resolve(req.GetTokenEncoding()) != enc {
		n = tokens.Text(enc, req.GetSummary())
	}
	ts := o.ts()
	sum := &contextv1.Summary{FromSeq: 1, UpToSeq: upTo, Text: req.GetSummary(), TokenCount: n, CreateTime: ts}
	o.tx.put(summaryKey(tenant, id, upTo), sum)
	ctx.CompactedSeq = upTo
	ctx.SizeBytes += size
	ctx.UpdateTime = ts
	o.tx.put(contextKey(tenant, id), ctx)
	usage(o.st.rec).Bytes += size
	o.changed = true
	return &cellv1.CommandResult{Result: &cellv1.CommandResult_Compact{Compact: &contextv1.CompactResponse{Summary: sum, Context: ctx}}}, nil
}

// EntrySize is the accounted size of an entry: role, content, metadata
// and embedding (4 bytes a dimension, as stored).
func EntrySize(e *contextv1.Entry) uint64 {
	n := len(e.GetRole()) + len(e.GetText()) + len(e.GetData()) + 4*len(e.GetEmbedding())
	for k, v := range e.GetMetadata() {
		n += len(k) + len(v)
	}
	return uint64(n)
}

// memoryBytes is what a memory item counts in the tenant's usage: its
// key, value and labels, and 4 bytes a dimension of its embedding.
func memoryBytes(m *contextv1.MemoryItem) uint64 {
	n := len(m.GetKey()) + len(m.GetValue()) + 4*int(m.GetEmbeddingDims())
	for k, v := range m.GetLabels() {
		n += len(k) + len(v)
	}
	return uint64(n)
}

func applyPutMemory(o *opCtx) (*cellv1.CommandResult, error) {
	req := o.c.GetPutMemory()
	tenant, key := o.c.GetTenant(), req.GetKey()
	if key == "" {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "key", Description: "required"})
	}
	mkey := scopedMemoryKey(tenant, MemoryPrincipal(req.GetScope(), o.c.GetPrincipal()), key)
	var old contextv1.MemoryItem
	exists := o.tx.get(mkey, &old)
	live := exists && !expired(old.GetExpireTime(), o.now) // an expired key reads as absent (revision 0)
	oldRev := old.GetRevision()
	if !live {
		oldRev = 0
	}
	if req.ExpectedRevision != nil && req.GetExpectedRevision() != oldRev {
		return nil, revisionMismatch(req.GetExpectedRevision(), oldRev)
	}
	principal := MemoryPrincipal(req.GetScope(), o.c.GetPrincipal())
	dims := len(req.GetEmbedding())
	if err := o.checkVectorDims(VectorMemory, "embedding", dims); err != nil {
		return nil, err
	}
	item := &contextv1.MemoryItem{Key: key, Value: req.GetValue(), Labels: req.GetLabels(), EmbeddingDims: uint32(dims)}
	newBytes, oldBytes, newKeys := int64(memoryBytes(item)), int64(0), int64(1)
	if exists {
		oldBytes, newKeys = int64(memoryBytes(&old)), 0
	}
	if err := o.checkQuota(0, newKeys, newBytes-oldBytes); err != nil {
		return nil, err
	}
	// A key's revision is the tseq of the mutation that wrote it: it grows
	// with every change and is never 0.
	rev := o.st.rec.GetTseq() + 1
	item.Revision, item.CreateTime, item.UpdateTime = rev, o.ts(), o.ts()
	item.ExpireTime = o.expiry(req.GetExpireTime(), req.GetTtl(), o.source.GetPutMemory().GetExpireTime())
	u := usage(o.st.rec)
	if live {
		item.CreateTime = old.GetCreateTime()
	}
	if exists {
		u.Bytes = sub(u.Bytes, memoryBytes(&old))
	} else {
		u.MemoryKeys++
	}
	u.Bytes += memoryBytes(item)
	o.dropMemoryVector(principal, key, old.GetEmbeddingDims())
	if dims > 0 {
		o.tx.setRaw(memoryVectorKey(tenant, principal, key), encodeVector(req.GetEmbedding()))
		o.countVectors(VectorMemory, dims, 1)
	}
	o.tx.put(mkey, item)
	o.reindexMemory(MemoryPrincipal(req.GetScope(), o.c.GetPrincipal()), key, item)
	ikind, iid := memoryIndexID(MemoryPrincipal(req.GetScope(), o.c.GetPrincipal()), key)
	o.indexExpiry(ikind, iid, old.GetExpireTime(), item.GetExpireTime())
	o.changed = true
	return &cellv1.CommandResult{Result: &cellv1.CommandResult_PutMemory{PutMemory: &contextv1.PutMemoryResponse{Revision: rev, ExpireTime: item.GetExpireTime()}}}, nil
}

// quotaOf is the quota in force for a tenant (H4): each field of the
// tenant's own quota that is not 0, else the cell's default (replicated
// settings, so every replica decides alike).
func quotaOf(settings *cellv1.CellSettings, rec *cellv1.TenantRecord) *cellv1.TenantQuota {
	def, own := settings.GetTenantQuota(), rec.GetQuota()
	pick := func(o, d uint64) uint64 {
		if o != 0 {
			return o
		}
		return d
	}
	return &cellv1.TenantQuota{
		MaxBytes:      pick(own.GetMaxBytes(), def.GetMaxBytes()),
		MaxContexts:   pick(own.GetMaxContexts(), def.GetMaxContexts()),
		MaxMemoryKeys: pick(own.GetMaxMemoryKeys(), def.GetMaxMemoryKeys()),
		// Retention is not a bound checkQuota enforces; retentionOf reads it.
		DefaultRetentionNanos: retentionOf(settings, rec),
	}
}

// checkQuota refuses a client write that would take the tenant's usage
// above its quota (H4): contexts, memory keys and bytes it would add
// (bytes may be negative). Only a count that grows is checked, so deletes
// and writes that shrink a value always pass, also over the quota (after a
// quota was lowered, or on a promoted standby). It reads replicated state
// only: every replica refuses the same commands. Called before the
// operation writes anything, so a refused command writes nothing.
func (o *opCtx) checkQuota(contexts, keys, bytes int64) *cperr.Error {
	if o.replicated {
		return nil
	}
	q, u := quotaOf(o.tx.settings, o.st.rec), o.st.rec.GetUsage()
	for _, c := range []struct {
		name       string
		limit, cur uint64
		add        int64
	}{
		{"max_contexts", q.GetMaxContexts(), u.GetContexts(), contexts},
		{"max_memory_keys", q.GetMaxMemoryKeys(), u.GetMemoryKeys(), keys},
		{"max_bytes", q.GetMaxBytes(), u.GetBytes(), bytes},
	} {
		if c.limit == 0 || c.add <= 0 || c.cur+uint64(c.add) <= c.limit {
			continue
		}
		want := c.cur + uint64(c.add)
		tenant := o.c.GetTenant()
		return cperr.New(cperr.QuotaExceeded, "tenant %s: %s quota %d exceeded: usage %d + %d would be %d (delete data or ask for a higher quota)",
			tenant, c.name, c.limit, c.cur, c.add, want).
			With(cperr.MetaTenant, tenant).
			With(cperr.MetaQuota, c.name).
			With(cperr.MetaLimit, strconv.FormatUint(c.limit, 10)).
			With(cperr.MetaUsage, strconv.FormatUint(want, 10))
	}
	return nil
}

// PrincipalLabel is the reserved context label naming the principal that
// created a context (Command.principal at create; a client's own value is
// replaced). Contexts are indexed by it (ListOwnedContexts), and the MCP
// tools treat a context of another principal as missing.
const PrincipalLabel = "cellplane.principal"

// MemoryPrincipal is whose memory a memory request addresses: the
// caller's own (principal) unless it asks for the tenant scope; a caller
// without a principal (authentication off, tenant-token calls) has only
// the tenant's. "" is the tenant scope.
// ownerLabels are a new context's labels: the request's, with the
// authenticated creator (the command's principal) as its owner, whatever
// owner label the client sent.
func (o *opCtx) ownerLabels(req map[string]string) map[string]string {
	p := o.c.GetPrincipal()
	if p == "" {
		return req
	}
	labels := make(map[string]string, len(req)+1)
	maps.Copy(labels, req)
	labels[PrincipalLabel] = p
	return labels
}

// indexOwner adds a new context to its owner's index.
func (o *opCtx) indexOwner(id string, labels map[string]string) {
	if owner := labels[PrincipalLabel]; owner != "" {
		o.tx.setRaw(ownedKey(o.c.GetTenant(), owner, id), []byte{})
	}
}

// memoryIndexID names a memory key in the expiry index: the tenant's
// shared key as itself (kind 'm'), a principal's own key as its principal
// prefix and key (kind 'M'; memoryKeyOfIndex reverses it).
func memoryIndexID(principal, key string) (kind byte, id string) {
	if principal == "" {
		return kindMemory, key
	}
	base := principalPrefix("", kindPrincipalMemory, principal)
	return kindPrincipalMemory, string(base[len(tenantKey("", kindPrincipalMemory, 0)):]) + key
}

// memoryKeyOfIndex is the memory key an expiry index entry names.
func memoryKeyOfIndex(tenant string, kind byte, id string) []byte {
	return append(tenantKey(tenant, kind, len(id)), id...)
}

func MemoryPrincipal(scope contextv1.MemoryScope, principal string) string {
	if scope == contextv1.MemoryScope_MEMORY_SCOPE_TENANT {
		return ""
	}
	return principal
}

func revisionMismatch(want, have uint64) *cperr.Error {
	return cperr.New(cperr.RevisionMismatch, "expected revision %d, key is at revision %d", want, have).
		With(cperr.MetaRevision, strconv.FormatUint(have, 10))
}

func applyDeleteMemory(o *opCtx) (*cellv1.CommandResult, error) {
	req := o.c.GetDeleteMemory()
	tenant, key := o.c.GetTenant(), req.GetKey()
	mkey := scopedMemoryKey(tenant, MemoryPrincipal(req.GetScope(), o.c.GetPrincipal()), key)
	var old contextv1.MemoryItem
	if !o.tx.get(mkey, &old) || expired(old.GetExpireTime(), o.now) {
		// An expired key is absent (the sweep removes it).
		if req.ExpectedRevision != nil && req.GetExpectedRevision() != 0 {
			return nil, revisionMismatch(req.GetExpectedRevision(), 0)
		}
		return nil, cperr.New(cperr.KeyNotFound, "memory key not found")
	}
	if req.ExpectedRevision != nil && req.GetExpectedRevision() != old.GetRevision() {
		return nil, revisionMismatch(req.GetExpectedRevision(), old.GetRevision())
	}
	o.tx.del(mkey)
	o.dropMemoryVector(MemoryPrincipal(req.GetScope(), o.c.GetPrincipal()), key, old.GetEmbeddingDims())
	o.reindexMemory(MemoryPrincipal(req.GetScope(), o.c.GetPrincipal()), key, nil)
	ikind, iid := memoryIndexID(MemoryPrincipal(req.GetScope(), o.c.GetPrincipal()), key)
	o.indexExpiry(ikind, iid, old.GetExpireTime(), nil)
	u := usage(o.st.rec)
	u.MemoryKeys = sub(u.MemoryKeys, 1)
	u.Bytes = sub(u.Bytes, memoryBytes(&old))
	o.changed = true
	return nil, nil
}

// applySetTenant changes a tenant's role and epoch. Epochs never go down.
// Becoming OWNER always takes a new epoch (at the same epoch a tenant may
// only lose authority, or move between STANDBY and FENCED, which
// acknowledge nothing), so two cells can never both be OWNER at one epoch.
//
// OWNER and FENCED changes are tenant mutations: they get a tseq and a
// change-log event (a fence's tseq is what a move's target must reach).
// Becoming STANDBY is bookkeeping of this cell only and gets none: a
// standby's tseq is its source's.
func applySetTenant(o *opCtx) (*cellv1.CommandResult, error) {
	op := o.c.GetSetTenant()
	role, epoch := op.GetRole(), op.GetEpoch()
	if role == cellv1.Role_ROLE_UNSPECIFIED {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "role", Description: "required"})
	}
	if epoch == 0 {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "epoch", Description: "must be at least 1"})
	}
	if role == cellv1.Role_ROLE_STANDBY && op.GetSourceCell() == "" {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "source_cell", Description: "required for STANDBY"})
	}
	rec := o.st.rec
	if rec != nil {
		quotaChanged := op.GetQuota() != nil && !proto.Equal(op.GetQuota(), rec.GetQuota())
		switch {
		case epoch < rec.GetEpoch():
			return nil, cperr.New(cperr.StaleEpoch, "epoch %d is below the tenant's epoch %d", epoch, rec.GetEpoch()).
				With(cperr.MetaEpoch, strconv.FormatUint(rec.GetEpoch(), 10))
		case epoch == rec.GetEpoch() && role == rec.GetRole() && (role != cellv1.Role_ROLE_STANDBY || op.GetSourceCell() == rec.GetSourceCell()):
			if quotaChanged {
				// Only the quota changes: an owner's (or a fenced
				// tenant's) change is logged, so its standby follows.
				setQuota(rec, op.GetQuota())
				o.st.dirty = true
				o.changed = role != cellv1.Role_ROLE_STANDBY
			}
			return &cellv1.CommandResult{Result: &cellv1.CommandResult_Tenant{Tenant: tenantInfo(o.c.GetTenant(), rec)}}, nil
		case epoch == rec.GetEpoch() && role == cellv1.Role_ROLE_OWNER:
			return nil, cperr.New(cperr.StaleEpoch, "becoming %s needs an epoch above %d", role, rec.GetEpoch()).
				With(cperr.MetaEpoch, strconv.FormatUint(rec.GetEpoch(), 10))
		}
	} else {
		rec = &cellv1.TenantRecord{CreateTimeUnixNano: o.now, Usage: &cellv1.TenantUsage{}}
		o.st.rec = rec
		o.st.deleted = false
	}
	o.st.dirty = true
	if op.GetQuota() != nil {
		setQuota(rec, op.GetQuota())
	}
	if role == cellv1.Role_ROLE_STANDBY {
		// A standby keeps its data only when the caller vouches that it is
		// a prefix of the new source's history (resume); otherwise the sink
		// bootstraps it from an export first.
		var keep bool
		switch rec.GetRole() {
		case cellv1.Role_ROLE_STANDBY:
			keep = rec.GetBootstrapped() && (rec.GetSourceCell() == op.GetSourceCell() || op.GetResume())
		case cellv1.Role_ROLE_OWNER, cellv1.Role_ROLE_FENCED:
			keep = op.GetResume() // an old owner's own history
		}
		rec.Role, rec.Epoch, rec.SourceCell, rec.Bootstrapped = role, epoch, op.GetSourceCell(), keep
		rec.ReplicaFloorTseq = 0
		return &cellv1.CommandResult{Result: &cellv1.CommandResult_Tenant{Tenant: tenantInfo(o.c.GetTenant(), rec)}}, nil
	}
	if role == cellv1.Role_ROLE_OWNER {
		rec.SourceCell, rec.Bootstrapped = "", false
	}
	rec.Role, rec.Epoch = role, epoch
	o.changed = true
	// tseq is assigned after apply; the info in the result is completed then.
	return &cellv1.CommandResult{Result: &cellv1.CommandResult_Tenant{Tenant: &cellv1.TenantInfo{Tenant: o.c.GetTenant(), Role: role, Epoch: epoch}}}, nil
}

// setQuota sets a tenant's own quota (nil when every field is 0: the
// cell's default applies).
func setQuota(rec *cellv1.TenantRecord, q *cellv1.TenantQuota) {
	if q == nil || proto.Equal(q, &cellv1.TenantQuota{}) {
		rec.Quota = nil
		return
	}
	rec.Quota = proto.Clone(q).(*cellv1.TenantQuota)
}

func applyDeleteTenant(o *opCtx) (*cellv1.CommandResult, error) {
	tenant := o.c.GetTenant()
	if o.st.rec == nil {
		return nil, cperr.New(cperr.TenantNotFound, "tenant not found in this cell")
	}
	if err := checkDeleteGuard(o.st.rec, o.c.GetDeleteTenant()); err != nil {
		return nil, err
	}
	o.tx.delRange(tenantPrefix(tenant), tenantEnd(tenant))
	o.st.rec = nil
	o.st.deleted = true
	o.st.dirty = false
	return nil, nil
}

// checkDeleteGuard is a guarded delete's condition (docs/reliability.md
// "Guarded deletes (M1)"): the tenant's role here is one the op allows
// (none listed: any) and its epoch is the op's (0: any). Checked in apply,
// so nothing can change the record between the check and the delete.
func checkDeleteGuard(rec *cellv1.TenantRecord, op *cellv1.DeleteTenantOp) *cperr.Error {
	if roles := op.GetAllowedRoles(); len(roles) > 0 && !slices.Contains(roles, rec.GetRole()) {
		return cperr.New(cperr.WrongCell, "delete refused: the tenant is %s here at epoch %d, not one of the roles the delete allows %v",
			rec.GetRole(), rec.GetEpoch(), roles).
			With(cperr.MetaRole, rec.GetRole().String()).
			With(cperr.MetaEpoch, strconv.FormatUint(rec.GetEpoch(), 10))
	}
	if e := op.GetExpectedEpoch(); e != 0 && e != rec.GetEpoch() {
		return cperr.New(cperr.StaleEpoch, "delete refused: the tenant is at epoch %d here, not the expected %d", rec.GetEpoch(), e).
			With(cperr.MetaEpoch, strconv.FormatUint(rec.GetEpoch(), 10))
	}
	return nil
}

func applyRegisterNode(o *opCtx) (*cellv1.CommandResult, error) {
	n := o.c.GetRegisterNode()
	if n.GetNodeId() == "" {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "node.node_id", Description: "required"})
	}
	o.tx.put(nodeKey(n.GetNodeId()), n)
	return nil, nil
}

func applyCellSettings(o *opCtx) (*cellv1.CommandResult, error) {
	st := o.c.GetCellSettings()
	if st.GetChangelogRetentionNanos() < 0 {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "cell_settings.changelog_retention_nanos", Description: "must not be negative"})
	}
	o.tx.put(keySettings, st)
	o.tx.settings = st
	return nil, nil
}

func usage(rec *cellv1.TenantRecord) *cellv1.TenantUsage {
	if rec.Usage == nil {
		rec.Usage = &cellv1.TenantUsage{}
	}
	return rec.Usage
}

func sub(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// tenantInfo renders a record for CellService.
func tenantInfo(tenant string, rec *cellv1.TenantRecord) *cellv1.TenantInfo {
	return &cellv1.TenantInfo{
		Tenant:             tenant,
		Role:               rec.GetRole(),
		Epoch:              rec.GetEpoch(),
		Tseq:               rec.GetTseq(),
		Usage:              proto.Clone(usage(rec)).(*cellv1.TenantUsage), // not the record's own: it changes with later commands
		ChangelogFirstTseq: rec.GetChangelogFirstTseq(),
		ChangelogCount:     rec.GetChangelogCount(),
		ChangelogBytes:     rec.GetChangelogBytes(),
		SourceCell:         rec.GetSourceCell(),
		Bootstrapped:       rec.GetBootstrapped(),
		ReplicaFloorTseq:   rec.GetReplicaFloorTseq(),
		ReplicaForcedTrims: rec.GetReplicaForcedTrims(),
		Quota:              proto.Clone(rec.GetQuota()).(*cellv1.TenantQuota),
	}
}
