package replication_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// applyGate holds a node's state machine on its next applied entry while
// closed, so that a standby receives changes it cannot apply: its lag
// grows for as long as the test wants.
type applyGate struct {
	mu sync.Mutex
	ch chan struct{} // nil: open
}

func (g *applyGate) onApply(uint64) {
	g.mu.Lock()
	ch := g.ch
	g.mu.Unlock()
	if ch != nil {
		<-ch
	}
}

func (g *applyGate) close() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch == nil {
		g.ch = make(chan struct{})
	}
}

func (g *applyGate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.ch != nil {
		close(g.ch)
		g.ch = nil
	}
}

// standbys makes each tenant OWNER on the pair's source (with a context
// and a few entries) and STANDBY on its standby cell, and waits until the
// standby caught up with every one.
func (p *pair) standbys(t *testing.T, ctx context.Context, tenants ...string) {
	t.Helper()
	for _, tenant := range tenants {
		if _, err := p.srcCell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: tenant, Role: cellv1.Role_ROLE_OWNER, Epoch: 1}); err != nil {
			t.Fatalf("own %s: %v", tenant, err)
		}
		if _, err := p.srcData.CreateContext(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.CreateContextRequest{ContextId: "chat"}); err != nil {
			t.Fatal(err)
		}
		writeTenant(t, ctx, p.srcData, tenant, 3)
		if _, err := p.dstCell.SetTenant(ctx, &cellv1.SetTenantRequest{Tenant: tenant, Role: cellv1.Role_ROLE_STANDBY, Epoch: 1, SourceCell: "east-a"}); err != nil {
			t.Fatalf("standby %s: %v", tenant, err)
		}
	}
	for _, tenant := range tenants {
		src, err := p.srcCell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: tenant})
		if err != nil {
			t.Fatal(err)
		}
		testutil.Eventually(t, 30*time.Second, func() error {
			resp, err := p.dstCell.GetTenant(ctx, &cellv1.GetTenantRequest{Tenant: tenant})
			if err != nil {
				return err
			}
			if st := resp.GetReplication(); st.GetState() != "STREAMING" || st.GetAppliedTseq() < src.GetTenant().GetTseq() {
				return fmt.Errorf("standby of %s: %v", tenant, st)
			}
			return nil
		})
	}
}

func writeTenant(t *testing.T, ctx context.Context, c contextv1.ContextServiceClient, tenant string, n int) {
	t.Helper()
	for i := range n {
		_, err := c.Append(tenantmd.Outgoing(ctx, tenant, 0), &contextv1.AppendRequest{ContextId: "chat",
			Entries: []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: fmt.Sprintf("message %d", i)}}}})
		if err != nil {
			t.Fatalf("append to %s: %v", tenant, err)
		}
	}
}

// scrape is one GET of a node's /metrics: the body, and each sample by
// its series (name and labels as written, e.g.
// `cellplane_replication_streams_by_state{state="STREAMING"}`).
type scrape struct {
	body    string
	samples map[string]float64
}

