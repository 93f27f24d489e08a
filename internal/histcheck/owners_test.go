package histcheck

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// fakeCells is a tenant's record on two cells that the test changes.
type fakeCells struct {
	mu    sync.Mutex
	role  map[string]cellv1.Role
	epoch map[string]uint64
	reads int
}

func (f *fakeCells) read(_ context.Context, cell string) (cellv1.Role, uint64, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	return f.role[cell], f.epoch[cell], true
}

func (f *fakeCells) set(cell string, r cellv1.Role, e uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.role[cell], f.epoch[cell] = r, e
}

func (f *fakeCells) readsSoFar() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reads
}

func TestOwnerSampler(t *testing.T) {
	const (
		owner   = cellv1.Role_ROLE_OWNER
		standby = cellv1.Role_ROLE_STANDBY
		fenced  = cellv1.Role_ROLE_FENCED
	)
	tests := []struct {
		name  string
		steps func(f *fakeCells)
		want  string // a problem containing this; "" none
	}{
		{"handover", func(f *fakeCells) { f.set("a", fenced, 1); f.set("b", owner, 2) }, ""},
		{"two owners", func(f *fakeCells) { f.set("b", owner, 2) }, "two owners"},
		{"epoch down", func(f *fakeCells) { f.set("a", owner, 0) }, "epoch went from 1 to 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := &fakeCells{role: map[string]cellv1.Role{"a": owner, "b": standby}, epoch: map[string]uint64{"a": 1, "b": 1}}
			s := &OwnerSampler{Cells: []string{"a", "b"}, Read: f.read, Every: time.Millisecond}
			stop := s.Start(testutil.Context(t, 10*time.Second))
			testutil.Eventually(t, 5*time.Second, func() error { return errIf(f.readsSoFar() < 10, "sampling") })
			tc.steps(f)
			at := f.readsSoFar()
			testutil.Eventually(t, 5*time.Second, func() error { return errIf(f.readsSoFar() < at+20, "sampling after the change") })
			problems, samples := stop()
			if samples == 0 {
				t.Fatal("no samples")
			}
			got := strings.Join(problems, "; ")
			if tc.want == "" && got != "" || tc.want != "" && !strings.Contains(got, tc.want) {
				t.Fatalf("problems %q, want %q", got, tc.want)
			}
		})
	}
}

func errIf(cond bool, what string) error {
	if cond {
		return errors.New(what)
	}
	return nil
}
