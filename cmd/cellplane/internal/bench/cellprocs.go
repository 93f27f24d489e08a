package bench

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// System names of the per-process cell scenario, in the order of its
// first round.
const (
	sysCell = "cell"
	sysEtcd = "etcd"
	sysRaft = "raft"
)

// Step names of the per-process rounds.
const (
	stepCellAppend = "cell append"
	stepEtcdPut    = "etcd put"
	stepRaftAppend = "raft floor append"
	stepFsync      = "fsync"
)

// Cell-scenario metric names read from the members' /metrics.
const (
	metricEtcdFsyncs     = "etcd_disk_wal_fsync_duration_seconds_count"
	metricCellBatchSum   = "cellplane_store_proposal_batch_size_sum"
	metricCellBatchCount = "cellplane_store_proposal_batch_size_count"
)

// CellRound is one round of the per-process cell scenario: the fsync loop,
// then each system at each concurrency, the systems' order rotating from
// round to round.
type CellRound struct {
	Round int      `json:"round"`
	Order []string `json:"order"`
	// LoadAvgStart is /proc/loadavg when the round started.
	LoadAvgStart []float64 `json:"load_avg_start,omitempty"`
	// MaxForeignCores is the largest ForeignCores of its steps; Noisy is
	// set when it exceeds the run's limit: the round's ratios are then
	// reported but left out of the medians.
	MaxForeignCores float64 `json:"max_foreign_cores"`
	Noisy           bool    `json:"noisy"`
	// Ratios are this round's ratios (the scenario's ratios are their
	// medians over the quiet rounds).
	Ratios map[string]float64 `json:"ratios"`
}

// procSystem is one system under test of the per-process scenario: its
// member processes, a gRPC connection or etcd client to each, and the
// member that leads.
type procSystem struct {
	name     string
	procs    children
	conns    []*grpc.ClientConn // cell, raft: router identity
	admin    []*grpc.ClientConn // cell: control plane identity
	etcd     *clientv3.Client   // etcd: the leader's endpoint
	etcdURLs []string           // etcd: every member's client URL
	metrics  []string           // URLs of the members' /metrics
	nodes    []procNode         // cell: the members' addresses
	leader   int
}

// procNode is one cell member's id and addresses.
type procNode struct{ id, raft, grpc, http string }

func (s *procSystem) close() {
	for _, c := range append(s.conns, s.admin...) {
		_ = c.Close()
	}
	if s.etcd != nil {
		_ = s.etcd.Close()
	}
	s.procs.stop()
}

// procEnv is what every system of a per-process run shares.
type procEnv struct {
	bin    string
	dir    string
	pki    *benchPKI
	https  *http.Client
	etcTLS *tls.Config
	p      progress
	// cellArgs are extra flags of every `cellplane cell` member.
	cellArgs []string
}

func newProcEnv(bin, dir string, p progress) (*procEnv, error) {
	bp, err := newBenchPKI(filepath.Join(dir, "certs"), 3)
	if err != nil {
		return nil, err
	}
	cert, key := leafFiles(bp.Dir, pki.RouterIdentity(benchPKICluster, "bench"))
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(bp.Dir, pki.CACertFile))
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	tc := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}, RootCAs: pool}
	return &procEnv{bin: bin, dir: dir, pki: bp, p: p, etcTLS: tc,
		https: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: tc.Clone()}}}, nil
}

