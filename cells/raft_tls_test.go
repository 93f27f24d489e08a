package cells_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/celltest"
	"github.com/cellplane/cellplane/cells/store"
	cpdial "github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

// nodeSource writes a certs directory holding ca and a certificate of ca
// for id, and returns a Source on it.
func nodeSource(t *testing.T, ca *pki.CA, id pki.Identity) *pki.Source {
	t.Helper()
	dir := t.TempDir()
	if err := pki.WriteCA(dir, ca, false); err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(pki.LeafRequest{Identity: id, Hosts: []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteLeaf(dir, id.FileName(), leaf, false); err != nil {
		t.Fatal(err)
	}
	src, err := pki.NewSource(pki.DirConfig(dir, id.FileName()))
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// TestRaftTLS: a cell whose nodes carry cells.Config.TLS forms and serves;
// its Raft ports close a plain TCP connection and count it on /metrics.
func TestRaftTLS(t *testing.T) {
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var cfgs []cells.Config
	var peers []store.Peer
	for i := range 3 {
		id := fmt.Sprintf("n%d", i+1)
		cfg := celltest.NodeConfig(t, id)
		cfg.CellID = "c1"
		cfg.TLS = nodeSource(t, ca, pki.NodeIdentity("test", "eu", "c1", id))
		cfgs = append(cfgs, cfg)
		peers = append(peers, store.Peer{ID: id, Addr: cfg.RaftListener.Addr().String()})
	}
	var nodes []*cells.Node
	for _, cfg := range cfgs {
		cfg.Bootstrap = peers
		nodes = append(nodes, celltest.StartNode(t, cfg))
	}
	leader := celltest.WaitLeader(t, nodes)
	cp := cpdial.DefaultConfig()
	cp.Credentials = pki.ClientCredentials(source(t, ca, t.TempDir(), cpID), pki.ExpectKinds(pki.KindNode))
	celltest.OwnWith(t, cp, leader.GRPCAddr(), "acme")

	target := followerOf(nodes, leader)
	conn, err := net.Dial("tcp", target.RaftAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("not TLS, not anything\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	var ne net.Error
	if _, err := io.ReadAll(conn); errors.As(err, &ne) && ne.Timeout() {
		t.Fatal("the Raft port kept a plain TCP connection open")
	}
	ctx := testutil.Context(t, 10*time.Second)
	// The HTTP port serves mutual TLS too: scrape as an operator.
	scraper := &http.Transport{TLSClientConfig: nodeSource(t, ca, pki.OperatorIdentity("test", pki.RoleReadOnly, "prometheus")).
		ClientTLSConfig(pki.ExpectKinds(pki.KindNode))}
	defer scraper.CloseIdleConnections()
	testutil.Eventually(t, 10*time.Second, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+target.HTTPAddr()+"/metrics", nil)
		if err != nil {
			return err
		}
		resp, err := scraper.RoundTrip(req)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if err != nil {
			return err
		}
		if body := string(b); resp.StatusCode != http.StatusOK || !strings.Contains(body, `cellplane_store_raft_conns_refused_total{reason="handshake",side="inbound"} `) {
			return errors.New("refusal not counted on /metrics")
		}
		return nil
	})
	celltest.OwnWith(t, cp, leader.GRPCAddr(), "acme2")
}

func TestConfigValidateTLS(t *testing.T) {
	ca, err := pki.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	self := nodeSource(t, ca, pki.NodeIdentity("test", "eu", "c1", "n1"))
	tests := []struct {
		name   string
		change func(*cells.Config)
		want   string
	}{
		{"this node", func(c *cells.Config) { c.TLS = self }, ""},
		{"this node and cell", func(c *cells.Config) { c.TLS, c.CellID = self, "c1" }, ""},
		{"another cell", func(c *cells.Config) { c.TLS, c.CellID = self, "c2" }, `of cell "c1", this node's cell is "c2"`},
		{"another node", func(c *cells.Config) { c.TLS, c.NodeID = self, "n2" }, `is not node "n2"'s`},
		{"not a node", func(c *cells.Config) { c.TLS = nodeSource(t, ca, pki.RouterIdentity("test", "r1")) }, "is not a cell node's"},
		{"in Store", func(c *cells.Config) { c.Store.TLS = self }, "Store.TLS is not read"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := cells.DefaultConfig()
			c.NodeID, c.DataDir = "n1", t.TempDir()
			tt.change(&c)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("Validate() = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
}
