package store

import (
	"bytes"
	"encoding/binary"
)

// Key layout of the Pebble state (every key starts with a one-byte space):
//
//	"\x00a"                          last applied Raft index and term (16 bytes)
//	"\x00t"                          number of tenant records (decimal)
//	"\x00s"                          CellSettings (replicated bounds)
//	"n" node id                      NodeInfo of a registered member
//	"T" tenant                       TenantRecord
//	"t" tenant "\x00" kind rest      the tenant's data, one contiguous range:
//	    'c' context id                   contextv1.Context (metadata)
//	    'e' context id "\x00" seq(8)     contextv1.Entry
//	    'm' memory key                   contextv1.MemoryItem (tenant scope)
//	    'M' len(p) p memory key          contextv1.MemoryItem of principal p
//	    'O' len(p) p context id          "" (index: contexts principal p created)
//	    'l' tseq(8)                      ChangeEvent
//	    'd' request id                   DedupRecord
//	    'q' dedup seq(8)                 request id (eviction order)
//	    'a' tseq(8)                      AuditRecord (audit.go)
//	    'o' context id "\x00" seq(8)     contextv1.Summary (compaction overlay up to seq)
//	    'x' expire(8) kind id            "" (expiry index: kind 'c' context, 'm' memory key)
//	    'v' 'c' context id "\x00" seq(8) float32 LE embedding of entry seq (vector.go)
//	    'v' 'm' len(p) p memory key      float32 LE embedding of a memory key (p "": tenant scope)
//	    'V' namespace ('c' or 'm')       dims(4 LE) count(8 LE): the namespace's fixed dimension
//	    'i' term "\x00" doc               uvarint tf, uvarint doc length (keyword posting, keyword.go)
//	    'w' doc                          the doc's terms and length (keyword forward entry)
//	    'k' class                        keyword counters: documents, total length (class 'e', 'm')
//
// A keyword doc is a data key without the tenant prefix: 'e' context id
// "\x00" seq(8), 'm' memory key, or 'M' len(p) p memory key.
//
// A principal p is a uvarint of its length and its bytes, so that no
// principal's range is a prefix of another's (principals are free text:
// a JWT subject).
//
// Tenant and context ids are [A-Za-z0-9._-] (validated at the edge), so the
// "\x00" separators cannot occur inside them and ranges stay contiguous.
// Sequence numbers are big-endian so byte order is numeric order.
const (
	spaceMeta   = 0x00
	spaceNode   = 'n'
	spaceRecord = 'T'
	spaceTenant = 't'

	kindContext = 'c'
	kindEntry   = 'e'
	kindMemory  = 'm'
	kindChange  = 'l'
	kindDedup   = 'd'
	kindDedupQ  = 'q'

	kindPrincipalMemory = 'M'
	kindOwned           = 'O'
	kindExpiry          = 'x'
	kindSummary         = 'o'
	kindAudit           = 'a'
)

var (
	keyApplied     = []byte{spaceMeta, 'a'}
	keyTenantCount = []byte{spaceMeta, 't'} // decimal count of tenant records
	keySettings    = []byte{spaceMeta, 's'} // CellSettings
)

func nodeKey(id string) []byte { return append([]byte{spaceNode}, id...) }

func recordKey(tenant string) []byte { return append([]byte{spaceRecord}, tenant...) }

// tenantPrefix is the start of the tenant's data range; tenantEnd its end.
func tenantPrefix(tenant string) []byte {
	k := make([]byte, 0, len(tenant)+2)
	k = append(k, spaceTenant)
	k = append(k, tenant...)
	return append(k, 0)
}

func tenantEnd(tenant string) []byte {
	k := tenantPrefix(tenant)
	k[len(k)-1] = 1
	return k
}

func tenantKey(tenant string, kind byte, n int) []byte {
	k := make([]byte, 0, len(tenant)+3+n)
	k = append(k, spaceTenant)
	k = append(k, tenant...)
	return append(k, 0, kind)
}