func (e *procEnv) dialAll(addrs []string, src *pki.Source, kinds ...pki.Kind) ([]*grpc.ClientConn, error) {
	cfg := dial.DefaultConfig()
	if src != nil { // nil: plaintext
		cfg.Credentials = pki.ClientCredentials(src, pki.ExpectKinds(kinds...))
	}
	var out []*grpc.ClientConn
	for _, a := range addrs {
		c, err := dial.New(a, cfg)
		if err != nil {
			for _, c := range out {
				_ = c.Close()
			}
			return nil, fmt.Errorf("bench: dial %s: %w", a, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// startProcCell starts 3 × `cellplane cell` (mutual TLS, standalone),
// finds the leader and makes tenant "bench" OWNER at epoch 1. With
// e.pki nil the nodes run --insecure (plaintext, as the router and mcp
// scenarios' in-process cells do).
func (e *procEnv) startProcCell(ctx context.Context, logLevel string) (*procSystem, error) {
	addrs, err := loopbackAddrs(9)
	if err != nil {
		return nil, err
	}
	var boot []string
	for i := range 3 {
		boot = append(boot, fmt.Sprintf("n%d@%s", i+1, addrs[3*i]))
	}
	s := &procSystem{name: sysCell}
	var grpcAddrs []string
	for i := range 3 {
		raftA, grpcA, httpA := addrs[3*i], addrs[3*i+1], addrs[3*i+2]
		id := fmt.Sprintf("n%d", i+1)
		args := []string{"cell", "--id", id, "--cell", benchCellID,
			"--data-dir", filepath.Join(e.dir, "cell", id), "--raft-addr", raftA, "--grpc-addr", grpcA, "--http-addr", httpA,
			"--bootstrap", strings.Join(boot, ","), "--log-level", logLevel}
		args = append(args, e.cellArgs...)
		scheme := "https://"
		if e.pki != nil {
			args = append(args, "--certs-dir", e.pki.Dir)
		} else {
			args, scheme = append(args, "--insecure"), "http://"
		}
		c, err := startChild("cell "+id, e.bin, args...)
		if err != nil {
			s.close()
			return nil, err
		}
		s.procs = append(s.procs, c)
		grpcAddrs = append(grpcAddrs, grpcA)
		s.nodes = append(s.nodes, procNode{id: id, raft: raftA, grpc: grpcA, http: httpA})
		s.metrics = append(s.metrics, scheme+httpA+"/metrics")
	}
	if e.pki == nil {
		if s.conns, err = e.dialAll(grpcAddrs, nil); err == nil {
			s.admin, err = e.dialAll(grpcAddrs, nil)
		}
	} else if s.conns, err = e.dialAll(grpcAddrs, e.pki.Router, pki.KindNode); err == nil {
		s.admin, err = e.dialAll(grpcAddrs, e.pki.ControlPlane, pki.KindNode)
	}
	if err != nil {
		s.close()
		return nil, err
	}
	if err := e.waitGRPCLeader(ctx, s, s.admin); err != nil {
		s.close()
		return nil, err
	}
	admin := cellv1.NewCellServiceClient(s.admin[s.leader])
	err = waitChildren(ctx, s.procs, func() error {
		_, err := admin.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: benchTenant, Role: cellv1.Role_ROLE_OWNER, Epoch: 1, RequestId: "bench-set-tenant"})
		return err
	})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("bench: make tenant %s owner: %w", benchTenant, err)
	}
	return s, nil
}

// startProcRaft starts 3 × `cellplane bench raft-member` and finds the
// leader.
func (e *procEnv) startProcRaft(ctx context.Context, logLevel string) (*procSystem, error) {
	addrs, err := loopbackAddrs(9)
	if err != nil {
		return nil, err
	}
	var boot []string
	for i := range 3 {
		boot = append(boot, fmt.Sprintf("n%d@%s", i+1, addrs[3*i]))
	}
	s := &procSystem{name: sysRaft}
	var grpcAddrs []string
	for i := range 3 {
		raftA, grpcA, httpA := addrs[3*i], addrs[3*i+1], addrs[3*i+2]
		id := fmt.Sprintf("n%d", i+1)
		c, err := startChild("raft member "+id, e.bin, "bench", "raft-member", "--id", id,
			"--data-dir", filepath.Join(e.dir, "raft", id), "--raft-addr", raftA, "--grpc-addr", grpcA, "--http-addr", httpA,
			"--bootstrap", strings.Join(boot, ","), "--certs-dir", e.pki.Dir,
			"--cert-name", pki.NodeIdentity(benchPKICluster, benchRegion, benchCellID, id).FileName(), "--log-level", logLevel)
		if err != nil {
			s.close()
			return nil, err
		}
		s.procs = append(s.procs, c)
		grpcAddrs = append(grpcAddrs, grpcA)
		s.metrics = append(s.metrics, "https://"+httpA+"/metrics")
	}
	if s.conns, err = e.dialAll(grpcAddrs, e.pki.Router, pki.KindNode); err != nil {
		s.close()
		return nil, err
	}
	if err := e.waitGRPCLeader(ctx, s, s.conns); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// waitGRPCLeader waits until a member says it leads (CellService.GetStatus).
func (e *procEnv) waitGRPCLeader(ctx context.Context, s *procSystem, conns []*grpc.ClientConn) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err := waitChildren(ctx, s.procs, func() error {
		for i, c := range conns {
			st, err := cellv1.NewCellServiceClient(c).GetStatus(ctx, &cellv1.GetStatusRequest{})
			if err == nil && st.GetState() == "Leader" {
				s.leader = i
				return nil
			}
		}
		return errors.New("no leader yet")
	})
	if err != nil {
		return fmt.Errorf("bench: %s: %w", s.name, err)
	}
	return nil
}

// refreshLeader finds the member that leads now (a CPU-starved machine
// can move leadership between steps): the steps send to it. It returns
// whether the leader changed; with no leader found the old one stays.
func (e *procEnv) refreshLeader(ctx context.Context, s *procSystem) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	old := s.leader
	switch s.name {
	case sysCell, sysRaft:
		conns := s.conns
		if s.admin != nil {
			conns = s.admin
		}
		if err := e.waitGRPCLeader(ctx, s, conns); err != nil {
			s.leader = old
		}
	case sysEtcd:
		for i, ep := range s.etcdURLs {
			st, err := s.etcd.Status(ctx, ep)
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				s.leader = i
			}
		}
		if s.leader != old {
			cli, err := clientv3.New(clientv3.Config{Endpoints: []string{s.etcdURLs[s.leader]}, DialTimeout: 5 * time.Second,
				TLS: e.etcTLS.Clone(), Logger: zap.NewNop(), Context: ctx})
			if err != nil {
				s.leader = old
				return false
			}
			_ = s.etcd.Close()
			s.etcd = cli
		}
	}
	return s.leader != old
}

