package cells

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/cellplane/cellplane/cells/mcp"
	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/ratelimit"
	"github.com/cellplane/cellplane/internal/serve"
	"github.com/cellplane/cellplane/internal/tenanttoken"
	"github.com/cellplane/cellplane/internal/tokens"
	"github.com/cellplane/cellplane/replication"
	"google.golang.org/grpc"
)

// Config configures a Node. Start it from DefaultConfig and set NodeID,
// DataDir and either Bootstrap or Join (or neither, to restart a node whose
// data dir already holds its Raft state, or to form the cell from the
// control plane's registry: see Registry).
type Config struct {
	// NodeID is this node's id in the cell: 1–128 characters of
	// [A-Za-z0-9._-], stable across restarts.
	NodeID string
	// CellID names the cell (optional until the control plane assigns
	// cells); WRONG_CELL and STALE_EPOCH errors carry it.
	CellID string

	// RaftAddr, GRPCAddr and HTTPAddr are the addresses to listen on
	// ("127.0.0.1:0" picks a free port; the Node's accessors report the
	// bound ones). The bound addresses are what the node advertises to its
	// peers unless Store.RaftAdvertise / GRPCAdvertise / HTTPAdvertise name
	// others (needed when binding a wildcard address such as 0.0.0.0).
	RaftAddr, GRPCAddr, HTTPAddr string
	// RaftListener, GRPCListener and HTTPListener are optional pre-opened
	// listeners; when set they win over the addresses above. Tests and
	// benchmarks open them on port 0 first so no port can be taken between
	// choosing and binding it. The node closes them.
	RaftListener, GRPCListener, HTTPListener net.Listener

	// DataDir holds the store's files (Raft log, snapshots, state). It is
	// created if missing and must be writable.
	DataDir string
	// Bootstrap forms a new cell with these voters, which must include this
	// node. It is ignored when DataDir already holds Raft state, so the
	// same command line can restart a node.
	Bootstrap []store.Peer
	// Join is the gRPC address of any member of an existing cell; Start
	// asks it to add this node as a voter (a follower forwards the request
	// to the leader) and retries until it succeeds or Start's ctx ends.
	Join string

	// Registry is the control plane's store (etcd through
	// controlplane/topo), or nil for a standalone node. With it, the node
	// registers itself under cells/<CellID>/nodes/<NodeID> for as long as
	// it runs, publishes cells/<CellID>/leader while it leads, and, when
	// its data dir holds no Raft state and neither Bootstrap nor Join is
	// set, forms or joins its cell as the registry's bootstrap record
	// says (see cells/registry). CellID is then required. The node does
	// not close the Registry.
	Registry topo.Store
	// RegistryTTL is the lease TTL of the node's registry keys: how long
	// they outlive a node that dies without Close (0: registry.DefaultTTL;
	// at least registry.MinTTL).
	RegistryTTL time.Duration
	// AuthorityTTL and AuthorityDriftMargin configure the cell authority
	// lease the node keeps while it leads (with a Registry only; see
	// registry.Authority): it acknowledges writes only while its last
	// renewal was sent less than AuthorityTTL − AuthorityDriftMargin ago.
	// 0: registry.DefaultAuthorityTTL (3s) / registry.DefaultDriftMargin (1s).
	AuthorityTTL, AuthorityDriftMargin time.Duration

	// Replication configures the standby side (the sink that keeps this
	// cell's STANDBY tenants up to date, run while the node leads; only
	// with a Registry, through which it finds source cells). Connect is
	// set by the node. ReplicationDialOptions are added to Dial for the
	// connections to source cells (benchmarks delay them).
	Replication            replication.SinkConfig
	ReplicationDialOptions []grpc.DialOption
	// ReplicationSource configures the ReplicationService every node serves.
	ReplicationSource replication.SourceConfig

	// TLS is this node's TLS material: its certificate (a node identity,
	// spiffe://<cluster>/region/<r>/cell/<c>/node/<NodeID>, of cell CellID
	// when that is set), key and cluster CA bundle, reloaded from disk
	// (pki.NewSource). It secures the Raft transport with mutual TLS (only
	// nodes of this node's cell may connect; store.Config.TLS); the gRPC
	// server then serves mutual TLS only and authorises every call by its
	// caller's identity against Policy (findings C1, C2); the HTTP port
	// (MCP, /metrics, /healthz, /readyz) serves mutual TLS only and
	// authorises every request against mcp.HTTPPolicy (MCP from routers
	// only); and, unless
	// Dial.Credentials is set, every connection the node opens presents
	// this identity and accepts only cell nodes. nil: Raft is plain TCP
	// and gRPC and HTTP plaintext with no authentication, and anyone who
	// reaches them can rewrite the cell or read and write its tenants
	// (`cellplane cell` refuses to start so unless --insecure is given).
	TLS *pki.Source

	// Tokens bounds the router-minted tenant tokens the node accepts with
	// TLS and a Registry (internal/tenanttoken: MaxTTL, ClockSkew,
	// MaxTokenBytes; the routers' must agree). The verification keys come
	// from the Registry (controlplane/tokenkeys): a node without one has
	// no keys and refuses every token call (docs/security.md, "Tenant
	// tokens").
	Tokens tenanttoken.Config

	// DirectRateLimit is the per-tenant limit of the calls a tenant's own
	// program makes to this node with a tenant token (the smart client's
	// direct path), which do not pass a router's limits (H4): requests and
	// request bytes per second, as at the router (internal/ratelimit; the
	// node's defaults for every tenant). Calls of routers, workers and
	// nodes are not charged: the router limited them already. Only with
	// TLS (without it there are no tokens). Subsystem is "cell".
	DirectRateLimit ratelimit.Config

	// Dial configures every gRPC connection the node opens: to the member
	// it joins through, to its leader (registration, forwarding), to
	// source cells (replication) and to itself (its MCP worker). The zero
	// value is plaintext, or mutual TLS with this node's identity when TLS
	// is set.
	Dial dial.Config

	// AllowCrossHostAddrs lets members advertise gRPC and HTTP addresses
	// on another host than their Raft address. By default the cell
	// refuses such registrations, and a node whose own advertised
	// addresses break the rule does not start (docs/cell.md,
	// "Registration rule"; security finding C5).
	AllowCrossHostAddrs bool

	// TokenEncoding is the tokenizer encoding of contexts created without
	// one (internal/tokens; docs/contexts.md). Empty: tokens.Default.
	TokenEncoding string

	// WatchHeartbeat is how often an idle ContextService.WatchChanges
	// stream sends its cursor (0: service.DefaultConfig's, 15 s).
	WatchHeartbeat time.Duration

	// MCP configures the MCP worker the node serves on its HTTP port at
	// /t/<tenant>/mcp (see cells/mcp); MCPDisabled turns it off. An empty
	// MCP.PublicURL is "http://" + the advertised HTTP address.
	MCP         mcp.Config
	MCPDisabled bool
	// MCPAuth authenticates MCP calls (cells/mcpauth); nil accepts every
	// call (a standalone node, or a node behind a router that checked it).
	MCPAuth mcp.Authenticator

	// Limits bound every request (validate.DefaultLimits()).
	Limits validate.Limits
	// GRPCLimits and HTTPLimits bound the node's gRPC and HTTP servers
	// (streams, pings, idle connections, connections, HTTP timeouts;
	// finding M6). The zero values mean serve.DefaultLimits and
	// serve.DefaultHTTPLimits.
	GRPCLimits serve.Limits
	HTTPLimits serve.HTTPLimits
	// RaftMaxConns caps the connections the Raft listener holds at once
	// (a connection over it is closed when accepted); 0 means no cap.
	RaftMaxConns int
	// Store holds the store's tuning knobs. NodeID, RaftBind, RaftListener,
	// DataDir, Bootstrap, TLS and Logger are filled from the fields above, and
	// TestingKnobs from TestingKnobs.Store (leave Store.TestingKnobs zero);
	// RaftAdvertise, GRPCAdvertise and HTTPAdvertise default to the bound
	// addresses.
	Store store.Config

	// ShutdownTimeout bounds the graceful part of Close: draining gRPC
	// calls and HTTP requests and handing leadership over. Calls still
	// running after it are cut. 0 means no graceful phase.
	ShutdownTimeout time.Duration

	// Logger receives the node's logs (with node=<NodeID>); nil means
	// slog.Default().
	Logger *slog.Logger

	// TestingKnobs are hooks for tests only; the node forwards them to
	// its parts.
	TestingKnobs TestingKnobs
}

