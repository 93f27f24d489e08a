package service

import (
	"slices"
	"strings"
	"testing"

	"github.com/cellplane/cellplane/cells/store"
)

// TestFillScanPage: a filtered page stops at the page size, the byte
// budget or the scan budget; it resumes after the last item examined (or
// the last returned, when the byte budget cut the page), and paging to
// the end returns every match once.
func TestFillScanPage(t *testing.T) {
	keys := strings.Split("abcdefghijklmnop", "")
	match := func(k string) bool { return strings.Contains("bcgmnp", k) }
	// list is a store listing over keys keeping the matches, examining
	// at most f.MaxScan keys.
	list := func(calls *int) func(string, int, store.ListFilter) (store.ListPage[string], error) {
		return func(after string, n int, f store.ListFilter) (store.ListPage[string], error) {
			*calls++
			var p store.ListPage[string]
			for _, k := range keys {
				if k <= after {
					continue
				}
				if len(p.Items) == n || (f.MaxScan > 0 && p.Scanned >= f.MaxScan) {
					p.More = true
					break
				}
				p.Scanned++
				p.Last = k
				if match(k) {
					p.Items = append(p.Items, k)
				}
			}
			return p, nil
		}
	}
	id := func(s string) string { return s }
	tests := []struct {
		name         string
		limit, chunk int
		budget       uint64
		scan         int
		after        string
		want, resume string
		wantMore     bool
	}{
		{"all", 10, 64, 1 << 20, 100, "", "bcgmnp", "", false},
		{"page size", 2, 64, 1 << 20, 100, "", "bc", "c", true},
		{"scan bound cuts the page short", 10, 64, 1 << 20, 5, "", "bc", "e", true},
		{"scan bound: an empty page", 10, 64, 1 << 20, 3, "c", "", "f", true},
		{"scan bound across chunks", 10, 1, 1 << 20, 8, "", "bcg", "h", true},
		{"byte budget resumes after the last returned", 10, 64, 25, 100, "", "bc", "c", true},
		{"to the end from a cursor", 10, 64, 1 << 20, 100, "h", "mnp", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			got, resume, more, err := fillScanPage(tt.limit, tt.chunk, tt.budget, tt.scan, tt.after, list(&calls), store.ListFilter{}, id, func(string) int { return 10 })
			if err != nil || strings.Join(got, "") != tt.want || resume != tt.resume || more != tt.wantMore {
				t.Fatalf("fillScanPage = %q, resume %q, more %v, %v; want %q, %q, %v", got, resume, more, err, tt.want, tt.resume, tt.wantMore)
			}
		})
	}
	// Paging with every combination of bounds returns each match once.
	for limit := 1; limit <= 4; limit++ {
		for scan := 1; scan <= 6; scan++ {
			var all []string
			after := ""
			for pages := 0; ; pages++ {
				if pages > 100 {
					t.Fatalf("limit %d scan %d: no end", limit, scan)
				}
				calls := 0
				got, resume, more, err := fillScanPage(limit, 2, 1<<20, scan, after, list(&calls), store.ListFilter{}, id, func(string) int { return 1 })
				if err != nil || len(got) > limit {
					t.Fatalf("limit %d scan %d: %v, %v", limit, scan, got, err)
				}
				all = append(all, got...)
				if !more {
					break
				}
				after = resume
			}
			if !slices.Equal(all, strings.Split("bcgmnp", "")) {
				t.Errorf("limit %d scan %d: paged %v", limit, scan, all)
			}
		}
	}
}
