package platform

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/serve"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router"
)

// healthTimeout bounds the wait for cells to report HEALTHY.
const healthTimeout = 2 * time.Minute

// Platform is a running platform.
type Platform struct {
	cfg Config
	log *slog.Logger
	// quiet mutes the in-process nodes' logs once Close starts: peers of
	// a cell that stops as a whole log every vanished connection.
	quiet atomic.Bool

	// certs is the dev PKI (MutualTLS); nil without.
	certs *certs

	cp    *controlplane.Server
	admin *grpc.ClientConn
	rt    *router.Server
	rconn *grpc.ClientConn
	// routerHTTP is the router's HTTP address, bound before any node
	// starts so that the nodes' MCP public URL (a JWT's audience, the RFC
	// 9728 resource) is the router's, the URL clients are given;
	// routerHTTPLis is its listener until the router takes it.
	routerHTTP    string
	routerHTTPLis net.Listener

	mu      sync.Mutex
	cells   []*Cell
	nodes   []*Node // in order of creation (node i has the i-th ports)
	started bool    // Start returned
	closing bool
	wg      sync.WaitGroup // child process supervisors
	once    sync.Once
}

// Start brings the platform up: the control plane (with etcd embedded),
// the configured regions and cells (their nodes form each cell from the
// registry; Start waits until every cell is HEALTHY) and the router (Start
// waits until its table is loaded). On error everything started is
// stopped.
func Start(ctx context.Context, cfg Config) (_ *Platform, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Platform{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, fmt.Errorf("data dir %s is not usable: %w", cfg.DataDir, err)
	}
	if err := preflight(cfg); err != nil {
		return nil, err
	}

	if cfg.MutualTLS {
		p.progress("mutual TLS: certificates in %s", filepath.Join(cfg.DataDir, CertsDir))
		if p.certs, err = openCerts(filepath.Join(cfg.DataDir, CertsDir), cfg.Name, cfg.TLSReloadInterval, p.log.With("component", "pki")); err != nil {
			return nil, err
		}
	} else {
		p.log.Warn("INSECURE: the platform runs without mutual TLS: every internal hop (control plane, cell gRPC, Raft, MCP HTTP) is plaintext and unauthenticated; anyone who can reach the ports can read, write and delete every tenant's data (docs/security.md, \"--insecure and the dev shortcuts\")",
			"insecure", true)
	}

	if p.routerHTTP, p.routerHTTPLis, err = listenOn(cfg.RouterHTTPAddr); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}

	p.progress("starting the control plane (etcd embedded in %s)", filepath.Join(cfg.DataDir, "controlplane"))
	if err := p.startControlPlane(ctx); err != nil {
		return nil, err
	}
	if p.admin, err = p.dialAs(p.cp.GRPCAddr(), pki.KindControlPlane); err != nil {
		return nil, err
	}
	if !cfg.TestingKnobs.ControlPlane.NoController {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := poll(wctx, func() error {
			if !p.cp.IsLeader() {
				return errors.New("the control plane does not lead yet")
			}
			return nil
		})
		cancel()
		if err != nil {
			return nil, fmt.Errorf("control plane: %w", err)
		}
	}

	var initial []*Cell
	for _, region := range cfg.Regions {
		if err := p.createRegion(ctx, region); err != nil {
			return nil, err
		}
		for i := range cfg.CellsPerRegion {
			c, err := p.newCell(ctx, CellSpec{Region: region, ID: CellName(region, i), Nodes: cfg.NodesPerCell})
			if err != nil {
				return nil, err
			}
			initial = append(initial, c)
		}
	}
	if len(initial) > 0 {
		p.progress("starting %d nodes (%d regions × %d cells × %d)%s", len(initial)*cfg.NodesPerCell, len(cfg.Regions), cfg.CellsPerRegion, cfg.NodesPerCell,
			map[bool]string{true: " as child processes", false: ""}[cfg.MultiProcess])
		if err := startAll(ctx, initial); err != nil {
			return nil, err
		}
		p.progress("waiting for every cell to elect a leader")
		if err := p.waitHealthy(ctx, nil); err != nil {
			return nil, err
		}
	}

	p.progress("starting the router")
	if err := p.startRouter(ctx); err != nil {
		return nil, err
	}
	if cfg.MutualTLS {
		if err := p.writeClientConfig(); err != nil {
			return nil, err
		}
	}
	p.mu.Lock()
	p.started = true
	p.mu.Unlock()
	return p, nil
}

