package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/registry"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/acklog"
	"github.com/cellplane/cellplane/internal/failpoint"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/tokens"
)

// listenFlag names the flag behind each of the node's listeners, so that
// "address already in use" says which flag to change.
func listenFlag(listener string) string {
	switch listener {
	case "raft", "grpc", "http":
		return "--" + listener + "-addr"
	}
	return listener + " address"
}

func newCellCmd(std streams, stopSignals func()) *cobra.Command {
	cfg := cells.DefaultConfig()
	var (
		bootstrap string
		logLevel  = "info"
		logFormat = "text"
		etcd      = etcdFlags{Prefix: topo.Prefix, DialTimeout: 5 * time.Second}
		mflags    mcpFlags

		controlplaneAddr string
		certsDir         string
		certName         string
		insecure         bool
	)

	cmd := &cobra.Command{
		Use:   "cell --id ID --data-dir DIR (--bootstrap PEERS | --join ADDR | --etcd-endpoints URLS --cell CELL)",
		Short: "Run one node of a cell (Raft member + context store + gRPC and HTTP servers)",
		Long: `Run one node of a cell: a Raft member with its share of the context store,
serving ContextService and CellService over gRPC (with health and reflection)
and /metrics, /healthz and /readyz over HTTP.

A new cell is formed by starting each of its nodes with the same --bootstrap
list of "id@raft-address" voters. A node is added to a running cell with
--join and the gRPC address of any member. A node restarted on its data dir
rejoins its cell by itself; --bootstrap is then ignored, so the same command
line can be reused. A node whose data dir was lost never rejoins under its old
Raft id: with a registry it finds its cell formed and joins as a new member
(the cell replaces the old one); without one, start it with --join. A cell
that lost a majority's data refuses to serve until 'cellplane cell
unsafe-recover' rebuilds it from a survivor (docs/reliability.md).

With --etcd-endpoints (or CELLPLANE_ETCD_ENDPOINTS) the node registers in the
control plane's registry under cells/<cell>/nodes/<id> (a key leased for
--registry-ttl, kept alive while the node runs) and, while it is the Raft
leader, publishes cells/<cell>/leader. --cell is then required. A new node
started this way with neither --bootstrap nor --join waits until the cell was
created in the control plane and enough nodes registered, then forms the cell
with the members of the registry's bootstrap record (or joins it, if the cell
was formed without this node). Without --etcd-endpoints the node runs
standalone.

The HTTP port also serves the MCP worker: each tenant's context and memory
as MCP tools at /t/<tenant>/mcp (Streamable HTTP). With a registry, calls
need the tenant's API key (--mcp-auth); standalone, they are not
authenticated.

SIGINT or SIGTERM stops the node gracefully: it reports NOT_SERVING, hands
Raft leadership over if it leads, drains calls for up to --shutdown-timeout
and closes the store. A second signal exits at once.

With --certs-dir (the directory "cellplane cert create-node" writes), the
Raft transport uses mutual TLS: a Raft connection is accepted or kept only
when its peer presents a certificate of the cluster CA naming a node of
this node's cell (and, when dialing a member, that member); and the gRPC
port serves mutual TLS only, authorising every call by the caller's
identity (the control plane places tenants, routers and workers call
ContextService, nodes join, register and replicate: docs/security.md,
"Cell gRPC"), while the node's own connections to other nodes present its
certificate. The HTTP port (MCP, /metrics, /healthz, /readyz) serves
mutual TLS too: MCP to routers only, the monitoring pages to components
and operators ('cellplane cert create-operator --role read-only' for a
scraper). Without --certs-dir the node refuses to start unless --insecure
is given: Raft is then plain TCP and the gRPC and HTTP ports plaintext, so
anyone who can reach them can rewrite the cell's state or read and write
every tenant of the cell, and the node warns at every start.

Listen addresses are advertised to peers as bound; when listening on a
wildcard address (0.0.0.0), set --raft-advertise, --grpc-advertise and
--http-advertise to addresses the peers can reach.`,
		Example: `  # A 3-node cell on one machine (run each line in its own terminal):
  cellplane cell --id n1 --data-dir data/n1 --raft-addr 127.0.0.1:7210 --grpc-addr 127.0.0.1:7211 --http-addr 127.0.0.1:7212 --insecure \
      --bootstrap n1@127.0.0.1:7210,n2@127.0.0.1:7220,n3@127.0.0.1:7230
  cellplane cell --id n2 --data-dir data/n2 --raft-addr 127.0.0.1:7220 --grpc-addr 127.0.0.1:7221 --http-addr 127.0.0.1:7222 --insecure \
      --bootstrap n1@127.0.0.1:7210,n2@127.0.0.1:7220,n3@127.0.0.1:7230
  cellplane cell --id n3 --data-dir data/n3 --raft-addr 127.0.0.1:7230 --grpc-addr 127.0.0.1:7231 --http-addr 127.0.0.1:7232 --insecure \
      --bootstrap n1@127.0.0.1:7210,n2@127.0.0.1:7220,n3@127.0.0.1:7230

  # Add a fourth voter through any member:
  cellplane cell --id n4 --data-dir data/n4 --raft-addr 127.0.0.1:7240 --grpc-addr 127.0.0.1:7241 --http-addr 127.0.0.1:7242 --insecure \
      --join 127.0.0.1:7211

  # A cell formed from the control plane's registry (after creating cell c1 with
  # 3 expected members in the control plane); the same line for n2 and n3:
  cellplane cell --id n1 --cell c1 --data-dir data/n1 --etcd-endpoints http://127.0.0.1:2379 \
      --certs-dir certs   # or --insecure on a laptop`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			peers, err := parsePeers(bootstrap)
			if err != nil {
				return usageErrorf("--bootstrap: %w", err)
			}
			cfg.Bootstrap = peers
			if len(cfg.Bootstrap) > 0 && cfg.Join != "" {
				return usageErrorf("--bootstrap and --join are exclusive: bootstrap forms a new cell, join enters an existing one")
			}
			logger, err := logging.New(std.Err, logging.Options{Level: logLevel, Format: logging.Format(logFormat)})
			if err != nil {
				return usageError{err}
			}
			cfg.Logger = logger
			// Crash points for fault tests (internal/failpoint): only
			// from the environment, never a flag, and loudly.
			if spec, err := failpoint.EnableFromEnv(); err != nil {
				return usageError{err}
			} else if spec != "" {
				logger.Warn("failpoints enabled: this node will crash or stall on purpose", "spec", spec)
			}
			if err := checkTLSChoice(certsDir, certName, insecure); err != nil {
				return err
			}
			if certsDir != "" {
				if cfg.TLS, err = nodeTLS(certsDir, certName, cfg.NodeID, cfg.CellID, logger); err != nil {
					return err
				}
			}
			if !cmd.Flags().Changed("etcd-endpoints") {
				etcd.Endpoints = os.Getenv(envEtcdEndpoints)
			}
			endpoints, err := etcdEndpoints(cmd, splitList(etcd.Endpoints), controlplaneAddr, &etcd.Prefix, etcd.DialTimeout, cfg.TLS)
			if err != nil {
				return err
			}
			if len(endpoints) > 0 && cfg.CellID == "" {
				return usageErrorf("--cell is required with --etcd-endpoints (the node registers under cells/<cell>)")
			}
			if len(endpoints) > 0 && etcd.DialTimeout <= 0 {
				return usageErrorf("--etcd-dial-timeout must be > 0, got %s", etcd.DialTimeout)
			}
			mflags.apply(&cfg.MCP)
			// The acknowledgement record of fault tests (internal/acklog):
			// only from the environment, never a flag, and loudly.
			if dir := os.Getenv(acklog.Env); dir != "" {
				w, err := acklog.OpenDir(dir, cfg.NodeID)
				if err != nil {
					return fmt.Errorf("%s: %w", acklog.Env, err)
				}
				defer w.Close()
				cfg.TestingKnobs.Store.Acks = ackRecorder{w}
				logger.Warn("acknowledged writes are recorded for a fault test", "env", acklog.Env, "dir", dir)
			}
			if err := cfg.Validate(); err != nil {
				return usageErrorf("invalid configuration: %w", err)
			}
			if len(endpoints) > 0 {
				reg, err := etcdtopo.Dial(cmd.Context(), etcdtopo.Config{
					Endpoints:   endpoints,
					Prefix:      etcd.Prefix,
					DialTimeout: etcd.DialTimeout,
					CertFile:    etcd.CertFile,
					KeyFile:     etcd.KeyFile,
					CAFile:      etcd.CAFile,
					Identity:    etcd.identity(endpoints, cfg.TLS),
					Logger:      logger.With("component", "etcd"),
				})
				if err != nil {
					return fmt.Errorf("connect to etcd at %s: %w", strings.Join(endpoints, ","), err)
				}
				defer reg.Close()
				cfg.Registry = reg
				if err := cfg.Validate(); err != nil {
					return usageErrorf("invalid configuration: %w", err)
				}
			}
			if !cfg.MCPDisabled {
				// The key watch ends with the command (before the registry closes).
				authCtx, stopAuth := context.WithCancel(cmd.Context())
				defer stopAuth()
				if cfg.MCPAuth, err = mflags.authenticator(authCtx, cfg.Registry, logger); err != nil {
					return err
				}
			}
			if insecure {
				warnInsecure(logger, "the cell node", "raft_addr", cfg.RaftAddr, "grpc_addr", cfg.GRPCAddr, "http_addr", cfg.HTTPAddr)
			}
			return runCell(cmd, cfg, stopSignals)
		},
	}

	node := pflag.NewFlagSet("node", pflag.ContinueOnError)
	node.StringVar(&cfg.NodeID, "id", "", "node id, unique in the cell and stable across restarts (1-128 of [A-Za-z0-9._-]) (required)")
	node.StringVar(&cfg.CellID, "cell", "", "id of the cell this node belongs to, reported in WRONG_CELL and STALE_EPOCH errors (required with --etcd-endpoints)")
	node.StringVar(&cfg.DataDir, "data-dir", "", "directory for the Raft log, snapshots and state; created if missing (required)")
	node.StringVar(&cfg.RaftAddr, "raft-addr", cfg.RaftAddr, "address the Raft transport listens on")
	node.StringVar(&cfg.GRPCAddr, "grpc-addr", cfg.GRPCAddr, "address the gRPC API listens on")
	node.StringVar(&cfg.HTTPAddr, "http-addr", cfg.HTTPAddr, "address of /metrics, /healthz and /readyz")
	node.StringVar(&cfg.Store.RaftAdvertise, "raft-advertise", "", "Raft address peers dial (default: the bound --raft-addr)")
	node.StringVar(&cfg.Store.GRPCAdvertise, "grpc-advertise", "", "gRPC address peers forward to (default: the bound --grpc-addr)")
	node.StringVar(&cfg.Store.HTTPAdvertise, "http-advertise", "", "HTTP address reported to peers (default: the bound --http-addr)")
	node.StringToStringVar(&cfg.Store.RaftDialRoutes, "raft-route", nil, `dial a peer's Raft address through another one: "peer-host:port=via-host:port,..." (a NAT, or a test's fault-injection proxy)`)
	node.StringVar(&cfg.TokenEncoding, "token-encoding", tokens.Default, "tokenizer encoding of contexts created without one: "+strings.Join(tokens.Encodings(), ", "))
	node.DurationVar(&cfg.WatchHeartbeat, "watch-heartbeat", 15*time.Second, "how often an idle WatchChanges stream gets a cursor-only heartbeat")
	node.BoolVar(&cfg.AllowCrossHostAddrs, "allow-cross-host-addrs", false, "let members advertise gRPC/HTTP addresses on another host than their Raft address (by default the cell refuses such registrations)")
	node.StringVar(&bootstrap, "bootstrap", "", `form a new cell with these voters, this node included: "id1@host:port,id2@host:port,..." (Raft addresses)`)
	node.StringVar(&cfg.Join, "join", "", "join an existing cell as a voter through the gRPC address of any member")
	node.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", cfg.ShutdownTimeout, "how long a graceful shutdown may drain calls before cutting them")

	tlsf := pflag.NewFlagSet("tls", pflag.ContinueOnError)
	tlsf.StringVar(&certsDir, "certs-dir", "", "directory of this node's certificate and key (<cert-name>.crt/.key) and the cluster CA bundle (ca.crt), as \"cellplane cert create-node\" writes them, reloaded when they change; the Raft transport then uses mutual TLS and accepts only nodes of this node's cell, the gRPC port serves mutual TLS only and authorises every call by identity, and so does the HTTP port (MCP from routers only); required unless --insecure")
	addInsecureFlag(tlsf, &insecure, "Raft, gRPC and HTTP are")
	tlsf.StringVar(&certName, "cert-name", "", "base name of this node's certificate in --certs-dir (default: the one node.<region>.<cell>.<id> there, <cell> being --cell when set)")

	lim := pflag.NewFlagSet("limits", pflag.ContinueOnError)
	lim.IntVar(&cfg.Limits.MaxIDLen, "max-id-len", cfg.Limits.MaxIDLen, "longest tenant, context or node id")
	lim.IntVar(&cfg.Limits.MaxRequestBytes, "max-request-bytes", cfg.Limits.MaxRequestBytes, "largest encoded request")
	lim.IntVar(&cfg.Limits.MaxEntryContentBytes, "max-entry-bytes", cfg.Limits.MaxEntryContentBytes, "largest content of one context entry")
	lim.IntVar(&cfg.Limits.MaxEntriesPerAppend, "max-entries-per-append", cfg.Limits.MaxEntriesPerAppend, "most entries in one Append")
	lim.IntVar(&cfg.Limits.MaxMemoryKeyBytes, "max-memory-key-bytes", cfg.Limits.MaxMemoryKeyBytes, "longest memory key")
	lim.IntVar(&cfg.Limits.MaxMemoryValueBytes, "max-memory-value-bytes", cfg.Limits.MaxMemoryValueBytes, "largest memory value")
	lim.IntVar(&cfg.Limits.MaxListScan, "max-list-scan", cfg.Limits.MaxListScan, "most stored contexts or memory keys one filtered ListContexts/ListMemory call examines (it then returns a short page with a page token)")
	lim.IntVar(&cfg.Limits.MaxWatchesPerTenant, "max-watches-per-tenant", cfg.Limits.MaxWatchesPerTenant, "most Watch streams one tenant holds open on this node (QUOTA_EXCEEDED above)")
	dl := &cfg.DirectRateLimit
	lim.Float64Var(&dl.DefaultRate, "direct-rate", dl.DefaultRate, "with --certs-dir: requests per second per tenant of the calls made with a tenant token (the smart client's direct path, which passes no router's limits; RESOURCE_EXHAUSTED RATE_LIMITED with RetryInfo above it); routers', workers' and nodes' calls are not charged")
	lim.IntVar(&dl.DefaultBurst, "direct-burst", dl.DefaultBurst, "token-bucket burst of --direct-rate")
	lim.Float64Var(&dl.BytesRate, "direct-bytes-rate", dl.BytesRate, "request bytes per second per tenant of the calls made with a tenant token (a second token bucket, weighing requests by size); 0: off")
	lim.IntVar(&dl.BytesBurst, "direct-bytes-burst", dl.BytesBurst, "byte-bucket size of --direct-bytes-rate; a request larger than it needs a full bucket (keep it at least --max-request-bytes)")
	srvLim := serverLimitFlags(&cfg.GRPCLimits, &cfg.HTTPLimits)
	srvLim.IntVar(&cfg.RaftMaxConns, "raft-max-conns", cfg.RaftMaxConns, "most open Raft transport connections (one over is closed when accepted); 0 no cap")
	srvLim.IntVar(&cfg.Replication.MaxConcurrentBootstraps, "replication-max-bootstraps", cfg.Replication.MaxConcurrentBootstraps, "most standby tenants of this cell importing an export from their source at once (the others wait)")

	st := pflag.NewFlagSet("store", pflag.ContinueOnError)
	sc := &cfg.Store
	st.DurationVar(&sc.Raft.HeartbeatTimeout, "raft-heartbeat-timeout", sc.Raft.HeartbeatTimeout, "follower: time without leader contact before starting an election")
	st.DurationVar(&sc.Raft.ElectionTimeout, "raft-election-timeout", sc.Raft.ElectionTimeout, "candidate: time without a won election before trying again")
	st.DurationVar(&sc.Raft.LeaderLeaseTimeout, "raft-leader-lease-timeout", sc.Raft.LeaderLeaseTimeout, "leader: time without quorum contact before stepping down")
	st.DurationVar(&sc.Raft.LeaderCheckInterval, "raft-leader-check-interval", sc.Raft.LeaderCheckInterval, "follower: how often to check the leader's silence, standing for election once it reaches the heartbeat timeout plus the stagger (0: off, Raft's randomized timer only)")
	st.DurationVar(&sc.Raft.ElectionStagger, "raft-election-stagger", sc.Raft.ElectionStagger, "follower: extra wait per rank (by server id among the other voters) before the leader check stands it for election, so that followers do not split the vote")
	st.DurationVar(&sc.Raft.CommitTimeout, "raft-commit-timeout", sc.Raft.CommitTimeout, "leader: longest wait before sending a heartbeat carrying the commit index")
	st.IntVar(&sc.Raft.MaxAppendEntries, "raft-max-append-entries", sc.Raft.MaxAppendEntries, "most log entries in one AppendEntries RPC")
	st.DurationVar(&sc.Raft.SnapshotInterval, "raft-snapshot-interval", sc.Raft.SnapshotInterval, "how often Raft checks whether to snapshot")
	st.Uint64Var(&sc.Raft.SnapshotThreshold, "raft-snapshot-threshold", sc.Raft.SnapshotThreshold, "new log entries that trigger a snapshot")
	st.Uint64Var(&sc.Raft.TrailingLogs, "raft-trailing-logs", sc.Raft.TrailingLogs, "log entries kept after a snapshot (lets slow followers catch up without one)")
	st.IntVar(&sc.Raft.SnapshotRetain, "raft-snapshot-retain", sc.Raft.SnapshotRetain, "snapshots kept on disk")
	st.IntVar(&sc.Raft.LogCacheEntries, "raft-log-cache-entries", sc.Raft.LogCacheEntries, "newest Raft log entries kept in memory for replication, 0: none")
	st.BoolVar(&sc.Raft.LeaseReads, "raft-lease-reads", sc.Raft.LeaseReads, "leader: serve linearizable reads under a leader lease (renewed by the heartbeats a quorum acknowledges) instead of a quorum round per batch of reads; assumes the members' clocks run at nearly the same rate and a paused leader's clock does not stop; set it on every member of the cell (a restarted member then refuses votes for the heartbeat timeout)")
	st.DurationVar(&sc.Raft.LeaseDuration, "raft-lease-duration", sc.Raft.LeaseDuration, "with --raft-lease-reads: how long a lease lasts after the newest heartbeat a quorum acknowledged, at most 9/10 of --raft-heartbeat-timeout less 1ms, the rest being the clock-drift margin (0: 4/5 of --raft-heartbeat-timeout)")
	st.IntVar(&sc.MaxBatchCommands, "max-batch-commands", sc.MaxBatchCommands, "most commands group-committed in one Raft entry")
	st.IntVar(&sc.MaxBatchBytes, "max-batch-bytes", sc.MaxBatchBytes, "largest group-committed Raft entry")
	st.IntVar(&sc.MaxInflightBatches, "max-inflight-batches", sc.MaxInflightBatches, "Raft entries proposed but not yet applied; more proposals wait and join the next entry")
	st.Int64Var(&sc.StateCacheBytes, "state-cache-bytes", sc.StateCacheBytes, "Pebble block cache of the state machine")
	st.Uint64Var(&sc.StateMemTableBytes, "state-memtable-bytes", sc.StateMemTableBytes, "Pebble memtable size of the state machine")
	st.IntVar(&sc.StateHeadCacheEntries, "state-head-cache-entries", sc.StateHeadCacheEntries, "context heads the state machine keeps in memory for appends, 0: none")
	st.Int64Var(&sc.StateDedupFilterBytes, "state-dedup-filter-bytes", sc.StateDedupFilterBytes, "memory for the negative filters of remembered request ids (~10 bits per id), so a new id skips a Pebble lookup, 0: none")
	st.DurationVar(&sc.DedupWindow, "dedup-window", sc.DedupWindow, "how long a request id is remembered at least for idempotent retries; must cover the clients' retry horizon (cell-wide: the leader's value applies)")
	st.IntVar(&sc.DedupMaxIDs, "dedup-max-ids", sc.DedupMaxIDs, "most request ids remembered per tenant; past it, writes with new ids are refused (QUOTA_EXCEEDED) until the oldest leave the window, 0: no deduplication (cell-wide: the leader's value applies)")
	st.DurationVar(&sc.ChangeLog.RetentionAge, "changelog-retention", sc.ChangeLog.RetentionAge, "drop change-log events older than this (trimmed in chunks: up to 1/16 older), 0: by size only (cell-wide: the leader's value applies)")
	st.Uint64Var(&sc.ChangeLog.MaxBytes, "changelog-max-bytes", sc.ChangeLog.MaxBytes, "largest change log per tenant, 0: unbounded (cell-wide: the leader's value applies)")
	st.Uint64Var(&sc.ChangeLog.MaxEvents, "changelog-max-events", sc.ChangeLog.MaxEvents, "most change-log events per tenant (trimmed in chunks: up to 1/16 more), 0: unbounded (cell-wide: the leader's value applies)")
	st.DurationVar(&sc.Audit.RetentionAge, "audit-retention", sc.Audit.RetentionAge, "drop audit records older than this, 0: no age bound (cell-wide: the leader's value applies)")
	st.Uint64Var(&sc.Audit.MaxRecords, "audit-max-records", sc.Audit.MaxRecords, "most audit records per tenant, 0: unbounded (cell-wide: the leader's value applies)")
	st.Uint64Var(&sc.TenantQuota.MaxBytes, "tenant-max-bytes", sc.TenantQuota.MaxBytes, "default quota: most entry and memory bytes one tenant stores in the cell; writes above it are refused (QUOTA_EXCEEDED), deletes always pass; 0: unbounded (cell-wide: the leader's value applies; a tenant's own quota, set with SetTenant, overrides it)")
	st.Uint64Var(&sc.TenantQuota.MaxContexts, "tenant-max-contexts", sc.TenantQuota.MaxContexts, "default quota: most contexts per tenant, 0: unbounded (cell-wide, like --tenant-max-bytes)")
	st.Uint64Var(&sc.TenantQuota.MaxMemoryKeys, "tenant-max-memory-keys", sc.TenantQuota.MaxMemoryKeys, "default quota: most memory keys per tenant, 0: unbounded (cell-wide, like --tenant-max-bytes)")
	st.DurationVar(&sc.TenantQuota.DefaultRetention, "tenant-default-retention", sc.TenantQuota.DefaultRetention, "default retention: contexts and memory keys written without an expiry expire this long after the write, 0: never (cell-wide, like --tenant-max-bytes)")
	st.DurationVar(&sc.Expiry.SweepInterval, "expiry-sweep-interval", sc.Expiry.SweepInterval, "how often the leader proposes sweeps of expired contexts and memory keys (reads hide them before)")
	st.IntVar(&sc.Expiry.SweepBatch, "expiry-sweep-batch", sc.Expiry.SweepBatch, "most expired items one sweep command removes")
	st.IntVar(&sc.Expiry.MaxSweepsPerTenant, "expiry-max-sweeps-per-tenant", sc.Expiry.MaxSweepsPerTenant, "most sweep commands per tenant and sweep round")
	st.Uint64Var(&sc.Disk.MinFreeBytes, "min-free-bytes", sc.Disk.MinFreeBytes, "free-space watermark of the data dir's filesystem: below it the node, as leader, refuses new writes (STORAGE_FULL) while reads and deletes work; 0: off")
	st.Float64Var(&sc.Disk.MinFreePercent, "min-free-percent", sc.Disk.MinFreePercent, "free-space watermark in percent of the data dir's filesystem (either bound trips it); 0: off")
	st.DurationVar(&sc.Disk.CheckInterval, "disk-check-interval", sc.Disk.CheckInterval, "how often the data dir's free space is checked")
	st.DurationVar(&sc.Disk.PeerStaleAfter, "disk-peer-stale-after", sc.Disk.PeerStaleAfter, "the leader refuses writes while a member reports its disk below the watermark; a report it cannot renew counts this long (0: only the leader's own disk counts)")
	st.DurationVar(&sc.Transport.HandshakeTimeout, "raft-handshake-timeout", sc.Transport.HandshakeTimeout, "with --certs-dir: bound on a Raft connection's TLS handshake, accepted or dialed")
	st.DurationVar(&sc.ApplyTimeout, "apply-timeout", sc.ApplyTimeout, "bound on a write when the caller set no earlier deadline")
	st.DurationVar(&sc.DefaultMaxStaleness, "default-max-staleness", sc.DefaultMaxStaleness, "staleness bound of STALE reads that name none")

	cp := pflag.NewFlagSet("control plane", pflag.ContinueOnError)
	cp.StringVar(&etcd.Endpoints, "etcd-endpoints", "", "comma-separated etcd endpoints of the control plane's registry (env "+envEtcdEndpoints+"); empty: standalone node")
	cp.StringVar(&controlplaneAddr, "controlplane", "", "the control plane's gRPC address: ask it where etcd is (instead of --etcd-endpoints)")
	cp.StringVar(&etcd.Prefix, "etcd-prefix", etcd.Prefix, "key prefix of cellplane's keyspace in etcd")
	cp.StringVar(&etcd.CertFile, "etcd-cert", "", "client certificate for etcd (default for https endpoints: the node's --certs-dir certificate)")
	cp.StringVar(&etcd.KeyFile, "etcd-key", "", "client key for etcd (TLS)")
	cp.StringVar(&etcd.CAFile, "etcd-ca", "", "CA bundle verifying etcd's certificate (default for https endpoints: --certs-dir's ca.crt)")
	cp.DurationVar(&etcd.DialTimeout, "etcd-dial-timeout", etcd.DialTimeout, "how long connecting to etcd may take")
	cp.DurationVar(&cfg.RegistryTTL, "registry-ttl", registry.DefaultTTL, "lease TTL of the node's registry keys: how long they outlive a node that dies without stopping")
	cp.DurationVar(&cfg.AuthorityTTL, "authority-ttl", registry.DefaultAuthorityTTL, "etcd lease TTL of the cell leader's authority (whole seconds): an emergency promotion waits for it to expire")
	cp.DurationVar(&cfg.AuthorityDriftMargin, "authority-drift-margin", registry.DefaultDriftMargin, "the leader stops acknowledging writes this long before its authority lease can expire in etcd")

	mcpf := pflag.NewFlagSet("mcp", pflag.ContinueOnError)
	mcpf.BoolVar(&cfg.MCPDisabled, "mcp-disabled", false, "do not serve the MCP worker at /t/<tenant>/mcp on the HTTP port")
	mflags.register(mcpf, "mcp-")

	met := pflag.NewFlagSet("metrics", pflag.ContinueOnError)
	mc := &cfg.Replication.Metrics
	met.BoolVar(&mc.TenantLabels, "metrics-tenant-labels", mc.TenantLabels, "also export standby replication lag per tenant (cellplane_replication_lag_events/_seconds{tenant}); off: /metrics, which is not authenticated, names no tenant")
	met.IntVar(&mc.MaxTenantSeries, "metrics-max-tenant-series", mc.MaxTenantSeries, "with --metrics-tenant-labels: most tenants exported per scrape, the most lagging first (the rest are counted in cellplane_replication_tenant_series_dropped)")
	met.DurationVar(&mc.LagThreshold, "replication-lag-threshold", mc.LagThreshold, "a standby tenant lagging at least this counts in cellplane_replication_streams_lagging")

	logf := pflag.NewFlagSet("logging", pflag.ContinueOnError)
	logf.StringVar(&logLevel, "log-level", logLevel, "trace, debug, info, warn or error")
	logf.StringVar(&logFormat, "log-format", logFormat, "text or json (logs go to stderr)")

	groups := []flagGroup{
		{"Node", node},
		{"TLS", tlsf},
		{"Request limits", lim},
		{"Server limits", srvLim},
		{"Control plane", cp},
		{"MCP worker", mcpf},
		{"Metrics", met},
		{"Raft and store tuning", st},
		{"Logging", logf},
	}
	for _, g := range groups {
		cmd.Flags().AddFlagSet(g.set)
	}
	_ = cmd.MarkFlagRequired("id")
	_ = cmd.MarkFlagRequired("data-dir")
	cmd.SetUsageFunc(groupedUsage(groups))
	cmd.AddCommand(newUnsafeRecoverCmd(std))
	return cmd
}

