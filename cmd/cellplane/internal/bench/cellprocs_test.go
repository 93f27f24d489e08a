package bench

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func TestRoundRatios(t *testing.T) {
	fs := Result{OpsPerSec: 1000, Latency: Latency{P50: 0.2}}
	by := map[string]Result{
		"cell/1":  {OpsPerSec: 500, Latency: Latency{P50: 0.6}},
		"cell/64": {OpsPerSec: 4000},
		"etcd/64": {OpsPerSec: 2000},
		"raft/64": {OpsPerSec: 5000},
	}
	got := roundRatios(fs, by)
	want := map[string]float64{RatioWritesVsEtcd: 2, RatioWritesVsRaftFloor: 0.8, RatioWritesVsFsync: 4, RatioWriteP50VsFsync: 3}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	// A missing baseline leaves its ratio out rather than reporting 0 or Inf.
	delete(by, "raft/64")
	if _, ok := roundRatios(fs, by)[RatioWritesVsRaftFloor]; ok {
		t.Error("writes_vs_raft_floor without a raft step")
	}
}

func TestMedianRatios(t *testing.T) {
	round := func(noisy bool, etcd float64) CellRound {
		return CellRound{Noisy: noisy, Ratios: map[string]float64{RatioWritesVsEtcd: etcd}}
	}
	tests := []struct {
		name     string
		rounds   []CellRound
		want     float64
		used     int
		allNoisy bool
	}{
		{"quiet rounds only", []CellRound{round(false, 1), round(true, 9), round(false, 3), round(false, 2)}, 2, 3, false},
		{"even count", []CellRound{round(false, 1), round(false, 2)}, 1.5, 2, false},
		{"every round noisy", []CellRound{round(true, 1), round(true, 5), round(true, 4)}, 4, 3, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := &CellResults{Rounds: tc.rounds, Reads: []Result{{Name: readLinHalf, Ops: 1, Latency: Latency{P99: 1.5}}}}
			got := medianRatios(res)
			if got[RatioWritesVsEtcd] != tc.want || res.RoundsUsed != tc.used || res.NoisyRatios != tc.allNoisy {
				t.Errorf("ratio %v used %d noisy %v, want %v %d %v", got[RatioWritesVsEtcd], res.RoundsUsed, res.NoisyRatios, tc.want, tc.used, tc.allNoisy)
			}
			if got[RatioLinReadP99AtHalf] != 1.5 {
				t.Errorf("lin read = %v", got[RatioLinReadP99AtHalf])
			}
		})
	}
}

func TestScrapeSumsLabelSets(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, `# HELP etcd_disk_wal_fsync_duration_seconds_count x
etcd_disk_wal_fsync_duration_seconds_count 7
cellplane_store_proposal_batch_size_sum{cell="c1"} 30
cellplane_store_proposal_batch_size_sum{cell="c2",x="a b"} 12.5
cellplane_store_proposal_batch_size_count 4
other_metric 99
`)
	}))
	defer srv.Close()
	e := &procEnv{https: srv.Client()}
	got := e.scrape(srv.URL, metricEtcdFsyncs, metricCellBatchSum, metricCellBatchCount)
	want := map[string]float64{metricEtcdFsyncs: 7, metricCellBatchSum: 42.5, metricCellBatchCount: 4}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("got %v", got)
	}
}

func TestFillProcFigures(t *testing.T) {
	t0 := time.Now()
	a := counters{at: t0, members: time.Second, ours: 2 * time.Second, busy: 10 * time.Second,
		leader: map[string]float64{metricRaftEntries: 10, metricRaftApplied: 10}, sum: map[string]float64{metricRaftStoreLogs: 5}}
	b := counters{at: t0.Add(2 * time.Second), members: 2 * time.Second, ours: 4 * time.Second, busy: 13 * time.Second, steal: 200 * time.Millisecond,
		leader: map[string]float64{metricRaftEntries: 110, metricRaftApplied: 210}, sum: map[string]float64{metricRaftStoreLogs: 105}}
	r := Result{Ops: 1000}
	fillProcFigures(&r, sysRaft, a, b)
	if r.MemberCPUCores != 0.5 || r.MemberCPUPerOpUs != 1000 || r.ForeignCores != 0.5 || r.StealCores != 0.1 ||
		r.FsyncsPerWrite != 0.1 || r.CommandsPerEntry != 2 {
		t.Errorf("%+v", r)
	}
}

func TestMachineCPU(t *testing.T) {
	if _, err := os.Stat("/proc/stat"); err != nil {
		t.Skip("no /proc/stat")
	}
	busy, steal := machineCPU()
	if busy <= 0 || steal < 0 || steal > busy {
		t.Errorf("busy %v steal %v", busy, steal)
	}
}