func (p *Platform) progress(format string, args ...any) {
	if p.cfg.Progress != nil {
		p.cfg.Progress(format, args...)
	}
}

// changed tells OnNodesChanged that a node's process changed.
func (p *Platform) changed() {
	p.mu.Lock()
	started := p.started && !p.closing
	p.mu.Unlock()
	if started && p.cfg.OnNodesChanged != nil {
		p.cfg.OnNodesChanged()
	}
}

// startControlPlane starts the control plane replica with etcd embedded
// in <DataDir>/controlplane. On free ports, a start that lost a port to
// another process is retried on new ones (etcd cannot take listeners).
func (p *Platform) startControlPlane(ctx context.Context) error {
	dir := filepath.Join(p.cfg.DataDir, "controlplane")
	_, statErr := os.Stat(filepath.Join(dir, "etcd"))
	fresh := errors.Is(statErr, os.ErrNotExist)
	for attempt := 1; ; attempt++ {
		c := controlplane.DefaultConfig()
		c.ID = p.cfg.Name + "-cp"
		c.DataDir = dir
		c.Controller = p.cfg.Controller
		c.Controller.TestingKnobs = p.cfg.TestingKnobs.Controller
		c.TestingKnobs = p.cfg.TestingKnobs.ControlPlane
		c.EtcdUnsafeNoFsync = p.cfg.EtcdUnsafeNoFsync
		if p.cfg.ShutdownTimeout > 0 {
			c.ShutdownTimeout = p.cfg.ShutdownTimeout
		}
		c.Logger = p.log.With("component", "controlplane")
		var err error
		if p.certs != nil {
			if c.TLS, err = p.certs.source(pki.ControlPlaneIdentity(p.cfg.Name, c.ID)); err != nil {
				return fmt.Errorf("control plane: %w", err)
			}
		}
		if c.GRPCAddr, c.GRPCListener, err = listenOn(p.cfg.ControlPlaneAddr); err != nil {
			return fmt.Errorf("control plane: %w", err)
		}
		if c.HTTPAddr, c.HTTPListener, err = listenOn(p.cfg.ControlPlaneHTTPAddr); err != nil {
			closeListener(c.GRPCListener)
			return fmt.Errorf("control plane: %w", err)
		}
		free := p.cfg.EtcdClientURL == ""
		if free {
			ports, err := serve.FreeLoopbackPorts(2)
			if err != nil {
				closeListener(c.GRPCListener)
				closeListener(c.HTTPListener)
				return fmt.Errorf("control plane: %w", err)
			}
			scheme := "http://"
			if p.certs != nil {
				scheme = "https://" // etcd with mutual TLS and RBAC
			}
			c.EmbeddedClientURL, c.EmbeddedPeerURL = scheme+addr(ports[0]), scheme+addr(ports[1])
		} else {
			c.EmbeddedClientURL, c.EmbeddedPeerURL = p.cfg.EtcdClientURL, p.cfg.EtcdPeerURL
		}
		cp, err := controlplane.Start(ctx, c)
		if err == nil {
			p.cp = cp
			return nil
		}
		closeListener(c.GRPCListener)
		closeListener(c.HTTPListener)
		if !free || attempt == 3 || !errors.Is(err, etcdserver.ErrAddrInUse) || ctx.Err() != nil {
			return fmt.Errorf("control plane: %w", err)
		}
		if fresh {
			_ = os.RemoveAll(filepath.Join(dir, "etcd"))
		}
	}
}

