package etcdtopo

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/pki"
)

// DefaultMaxTxnOps is etcd's default --max-txn-ops.
const DefaultMaxTxnOps = 128

// Config configures Dial.
type Config struct {
	// Endpoints are the etcd client URLs (required).
	Endpoints []string
	// Prefix is prepended to every key (default topo.Prefix); it should
	// end with '/'.
	Prefix string
	// DialTimeout bounds Dial's wait for an endpoint to answer (default 5s).
	DialTimeout time.Duration
	// Identity is the component's TLS identity (its certs directory):
	// the client presents its current certificate, reloaded when the
	// files change, and verifies etcd against its CA bundle (IdentityTLS).
	// With etcd authentication on, the certificate's common name is the
	// etcd user. It excludes CertFile, KeyFile and CAFile.
	Identity *pki.Source
	// TLS client certificate, key and CA (PEM files), for an external etcd
	// whose certificates are not the cluster's; CAFile alone verifies the
	// server only. etcd's client re-reads the certificate and key at every
	// handshake.
	//
	// No TLS material: plaintext, and then every endpoint must be http
	// (or bare host:port); https endpoints without TLS material, and TLS
	// material with http endpoints, are refused by Validate.
	CertFile, KeyFile, CAFile string
	// Username and Password enable etcd authentication.
	Username, Password string
	// MaxTxnOps must not exceed the server's --max-txn-ops (default 128).
	MaxTxnOps int
	// Logger receives the store's own logs (nil: discarded).
	Logger *slog.Logger
	// Lazy skips Dial's reachability probe: the store is returned at once
	// and calls fail with ErrUnavailable until etcd answers. For components
	// that must start while etcd is down (a router routing from its
	// snapshot).
	Lazy bool
}

// DefaultConfig returns the defaults; Endpoints must still be set.
func DefaultConfig() Config {
	return Config{Prefix: topo.Prefix, DialTimeout: 5 * time.Second, MaxTxnOps: DefaultMaxTxnOps}
}

func (c Config) withDefaults() Config {
	d := DefaultConfig()
	if c.Prefix == "" {
		c.Prefix = d.Prefix
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = d.DialTimeout
	}
	if c.MaxTxnOps == 0 {
		c.MaxTxnOps = d.MaxTxnOps
	}
	return c
}

// Validate reports a config Dial cannot use.
func (c Config) Validate() error {
	if len(c.Endpoints) == 0 {
		return errors.New("etcdtopo: no endpoints")
	}
	for _, e := range c.Endpoints {
		if e == "" {
			return errors.New("etcdtopo: empty endpoint")
		}
	}
	if c.Prefix == "" {
		return errors.New("etcdtopo: empty prefix")
	}
	if c.DialTimeout <= 0 {
		return fmt.Errorf("etcdtopo: DialTimeout %s must be positive", c.DialTimeout)
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return errors.New("etcdtopo: CertFile and KeyFile go together")
	}
	if err := c.validateTLS(); err != nil {
		return err
	}
	if c.Password != "" && c.Username == "" {
		return errors.New("etcdtopo: Password without Username")
	}
	if c.MaxTxnOps < 1 {
		return fmt.Errorf("etcdtopo: MaxTxnOps %d < 1", c.MaxTxnOps)
	}
	return nil
}

// Store is a topo.Store on an etcd client.
type Store struct {
	cli       *clientv3.Client
	prefix    string
	maxTxnOps int
	ownsCli   bool
	log       *slog.Logger
	// noStream: the server answered RangeStream with UNIMPLEMENTED (an
	// etcd older than 3.7); Scan pages with List from then on.
	noStream atomic.Bool

	// ctx ends at Close: it bounds the background goroutines (leadership
	// monitors).
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
	wg        sync.WaitGroup
}

var _ topo.Store = (*Store)(nil)

