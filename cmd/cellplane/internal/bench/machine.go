package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
)

// Machine describes where a benchmark ran. Figures are only comparable
// between runs on like machines; the filesystem matters most for anything
// that fsyncs.
type Machine struct {
	OS         string `json:"os"`
	Arch       string `json:"arch"`
	Kernel     string `json:"kernel,omitempty"`
	CPUModel   string `json:"cpu_model,omitempty"`
	Cores      int    `json:"cores"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	// MemoryBytes is the machine's RAM (MemTotal), or the cgroup limit
	// when one is set and lower.
	MemoryBytes uint64 `json:"memory_bytes,omitempty"`
	GoVersion   string `json:"go_version"`
	// LoadAvg is the 1, 5 and 15 minute load average when the machine was
	// described: on a shared machine, how busy the neighbours were.
	LoadAvg []float64 `json:"load_avg,omitempty"`
	// DataDir is the directory the scenario wrote to; Filesystem its type
	// (ext4, xfs, overlay, tmpfs, …) and Device the mount source.
	DataDir    string `json:"data_dir,omitempty"`
	Filesystem string `json:"filesystem,omitempty"`
	Device     string `json:"device,omitempty"`
	MountPoint string `json:"mount_point,omitempty"`
}

// DescribeMachine describes this machine and the filesystem holding
// dataDir (which must exist; empty skips the filesystem). Anything that
// cannot be read is left empty: a description never fails a run.
func DescribeMachine(dataDir string) Machine {
	m := Machine{
		OS:         runtime.GOOS,
		Arch:       runtime.GOARCH,
		Cores:      runtime.NumCPU(),
		GOMAXPROCS: runtime.GOMAXPROCS(0),
		GoVersion:  runtime.Version(),
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	m.CPUModel = cpuModel()
	m.LoadAvg = loadAvg()
	m.MemoryBytes = memTotal()
	if lim := cgroupMemLimit(); lim > 0 && (m.MemoryBytes == 0 || lim < m.MemoryBytes) {
		m.MemoryBytes = lim
	}
	if dataDir != "" {
		if abs, err := filepath.Abs(dataDir); err == nil {
			dataDir = abs
		}
		m.DataDir = dataDir
		m.MountPoint, m.Filesystem, m.Device = mountOf(dataDir)
		if m.Filesystem == "" {
			m.Filesystem = statfsType(dataDir)
		}
	}
	return m
}

// String is the one-line form used in tables.
func (m Machine) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s/%s", m.OS, m.Arch)
	if m.CPUModel != "" {
		fmt.Fprintf(&b, ", %s", m.CPUModel)
	}
	fmt.Fprintf(&b, ", %d cores (GOMAXPROCS %d)", m.Cores, m.GOMAXPROCS)
	if m.MemoryBytes > 0 {
		fmt.Fprintf(&b, ", %.1f GiB", float64(m.MemoryBytes)/(1<<30))
	}
	if m.Kernel != "" {
		fmt.Fprintf(&b, ", kernel %s", m.Kernel)
	}
	fmt.Fprintf(&b, ", %s", m.GoVersion)
	if len(m.LoadAvg) == 3 {
		fmt.Fprintf(&b, ", load %.2f %.2f %.2f", m.LoadAvg[0], m.LoadAvg[1], m.LoadAvg[2])
	}
	if m.DataDir != "" {
		fmt.Fprintf(&b, "; data dir %s on %s", m.DataDir, orDash(m.Filesystem))
		if m.Device != "" {
			fmt.Fprintf(&b, " (%s)", m.Device)
		}
	}
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		switch strings.TrimSpace(k) {
		case "model name", "Model", "cpu model", "uarch":
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func loadAvg() []float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return nil
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return nil
	}
	var out []float64
	for _, s := range f[:3] {
		v, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return nil
		}
		out = append(out, v)
	}
	return out
}

func memTotal() uint64 {
	v, _ := procStatusField("/proc/meminfo", "MemTotal")
	return v
}

// cgroupMemLimit returns the cgroup v2 memory limit, 0 when unlimited or
// unknown.
func cgroupMemLimit() uint64 {
	b, err := os.ReadFile("/sys/fs/cgroup/memory.max")
	if err != nil {
		return 0
	}
	v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	if err != nil {
		return 0 // "max"
	}
	return v
}

// mountOf finds the mount holding path in /proc/self/mountinfo: the one
// with the longest mount point that is a prefix of path.
func mountOf(path string) (mountPoint, fsType, source string) {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return "", "", ""
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	for line := range bytes.Lines(b) {
		// id parent major:minor root mountpoint opts [optional...] - fstype source superopts
		pre, post, ok := strings.Cut(strings.TrimSpace(string(line)), " - ")
		if !ok {
			continue
		}
		f := strings.Fields(pre)
		g := strings.Fields(post)
		if len(f) < 5 || len(g) < 2 {
			continue
		}
		mp := unescapeMount(f[4])
		if !within(path, mp) || len(mp) < len(mountPoint) {
			continue
		}
		mountPoint, fsType, source = mp, g[0], g[1]
	}
	return mountPoint, fsType, source
}

func within(path, dir string) bool {
	if dir == "/" {
		return true
	}
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// statfsType names a few common filesystem magic numbers, as a fallback
// when mountinfo is unreadable.
func statfsType(path string) string {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return ""
	}
	switch uint64(st.Type) {
	case 0xEF53:
		return "ext4"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x01021994:
		return "tmpfs"
	case 0x794C7630:
		return "overlay"
	case 0x2FC12FC1:
		return "zfs"
	}
	return fmt.Sprintf("0x%x", uint64(st.Type))
}
