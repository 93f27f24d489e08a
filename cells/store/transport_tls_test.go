package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

// The Raft transport's mutual TLS (security finding C4), over real TCP on
// 127.0.0.1 with real Raft.

const (
	tlsCluster = "test"
	tlsRegion  = "eu"
	tlsCell    = "c1"
)

// newTestCA returns a CA of the test cluster.
func newTestCA(t *testing.T) *pki.CA {
	t.Helper()
	ca, err := pki.NewCA(tlsCluster, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// certDir is a certs directory trusting one CA and holding one identity.
type certDir struct {
	dir string
	id  pki.Identity
	src *pki.Source
}

// newCertDir writes ca.crt and a certificate of ca for id into a fresh
// directory and opens a Source on it (reloaded only by Reload).
func newCertDir(t *testing.T, ca *pki.CA, id pki.Identity) *certDir {
	t.Helper()
	d := &certDir{dir: t.TempDir(), id: id}
	if err := os.WriteFile(filepath.Join(d.dir, pki.CACertFile), pki.EncodeCerts(ca.Cert), 0o644); err != nil {
		t.Fatal(err)
	}
	d.issue(t, ca)
	cfg := pki.DirConfig(d.dir, id.FileName())
	cfg.ReloadInterval = 0
	cfg.Logger = testLogger(t)
	src, err := pki.NewSource(cfg)
	if err != nil {
		t.Fatal(err)
	}
	d.src = src
	return d
}

// issue replaces the directory's certificate with a new one of ca for the
// same identity, and returns it.
func (d *certDir) issue(t *testing.T, ca *pki.CA) *pki.Leaf {
	t.Helper()
	leaf, err := ca.Issue(pki.LeafRequest{Identity: d.id, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(d.dir, d.id.FileName(), leaf, true); err != nil {
		t.Fatal(err)
	}
	return leaf
}

func nodeID(cell, node string) pki.Identity {
	return pki.NodeIdentity(tlsCluster, tlsRegion, cell, node)
}

// tlsTestCell is a 3-node cell, with TLS when certs are given.
type tlsTestCell struct {
	stores []*Store
	addrs  []string
	certs  []*certDir
}

// openTLSCell opens a 3-node cell n1..n3 (with certs[i] as node i's TLS
// material when certs is not nil) and waits for a ready leader.
func openTLSCell(t *testing.T, certs []*certDir, mutate ...func(*Config)) *tlsTestCell {
	t.Helper()
	c := &tlsTestCell{certs: certs}
	var lns []net.Listener
	var peers []Peer
	for i := range 3 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		c.addrs = append(c.addrs, ln.Addr().String())
		peers = append(peers, Peer{ID: fmt.Sprintf("n%d", i+1), Addr: ln.Addr().String()})
	}
	for i := range 3 {
		cfg := DefaultConfig()
		cfg.NodeID = peers[i].ID
		cfg.RaftListener = lns[i]
		cfg.DataDir = t.TempDir()
		cfg.Bootstrap = peers
		cfg.Raft.HeartbeatTimeout = 200 * time.Millisecond
		cfg.Raft.ElectionTimeout = 200 * time.Millisecond
		cfg.Raft.LeaderLeaseTimeout = 100 * time.Millisecond
		cfg.Raft.CommitTimeout = 5 * time.Millisecond
		cfg.Logger = testLogger(t).With("n", peers[i].ID)
		if certs != nil {
			cfg.TLS = certs[i].src
		}
		for _, m := range mutate {
			m(&cfg)
		}
		s, err := Open(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		c.stores = append(c.stores, s)
	}
	c.leader(t)
	return c
}

// leader waits for a leader that applied its term's barrier and returns
// its index.
func (c *tlsTestCell) leader(t *testing.T) int {
	t.Helper()
	idx := -1
	testutil.Eventually(t, 20*time.Second, func() error {
		for i, s := range c.stores {
			if s.IsLeader() && s.readyTerm.Load() == s.raft.CurrentTerm() {
				idx = i
				return nil
			}
		}
		return errors.New("no ready leader")
	})
	return idx
}

// follower returns the index of a node that is not the leader.
func (c *tlsTestCell) follower(t *testing.T) int {
	return (c.leader(t) + 1) % 3
}

// write proposes tenant's creation on the leader and waits until every
// node applied it.
func (c *tlsTestCell) write(t *testing.T, tenant string) {
	t.Helper()
	l := c.stores[c.leader(t)]
	mustPropose(t, l, setTenant(tenant, owner, 1))
	want := l.fsm.applied.Load()
	testutil.Eventually(t, 10*time.Second, func() error {
		for i, s := range c.stores {
			if got := s.fsm.applied.Load(); got < want {
				return fmt.Errorf("n%d applied %d, want %d", i+1, got, want)
			}
		}
		return nil
	})
}

// refused reads a store's refused-connections counter.
func refused(s *Store, side, reason string) float64 {
	return vecValue(s.metrics.raftConnsRefused, side, reason)
}

func vecValue(v *prometheus.CounterVec, labels ...string) float64 {
	var m dto.Metric
	if err := v.WithLabelValues(labels...).Write(&m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

// cellCerts issues the certificates of n1..n3 of cell c1 from ca.
func cellCerts(t *testing.T, ca *pki.CA) []*certDir {
	var out []*certDir
	for i := range 3 {
		out = append(out, newCertDir(t, ca, nodeID(tlsCell, fmt.Sprintf("n%d", i+1))))
	}
	return out
}

func TestRaftTLSCellElectsAndReplicates(t *testing.T) {
	c := openTLSCell(t, cellCerts(t, newTestCA(t)))
	c.write(t, "acme")
	for i, s := range c.stores {
		if n := s.fsm.tenantCount(); n != 1 {
			t.Errorf("n%d holds %d tenants, want 1", i+1, n)
		}
	}
	// The connections Raft uses are TLS, and no peer was refused.
	for i, s := range c.stores {
		s.layer.mu.Lock()
		for conn := range s.layer.accepted {
			if _, ok := conn.(*trackedConn).Conn.(*tls.Conn); !ok {
				t.Errorf("n%d accepted a %T, want *tls.Conn", i+1, conn.(*trackedConn).Conn)
			}
		}
		s.layer.mu.Unlock()
		for _, side := range []string{sideInbound, sideOutbound} {
			for _, r := range []string{reasonIdentity, reasonHandshake, reasonUnknownCA, reasonNoCertificate} {
				if n := refused(s, side, r); n != 0 {
					t.Errorf("n%d refused %v %s connections (%s)", i+1, n, side, r)
				}
			}
		}
	}
}

// attackStream is a raft.StreamLayer for a forger: plain TCP, or TLS with
// cfg (which decides what certificate it shows and what it checks).
type attackStream struct {
	net.Listener
	cfg *tls.Config
}

func (a *attackStream) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if a.cfg == nil {
		return d.Dial("tcp", string(addr))
	}
	return tls.DialWithDialer(d, "tcp", string(addr), a.cfg)
}

// forger sends Raft RPCs through a NetworkTransport on stream.
func forger(t *testing.T, stream raft.StreamLayer) *raft.NetworkTransport {
	t.Helper()
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream: stream, MaxPool: 1, Timeout: 2 * time.Second, Logger: hclog.NewNullLogger(),
	})
	t.Cleanup(func() { trans.Close() })
	return trans
}

// forgedTermStep is how far a forger jumps the term. Any higher term
// works against an unprotected node; a large one cannot be mistaken for
// an election the test's loaded machine might cause.
const forgedTermStep = 1000

// forgeAppend sends target, as a leader of a newer term would, an
// AppendEntries that commits one new entry creating tenant "evil".
func forgeAppend(t *testing.T, trans *raft.NetworkTransport, target *Store, addr string) error {
	t.Helper()
	last := target.raft.LastIndex()
	var prev raft.Log
	if err := target.wal.GetLog(last, &prev); err != nil {
		t.Fatal(err)
	}
	term := target.raft.CurrentTerm() + forgedTermStep
	cmd := setTenant("evil", owner, 1)
	cmd.Version, cmd.TimeUnixNano = commandVersion, time.Now().UnixNano()
	req := &raft.AppendEntriesRequest{
		RPCHeader:    raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("evil"), Addr: []byte(trans.LocalAddr())},
		Term:         term,
		PrevLogEntry: last, PrevLogTerm: prev.Term,
		Entries:           []*raft.Log{{Index: last + 1, Term: term, Type: raft.LogCommand, Data: encodeBatch(t, cmd)}},
		LeaderCommitIndex: last + 1,
	}
	var resp raft.AppendEntriesResponse
	return trans.AppendEntries(raft.ServerID(target.cfg.NodeID), raft.ServerAddress(addr), req, &resp)
}

// forgeSnapshot sends target an InstallSnapshot of a newer term.
func forgeSnapshot(t *testing.T, trans *raft.NetworkTransport, target *Store, addr string) error {
	t.Helper()
	data := []byte("not a snapshot")
	term := target.raft.CurrentTerm() + forgedTermStep
	req := &raft.InstallSnapshotRequest{
		RPCHeader:          raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte("evil"), Addr: []byte(trans.LocalAddr())},
		SnapshotVersion:    raft.SnapshotVersionMax,
		Term:               term,
		LastLogIndex:       target.raft.LastIndex() + 100,
		LastLogTerm:        term,
		Size:               int64(len(data)),
		ConfigurationIndex: 1,
	}
	var resp raft.InstallSnapshotResponse
	return trans.InstallSnapshot(raft.ServerID(target.cfg.NodeID), raft.ServerAddress(addr), req, &resp, strings.NewReader(string(data)))
}

// raftState is what a forged RPC would change.
type raftState struct {
	term, applied, last, tenants uint64
}

func stateOf(s *Store) raftState {
	return raftState{term: s.raft.CurrentTerm(), applied: s.fsm.applied.Load(), last: s.raft.LastIndex(), tenants: s.fsm.tenantCount()}
}

func totalRefused(s *Store, side string) float64 {
	var n float64
	for _, r := range []string{reasonIdentity, reasonNoCertificate, reasonUnknownCA, reasonExpired, reasonBadCert, reasonTimeout, reasonHandshake, reasonOverload} {
		n += refused(s, side, r)
	}
	return n
}

// TestRaftForgedRPCsChangeNothingWithTLS: a sender that is not a node of
// the cell — plain TCP, TLS without a certificate, a certificate of
// another CA, a node of another cell — sends a follower an AppendEntries
// or InstallSnapshot of a newer term. The follower's term, log and state
// do not move, the connection is refused (counted with the reason), and
// the cell goes on. The control case (no TLS) shows that the same forged
// AppendEntries takes a plain-TCP follower over.
func TestRaftForgedRPCsChangeNothingWithTLS(t *testing.T) {
	t.Run("control: without TLS the forgery is applied", func(t *testing.T) {
		c := openTLSCell(t, nil)
		f := c.follower(t)
		target := c.stores[f]
		before := stateOf(target)
		ln := testutil.Listen(t)
		if err := forgeAppend(t, forger(t, &attackStream{Listener: ln}), target, c.addrs[f]); err != nil {
			t.Fatalf("forged AppendEntries on plain TCP: %v", err)
		}
		testutil.Eventually(t, 10*time.Second, func() error {
			if after := stateOf(target); after.term < before.term+forgedTermStep || after.tenants != before.tenants+1 {
				return fmt.Errorf("follower state %+v, before %+v: forgery not applied", after, before)
			}
			return nil
		})
	})

	ca := newTestCA(t)
	otherCA := newTestCA(t)
	certs := cellCerts(t, ca)
	c := openTLSCell(t, certs)
	c.write(t, "acme")

	// An impostor of n1 signed by another CA of the same cluster name.
	impostor := newCertDir(t, otherCA, nodeID(tlsCell, "n1"))
	// A node of another cell, signed by the cell's own CA.
	stranger := newCertDir(t, ca, nodeID("c2", "n1"))
	// An operator of the cluster.
	operator := newCertDir(t, ca, pki.OperatorIdentity(tlsCluster, pki.RoleAdmin, "alice"))

	cases := []struct {
		name   string
		cfg    func() *tls.Config
		reason string // the follower's inbound refusal
	}{
		{"plain TCP", func() *tls.Config { return nil }, reasonHandshake},
		{"TLS without a certificate", func() *tls.Config {
			return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
		}, reasonNoCertificate},
		{"certificate of another CA", func() *tls.Config {
			// It does not check the server, so the server's check is tested.
			cert, err := tls.LoadX509KeyPair(filepath.Join(impostor.dir, impostor.id.FileName()+".crt"), filepath.Join(impostor.dir, impostor.id.FileName()+".key"))
			if err != nil {
				t.Fatal(err)
			}
			return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{cert}}
		}, reasonUnknownCA},
		{"node of another cell", func() *tls.Config { return stranger.src.ClientTLSConfig(nil) }, reasonIdentity},
		{"operator certificate", func() *tls.Config { return operator.src.ClientTLSConfig(nil) }, reasonIdentity},
	}
	rpcs := []struct {
		name string
		send func(*testing.T, *raft.NetworkTransport, *Store, string) error
	}{{"AppendEntries", forgeAppend}, {"InstallSnapshot", forgeSnapshot}}
	for _, tc := range cases {
		for _, rpc := range rpcs {
			t.Run(tc.name+"/"+rpc.name, func(t *testing.T) {
				f := c.follower(t)
				target := c.stores[f]
				before := stateOf(target)
				refusedBefore := refused(target, sideInbound, tc.reason)
				err := rpc.send(t, forger(t, &attackStream{Listener: testutil.Listen(t), cfg: tc.cfg()}), target, c.addrs[f])
				if err == nil {
					t.Fatal("forged RPC answered")
				}
				testutil.Eventually(t, 5*time.Second, func() error {
					if got := refused(target, sideInbound, tc.reason); got <= refusedBefore {
						return fmt.Errorf("refused{inbound,%s} = %v, want > %v", tc.reason, got, refusedBefore)
					}
					return nil
				})
				if after := stateOf(target); after.term >= before.term+forgedTermStep || after.applied < before.applied || after.tenants != before.tenants || after.last < before.last {
					t.Fatalf("follower state moved: before %+v, after %+v", before, after)
				}
				if target.fsm.tenantCount() != 1 {
					t.Fatalf("follower holds %d tenants, want 1 (acme)", target.fsm.tenantCount())
				}
			})
		}
	}

	t.Run("garbage then close", func(t *testing.T) {
		f := c.follower(t)
		target := c.stores[f]
		before := refused(target, sideInbound, reasonHandshake)
		conn, err := net.Dial("tcp", c.addrs[f])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// rpcAppendEntries (0) and a msgpack map header, as a raw frame.
		if _, err := conn.Write(append([]byte{0, 0x89}, make([]byte, 300)...)); err != nil {
			t.Fatal(err)
		}
		// The follower closes the connection (EOF or a reset, maybe after
		// a TLS alert), and does not wait for more.
		if err := conn.SetReadDeadline(time.Now().Add(5 * time.Second)); err != nil {
			t.Fatal(err)
		}
		var ne net.Error
		if _, err := io.ReadAll(conn); errors.As(err, &ne) && ne.Timeout() {
			t.Fatal("the follower kept the connection open")
		}
		// The refusal is counted as the handshake fails, which may be
		// just after the connection is closed.
		testutil.Eventually(t, 5*time.Second, func() error {
			if got := refused(target, sideInbound, reasonHandshake); got <= before {
				return fmt.Errorf("refused{inbound,handshake} = %v, want > %v", got, before)
			}
			return nil
		})
	})

	// The cell still works, and its leader never lost its term to a forger.
	c.write(t, "acme2")
}