// runCell starts the node and waits for a signal (ctx) or for the node to
// stop by itself.
func runCell(cmd *cobra.Command, cfg cells.Config, stopSignals func()) error {
	ctx := cmd.Context()
	n, err := cells.Start(ctx, cfg)
	if err != nil {
		var le *cells.ListenError
		if errors.As(err, &le) {
			return fmt.Errorf("%s %s: %s", listenFlag(le.Name), le.Addr, le.Reason())
		}
		return err
	}
	log := cfg.Logger.With("node", cfg.NodeID)
	select {
	case <-ctx.Done():
		if stopSignals != nil {
			stopSignals() // a second signal now kills the process
		}
		log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
		start := time.Now()
		if err := n.Close(); err != nil {
			return fmt.Errorf("shutdown: %w", err)
		}
		log.Info("stopped", "took", time.Since(start).Round(time.Millisecond))
		return nil
	case <-n.Done():
		cerr := n.Close()
		if err := n.Err(); err != nil {
			return fmt.Errorf("node stopped: %w", err)
		}
		return cerr
	}
}

// envEtcdEndpoints is the environment variable read when --etcd-endpoints
// is not given.
const envEtcdEndpoints = "CELLPLANE_ETCD_ENDPOINTS"

// etcdFlags are the control-plane registry flags of 'cell'.
type etcdFlags struct {
	Endpoints                 string
	Prefix                    string
	CertFile, KeyFile, CAFile string
	DialTimeout               time.Duration
}