// TestRaftMember runs the bare-Raft floor's three members in this process:
// an Append through the leader's gRPC front is committed and applied, its
// /metrics counts the log writes, and a caller or a Raft peer without a
// certificate of the cluster is refused.
func TestRaftMember(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 3 Raft members")
	}
	dir := t.TempDir()
	bp, err := newBenchPKI(filepath.Join(dir, "certs"), 3)
	if err != nil {
		t.Fatal(err)
	}
	addrs, err := loopbackAddrs(9)
	if err != nil {
		t.Fatal(err)
	}
	var peers []store.Peer
	for i := range 3 {
		peers = append(peers, store.Peer{ID: fmt.Sprintf("n%d", i+1), Addr: addrs[3*i]})
	}
	ctx, cancel := context.WithCancel(testutil.Context(t, time.Minute))
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait(); waitNoLeaks(t) }()
	for i := range 3 {
		src, err := pki.NewSource(pki.DirConfig(bp.Dir, pki.NodeIdentity(benchPKICluster, benchRegion, benchCellID, peers[i].ID).FileName()))
		if err != nil {
			t.Fatal(err)
		}
		cfg := RaftMemberConfig{ID: peers[i].ID, DataDir: filepath.Join(dir, peers[i].ID), RaftAddr: addrs[3*i], GRPCAddr: addrs[3*i+1],
			HTTPAddr: addrs[3*i+2], Bootstrap: peers, TLS: src, Logger: quietLogger(t)}
		wg.Go(func() {
			if err := RunRaftMember(ctx, cfg); err != nil {
				t.Error(err)
			}
		})
	}
	env := &procEnv{pki: bp}
	if env.https, err = newTestHTTPS(bp); err != nil {
		t.Fatal(err)
	}
	s := &procSystem{name: sysRaft}
	grpcAddrs := []string{addrs[1], addrs[4], addrs[7]}
	if s.conns, err = env.dialAll(grpcAddrs, bp.Router, pki.KindNode); err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range s.conns {
			c.Close()
		}
	}()
	if err := env.waitGRPCLeader(ctx, s, s.conns); err != nil {
		t.Fatal(err)
	}
	var reqs atomic.Uint64
	op := appendOp(s.conns[s.leader], []string{"c"}, 64, &reqs)
	for range 10 {
		if err := op(ctx, 0); err != nil {
			t.Fatal(err)
		}
	}
	m := env.scrape("https://"+addrs[3*s.leader+2]+"/metrics", metricRaftApplied, metricRaftStoreLogs)
	if m[metricRaftApplied] < 10 || m[metricRaftStoreLogs] < 1 {
		t.Errorf("leader metrics %v", m)
	}

	// A caller without a client certificate is refused.
	cfg := dial.DefaultConfig()
	cfg.Credentials = credentials.NewTLS(noClientCert(bp))
	conn, err := dial.New(grpcAddrs[s.leader], cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	before := m[metricRaftApplied]
	if _, err := contextv1.NewContextServiceClient(conn).Append(ctx, &contextv1.AppendRequest{ContextId: "x"}); err == nil {
		t.Error("an Append without a client certificate was accepted")
	}
	if _, err := cellv1.NewCellServiceClient(conn).GetStatus(ctx, &cellv1.GetStatusRequest{}); err == nil {
		t.Error("a GetStatus without a client certificate was accepted")
	}
	if got := env.scrape("https://"+addrs[3*s.leader+2]+"/metrics", metricRaftApplied)[metricRaftApplied]; got != before {
		t.Errorf("applied %v after the refused call, want %v", got, before)
	}
	// A Raft peer presenting a router certificate (not a node's) is refused.
	c, err := tlsDial(addrs[3*s.leader], bp.Router.ClientTLSConfig(pki.ExpectKinds(pki.KindNode)))
	if err == nil {
		buf := make([]byte, 1)
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, rerr := c.Read(buf); rerr == nil {
			t.Error("a Raft connection with a router certificate was kept")
		}
		c.Close()
	}
}

// recordingContexts records the request ids of the Appends it is sent.
type recordingContexts struct {
	contextv1.UnimplementedContextServiceServer
	mu  sync.Mutex
	ids []string
}

func (r *recordingContexts) Append(_ context.Context, req *contextv1.AppendRequest) (*contextv1.AppendResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ids = append(r.ids, req.GetRequestId())
	return &contextv1.AppendResponse{}, nil
}

// TestAppendOpsNeverRepeatARequestID: every step of a run makes its own
// append Op; a request id repeated from an earlier step would be answered
// from the cell's dedup window, not written.
func TestAppendOpsNeverRepeatARequestID(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingContexts{}
	gs := grpc.NewServer()
	contextv1.RegisterContextServiceServer(gs, rec)
	go func() { _ = gs.Serve(lis) }()
	defer gs.Stop()
	conn, err := dial.New(lis.Addr().String(), dial.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	ctx := testutil.Context(t, 30*time.Second)
	var reqs atomic.Uint64
	for range 3 { // three steps
		op := appendOp(conn, []string{"c0", "c1"}, 16, &reqs)
		for w := range 2 {
			if err := op(ctx, w); err != nil {
				t.Fatal(err)
			}
		}
	}
	seen := map[string]bool{}
	for _, id := range rec.ids {
		if seen[id] {
			t.Errorf("request id %s sent twice: %v", id, rec.ids)
		}
		seen[id] = true
	}
	if len(rec.ids) != 6 {
		t.Errorf("%d appends recorded, want 6", len(rec.ids))
	}
}