// TestRaftTLSDialToAnotherCellFails: a node of another cell, signed by the
// same CA, dialing with the store's own dialer, is refused on both sides.
func TestRaftTLSDialToAnotherCellFails(t *testing.T) {
	ca := newTestCA(t)
	c := openTLSCell(t, cellCerts(t, ca))
	stranger := newCertDir(t, ca, nodeID("c2", "n1"))
	cfg := DefaultConfig()
	cfg.NodeID = "n1"
	cfg.TLS = stranger.src
	layer := newStreamLayer(testutil.Listen(t), nil, newTLSLayer(cfg, testLogger(t), newMetrics().raftConnsRefused))
	defer layer.Close()

	target := c.stores[0]
	before := totalRefused(target, sideInbound)
	conn, err := layer.Dial(raft.ServerAddress(c.addrs[0]), 5*time.Second)
	if err == nil {
		conn.Close()
		t.Fatal("a node of cell c2 dialed a node of cell c1")
	}
	if !errors.Is(err, pki.ErrUnexpectedIdentity) {
		t.Fatalf("dial error %v, want pki.ErrUnexpectedIdentity", err)
	}
	if got := vecValue(layer.tls.refused, sideOutbound, reasonIdentity); got != 1 {
		t.Errorf("dialer refused{outbound,identity} = %v, want 1", got)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if got := totalRefused(target, sideInbound); got <= before {
			return fmt.Errorf("target refused %v inbound connections, want > %v", got, before)
		}
		return nil
	})
}