// startProcEtcd starts 3 × `cellplane bench etcd-member` (mutual TLS) and
// connects a client to the leader.
func (e *procEnv) startProcEtcd(ctx context.Context) (*procSystem, error) {
	addrs, err := loopbackAddrs(6)
	if err != nil {
		return nil, err
	}
	var names, peers, clients []string
	for i := range 3 {
		names = append(names, fmt.Sprintf("etcd%d", i+1))
		peers = append(peers, "https://"+addrs[2*i])
		clients = append(clients, "https://"+addrs[2*i+1])
	}
	s := &procSystem{name: sysEtcd, etcdURLs: clients}
	for i := range 3 {
		cert, key := leafFiles(e.pki.Dir, pki.ControlPlaneIdentity(benchPKICluster, names[i]))
		c, err := startChild("etcd member "+names[i], e.bin, "bench", "etcd-member", "--name", names[i],
			"--data-dir", filepath.Join(e.dir, "etcd", names[i]), "--peer-url", peers[i], "--client-url", clients[i],
			"--initial-cluster", etcdInitialCluster(names, peers),
			"--cert-file", cert, "--key-file", key, "--ca-file", filepath.Join(e.pki.Dir, pki.CACertFile))
		if err != nil {
			s.close()
			return nil, err
		}
		s.procs = append(s.procs, c)
		s.metrics = append(s.metrics, clients[i]+"/metrics")
	}
	all, err := clientv3.New(clientv3.Config{Endpoints: clients, DialTimeout: 5 * time.Second, TLS: e.etcTLS.Clone(), Logger: zap.NewNop(), Context: ctx})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("bench: etcd client: %w", err)
	}
	defer all.Close()
	wctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	err = waitChildren(wctx, s.procs, func() error {
		for i, ep := range clients {
			st, err := all.Status(wctx, ep)
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				s.leader = i
				return nil
			}
		}
		return errors.New("no etcd leader yet")
	})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("bench: etcd: %w", err)
	}
	s.etcd, err = clientv3.New(clientv3.Config{Endpoints: []string{clients[s.leader]}, DialTimeout: 5 * time.Second, TLS: e.etcTLS.Clone(), Logger: zap.NewNop(), Context: ctx})
	if err != nil {
		s.close()
		return nil, fmt.Errorf("bench: etcd client: %w", err)
	}
	return s, nil
}

