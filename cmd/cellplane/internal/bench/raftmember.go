package bench

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	raftwal "github.com/hashicorp/raft-wal"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/pki"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// RaftMemberConfig configures one member of the bare-Raft baseline
// (`cellplane bench raft-member`, hidden): hashicorp/raft on raft-wal with
// the cell's Raft settings (cells/store DefaultConfig), its network
// transport over mutual TLS, a no-op state machine, and a gRPC front
// (mutual TLS) whose ContextService.Append proposes the request's bytes
// as one Raft entry and answers once it is applied: the floor the cell's
// store is measured against.
type RaftMemberConfig struct {
	// ID is this member's Raft id; it must be one of Bootstrap's.
	ID string
	// DataDir holds raft-wal's segments.
	DataDir string
	// RaftAddr, GRPCAddr and HTTPAddr are the listen addresses of the Raft
	// transport, the gRPC front and /metrics (HTTPS).
	RaftAddr, GRPCAddr, HTTPAddr string
	// Bootstrap lists every voter as id -> Raft address.
	Bootstrap []store.Peer
	// TLS is this member's certificate source (a node identity): Raft
	// peers must present node certificates; gRPC and /metrics callers any
	// identity of the cluster.
	TLS    *pki.Source
	Logger *slog.Logger
}

// Validate reports a configuration that cannot start.
func (c RaftMemberConfig) Validate() error {
	switch {
	case c.ID == "", c.DataDir == "", c.RaftAddr == "", c.GRPCAddr == "", c.HTTPAddr == "":
		return errors.New("bench: raft member: id, data dir and the three addresses are required")
	case len(c.Bootstrap) == 0:
		return errors.New("bench: raft member: no bootstrap voters")
	case c.TLS == nil:
		return errors.New("bench: raft member: no TLS source (the baseline runs with mutual TLS, like the cell)")
	}
	return nil
}

// Bare-Raft member metrics (names of /metrics on its HTTP port).
const (
	metricRaftStoreLogs = "cellplane_bench_raft_store_logs_total"
	metricRaftEntries   = "cellplane_bench_raft_entries_total"
	metricRaftApplied   = "cellplane_bench_raft_applied_total"
)

// RunRaftMember runs a bare-Raft member until ctx ends.
func RunRaftMember(ctx context.Context, cfg RaftMemberConfig) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	walDir := filepath.Join(cfg.DataDir, "raft-wal")
	if err := os.MkdirAll(walDir, 0o750); err != nil {
		return fmt.Errorf("bench: raft member: %w", err)
	}
	hlog := logging.NewHclog(cfg.Logger, logging.HclogOptions{Name: "raft", Demote: logging.RaftRoutineMessages()})
	wal, err := raftwal.Open(walDir, raftwal.WithLogger(hlog))
	if err != nil {
		return fmt.Errorf("bench: raft member: open raft-wal: %w", err)
	}
	defer wal.Close()
	reg := prometheus.NewRegistry()
	storeLogs := prometheus.NewCounter(prometheus.CounterOpts{Name: metricRaftStoreLogs, Help: "StoreLogs calls to raft-wal (one fsync each)."})
	entries := prometheus.NewCounter(prometheus.CounterOpts{Name: metricRaftEntries, Help: "Log entries written to raft-wal."})
	applied := prometheus.NewCounter(prometheus.CounterOpts{Name: metricRaftApplied, Help: "Commands applied by the no-op state machine."})
	reg.MustRegister(storeLogs, entries, applied)
	logs := &countingLogStore{LogStore: wal, calls: storeLogs, entries: entries}

	ln, err := net.Listen("tcp", cfg.RaftAddr)
	if err != nil {
		return fmt.Errorf("bench: raft member: %w", err)
	}
	layer := &tlsStreamLayer{Listener: tls.NewListener(ln, cfg.TLS.ServerTLSConfig(pki.ExpectKinds(pki.KindNode))),
		addr: ln.Addr(), client: cfg.TLS.ClientTLSConfig(pki.ExpectKinds(pki.KindNode))}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{Stream: layer, MaxPool: 4, Timeout: 10 * time.Second, Logger: hlog})
	defer trans.Close()

	sc := store.DefaultConfig().Raft
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = hlog
	rc.HeartbeatTimeout, rc.ElectionTimeout, rc.LeaderLeaseTimeout = sc.HeartbeatTimeout, sc.ElectionTimeout, sc.LeaderLeaseTimeout
	rc.CommitTimeout, rc.MaxAppendEntries = sc.CommitTimeout, sc.MaxAppendEntries
	rc.SnapshotInterval, rc.SnapshotThreshold, rc.TrailingLogs = sc.SnapshotInterval, sc.SnapshotThreshold, sc.TrailingLogs
	snaps := raft.NewInmemSnapshotStore()
	has, err := raft.HasExistingState(wal, wal, snaps)
	if err != nil {
		return fmt.Errorf("bench: raft member: %w", err)
	}
	if !has {
		var conf raft.Configuration
		for _, p := range cfg.Bootstrap {
			conf.Servers = append(conf.Servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
		}
		if err := raft.BootstrapCluster(rc, logs, wal, snaps, trans, conf); err != nil {
			return fmt.Errorf("bench: raft member: bootstrap: %w", err)
		}
	}
	r, err := raft.NewRaft(rc, noopFSM{applied: applied}, logs, wal, snaps, trans)
	if err != nil {
		return fmt.Errorf("bench: raft member: %w", err)
	}
	defer func() { _ = r.Shutdown().Error() }()

	gl, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("bench: raft member: %w", err)
	}
	gs := grpc.NewServer(grpc.Creds(pki.ServerCredentials(cfg.TLS)))
	front := &raftFront{r: r, id: cfg.ID}
	contextv1.RegisterContextServiceServer(gs, front)
	cellv1.RegisterCellServiceServer(gs, front)
	go func() { _ = gs.Serve(gl) }()
	defer gs.Stop()

	hl, err := net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return fmt.Errorf("bench: raft member: %w", err)
	}
	hs := &http.Server{Handler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), TLSConfig: cfg.TLS.ServerTLSConfig(nil), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = hs.ServeTLS(hl, "", "") }()
	defer hs.Close()

	<-ctx.Done()
	return nil
}