// Default listen addresses; all loopback, so that a node started without
// flags is not reachable from other machines.
const (
	DefaultRaftAddr = "127.0.0.1:7210"
	DefaultGRPCAddr = "127.0.0.1:7211"
	DefaultHTTPAddr = "127.0.0.1:7212"
)

// DefaultRaftMaxConns is the Raft listener's connection cap: a cell's few
// members hold a handful of pooled connections each (MaxPool 4 per peer).
const DefaultRaftMaxConns = 256

// DefaultConfig returns a Config with the default addresses, limits, store
// tuning and shutdown timeout; NodeID and DataDir still need to be set.
func DefaultConfig() Config {
	return Config{
		RaftAddr:        DefaultRaftAddr,
		GRPCAddr:        DefaultGRPCAddr,
		HTTPAddr:        DefaultHTTPAddr,
		Limits:          validate.DefaultLimits(),
		Store:           store.DefaultConfig(),
		MCP:             mcp.DefaultConfig(),
		ShutdownTimeout: 10 * time.Second,
		GRPCLimits:      serve.DefaultLimits(),
		HTTPLimits:      serve.DefaultHTTPLimits(),
		RaftMaxConns:    DefaultRaftMaxConns,
		Tokens:          tenanttoken.DefaultConfig(),
		DirectRateLimit: DefaultDirectRateLimit(),

		Replication:       replication.DefaultSinkConfig(),
		ReplicationSource: replication.DefaultSourceConfig(),
	}
}

