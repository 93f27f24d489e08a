package store

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// validConfig is DefaultConfig with the fields it leaves to the caller.
func validConfig() Config {
	c := DefaultConfig()
	c.NodeID = "n1"
	c.RaftBind = "127.0.0.1:7210"
	c.DataDir = "/var/lib/cellplane"
	return c
}

func TestDefaultConfigValidates(t *testing.T) {
	if err := validConfig().Validate(); err != nil {
		t.Fatalf("DefaultConfig with NodeID, RaftBind and DataDir: %v", err)
	}
	variants := map[string]func(*Config){
		"listener instead of bind": func(c *Config) { c.RaftBind = ""; c.RaftListener = fakeListener{} },
		"in-memory state, no dir":  func(c *Config) { c.DataDir = ""; c.TestingKnobs.InMemoryState = true },
		"bootstrap with self":      func(c *Config) { c.Bootstrap = []Peer{{ID: "n1", Addr: "a:1"}, {ID: "n2", Addr: "b:1"}} },
		"dedup disabled":           func(c *Config) { c.DedupMaxIDs = 0 },
		"new incarnation":          func(c *Config) { c.NewIncarnation = true },
		"unbounded change log":     func(c *Config) { c.ChangeLog = ChangeLogConfig{} },
		"smallest raft timings": func(c *Config) {
			c.Raft.HeartbeatTimeout, c.Raft.ElectionTimeout, c.Raft.LeaderLeaseTimeout = 5*time.Millisecond, 5*time.Millisecond, 5*time.Millisecond
			c.Raft.CommitTimeout, c.Raft.SnapshotInterval = time.Millisecond, 5*time.Millisecond
		},
		"max append entries bounds":  func(c *Config) { c.Raft.MaxAppendEntries = 1024 },
		"lease reads, default lease": func(c *Config) { c.Raft.LeaseReads = true },
		"lease reads, longest lease": func(c *Config) {
			c.Raft.LeaseReads, c.Raft.LeaseDuration = true, c.Raft.HeartbeatTimeout*9/10-time.Millisecond
		},
		"smallest batch":        func(c *Config) { c.MaxBatchCommands, c.MaxBatchBytes = 1, 1<<10 },
		"smallest state memory": func(c *Config) { c.StateCacheBytes, c.StateMemTableBytes = 1<<20, 1<<20 },
	}
	for name, mutate := range variants {
		c := validConfig()
		mutate(&c)
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

type fakeListener struct{ net.Listener }

func TestConfigValidateNamesTheField(t *testing.T) {
	cases := []struct {
		field  string
		mutate func(*Config)
	}{
		{"NodeID", func(c *Config) { c.NodeID = "" }},
		{"RaftBind", func(c *Config) { c.RaftBind = "" }},
		{"DataDir", func(c *Config) { c.DataDir = "" }},
		{"Raft.HeartbeatTimeout", func(c *Config) {
			c.Raft.HeartbeatTimeout, c.Raft.LeaderLeaseTimeout = 4*time.Millisecond, 4*time.Millisecond
		}},
		{"Raft.ElectionTimeout", func(c *Config) { c.Raft.ElectionTimeout = c.Raft.HeartbeatTimeout - 1 }},
		{"Raft.LeaderLeaseTimeout", func(c *Config) { c.Raft.LeaderLeaseTimeout = 0 }},
		{"Raft.LeaderLeaseTimeout", func(c *Config) { c.Raft.LeaderLeaseTimeout = c.Raft.HeartbeatTimeout + 1 }},
		{"Raft.LeaseDuration", func(c *Config) { c.Raft.LeaseDuration = -time.Millisecond }},
		{"Raft.LeaseDuration", func(c *Config) {
			c.Raft.LeaseReads, c.Raft.LeaseDuration = true, c.Raft.HeartbeatTimeout*9/10-time.Millisecond+1
		}},
		{"Raft.LeaseDuration", func(c *Config) {
			c.Raft.LeaseReads, c.Raft.HeartbeatTimeout, c.Raft.LeaderLeaseTimeout = true, 5*time.Millisecond, 5*time.Millisecond
		}},
		{"Raft.CommitTimeout", func(c *Config) { c.Raft.CommitTimeout = 0 }},
		{"Raft.CommitTimeout", func(c *Config) { c.Raft.CommitTimeout = -time.Second }},
		{"Raft.MaxAppendEntries", func(c *Config) { c.Raft.MaxAppendEntries = 0 }},
		{"Raft.MaxAppendEntries", func(c *Config) { c.Raft.MaxAppendEntries = 1025 }},
		{"Raft.SnapshotInterval", func(c *Config) { c.Raft.SnapshotInterval = 0 }},
		{"Raft.SnapshotThreshold", func(c *Config) { c.Raft.SnapshotThreshold = 0 }},
		{"StateCacheBytes", func(c *Config) { c.StateCacheBytes = 1<<20 - 1 }},
		{"StateMemTableBytes", func(c *Config) { c.StateMemTableBytes = 0 }},
		{"StateHeadCacheEntries", func(c *Config) { c.StateHeadCacheEntries = -1 }},
		{"StateMemTableBytes", func(c *Config) { c.StateMemTableBytes = 1<<30 + 1 }},
		{"Raft.SnapshotRetain", func(c *Config) { c.Raft.SnapshotRetain = 0 }},
		{"Raft.LogCacheEntries", func(c *Config) { c.Raft.LogCacheEntries = -1 }},
		{"Raft.LogCacheEntries", func(c *Config) { c.Raft.LogCacheEntries = 1<<16 + 1 }},
		{"MaxBatchCommands", func(c *Config) { c.MaxBatchCommands = 0 }},
		{"MaxBatchBytes", func(c *Config) { c.MaxBatchBytes = 1<<10 - 1 }},
		{"DedupWindow", func(c *Config) { c.DedupWindow = 0 }},
		{"DedupMaxIDs", func(c *Config) { c.DedupMaxIDs = -1 }},
		{"ChangeLog.RetentionAge", func(c *Config) { c.ChangeLog.RetentionAge = -time.Second }},
		{"ClockMaxStep", func(c *Config) { c.ClockMaxStep = time.Second - 1 }},
		{"ApplyTimeout", func(c *Config) { c.ApplyTimeout = 0 }},
		{"DefaultMaxStaleness", func(c *Config) { c.DefaultMaxStaleness = 0 }},
		{"Bootstrap[1]", func(c *Config) { c.Bootstrap = []Peer{{ID: "n1", Addr: "a:1"}, {ID: "n2"}} }},
		{"Bootstrap[0]", func(c *Config) { c.Bootstrap = []Peer{{Addr: "a:1"}, {ID: "n1", Addr: "b:1"}} }},
		{"Bootstrap", func(c *Config) { c.Bootstrap = []Peer{{ID: "n2", Addr: "b:1"}} }},
		{"NewIncarnation", func(c *Config) { c.Bootstrap = []Peer{{ID: "n1", Addr: "a:1"}}; c.NewIncarnation = true }},
		{"NodeID", func(c *Config) { c.NodeID = "n1.inc-0123456789abcdef" }},
		{"RaftDialRoutes", func(c *Config) { c.RaftDialRoutes = map[string]string{"a:1": "no-port"} }},
		{"RaftDialRoutes", func(c *Config) { c.RaftDialRoutes = map[string]string{"": "b:1"} }},
	}
	for _, tc := range cases {
		c := validConfig()
		tc.mutate(&c)
		err := c.Validate()
		if err == nil {
			t.Errorf("%s: invalid config accepted", tc.field)
			continue
		}
		// Below 5ms no lease is both ≥ 5ms and ≤ HeartbeatTimeout: two problems.
		others := tc.field == "Raft.HeartbeatTimeout"
		if msg := err.Error(); !strings.HasPrefix(msg, "store config ") || (strings.Contains(msg, "\n") && !others) || !strings.Contains(msg, "store config "+tc.field) {
			t.Errorf("%s: want one problem naming the field, got: %v", tc.field, err)
		}
	}
	// Every problem is reported, each on its own line.
	err := Config{}.Validate()
	if err == nil {
		t.Fatal("zero Config accepted")
	}
	for _, field := range []string{"NodeID", "RaftBind", "DataDir", "Raft.HeartbeatTimeout", "Raft.LeaderLeaseTimeout", "Raft.CommitTimeout",
		"Raft.MaxAppendEntries", "Raft.SnapshotInterval", "Raft.SnapshotRetain", "MaxBatchCommands", "MaxBatchBytes", "ApplyTimeout", "DefaultMaxStaleness"} {
		if !strings.Contains(err.Error(), "store config "+field) {
			t.Errorf("zero Config: %s not reported in %v", field, err)
		}
	}
	if lines := strings.Count(err.Error(), "\n") + 1; lines < 13 {
		t.Errorf("zero Config: %d problems reported", lines)
	}
}

// TestConfigValidateCoversRaft: a config Validate accepts must not be
// refused by Raft when Open starts it (its error would name Raft's field,
// not ours, and only after the data dir was opened).
func TestConfigValidateCoversRaft(t *testing.T) {
	cases := map[string]func(*Config){
		"default":                      func(*Config) {},
		"CommitTimeout below 1ms":      func(c *Config) { c.Raft.CommitTimeout = 500 * time.Microsecond },
		"LeaderLeaseTimeout below 5ms": func(c *Config) { c.Raft.LeaderLeaseTimeout = time.Millisecond },
		"SnapshotInterval below 5ms":   func(c *Config) { c.Raft.SnapshotInterval = time.Millisecond },
	}
	for name, mutate := range cases {
		c := validConfig()
		mutate(&c)
		if c.Validate() != nil {
			continue // refused up front: fine
		}
		// The config Open hands to Raft: whatever Raft refuses, Validate must have refused.
		if err := raft.ValidateConfig(raftConfig(c)); err != nil {
			t.Errorf("%s: Config.Validate accepts what Raft refuses: %v", name, err)
		}
	}
}
