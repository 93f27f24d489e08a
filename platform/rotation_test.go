package platform_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	"github.com/cellplane/cellplane/platform"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// TestRotationUnderLoad rotates the CA and every leaf of a MutualTLS
// platform (1 region × 1 cell × 3 nodes, router, control plane) while a
// writer appends through the router, an operator calls the control plane
// and the nodes (on its long-lived connection and on a new connection per
// call, so that handshakes happen in every phase) and Raft replicates:
//
//  1. RotateCA: every component trusts both CAs (each port accepts a
//     client certificate of the new CA);
//  2. ReissueCerts: every component presents a leaf of the new CA (each
//     port serves one; the router's and the operator's material holds one);
//  3. FinishCARotation: the old CA is dropped; each port refuses a
//     certificate of the old CA, and a follower restarted now rejoins Raft
//     with the new material alone and catches up.
//
// Then: every write was acknowledged and reads back once, in order; the
// writer's failed attempts are only retryable ones the client's retry
// absorbed (at most Config.MaxAttempts−1 = 3 per call; none expected);
// the operator's calls all succeeded; all three nodes applied the same
// log; and a plaintext connection to every TLS port (nodes' gRPC and Raft,
// the control plane) is refused.
func TestRotationUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a platform")
	}
	const reload = 100 * time.Millisecond
	cfg := platform.DefaultConfig()
	cfg.Name = "rot"
	cfg.DataDir = t.TempDir()
	cfg.Regions, cfg.CellsPerRegion, cfg.NodesPerCell = []string{"us-east"}, 1, 3
	cfg.MutualTLS = true
	cfg.TLSReloadInterval = reload
	cfg.Node.MCPDisabled = true
	cfg.Node.RegistryTTL = time.Second
	cfg.Controller.RetryMin, cfg.Controller.RetryMax = 10*time.Millisecond, 200*time.Millisecond
	cfg.ShutdownTimeout = 5 * time.Second
	cfg.Logger = testutil.Logger(t)
	cfg.EtcdUnsafeNoFsync = true
	ctx := testutil.Context(t, 2*time.Minute)
	p, err := platform.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	cell := p.Cell("us-east-a")
	dir := p.CertsDir()

	// The old CA's certificates, kept aside for step 3.
	oldCA, err := pki.LoadCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	nodeID := func(n *platform.Node) pki.Identity {
		return pki.NodeIdentity(cfg.Name, n.Info().Region, n.Info().Cell, n.ID())
	}
	opID := pki.OperatorIdentity(cfg.Name, pki.RoleAdmin, platform.AdminOperator)
	oldOp, oldNode := issue(t, oldCA, opID), issue(t, oldCA, nodeID(cell.Nodes()[0]))

	// The ports that serve mutual TLS: gRPC ports take the operator's
	// certificate, Raft ports a node's of the cell.
	type port struct {
		name, addr string
		raft       bool
	}
	ports := []port{{name: "controlplane", addr: p.ControlPlaneAddr()}}
	for _, n := range cell.Nodes() {
		ports = append(ports, port{name: n.ID() + " grpc", addr: n.Info().GRPC}, port{name: n.ID() + " raft", addr: n.Info().Raft, raft: true})
	}

	// Placement skips a cell that is not HEALTHY; under load a cell can
	// lose its leader for a moment right after the start.
	if err := p.WaitHealthy(ctx, "us-east-a"); err != nil {
		t.Fatal(err)
	}
	if _, err := p.Admin().CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"}); err != nil {
		t.Fatal(err)
	}

	// The writer: the Go client through the router, its attempts counted
	// by an interceptor on its router connection.
	var attempts, failedAttempts atomic.Int64
	var failMu sync.Mutex
	var attemptErrs []error
	ccfg := client.DefaultConfig()
	ccfg.Router, ccfg.Tenant, ccfg.Direct = p.RouterAddr(), "acme", false
	ccfg.Logger = testutil.Logger(t)
	ccfg.DialOptions = append(ccfg.DialOptions, grpc.WithChainUnaryInterceptor(
		func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
			err := invoker(ctx, method, req, reply, cc, opts...)
			if method == contextv1.ContextService_Append_FullMethodName {
				attempts.Add(1)
				if err != nil {
					failedAttempts.Add(1)
					failMu.Lock()
					attemptErrs = append(attemptErrs, rpcerr.FromStatus(err))
					failMu.Unlock()
				}
			}
			return err
		}))
	cl, err := client.New(ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	data := cl.Context()
	testutil.Eventually(t, 30*time.Second, func() error {
		_, err := data.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "chat"})
		if err == nil || errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) {
			return nil
		}
		return err
	})

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var acked atomic.Int64
	var writeErr atomic.Pointer[error]
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			_, err := data.Append(cctx, &contextv1.AppendRequest{ContextId: "chat",
				Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: entryText(i)}}}})
			cancel()
			if err != nil {
				err = fmt.Errorf("append %d: %w", i, err)
				writeErr.Store(&err)
				return
			}
			acked.Add(1)
		}
	})

	// The operator: the platform's long-lived admin connection, and a new
	// connection per call to the control plane and to each running node,
	// presenting the admin operator's certificate as it is on disk.
	opCfg := pki.DirConfig(dir, opID.FileName())
	opCfg.ReloadInterval, opCfg.Logger = reload, testutil.Logger(t)
	opSrc, err := pki.NewSource(opCfg)
	if err != nil {
		t.Fatal(err)
	}
	var opCalls, opFails atomic.Int64
	var opErr atomic.Value
	var restarting atomic.Pointer[platform.Node]
	opFail := func(err error) {
		opFails.Add(1)
		opErr.Store(err)
	}
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := p.Admin().GetStatus(ctx, &cpv1.GetStatusRequest{}); err != nil {
				opFail(fmt.Errorf("admin connection: %w", err))
			}
			opCalls.Add(1)
			if err := freshCall(ctx, p.ControlPlaneAddr(), opSrc, pki.KindControlPlane, func(ctx context.Context, cc *grpc.ClientConn) error {
				_, err := cpv1.NewControlPlaneServiceClient(cc).ListTenants(ctx, &cpv1.ListTenantsRequest{})
				return err
			}); err != nil {
				opFail(fmt.Errorf("new connection to the control plane: %w", err))
			}
			opCalls.Add(1)
			for _, n := range cell.Nodes() {
				if restarting.Load() == n {
					continue
				}
				if err := freshCall(ctx, n.Info().GRPC, opSrc, pki.KindNode, func(ctx context.Context, cc *grpc.ClientConn) error {
					_, err := cellv1.NewCellServiceClient(cc).GetStatus(ctx, &cellv1.GetStatusRequest{})
					return err
				}); err != nil && restarting.Load() != n {
					opFail(fmt.Errorf("new connection to %s: %w", n.ID(), err))
				}
				opCalls.Add(1)
			}
		}
	})
	stopLoad := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopLoad()
	progress := func(what string) {
		t.Logf("%s: %d writes acknowledged, %d operator calls", what, acked.Load(), opCalls.Load())
	}
	// Some load before anything changes.
	atLeast := func(n int64) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, func() error {
			if writeErr.Load() != nil {
				return nil // reported below
			}
			if got := acked.Load(); got < n {
				return fmt.Errorf("%d writes acknowledged, want %d", got, n)
			}
			return nil
		})
		if err := writeErr.Load(); err != nil {
			t.Fatalf("a write failed: %v", *err)
		}
	}
	atLeast(20)
	progress("before the rotation")

	// 1. A new CA; the bundle trusts both.
	newCACert, err := p.RotateCA()
	if err != nil {
		t.Fatal(err)
	}
	newCA, err := pki.LoadCA(dir)
	if err != nil || !newCA.Cert.Equal(newCACert) {
		t.Fatalf("LoadCA after RotateCA: %v", err)
	}
	newOp, newNode := issue(t, newCA, opID), issue(t, newCA, nodeID(cell.Nodes()[0]))
	testutil.Eventually(t, 20*time.Second, func() error {
		for name, st := range p.TLSStates() {
			if len(st.CAs) != 2 {
				return fmt.Errorf("%s trusts %d CAs, want 2", name, len(st.CAs))
			}
		}
		for _, pt := range ports {
			cert := newOp
			if pt.raft {
				cert = newNode
			}
			if _, err := probe(pt.addr, cert, pt.raft); err != nil {
				return fmt.Errorf("%s refuses a certificate of the new CA: %w", pt.name, err)
			}
		}
		return nil
	})
	atLeast(acked.Load() + 20)
	progress("both CAs trusted")

	// 2. Every leaf from the new CA.
	names, err := p.ReissueCerts()
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 6 { // control plane, router, 3 nodes, operator
		t.Fatalf("ReissueCerts replaced %v", names)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		for name, st := range p.TLSStates() {
			if err := st.Leaf.CheckSignatureFrom(newCA.Cert); err != nil {
				return fmt.Errorf("%s still presents a leaf of the old CA", name)
			}
		}
		for _, pt := range ports {
			cert := newOp
			if pt.raft {
				cert = newNode
			}
			served, err := probe(pt.addr, cert, pt.raft)
			if err != nil {
				return fmt.Errorf("%s: %w", pt.name, err)
			}
			if err := served.CheckSignatureFrom(newCA.Cert); err != nil {
				return fmt.Errorf("%s serves a leaf of the old CA", pt.name)
			}
		}
		if err := opSrc.Certificate().CheckSignatureFrom(newCA.Cert); err != nil {
			return errors.New("the operator's source still holds a leaf of the old CA")
		}
		return nil
	})
	atLeast(acked.Load() + 20)
	progress("every leaf from the new CA")

	// 3. The old CA dropped: its certificates are refused everywhere.
	if err := p.FinishCARotation(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		for name, st := range p.TLSStates() {
			if len(st.CAs) != 1 || !st.CAs[0].Equal(newCA.Cert) {
				return fmt.Errorf("%s trusts %d CAs, want the new one only", name, len(st.CAs))
			}
		}
		for _, pt := range ports {
			cert := oldOp
			if pt.raft {
				cert = oldNode
			}
			if _, err := probe(pt.addr, cert, pt.raft); !errors.Is(err, errRefused) {
				return fmt.Errorf("%s: a certificate of the old CA: %v, want refused", pt.name, err)
			}
		}
		return nil
	})
	progress("old CA dropped")

	// A follower restarted now makes every Raft and gRPC connection anew,
	// with the new material alone, and catches up.
	leader, err := cell.WaitLeader(ctx, 1<<62)
	if err != nil {
		t.Fatal(err)
	}
	var follower *platform.Node
	for _, n := range cell.Nodes() {
		if n != leader {
			follower = n
			break
		}
	}
	restarting.Store(follower)
	follower.Stop()
	atLeast(acked.Load() + 20)
	if err := follower.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	_, err = cell.WaitLeader(wctx, 100) // within 100 entries of a leader that goes on writing
	cancel()
	if err != nil {
		t.Fatalf("the restarted follower does not catch up: %v", err)
	}
	restarting.Store(nil)
	atLeast(acked.Load() + 20)
	progress("follower restarted")

	stopLoad()
	if err := writeErr.Load(); err != nil {
		t.Fatalf("a write failed: %v", *err)
	}
	if n := opFails.Load(); n != 0 {
		t.Fatalf("%d of %d operator calls failed; last: %v", n, opCalls.Load(), opErr.Load())
	}
	failMu.Lock()
	for _, err := range attemptErrs {
		if !retry.Allowed(retry.Idempotent, err) {
			t.Errorf("an append attempt failed with a non-retryable error: %v", err)
		}
	}
	failMu.Unlock()
	n := acked.Load()
	t.Logf("%d writes acknowledged in %d attempts (%d failed and retried); %d operator calls", n, attempts.Load(), failedAttempts.Load(), opCalls.Load())
	if f := failedAttempts.Load(); f > 3*n {
		t.Fatalf("%d failed attempts for %d writes: more than the client's MaxAttempts-1 per call", f, n)
	}

	// Every acknowledged write, once, in order.
	var got []string
	for from := uint64(1); ; {
		resp, err := data.Read(ctx, &contextv1.ReadRequest{ContextId: "chat", Start: &contextv1.ReadRequest_FromSeq{FromSeq: from}})
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range resp.GetEntries() {
			got = append(got, e.GetText())
		}
		if len(resp.GetEntries()) == 0 || resp.GetNextSeq() > resp.GetLastSeq() {
			break
		}
		from = resp.GetNextSeq()
	}
	if int64(len(got)) != n {
		t.Fatalf("read back %d entries, %d writes acknowledged", len(got), n)
	}
	for i, text := range got {
		if text != entryText(i) {
			t.Fatalf("entry %d is %q, want %q", i, text, entryText(i))
		}
	}

	// Raft kept replicating: every node applied the leader's log.
	leader, err = cell.WaitLeader(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 20*time.Second, func() error {
		want := leader.Node().Store().Status().AppliedIndex
		for _, n := range cell.Nodes() {
			if got := n.Node().Store().Status().AppliedIndex; got != want {
				return fmt.Errorf("%s applied %d, the leader %d", n.ID(), got, want)
			}
		}
		return nil
	})

	// No plaintext: a plaintext gRPC call and a plaintext Raft connection
	// get nothing but a refusal.
	for _, pt := range ports {
		kind := "grpc"
		switch {
		case pt.raft:
			kind = "raft"
		case pt.addr == p.ControlPlaneAddr():
			kind = "controlplane"
		}
		if err := plaintext(ctx, pt.addr, kind); err != nil {
			t.Errorf("%s: %v", pt.name, err)
		}
	}
}