// TestRaftTLSDialChecksTheNode: the dialer expects the node the Raft
// configuration has at the address. A member n4 is added at an address
// where another node of the cell (n3's certificate) answers: the leader's
// dial is refused though the peer is a node of the cell.
func TestRaftTLSDialChecksTheNode(t *testing.T) {
	ca := newTestCA(t)
	certs := cellCerts(t, ca)
	c := openTLSCell(t, certs)
	ln := testutil.Listen(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(conn, certs[2].src.ServerTLSConfig(nil))
			_ = tc.Handshake()
			tc.Close()
		}
	}()
	defer func() { ln.Close(); <-done }()

	leader := c.stores[c.leader(t)]
	l := leader.layer.tls
	if err := l.expect(c.addrs[1])(certs[0].id); err == nil {
		t.Fatal("expect(n2's address) accepted n1")
	}
	if err := l.expect(ln.Addr().String())(certs[2].id); err != nil {
		t.Fatalf("expect(an address Raft does not know) refused a node of the cell: %v", err)
	}
	if err := leader.AddNonVoter(testCtx(t), "n4", ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, func() error {
		if got := refused(leader, sideOutbound, reasonIdentity); got == 0 {
			return errors.New("the leader did not refuse n3's certificate at n4's address")
		}
		return nil
	})
	c.write(t, "acme")
}

