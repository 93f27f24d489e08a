package store

import (
	"encoding/binary"
	"hash/maphash"

	"github.com/cockroachdb/pebble/v2"
)

// dedupFilters answer, without touching Pebble, that a request id is
// certainly not remembered by its tenant: almost every write carries a new
// id, and its dedup lookup was a point read that misses through every
// level of the LSM — at the steady state of a full dedup window, the
// largest single cost of an apply left (about a fifth, docs/benchmarks.md
// "round three").
//
// Like the head cache it is a cache of the committed state and nothing
// else, and it errs one way only: a filter holds every id the tenant
// remembers (a superset: false positives fall through to Pebble), so the
// state machine reads what Pebble would answer and every replica, with or
// without filters, applies identically (TestApplyShortcutsAgree).
//
// Per tenant it is a list of Bloom generations over the dedup queue's
// positions (ids are forgotten oldest first, so a generation is dropped
// whole once the queue's first position passes it). A tenant's filter is
// created on its first lookup and covers new ids from then on; the ids it
// remembered before are scanned from the queue a bounded step per lookup
// (dedupFilterScanStep), and until that scan is done the filter answers
// "maybe". Anything that writes dedup records other than a command's own
// (an import, a restore) or resets the tenant (delete) drops the tenant's
// filter; it is built again from the queue.
//
// Its memory is bounded (StateDedupFilterBytes): past the budget, other
// tenants' filters are dropped (a single tenant's filter may exceed it:
// about 10 bits per remembered id, 1.25 MiB for a full window of a
// million ids).
//
// Only the FSM goroutine uses it, so it has no lock.
type dedupFilters struct {
	budget  int64 // bytes of Bloom bits at most
	used    int64
	seed    maphash.Seed
	tenants map[string]*tenantFilter
}

// dedupFilterScanStep bounds the queue entries one lookup scans while a
// tenant's filter is being built (about a millisecond).
const dedupFilterScanStep = 4096

// Generation sizes: the first holds dedupGenMin ids, each next one twice
// the previous up to dedupGenMax, so a small tenant costs little memory.
const (
	dedupGenMin   = 256
	dedupGenMax   = 1 << 16
	dedupGenBits  = 10 // bits per id: about 1 % false positives with 7 probes
	dedupGenProbe = 7
)

type tenantFilter struct {
	// from is the first queue position added as written; [scanned, from)
	// is scanned from the queue; the filter is complete once they meet.
	scanned, from uint64
	gens          []*bloomGen // by position, oldest first
}

type bloomGen struct {
	lo, hi uint64 // queue positions [lo, hi) added so far
	cap    uint64 // ids it takes
	n      uint64
	bits   []uint64
}

func newDedupFilters(budget int64) *dedupFilters {
	if budget <= 0 {
		return nil
	}
	return &dedupFilters{budget: budget, seed: maphash.MakeSeed(), tenants: make(map[string]*tenantFilter)}
}

// mayContain reports whether the tenant may remember id (true unless the
// filter is sure it does not). first and next are the tenant's dedup
// queue bounds (TenantRecord.dedup_first, dedup_next); b reads the queue.
func (d *dedupFilters) mayContain(b pebble.Reader, tenant string, first, next uint64, id string) bool {
	if d == nil {
		return true
	}
	tf, ok := d.tenants[tenant]
	if !ok {
		tf = &tenantFilter{scanned: first, from: next}
		d.tenants[tenant] = tf
	}
	if tf.scanned < first {
		tf.scanned = first
	}
	if tf.scanned < tf.from && !d.scan(b, tenant, tf) {
		return true
	}
	h := maphash.String(d.seed, id)
	for _, g := range tf.gens {
		if g.has(h) {
			return true
		}
	}
	return false
}