// identity is the TLS identity a component reaches etcd with: its own
// (--certs-dir) for https endpoints, unless --etcd-cert/--etcd-ca name
// other files (an external etcd with certificates of its own).
func (f etcdFlags) identity(endpoints []string, src *pki.Source) *pki.Source {
	if src == nil || f.CertFile != "" || f.CAFile != "" || !etcdtopo.SecureEndpoints(endpoints) {
		return nil
	}
	return src
}

// splitList splits a comma-separated list, dropping blanks.
func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parsePeers parses "id1@host:port,id2@host:port" (spaces allowed around
// commas). Empty input gives no peers.
func parsePeers(s string) ([]store.Peer, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var peers []store.Peer
	for i, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		id, addr, ok := strings.Cut(part, "@")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("peer %d %q: want id@host:port", i+1, part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("peer %d %q: address: %w", i+1, part, err)
		}
		peers = append(peers, store.Peer{ID: id, Addr: addr})
	}
	return peers, nil
}

// flagGroup is a titled group of flags in a command's help.
type flagGroup struct {
	title string
	set   *pflag.FlagSet
}

// groupedUsage prints a command's usage with its flags in titled groups;
// flags in no group (such as --help) come last.
func groupedUsage(groups []flagGroup) func(*cobra.Command) error {
	return func(c *cobra.Command) error {
		var b strings.Builder
		fmt.Fprintf(&b, "Usage:\n  %s\n", c.UseLine())
		if c.HasExample() {
			fmt.Fprintf(&b, "\nExamples:\n%s\n", c.Example)
		}
		grouped := map[string]bool{}
		for _, g := range groups {
			fmt.Fprintf(&b, "\n%s flags:\n%s", g.title, g.set.FlagUsages())
			g.set.VisitAll(func(f *pflag.Flag) { grouped[f.Name] = true })
		}
		other := pflag.NewFlagSet("other", pflag.ContinueOnError)
		c.Flags().VisitAll(func(f *pflag.Flag) {
			if !grouped[f.Name] {
				other.AddFlag(f)
			}
		})
		c.InheritedFlags().VisitAll(func(f *pflag.Flag) {
			if !grouped[f.Name] && other.Lookup(f.Name) == nil {
				other.AddFlag(f)
			}
		})
		if other.HasFlags() {
			fmt.Fprintf(&b, "\nOther flags:\n%s", other.FlagUsages())
		}
		_, err := fmt.Fprint(c.OutOrStderr(), b.String())
		return err
	}
}

