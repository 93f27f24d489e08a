package storetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/retry"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func testCtx(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func setTenant(t testing.TB, c *Cluster, tenant string, role cellv1.Role, epoch uint64) error {
	_, err := c.Propose(testCtx(t, 20*time.Second), &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: role, Epoch: epoch}}})
	return err
}

func mustCreate(t testing.TB, c *Cluster, tenant string, ids ...string) {
	t.Helper()
	if err := setTenant(t, c, tenant, cellv1.Role_ROLE_OWNER, 1); err != nil {
		t.Fatalf("set tenant: %v", err)
	}
	for _, id := range ids {
		if _, err := c.Propose(testCtx(t, 20*time.Second), &cellv1.Command{Tenant: tenant, Op: &cellv1.Command_CreateContext{CreateContext: &contextv1.CreateContextRequest{ContextId: id}}}); err != nil {
			t.Fatalf("create context %s: %v", id, err)
		}
	}
}

func appendCmd(tenant, ctxID, reqID, text string) *cellv1.Command {
	return &cellv1.Command{Tenant: tenant, RequestId: reqID, Op: &cellv1.Command_Append{Append: &contextv1.AppendRequest{
		ContextId: ctxID,
		Entries:   []*contextv1.Entry{{Role: "user", Content: &contextv1.Entry_Text{Text: text}}},
	}}}
}

// texts reads a context's entry texts from one node's local state.
func texts(t testing.TB, s *store.Store, tenant, ctxID string, opts store.ReadOptions) ([]string, error) {
	var out []string
	err := s.ReadTenant(testCtx(t, 10*time.Second), tenant, 0, opts, func(v *store.TenantView) error {
		es, err := v.Entries(ctxID, 1, 1<<30, 1<<62)
		for _, e := range es {
			out = append(out, e.GetText())
		}
		return err
	})
	return out, err
}

var stale = store.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE, MaxStaleness: -1}

// checkAllNodes waits for convergence, then checks every running node
// holds exactly want for the context.
func checkAllNodes(t *testing.T, c *Cluster, tenant, ctxID string, want []string) {
	t.Helper()
	c.WaitConverged()
	for _, n := range c.Running() {
		got, err := texts(t, n.S(), tenant, ctxID, stale)
		if err != nil {
			t.Fatalf("%s: read: %v", n.ID, err)
		}
		if !equal(got, want) {
			t.Fatalf("%s: %d entries, want %d; %s", n.ID, len(got), len(want), diff(got, want))
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// diff names the entries missing from got and the unexpected ones.
func diff(got, want []string) string {
	in := func(xs []string) map[string]int {
		m := map[string]int{}
		for i, x := range xs {
			m[x] = i
		}
		return m
	}
	g, w := in(got), in(want)
	var missing, extra []string
	for _, x := range want {
		if _, ok := g[x]; !ok {
			missing = append(missing, fmt.Sprintf("%s@%d", x, w[x]+1))
		}
	}
	for _, x := range got {
		if _, ok := w[x]; !ok {
			extra = append(extra, x)
		}
	}
	return fmt.Sprintf("missing %v, unexpected %v", head(missing), head(extra))
}

func head(s []string) []string {
	if len(s) > 8 {
		return append(s[:8:8], "…")
	}
	return s
}

func isRetryable(err error) bool {
	return err != nil && retry.Resend(retry.Idempotent, err) && !errors.Is(err, context.DeadlineExceeded)
}