// New returns a store on cli with keys under prefix (topo.Prefix if
// empty). Close does not close cli.
func New(cli *clientv3.Client, prefix string) *Store {
	if prefix == "" {
		prefix = topo.Prefix
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Store{
		cli: cli, prefix: prefix, maxTxnOps: DefaultMaxTxnOps,
		log: slog.New(slog.DiscardHandler), ctx: ctx, cancel: cancel,
	}
}

// Dial connects to cfg.Endpoints and checks, with a linearizable read
// bounded by DialTimeout, that the cluster answers; if not it fails with
// an error wrapping topo.ErrUnavailable. The store owns its client.
func Dial(ctx context.Context, cfg Config) (*Store, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", err, topo.ErrInvalid)
	}
	tlsCfg, err := cfg.clientTLS()
	if err != nil {
		return nil, fmt.Errorf("etcdtopo: tls: %v: %w", err, topo.ErrInvalid)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   cfg.Endpoints,
		DialTimeout: cfg.DialTimeout,
		TLS:         tlsCfg,
		Username:    cfg.Username,
		Password:    cfg.Password,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		return nil, fmt.Errorf("etcdtopo: client for %v: %v: %w", cfg.Endpoints, err, topo.ErrUnavailable)
	}
	if !cfg.Lazy {
		if err := probe(ctx, cli, cfg); err != nil {
			cli.Close()
			return nil, err
		}
	}
	s := New(cli, cfg.Prefix)
	s.maxTxnOps = cfg.MaxTxnOps
	s.ownsCli = true
	if cfg.Logger != nil {
		s.log = cfg.Logger.With("component", "etcdtopo")
	}
	s.log.Debug("connected to etcd", "endpoints", cfg.Endpoints, "prefix", cfg.Prefix)
	return s, nil
}

// probe checks with a read bounded by DialTimeout that the cluster answers.
func probe(ctx context.Context, cli *clientv3.Client, cfg Config) error {
	pctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	if _, err := cli.Get(pctx, cfg.Prefix, clientv3.WithCountOnly()); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("etcdtopo: dial %v: %w", cfg.Endpoints, ctx.Err())
		}
		if denied(err) {
			return fmt.Errorf("etcdtopo: etcd at %v refused this client (%v; is its etcd user provisioned?): %w", cfg.Endpoints, err, topo.ErrPermissionDenied)
		}
		return fmt.Errorf("etcdtopo: no endpoint of %v answered within %s (%v): %w", cfg.Endpoints, cfg.DialTimeout, err, topo.ErrUnavailable)
	}
	return nil
}

// denied reports an etcd refusal of the caller's identity.
func denied(err error) bool {
	return errors.Is(err, rpctypes.ErrPermissionDenied) || errors.Is(err, rpctypes.ErrUserNotFound) ||
		errors.Is(err, rpctypes.ErrAuthFailed) || errors.Is(err, rpctypes.ErrUserEmpty)
}

// Close stops the store's background work and, for a Dialed store,
// closes the client (ending its sessions' keep-alives).
func (s *Store) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.cancel()
		s.wg.Wait()
		if s.ownsCli {
			if e := s.cli.Close(); e != nil && !errors.Is(e, context.Canceled) {
				err = fmt.Errorf("etcdtopo: close: %v", e)
			}
		}
	})
	return err
}

func (s *Store) closed() bool { return s.ctx.Err() != nil }

// mapErr turns a clientv3 error into a topo sentinel. The caller's ended
// ctx wins: its error is returned (wrapped) as is.
func (s *Store) mapErr(ctx context.Context, what string, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("etcdtopo: %s: %w", what, ctx.Err())
	}
	if s.closed() {
		return fmt.Errorf("etcdtopo: %s: %w", what, topo.ErrClosed)
	}
	var sentinel error
	switch {
	case errors.Is(err, rpctypes.ErrCompacted):
		sentinel = topo.ErrCompacted
	case errors.Is(err, rpctypes.ErrLeaseNotFound):
		sentinel = topo.ErrNotFound
	case denied(err):
		sentinel = topo.ErrPermissionDenied
	case errors.Is(err, rpctypes.ErrTooManyOps), errors.Is(err, rpctypes.ErrDuplicateKey),
		errors.Is(err, rpctypes.ErrEmptyKey), errors.Is(err, rpctypes.ErrRequestTooLarge),
		errors.Is(err, rpctypes.ErrFutureRev), errors.Is(err, rpctypes.ErrLeaseTTLTooLarge):
		sentinel = topo.ErrInvalid
	case errors.Is(err, context.Canceled) && strings.Contains(err.Error(), "client connection is closing"),
		errors.Is(err, clientv3.ErrNoAvailableEndpoints) && s.closed():
		sentinel = topo.ErrClosed
	default:
		// Deadlines of the client, Unavailable, no leader, timeouts and
		// anything unexpected: the store could not serve the request.
		sentinel = topo.ErrUnavailable
		if st, ok := status.FromError(err); ok && st.Code() == codes.Canceled {
			sentinel = topo.ErrClosed
		}
	}
	return fmt.Errorf("etcdtopo: %s: %v: %w", what, err, sentinel)
}