func entryText(i int) string { return fmt.Sprintf("entry-%06d", i) }

// issue returns a TLS certificate of id signed by ca.
func issue(t *testing.T, ca *pki.CA, id pki.Identity) tls.Certificate {
	t.Helper()
	leaf, err := ca.Issue(pki.LeafRequest{Identity: id})
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leaf.Cert.Raw}, PrivateKey: leaf.Key, Leaf: leaf.Cert}
}

// freshCall calls fn on a new connection to addr presenting src's
// certificate and accepting a server of kind want, then closes it.
func freshCall(ctx context.Context, addr string, src *pki.Source, want pki.Kind, fn func(context.Context, *grpc.ClientConn) error) error {
	cc, err := dial.New(addr, dial.Config{Credentials: pki.ClientCredentials(src, pki.ExpectKinds(want))})
	if err != nil {
		return err
	}
	defer cc.Close()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return fn(cctx, cc)
}

// errRefused is a handshake the server refused (a TLS alert).
var errRefused = errors.New("refused by the server")

// probe makes a TLS handshake with addr presenting cert and returns the
// certificate the server presented, or errRefused when the server refuses
// cert. A gRPC server that accepts sends its HTTP/2 settings at once; a
// Raft server that accepts waits for an RPC, so for raft a read that
// times out means accepted.
func probe(addr string, cert tls.Certificate, raft bool) (*x509.Certificate, error) {
	d := &net.Dialer{Timeout: 5 * time.Second}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // the test checks the served certificate itself
		Certificates:       []tls.Certificate{cert},
	}
	if !raft {
		cfg.NextProtos = []string{"h2"}
	}
	conn, err := tls.DialWithDialer(d, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	served := conn.ConnectionState().PeerCertificates[0]
	wait := 5 * time.Second
	if raft {
		wait = 300 * time.Millisecond
	}
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	var b [1]byte
	_, err = conn.Read(b[:])
	var op *net.OpError
	var ne net.Error
	switch {
	case err == nil:
		return served, nil
	case raft && errors.As(err, &ne) && ne.Timeout():
		return served, nil
	case errors.As(err, &op) && op.Op == "remote error": // crypto/tls's only mark of a peer's alert
		return served, fmt.Errorf("%w: %v", errRefused, err)
	case errors.Is(err, io.EOF):
		return served, fmt.Errorf("%w: closed", errRefused)
	default:
		return served, err
	}
}