// scan adds up to dedupFilterScanStep queued ids below tf.from; it reports
// whether the filter is complete.
func (d *dedupFilters) scan(b pebble.Reader, tenant string, tf *tenantFilter) bool {
	end := min(tf.from, tf.scanned+dedupFilterScanStep)
	it, err := b.NewIter(&pebble.IterOptions{LowerBound: dedupQueueKey(tenant, tf.scanned), UpperBound: dedupQueueKey(tenant, end)})
	if err != nil {
		return false
	}
	for ok := it.First(); ok; ok = it.Next() {
		k := it.Key()
		pos := binary.BigEndian.Uint64(k[len(k)-8:])
		d.addTo(tf, pos, string(it.Value()))
	}
	if err := it.Close(); err != nil {
		return false
	}
	tf.scanned = end
	return tf.scanned >= tf.from
}

// add records that the tenant now remembers id at queue position pos (a
// command's own dedup record). Ids of a tenant without a filter need no
// record: its filter, when created, scans them.
func (d *dedupFilters) add(tenant string, pos uint64, id string) {
	if d == nil {
		return
	}
	if tf, ok := d.tenants[tenant]; ok && pos >= tf.from {
		d.addTo(tf, pos, id)
	}
}

func (d *dedupFilters) addTo(tf *tenantFilter, pos uint64, id string) {
	h := maphash.String(d.seed, id)
	// Old ids (the scan) and new ones interleave: a generation takes a
	// position only in order, else a new one starts.
	if n := len(tf.gens); n > 0 {
		if g := tf.gens[n-1]; g.n < g.cap && pos >= g.hi {
			g.put(h, pos)
			return
		}
	}
	c := uint64(dedupGenMin)
	if n := len(tf.gens); n > 0 {
		c = min(2*tf.gens[n-1].cap, dedupGenMax)
	}
	g := &bloomGen{lo: pos, hi: pos, cap: c, bits: make([]uint64, (c*dedupGenBits+63)/64)}
	g.put(h, pos)
	tf.gens = append(tf.gens, g)
	d.used += g.size()
	for d.used > d.budget && len(d.tenants) > 1 {
		for k, other := range d.tenants { // drop an arbitrary other tenant's filter
			if other != tf {
				d.drop(k)
				break
			}
		}
	}
}

func (g *bloomGen) size() int64 { return int64(len(g.bits)) * 8 }

// forgot drops the generations wholly below the tenant's first queue
// position (evicted ids).
func (d *dedupFilters) forgot(tenant string, first uint64) {
	if d == nil {
		return
	}
	tf, ok := d.tenants[tenant]
	if !ok {
		return
	}
	keep := tf.gens[:0]
	for _, g := range tf.gens {
		if g.hi > first {
			keep = append(keep, g)
		} else {
			d.used -= g.size()
		}
	}
	clear(tf.gens[len(keep):])
	tf.gens = keep
}

// drop forgets the tenant's filter (built again on its next lookup).
func (d *dedupFilters) drop(tenant string) {
	if d == nil {
		return
	}
	if tf, ok := d.tenants[tenant]; ok {
		for _, g := range tf.gens {
			d.used -= g.size()
		}
		delete(d.tenants, tenant)
	}
}

func (d *dedupFilters) clear() {
	if d != nil {
		clear(d.tenants)
		d.used = 0
	}
}

func (g *bloomGen) put(h, pos uint64) {
	m := uint64(len(g.bits)) * 64
	h1, h2 := h, h>>32|h<<32|1
	for i := uint64(0); i < dedupGenProbe; i++ {
		b := (h1 + i*h2) % m
		g.bits[b/64] |= 1 << (b % 64)
	}
	g.n++
	g.lo = min(g.lo, pos)
	g.hi = max(g.hi, pos+1)
}

func (g *bloomGen) has(h uint64) bool {
	m := uint64(len(g.bits)) * 64
	h1, h2 := h, h>>32|h<<32|1
	for i := uint64(0); i < dedupGenProbe; i++ {
		b := (h1 + i*h2) % m
		if g.bits[b/64]&(1<<(b%64)) == 0 {
			return false
		}
	}
	return true
}
