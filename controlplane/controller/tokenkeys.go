package controller

import (
	"context"
	"time"

	"github.com/cellplane/cellplane/controlplane/tokenkeys"
)

// rotateTokenKeys keeps the tenant-token keys rotated while this replica
// leads: at once, then every TokenKeys.Interval (controlplane/tokenkeys).
// Every write is guarded by the leadership, so a deposed leader publishes
// and deletes nothing.
func (r *runner) rotateTokenKeys(ctx context.Context) {
	c := r.c
	t := time.NewTicker(c.cfg.TokenKeys.Interval)
	defer t.Stop()
	for {
		ch, err := tokenkeys.Rotate(ctx, c.st, c.cfg.TokenKeys, time.Now(), r.commit)
		switch {
		case err != nil && ctx.Err() == nil:
			c.log.Warn("rotating the tenant-token keys failed; retrying at the next check", "err", err)
		case len(ch.Published) > 0 || len(ch.Deleted) > 0:
			c.log.Info("tenant-token keys rotated", "published", ch.Published, "deleted", ch.Deleted)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