// plaintext checks that addr answers a plaintext client with nothing
// but a refusal: a gRPC call (ControlPlaneService on the control plane,
// CellService on a node) fails with UNAVAILABLE, the connection never
// established; a Raft RPC byte gets no more than a TLS alert record
// (content type 21) and a close.
func plaintext(ctx context.Context, addr string, kind string) error {
	if kind != "raft" {
		cc, err := dial.New(addr, dial.Config{})
		if err != nil {
			return err
		}
		defer cc.Close()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		if kind == "controlplane" {
			_, err = cpv1.NewControlPlaneServiceClient(cc).ListTenants(cctx, &cpv1.ListTenantsRequest{})
		} else {
			_, err = cellv1.NewCellServiceClient(cc).GetStatus(cctx, &cellv1.GetStatusRequest{})
		}
		if status.Code(err) != codes.Unavailable {
			return fmt.Errorf("a plaintext gRPC call: %v, want UNAVAILABLE (no connection)", err)
		}
		return nil
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	// rpcAppendEntries (0), then a msgpack map header: a Raft RPC's start.
	if _, err := conn.Write([]byte{0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}); err != nil {
		return nil // closed already
	}
	got, err := io.ReadAll(conn)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("the connection stayed open after a plaintext Raft RPC (read %d bytes)", len(got))
	}
	if len(got) > 0 && got[0] != 21 {
		return fmt.Errorf("answered a plaintext Raft RPC with %x", got)
	}
	return nil
}
