package storetest

import (
	"errors"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
)

// Eventually polls f until it returns nil, failing the test with f's last
// error after timeout.
func Eventually(t testing.TB, timeout time.Duration, f func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Retryable reports whether a store error means "try again, maybe on
// another node": no leader, not the leader, unknown outcome.
func Retryable(err error) bool {
	return errors.Is(err, cperr.ErrNotLeader) || errors.Is(err, cperr.ErrCellUnavailable) ||
		errors.Is(err, cperr.ErrStalenessExceeded) || errors.Is(err, cperr.ErrAuthorityLeaseExpired)
}