// startRouter starts the router on the control plane's etcd and waits
// until its table is loaded.
func (p *Platform) startRouter(ctx context.Context) (err error) {
	rc := router.DefaultConfig()
	rc.EtcdEndpoints = p.cp.EtcdEndpoints()
	if rc.GRPCAddr, rc.GRPCListener, err = listenOn(p.cfg.RouterAddr); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	rc.HTTPAddr, rc.HTTPListener = p.routerHTTP, p.routerHTTPLis
	rc.MCP.PublicURL = p.MCPPublicURL() // the nodes' too: one MCP URL
	p.routerHTTPLis = nil               // the router's now (closed below on error)
	rc.Routing.SnapshotPath = filepath.Join(p.cfg.DataDir, "router", "table.snap")
	rc.Auth.Mode = auth.Mode(p.cfg.Auth)
	if p.cfg.ShutdownTimeout > 0 {
		rc.ShutdownTimeout = p.cfg.ShutdownTimeout
	}
	rc.Logger = p.log.With("component", "router")
	if p.certs != nil {
		id := pki.RouterIdentity(p.cfg.Name, p.cfg.Name+"-router")
		if rc.InternalTLS, err = p.certs.source(id); err == nil {
			// Its etcd user (read-only) before it connects.
			err = p.cp.EnsureEtcdUser(ctx, rc.InternalTLS.Identity())
		}
		if err != nil {
			closeListener(rc.GRPCListener)
			closeListener(rc.HTTPListener)
			return fmt.Errorf("router: %w", err)
		}
		if p.cfg.FrontDoorTLS {
			// The same certificate: it has server auth and the loopback SANs.
			base := filepath.Join(p.certs.dir, id.FileName())
			rc.TLS.CertFile, rc.TLS.KeyFile = base+".crt", base+".key"
		}
	}
	if err := os.MkdirAll(filepath.Dir(rc.Routing.SnapshotPath), 0o755); err != nil {
		closeListener(rc.GRPCListener)
		closeListener(rc.HTTPListener)
		return err
	}
	if p.rt, err = router.Start(ctx, rc); err != nil {
		closeListener(rc.GRPCListener)
		closeListener(rc.HTTPListener)
		return fmt.Errorf("router: %w", err)
	}
	if p.rconn, err = p.dial(p.rt.GRPCAddr()); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := poll(wctx, func() error {
		if !p.rt.Table().Loaded() {
			return errors.New("not loaded")
		}
		return nil
	}); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("the router did not load its table within 30 s")
	}
	return nil
}

func (p *Platform) createRegion(ctx context.Context, region string) error {
	if _, err := p.Admin().CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: region}); err != nil && !exists(err) {
		return fmt.Errorf("create region %s: %w", region, rpcerr.FromStatus(err))
	}
	return nil
}

// CellSpec describes a cell for AddCell.
type CellSpec struct {
	// Region (created if new) and ID of the cell.
	Region, ID string
	// Nodes is the number of Raft members (1, 3, 5 or 7).
	Nodes int
	// EtcdEndpoints, when set, are what the cell's in-process nodes dial
	// for the registry (a proxy a test cuts, say); default: the
	// platform's etcd.
	EtcdEndpoints []string
	// Configure, when set, adjusts each in-process node's configuration
	// after the platform filled it.
	Configure func(*cells.Config)
}

