package failpoint

import (
	"errors"
	"os"
	"os/exec"
	"testing"
)

func TestParse(t *testing.T) {
	cases := []struct {
		spec string
		ok   bool
	}{
		{"", true},
		{"store/after-log-fsync=crash", true},
		{"store/after-log-fsync=crash@20", true},
		{"store/after-log-fsync=error@2,3; store/snapshot-persist=sleep(100ms),1", true},
		{"store/snapshot-install=off", true},
		{"store/after-log-fsync", false},
		{"=crash", false},
		{"store/nope=crash", false},
		{"store/after-log-fsync=explode", false},
		{"store/after-log-fsync=sleep(soon)", false},
		{"store/after-log-fsync=crash@0", false},
		{"store/after-log-fsync=crash,0", false},
		{"store/after-log-fsync=crash;store/after-log-fsync=error", false},
	}
	for _, tc := range cases {
		_, err := parse(tc.spec)
		if (err == nil) != tc.ok {
			t.Errorf("parse(%q) = %v, want ok=%v", tc.spec, err, tc.ok)
		}
	}
}

func TestInject(t *testing.T) {
	t.Cleanup(Reset)
	if err := Inject(StoreAfterLogFsync); err != nil || Enabled() {
		t.Fatalf("disabled point: %v, enabled=%v", err, Enabled())
	}
	if err := Enable("store/after-log-fsync=error@2,2;store/snapshot-persist=sleep(1ms)"); err != nil {
		t.Fatal(err)
	}
	var got []bool
	for range 5 {
		got = append(got, errors.Is(Inject(StoreAfterLogFsync), ErrInjected))
	}
	if want := []bool{false, true, true, false, false}; !equal(got, want) {
		t.Fatalf("hits acted %v, want %v", got, want)
	}
	if n := Hits(StoreAfterLogFsync); n != 5 {
		t.Fatalf("hits %d, want 5", n)
	}
	if err := Inject(StoreSnapshotPersist); err != nil {
		t.Fatalf("sleep: %v", err)
	}
	if err := Inject(StoreBeforeLogFsync); err != nil {
		t.Fatalf("a point the spec does not name: %v", err)
	}
	if err := Enable("store/nope=crash"); err == nil {
		t.Fatal("unknown point accepted")
	}
	if !Enabled() || Hits(StoreAfterLogFsync) != 5 {
		t.Fatal("a refused spec changed the enabled points")
	}
}

func equal(a, b []bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestCrash: a crash action ends the process with ExitCode (run in a
// child: this test binary again).
func TestCrash(t *testing.T) {
	if os.Getenv("FAILPOINT_TEST_CHILD") == "1" {
		if _, err := EnableFromEnv(); err != nil {
			os.Exit(2)
		}
		_ = Inject(StoreAfterApplyBeforeAck)
		_ = Inject(StoreAfterApplyBeforeAck) // the second hit crashes
		os.Exit(0)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrash$")
	cmd.Env = append(os.Environ(), "FAILPOINT_TEST_CHILD=1", Env+"="+StoreAfterApplyBeforeAck+"=crash@2")
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != ExitCode {
		t.Fatalf("child: %v, want exit status %d", err, ExitCode)
	}
}

func FuzzParse(f *testing.F) {
	f.Add("store/after-log-fsync=crash@20;store/snapshot-persist=sleep(100ms),1")
	f.Add("store/after-log-fsync=error,3")
	f.Fuzz(func(t *testing.T, spec string) {
		ps, err := parse(spec)
		if err != nil {
			return
		}
		for name, p := range ps {
			if p.from < 1 || p.count < 0 || p.sleep < 0 {
				t.Fatalf("%q: point %s parsed to %+v", spec, name, p)
			}
		}
	})
}
