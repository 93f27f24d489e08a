package storetest

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

// tlsOptions gives every node n1…n5 of a test cluster a certificate of one
// CA for cell eu/c1, so the cluster's Raft transport is mutual TLS.
func tlsOptions(t *testing.T) Options {
	t.Helper()
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srcs := map[string]*pki.Source{}
	for _, node := range []string{"n1", "n2", "n3", "n4", "n5"} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, pki.CACertFile), pki.EncodeCerts(ca.Cert), 0o644); err != nil {
			t.Fatal(err)
		}
		id := pki.NodeIdentity("test", "eu", "c1", node)
		leaf, err := ca.Issue(pki.LeafRequest{Identity: id})
		if err != nil {
			t.Fatal(err)
		}
		if err := pki.WriteLeaf(dir, id.FileName(), leaf, false); err != nil {
			t.Fatal(err)
		}
		cfg := pki.DirConfig(dir, id.FileName())
		cfg.Logger = testutil.Logger(t)
		if srcs[node], err = pki.NewSource(cfg); err != nil {
			t.Fatal(err)
		}
	}
	return Options{Config: func(cfg *store.Config) { cfg.TLS = srcs[cfg.NodeID] }}
}

// The scenarios that break and remake connections, over the Raft
// transport's mutual TLS: the network filter partitions TLS connections
// as it does plain ones, and a restarted node reconnects with its
// certificate.

func TestPartitionedLeaderTLS(t *testing.T) {
	testPartitionedLeader(t, NewCluster(t, 3, tlsOptions(t)))
}

func TestFollowerRestartCatchesUpTLS(t *testing.T) {
	testFollowerRestartCatchesUp(t, NewCluster(t, 3, tlsOptions(t)))
}
