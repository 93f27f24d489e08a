package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/cellplane/cellplane/internal/cperr"
)

// Vector search (docs/search.md "Vector search"). Clients send embeddings
// with entries (AppendRequest) and memory puts; the store keeps each as
// float32 little-endian under its own key, apart from the Entry or
// MemoryItem that every read returns:
//
//	'v' 'c' context id "\x00" seq(8)     the embedding of entry seq
//	'v' 'm' len(p) p memory key          the embedding of memory key (p "": tenant scope)
//	'V' namespace ('c' or 'm')           dims(4, LE) count(8, LE)
//
// A tenant has two vector namespaces, its contexts' ('c') and its
// memory's ('m'). The first vector written to a namespace fixes its
// dimension (the 'V' record, replicated state); a write or a search with
// another dimension is refused with INVALID_ARGUMENT naming both, while
// the namespace holds vectors (count > 0: once the last is deleted the
// next write fixes it again).
const (
	kindVector     = 'v'
	kindVectorDims = 'V'

	// VectorContexts and VectorMemory name a tenant's two namespaces.
	VectorContexts = 'c'
	VectorMemory   = 'm'
)

// vectorBase is the start of a namespace's vectors.
func vectorBase(tenant string, ns byte) []byte {
	return append(tenantKey(tenant, kindVector, 1), ns)
}

// contextVectorPrefix is the start of one context's entry vectors.
func contextVectorPrefix(tenant, id string) []byte {
	return append(append(vectorBase(tenant, VectorContexts), id...), 0)
}

func contextVectorKey(tenant, id string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(contextVectorPrefix(tenant, id), seq)
}

// memoryVectorBase is the start of one memory scope's vectors.
func memoryVectorBase(tenant, principal string) []byte {
	k := binary.AppendUvarint(vectorBase(tenant, VectorMemory), uint64(len(principal)))
	return append(k, principal...)
}

func memoryVectorKey(tenant, principal, key string) []byte {
	return append(memoryVectorBase(tenant, principal), key...)
}

func vectorDimsKey(tenant string, ns byte) []byte {
	return append(tenantKey(tenant, kindVectorDims, 1), ns)
}

// encodeVector is a vector's stored form: float32 little-endian.
func encodeVector(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

var errVectorEncoding = errors.New("vector: stored length is not a multiple of 4")

// DecodeVector reads a stored vector.
func DecodeVector(b []byte) ([]float32, error) {
	if len(b)%4 != 0 {
		return nil, errVectorEncoding
	}
	v := make([]float32, len(b)/4)
	for i := range v {
		v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return v, nil
}

// vectorNS is a namespace's 'V' record.
type vectorNS struct {
	dims  uint32
	count uint64
}

func decodeVectorNS(b []byte) vectorNS {
	if len(b) != 12 {
		return vectorNS{}
	}
	return vectorNS{dims: binary.LittleEndian.Uint32(b), count: binary.LittleEndian.Uint64(b[4:])}
}

func (n vectorNS) encode() []byte {
	b := binary.LittleEndian.AppendUint32(nil, n.dims)
	return binary.LittleEndian.AppendUint64(b, n.count)
}

func nsName(ns byte) string {
	if ns == VectorMemory {
		return "memory"
	}
	return "context"
}

// dimsMismatch is the refusal of a vector whose dimension is not its
// namespace's.
func dimsMismatch(field string, ns byte, got int, fixed uint32) *cperr.Error {
	return cperr.Invalid(cperr.FieldViolation{Field: field, Description: fmt.Sprintf(
		"has %d dimensions; the tenant's %s vectors have %d (fixed by the first embedding written)", got, nsName(ns), fixed)})
}

// vectorNS reads a namespace's record in apply.
func (o *opCtx) vectorNS(ns byte) vectorNS {
	return decodeVectorNS(o.tx.getRaw(vectorDimsKey(o.c.GetTenant(), ns)))
}

// checkVectorDims refuses dims (0: no vector) that is not the namespace's.
func (o *opCtx) checkVectorDims(ns byte, field string, dims int) *cperr.Error {
	if dims == 0 {
		return nil
	}
	n := o.vectorNS(ns)
	if n.count > 0 && int(n.dims) != dims {
		return dimsMismatch(field, ns, dims, n.dims)
	}
	return nil
}

// countVectors adds delta to a namespace's count; dims fixes the
// namespace's dimension when it held none.
func (o *opCtx) countVectors(ns byte, dims int, delta int64) {
	if delta == 0 {
		return
	}
	n := o.vectorNS(ns)
	if n.count == 0 && dims > 0 {
		n.dims = uint32(dims)
	}
	if delta < 0 {
		n.count = sub(n.count, uint64(-delta))
	} else {
		n.count += uint64(delta)
	}
	o.tx.setRaw(vectorDimsKey(o.c.GetTenant(), ns), n.encode())
}

// dropMemoryVector removes a memory item's vector (dims: the item's
// embedding_dims; 0 means it has none).
func (o *opCtx) dropMemoryVector(principal, key string, dims uint32) {
	if dims == 0 {
		return
	}
	o.tx.del(memoryVectorKey(o.c.GetTenant(), principal, key))
	o.countVectors(VectorMemory, 0, -1)
}

// dropContextVectors removes the vectors stored under context id (its
// record c): one range delete.
func (o *opCtx) dropContextVectors(id string, c interface{ GetVectorCount() uint64 }) {
	if c.GetVectorCount() == 0 {
		return
	}
	p := contextVectorPrefix(o.c.GetTenant(), id)
	o.tx.delRange(p, prefixEnd(p))
	o.countVectors(VectorContexts, 0, -int64(c.GetVectorCount()))
}

// memoryScopeOfIndex splits an expiry index entry of a memory key (kind
// kindMemory or kindPrincipalMemory, memoryIndexID) into its principal
// ("": tenant scope) and key.
func memoryScopeOfIndex(kind byte, id string) (principal, key string, ok bool) {
	if kind == kindMemory {
		return "", id, true
	}
	return splitPrincipalKey([]byte(id))
}
