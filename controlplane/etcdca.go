package controlplane

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// etcdCAWatch restarts the embedded etcd member when the CAs this
// replica trusts change. etcd re-reads its certificate at every handshake
// but its CA bundle only at start (go.etcd.io/etcd/client/pkg/v3/transport
// has no hook for the client CA pool), so without a restart a CA rotation
// would leave it refusing every new connection that presents a leaf of
// the new CA, and accepting the old CA's after it was dropped.
//
// It compares, every reload interval of the replica's pki.Source, the
// Source's CAs (re-read from disk when the files change) with those the
// member read at its last start; on a difference it restarts the member
// in place (etcdserver.Server.Restart: same data dir, URLs and files),
// bounded by Config.EtcdRestartTimeout. The clients (this replica's store,
// the components') reconnect by themselves: etcd's client retries reads
// and waits for the connection, leases outlive the restart (etcd extends
// them when the member leads again) and watches resume at their revision.
type etcdCAWatch struct {
	s        *Server
	interval time.Duration
	restarts *prometheus.CounterVec // result: ok, error
}

func newEtcdCAWatch(s *Server, interval time.Duration) *etcdCAWatch {
	return &etcdCAWatch{
		s:        s,
		interval: interval,
		restarts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cellplane_controlplane_etcd_restarts_total",
			Help: "Restarts of the embedded etcd member to load a changed CA bundle, by result (ok, error).",
		}, []string{"result"}),
	}
}

// run checks every interval until ctx ends.
func (w *etcdCAWatch) run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	down := false // the last restart failed: try again
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		want := caFingerprints(w.s.cfg.TLS.CAs())
		have := caFingerprints(w.s.etcd.TrustedCAs())
		if !down && slices.Equal(want, have) {
			continue
		}
		log := w.s.log.With("etcd_cas_before", short(have), "etcd_cas_after", short(want))
		log.Info("etcd: the trusted CAs changed; restarting the embedded member to load them")
		rctx, cancel := context.WithTimeout(ctx, w.s.cfg.EtcdRestartTimeout)
		start := time.Now()
		err := w.s.etcd.Restart(rctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return // closing
			}
			down = true
			w.restarts.WithLabelValues("error").Inc()
			log.Error("etcd: restarting the embedded member failed; trying again at the next check",
				"err", err, "duration", time.Since(start), "retry_in", w.interval)
			continue
		}
		down = false
		w.restarts.WithLabelValues("ok").Inc()
		log.Info("etcd: embedded member restarted with the new CA bundle", "duration", time.Since(start))
	}
}

// caFingerprints returns the sorted SHA-256 fingerprints (hex) of cas,
// without duplicates: the set of CAs, whatever the bundle's order.
func caFingerprints(cas []*x509.Certificate) []string {
	out := make([]string, 0, len(cas))
	for _, c := range cas {
		sum := sha256.Sum256(c.Raw)
		out = append(out, hex.EncodeToString(sum[:]))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// short abbreviates fingerprints for the logs.
func short(fps []string) []string {
	out := make([]string, len(fps))
	for i, f := range fps {
		out[i] = f[:min(16, len(f))]
	}
	return out
}