// componentTLS opens a component's TLS material in dir: <name>.crt/.key
// and ca.crt. Without a name, it is the one <prefix>.*.crt in dir (what
// `cellplane cert create-<prefix>` writes).
func componentTLS(dir, name, prefix string, logger *slog.Logger) (*pki.Source, error) {
	if name == "" {
		matches, err := filepath.Glob(filepath.Join(dir, prefix+".*.crt"))
		if err != nil {
			return nil, usageErrorf("--certs-dir: %w", err)
		}
		switch len(matches) {
		case 0:
			return nil, usageErrorf("--certs-dir %s holds no %s certificate (%s.<id>.crt): create one with `cellplane cert create-%s` or name it with --cert-name", dir, prefix, prefix, prefix)
		case 1:
			name = strings.TrimSuffix(filepath.Base(matches[0]), ".crt")
		default:
			for i, m := range matches {
				matches[i] = filepath.Base(m)
			}
			return nil, usageErrorf("--certs-dir %s holds several %s certificates (%s): choose one with --cert-name", dir, prefix, strings.Join(matches, ", "))
		}
	}
	cfg := pki.DirConfig(dir, name)
	cfg.Logger = logger.With("component", "pki")
	src, err := pki.NewSource(cfg)
	if err != nil {
		return nil, usageErrorf("--certs-dir %s --cert-name %s: %w", dir, name, err)
	}
	return src, nil
}

