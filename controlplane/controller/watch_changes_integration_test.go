package controller_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// changesOn follows WatchChanges on the cell at addr after `after` until
// its cursor reaches upTo, and returns the changes, or the stream's error
// (CURSOR_EXPIRED for a cursor the cell's history does not hold). A call
// without scopes metadata is a component's: it sees every change.
func changesOn(t *testing.T, addr, tenant string, after *contextv1.ChangeCursor, upTo uint64) ([]*contextv1.Change, *contextv1.ChangeCursor, error) {
	t.Helper()
	conn, err := dial.New(addr, dial.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(tenantmd.Outgoing(testutil.Context(t, 20*time.Second), tenant, 0), 15*time.Second)
	defer cancel()
	s, err := contextv1.NewContextServiceClient(conn).WatchChanges(ctx, &contextv1.WatchChangesRequest{After: after})
	if err != nil {
		return nil, nil, rpcerr.FromStatus(err)
	}
	var out []*contextv1.Change
	var cur *contextv1.ChangeCursor
	for {
		resp, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, cur, errors.New("the stream ended")
		}
		if err != nil {
			return out, cur, rpcerr.FromStatus(err)
		}
		out = append(out, resp.GetChanges()...)
		cur = resp.GetCursor()
		if cur.GetTseq() >= upTo {
			return out, cur, nil
		}
	}
}

// logAfter returns the change-log events after tseq on the cell at addr.
func logAfter(t *testing.T, addr, tenant string, after uint64) []*cellv1.ChangeEvent {
	t.Helper()
	conn, err := dial.New(addr, dial.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	resp, err := cellv1.NewCellServiceClient(conn).ListChanges(testutil.Context(t, 10*time.Second), &cellv1.ListChangesRequest{Tenant: tenant, AfterTseq: after, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	return resp.GetEvents()
}

// checkAgainstLog checks that changes are exactly the data events of log
// (one change per append and memory put, at its tseq and time), in order.
func checkAgainstLog(t *testing.T, changes []*contextv1.Change, log []*cellv1.ChangeEvent) {
	t.Helper()
	var want []string
	for _, ev := range log {
		if ev.GetCommand().GetAppend() != nil || ev.GetCommand().GetPutMemory() != nil {
			want = append(want, fmt.Sprintf("%d/%d", ev.GetTseq(), ev.GetTimeUnixNano()))
		}
	}
	var got []string
	for _, c := range changes {
		if c.GetKind() == contextv1.ChangeKind_CHANGE_KIND_CONTEXT_APPENDED || c.GetKind() == contextv1.ChangeKind_CHANGE_KIND_MEMORY_PUT {
			got = append(got, fmt.Sprintf("%d/%d", c.GetCursor().GetTseq(), c.GetCursor().GetTimeUnixNano()))
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("appends streamed %v, the change log has %v", got, want)
	}
}

func wantCursorExpired(t *testing.T, err error) {
	t.Helper()
	var ce *cperr.Error
	if !errors.As(err, &ce) || ce.Reason != cperr.CursorExpired || ce.Metadata[cperr.MetaCurrentCursor] == "" {
		t.Fatalf("got %v, want CURSOR_EXPIRED with current_cursor", err)
	}
}
