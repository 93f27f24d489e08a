package validate

import (
	"errors"
	"fmt"

	"github.com/cellplane/cellplane/internal/ids"
)

// MapLimits bound a string map field (entry metadata, context labels).
type MapLimits struct {
	// MaxPairs is the largest number of keys.
	MaxPairs int
	// MaxKeyBytes bounds each key; keys must also be non-empty.
	MaxKeyBytes int
	// MaxValueBytes bounds each value.
	MaxValueBytes int
}

// Limits are the bounds every request is checked against. All are
// explicit; none is implied by another. DefaultLimits documents the
// defaults; a node may load other values from its configuration.
type Limits struct {
	// MaxIDLen bounds tenant, context and node ids (1..MaxIDLen characters
	// of [A-Za-z0-9._-], the rule of package ids).
	MaxIDLen int
	// MaxRequestIDLen bounds request_id (same charset; empty is allowed and
	// disables deduplication).
	MaxRequestIDLen int
	// MaxRequestBytes bounds the encoded size of one request message. The
	// gRPC server's receive limit must be at least this.
	MaxRequestBytes int

	// MaxEntriesPerAppend bounds entries in one Append.
	MaxEntriesPerAppend int
	// MaxEntryContentBytes bounds one entry's text or data.
	MaxEntryContentBytes int
	// MaxRoleBytes bounds an entry's role (which must be non-empty).
	MaxRoleBytes int
	// EntryMetadata bounds an entry's metadata map.
	EntryMetadata MapLimits
	// Labels bounds a context's labels map.
	Labels MapLimits

	// MaxMemoryKeyBytes bounds a memory key (and a ListMemory prefix).
	MaxMemoryKeyBytes int
	// MaxMemoryValueBytes bounds a memory value.
	MaxMemoryValueBytes int

	// DefaultPageSize is used when a list request has page_size 0;
	// MaxPageSize caps larger page sizes (a cap, not an error).
	DefaultPageSize int
	MaxPageSize     int
	// MaxPageTokenBytes bounds page_token (tokens are server-made and short).
	MaxPageTokenBytes int
	// MaxListScan bounds the stored items (contexts, memory keys) one
	// ListContexts / ListMemory call examines while it fills a page through
	// its filters; at the bound the call returns what it found with a page
	// token that resumes after the last item examined.
	MaxListScan int

	// DefaultReadEntries / MaxReadEntries: Read's max_entries when 0, and
	// its cap. They also size Watch batches.
	DefaultReadEntries int
	MaxReadEntries     int
	// DefaultReadBytes / MaxReadBytes: Read's max_bytes when 0, and its cap;
	// also the byte budget of one list page and of one Watch batch. Keep
	// MaxReadBytes plus one maximal entry under the clients' receive limit
	// (gRPC's default is 4 MiB).
	DefaultReadBytes uint64
	MaxReadBytes     uint64

	// MaxAddrLen bounds node addresses (host:port).
	MaxAddrLen int

	// MaxWatchesPerTenant caps the Watch streams one tenant holds open on
	// one node at once; the next is refused with QUOTA_EXCEEDED (finding
	// M6).
	MaxWatchesPerTenant int

	// Selector bounds a label selector (list and search filters): its
	// number of requirements and the values of one requirement. Keys and
	// values are bounded by the larger of Labels and EntryMetadata.
	Selector SelectorLimits

	// DefaultSearchHits / MaxSearchHits: a search's limit when 0, and its
	// cap (a cap, not an error).
	DefaultSearchHits int
	MaxSearchHits     int
	// MaxQueryBytes bounds a search's keyword query.
	MaxQueryBytes int
	// MaxKeywordPostings bounds the index postings one keyword search
	// scans (a query of very common words stops there and says so:
	// the response's truncated).
	MaxKeywordPostings int
	// MaxVectorDims bounds an embedding's dimension (in a search and, where
	// entries and memory carry embeddings, in writes).
	MaxVectorDims int
}

// SelectorLimits bound a contextv1.LabelSelector.
type SelectorLimits struct {
	MaxRequirements int
	MaxValues       int
}

const (
	kib = 1 << 10
	mib = 1 << 20
)

// DefaultLimits returns the documented defaults: ids of 1–128 characters
// of [A-Za-z0-9._-], entry content ≤ 1 MiB, memory keys ≤ 512 B, values
// ≤ 1 MiB, one request ≤ 4 MiB, and the bounds below.
func DefaultLimits() Limits {
	return Limits{
		MaxIDLen:             ids.MaxLen,
		MaxRequestIDLen:      ids.MaxLen,
		MaxRequestBytes:      4 * mib,
		MaxEntriesPerAppend:  1000,
		MaxEntryContentBytes: 1 * mib,
		MaxRoleBytes:         64,
		EntryMetadata:        MapLimits{MaxPairs: 64, MaxKeyBytes: 256, MaxValueBytes: 4 * kib},
		Labels:               MapLimits{MaxPairs: 32, MaxKeyBytes: 128, MaxValueBytes: 512},
		MaxMemoryKeyBytes:    512,
		MaxMemoryValueBytes:  1 * mib,
		DefaultPageSize:      100,
		MaxPageSize:          1000,
		MaxPageTokenBytes:    1 * kib,
		MaxListScan:          10000,
		DefaultReadEntries:   100,
		MaxReadEntries:       1000,
		DefaultReadBytes:     1 * mib,
		MaxReadBytes:         2 * mib,
		MaxAddrLen:           256,
		MaxWatchesPerTenant:  256,
		Selector:             SelectorLimits{MaxRequirements: 16, MaxValues: 64},
		DefaultSearchHits:    10,
		MaxSearchHits:        100,
		MaxQueryBytes:        1 * kib,
		MaxKeywordPostings:   200_000,
		MaxVectorDims:        4096,
	}
}

