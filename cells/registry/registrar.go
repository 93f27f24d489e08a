package registry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/retry"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// LeaderSource tells the Registrar whether this node leads its cell. The
// cell node implements it over its store; it is polled every
// Config.LeaderPoll, so it must be cheap.
type LeaderSource interface {
	// LeaderTerm returns the Raft term and true while this node is the
	// cell's leader (ready to serve), or false.
	LeaderTerm() (term uint64, leader bool)
}

// LeaderFunc adapts a function to LeaderSource.
type LeaderFunc func() (uint64, bool)

// LeaderTerm calls f.
func (f LeaderFunc) LeaderTerm() (uint64, bool) { return f() }

// Config configures a Registrar.
type Config struct {
	// Cell is the cell id (required).
	Cell string
	// Node is the record published at cells/<Cell>/nodes/<Node.Id>: its
	// id and addresses are required; Cell is filled in, Role defaults to
	// NODE_ROLE_MEMBER and StartTime to Start's time.
	Node *cpv1.Node
	// TTL of the session's lease: how long the node's keys outlive it
	// when it dies without Close. At least MinTTL.
	TTL time.Duration
	// LeaderPoll is how often the LeaderSource is asked (a new leader is
	// published within about this long).
	LeaderPoll time.Duration
	// RetryMin and RetryMax bound the backoff between failed attempts to
	// open a session, register or publish (internal/retry: doubling, with
	// full jitter).
	RetryMin, RetryMax time.Duration
	// Logger receives the logs (with cell and node); nil: slog.Default().
	Logger *slog.Logger
}

// Defaults.
const (
	DefaultTTL        = 5 * time.Second
	MinTTL            = time.Second
	DefaultLeaderPoll = 100 * time.Millisecond
)

// DefaultConfig returns a Config with the default TTL, poll interval and
// backoff; Cell and Node still need to be set.
func DefaultConfig() Config {
	return Config{
		TTL:        DefaultTTL,
		LeaderPoll: DefaultLeaderPoll,
		RetryMin:   100 * time.Millisecond,
		RetryMax:   2 * time.Second,
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf("registry: "+format, args...)) }
	if !ids.Valid(c.Cell, ids.MaxLen) {
		add("Cell %q must be %s", c.Cell, ids.Rule(ids.MaxLen))
	}
	if c.Node == nil {
		add("Node is required")
	} else {
		if !ids.Valid(c.Node.GetId(), ids.MaxLen) {
			add("Node.Id %q must be %s", c.Node.GetId(), ids.Rule(ids.MaxLen))
		}
		if c.Node.GetCell() != "" && c.Node.GetCell() != c.Cell {
			add("Node.Cell %q differs from Cell %q", c.Node.GetCell(), c.Cell)
		}
		switch {
		case c.Node.GetRole() == cpv1.NodeRole_NODE_ROLE_WORKER && c.Node.GetHttpAddr() == "":
			add("Node.HttpAddr is required for a worker")
		case c.Node.GetRole() != cpv1.NodeRole_NODE_ROLE_WORKER && c.Node.GetGrpcAddr() == "":
			add("Node.GrpcAddr is required")
		}
	}
	if c.TTL < MinTTL {
		add("TTL must be ≥ %s, got %s", MinTTL, c.TTL)
	}
	if c.LeaderPoll <= 0 {
		add("LeaderPoll must be > 0, got %s", c.LeaderPoll)
	}
	if c.RetryMin <= 0 || c.RetryMax < c.RetryMin {
		add("RetryMin (%s) must be > 0 and ≤ RetryMax (%s)", c.RetryMin, c.RetryMax)
	}
	return errors.Join(errs...)
}

// Registrar keeps a node registered and, while it leads, its cell's leader
// key published. Start makes one; Close stops it and removes its keys.
type Registrar struct {
	st     topo.Store
	cfg    Config
	leader LeaderSource
	log    *slog.Logger
	node   []byte // the encoded Node record

	cancel context.CancelFunc
	done   chan struct{}

	closeOnce sync.Once
	closeErr  error

	// Owned by the loop goroutine (and by Close once the loop ended).
	sess topo.Session
	pub  published

	mu         sync.Mutex
	registered topo.LeaseID // the lease the node key is under, 0 if none
}

// published is what this node last wrote at the leader key.
type published struct {
	lease topo.LeaseID // 0: nothing published
	term  uint64
}