func (s *Store) abs(key string) string { return s.prefix + key }

func (s *Store) rel(key []byte) string { return strings.TrimPrefix(string(key), s.prefix) }

func (s *Store) kv(k *mvccpb.KeyValue) topo.KV {
	return topo.KV{
		Key:     s.rel(k.Key),
		Value:   k.Value,
		Version: topo.Version(k.ModRevision),
		Created: topo.Version(k.CreateRevision),
		Lease:   topo.LeaseID(k.Lease),
	}
}

func checkKey(what, key string) error {
	if key == "" {
		return fmt.Errorf("etcdtopo: %s: empty key: %w", what, topo.ErrInvalid)
	}
	return nil
}

// Get implements topo.Store.
func (s *Store) Get(ctx context.Context, key string) (topo.KV, error) {
	if err := checkKey("get", key); err != nil {
		return topo.KV{}, err
	}
	resp, err := s.get(ctx, s.abs(key))
	if err != nil {
		return topo.KV{}, s.mapErr(ctx, "get "+key, err)
	}
	if len(resp.Kvs) == 0 {
		return topo.KV{}, fmt.Errorf("etcdtopo: get %q: %w", key, topo.ErrNotFound)
	}
	return s.kv(resp.Kvs[0]), nil
}

// Create implements topo.Store.
func (s *Store) Create(ctx context.Context, key string, value []byte) (topo.Version, error) {
	if err := checkKey("create", key); err != nil {
		return 0, err
	}
	k := s.abs(key)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(k), "=", 0)).
		Then(clientv3.OpPut(k, string(value))).
		Commit()
	if err != nil {
		return 0, s.mapErr(ctx, "create "+key, err)
	}
	if !resp.Succeeded {
		return 0, fmt.Errorf("etcdtopo: create %q: %w", key, topo.ErrExists)
	}
	return topo.Version(resp.Header.Revision), nil
}

// Update implements topo.Store. expect must be a version (> 0): use
// Create for new keys. The written key has no lease.
func (s *Store) Update(ctx context.Context, key string, value []byte, expect topo.Version) (topo.Version, error) {
	if err := checkKey("update", key); err != nil {
		return 0, err
	}
	if expect <= 0 {
		return 0, fmt.Errorf("etcdtopo: update %q at version %d: %w", key, expect, topo.ErrInvalid)
	}
	k := s.abs(key)
	resp, err := s.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(k), "=", int64(expect))).
		Then(clientv3.OpPut(k, string(value))).
		Else(clientv3.OpGet(k, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return 0, s.mapErr(ctx, "update "+key, err)
	}
	if !resp.Succeeded {
		return 0, mismatch("update", key, expect, resp)
	}
	return topo.Version(resp.Header.Revision), nil
}

func mismatch(what, key string, expect topo.Version, resp *clientv3.TxnResponse) error {
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return fmt.Errorf("etcdtopo: %s %q: %w", what, key, topo.ErrNotFound)
	}
	return fmt.Errorf("etcdtopo: %s %q: version %d, want %d: %w", what, key, kvs[0].ModRevision, expect, topo.ErrVersionMismatch)
}

// Delete implements topo.Store.
func (s *Store) Delete(ctx context.Context, key string, expect topo.Version) error {
	if err := checkKey("delete", key); err != nil {
		return err
	}
	if expect < 0 {
		return fmt.Errorf("etcdtopo: delete %q at version %d: %w", key, expect, topo.ErrInvalid)
	}
	k := s.abs(key)
	cmp := clientv3.Compare(clientv3.CreateRevision(k), ">", 0)
	if expect != 0 {
		cmp = clientv3.Compare(clientv3.ModRevision(k), "=", int64(expect))
	}
	resp, err := s.cli.Txn(ctx).If(cmp).
		Then(clientv3.OpDelete(k)).
		Else(clientv3.OpGet(k, clientv3.WithKeysOnly())).
		Commit()
	if err != nil {
		return s.mapErr(ctx, "delete "+key, err)
	}
	if !resp.Succeeded {
		return mismatch("delete", key, expect, resp)
	}
	return nil
}

