package validate

import (
	"strings"
	"testing"
)

func TestDefaultLimitsValid(t *testing.T) {
	if err := DefaultLimits().Validate(); err != nil {
		t.Fatalf("DefaultLimits().Validate() = %v", err)
	}
}

func TestDefaultLimitsMatchTheContract(t *testing.T) {
	l := DefaultLimits()
	for _, c := range []struct {
		name      string
		got, want int
	}{
		{"MaxIDLen", l.MaxIDLen, 128},
		{"MaxEntryContentBytes", l.MaxEntryContentBytes, 1 << 20},
		{"MaxMemoryKeyBytes", l.MaxMemoryKeyBytes, 512},
		{"MaxMemoryValueBytes", l.MaxMemoryValueBytes, 1 << 20},
		{"MaxRequestBytes", l.MaxRequestBytes, 4 << 20},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Limits)
		want   []string // substrings of the error; nil: valid
	}{
		{"defaults", func(*Limits) {}, nil},
		{"zero id len", func(l *Limits) { l.MaxIDLen = 0 }, []string{"MaxIDLen"}},
		{"negative page", func(l *Limits) { l.MaxPageSize = -1 }, []string{"MaxPageSize must be > 0", "DefaultPageSize (100) exceeds"}},
		{"default above max entries", func(l *Limits) { l.DefaultReadEntries = l.MaxReadEntries + 1 }, []string{"DefaultReadEntries"}},
		{"default above max bytes", func(l *Limits) { l.DefaultReadBytes = l.MaxReadBytes + 1 }, []string{"DefaultReadBytes"}},
		{"zero read bytes", func(l *Limits) { l.MaxReadBytes = 0; l.DefaultReadBytes = 0 }, []string{"MaxReadBytes must be > 0", "DefaultReadBytes must be > 0"}},
		{"content above request", func(l *Limits) { l.MaxEntryContentBytes = l.MaxRequestBytes + 1 }, []string{"MaxEntryContentBytes"}},
		{"value above request", func(l *Limits) { l.MaxMemoryValueBytes = l.MaxRequestBytes + 1 }, []string{"MaxMemoryValueBytes"}},
		{"map limits", func(l *Limits) { l.Labels.MaxPairs = 0; l.EntryMetadata.MaxKeyBytes = 0 }, []string{"Labels.MaxPairs", "EntryMetadata.MaxKeyBytes"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := DefaultLimits()
			tt.mutate(&l)
			err := l.Validate()
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate() = nil, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %q, want it to mention %q", err, w)
				}
			}
		})
	}
}

func TestEffectiveSizes(t *testing.T) {
	l := DefaultLimits()
	tests := []struct {
		name      string
		got, want uint64
	}{
		{"page default", uint64(l.PageSize(0)), uint64(l.DefaultPageSize)},
		{"page asked", uint64(l.PageSize(7)), 7},
		{"page capped", uint64(l.PageSize(1 << 31)), uint64(l.MaxPageSize)},
		{"entries default", uint64(l.ReadEntries(0)), uint64(l.DefaultReadEntries)},
		{"entries capped", uint64(l.ReadEntries(1 << 31)), uint64(l.MaxReadEntries)},
		{"bytes default", l.ReadBytes(0), l.DefaultReadBytes},
		{"bytes asked", l.ReadBytes(10), 10},
		{"bytes capped", l.ReadBytes(1 << 62), l.MaxReadBytes},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s = %d, want %d", tt.name, tt.got, tt.want)
		}
	}
}