// AddCell creates spec's region (if new) and cell through the control
// plane's API, starts the cell's nodes, which form it from the registry,
// and waits until the control plane reports it HEALTHY.
func (p *Platform) AddCell(ctx context.Context, spec CellSpec) (*Cell, error) {
	if spec.Nodes < 1 {
		return nil, fmt.Errorf("cell %s: %d nodes", spec.ID, spec.Nodes)
	}
	if err := p.createRegion(ctx, spec.Region); err != nil {
		return nil, err
	}
	c, err := p.newCell(ctx, spec)
	if err != nil {
		return nil, err
	}
	if err := startAll(ctx, []*Cell{c}); err != nil {
		return c, err
	}
	return c, p.waitHealthy(ctx, []string{c.id})
}

// newCell records the cell with the control plane and prepares its nodes.
func (p *Platform) newCell(ctx context.Context, spec CellSpec) (*Cell, error) {
	if _, err := p.Admin().CreateCell(ctx, &cpv1.CreateCellRequest{Id: spec.ID, Region: spec.Region, ExpectedMembers: uint32(spec.Nodes)}); err != nil && !exists(err) {
		return nil, fmt.Errorf("create cell %s: %w", spec.ID, rpcerr.FromStatus(err))
	}
	c := &Cell{p: p, id: spec.ID, region: spec.Region}
	p.mu.Lock()
	p.cells = append(p.cells, c)
	p.mu.Unlock()
	for k := range spec.Nodes {
		n, err := p.newNode(c, k, spec)
		if err != nil {
			return c, err
		}
		c.nodes = append(c.nodes, n)
	}
	return c, nil
}

