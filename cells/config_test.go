package cells_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/store"
)

func TestConfigValidate(t *testing.T) {
	valid := func() cells.Config {
		c := cells.DefaultConfig()
		c.NodeID = "n1"
		c.DataDir = "/tmp/x"
		return c
	}
	tests := []struct {
		name   string
		change func(*cells.Config)
		want   []string // substrings of the error; none: valid
	}{
		{"defaults plus id and dir", func(*cells.Config) {}, nil},
		{"bootstrap with self", func(c *cells.Config) {
			c.Bootstrap = []store.Peer{{ID: "n1", Addr: "127.0.0.1:7210"}, {ID: "n2", Addr: "127.0.0.1:7220"}}
		}, nil},
		{"join", func(c *cells.Config) { c.Join = "127.0.0.1:7211" }, nil},
		{"missing id and dir", func(c *cells.Config) { c.NodeID, c.DataDir = "", "" }, []string{"NodeID", "DataDir is required"}},
		{"bad id", func(c *cells.Config) { c.NodeID = "n/1" }, []string{`NodeID "n/1"`}},
		{"missing address", func(c *cells.Config) { c.GRPCAddr = "" }, []string{"GRPCAddr is required"}},
		{"token encoding", func(c *cells.Config) { c.TokenEncoding = "cl100k_base" }, nil},
		{"unknown token encoding", func(c *cells.Config) { c.TokenEncoding = "gpt-4" }, []string{"TokenEncoding"}},
		{"address without port", func(c *cells.Config) { c.HTTPAddr = "localhost" }, []string{`HTTPAddr "localhost" is not host:port`}},
		{"bootstrap and join", func(c *cells.Config) {
			c.Bootstrap = []store.Peer{{ID: "n1", Addr: "127.0.0.1:7210"}}
			c.Join = "127.0.0.1:7211"
		}, []string{"exclusive"}},
		{"bootstrap without self", func(c *cells.Config) {
			c.Bootstrap = []store.Peer{{ID: "n2", Addr: "127.0.0.1:7220"}}
		}, []string{`Bootstrap must include this node ("n1")`}},
		{"bootstrap duplicates", func(c *cells.Config) {
			c.Bootstrap = []store.Peer{{ID: "n1", Addr: "a:1"}, {ID: "n1", Addr: "a:1"}}
		}, []string{`id "n1" is listed twice`, `address "a:1" is listed twice`}},
		{"bad join", func(c *cells.Config) { c.Join = "nowhere" }, []string{`Join "nowhere"`}},
		{"negative shutdown timeout", func(c *cells.Config) { c.ShutdownTimeout = -time.Second }, []string{"ShutdownTimeout"}},
		{"bad limits", func(c *cells.Config) { c.Limits.MaxRequestBytes = 0 }, []string{"Limits", "MaxRequestBytes"}},
		{"bad store tuning", func(c *cells.Config) { c.Store.Raft.HeartbeatTimeout = 0 }, []string{"Store", "HeartbeatTimeout"}},
		{"tenant series bound", func(c *cells.Config) {
			c.Replication.Metrics.TenantLabels, c.Replication.Metrics.MaxTenantSeries = true, 0
		}, []string{"Replication", "MaxTenantSeries"}},
		{"store knobs through TestingKnobs", func(c *cells.Config) { c.TestingKnobs.Store.ProposeUnchecked = true }, nil},
		{"store knobs in Store", func(c *cells.Config) { c.Store.TestingKnobs.ProposeUnchecked = true }, []string{"Store.TestingKnobs is not read"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid()
			tt.change(&c)
			err := c.Validate()
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate() = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate() = nil, want an error mentioning %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("Validate() = %v, want it to mention %q", err, w)
				}
			}
		})
	}
}
