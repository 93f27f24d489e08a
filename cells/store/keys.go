package store

import (
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
//	    'm' memory key                   contextv1.MemoryItem
//	    'l' tseq(8)                      ChangeEvent
//	    'd' request id                   DedupRecord
//	    'q' dedup seq(8)                 request id (eviction order)
//	    'a' tseq(8)                      AuditRecord (audit.go)
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
	kindAudit   = 'a'
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

func memoryKey(tenant, key string) []byte {
	return append(tenantKey(tenant, kindMemory, len(key)), key...)
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
