package store

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cellplane/cellplane/internal/pki"
)

// tlsLayer is the mutual TLS of the Raft transport (security finding C4:
// hashicorp/raft accepts AppendEntries and InstallSnapshot from whoever
// sends a high enough term, so whoever may open a Raft connection is
// what decides who can rewrite the cell).
//
// The trust rule, checked on both sides of every connection before Raft
// reads or writes a byte of it:
//
//   - the peer's certificate chains to the cluster CA bundle current at
//     the handshake and carries an identity of this cluster (pki.Source);
//   - that identity is a cell node of this node's region and cell — the
//     region and cell of this node's own certificate when the store
//     opened, pinned for the store's life;
//   - when dialing, if the Raft configuration names the server at the
//     address dialed, the peer must be exactly that node
//     (spiffe://<cluster>/region/<r>/cell/<c>/node/<id>). An address not
//     in the configuration (a node being added, a dial before Raft
//     started) falls back to the same-cell rule. The accepting side
//     always uses the same-cell rule: a node being added is not yet in
//     its own configuration, and the leader it hears from may not be
//     either.
//
// A connection that fails is closed, counted in
// cellplane_store_raft_conns_refused_total{side,reason} and logged at Warn
// (node, peer_addr, side, reason, err). There is no plaintext fallback.
//
// Rotation: every handshake uses the Source's current certificate and
// bundle, so new connections pick up reloaded material; connections
// already established live on until they break or the store restarts.
type tlsLayer struct {
	src              *pki.Source
	self             pki.Identity // pinned when the store opened
	handshakeTimeout time.Duration
	maxHandshakes    int
	serverCfg        *tls.Config
	log              *slog.Logger
	refused          *prometheus.CounterVec
	// raft is set once Raft started; dials use its configuration to know
	// which node an address belongs to.
	raft atomic.Pointer[raft.Raft]
}

// Sides and reasons of refused connections (metric labels, log values).
const (
	sideInbound  = "inbound"  // a connection this node accepted
	sideOutbound = "outbound" // a connection this node dialed

	reasonIdentity      = "identity"       // valid certificate, but not a node of this cell (or not the node dialed)
	reasonNoCertificate = "no_certificate" // the peer presented none
	reasonUnknownCA     = "unknown_ca"     // not signed by a trusted CA
	reasonExpired       = "expired"        // expired or not yet valid
	reasonBadCert       = "bad_certificate"
	reasonTimeout       = "timeout"   // the handshake did not finish within HandshakeTimeout
	reasonHandshake     = "handshake" // not TLS, a protocol error, or the peer refused us
	reasonOverload      = "overload"  // MaxHandshakes already in progress
)

var errTooManyHandshakes = errors.New("store: too many Raft TLS handshakes in progress")

func newTLSLayer(cfg Config, log *slog.Logger, refused *prometheus.CounterVec) *tlsLayer {
	t := &tlsLayer{
		src:              cfg.TLS,
		self:             cfg.TLS.Identity(),
		handshakeTimeout: cfg.Transport.HandshakeTimeout,
		maxHandshakes:    cfg.Transport.MaxHandshakes,
		log:              log,
		refused:          refused,
	}
	t.serverCfg = t.src.ServerTLSConfig(t.sameCell)
	return t
}

// sameCell accepts a node identity of this node's region and cell (the
// cluster is checked by the Source).
func (t *tlsLayer) sameCell(id pki.Identity) error {
	if id.Kind != pki.KindNode || id.Region != t.self.Region || id.Cell != t.self.Cell {
		return fmt.Errorf("not a node of region %q cell %q", t.self.Region, t.self.Cell)
	}
	return nil
}

// expect returns the check of the peer dialed at addr: the node the Raft
// configuration has there, else any node of the cell.
func (t *tlsLayer) expect(addr string) pki.VerifyFunc {
	if r := t.raft.Load(); r != nil {
		if f := r.GetConfiguration(); f.Error() == nil {
			for _, srv := range f.Configuration().Servers {
				if string(srv.Address) == addr {
					return pki.ExpectIdentity(pki.NodeIdentity(t.self.Cluster, t.self.Region, t.self.Cell, NodeOfRaftID(string(srv.ID))))
				}
			}
		}
	}
	return t.sameCell
}

// server runs the server side of an accepted connection's handshake. On
// failure c is closed and the refusal reported, unless ctx ended (the
// layer is closing).
func (t *tlsLayer) server(ctx context.Context, c net.Conn) (net.Conn, error) {
	hctx, cancel := context.WithTimeout(ctx, t.handshakeTimeout)
	defer cancel()
	tc := tls.Server(c, t.serverCfg)
	if err := tc.HandshakeContext(hctx); err != nil {
		c.Close()
		if ctx.Err() == nil {
			t.refuse(sideInbound, c.RemoteAddr().String(), handshakeReason(err), err)
		}
		return nil, err
	}
	return tc, nil
}

// client runs the client side of a dialed connection's handshake, within
// HandshakeTimeout and Raft's dial timeout. On failure c is closed and the
// refusal reported.
func (t *tlsLayer) client(c net.Conn, addr string, timeout time.Duration) (net.Conn, error) {
	d := t.handshakeTimeout
	if timeout > 0 && timeout < d {
		d = timeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tc := tls.Client(c, t.src.ClientTLSConfig(t.expect(addr)))
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		t.refuse(sideOutbound, addr, handshakeReason(err), err)
		return nil, fmt.Errorf("store: Raft TLS handshake with %s: %w", addr, err)
	}
	return tc, nil
}

func (t *tlsLayer) refuse(side, peerAddr, reason string, err error) {
	t.refused.WithLabelValues(side, reason).Inc()
	t.log.Warn("raft connection refused", "peer_addr", peerAddr, "side", side, "reason", reason, "err", err)
}

// handshakeReason classifies a handshake error.
func handshakeReason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, errTooManyHandshakes):
		return reasonOverload
	case errors.Is(err, pki.ErrUnexpectedIdentity):
		return reasonIdentity
	case errors.Is(err, pki.ErrNoCertificate):
		return reasonNoCertificate
	case errors.Is(err, pki.ErrUnknownCA):
		return reasonUnknownCA
	case errors.Is(err, pki.ErrExpired):
		return reasonExpired
	case errors.Is(err, pki.ErrKeyUsage), errors.Is(err, pki.ErrNoURISAN), errors.Is(err, pki.ErrBadIdentity):
		return reasonBadCert
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return reasonTimeout
	}
	return reasonHandshake
}
