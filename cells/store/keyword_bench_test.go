package store

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// BenchmarkApplyAppendKeyword: apply cost of a one-entry append of 40
// words, keyword index on and off (go test -bench ApplyAppendKeyword
// -cpuprofile).
func BenchmarkApplyAppendKeyword(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	z := rand.NewZipf(r, 1.07, 2, 19999)
	words := make([]string, 20000)
	for i := range words {
		words[i] = fmt.Sprintf("w%x", i*7919)
	}
	text := func() string {
		var sb strings.Builder
		for range 40 {
			sb.WriteString(words[z.Uint64()])
			sb.WriteByte(' ')
		}
		return sb.String()
	}
	for _, off := range []bool{true, false} {
		b.Run(fmt.Sprintf("off=%v", off), func(b *testing.B) {
			h := newFSM(b)
			h.mustApply(&cellv1.Command{Op: &cellv1.Command_CellSettings{CellSettings: &cellv1.CellSettings{KeywordIndexOff: off, DedupWindow: 100}}})
			h.mustApply(setTenant("acme", owner, 1))
			h.mustApply(createContext("acme", "c"))
			texts := make([]string, 1024)
			for i := range texts {
				texts[i] = text()
			}
			b.ResetTimer()
			for i := range b.N {
				h.apply(appendText("acme", "c", "", texts[i%len(texts)]))
			}
		})
	}
}