// TestRaftTLSLeafRotation: each node's certificate is replaced and
// reloaded while the cell runs; new connections present the new
// certificate and the cell keeps replicating.
func TestRaftTLSLeafRotation(t *testing.T) {
	ca := newTestCA(t)
	certs := cellCerts(t, ca)
	c := openTLSCell(t, certs)
	c.write(t, "before")
	for i, d := range certs {
		old := d.src.Certificate().SerialNumber
		leaf := d.issue(t, ca)
		if err := d.src.Reload(); err != nil {
			t.Fatal(err)
		}
		if got := d.src.Certificate().SerialNumber; got.Cmp(leaf.Cert.SerialNumber) != 0 || got.Cmp(old) == 0 {
			t.Fatalf("n%d serves serial %s after reload, want the new %s", i+1, got, leaf.Cert.SerialNumber)
		}
		// A new connection from another member sees the new certificate.
		from := c.stores[(i+1)%3]
		conn, err := from.layer.Dial(raft.ServerAddress(c.addrs[i]), 5*time.Second)
		if err != nil {
			t.Fatalf("dial n%d after its rotation: %v", i+1, err)
		}
		serial := conn.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber
		conn.Close()
		if serial.Cmp(leaf.Cert.SerialNumber) != 0 {
			t.Fatalf("n%d presented serial %s, want the new %s", i+1, serial, leaf.Cert.SerialNumber)
		}
		c.write(t, fmt.Sprintf("after-n%d", i+1))
	}
	// Connections made from now on use only new certificates: drop the
	// established ones (as a network blip would) and the cell goes on.
	for _, s := range c.stores {
		s.layer.mu.Lock()
		for conn := range s.layer.accepted {
			conn.(*trackedConn).Conn.Close()
		}
		s.layer.mu.Unlock()
	}
	c.write(t, "after-reconnect")
}

