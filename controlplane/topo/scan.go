package topo

import (
	"context"
)

// Scanner is implemented by stores that can read every key under a prefix
// at one revision faster than List page by page. etcd's paged Range
// counts every remaining key of the range on each page (a full listing of
// N keys in pages of P visits ≈ N²/2P index entries); its RangeStream
// (etcd ≥ 3.7) sends the same keys in chunks without that count.
type Scanner interface {
	// Scan calls fn with the keys under prefix, in key order, in chunks,
	// all read at revision rev (0: the current revision), and returns
	// the revision read. fn's slice and its values are the caller's to
	// keep. An error from fn stops the scan and is returned as is.
	// ErrCompacted if rev was compacted away.
	Scan(ctx context.Context, prefix string, rev Revision, fn func([]KV) error) (Revision, error)
}

// Scan reads every key under prefix at revision rev (0: now) and returns
// the revision read: through the store's Scanner when it has one, page by
// page with List (pages of pageSize; 0: DefaultListLimit) otherwise. fn
// gets one chunk (a page) at a time.
func Scan(ctx context.Context, st Store, prefix string, rev Revision, pageSize int, fn func([]KV) error) (Revision, error) {
	if sc, ok := st.(Scanner); ok {
		return sc.Scan(ctx, prefix, rev, fn)
	}
	return ScanPages(ctx, st, prefix, rev, pageSize, fn)
}

// ScanPages is Scan through List, page by page (the fallback of stores
// without a Scanner, and of etcd servers without RangeStream).
func ScanPages(ctx context.Context, st Store, prefix string, rev Revision, pageSize int, fn func([]KV) error) (Revision, error) {
	opts := ListOptions{Limit: pageSize, Revision: rev}
	for {
		page, err := st.List(ctx, prefix, opts)
		if err != nil {
			return 0, err
		}
		if len(page.KVs) > 0 {
			if err := fn(page.KVs); err != nil {
				return 0, err
			}
		}
		opts.Revision = page.Revision
		if !page.More || len(page.KVs) == 0 {
			return page.Revision, nil
		}
		opts.After = page.KVs[len(page.KVs)-1].Key
	}
}
