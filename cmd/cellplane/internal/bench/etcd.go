package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cellplane/cellplane/internal/serve"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EtcdCluster is an embedded etcd cluster on loopback with fsync ON: the
// baseline every cellplane write path is compared with (docs/design.md §12). Its
// members run in this process, on the benchmark's filesystem.
type EtcdCluster struct {
	members []*embed.Etcd
	// ClientURLs are the members' client endpoints, in member order.
	ClientURLs []string
}

// StartEtcd starts a size-member etcd cluster with data under dir and
// waits until every member is ready. embed cannot take pre-opened
// listeners, so free loopback ports are chosen by opening and closing
// 127.0.0.1:0; if another process takes one in between, the start is
// retried with new ports.
func StartEtcd(ctx context.Context, dir string, size int) (*EtcdCluster, error) {
	if size < 1 {
		return nil, fmt.Errorf("bench: etcd cluster size %d < 1", size)
	}
	var lastErr error
	for attempt := range 3 {
		sub := filepath.Join(dir, fmt.Sprintf("etcd-%d", attempt))
		c, err := startEtcdOnce(ctx, sub, size)
		if err == nil {
			return c, nil
		}
		lastErr = err
		_ = os.RemoveAll(sub)
		if ctx.Err() != nil || !isAddrInUse(err) {
			break
		}
	}
	return nil, lastErr
}

func isAddrInUse(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

func startEtcdOnce(ctx context.Context, dir string, size int) (*EtcdCluster, error) {
	ports, err := serve.FreeLoopbackPorts(2 * size)
	if err != nil {
		return nil, err
	}
	names := make([]string, size)
	peerURLs := make([]url.URL, size)
	clientURLs := make([]url.URL, size)
	var initial []string
	for i := range size {
		names[i] = fmt.Sprintf("etcd%d", i+1)
		peerURLs[i] = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i])}
		clientURLs[i] = url.URL{Scheme: "http", Host: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1])}
		initial = append(initial, names[i]+"="+peerURLs[i].String())
	}

	c := &EtcdCluster{members: make([]*embed.Etcd, size)}
	errs := make([]error, size)
	var wg sync.WaitGroup
	// Members start concurrently: each one's start-up waits for peers.
	for i := range size {
		cfg := embed.NewConfig()
		cfg.Name = names[i]
		cfg.Dir = filepath.Join(dir, names[i])
		cfg.ListenPeerUrls = []url.URL{peerURLs[i]}
		cfg.AdvertisePeerUrls = []url.URL{peerURLs[i]}
		cfg.ListenClientUrls = []url.URL{clientURLs[i]}
		cfg.AdvertiseClientUrls = []url.URL{clientURLs[i]}
		cfg.InitialCluster = strings.Join(initial, ",")
		cfg.InitialClusterToken = "cellplane-bench"
		cfg.ClusterState = embed.ClusterStateFlagNew
		cfg.UnsafeNoFsync = false // the point of the baseline
		cfg.Logger = "zap"
		cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
		c.ClientURLs = append(c.ClientURLs, clientURLs[i].String())
		wg.Go(func() {
			e, err := embed.StartEtcd(cfg)
			c.members[i], errs[i] = e, err
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		c.Close()
		return nil, fmt.Errorf("bench: start etcd: %w", err)
	}

	for _, e := range c.members {
		select {
		case <-e.Server.ReadyNotify():
		case err := <-e.Err():
			c.Close()
			return nil, fmt.Errorf("bench: etcd member %s: %w", e.Config().Name, err)
		case <-ctx.Done():
			c.Close()
			return nil, ctx.Err()
		}
	}
	return c, nil
}

// LeaderURL returns the client URL of the current leader, waiting for one
// to be elected.
func (c *EtcdCluster) LeaderURL(ctx context.Context) (string, error) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		for i, e := range c.members {
			if e.Server.Leader() != 0 && e.Server.Leader() == e.Server.MemberID() {
				return c.ClientURLs[i], nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("bench: no etcd leader: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Close stops every member and waits for them; it is idempotent.
// Followers stop first, together, then the rest: a leader that stops while
// its followers are up tries to hand leadership over, and waits for it up
// to its request timeout (7 s) when they are stopping too.
func (c *EtcdCluster) Close() {
	var wg sync.WaitGroup
	for i, e := range c.members {
		if e != nil && e.Server != nil && e.Server.Leader() != e.Server.MemberID() {
			c.members[i] = nil
			wg.Go(e.Close)
		}
	}
	wg.Wait()
	for i, e := range c.members {
		if e != nil {
			c.members[i] = nil
			wg.Go(e.Close)
		}
	}
	wg.Wait()
}

// EtcdPuts runs one step of Puts of size-byte values through a clientv3
// client connected to endpoint (one connection shared by every worker,
// like the cell's). Each worker writes its own sequence of new keys.
func EtcdPuts(ctx context.Context, endpoint string, size int, l Load) (Result, error) {
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
		Context:     ctx,
	})
	if err != nil {
		return Result{}, fmt.Errorf("bench: etcd client: %w", err)
	}
	defer cli.Close()

	value := string(payload(size))
	next := make([]uint64, l.Concurrency)
	return Run(ctx, l, func(ctx context.Context, w int) error {
		next[w]++
		key := fmt.Sprintf("bench/%03d/%012d", w, next[w])
		_, err := cli.Put(ctx, key, value)
		return err
	})
}

// payload returns size printable bytes (compressible data would flatter a
// store that compresses; these are not random either, but neither store
// compresses its log).
func payload(size int) []byte {
	b := make([]byte, size)
	for i := range b {
		b[i] = byte('a' + i%26)
	}
	return b
}