// Validate reports every inconsistent limit, naming the fields.
func (l Limits) Validate() error {
	var errs []error
	positive := func(name string, v int) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("validate: Limits.%s must be > 0, got %d", name, v))
		}
	}
	positive("MaxIDLen", l.MaxIDLen)
	positive("MaxRequestIDLen", l.MaxRequestIDLen)
	positive("MaxRequestBytes", l.MaxRequestBytes)
	positive("MaxEntriesPerAppend", l.MaxEntriesPerAppend)
	positive("MaxEntryContentBytes", l.MaxEntryContentBytes)
	positive("MaxRoleBytes", l.MaxRoleBytes)
	positive("MaxWatchesPerTenant", l.MaxWatchesPerTenant)
	for _, m := range []struct {
		name string
		lim  MapLimits
	}{{"EntryMetadata", l.EntryMetadata}, {"Labels", l.Labels}} {
		positive(m.name+".MaxPairs", m.lim.MaxPairs)
		positive(m.name+".MaxKeyBytes", m.lim.MaxKeyBytes)
		positive(m.name+".MaxValueBytes", m.lim.MaxValueBytes)
	}
	positive("MaxMemoryKeyBytes", l.MaxMemoryKeyBytes)
	positive("MaxMemoryValueBytes", l.MaxMemoryValueBytes)
	positive("DefaultPageSize", l.DefaultPageSize)
	positive("MaxPageSize", l.MaxPageSize)
	positive("MaxPageTokenBytes", l.MaxPageTokenBytes)
	positive("MaxListScan", l.MaxListScan)
	positive("DefaultReadEntries", l.DefaultReadEntries)
	positive("MaxReadEntries", l.MaxReadEntries)
	positive("MaxAddrLen", l.MaxAddrLen)
	positive("Selector.MaxRequirements", l.Selector.MaxRequirements)
	positive("Selector.MaxValues", l.Selector.MaxValues)
	positive("DefaultSearchHits", l.DefaultSearchHits)
	positive("MaxSearchHits", l.MaxSearchHits)
	positive("MaxQueryBytes", l.MaxQueryBytes)
	positive("MaxKeywordPostings", l.MaxKeywordPostings)
	positive("MaxVectorDims", l.MaxVectorDims)
	if l.DefaultSearchHits > l.MaxSearchHits {
		errs = append(errs, fmt.Errorf("validate: Limits.DefaultSearchHits (%d) exceeds MaxSearchHits (%d)", l.DefaultSearchHits, l.MaxSearchHits))
	}
	if l.DefaultReadBytes == 0 {
		errs = append(errs, errors.New("validate: Limits.DefaultReadBytes must be > 0"))
	}
	if l.MaxReadBytes == 0 {
		errs = append(errs, errors.New("validate: Limits.MaxReadBytes must be > 0"))
	}
	if l.DefaultPageSize > l.MaxPageSize {
		errs = append(errs, fmt.Errorf("validate: Limits.DefaultPageSize (%d) exceeds MaxPageSize (%d)", l.DefaultPageSize, l.MaxPageSize))
	}
	if l.DefaultReadEntries > l.MaxReadEntries {
		errs = append(errs, fmt.Errorf("validate: Limits.DefaultReadEntries (%d) exceeds MaxReadEntries (%d)", l.DefaultReadEntries, l.MaxReadEntries))
	}
	if l.DefaultReadBytes > l.MaxReadBytes {
		errs = append(errs, fmt.Errorf("validate: Limits.DefaultReadBytes (%d) exceeds MaxReadBytes (%d)", l.DefaultReadBytes, l.MaxReadBytes))
	}
	if l.MaxEntryContentBytes > l.MaxRequestBytes {
		errs = append(errs, fmt.Errorf("validate: Limits.MaxEntryContentBytes (%d) exceeds MaxRequestBytes (%d)", l.MaxEntryContentBytes, l.MaxRequestBytes))
	}
	if l.MaxMemoryValueBytes > l.MaxRequestBytes {
		errs = append(errs, fmt.Errorf("validate: Limits.MaxMemoryValueBytes (%d) exceeds MaxRequestBytes (%d)", l.MaxMemoryValueBytes, l.MaxRequestBytes))
	}
	return errors.Join(errs...)
}

// PageSize returns the effective page size for a requested one: the
// default for 0, capped at MaxPageSize.
func (l Limits) PageSize(requested uint32) int {
	if requested == 0 {
		return l.DefaultPageSize
	}
	return int(min(uint64(requested), uint64(l.MaxPageSize)))
}

// ReadEntries returns the effective max_entries of a read.
func (l Limits) ReadEntries(requested uint32) int {
	if requested == 0 {
		return l.DefaultReadEntries
	}
	return int(min(uint64(requested), uint64(l.MaxReadEntries)))
}

// ReadBytes returns the effective max_bytes of a read.
func (l Limits) ReadBytes(requested uint64) uint64 {
	if requested == 0 {
		return l.DefaultReadBytes
	}
	return min(requested, l.MaxReadBytes)
}

// SearchHits returns the effective limit of a search.
func (l Limits) SearchHits(requested uint32) int {
	if requested == 0 {
		return l.DefaultSearchHits
	}
	return int(min(uint64(requested), uint64(l.MaxSearchHits)))
}
