package etcdtopo

import (
	"context"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/internal/retry"
)

// readRetry is the policy of a read whose connection broke under it (the
// member restarted: the control plane restarts its embedded etcd when its
// CA bundle changes, and the member ends the RPCs it serves). etcd's
// client retries a read that could not be sent, waiting for the
// connection, but not one cut while in flight; a read changes nothing, so
// the store sends it again, a few times.
var readRetry = retry.Policy{Min: 20 * time.Millisecond, Max: 500 * time.Millisecond, MaxAttempts: 4}

// get is cli.Get, sent again (readRetry) after a broken connection.
func (s *Store) get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	for n := 0; ; n++ {
		resp, err := s.cli.Get(ctx, key, opts...)
		if err == nil || !s.connectionBroke(ctx, err) || n+1 >= readRetry.MaxAttempts {
			return resp, err
		}
		s.log.Debug("etcd read failed with its connection; sending it again", "key", key, "attempt", n+1, "err", err)
		if !retry.Within(ctx, readRetry.Delay(n)) {
			return resp, err
		}
	}
}

// connectionBroke reports whether err is the end of a read's connection
// rather than an answer: UNAVAILABLE, or CANCELLED (a server stopping
// resets its streams) while neither the caller's ctx nor the store is
// done.
func (s *Store) connectionBroke(ctx context.Context, err error) bool {
	if ctx.Err() != nil || s.closed() {
		return false
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled:
		return true
	}
	return false
}
