package main

import (
	"encoding/json"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// startControlPlane starts a real control plane (embedded etcd and one
// replica, see controlplane/cptest) for the duration of the test. The
// tests talk to it only through cellctl, at env.Addr().
func startControlPlane(t *testing.T) *cptest.Env {
	t.Helper()
	return cptest.New(t)
}

// topology is what seed made: the nodes of its real cells.
type topology struct {
	use1a []*cells.Node // the 3-node cell of us-east
}

// seed fills the control plane with a small topology, through cellctl
// itself, and starts the real nodes of its cells:
//
//	us-east  "N. Virginia"  use1-a: 3 nodes, max 100 tenants (hooli, initech)
//	                        use1-b: 1 node, CORDONED (globex, placed by the policy)
//	eu-west  "Ireland"      euw1-a: 5 members expected, none started, max 1000000 bytes
//	ap-south                no cells
//
// hooli has two API keys, "production agents" (active) and "ci" (revoked).
func seed(t *testing.T, env *cptest.Env) topology {
	t.Helper()
	addr := env.Addr()
	for _, args := range [][]string{
		{"region", "create", "us-east", "--description", "N. Virginia"},
		{"region", "create", "eu-west", "--description", "Ireland"},
		{"region", "create", "ap-south"},
		{"cell", "create", "use1-a", "--region", "us-east", "--max-tenants", "100"},
		{"cell", "create", "use1-b", "--region", "us-east", "--members", "1"},
		{"cell", "create", "euw1-a", "--region", "eu-west", "--members", "5", "--max-bytes", "1000000"},
	} {
		mustCP(t, addr, args...)
	}
	topo := topology{use1a: env.StartNodes(t, "use1-a", 3)}
	env.StartNodes(t, "use1-b", 1)
	waitHealthy(t, env, "use1-a", "use1-b")
	for _, args := range [][]string{
		{"tenant", "create", "hooli", "--region", "us-east", "--cell", "use1-a", "--rate", "100.5", "--burst", "200", "--max-bytes", "5000000", "--bytes-rate", "65536", "--bytes-burst", "131072"},
		{"tenant", "create", "globex", "--region", "us-east"}, // the least loaded cell: use1-b
		{"tenant", "create", "initech", "--region", "us-east", "--cell", "use1-a"},
		{"cell", "cordon", "use1-b"},
		{"tenant", "key", "create", "hooli", "--description", "production agents"},
	} {
		mustCP(t, addr, args...)
	}
	var key struct {
		Key struct{ ID string }
	}
	out := mustCP(t, addr, "tenant", "key", "create", "hooli", "--description", "ci", "-o", "json")
	if err := json.Unmarshal([]byte(out), &key); err != nil || key.Key.ID == "" {
		t.Fatalf("key create -o json: %v %q", err, out)
	}
	mustCP(t, addr, "tenant", "key", "revoke", "hooli", key.Key.ID)
	return topo
}

// waitHealthy waits until the control plane reports every cell HEALTHY.
func waitHealthy(t *testing.T, env *cptest.Env, cellIDs ...string) {
	t.Helper()
	cl := env.Client(t)
	testutil.Eventually(t, 30*time.Second, func() error {
		for _, id := range cellIDs {
			resp, err := cl.GetCell(testutil.Context(t, 5*time.Second), &cpv1.GetCellRequest{Id: id})
			if err != nil {
				return err
			}
			if h := resp.GetCell().GetHealth(); h != cpv1.CellHealth_CELL_HEALTH_HEALTHY {
				return fmt.Errorf("cell %s is %s", id, h)
			}
		}
		return nil
	})
}

// What varies from run to run in the real control plane's answers, and
// what the golden files have in its place.
var normalizers = []struct {
	re          *regexp.Regexp
	placeholder string
}{
	// API key secrets (before key ids: a secret contains its key id).
	{regexp.MustCompile(`\bcpk_[0-9a-f]{16}_[A-Za-z0-9_-]+`), "<SECRET>"},
	{regexp.MustCompile(`\b[0-9a-f]{16}\b`), "<KEY-ID>"},
	{regexp.MustCompile(`\b\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})`), "<TIME>"},
	{regexp.MustCompile(`\b127\.0\.0\.1:\d+\b`), "<ADDR>"},
	// A cell's Raft leader, which the nodes elect: a node id (<cell>-n<i>)
	// after a blank. Node ids at the start of a line (the node table of
	// 'cell get') stay.
	{regexp.MustCompile(`[ \t][a-z0-9]+(-[a-z0-9]+)*-n\d+\b`), "<LEADER>"},
	{regexp.MustCompile(`\bterm \d+\b`), "term <TERM>"},
}

// normalize replaces what varies in real output (see normalizers). In a
// table column (the value is followed by two blanks), the placeholder is
// padded with blanks to the width of what it replaces, so that the golden
// files still show (and check) the columns' alignment.
func normalize(s string) string {
	for _, n := range normalizers {
		var b strings.Builder
		last := 0
		for _, loc := range n.re.FindAllStringIndex(s, -1) {
			start, end := loc[0], loc[1]
			if c := s[start]; c == ' ' || c == '\t' { // the blank before a leader
				start++
			}
			b.WriteString(s[last:start])
			b.WriteString(n.placeholder)
			if w := end - start; len(n.placeholder) < w && strings.HasPrefix(s[end:], "  ") {
				b.WriteString(strings.Repeat(" ", w-len(n.placeholder)))
			}
			last = end
		}
		b.WriteString(s[last:])
		s = b.String()
	}
	return s
}

// sortRows sorts the lines of a table after its header: for listings
// whose order is by a random id (API keys).
func sortRows(s string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	if len(lines) > 2 {
		slices.Sort(lines[1:])
	}
	return strings.Join(lines, "\n") + "\n"
}

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Created: 2026-03-01T12:00:00Z\n", "Created: <TIME>\n"},
		{"x 2026-03-01T12:00:00.123+01:00 y", "x <TIME> y"},
		{"2026-03-01T12:00:00Z  -\n", "<TIME>                -\n"},
		{"0123456789abcdef  ACTIVE\n", "<KEY-ID>          ACTIVE\n"},
		{"API key 0123456789abcdef created\n\n  cpk_0123456789abcdef_AbC-d_9\n", "API key <KEY-ID> created\n\n  <SECRET>\n"},
		{"use1-a  us-east  ACTIVE  HEALTHY  use1-a-n2  3/3", "use1-a  us-east  ACTIVE  HEALTHY  <LEADER>   3/3"},
		{"Leader: use1-a-n3 (127.0.0.1:40123, term 2, since", "Leader: <LEADER> (<ADDR>, term <TERM>, since"},
		{"use1-a-n1  MEMBER  127.0.0.1:40001  -", "use1-a-n1  MEMBER  <ADDR>           -"},
		{"tenant hooli created on cell use1-a (region us-east, epoch 1, ACTIVE)", "tenant hooli created on cell use1-a (region us-east, epoch 1, ACTIVE)"},
	}
	for _, tt := range tests {
		if got := normalize(tt.in); got != tt.want {
			t.Errorf("normalize(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