// startAll starts every node of cells at once: a new cell's nodes wait
// for each other in the registry before forming their Raft group.
func startAll(ctx context.Context, cs []*Cell) error {
	var nodes []*Node
	for _, c := range cs {
		nodes = append(nodes, c.nodes...)
	}
	errs := make([]error, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { errs[i] = n.start(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// WaitHealthy waits until the control plane reports the named cells (all
// cells when none is named) HEALTHY.
func (p *Platform) WaitHealthy(ctx context.Context, cellIDs ...string) error {
	return p.waitHealthy(ctx, cellIDs)
}

func (p *Platform) waitHealthy(ctx context.Context, only []string) error {
	deadline := time.Now().Add(healthTimeout)
	last := ""
	for {
		resp, err := p.Admin().ListCells(ctx, &cpv1.ListCellsRequest{})
		waiting := []string{}
		if err == nil {
			seen := 0
			for _, c := range resp.GetCells() {
				if only != nil && !contains(only, c.GetCell().GetId()) {
					continue
				}
				seen++
				if c.GetHealth() != cpv1.CellHealth_CELL_HEALTH_HEALTHY {
					waiting = append(waiting, c.GetCell().GetId()+" ("+strings.TrimPrefix(c.GetHealth().String(), "CELL_HEALTH_")+")")
				}
			}
			if len(waiting) == 0 && (only == nil || seen == len(only)) {
				return nil
			}
			if s := strings.Join(waiting, ", "); s != last && s != "" {
				p.progress("waiting for %s", s)
				last = s
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cells not healthy after 2 minutes: %s (node logs under %s)", strings.Join(waiting, ", "), filepath.Join(p.cfg.DataDir, "logs"))
		}
		if err := retry.Sleep(ctx, 200*time.Millisecond); err != nil {
			return err
		}
	}
}

func contains(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// Admin is a ControlPlaneService client of the control plane.
func (p *Platform) Admin() cpv1.ControlPlaneServiceClient {
	return cpv1.NewControlPlaneServiceClient(p.admin)
}

// AdminConn is the platform's connection to the control plane.
func (p *Platform) AdminConn() *grpc.ClientConn { return p.admin }

// ControlPlane is the control plane replica.
func (p *Platform) ControlPlane() *controlplane.Server { return p.cp }

// ControlPlaneAddr is the control plane's gRPC address (cellctl's).
func (p *Platform) ControlPlaneAddr() string { return p.cp.GRPCAddr() }

// EtcdEndpoints are the embedded etcd's client URLs.
func (p *Platform) EtcdEndpoints() []string { return p.cp.EtcdEndpoints() }

// Router is the router.
func (p *Platform) Router() *router.Server { return p.rt }

// RouterAddr is the router's gRPC address.
func (p *Platform) RouterAddr() string { return p.rt.GRPCAddr() }

// RouterConn is the platform's connection to the router (ContextService,
// RouterService).
func (p *Platform) RouterConn() *grpc.ClientConn { return p.rconn }

// Cells returns the platform's cells in order of creation.
func (p *Platform) Cells() []*Cell {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Cell(nil), p.cells...)
}

// Cell returns the cell with id, nil if none.
func (p *Platform) Cell(id string) *Cell {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.cells {
		if c.id == id {
			return c
		}
	}
	return nil
}

// Nodes returns every node in order of creation.
func (p *Platform) Nodes() []*Node {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*Node(nil), p.nodes...)
}

// Description is what a script needs to drive the platform (the body of
// `cellplane dev`'s dev.json).
type Description struct {
	ControlPlane string     `json:"controlplane"`
	RouterGRPC   string     `json:"router_grpc"`
	RouterHTTP   string     `json:"router_http"`
	Etcd         []string   `json:"etcd"`
	Auth         string     `json:"auth"`
	Nodes        []NodeInfo `json:"nodes"`
	// ClientConfig is the client configuration file (CELLPLANE_CONFIG)
	// of a platform started with MutualTLS; "" without.
	ClientConfig string `json:"client_config,omitempty"`
	// RouterTLS: the router's front door serves TLS (FrontDoorTLS);
	// clients trust CA, the dev CA's certificate.
	RouterTLS bool   `json:"router_tls,omitempty"`
	CA        string `json:"ca,omitempty"`
}

// NodeInfo describes a node.
type NodeInfo struct {
	ID     string `json:"id"`
	Cell   string `json:"cell"`
	Region string `json:"region"`
	Raft   string `json:"raft"`
	GRPC   string `json:"grpc"`
	HTTP   string `json:"http"`
	// PID is a child process's (its last one if it died); 0 in process.
	PID int `json:"pid"`
}

// Describe returns the platform's endpoints and nodes.
func (p *Platform) Describe() Description {
	d := Description{Auth: p.cfg.Auth, ClientConfig: p.ClientConfigPath(), RouterTLS: p.cfg.FrontDoorTLS}
	if dir := p.CertsDir(); dir != "" {
		d.CA = filepath.Join(dir, pki.CACertFile)
		if abs, err := filepath.Abs(d.CA); err == nil {
			d.CA = abs
		}
	}
	if p.cp != nil {
		d.ControlPlane, d.Etcd = p.cp.GRPCAddr(), p.cp.EtcdEndpoints()
	}
	if p.rt != nil {
		d.RouterGRPC, d.RouterHTTP = p.rt.GRPCAddr(), p.rt.HTTPAddr()
	}
	for _, n := range p.Nodes() {
		d.Nodes = append(d.Nodes, n.Info())
	}
	return d
}

// Close stops the router, the nodes (child processes get SIGTERM, then
// SIGKILL after 15 s) and the control plane. It is idempotent.
func (p *Platform) Close() {
	p.once.Do(p.close)
}

func (p *Platform) close() {
	p.mu.Lock()
	p.closing = true
	nodes := append([]*Node(nil), p.nodes...)
	p.mu.Unlock()
	p.quiet.Store(true)
	if p.rconn != nil {
		_ = p.rconn.Close()
	}
	if p.rt != nil {
		p.progress("stopping the router")
		_ = p.rt.Close()
	}
	closeListener(p.routerHTTPLis) // bound, but the router never started
	if len(nodes) > 0 {
		p.progress("stopping %d nodes", len(nodes))
	}
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Go(n.Stop)
	}
	wg.Wait()
	p.wg.Wait()
	if p.admin != nil {
		_ = p.admin.Close()
	}
	if p.cp != nil {
		p.progress("stopping the control plane")
		_ = p.cp.Close()
	}
}

// PortError says which configured address is taken.
type PortError struct {
	// Field is the Config field of the address (ControlPlaneAddr,
	// ControlPlaneHTTPAddr, RouterAddr, RouterHTTPAddr, EtcdClientURL,
	// EtcdPeerURL or NodeBasePort).
	Field, Addr string
	Err         error
}

func (e *PortError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Field, e.Addr, e.Reason())
}

// Reason is why the address could not be bound, in a few words.
func (e *PortError) Reason() string {
	return (&serve.ListenError{Name: e.Field, Addr: e.Addr, Err: e.Err}).Reason()
}

func (e *PortError) Unwrap() error { return e.Err }

// urlHost is the host:port of an etcd URL.
func urlHost(u string) string {
	return strings.TrimPrefix(strings.TrimPrefix(u, "http://"), "https://")
}

// preflight binds every fixed address once, so that a taken port is one
// clear error before anything starts (rather than after the nodes).
func preflight(cfg Config) error {
	type want struct{ field, addr string }
	var wants []want
	for _, w := range []want{
		{"ControlPlaneAddr", cfg.ControlPlaneAddr}, {"ControlPlaneHTTPAddr", cfg.ControlPlaneHTTPAddr},
		{"RouterAddr", cfg.RouterAddr}, {"RouterHTTPAddr", cfg.RouterHTTPAddr},
		{"EtcdClientURL", urlHost(cfg.EtcdClientURL)}, {"EtcdPeerURL", urlHost(cfg.EtcdPeerURL)},
	} {
		if w.addr != "" {
			wants = append(wants, w)
		}
	}
	if cfg.NodeBasePort != 0 {
		for i := range 3 * len(cfg.Regions) * cfg.CellsPerRegion * cfg.NodesPerCell {
			wants = append(wants, want{"NodeBasePort", addr(cfg.NodeBasePort + i)})
		}
	}
	for _, w := range wants {
		l, err := net.Listen("tcp", w.addr)
		if err != nil {
			return &PortError{Field: w.field, Addr: w.addr, Err: err}
		}
		_ = l.Close()
	}
	return nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func exists(err error) bool { return errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) }

// listenOn returns a fixed address as is, or for "" a listener on a free
// loopback port (given to the component, which closes it).
func listenOn(fixed string) (string, net.Listener, error) {
	if fixed != "" {
		return fixed, nil, nil
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, fmt.Errorf("listen: %w", err)
	}
	return l.Addr().String(), l, nil
}

func closeListener(l net.Listener) {
	if l != nil {
		_ = l.Close()
	}
}

// dial opens a client connection to the router's front door: plaintext
// on loopback, or with FrontDoorTLS TLS accepting the router's certificate
// of the dev CA (unless Config.Dial sets credentials).
func (p *Platform) dial(target string) (*grpc.ClientConn, error) {
	dc := p.cfg.Dial
	if p.cfg.FrontDoorTLS && p.certs != nil && dc.Credentials == nil {
		dc.Credentials = pki.ClientCredentials(p.certs.op, pki.ExpectKinds(pki.KindRouter))
	}
	return dial.New(target, dc)
}

// poll calls fn every 20 ms until it succeeds or ctx ends.
func poll(ctx context.Context, fn func() error) error {
	return retry.Poll(ctx, 20*time.Millisecond, fn)
}

// MCPPublicURL is the base URL of MCP as the platform's clients see it
// (the router's HTTP address): the nodes' mcp.Config.PublicURL unless the
// Node template sets one.
func (p *Platform) MCPPublicURL() string {
	if u := p.cfg.Node.MCP.PublicURL; u != "" {
		return u
	}
	if p.cfg.FrontDoorTLS {
		return "https://" + p.routerHTTP
	}
	return "http://" + p.routerHTTP
}
