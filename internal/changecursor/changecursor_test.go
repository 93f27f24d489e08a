package changecursor

import (
	"testing"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func TestRoundTrip(t *testing.T) {
	for _, c := range []*contextv1.ChangeCursor{{}, {Tseq: 1, TimeUnixNano: 2}, {Tseq: ^uint64(0), TimeUnixNano: 1<<63 - 1}} {
		s := Format(c)
		got, err := Parse(s)
		if err != nil || got.GetTseq() != c.GetTseq() || got.GetTimeUnixNano() != c.GetTimeUnixNano() {
			t.Errorf("Parse(Format(%v)) = %v, %v", c, got, err)
		}
	}
	for _, s := range []string{"", "1", "1.", ".1", "a.b", "1.-2", "-1.2", "1.2.3", "18446744073709551616.1"} {
		if _, err := Parse(s); err == nil {
			t.Errorf("Parse(%q) accepted", s)
		}
	}
}

func FuzzParse(f *testing.F) {
	f.Add("4127.1796688443000000000")
	f.Add("0.0")
	f.Add("x")
	f.Fuzz(func(t *testing.T, s string) {
		c, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(Format(c))
		if err != nil || again.GetTseq() != c.GetTseq() || again.GetTimeUnixNano() != c.GetTimeUnixNano() {
			t.Fatalf("%q: %v does not round-trip: %v %v", s, c, again, err)
		}
	})
}
