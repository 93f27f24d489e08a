// Package devenv runs the whole platform on one machine for `cellplane
// dev`: embedded etcd and a control plane, regions × cells × nodes (real
// Raft on disk over loopback TCP, an MCP worker in every node), and one
// router. Nodes run in this process or, with Multiprocess, each as a child
// process of the same binary (`cellplane cell …`) so that a user can kill
// one and watch failover.
//
// Everything lives under one data dir, with a version file: started again
// on the same dir, the platform comes back with every tenant and all data.
// Addresses are fixed by the configuration (node i uses NodeBasePort+3i,
// +1, +2), because Raft remembers its members by address.
//
//	env, err := devenv.Start(ctx, cfg)
//	...
//	<-ctx.Done()
//	env.Close()
package devenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/mcpauth"
	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/serve"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router"
	"github.com/cellplane/cellplane/router/auth"
)

// Version is written to the data dir; a dir written by another version is
// refused rather than misread.
const Version = "cellplane-dev/1"

// Config configures the environment.
type Config struct {
	DataDir        string
	Reset          bool
	Regions        []string
	CellsPerRegion int
	NodesPerCell   int

	ControlPlaneAddr, ControlPlaneHTTPAddr string
	RouterAddr, RouterHTTPAddr             string
	EtcdClientURL, EtcdPeerURL             string
	NodeBasePort                           int

	// Auth is "none" or "apikey" (router and MCP workers).
	Auth string
	// Demo creates tenant "demo" (and, with auth, an API key).
	Demo bool
	// Multiprocess runs each node as a child process of Binary.
	Multiprocess bool
	// RestartKilled restarts a node process that died (Multiprocess).
	RestartKilled bool
	// Binary is the cellplane executable for child processes (default:
	// os.Executable()).
	Binary string
	// LogLevel of child processes.
	LogLevel string

	// Progress receives one line per step (nil: discarded).
	Progress io.Writer
	Logger   *slog.Logger
}

// DefaultConfig is the README's platform: 2 regions × 2 cells × 3 nodes.
func DefaultConfig() Config {
	return Config{
		DataDir: ".cellplane-dev", Regions: []string{"us-east", "eu-west"}, CellsPerRegion: 2, NodesPerCell: 3,
		ControlPlaneAddr: "127.0.0.1:7000", ControlPlaneHTTPAddr: "127.0.0.1:7001",
		RouterAddr: "127.0.0.1:7100", RouterHTTPAddr: "127.0.0.1:7180",
		EtcdClientURL: "http://127.0.0.1:7379", EtcdPeerURL: "http://127.0.0.1:7380",
		NodeBasePort: 7400, Auth: "none", LogLevel: "warn",
	}
}

// Validate reports an unusable configuration.
func (c Config) Validate() error {
	var errs []error
	if c.DataDir == "" {
		errs = append(errs, errors.New("a data dir is required"))
	}
	if len(c.Regions) == 0 {
		errs = append(errs, errors.New("at least one region is required"))
	}
	if c.CellsPerRegion < 1 || c.CellsPerRegion > 26 {
		errs = append(errs, fmt.Errorf("cells per region must be 1-26, got %d", c.CellsPerRegion))
	}
	if c.NodesPerCell < 1 || c.NodesPerCell%2 == 0 || c.NodesPerCell > 7 {
		errs = append(errs, fmt.Errorf("nodes per cell must be 1, 3, 5 or 7, got %d", c.NodesPerCell))
	}
	if c.NodeBasePort < 1024 || c.NodeBasePort+3*len(c.Regions)*c.CellsPerRegion*c.NodesPerCell > 65535 {
		errs = append(errs, fmt.Errorf("node base port %d leaves no room for the nodes' ports", c.NodeBasePort))
	}
	if c.Auth != "none" && c.Auth != "apikey" {
		errs = append(errs, fmt.Errorf("auth must be none or apikey, got %q", c.Auth))
	}
	return errors.Join(errs...)
}