func (s *Store) validateTxn(conds []topo.Cond, ops []topo.Op) error {
	if len(conds) > s.maxTxnOps || len(ops) > s.maxTxnOps {
		return fmt.Errorf("etcdtopo: txn of %d conds and %d ops exceeds %d: %w", len(conds), len(ops), s.maxTxnOps, topo.ErrInvalid)
	}
	for i, c := range conds {
		if c.Key == "" || (c.Kind != topo.CondVersion && c.Kind != topo.CondExists) || c.Version < 0 {
			return fmt.Errorf("etcdtopo: cond %d %+v: %w", i, c, topo.ErrInvalid)
		}
	}
	seen := make(map[string]struct{}, len(ops))
	for i, o := range ops {
		if o.Key == "" || (o.Kind != topo.OpPut && o.Kind != topo.OpDelete) {
			return fmt.Errorf("etcdtopo: op %d (kind %d, key %q): %w", i, o.Kind, o.Key, topo.ErrInvalid)
		}
		if _, dup := seen[o.Key]; dup {
			return fmt.Errorf("etcdtopo: duplicate key %q in txn: %w", o.Key, topo.ErrInvalid)
		}
		seen[o.Key] = struct{}{}
	}
	return nil
}

// Txn implements topo.Store. On failure the else branch reads every cond
// key in the same revision, so the CondError is exact.
func (s *Store) Txn(ctx context.Context, conds []topo.Cond, ops []topo.Op) (topo.Revision, error) {
	if err := s.validateTxn(conds, ops); err != nil {
		return 0, err
	}
	cmps := make([]clientv3.Cmp, len(conds))
	elses := make([]clientv3.Op, len(conds))
	for i, c := range conds {
		k := s.abs(c.Key)
		switch {
		case c.Kind == topo.CondExists:
			cmps[i] = clientv3.Compare(clientv3.CreateRevision(k), ">", 0)
		case c.Version == 0:
			cmps[i] = clientv3.Compare(clientv3.CreateRevision(k), "=", 0)
		default:
			cmps[i] = clientv3.Compare(clientv3.ModRevision(k), "=", int64(c.Version))
		}
		elses[i] = clientv3.OpGet(k, clientv3.WithKeysOnly())
	}
	thens := make([]clientv3.Op, len(ops))
	for i, o := range ops {
		k := s.abs(o.Key)
		if o.Kind == topo.OpDelete {
			thens[i] = clientv3.OpDelete(k)
		} else if o.Lease != 0 {
			thens[i] = clientv3.OpPut(k, string(o.Value), clientv3.WithLease(clientv3.LeaseID(o.Lease)))
		} else {
			thens[i] = clientv3.OpPut(k, string(o.Value))
		}
	}
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(thens...).Else(elses...).Commit()
	if err != nil {
		return 0, s.mapErr(ctx, "txn", err)
	}
	if resp.Succeeded {
		return topo.Revision(resp.Header.Revision), nil
	}
	for i, c := range conds {
		var actual topo.Version
		exists := false
		if kvs := resp.Responses[i].GetResponseRange().GetKvs(); len(kvs) > 0 {
			actual, exists = topo.Version(kvs[0].ModRevision), true
		}
		holds := exists
		if c.Kind == topo.CondVersion {
			holds = actual == c.Version
		}
		if !holds {
			return 0, &topo.CondError{Index: i, Cond: c, Actual: actual}
		}
	}
	// Unreachable: the else branch reads the state the conds saw.
	return 0, &topo.CondError{Index: 0, Cond: conds[0]}
}

