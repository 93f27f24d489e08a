package retry

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Poll calls fn every interval until it returns nil, returns an error
// marked Permanent (returned unwrapped of the mark), or ctx ends: then it
// returns ctx's error wrapping fn's last one. It is for waiting on a
// condition (a leader elected, a cell healthy), not for resending a
// request: that is Do's job, with the policy's backoff.
func Poll(ctx context.Context, interval time.Duration, fn func() error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		err := fn()
		if err == nil {
			return nil
		}
		var p *permanent
		if errors.As(err, &p) {
			return p.err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-t.C:
		}
	}
}

// Permanent marks err as final for Poll: waiting longer will not help.
func Permanent(err error) error { return &permanent{err} }

type permanent struct{ err error }

func (p *permanent) Error() string { return p.err.Error() }
func (p *permanent) Unwrap() error { return p.err }
