package store

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// envStateFaultChild makes the test binary run stateFaultChild instead
// of the test (the crashing half of TestStateStoreEIOCrashRecovers).
const envStateFaultChild = "CELLPLANE_STATE_FAULT_CHILD_DIR"

// TestStateStoreEIOCrashRecovers (S13, H4): a node's state store (Pebble)
// starts failing its writes with EIO. A committed entry cannot be refused,
// and Pebble panics when its WAL write fails, so the node's process dies
// (run in a child process here). What matters is what it leaves behind:
// reopened on the same data dir once the disk works, the node starts (no
// corruption, no crash loop), re-applies from its Raft log, holds every
// acknowledged write, its state bookkeeping is consistent, and it takes
// writes again.
func TestStateStoreEIOCrashRecovers(t *testing.T) {
	if dir := os.Getenv(envStateFaultChild); dir != "" {
		stateFaultChild(t, dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestStateStoreEIOCrashRecovers$", "-test.count=1")
	cmd.Env = append(os.Environ(), envStateFaultChild+"="+dir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var acked []string
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if text, ok := strings.CutPrefix(sc.Text(), "ACK "); ok {
			acked = append(acked, text)
		}
	}
	if err == nil || !strings.Contains(out.String(), "input/output error") || len(acked) < 5 {
		t.Fatalf("child: err %v, %d acks; want it to die on the injected EIO after 5 acks; output:\n%s", err, len(acked), tail(out.String(), 4000))
	}
	t.Logf("child died as expected (%v) after %d acknowledged writes", err, len(acked))

	s := openSingle(t, dir)
	var got []string
	for _, e := range readAll(t, s, "acme", "c") {
		got = append(got, e.GetText())
	}
	if len(got) < len(acked) {
		t.Fatalf("after restart %d entries, want at least the %d acknowledged", len(got), len(acked))
	}
	for i, a := range acked {
		if got[i] != a {
			t.Fatalf("entry %d after restart is %.20q, want the acknowledged %.20q", i+1, got[i], a)
		}
	}
	checkState(t, s.fsm)
	mustPropose(t, s, appendText("acme", "c", "after", "after"))
	select {
	case <-s.Done():
		t.Fatalf("the restarted store stopped: %v", s.Err())
	default:
	}
}

// stateFaultChild acknowledges writes on one node (printing "ACK <text>"),
// then makes its state store fail with EIO and writes until it dies.
func stateFaultChild(t *testing.T, dir string) {
	var on atomic.Bool
	s := openSingle(t, dir, func(c *Config) {
		c.TestingKnobs.StateStoreFault = func(path string) error {
			if on.Load() {
				return fmt.Errorf("write %s: %w", path, syscall.EIO)
			}
			return nil
		}
	})
	setOwner(t, s, "acme", 1)
	mustPropose(t, s, createContext("acme", "c"))
	for i := range 5 {
		text := fmt.Sprintf("ack-%d", i)
		mustPropose(t, s, appendText("acme", "c", text, text))
		fmt.Printf("ACK %s\n", text)
	}
	on.Store(true)
	// Pebble writes its WAL in 32 KiB blocks: enough bytes to need some.
	deadline := time.Now().Add(20 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		text := fmt.Sprintf("big-%d-%s", i, strings.Repeat("x", 16<<10))
		if _, err := s.Propose(testCtx(t), appendText("acme", "c", "", text)); err == nil {
			fmt.Printf("ACK %s\n", text)
		}
	}
	t.Fatal("the state store never failed")
}

func tail(s string, n int) string {
	if len(s) > n {
		return "…" + s[len(s)-n:]
	}
	return s
}
