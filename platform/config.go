package platform

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"time"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane/controller"
	"github.com/cellplane/cellplane/internal/dial"
)

// Auth modes of the router and the MCP workers.
const (
	// AuthNone: the tenant comes from the x-cellplane-tenant header;
	// anyone can act as any tenant.
	AuthNone = "none"
	// AuthAPIKey: callers present a tenant's API key.
	AuthAPIKey = "apikey"
)

// Config configures a platform. Start from DefaultConfig: the Node and
// Controller templates must hold their packages' defaults.
type Config struct {
	// Name prefixes the control plane replica's id (<Name>-cp).
	Name string
	// DataDir holds everything the platform stores (required):
	// controlplane/ (the embedded etcd), nodes/<node>/, router/table.snap
	// and, with MultiProcess, logs/<node>.log. Started again on the same
	// dir (with the same addresses), the platform comes back with its data.
	DataDir string

	// Regions × CellsPerRegion × NodesPerCell is the topology Start
	// creates: cell i of region r is CellName(r, i), node k of cell c is
	// c-n<k>. CellsPerRegion 0 starts no cell (AddCell adds them).
	Regions        []string
	CellsPerRegion int
	NodesPerCell   int

	// Addresses, all on loopback. Empty (0 for NodeBasePort) picks free
	// ports. Raft remembers its members by address, so a platform started
	// again on the same DataDir needs fixed node ports: node i (in order
	// of creation) uses NodeBasePort+3i (Raft), +3i+1 (gRPC), +3i+2 (HTTP).
	ControlPlaneAddr, ControlPlaneHTTPAddr string
	RouterAddr, RouterHTTPAddr             string
	EtcdClientURL, EtcdPeerURL             string
	NodeBasePort                           int
	// NodeHost is the loopback address the nodes listen on (default
	// 127.0.0.1). Child-process nodes are given ports found free a moment
	// before; tests running beside others give a host of their own
	// (testutil.LoopbackHost) so that no other test's ephemeral port can
	// take one meanwhile.
	NodeHost string

	// Auth is AuthNone or AuthAPIKey (the router and the MCP workers).
	Auth string

	// MutualTLS runs every internal hop with mutual TLS. Start creates
	// (first start) or reuses (a restart on the same DataDir) a dev CA of
	// cluster Name and one certificate per component in <DataDir>/certs
	// (hosts 127.0.0.1 and localhost), plus an admin operator's
	// (operator.admin); the control plane's API, every node's gRPC port
	// and Raft transport (in process: cells.Config.TLS; a child:
	// --certs-dir), the router's calls into cells (router.Config.
	// InternalTLS) and the control plane's calls into cells then require
	// mutual TLS and authorise by identity (docs/security.md). The
	// platform's own connections to the control plane and the nodes
	// present the admin operator's certificate (unless Dial sets
	// credentials). Start writes <DataDir>/client.yaml, a client
	// configuration file (CELLPLANE_CONFIG) for cellctl. The nodes' HTTP
	// ports (MCP, metrics) serve mutual TLS too, and the router's MCP
	// proxy reaches them with its identity. The embedded etcd serves https
	// with client certificates and RBAC (EtcdClientURL and EtcdPeerURL,
	// when set, must be https): the router and every node reach it with
	// their own certificate, their etcd users created by Start before they
	// connect. Not covered: the router's front door stays plaintext on
	// loopback unless FrontDoorTLS. Without MutualTLS Start logs one
	// INSECURE warning.
	MutualTLS bool
	// TLSReloadInterval is how often the TLS material of the in-process
	// components (pki.Config.ReloadInterval) is re-checked on disk, so
	// that RotateCA, ReissueCerts and FinishCARotation take effect
	// without a restart (0: pki.DefaultReloadInterval, 5 s; child
	// processes always use that). Tests shorten it.
	TLSReloadInterval time.Duration

	// FrontDoorTLS (with MutualTLS) serves the router's front door, gRPC
	// and HTTP (MCP), over TLS with the router's certificate of the dev CA
	// (SANs 127.0.0.1 and localhost; clients trust <DataDir>/certs/ca.crt).
	// The MCP public URL is then https, and RouterConn and client.yaml use
	// TLS to the router.
	FrontDoorTLS bool

	// MultiProcess runs each node as a child process of Binary
	// (`<Binary> cell …`, in its own process group, logging to
	// <DataDir>/logs/<node>.log at ChildLogLevel). Such nodes run with the
	// `cellplane cell` defaults: Node and TestingKnobs.Cell do not reach
	// them, and Node.Node returns nil for them.
	MultiProcess bool
	// Binary is the cellplane executable for child processes (default:
	// os.Executable()).
	Binary string
	// ChildLogLevel is the child processes' --log-level (default info).
	ChildLogLevel string
	// ChildArgs, when set, returns extra command-line arguments for a
	// child node's `cellplane cell` at each start, given the node and its
	// cell's nodes (their addresses are fixed at creation): a test routes
	// each node's Raft links through proxies with --raft-route, say.
	ChildArgs func(node NodeInfo, cell []NodeInfo) []string
	// RestartKilled restarts a child process that died (MultiProcess),
	// unless the platform stopped it.
	RestartKilled bool

	// ChildEnv, when set, returns extra environment variables
	// ("KEY=value") for a child node's process at each start, on top of
	// the platform's own environment: a test arms a crash point on one
	// node with CELLPLANE_FAILPOINTS (internal/failpoint), say.
	ChildEnv func(node NodeInfo) []string

	// Node is the template of every in-process node's configuration: the
	// platform fills NodeID, CellID, DataDir, the addresses and listeners,
	// Registry, MCPAuth (with AuthAPIKey), Logger and TestingKnobs, and
	// MCP.PublicURL when empty (the router's HTTP address: the MCP URL
	// clients are given, so a JWT's audience and the URL agree).
	Node cells.Config
	// Controller configures the control plane's controller (its ID,
	// Logger and TestingKnobs are filled).
	Controller controller.Config
	// Dial configures the connections the platform itself opens (to the
	// control plane, the router and every node); in-process nodes take
	// theirs from Node.Dial.
	Dial dial.Config
	// EtcdUnsafeNoFsync runs the embedded etcd without fsync: faster, and
	// a crash of the machine may lose control-plane writes (tests only).
	EtcdUnsafeNoFsync bool
	// ShutdownTimeout bounds the graceful stop of the control plane and
	// the router (0: their defaults).
	ShutdownTimeout time.Duration

	// Logger receives every component's logs (with component=… or
	// node=…); nil discards them.
	Logger *slog.Logger
	// Progress, when set, receives one line per step (printf style).
	Progress func(format string, args ...any)
	// OnNodesChanged, when set, is called after a node's process changed
	// once Start returned (a child restarted by RestartKilled): Describe
	// has its new pid.
	OnNodesChanged func()

	// TestingKnobs reach every in-process component; tests only.
	TestingKnobs TestingKnobs
}