// scrape returns the sums of the named metrics (every label set) at url.
func (e *procEnv) scrape(url string, names ...string) map[string]float64 {
	out := map[string]float64{}
	resp, err := e.https.Get(url)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest, ok := strings.Cut(line, " ")
		if i := strings.IndexByte(line, '{'); i >= 0 && i < len(name) {
			name = line[:i]
			j := strings.LastIndexByte(line, '}')
			if j < 0 {
				continue
			}
			rest = strings.TrimSpace(line[j+1:])
			ok = true
		}
		if !ok || !slices.Contains(names, name) {
			continue
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		if v, err := strconv.ParseFloat(f[0], 64); err == nil {
			out[name] += v
		}
	}
	return out
}

// counters is one reading of everything a per-process step compares.
type counters struct {
	at      time.Time
	members time.Duration // the system under test's members
	ours    time.Duration // every member of every system + this process
	busy    time.Duration // the machine's busy CPU (/proc/stat), steal included
	steal   time.Duration
	leader  map[string]float64 // the leader's metrics
	sum     map[string]float64 // summed over members
}

// metricsOf lists the metrics each system's step reads.
func metricsOf(sys string) []string {
	switch sys {
	case sysCell:
		return []string{metricCellBatchSum, metricCellBatchCount}
	case sysEtcd:
		return []string{metricEtcdFsyncs}
	case sysRaft:
		return []string{metricRaftStoreLogs, metricRaftEntries, metricRaftApplied}
	}
	return nil
}

func (e *procEnv) read(s *procSystem, all []*procSystem) counters {
	c := counters{at: time.Now(), members: s.procs.cpu(), ours: processCPU(), leader: map[string]float64{}, sum: map[string]float64{}}
	for _, o := range all {
		c.ours += o.procs.cpu()
	}
	c.busy, c.steal = machineCPU()
	for i, u := range s.metrics {
		for k, v := range e.scrape(u, metricsOf(s.name)...) {
			c.sum[k] += v
			if i == s.leader {
				c.leader[k] += v
			}
		}
	}
	return c
}

// fill sets res's per-process figures from the counters at the opening
// and the close of its measured window.
func fillProcFigures(res *Result, sys string, a, b counters) {
	window := b.at.Sub(a.at).Seconds()
	if window <= 0 {
		return
	}
	res.MemberCPUCores = round3((b.members - a.members).Seconds() / window)
	if res.Ops > 0 {
		res.MemberCPUPerOpUs = round3(float64((b.members - a.members).Microseconds()) / float64(res.Ops))
	}
	res.ForeignCores = round3(max((b.busy-a.busy)-(b.ours-a.ours), 0).Seconds() / window)
	res.StealCores = round3((b.steal - a.steal).Seconds() / window)
	d := func(m map[string]float64, bm map[string]float64, k string) float64 { return bm[k] - m[k] }
	ops := float64(res.Ops)
	switch sys {
	case sysCell:
		if n := d(a.leader, b.leader, metricCellBatchCount); n > 0 {
			res.CommandsPerEntry = round3(d(a.leader, b.leader, metricCellBatchSum) / n)
		}
	case sysEtcd:
		if ops > 0 {
			res.FsyncsPerWrite = round3(d(a.sum, b.sum, metricEtcdFsyncs) / ops)
		}
	case sysRaft:
		if ops > 0 {
			res.FsyncsPerWrite = round3(d(a.sum, b.sum, metricRaftStoreLogs) / ops)
		}
		if n := d(a.leader, b.leader, metricRaftEntries); n > 0 {
			res.CommandsPerEntry = round3(d(a.leader, b.leader, metricRaftApplied) / n)
		}
	}
}

