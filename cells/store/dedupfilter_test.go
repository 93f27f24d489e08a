package store

import (
	"fmt"
	"testing"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"
)

// TestDedupFilter: a tenant's filter answers "maybe" for every id in its
// queue — those queued before the filter existed (scanned a step at a
// time, "maybe" for everything until the scan is done) and those added
// since — forgets only whole generations below the queue's first
// position, and says "no" to most ids it never saw.
func TestDedupFilter(t *testing.T) {
	db, err := pebble.Open("", &pebble.Options{FS: vfs.NewMem()})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	const old = 3*dedupFilterScanStep + 17 // ids queued before the filter
	b := db.NewBatch()
	for i := range uint64(old) {
		if err := b.Set(dedupQueueKey("acme", i), fmt.Appendf(nil, "old-%d", i), nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Commit(pebble.NoSync); err != nil {
		t.Fatal(err)
	}
	d := newDedupFilters(1 << 20)
	first, next := uint64(0), uint64(old)
	lookups := 0
	for {
		maybe := d.mayContain(db, "acme", first, next, "never-seen")
		lookups++
		if tf := d.tenants["acme"]; tf.scanned >= tf.from {
			break
		}
		if !maybe {
			t.Fatalf("lookup %d: 'no' before the scan is complete", lookups)
		}
	}
	if lookups != 4 {
		t.Fatalf("scan took %d lookups, want 4 steps of %d", lookups, dedupFilterScanStep)
	}
	for i := range uint64(old) {
		if !d.mayContain(db, "acme", first, next, fmt.Sprintf("old-%d", i)) {
			t.Fatalf("queued id old-%d: filter says no", i)
		}
	}
	for i := range uint64(100_000) {
		d.add("acme", next, fmt.Sprintf("new-%d", i))
		next++
	}
	// Forget all old ids and the first 50 000 new ones.
	first = old + 50_000
	d.forgot("acme", first)
	for i := uint64(50_000); i < 100_000; i++ {
		if !d.mayContain(db, "acme", first, next, fmt.Sprintf("new-%d", i)) {
			t.Fatalf("remembered id new-%d: filter says no", i)
		}
	}
	fp := 0
	for i := range 10_000 {
		if d.mayContain(db, "acme", first, next, fmt.Sprintf("absent-%d", i)) {
			fp++
		}
	}
	if fp > 300 {
		t.Fatalf("%d false positives in 10 000 absent ids", fp)
	}
	held := 0
	for _, g := range d.tenants["acme"].gens {
		held += int(g.n)
	}
	if held > 50_000+dedupGenMax {
		t.Fatalf("%d ids still held after forgetting all but 50 000", held)
	}
	// Dropped: built again from the queue (the old ids are still queued in
	// the database) and "maybe" until then.
	d.drop("acme")
	if !d.mayContain(db, "acme", 0, old, "absent-1") {
		t.Fatal("a rebuilt filter said no before its scan was done")
	}
	// A bounded memory: other tenants' filters are dropped past it.
	small := newDedupFilters(4 * dedupGenMin * dedupGenBits / 8)
	for i := range 10 {
		tenant := fmt.Sprint("t", i)
		small.mayContain(db, tenant, 0, 0, "x")
		small.add(tenant, 0, "x")
		if small.used > small.budget {
			t.Fatalf("%d bytes of filters, budget %d", small.used, small.budget)
		}
	}
	if len(small.tenants) != 4 {
		t.Fatalf("%d tenant filters within a budget for 4", len(small.tenants))
	}
	if small.drop("t9"); small.used != 3*dedupGenMin*dedupGenBits/8 {
		t.Fatalf("%d bytes used after a drop", small.used)
	}
	var none *dedupFilters
	if !none.mayContain(db, "acme", 0, 0, "x") {
		t.Fatal("without filters every id must be looked up")
	}
}
