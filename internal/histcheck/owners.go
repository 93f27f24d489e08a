package histcheck

import (
	"cmp"
	"context"
	"fmt"
	"sync"
	"time"

	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// RoleReader reads a tenant's role and epoch at one cell; ok false when
// the read failed (the sample is skipped) or the cell does not hold the
// tenant (ROLE_UNSPECIFIED).
type RoleReader func(ctx context.Context, cell string) (role cellv1.Role, epoch uint64, ok bool)

// OwnerSampler checks invariant I5 by sampling, while it runs, a tenant's
// record on several cells: it reports two OWNERs at one instant and any
// cell's epoch going down. Two OWNERs at one instant means: cell a read
// OWNER at epoch e, then cell b read OWNER, then a read OWNER at e again
// — a role at an epoch never comes back once left, so a held it
// throughout.
type OwnerSampler struct {
	Cells []string
	Read  RoleReader
	// Every is the pause between rounds (default 2 ms).
	Every time.Duration

	mu       sync.Mutex
	problems []string
	samples  int
}

// Start samples until the returned stop is called; stop returns what was
// found (at most 10 problems) and how many pairs were sampled.
func (s *OwnerSampler) Start(ctx context.Context) (stop func() (problems []string, samples int)) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.loop(ctx)
	}()
	return func() ([]string, int) {
		cancel()
		wg.Wait()
		s.mu.Lock()
		defer s.mu.Unlock()
		return append([]string(nil), s.problems...), s.samples
	}
}

func (s *OwnerSampler) loop(ctx context.Context) {
	epochs := map[string]uint64{}
	read := func(cell string) (cellv1.Role, uint64, bool) {
		role, epoch, ok := s.Read(ctx, cell)
		if !ok || role == cellv1.Role_ROLE_UNSPECIFIED {
			return role, epoch, false
		}
		if epoch < epochs[cell] {
			s.report(fmt.Sprintf("%s: epoch went from %d to %d", cell, epochs[cell], epoch))
		}
		epochs[cell] = max(epochs[cell], epoch)
		return role, epoch, true
	}
	tick := time.NewTicker(cmp.Or(s.Every, 2*time.Millisecond))
	defer tick.Stop()
	for ctx.Err() == nil {
		for _, a := range s.Cells {
			ra, ea, ok := read(a)
			if !ok || ra != cellv1.Role_ROLE_OWNER {
				continue
			}
			for _, b := range s.Cells {
				if b == a {
					continue
				}
				rb, eb, ok := read(b)
				if !ok || rb != cellv1.Role_ROLE_OWNER {
					continue
				}
				if ra2, ea2, ok := read(a); ok && ra2 == cellv1.Role_ROLE_OWNER && ea2 == ea {
					s.report(fmt.Sprintf("two owners: %s@%d and %s@%d", a, ea, b, eb))
				}
			}
			s.mu.Lock()
			s.samples++
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
		case <-tick.C:
		}
	}
}

func (s *OwnerSampler) report(p string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.problems) < 10 {
		s.problems = append(s.problems, p)
	}
}
