package store

import (
	"fmt"
	"testing"

	"github.com/cellplane/cellplane/internal/labelsel"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// BenchmarkListFiltered is the worst case MaxListScan bounds
// (docs/benchmarks.md, "Filtered lists"): one ListMemoryWhere call over a
// tenant of 20 000 labelled memory items whose selector matches 1 in
// 1000, examining up to 10 000 items (the default bound), beside the same
// call without a selector (a full page of 100). It reports the cost per
// examined item.
func BenchmarkListFiltered(b *testing.B) {
	h := newFSM(b)
	h.mustApply(ownedBy("t"))
	const n = 20_000
	for i := 0; i < n; i += 100 {
		var cmds []*cellv1.Command
		for j := i; j < i+100; j++ {
			team := "blue"
			if j%1000 == 0 {
				team = "red"
			}
			cmds = append(cmds, labeledMemory("t", fmt.Sprintf("k%06d", j), "a value of some thirty bytes...", map[string]string{"team": team, "kind": "fact"}))
		}
		h.apply(cmds...)
	}
	red, err := labelsel.Compile(&contextv1.LabelSelector{Requirements: []*contextv1.LabelRequirement{
		{Key: "team", Operator: contextv1.LabelOperator_LABEL_OPERATOR_EQUALS, Values: []string{"red"}}}})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name  string
		f     ListFilter
		limit int
	}{
		{"selective-10k-scan", ListFilter{Labels: red, MaxScan: 10_000}, 100},
		{"unfiltered-page-100", ListFilter{MaxScan: 10_000}, 100},
	} {
		b.Run(bc.name, func(b *testing.B) {
			scanned := 0
			for b.Loop() {
				h.tenant("t", func(v *TenantView) {
					p, err := v.ListMemoryWhere("", "", "", bc.limit, true, bc.f)
					if err != nil || len(p.Items) == 0 {
						b.Fatalf("%d items: %v", len(p.Items), err)
					}
					scanned = p.Scanned
				})
			}
			b.ReportMetric(float64(scanned), "examined/op")
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(scanned), "ns/examined")
		})
	}
}