// TestRaftTLSHandshakeBounds: a connection that never handshakes is
// closed after HandshakeTimeout, and one arriving while MaxHandshakes are
// in progress is closed at once.
func TestRaftTLSHandshakeBounds(t *testing.T) {
	c := openTLSCell(t, cellCerts(t, newTestCA(t)), func(cfg *Config) {
		cfg.Transport.HandshakeTimeout = time.Second
		cfg.Transport.MaxHandshakes = 1
	})
	f := c.follower(t)
	target := c.stores[f]
	// Two silent connections: the first holds the only handshake slot
	// until its timeout, the second is closed at once.
	var silent []net.Conn
	for range 2 {
		conn, err := net.Dial("tcp", c.addrs[f])
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		silent = append(silent, conn)
	}
	testutil.Eventually(t, 5*time.Second, func() error {
		if refused(target, sideInbound, reasonOverload) == 0 {
			return errors.New("no overload refusal")
		}
		return nil
	})
	for i, conn := range silent {
		if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
			t.Fatal(err)
		}
		var ne net.Error
		if _, err := io.ReadAll(conn); errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("silent connection %d outlived HandshakeTimeout", i)
		}
	}
	testutil.Eventually(t, 15*time.Second, func() error { // a loaded race build records the refusal late
		if refused(target, sideInbound, reasonTimeout) == 0 {
			return errors.New("no timeout refusal")
		}
		return nil
	})
	c.write(t, "acme")
}