// Start registers the node and starts the background loop that keeps it
// registered and publishes leadership. A first failure to reach the store
// is logged and retried in the background, so a node can start while etcd
// is briefly away; only an invalid Config is an error. leader may be nil
// (the node never publishes leadership).
func Start(ctx context.Context, st topo.Store, cfg Config, leader LeaderSource) (*Registrar, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if st == nil {
		return nil, errors.New("registry: nil topo store")
	}
	node := proto.Clone(cfg.Node).(*cpv1.Node)
	node.Cell = cfg.Cell
	if node.Role == cpv1.NodeRole_NODE_ROLE_UNSPECIFIED {
		node.Role = cpv1.NodeRole_NODE_ROLE_MEMBER
	}
	if node.StartTime == nil {
		node.StartTime = timestamppb.Now()
	}
	b, err := proto.Marshal(node)
	if err != nil {
		return nil, fmt.Errorf("registry: encode node: %w", err)
	}
	if leader == nil {
		leader = LeaderFunc(func() (uint64, bool) { return 0, false })
	}
	r := &Registrar{
		st:     st,
		cfg:    cfg,
		leader: leader,
		log:    logging.OrDefault(cfg.Logger).With("cell", cfg.Cell, "node", node.Id),
		node:   b,
		done:   make(chan struct{}),
	}
	if err := r.connect(ctx); err != nil {
		r.log.Warn("registering in the control plane failed; retrying in the background", "err", err)
	}
	bg, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	go r.loop(bg)
	return r, nil
}

// NodeKey returns the key the node is registered at.
func (r *Registrar) NodeKey() string { return topo.CellNodeKey(r.cfg.Cell, r.cfg.Node.GetId()) }

// Lease returns the lease the node is currently registered under, or 0
// while it is not registered.
func (r *Registrar) Lease() topo.LeaseID {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.registered
}

// connect opens a session and registers the node under it.
func (r *Registrar) connect(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.TTL)
	defer cancel()
	sess, err := r.st.NewSession(ctx, r.cfg.TTL)
	if err != nil {
		return fmt.Errorf("open session: %w", err)
	}
	if _, err := r.st.Txn(ctx, nil, []topo.Op{topo.PutLeased(r.NodeKey(), r.node, sess.Lease())}); err != nil {
		_ = sess.Close()
		return fmt.Errorf("put %s: %w", r.NodeKey(), err)
	}
	r.sess = sess
	r.pub = published{} // a new lease: anything published went with the old one
	r.mu.Lock()
	r.registered = sess.Lease()
	r.mu.Unlock()
	r.log.Info("registered in the control plane", "key", r.NodeKey(), "ttl", r.cfg.TTL)
	return nil
}