// DefaultConfig is the README's platform, 2 regions × 2 cells × 3 nodes,
// in this process on free loopback ports, with authentication off.
// DataDir must still be set.
func DefaultConfig() Config {
	ctl := controller.DefaultConfig()
	ctl.SessionTTL = 2 * time.Second
	// One machine, no other routers to wait for: a moved tenant's old copy
	// can go soon after the flip (production keeps it 30 s).
	ctl.Moves.CleanupGrace = 3 * time.Second
	return Config{
		Name:           "platform",
		Regions:        []string{"us-east", "eu-west"},
		CellsPerRegion: 2,
		NodesPerCell:   3,
		Auth:           AuthNone,
		ChildLogLevel:  "info",
		Node:           cells.DefaultConfig(),
		Controller:     ctl,
	}
}

// Validate reports an unusable configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("a name is required"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("a data dir is required"))
	}
	if c.CellsPerRegion > 0 && len(c.Regions) == 0 {
		errs = append(errs, errors.New("at least one region is required"))
	}
	if c.CellsPerRegion < 0 || c.CellsPerRegion > 26 {
		errs = append(errs, fmt.Errorf("cells per region must be 1-26, got %d", c.CellsPerRegion))
	}
	if c.CellsPerRegion > 0 && (c.NodesPerCell < 1 || c.NodesPerCell%2 == 0 || c.NodesPerCell > 7) {
		errs = append(errs, fmt.Errorf("nodes per cell must be 1, 3, 5 or 7, got %d", c.NodesPerCell))
	}
	if c.NodeHost != "" {
		if ip := net.ParseIP(c.NodeHost); ip == nil || !ip.IsLoopback() || ip.To4() == nil {
			errs = append(errs, fmt.Errorf("node host %q: want an IPv4 loopback address (127.0.0.0/8)", c.NodeHost))
		}
	}
	if c.NodeBasePort != 0 && (c.NodeBasePort < 1024 || c.NodeBasePort+3*len(c.Regions)*c.CellsPerRegion*c.NodesPerCell > 65535) {
		errs = append(errs, fmt.Errorf("node base port %d leaves no room for the nodes' ports", c.NodeBasePort))
	}
	if c.FrontDoorTLS && !c.MutualTLS {
		errs = append(errs, errors.New("TLS on the router's front door needs mutual TLS (the dev CA signs the router's certificate)"))
	}
	if c.Auth != AuthNone && c.Auth != AuthAPIKey {
		errs = append(errs, fmt.Errorf("auth must be none or apikey, got %q", c.Auth))
	}
	for _, a := range []struct{ name, addr string }{
		{"control plane address", c.ControlPlaneAddr}, {"control plane HTTP address", c.ControlPlaneHTTPAddr},
		{"router address", c.RouterAddr}, {"router HTTP address", c.RouterHTTPAddr},
	} {
		if a.addr == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s %q: %w", a.name, a.addr, err))
		}
	}
	if (c.EtcdClientURL == "") != (c.EtcdPeerURL == "") {
		errs = append(errs, errors.New("the etcd client and peer URLs go together"))
	}
	for _, u := range []string{c.EtcdClientURL, c.EtcdPeerURL} {
		if u == "" {
			continue
		}
		// With MutualTLS the embedded etcd serves https only.
		scheme := map[bool]string{true: "https", false: "http"}[c.MutualTLS]
		if p, err := url.Parse(u); err != nil || p.Scheme != scheme || p.Port() == "" {
			errs = append(errs, fmt.Errorf("etcd URL %q: want %s://host:port", u, scheme))
		}
	}
	if c.TLSReloadInterval < 0 {
		errs = append(errs, fmt.Errorf("TLS reload interval %v < 0", c.TLSReloadInterval))
	}
	if c.ShutdownTimeout < 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout %v < 0", c.ShutdownTimeout))
	}
	if err := c.Dial.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// CellName is the id of the i-th cell of a region: us-east → us-east-a.
func CellName(region string, i int) string { return region + "-" + string(rune('a'+i)) }

// NodeName is the id of the k-th node (from 0) of a cell: c → c-n1.
func NodeName(cell string, k int) string { return fmt.Sprintf("%s-n%d", cell, k+1) }