// NodeInfo is a node of the environment, as written to dev.json.
type NodeInfo struct {
	ID     string `json:"id"`
	Cell   string `json:"cell"`
	Region string `json:"region"`
	Raft   string `json:"raft"`
	GRPC   string `json:"grpc"`
	HTTP   string `json:"http"`
	PID    int    `json:"pid"`
}

// State is <data-dir>/dev.json: what a script needs to drive the platform.
type State struct {
	ControlPlane string     `json:"controlplane"`
	RouterGRPC   string     `json:"router_grpc"`
	RouterHTTP   string     `json:"router_http"`
	Etcd         []string   `json:"etcd"`
	Auth         string     `json:"auth"`
	DemoTenant   string     `json:"demo_tenant"`
	DemoAPIKey   string     `json:"demo_api_key"`
	Nodes        []NodeInfo `json:"nodes"`
}

// Env is a running environment.
type Env struct {
	cfg   Config
	log   *slog.Logger
	cp    *controlplane.Server
	reg   topo.Store
	rt    *router.Server
	conns []*grpc.ClientConn

	// quiet mutes the in-process nodes' logs once shutdown starts: peers
	// of a cell that stops as a whole log every vanished connection.
	quiet atomic.Bool

	mu       sync.Mutex
	state    State
	inproc   []*cells.Node
	children map[string]*child
	closing  bool
	wg       sync.WaitGroup
}

type child struct {
	info NodeInfo
	cmd  *exec.Cmd
	done chan struct{}
}

func (e *Env) progress(format string, args ...any) {
	if e.cfg.Progress != nil {
		fmt.Fprintf(e.cfg.Progress, "cellplane dev: "+format+"\n", args...)
	}
}

// CellName is the id of the i-th cell of a region: us-east → us-east-a.
func CellName(region string, i int) string { return region + "-" + string(rune('a'+i)) }