// raftFront is the bare-Raft member's gRPC front: Append proposes the
// request (its wire bytes) as one entry; GetStatus says who leads.
type raftFront struct {
	contextv1.UnimplementedContextServiceServer
	cellv1.UnimplementedCellServiceServer
	r  *raft.Raft
	id string
}

func (f *raftFront) Append(ctx context.Context, req *contextv1.AppendRequest) (*contextv1.AppendResponse, error) {
	b, err := proto.Marshal(req)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	timeout := 10 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	fut := f.r.Apply(b, timeout)
	if err := fut.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return nil, status.Error(codes.Unavailable, err.Error())
		}
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &contextv1.AppendResponse{}, nil
}

func (f *raftFront) GetStatus(context.Context, *cellv1.GetStatusRequest) (*cellv1.GetStatusResponse, error) {
	stats := f.r.Stats()
	_, leader := f.r.LeaderWithID()
	var term uint64
	_, _ = fmt.Sscan(stats["term"], &term)
	return &cellv1.GetStatusResponse{
		Node:     &cellv1.NodeInfo{NodeId: f.id},
		State:    f.r.State().String(),
		Term:     term,
		LeaderId: string(leader),
	}, nil
}

// noopFSM applies nothing: the baseline measures Raft, not a store.
type noopFSM struct{ applied prometheus.Counter }

func (f noopFSM) Apply(*raft.Log) any { f.applied.Inc(); return nil }

func (noopFSM) Snapshot() (raft.FSMSnapshot, error) { return noopSnapshot{}, nil }

func (noopFSM) Restore(rc io.ReadCloser) error { return rc.Close() }

type noopSnapshot struct{}

func (noopSnapshot) Persist(sink raft.SnapshotSink) error { return sink.Close() }
func (noopSnapshot) Release()                             {}

// countingLogStore counts raft-wal's StoreLogs calls (each one write and
// one fsync) and the entries they carry.
type countingLogStore struct {
	raft.LogStore
	calls, entries prometheus.Counter
}

func (s *countingLogStore) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

func (s *countingLogStore) StoreLogs(ls []*raft.Log) error {
	s.calls.Inc()
	s.entries.Add(float64(len(ls)))
	return s.LogStore.StoreLogs(ls)
}

// tlsStreamLayer is raft's StreamLayer over mutual TLS: accepted and
// dialed connections must present node certificates of the cluster. It
// closes every connection it made or accepted when it is closed (raft's
// NetworkTransport leaves both open, and their readers running).
type tlsStreamLayer struct {
	net.Listener
	addr   net.Addr
	client *tls.Config

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

func (l *tlsStreamLayer) Addr() net.Addr { return l.addr }

func (l *tlsStreamLayer) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return l.track(c)
}

func (l *tlsStreamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	c, err := tls.DialWithDialer(d, "tcp", string(addr), l.client)
	if err != nil {
		return nil, err
	}
	return l.track(c)
}

func (l *tlsStreamLayer) track(c net.Conn) (net.Conn, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	if l.conns == nil {
		l.conns = map[net.Conn]struct{}{}
	}
	l.conns[c] = struct{}{}
	return &layerConn{Conn: c, l: l}, nil
}

func (l *tlsStreamLayer) Close() error {
	err := l.Listener.Close()
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	for c := range l.conns {
		c.Close()
	}
	l.conns = nil
	return err
}

// layerConn forgets itself in its layer when closed.
type layerConn struct {
	net.Conn
	l *tlsStreamLayer
}

func (c *layerConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c.Conn)
	c.l.mu.Unlock()
	return c.Conn.Close()
}
