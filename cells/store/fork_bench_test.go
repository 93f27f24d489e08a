package store

import (
	"fmt"
	"testing"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// BenchmarkFork applies fork_context to a context of 1k and of 100k
// entries (the state machine's apply, as every replica runs it): the
// time must not depend on the length (copy-on-write; docs/benchmarks.md).
func BenchmarkFork(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		b.Run(fmt.Sprintf("entries=%d", n), func(b *testing.B) {
			h := newFSM(b, func(c *fsmConfig) { c.dedupMaxIDs, c.cacheBytes = 0, 64<<20 }) // the default block cache (Config.StateCacheBytes)
			h.mustApply(setTenant("acme", owner, 1))
			h.mustApply(createContext("acme", "src"))
			text := make([]string, 1000)
			for i := range text {
				text[i] = fmt.Sprintf("entry %d of a long conversation, about a hundred bytes of text to make it realistic....", i)
			}
			for range n / len(text) {
				h.mustApply(appendText("acme", "src", "", text...))
			}
			// Settle the setup's writes (memtable flush, compactions) so
			// that they do not bill the forks.
			if err := h.f.db.Flush(); err != nil {
				b.Fatal(err)
			}
			if err := h.f.db.Compact(b.Context(), []byte{0}, []byte{0xff}, true); err != nil {
				b.Fatal(err)
			}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				res := h.applyOne(&cellv1.Command{Tenant: "acme", Op: &cellv1.Command_ForkContext{ForkContext: &contextv1.ForkRequest{
					ContextId: "src", AtSeq: uint64(n / 2), NewContextId: fmt.Sprintf("f%d", i)}}})
				if res.GetError() != nil {
					b.Fatal(res.GetError())
				}
			}
		})
	}
}