// Start brings the environment up and returns once every cell is healthy
// and the router routes.
func Start(ctx context.Context, cfg Config) (_ *Env, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Env{cfg: cfg, log: cfg.Logger, children: map[string]*child{}}
	defer func() {
		if err != nil {
			e.Close()
		}
	}()
	if err := e.prepareDir(); err != nil {
		return nil, err
	}
	if err := preflight(cfg); err != nil {
		return nil, err
	}

	e.progress("starting the control plane (etcd embedded in %s)", filepath.Join(cfg.DataDir, "controlplane"))
	cpc := controlplane.DefaultConfig()
	cpc.ID = "dev-cp"
	cpc.DataDir = filepath.Join(cfg.DataDir, "controlplane")
	cpc.GRPCAddr, cpc.HTTPAddr = cfg.ControlPlaneAddr, cfg.ControlPlaneHTTPAddr
	cpc.EmbeddedClientURL, cpc.EmbeddedPeerURL = cfg.EtcdClientURL, cfg.EtcdPeerURL
	cpc.Controller.SessionTTL = 2 * time.Second
	// One machine, no other routers to wait for: a moved tenant's old
	// copy can go soon after the flip (production keeps it 30 s).
	cpc.Controller.Moves.CleanupGrace = 3 * time.Second
	cpc.Logger = cfg.Logger.With("component", "controlplane")
	if e.cp, err = controlplane.Start(ctx, cpc); err != nil {
		return nil, fmt.Errorf("control plane: %w", err)
	}
	tc := etcdtopo.DefaultConfig()
	tc.Endpoints = e.cp.EtcdEndpoints()
	if e.reg, err = etcdtopo.Dial(ctx, tc); err != nil {
		return nil, err
	}
	e.state = State{ControlPlane: e.cp.GRPCAddr(), Etcd: e.cp.EtcdEndpoints(), Auth: cfg.Auth}

	admin, err := e.adminClient()
	if err != nil {
		return nil, err
	}
	var nodes []NodeInfo
	i := 0
	for _, region := range cfg.Regions {
		if _, err := admin.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: region}); err != nil && !exists(err) {
			return nil, fmt.Errorf("create region %s: %w", region, rpcerr.FromStatus(err))
		}
		for c := range cfg.CellsPerRegion {
			cell := CellName(region, c)
			if _, err := admin.CreateCell(ctx, &cpv1.CreateCellRequest{Id: cell, Region: region, ExpectedMembers: uint32(cfg.NodesPerCell)}); err != nil && !exists(err) {
				return nil, fmt.Errorf("create cell %s: %w", cell, rpcerr.FromStatus(err))
			}
			for n := range cfg.NodesPerCell {
				p := cfg.NodeBasePort + 3*i
				nodes = append(nodes, NodeInfo{ID: fmt.Sprintf("%s-n%d", cell, n+1), Cell: cell, Region: region,
					Raft: addr(p), GRPC: addr(p + 1), HTTP: addr(p + 2)})
				i++
			}
		}
	}

	e.progress("starting %d nodes (%d regions × %d cells × %d)%s", len(nodes), len(cfg.Regions), cfg.CellsPerRegion, cfg.NodesPerCell,
		map[bool]string{true: " as child processes", false: ""}[cfg.Multiprocess])
	if err := e.startNodes(ctx, nodes); err != nil {
		return nil, err
	}
	e.progress("waiting for every cell to elect a leader")
	if err := e.waitHealthy(ctx, admin); err != nil {
		return nil, err
	}

	e.progress("starting the router")
	rc := router.DefaultConfig()
	rc.EtcdEndpoints = e.cp.EtcdEndpoints()
	rc.GRPCAddr, rc.HTTPAddr = cfg.RouterAddr, cfg.RouterHTTPAddr
	rc.Routing.SnapshotPath = filepath.Join(cfg.DataDir, "router", "table.snap")
	rc.Auth.Mode = auth.Mode(cfg.Auth)
	rc.Logger = cfg.Logger.With("component", "router")
	if err := os.MkdirAll(filepath.Dir(rc.Routing.SnapshotPath), 0o755); err != nil {
		return nil, err
	}
	if e.rt, err = router.Start(ctx, rc); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	e.state.RouterGRPC, e.state.RouterHTTP = e.rt.GRPCAddr(), e.rt.HTTPAddr()

	if cfg.Demo {
		if err := e.demo(ctx, admin); err != nil {
			return nil, err
		}
	}
	if err := e.waitRouted(ctx); err != nil {
		return nil, err
	}
	e.writeState()
	return e, nil
}

func addr(port int) string { return "127.0.0.1:" + strconv.Itoa(port) }

func exists(err error) bool { return errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) }

// PortError says which flag's address is taken.
type PortError struct {
	Flag, Addr string
	Err        error
}

func (e *PortError) Error() string {
	return fmt.Sprintf("%s %s: %s", e.Flag, e.Addr, (&serve.ListenError{Name: e.Flag, Addr: e.Addr, Err: e.Err}).Reason())
}

func (e *PortError) Unwrap() error { return e.Err }

// preflight binds every fixed address once, so that a taken port is one
// clear line before anything starts (rather than after the nodes).
func preflight(cfg Config) error {
	type want struct{ flag, addr string }
	wants := []want{
		{"--controlplane-addr", cfg.ControlPlaneAddr}, {"--controlplane-http-addr", cfg.ControlPlaneHTTPAddr},
		{"--router-addr", cfg.RouterAddr}, {"--router-http-addr", cfg.RouterHTTPAddr},
		{"--etcd-client-url", strings.TrimPrefix(cfg.EtcdClientURL, "http://")}, {"--etcd-peer-url", strings.TrimPrefix(cfg.EtcdPeerURL, "http://")},
	}
	for i := range 3 * len(cfg.Regions) * cfg.CellsPerRegion * cfg.NodesPerCell {
		wants = append(wants, want{"--node-base-port", addr(cfg.NodeBasePort + i)})
	}
	for _, w := range wants {
		l, err := net.Listen("tcp", w.addr)
		if err != nil {
			return &PortError{Flag: w.flag, Addr: w.addr, Err: err}
		}
		_ = l.Close()
	}
	return nil
}