// machineCPU returns the machine's busy CPU time (every state but idle and
// iowait; steal included: time the hypervisor gave to others) and its
// steal time, from the first line of /proc/stat.
func machineCPU() (busy, steal time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	// user nice system idle iowait irq softirq steal [guest guest_nice]
	var v [8]uint64
	for i := range v {
		v[i], _ = strconv.ParseUint(f[i+1], 10, 64)
	}
	ticks := v[0] + v[1] + v[2] + v[5] + v[6] + v[7]
	return time.Duration(ticks) * time.Second / clockTicks, time.Duration(v[7]) * time.Second / clockTicks
}

// appendOp returns an Op appending one size-byte entry per call to
// context ids[w] through conn, each with a new request id taken from reqs:
// one counter for every step of a run, so that no append repeats an
// earlier one's request id (the cell would answer it from its dedup
// window instead of writing).
func appendOp(conn *grpc.ClientConn, ids []string, size int, reqs *atomic.Uint64) Op {
	c := contextv1.NewContextServiceClient(conn)
	data := payload(size)
	return func(ctx context.Context, w int) error {
		_, err := c.Append(ctx, &contextv1.AppendRequest{
			ContextId: ids[w],
			Entries:   []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Data{Data: data}}},
			RequestId: "append-" + strconv.FormatUint(reqs.Add(1), 10),
		})
		return err
	}
}

// tenantCtx is ctx with the bench tenant in the metadata.
func tenantCtx(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "x-cellplane-tenant", benchTenant)
}

// procBase is the set-up the router and MCP benchmarks' per-process modes
// share: the bench's etcd (one member in this process, fsync off: no etcd
// write is measured), the topo store on it, and a cell of 3 `cellplane
// cell --insecure` processes published in it.
type procBase struct {
	etcd         *etcdserver.Server
	st           *etcdtopo.Store
	env          *procEnv
	cell         *procSystem
	termStart    uint64 // the cell's Raft term once it is up
	etcdStartSec float64
	cellStartSec float64
}

// startProcBase starts a procBase; on error nothing is left running.
func startProcBase(ctx context.Context, root, bin string, logger *slog.Logger, p progress) (_ *procBase, err error) {
	b := &procBase{}
	defer func() {
		if err != nil {
			b.close()
		}
	}()
	t0 := time.Now()
	if b.etcd, err = startSingleEtcd(ctx, filepath.Join(root, "etcd"), PlacementOptions{UnsafeNoFsync: true, Logger: logger}); err != nil {
		return nil, err
	}
	ecfg := etcdtopo.DefaultConfig()
	ecfg.Endpoints = b.etcd.Endpoints()
	if b.st, err = etcdtopo.Dial(ctx, ecfg); err != nil {
		return nil, fmt.Errorf("bench: dial etcd: %w", err)
	}
	b.etcdStartSec = time.Since(t0).Seconds()

	b.env = &procEnv{bin: bin, dir: root, p: p, https: &http.Client{Timeout: 5 * time.Second}}
	p.printf("starting 3 cell processes (plaintext)")
	t0 = time.Now()
	if b.cell, err = b.env.startProcCell(ctx, "warn"); err != nil {
		return nil, err
	}
	b.cellStartSec = time.Since(t0).Seconds()
	if b.termStart, err = procCellTerm(ctx, b.cell); err != nil {
		return nil, err
	}
	if err := publishProcCell(ctx, b.st, b.cell); err != nil {
		return nil, err
	}
	return b, nil
}

// close stops the cell, then the store, then etcd.
func (b *procBase) close() {
	if b.cell != nil {
		b.cell.close()
	}
	if b.st != nil {
		_ = b.st.Close()
	}
	if b.etcd != nil {
		b.etcd.Close()
	}
}
