package routing

import (
	"errors"
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/cellplane/cellplane/internal/auth"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// numShards is the number of tenant shards (a power of two). Writers lock
// one shard; readers take its read lock only for the map lookup.
const numShards = 64

// entry is one tenant, 24 bytes: the cell and the limits are indexes into
// the view's interners, never strings or protobufs; the flags byte sits in
// what would otherwise be padding.
type entry struct {
	// ver is the tenant key's version (etcd ModRevision): watch events and
	// Refresh apply only newer versions.
	ver    int64
	epoch  uint64
	limits uint32
	cell   uint16
	state  uint8 // cpv1.TenantState
	flags  uint8 // flag* bits
}

// Entry flags (also their encoding in the snapshot).
const (
	// flagCuttingOver: the placement record says cutting_over (a move or
	// failover is between the fence and the flip).
	flagCuttingOver uint8 = 1 << iota

	knownFlags = flagCuttingOver
)

func (e entry) active() bool {
	return cpv1.TenantState(e.state) == cpv1.TenantState_TENANT_STATE_ACTIVE && e.cell != 0
}

func (e entry) cuttingOver() bool { return e.flags&flagCuttingOver != 0 }

// cutoverDelta is what replacing old (ok: present) by e adds to the count
// of tenants cutting over.
func cutoverDelta(old entry, ok bool, e entry) int64 {
	var d int64
	if ok && old.cuttingOver() {
		d--
	}
	if e.cuttingOver() {
		d++
	}
	return d
}

type shard struct {
	mu sync.RWMutex
	m  map[string]entry
	_  [64 - 32]byte // keep shards on separate cache lines
}

// apiKey is one key of tenants/<t>/keys/<id>.
type apiKey struct {
	tenant  string
	hash    []byte
	revoked bool
	// principal is ApiKey.principal ("" for the key id); scopes its
	// scopes (auth.KeyScopes of the stored list).
	principal string
	scopes    auth.Scopes
}

// errInternFull: more distinct values than an index can address.
var errInternFull = errors.New("routing: interner full")

const (
	chunkBits = 10
	chunkLen  = 1 << chunkBits
)

// interner maps values to dense indexes (0 is the zero value). Reads are
// lock-free: values live in fixed chunks that never move, reached through
// a directory that is copied when it grows. A value is written before any
// entry that references its index is published (under a shard lock), so a
// reader that sees the index sees the value.
type interner[T comparable] struct {
	mu  sync.Mutex
	idx map[T]uint32
	n   uint32
	max uint32
	dir atomic.Pointer[[]*[chunkLen]T]
}

func newInterner[T comparable](maxN uint32) *interner[T] {
	in := &interner[T]{idx: make(map[T]uint32), max: maxN}
	dir := []*[chunkLen]T{new([chunkLen]T)}
	in.dir.Store(&dir)
	var zero T
	in.idx[zero] = 0
	in.n = 1
	return in
}

func (in *interner[T]) get(i uint32) T {
	return (*in.dir.Load())[i>>chunkBits][i&(chunkLen-1)]
}

func (in *interner[T]) intern(v T) (uint32, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if i, ok := in.idx[v]; ok {
		return i, nil
	}
	if in.n >= in.max {
		return 0, errInternFull
	}
	i := in.n
	dir := *in.dir.Load()
	c := int(i >> chunkBits)
	if c == len(dir) {
		nd := make([]*[chunkLen]T, len(dir)+1)
		copy(nd, dir)
		nd[c] = new([chunkLen]T)
		dir = nd
		in.dir.Store(&nd)
	}
	dir[c][i&(chunkLen-1)] = v
	in.idx[v] = i
	in.n++
	return i, nil
}

// view is one generation of the table: built by a full load (or from the
// snapshot), then updated in place by watch events, and replaced as a
// whole by the next full load.
type view struct {
	seed    maphash.Seed
	shards  [numShards]shard
	cellIDs *interner[string]
	limits  *interner[Limits]

	keysMu sync.RWMutex
	keys   map[string]apiKey
	// revoked is the JWT revocation list: tenant → entry id → entry
	// (under keysMu).
	revoked map[string]map[string]auth.RevocationEntry

	cells atomic.Pointer[map[string]*CellRoute]

	// rev is the newest revision applied; tenantsRev the newest revision
	// of tenants/ the watch is about to apply or has applied (Refresh
	// compares against it, see Table.Refresh).
	rev        atomic.Int64
	tenantsRev atomic.Int64
	n          atomic.Int64
	// cutting counts the tenant records with flagCuttingOver (any state).
	cutting atomic.Int64
}

func newView() *view {
	v := &view{
		seed:    maphash.MakeSeed(),
		cellIDs: newInterner[string](1 << 16),
		limits:  newInterner[Limits](1 << 31),
		keys:    make(map[string]apiKey),
		revoked: make(map[string]map[string]auth.RevocationEntry),
	}
	for i := range v.shards {
		v.shards[i].m = make(map[string]entry)
	}
	cells := map[string]*CellRoute{}
	v.cells.Store(&cells)
	return v
}

func (v *view) shard(tenant string) *shard {
	return &v.shards[maphash.String(v.seed, tenant)&(numShards-1)]
}

func (v *view) get(tenant string) (entry, bool) {
	sh := v.shard(tenant)
	sh.mu.RLock()
	e, ok := sh.m[tenant]
	sh.mu.RUnlock()
	return e, ok
}

func (v *view) route(tenant string, e entry) Route {
	return Route{Tenant: tenant, Cell: v.cellIDs.get(uint32(e.cell)), Epoch: e.epoch, Limits: v.limits.get(e.limits), CuttingOver: e.cuttingOver()}
}

// makeEntry interns a tenant record's cell and limits.
func (v *view) makeEntry(t *cpv1.Tenant, ver int64) (entry, error) {
	c, err := v.cellIDs.intern(t.GetCell())
	if err != nil {
		return entry{}, err
	}
	l, err := v.limits.intern(Limits{Rate: t.GetLimits().GetRate(), Burst: t.GetLimits().GetBurst(),
		BytesRate: t.GetLimits().GetBytesRate(), BytesBurst: t.GetLimits().GetBytesBurst()})
	if err != nil {
		return entry{}, err
	}
	e := entry{ver: ver, epoch: t.GetEpoch(), limits: l, cell: uint16(c), state: uint8(t.GetState())}
	if t.GetCuttingOver() {
		e.flags |= flagCuttingOver
	}
	return e, nil
}

// put stores e for tenant if it is newer than the entry there; cond, when
// non-nil, decides under the shard lock for an absent tenant.
func (v *view) put(tenant string, e entry, absentOK func() bool) bool {
	sh := v.shard(tenant)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, ok := sh.m[tenant]
	switch {
	case ok && old.ver >= e.ver:
		return false
	case !ok && absentOK != nil && !absentOK():
		return false
	}
	sh.m[tenant] = e
	if !ok {
		v.n.Add(1)
	}
	if d := cutoverDelta(old, ok, e); d != 0 {
		v.cutting.Add(d)
	}
	return true
}

// del removes tenant if its entry is older than ver.
func (v *view) del(tenant string, ver int64) bool {
	sh := v.shard(tenant)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	old, ok := sh.m[tenant]
	if !ok || old.ver > ver {
		return false
	}
	delete(sh.m, tenant)
	v.n.Add(-1)
	if old.cuttingOver() {
		v.cutting.Add(-1)
	}
	return true
}

func (v *view) apiKey(id string) (apiKey, bool) {
	v.keysMu.RLock()
	k, ok := v.keys[id]
	v.keysMu.RUnlock()
	return k, ok
}

func (v *view) setKey(id string, k apiKey) {
	v.keysMu.Lock()
	v.keys[id] = k
	v.keysMu.Unlock()
}

func (v *view) delKey(id string) {
	v.keysMu.Lock()
	delete(v.keys, id)
	v.keysMu.Unlock()
}

// revokedEntry finds an entry of tenant's revocation list.
func (v *view) revokedEntry(tenant, id string) (auth.RevocationEntry, bool) {
	v.keysMu.RLock()
	e, ok := v.revoked[tenant][id]
	v.keysMu.RUnlock()
	return e, ok
}

func (v *view) setRevoked(tenant, id string, e auth.RevocationEntry) {
	v.keysMu.Lock()
	m := v.revoked[tenant]
	if m == nil {
		m = map[string]auth.RevocationEntry{}
		v.revoked[tenant] = m
	}
	m[id] = e
	v.keysMu.Unlock()
}

func (v *view) delRevoked(tenant, id string) {
	v.keysMu.Lock()
	if m := v.revoked[tenant]; m != nil {
		delete(m, id)
		if len(m) == 0 {
			delete(v.revoked, tenant)
		}
	}
	v.keysMu.Unlock()
}

// setCells publishes cells (copy-on-write: the caller built a new map).
func (v *view) setCells(m map[string]*CellRoute) { v.cells.Store(&m) }

func (v *view) cellMap() map[string]*CellRoute { return *v.cells.Load() }