func TestRaftTLSConfigValidate(t *testing.T) {
	ca := newTestCA(t)
	cases := []struct {
		name string
		id   pki.Identity
		node string
		want string
	}{
		{"this node", nodeID(tlsCell, "n1"), "n1", ""},
		{"another node's certificate", nodeID(tlsCell, "n2"), "n1", "TLS"},
		{"not a node", pki.RouterIdentity(tlsCluster, "r1"), "n1", "TLS"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.NodeID, cfg.RaftBind, cfg.DataDir = tc.node, "127.0.0.1:0", t.TempDir()
			cfg.TLS = newCertDir(t, ca, tc.id).src
			err := cfg.Validate()
			if (err == nil) != (tc.want == "") || (err != nil && !strings.Contains(err.Error(), "store config "+tc.want+":")) {
				t.Fatalf("Validate() = %v, want an error on %q", err, tc.want)
			}
		})
	}
	cfg := DefaultConfig()
	cfg.NodeID, cfg.RaftBind, cfg.DataDir = "n1", "127.0.0.1:0", t.TempDir()
	cfg.Transport = TransportConfig{}
	err := cfg.Validate()
	for _, f := range []string{"Transport.HandshakeTimeout", "Transport.MaxHandshakes"} {
		if err == nil || !strings.Contains(err.Error(), f) {
			t.Errorf("Validate() = %v, want an error on %s", err, f)
		}
	}
}

func TestHandshakeReason(t *testing.T) {
	tests := []struct {
		err  error
		want string
	}{
		{fmt.Errorf("x: %w", pki.ErrUnexpectedIdentity), reasonIdentity},
		{fmt.Errorf("x: %w", pki.ErrNoCertificate), reasonNoCertificate},
		{fmt.Errorf("x: %w", pki.ErrUnknownCA), reasonUnknownCA},
		{fmt.Errorf("x: %w", pki.ErrExpired), reasonExpired},
		{fmt.Errorf("x: %w", pki.ErrKeyUsage), reasonBadCert},
		{fmt.Errorf("x: %w", pki.ErrNoURISAN), reasonBadCert},
		{fmt.Errorf("x: %w", pki.ErrBadIdentity), reasonBadCert},
		{fmt.Errorf("x: %w", context.DeadlineExceeded), reasonTimeout},
		{&net.OpError{Op: "read", Err: os.ErrDeadlineExceeded}, reasonTimeout},
		{errTooManyHandshakes, reasonOverload},
		{errors.New("tls: first record does not look like a TLS handshake"), reasonHandshake},
		{io.EOF, reasonHandshake},
	}
	for _, tt := range tests {
		if got := handshakeReason(tt.err); got != tt.want {
			t.Errorf("handshakeReason(%v) = %q, want %q", tt.err, got, tt.want)
		}
	}
}