// prepareDir resets, creates and checks the data dir and its version.
func (e *Env) prepareDir() error {
	dir := e.cfg.DataDir
	if e.cfg.Reset {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("--reset: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("data dir %s is not usable: %w", dir, err)
	}
	probe := filepath.Join(dir, ".write-test")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	_ = os.Remove(probe)
	vf := filepath.Join(dir, "VERSION")
	b, err := os.ReadFile(vf)
	switch {
	case errors.Is(err, os.ErrNotExist):
		entries, _ := os.ReadDir(dir)
		if len(entries) > 0 {
			return fmt.Errorf("data dir %s is not empty and was not made by cellplane dev (no VERSION file): use another --data-dir or --reset", dir)
		}
		return os.WriteFile(vf, []byte(Version+"\n"), 0o644)
	case err != nil:
		return err
	case strings.TrimSpace(string(b)) != Version:
		return fmt.Errorf("data dir %s is from an incompatible version (%q, this is %q): use another --data-dir or --reset", dir, strings.TrimSpace(string(b)), Version)
	}
	return nil
}

func (e *Env) adminClient() (cpv1.ControlPlaneServiceClient, error) {
	conn, err := grpc.NewClient(e.cp.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	e.conns = append(e.conns, conn)
	return cpv1.NewControlPlaneServiceClient(conn), nil
}

// startNodes starts every node at once: a new cell's nodes wait for each
// other in the registry before forming their Raft group.
func (e *Env) startNodes(ctx context.Context, nodes []NodeInfo) error {
	if e.cfg.Multiprocess {
		for _, n := range nodes {
			if err := e.spawn(n); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, len(nodes))
	started := make([]*cells.Node, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started[i], errs[i] = e.startInProcess(ctx, n)
		}()
	}
	wg.Wait()
	e.mu.Lock()
	for i, n := range started {
		if n != nil {
			e.inproc = append(e.inproc, n)
			e.state.Nodes = append(e.state.Nodes, nodes[i])
		}
	}
	e.mu.Unlock()
	return errors.Join(errs...)
}

func (e *Env) startInProcess(ctx context.Context, n NodeInfo) (*cells.Node, error) {
	c := cells.DefaultConfig()
	c.NodeID, c.CellID = n.ID, n.Cell
	c.DataDir = filepath.Join(e.cfg.DataDir, "nodes", n.ID)
	c.RaftAddr, c.GRPCAddr, c.HTTPAddr = n.Raft, n.GRPC, n.HTTP
	c.Registry = e.reg
	c.Logger = slog.New(muted{h: e.cfg.Logger.Handler(), quiet: &e.quiet}).With("node", n.ID)
	if e.cfg.Auth == "apikey" {
		a, err := mcpauth.New(mcpauth.Config{Registry: e.reg})
		if err != nil {
			return nil, err
		}
		c.MCPAuth = a
	}
	node, err := cells.Start(ctx, c)
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", n.ID, err)
	}
	return node, nil
}

// spawn starts a node as a child process, logging to <dir>/logs/<id>.log.
func (e *Env) spawn(n NodeInfo) error {
	bin := e.cfg.Binary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return err
		}
	}
	logDir := filepath.Join(e.cfg.DataDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	logf, err := os.OpenFile(filepath.Join(logDir, n.ID+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	args := []string{"cell", "--id", n.ID, "--cell", n.Cell, "--data-dir", filepath.Join(e.cfg.DataDir, "nodes", n.ID),
		"--etcd-endpoints", strings.Join(e.cp.EtcdEndpoints(), ","),
		"--raft-addr", n.Raft, "--grpc-addr", n.GRPC, "--http-addr", n.HTTP,
		"--log-level", orDefault(e.cfg.LogLevel, "info"),
		"--mcp-auth", map[bool]string{true: "apikey", false: "none"}[e.cfg.Auth == "apikey"]}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a Ctrl-C in the terminal reaches the dev
	// process only, which then stops its children in order.
	cmd.SysProcAttr = childAttrs()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start node %s: %w", n.ID, err)
	}
	n.PID = cmd.Process.Pid
	ch := &child{info: n, cmd: cmd, done: make(chan struct{})}
	e.mu.Lock()
	e.children[n.ID] = ch
	e.setNode(n)
	e.mu.Unlock()
	e.wg.Add(1)
	go func() {
		defer e.wg.Done()
		err := cmd.Wait()
		logf.Close()
		close(ch.done)
		e.mu.Lock()
		closing := e.closing
		e.mu.Unlock()
		if closing {
			return
		}
		e.progress("node %s (pid %d) exited: %v (log: %s)", n.ID, n.PID, err, filepath.Join(logDir, n.ID+".log"))
		if e.cfg.RestartKilled {
			e.progress("restarting node %s", n.ID)
			if err := e.spawn(n); err != nil {
				e.progress("restarting node %s failed: %v", n.ID, err)
			}
			e.writeState()
		}
	}()
	return nil
}

// setNode records n in the state (replacing an entry with its id).
func (e *Env) setNode(n NodeInfo) {
	for i := range e.state.Nodes {
		if e.state.Nodes[i].ID == n.ID {
			e.state.Nodes[i] = n
			return
		}
	}
	e.state.Nodes = append(e.state.Nodes, n)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// waitHealthy polls the control plane until every cell is HEALTHY.
func (e *Env) waitHealthy(ctx context.Context, admin cpv1.ControlPlaneServiceClient) error {
	deadline := time.Now().Add(2 * time.Minute)
	last := ""
	for {
		resp, err := admin.ListCells(ctx, &cpv1.ListCellsRequest{})
		waiting := []string{}
		if err == nil {
			for _, c := range resp.GetCells() {
				if c.GetHealth() != cpv1.CellHealth_CELL_HEALTH_HEALTHY {
					waiting = append(waiting, c.GetCell().GetId()+" ("+strings.TrimPrefix(c.GetHealth().String(), "CELL_HEALTH_")+")")
				}
			}
			if len(waiting) == 0 {
				return nil
			}
			if s := strings.Join(waiting, ", "); s != last {
				e.progress("waiting for %s", s)
				last = s
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cells not healthy after 2 minutes: %s (node logs under %s)", strings.Join(waiting, ", "), filepath.Join(e.cfg.DataDir, "logs"))
		}
		if err := retry.Sleep(ctx, 200*time.Millisecond); err != nil { // poll
			return err
		}
	}
}

// demo creates tenant "demo" (and a key with auth on). With a second
// region, the tenant gets a standby there (also when it existed already:
// a platform started again keeps it).
func (e *Env) demo(ctx context.Context, admin cpv1.ControlPlaneServiceClient) error {
	e.progress("creating the demo tenant")
	standby := ""
	if len(e.cfg.Regions) > 1 {
		standby = e.cfg.Regions[1]
	}
	_, err := admin.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "demo", HomeRegion: e.cfg.Regions[0], StandbyRegion: standby})
	switch {
	case err == nil:
	case exists(err) && standby != "":
		if err := e.demoStandby(ctx, admin, standby); err != nil {
			return err
		}
	case !exists(err):
		return fmt.Errorf("create tenant demo: %w", rpcerr.FromStatus(err))
	}
	e.state.DemoTenant = "demo"
	if e.cfg.Auth == "apikey" {
		k, err := admin.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "demo", Description: "cellplane dev --demo"})
		if err != nil {
			return fmt.Errorf("create the demo API key: %w", rpcerr.FromStatus(err))
		}
		e.state.DemoAPIKey = k.GetSecret()
	}
	return nil
}

