package bench

import (
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestDescribeMachine(t *testing.T) {
	dir := t.TempDir()
	m := DescribeMachine(dir)
	if m.Cores < 1 || m.GOMAXPROCS < 1 || m.GoVersion != runtime.Version() {
		t.Fatalf("machine = %+v", m)
	}
	if runtime.GOOS == "linux" {
		if m.Filesystem == "" || m.MountPoint == "" || m.Kernel == "" || m.MemoryBytes == 0 {
			t.Fatalf("machine = %+v: filesystem, mount, kernel and memory should be known on linux", m)
		}
		if !strings.HasPrefix(m.DataDir, m.MountPoint) {
			t.Fatalf("mount point %q does not hold %q", m.MountPoint, m.DataDir)
		}
	}
	if s := m.String(); !strings.Contains(s, "cores") || !strings.Contains(s, m.GoVersion) {
		t.Fatalf("String() = %q", s)
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/mnt/my\040disk`); got != "/mnt/my disk" {
		t.Fatalf("got %q", got)
	}
	if !within("/a/b", "/a") || within("/ab", "/a") || !within("/x", "/") {
		t.Fatal("within is wrong")
	}
}

func TestPeakSamplerSeesAnAllocation(t *testing.T) {
	if _, err := ReadMemory(); err != nil {
		t.Skipf("no /proc: %v", err)
	}
	before, _ := ReadMemory()
	s := StartPeakSampler(time.Millisecond)
	big := make([]byte, 64<<20)
	for i := 0; i < len(big); i += 4096 {
		big[i] = 1 // touch every page so it is resident
	}
	peak, n := s.Stop() // the final sample is taken while big is alive
	if n < 2 {
		t.Fatalf("%d samples", n)
	}
	if peak < before.RSS+48<<20 {
		t.Fatalf("peak %d MiB, RSS before %d MiB: the 64 MiB allocation was missed", peak>>20, before.RSS>>20)
	}
	runtime.KeepAlive(big)
	if m, _ := ReadMemory(); m.Peak < peak {
		t.Fatalf("VmHWM %d < sampled peak %d", m.Peak, peak)
	}
}

func TestFsyncLoop(t *testing.T) {
	ctx := testContext(t)
	dir := t.TempDir()
	res, err := FsyncLoop(ctx, dir, 256, Load{Ops: 20})
	if err != nil {
		t.Fatal(err)
	}
	if res.Ops != 20 || res.Errors != 0 || res.Name != "fsync" || res.Concurrency != 1 {
		t.Fatalf("result = %+v", res)
	}
	if res.Latency.P50 <= 0 {
		t.Fatalf("p50 = %v", res.Latency.P50)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	if len(left) != 0 {
		t.Fatalf("files left behind: %v", left)
	}
	if _, err := FsyncLoop(ctx, filepath.Join(dir, "missing"), 256, Load{Ops: 1}); err == nil {
		t.Fatal("fsync loop in a missing dir succeeded")
	}
}