// nodeTLS opens the node's TLS material in dir: <name>.crt/.key and
// ca.crt. Without a name, it is the one node.<region>.<cell>.<id>.crt in
// dir (cell: any when empty).
func nodeTLS(dir, name, nodeID, cellID string, logger *slog.Logger) (*pki.Source, error) {
	if name == "" {
		cell := cellID
		if cell == "" {
			cell = "*"
		}
		matches, err := filepath.Glob(filepath.Join(dir, "node.*."+cell+"."+nodeID+".crt"))
		if err != nil {
			return nil, usageErrorf("--certs-dir: %w", err)
		}
		switch len(matches) {
		case 0:
			return nil, usageErrorf("--certs-dir %s holds no certificate of node %q (node.<region>.%s.%s.crt): create one with `cellplane cert create-node` or name it with --cert-name", dir, nodeID, cell, nodeID)
		case 1:
			name = strings.TrimSuffix(filepath.Base(matches[0]), ".crt")
		default:
			for i, m := range matches {
				matches[i] = filepath.Base(m)
			}
			return nil, usageErrorf("--certs-dir %s holds several certificates of node %q (%s): choose one with --cert-name", dir, nodeID, strings.Join(matches, ", "))
		}
	}
	cfg := pki.DirConfig(dir, name)
	cfg.Logger = logger.With("component", "pki")
	src, err := pki.NewSource(cfg)
	if err != nil {
		return nil, fmt.Errorf("--certs-dir: %w", err)
	}
	return src, nil
}

// ackRecorder writes the store's acknowledgements to an acklog.Writer.
type ackRecorder struct{ w *acklog.Writer }

func (r ackRecorder) Now() int64 { return r.w.Now() }

func (r ackRecorder) Acked(a store.Ack) {
	r.w.Write(acklog.Record{Tenant: a.Tenant, Epoch: a.Epoch, Term: a.Term, Index: a.Index, Before: a.Before, After: a.After})
}