func (r *Registrar) loop(ctx context.Context) {
	defer close(r.done)
	ticker := time.NewTicker(r.cfg.LeaderPoll)
	defer ticker.Stop()
	backoff := retry.Policy{Min: r.cfg.RetryMin, Max: r.cfg.RetryMax}.Backoff()
	var nextPublish time.Time // backoff of failed publications
	pubBackoff := retry.Policy{Min: r.cfg.LeaderPoll, Max: r.cfg.RetryMax}.Backoff()
	for attempt := 1; ; {
		if r.sess == nil {
			if err := r.connect(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				lvl := slog.LevelDebug
				if attempt == 1 || attempt%10 == 0 {
					lvl = slog.LevelWarn
				}
				wait := backoff.Next()
				r.log.Log(ctx, lvl, "registering in the control plane failed; retrying", "attempt", attempt, "retry_in", wait, "err", err)
				attempt++
				if retry.Sleep(ctx, wait) != nil {
					return
				}
				continue
			}
			attempt = 1
			backoff.Reset()
			nextPublish = time.Time{}
		}
		if time.Now().After(nextPublish) {
			if err := r.syncLeader(ctx); err != nil {
				if ctx.Err() != nil {
					return
				}
				wait := pubBackoff.Next()
				r.log.Debug("publishing the cell leader failed; retrying", "retry_in", wait, "err", err)
				nextPublish = time.Now().Add(wait)
			} else {
				pubBackoff.Reset()
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-r.sess.Done():
			r.log.Warn("control plane session lost; registering again", "lease", r.sess.Lease())
			_ = r.sess.Close()
			r.sess = nil
			r.mu.Lock()
			r.registered = 0
			r.mu.Unlock()
		case <-ticker.C:
		}
	}
}

// errNotOurs: the leader key names another node at a term ≥ ours.
var errNotOurs = errors.New("the leader key names another node at the same or a later term")

// syncLeader makes the leader key agree with the LeaderSource: published
// while this node leads, removed (if ours) when it no longer does.
func (r *Registrar) syncLeader(ctx context.Context) error {
	term, leading := r.leader.LeaderTerm()
	lease := r.sess.Lease()
	switch {
	case leading && (r.pub.lease != lease || r.pub.term != term):
		return r.publish(ctx, term, lease)
	case !leading && r.pub.lease != 0:
		if err := r.unpublish(ctx); err != nil {
			return err
		}
		r.log.Info("cell leader key removed: no longer the leader", "term", r.pub.term)
		r.pub = published{}
	}
	return nil
}

func (r *Registrar) publish(ctx context.Context, term uint64, lease topo.LeaseID) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.TTL)
	defer cancel()
	key := topo.CellLeaderKey(r.cfg.Cell)
	cond := topo.IfAbsent(key)
	cur, err := catalog.GetCellLeader(ctx, r.st, r.cfg.Cell)
	switch {
	case errors.Is(err, topo.ErrNotFound):
	case errors.Is(err, catalog.ErrCorrupt):
		r.log.Warn("cell leader key is not a CellLeader; overwriting it", "err", err)
		cond = topo.IfVersion(key, cur.Version)
	case err != nil:
		return err
	default:
		if l := cur.Value; l.GetNodeId() != r.cfg.Node.GetId() && l.GetTerm() >= term {
			return fmt.Errorf("%w (%s at term %d, ours %d)", errNotOurs, l.GetNodeId(), l.GetTerm(), term)
		}
		cond = topo.IfVersion(key, cur.Version)
	}
	b, err := proto.Marshal(&cpv1.CellLeader{
		NodeId:   r.cfg.Node.GetId(),
		GrpcAddr: r.cfg.Node.GetGrpcAddr(),
		HttpAddr: r.cfg.Node.GetHttpAddr(),
		Term:     term,
		Since:    timestamppb.Now(),
	})
	if err != nil {
		return err
	}
	if _, err := r.st.Txn(ctx, []topo.Cond{cond}, []topo.Op{topo.PutLeased(key, b, lease)}); err != nil {
		return err
	}
	r.pub = published{lease: lease, term: term}
	r.log.Info("published as the cell leader", "key", key, "term", term)
	return nil
}

// unpublish deletes the leader key if it is still this node's.
func (r *Registrar) unpublish(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.TTL)
	defer cancel()
	key := topo.CellLeaderKey(r.cfg.Cell)
	cur, err := catalog.GetCellLeader(ctx, r.st, r.cfg.Cell)
	switch {
	case errors.Is(err, topo.ErrNotFound), errors.Is(err, catalog.ErrCorrupt):
		return nil // gone, or not a leader record of ours
	case err != nil:
		return err
	case cur.Value.GetNodeId() != r.cfg.Node.GetId() || cur.Lease != r.pub.lease:
		return nil // someone else's by now
	}
	err = r.st.Delete(ctx, key, cur.Version)
	if errors.Is(err, topo.ErrNotFound) || errors.Is(err, topo.ErrVersionMismatch) {
		return nil // gone or replaced meanwhile
	}
	return err
}

// Close stops the loop, deletes the leader key if it is this node's and
// revokes the session, so that the node's keys disappear at once. The
// clean-up is bounded by the TTL (after which the keys expire anyway).
// Close is idempotent.
func (r *Registrar) Close() error {
	r.closeOnce.Do(func() {
		r.cancel()
		<-r.done
		ctx, cancel := context.WithTimeout(context.Background(), r.cfg.TTL)
		defer cancel()
		if r.sess == nil {
			return
		}
		var errs []error
		if r.pub.lease != 0 {
			if err := r.unpublish(ctx); err != nil {
				errs = append(errs, fmt.Errorf("registry: delete leader key: %w", err))
			}
			r.pub = published{}
		}
		if err := r.sess.Close(); err != nil && !errors.Is(err, topo.ErrClosed) {
			errs = append(errs, fmt.Errorf("registry: revoke session: %w", err))
		}
		r.sess = nil
		r.mu.Lock()
		r.registered = 0
		r.mu.Unlock()
		r.closeErr = errors.Join(errs...)
		r.log.Info("unregistered from the control plane")
	})
	return r.closeErr
}