// demoStandby gives an existing demo tenant its standby in region unless it
// has one (best effort).
func (e *Env) demoStandby(ctx context.Context, admin cpv1.ControlPlaneServiceClient, region string) error {
	t, err := admin.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "demo"})
	if err != nil {
		return fmt.Errorf("get tenant demo: %w", rpcerr.FromStatus(err))
	}
	if t.GetTenant().GetStandbyCell() != "" {
		return nil
	}
	e.progress("giving the demo tenant a standby in %s", region)
	if _, err := admin.SetStandby(ctx, &cpv1.SetStandbyRequest{Tenant: "demo", Region: region}); err != nil {
		// Not fatal: the tenant may have been failed over to that region,
		// or be busy; the platform works without it.
		e.progress("the demo tenant keeps no standby: %v", rpcerr.FromStatus(err))
	}
	return nil
}

// waitRouted waits until the router's table is loaded (and has the demo
// tenant, with its key).
func (e *Env) waitRouted(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		ok := e.rt.Table().Loaded()
		if ok && e.state.DemoTenant != "" {
			_, ok = e.rt.Table().Lookup(e.state.DemoTenant)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the router did not load its table within 30 s")
		}
		if err := retry.Sleep(ctx, 50*time.Millisecond); err != nil { // poll
			return err
		}
	}
}

