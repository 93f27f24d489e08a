package etcdserver

import "testing"

func TestWorthDefrag(t *testing.T) {
	const mib = 1 << 20
	for _, tc := range []struct {
		name                 string
		size, inUse, minFree int64
		minRatio             float64
		want                 bool
	}{
		{"nothing free", 100 * mib, 100 * mib, 0, 0, false},
		{"empty db", 0, 0, -1, -1, false},
		{"defaults: 80 of 100 MiB free", 100 * mib, 20 * mib, 64 * mib, 0.5, true},
		{"defaults: too few bytes free", 100 * mib, 50 * mib, 64 * mib, 0.5, false},
		{"defaults: too small a fraction free", 1000 * mib, 900 * mib, 64 * mib, 0.5, false},
		{"no thresholds, a page free", 100 * mib, 100*mib - 4096, -1, -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := worthDefrag(tc.size, tc.inUse, tc.minFree, tc.minRatio); got != tc.want {
				t.Fatalf("worthDefrag(%d, %d, %d, %g) = %v, want %v", tc.size, tc.inUse, tc.minFree, tc.minRatio, got, tc.want)
			}
		})
	}
}

func TestDefaultsFillHealth(t *testing.T) {
	c := Config{DataDir: "/tmp/x"}.withDefaults()
	d := DefaultConfig()
	if c.AutoCompactionMode != d.AutoCompactionMode || c.AutoCompactionRetention != d.AutoCompactionRetention ||
		c.QuotaBackendBytes != d.QuotaBackendBytes || c.DefragInterval != d.DefragInterval ||
		c.DefragMinFreeBytes != d.DefragMinFreeBytes || c.DefragMinFreeRatio != d.DefragMinFreeRatio {
		t.Fatalf("zero config filled to %+v, want the defaults", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if d.AutoCompactionRetention == "0" {
		t.Fatal("compaction is off by default")
	}
}