func contextKey(tenant, id string) []byte {
	return append(tenantKey(tenant, kindContext, len(id)), id...)
}

// entryPrefix is the start of a context's entries.
func entryPrefix(tenant, id string) []byte {
	k := append(tenantKey(tenant, kindEntry, len(id)+9), id...)
	return append(k, 0)
}

func entryKey(tenant, id string, seq uint64) []byte {
	return binary.BigEndian.AppendUint64(entryPrefix(tenant, id), seq)
}

// summaryPrefix is the start of a context's compaction summaries.
func summaryPrefix(tenant, id string) []byte {
	k := append(tenantKey(tenant, kindSummary, len(id)+9), id...)
	return append(k, 0)
}

// summaryKey is the summary covering a context's entries 1..upTo.
func summaryKey(tenant, id string, upTo uint64) []byte {
	return binary.BigEndian.AppendUint64(summaryPrefix(tenant, id), upTo)
}

func memoryKey(tenant, key string) []byte {
	return append(tenantKey(tenant, kindMemory, len(key)), key...)
}

// principalPrefix is the start of principal p's keys of kind.
func principalPrefix(tenant string, kind byte, p string) []byte {
	k := binary.AppendUvarint(tenantKey(tenant, kind, binary.MaxVarintLen64+len(p)), uint64(len(p)))
	return append(k, p...)
}

// memoryBase is the start of a memory scope's keys: the tenant's shared
// memory for principal "", else the principal's own.
func memoryBase(tenant, principal string) []byte {
	if principal == "" {
		return tenantKey(tenant, kindMemory, 0)
	}
	return principalPrefix(tenant, kindPrincipalMemory, principal)
}

func scopedMemoryKey(tenant, principal, key string) []byte {
	return append(memoryBase(tenant, principal), key...)
}

// ownedKey is the index entry of a context created by principal p.
func ownedKey(tenant, p, id string) []byte {
	return append(principalPrefix(tenant, kindOwned, p), id...)
}

func changeKey(tenant string, tseq uint64) []byte {
	return binary.BigEndian.AppendUint64(tenantKey(tenant, kindChange, 8), tseq)
}

func dedupKey(tenant, requestID string) []byte {
	return append(tenantKey(tenant, kindDedup, len(requestID)), requestID...)
}

func dedupQueueKey(tenant string, n uint64) []byte {
	return binary.BigEndian.AppendUint64(tenantKey(tenant, kindDedupQ, 8), n)
}

// tenantKind splits a key of the tenant data space into its tenant and
// kind (kind 0: the key is the tenant's prefix itself, or ends there). ok
// is false for a key outside the tenant space.
func tenantKind(key []byte) (tenant string, kind byte, ok bool) {
	if len(key) == 0 || key[0] != spaceTenant {
		return "", 0, false
	}
	i := bytes.IndexByte(key[1:], 0)
	if i < 0 {
		return "", 0, false
	}
	tenant = string(key[1 : 1+i])
	if rest := key[2+i:]; len(rest) > 0 {
		kind = rest[0]
	}
	return tenant, kind, true
}

// prefixEnd returns the smallest key greater than every key with prefix p.
func prefixEnd(p []byte) []byte {
	end := append([]byte(nil), p...)
	for i := len(end) - 1; i >= 0; i-- {
		if end[i] < 0xff {
			end[i]++
			return end[:i+1]
		}
	}
	return nil // p is all 0xff: no upper bound
}

// expiryKey indexes an item (kind kindContext or kindMemory) by its expiry
// (unix nanos), so that a sweep finds what is due without a scan.
func expiryKey(tenant string, at int64, kind byte, id string) []byte {
	k := binary.BigEndian.AppendUint64(tenantKey(tenant, kindExpiry, 9+len(id)), uint64(at))
	k = append(k, kind)
	return append(k, id...)
}
