package service

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"

	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// Server holds both services of a node and what they share: the store,
// the limits, the logger and the pool of connections to the leader.
type Server struct {
	core *core
	ctx  *ContextServer
	cell *CellServer
}

// core is the state shared by ContextServer and CellServer.
type core struct {
	st      Store
	lim     validate.Limits
	node    *cellv1.NodeInfo
	log     *slog.Logger
	cfg     Config
	pool    *dial.Pool      // connections to the leader; a cell has a handful of members, so none is evicted before Close
	closing context.Context // done when Close was called
	stopAll context.CancelFunc
	// verifiedLeader is the last (leader id, gRPC address) leaderIsMember
	// accepted: the check reads the store's whole status (the Raft
	// configuration goes through Raft's own loop), too much for every
	// forwarded call, and the leader rarely changes.
	verifiedLeader atomic.Pointer[[2]string]

	encMu sync.Mutex
	encs  map[string]string // tenant "\x00" context id → token encoding (Config.TokenEncodingCache)

	watchMu sync.Mutex
	watches map[string]int // open Watch streams by tenant (Limits.MaxWatchesPerTenant)
}

// startWatch counts one more open Watch of tenant, or refuses it with
// QUOTA_EXCEEDED when the tenant holds Limits.MaxWatchesPerTenant; the
// returned func ends it.
func (c *core) startWatch(tenant string) (end func(), err error) {
	c.watchMu.Lock()
	defer c.watchMu.Unlock()
	if c.watches[tenant] >= c.lim.MaxWatchesPerTenant {
		return nil, cperr.New(cperr.QuotaExceeded, "tenant %s has %d Watch streams open on this node, the most allowed; close one first",
			tenant, c.lim.MaxWatchesPerTenant).With(cperr.MetaTenant, tenant)
	}
	if c.watches == nil {
		c.watches = make(map[string]int)
	}
	c.watches[tenant]++
	return func() {
		c.watchMu.Lock()
		defer c.watchMu.Unlock()
		if c.watches[tenant]--; c.watches[tenant] <= 0 {
			delete(c.watches, tenant)
		}
	}, nil
}

// New returns the services of one node over st.
func New(st Store, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	node := proto.Clone(cfg.Node).(*cellv1.NodeInfo)
	log = log.With("node", node.GetNodeId())
	closing, stop := context.WithCancel(context.Background())
	c := &core{
		st:      st,
		lim:     cfg.Limits,
		node:    node,
		log:     log,
		cfg:     cfg,
		pool:    dial.NewPool(cfg.Dial),
		closing: closing,
		stopAll: stop,
	}
	return &Server{core: c, ctx: &ContextServer{core: c}, cell: &CellServer{core: c}}, nil
}

// ContextService returns the ContextService implementation.
func (s *Server) ContextService() *ContextServer { return s.ctx }

// CellService returns the CellService implementation.
func (s *Server) CellService() *CellServer { return s.cell }

// Register registers both services on a gRPC server.
func (s *Server) Register(gs grpc.ServiceRegistrar) {
	contextv1.RegisterContextServiceServer(gs, s.ctx)
	cellv1.RegisterCellServiceServer(gs, s.cell)
}

// Close ends open Watch streams (with CELL_UNAVAILABLE, so that clients
// resume on another member) and closes the forwarding connections. Call
// it before or while gracefully stopping the gRPC server: open watches
// would otherwise keep GracefulStop waiting. It is idempotent.
func (s *Server) Close() error {
	s.core.stopAll()
	return s.core.pool.Close()
}