func scrapeMetrics(ctx context.Context, n *cells.Node) (scrape, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.HTTPAddr()+"/metrics", nil)
	if err != nil {
		return scrape{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return scrape{}, err
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return scrape{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return scrape{}, fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	s := scrape{body: string(b), samples: map[string]float64{}}
	sc := bufio.NewScanner(strings.NewReader(s.body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			return scrape{}, fmt.Errorf("sample %q: %v", line, err)
		}
		s.samples[line[:i]] = v
	}
	return s, sc.Err()
}

// get is a sample that must be there.
func (s scrape) get(series string) (float64, error) {
	v, ok := s.samples[series]
	if !ok {
		return 0, fmt.Errorf("no %s in /metrics", series)
	}
	return v, nil
}

// want checks samples against conditions, e.g. {"x": ">0"}.
func (s scrape) want(conds map[string]string) error {
	for series, cond := range conds {
		v, err := s.get(series)
		if err != nil {
			return err
		}
		want, _ := strconv.ParseFloat(cond[1:], 64)
		ok := false
		switch cond[0] {
		case '=':
			ok = v == want
		case '>':
			ok = v > want
		}
		if !ok {
			return fmt.Errorf("%s = %v, want %s", series, v, cond)
		}
	}
	return nil
}

// tenantSeries is the tenants named by a metric's series.
func (s scrape) tenantSeries(name string) []string {
	var out []string
	for series := range s.samples {
		if rest, ok := strings.CutPrefix(series, name+`{tenant="`); ok {
			out = append(out, strings.TrimSuffix(rest, `"}`))
		}
	}
	return out
}

// TestLagMetricsNameNoTenantByDefault (M7): /metrics is not
// authenticated, so by default neither the standby's nor the owner's
// node names a tenant in it; the lag is there as aggregates over the
// standby tenants, which move when one of them falls behind and come
// back when it catches up.
func TestLagMetricsNameNoTenantByDefault(t *testing.T) {
	var gate applyGate
	p := newPairWith(t, nil, []func(*cells.Config){func(c *cells.Config) {
		c.Replication.Metrics.LagThreshold = 50 * time.Millisecond
		c.TestingKnobs.Store.OnApply = gate.onApply
	}})
	t.Cleanup(gate.open) // before the nodes close
	ctx := testutil.Context(t, 90*time.Second)
	tenants := []string{"m7-tenant-alpha", "m7-tenant-bravo"}
	p.standbys(t, ctx, tenants...)

	noTenant := func(s scrape, node string) error {
		for _, tenant := range tenants {
			if i := strings.Index(s.body, tenant); i >= 0 {
				line := s.body[strings.LastIndexByte(s.body[:i], '\n')+1:]
				line, _, _ = strings.Cut(line, "\n")
				return fmt.Errorf("the %s node's /metrics names tenant %s: %s", node, tenant, line)
			}
		}
		return nil
	}
	check := func(conds map[string]string) {
		t.Helper()
		testutil.Eventually(t, 30*time.Second, func() error {
			s, err := scrapeMetrics(ctx, p.dst)
			if err != nil {
				return err
			}
			if err := noTenant(s, "standby"); err != nil {
				t.Fatal(err)
			}
			return s.want(conds)
		})
	}
	caughtUp := map[string]string{
		"cellplane_replication_streams":                                 "=2",
		`cellplane_replication_streams_by_state{state="STREAMING"}`:     "=2",
		`cellplane_replication_streams_by_state{state="RETRYING"}`:      "=0",
		"cellplane_replication_lag_seconds_max":                         "=0",
		"cellplane_replication_lag_events_max":                          "=0",
		"cellplane_replication_pending_events":                          "=0",
		"cellplane_replication_streams_lagging":                         "=0",
		"cellplane_replication_lag_threshold_seconds":                   "=0.05",
		`cellplane_replication_bootstraps_total{reason="initial"}`:      "=2",
		`cellplane_replication_streams_by_state{state="BOOTSTRAPPING"}`: "=0",
		`cellplane_replication_streams_by_state{state="STARTING"}`:      "=0",
		"cellplane_replication_imported_bytes_total":                    ">0",
	}
	check(caughtUp)
	src, err := scrapeMetrics(ctx, p.src)
	if err != nil {
		t.Fatal(err)
	}
	if err := noTenant(src, "owner"); err != nil {
		t.Fatal(err)
	}

	// alpha falls behind: the standby receives its changes but cannot
	// apply them.
	gate.close()
	writeTenant(t, ctx, p.srcData, tenants[0], 5)
	check(map[string]string{
		"cellplane_replication_lag_events_max":  "=5",
		"cellplane_replication_pending_events":  "=5",
		"cellplane_replication_lag_seconds_max": ">0.05",
		"cellplane_replication_streams_lagging": "=1",
	})
	gate.open()
	check(caughtUp)
}

// TestLagMetricsPerTenantOptIn: with tenant labels turned on, the per-tenant
// series appear for at most MaxTenantSeries tenants, the most lagging
// first, and the tenants left out are counted.
func TestLagMetricsPerTenantOptIn(t *testing.T) {
	var gate applyGate
	p := newPairWith(t, nil, []func(*cells.Config){func(c *cells.Config) {
		c.Replication.Metrics.TenantLabels = true
		c.Replication.Metrics.MaxTenantSeries = 2
		c.TestingKnobs.Store.OnApply = gate.onApply
	}})
	t.Cleanup(gate.open)
	ctx := testutil.Context(t, 90*time.Second)
	// The lagging one sorts last by id: only its lag puts it in.
	tenants := []string{"m7-a", "m7-b", "m7-c"}
	p.standbys(t, ctx, tenants...)

	gate.close()
	writeTenant(t, ctx, p.srcData, "m7-c", 4)
	testutil.Eventually(t, 30*time.Second, func() error {
		s, err := scrapeMetrics(ctx, p.dst)
		if err != nil {
			return err
		}
		for _, name := range []string{"cellplane_replication_lag_events", "cellplane_replication_lag_seconds"} {
			if got := s.tenantSeries(name); len(got) != 2 {
				return fmt.Errorf("%s names tenants %v, want 2 of %v", name, got, tenants)
			}
		}
		return s.want(map[string]string{
			`cellplane_replication_lag_events{tenant="m7-c"}`:  "=4",
			`cellplane_replication_lag_seconds{tenant="m7-c"}`: ">0",
			`cellplane_replication_lag_events{tenant="m7-a"}`:  "=0",
			"cellplane_replication_tenant_series_dropped":      "=1",
			"cellplane_replication_lag_events_max":             "=4",
			"cellplane_replication_pending_events":             "=4",
			"cellplane_replication_streams":                    "=3",
		})
	})
	gate.open()
}