// State returns what dev.json holds.
func (e *Env) State() State {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.state
	s.Nodes = append([]NodeInfo(nil), e.state.Nodes...)
	return s
}

// writeState writes <data-dir>/dev.json atomically.
func (e *Env) writeState() {
	st := e.State()
	b, _ := json.MarshalIndent(st, "", "  ")
	path := filepath.Join(e.cfg.DataDir, "dev.json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err == nil {
		_ = os.Rename(tmp, path)
	}
}

// Close stops the router, the nodes (children get SIGTERM, then SIGKILL
// after 15 s) and the control plane.
func (e *Env) Close() {
	e.mu.Lock()
	e.closing = true
	children := make([]*child, 0, len(e.children))
	for _, c := range e.children {
		children = append(children, c)
	}
	inproc := e.inproc
	e.mu.Unlock()
	e.quiet.Store(true)
	if e.rt != nil {
		e.progress("stopping the router")
		_ = e.rt.Close()
	}
	if len(children)+len(inproc) > 0 {
		e.progress("stopping %d nodes", len(children)+len(inproc))
	}
	var wg sync.WaitGroup
	for _, c := range children {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = c.cmd.Process.Signal(syscall.SIGTERM)
			grace := time.NewTimer(15 * time.Second)
			defer grace.Stop()
			select {
			case <-c.done:
			case <-grace.C:
				_ = c.cmd.Process.Kill()
				<-c.done
			}
		}()
	}
	for _, n := range inproc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = n.Close()
		}()
	}
	wg.Wait()
	e.wg.Wait()
	for _, c := range e.conns {
		_ = c.Close()
	}
	if e.reg != nil {
		_ = e.reg.Close()
	}
	if e.cp != nil {
		e.progress("stopping the control plane")
		_ = e.cp.Close()
	}
}

// muted is a slog.Handler that drops everything once quiet is set.
type muted struct {
	h     slog.Handler
	quiet *atomic.Bool
}

func (m muted) Enabled(ctx context.Context, l slog.Level) bool {
	return !m.quiet.Load() && m.h.Enabled(ctx, l)
}

func (m muted) Handle(ctx context.Context, r slog.Record) error {
	if m.quiet.Load() {
		return nil
	}
	return m.h.Handle(ctx, r)
}

func (m muted) WithAttrs(a []slog.Attr) slog.Handler {
	return muted{h: m.h.WithAttrs(a), quiet: m.quiet}
}
func (m muted) WithGroup(g string) slog.Handler { return muted{h: m.h.WithGroup(g), quiet: m.quiet} }