// DefaultDirectRateLimit is the router's default per-tenant limits
// (ratelimit.DefaultConfig: 1000 requests/s, burst 2000; 32 MiB/s, burst
// 64 MiB) for the direct callers of a node.
func DefaultDirectRateLimit() ratelimit.Config {
	c := ratelimit.DefaultConfig()
	c.Subsystem = "cell"
	return c
}

// Validate reports every problem with c, each naming the field.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf("cells: "+format, args...)) }
	if err := c.DirectRateLimit.Validate(); err != nil {
		add("DirectRateLimit: %v", err)
	}
	if c.WatchHeartbeat < 0 {
		add("WatchHeartbeat must not be negative, got %v", c.WatchHeartbeat)
	}
	if c.TokenEncoding != "" {
		if err := tokens.Check(c.TokenEncoding); err != nil {
			add("TokenEncoding: %v", err)
		}
	}

	if !c.MCPDisabled {
		if err := c.MCP.Validate(); err != nil {
			add("MCP: %v", err)
		}
	}
	if err := c.ReplicationSource.Validate(); err != nil {
		add("ReplicationSource: %v", err)
	}
	if err := c.Dial.Validate(); err != nil {
		add("Dial: %v", err)
	}
	if err := c.Tokens.Validate(); err != nil {
		add("Tokens: %v", err)
	}
	if c.Registry != nil {
		if err := c.Replication.Validate(); err != nil {
			add("Replication: %v", err)
		}
	} else if err := c.Replication.Metrics.Validate(); err != nil {
		// No sink runs without a registry, but a bad flag is still
		// reported before anything starts.
		add("Replication: %v", err)
	}
	if c.CellID != "" && !ids.Valid(c.CellID, ids.MaxLen) {
		add("CellID %q must be %s", c.CellID, ids.Rule(ids.MaxLen))
	}
	if !ids.Valid(c.NodeID, ids.MaxLen) {
		add("NodeID %q must be %s", c.NodeID, ids.Rule(ids.MaxLen))
	}
	if c.DataDir == "" {
		add("DataDir is required")
	}
	for _, a := range []struct {
		name string
		addr string
		lis  net.Listener
	}{{"RaftAddr", c.RaftAddr, c.RaftListener}, {"GRPCAddr", c.GRPCAddr, c.GRPCListener}, {"HTTPAddr", c.HTTPAddr, c.HTTPListener}} {
		if a.lis != nil {
			continue
		}
		if a.addr == "" {
			add("%s is required (or a pre-opened listener)", a.name)
			continue
		}
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			add("%s %q is not host:port: %v", a.name, a.addr, err)
		}
	}
	if len(c.Bootstrap) > 0 && c.Join != "" {
		add("Bootstrap and Join are exclusive: bootstrap forms a new cell, join enters an existing one")
	}
	if len(c.Bootstrap) > 0 {
		seen := make(map[string]bool, len(c.Bootstrap))
		addrs := make(map[string]bool, len(c.Bootstrap))
		for i, p := range c.Bootstrap {
			if !ids.Valid(p.ID, ids.MaxLen) {
				add("Bootstrap[%d]: id %q must be %s", i, p.ID, ids.Rule(ids.MaxLen))
			}
			if _, _, err := net.SplitHostPort(p.Addr); err != nil {
				add("Bootstrap[%d] (%s): Raft address %q is not host:port", i, p.ID, p.Addr)
			}
			if seen[p.ID] {
				add("Bootstrap: id %q is listed twice", p.ID)
			}
			if addrs[p.Addr] {
				add("Bootstrap: address %q is listed twice", p.Addr)
			}
			seen[p.ID], addrs[p.Addr] = true, true
		}
		if !seen[c.NodeID] {
			add("Bootstrap must include this node (%q)", c.NodeID)
		}
	}
	if c.Join != "" {
		if _, _, err := net.SplitHostPort(c.Join); err != nil {
			add("Join %q is not a host:port gRPC address: %v", c.Join, err)
		}
	}
	if c.Registry != nil && c.CellID == "" {
		add("CellID is required with a Registry (the node registers under cells/<CellID>)")
	}
	if c.RegistryTTL != 0 && c.RegistryTTL < registry.MinTTL {
		add("RegistryTTL must be 0 (default %s) or ≥ %s, got %s", registry.DefaultTTL, registry.MinTTL, c.RegistryTTL)
	}
	if c.Registry != nil && c.CellID != "" {
		if err := authorityConfig(c, nil).Validate(); err != nil {
			add("Authority: %w", err)
		}
	}
	if err := c.GRPCLimits.ValidateOrZero(); err != nil {
		add("GRPCLimits: %v", err)
	}
	if err := c.HTTPLimits.ValidateOrZero(); err != nil {
		add("HTTPLimits: %v", err)
	}
	if c.RaftMaxConns < 0 {
		add("RaftMaxConns must be ≥ 0, got %d", c.RaftMaxConns)
	}
	if c.ShutdownTimeout < 0 {
		add("ShutdownTimeout must be ≥ 0, got %s", c.ShutdownTimeout)
	}
	if err := c.Limits.Validate(); err != nil {
		add("Limits: %w", err)
	}
	if k := c.Store.TestingKnobs; k.InMemoryState || k.Network != nil || k.OnApply != nil || k.ProposeUnchecked || k.LogStoreFault != nil || k.StateStoreFault != nil || k.DiskSpace != nil || k.Acks != nil {
		add("Store.TestingKnobs is not read: set TestingKnobs.Store")
	}
	if c.Store.TLS != nil {
		add("Store.TLS is not read: set TLS")
	}
	if c.TLS != nil {
		if id := c.TLS.Identity(); id.Kind == pki.KindNode && c.CellID != "" && id.Cell != c.CellID {
			add("TLS: certificate identity %s is of cell %q, this node's cell is %q", id, id.Cell, c.CellID)
		}
	}
	if len(errs) == 0 {
		// The store checks its own knobs; give it the fields we fill in.
		sc := c.Store
		sc.NodeID, sc.DataDir, sc.Bootstrap, sc.TLS = c.NodeID, c.DataDir, c.Bootstrap, c.TLS
		sc.TestingKnobs = c.TestingKnobs.Store
		if c.RaftListener != nil {
			sc.RaftListener = c.RaftListener
			sc.RaftBind = c.RaftListener.Addr().String()
		} else {
			sc.RaftBind = c.RaftAddr
		}
		if err := sc.Validate(); err != nil {
			add("Store: %w", err)
		}
	}
	return errors.Join(errs...)
}