// List implements topo.Store.
func (s *Store) List(ctx context.Context, prefix string, opts topo.ListOptions) (topo.ListResult, error) {
	if opts.Limit < 0 || opts.Revision < 0 {
		return topo.ListResult{}, fmt.Errorf("etcdtopo: list %q %+v: %w", prefix, opts, topo.ErrInvalid)
	}
	limit := opts.Limit
	if limit == 0 {
		limit = topo.DefaultListLimit
	}
	start := s.abs(prefix)
	if opts.After != "" && opts.After >= prefix {
		start = s.abs(opts.After) + "\x00"
	}
	end := clientv3.GetPrefixRangeEnd(s.abs(prefix))
	res := topo.ListResult{Revision: opts.Revision}
	if start >= end {
		if res.Revision == 0 {
			// Still report the revision the (empty) page stands for.
			r, err := s.get(ctx, s.abs(prefix), clientv3.WithCountOnly())
			if err != nil {
				return topo.ListResult{}, s.mapErr(ctx, "list "+prefix, err)
			}
			res.Revision = topo.Revision(r.Header.Revision)
		}
		return res, nil
	}
	ropts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(int64(limit))}
	if opts.Revision > 0 {
		ropts = append(ropts, clientv3.WithRev(int64(opts.Revision)))
	}
	if opts.KeysOnly {
		ropts = append(ropts, clientv3.WithKeysOnly())
	}
	resp, err := s.get(ctx, start, ropts...)
	if err != nil {
		return topo.ListResult{}, s.mapErr(ctx, "list "+prefix, err)
	}
	if res.Revision == 0 {
		res.Revision = topo.Revision(resp.Header.Revision)
	}
	res.More = resp.More
	res.KVs = make([]topo.KV, len(resp.Kvs))
	for i, k := range resp.Kvs {
		res.KVs[i] = s.kv(k)
	}
	return res, nil
}

// Compact compacts etcd's history up to rev (physically, so it has taken
// effect when Compact returns): List and Watch before rev then fail with
// ErrCompacted. It affects the whole cluster, not only the prefix.
func (s *Store) Compact(ctx context.Context, rev topo.Revision) error {
	if _, err := s.cli.Compact(ctx, int64(rev), clientv3.WithCompactPhysical()); err != nil {
		return s.mapErr(ctx, fmt.Sprintf("compact at %d", rev), err)
	}
	return nil
}

// RequestProgress implements topo.Store: etcd's progress request, on the
// watch stream that Watch's contexts share (the require-leader metadata
// keys it).
func (s *Store) RequestProgress(ctx context.Context) error {
	if err := s.cli.RequestProgress(clientv3.WithRequireLeader(ctx)); err != nil {
		return s.mapErr(ctx, "request progress", err)
	}
	return nil
}

// Watch implements topo.Store. It uses clientv3.WithRequireLeader, so a
// member cut off from its leader ends the watch (ErrUnavailable) instead
// of serving nothing forever.
func (s *Store) Watch(ctx context.Context, prefix string, from topo.Revision) <-chan topo.WatchResponse {
	out := make(chan topo.WatchResponse)
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	opts := []clientv3.OpOption{clientv3.WithPrefix()}
	if from > 0 {
		opts = append(opts, clientv3.WithRev(int64(from)))
	}
	wch := s.cli.Watch(wctx, s.abs(prefix), opts...)
	go func() {
		defer close(out)
		defer cancel()
		send := func(r topo.WatchResponse) bool {
			select {
			case out <- r:
				return true
			case <-ctx.Done():
				return false
			}
		}
		for {
			var (
				wr clientv3.WatchResponse
				ok bool
			)
			select {
			case <-ctx.Done():
				return
			case wr, ok = <-wch:
			}
			switch {
			case !ok:
				if ctx.Err() == nil {
					send(topo.WatchResponse{Err: s.mapErr(ctx, "watch "+prefix, errors.New("watch channel closed"))})
				}
				return
			case wr.CompactRevision > 0:
				send(topo.WatchResponse{
					Revision: topo.Revision(wr.Header.Revision),
					Err:      fmt.Errorf("etcdtopo: watch %q from %d (compacted at %d): %w", prefix, from, wr.CompactRevision, topo.ErrCompacted),
				})
				return
			case wr.Err() != nil:
				send(topo.WatchResponse{Err: s.mapErr(ctx, "watch "+prefix, wr.Err())})
				return
			case wr.IsProgressNotify():
				// Passed on: the answer to RequestProgress.
				if !send(topo.WatchResponse{Revision: topo.Revision(wr.Header.Revision)}) {
					return
				}
				continue
			case len(wr.Events) == 0:
				continue // created notifications
			}
			r := topo.WatchResponse{Revision: topo.Revision(wr.Header.Revision), Events: make([]topo.Event, len(wr.Events))}
			for i, e := range wr.Events {
				if e.Type == clientv3.EventTypeDelete {
					r.Events[i] = topo.Event{Type: topo.EventDelete, KV: topo.KV{Key: s.rel(e.Kv.Key), Version: topo.Version(e.Kv.ModRevision)}}
				} else {
					r.Events[i] = topo.Event{Type: topo.EventPut, KV: s.kv(e.Kv)}
				}
			}
			if !send(r) {
				return
			}
		}
	}()
	return out
}
