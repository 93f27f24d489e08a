package placement

import (
	"errors"
	"testing"

	"github.com/cellplane/cellplane/internal/cperr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func cell(id, region string, state cpv1.CellState, maxTenants, maxBytes, tenants, bytes uint64) Candidate {
	return Candidate{
		Cell: &cpv1.Cell{Id: id, Region: region, State: state, ExpectedMembers: 3,
			Capacity: &cpv1.CellCapacity{MaxTenants: maxTenants, MaxBytes: maxBytes}},
		Load:   &cpv1.CellLoad{Tenants: tenants, Bytes: bytes},
		Health: cpv1.CellHealth_CELL_HEALTH_HEALTHY,
	}
}

// withHealth returns c with health h.
func withHealth(c Candidate, h cpv1.CellHealth) Candidate {
	c.Health = h
	return c
}

const (
	active   = cpv1.CellState_CELL_STATE_ACTIVE
	cordoned = cpv1.CellState_CELL_STATE_CORDONED
	draining = cpv1.CellState_CELL_STATE_DRAINING
	down     = cpv1.CellState_CELL_STATE_DOWN
)

func TestPick(t *testing.T) {
	tests := []struct {
		name    string
		cands   []Candidate
		req     Request
		want    string
		wantErr *cperr.Error
	}{
		{"least tenants wins", []Candidate{
			cell("a", "us", active, 0, 0, 5, 0), cell("b", "us", active, 0, 0, 2, 0), cell("c", "us", active, 0, 0, 9, 0),
		}, Request{Region: "us"}, "b", nil},
		{"other regions ignored", []Candidate{
			cell("eu1", "eu", active, 0, 0, 0, 0), cell("us1", "us", active, 0, 0, 100, 0),
		}, Request{Region: "us"}, "us1", nil},
		{"ties broken by bytes then id", []Candidate{
			cell("b", "us", active, 0, 0, 1, 10), cell("a", "us", active, 0, 0, 1, 10), cell("c", "us", active, 0, 0, 1, 5),
		}, Request{Region: "us"}, "c", nil},
		{"ties broken by id", []Candidate{
			cell("b", "us", active, 0, 0, 1, 0), cell("a", "us", active, 0, 0, 1, 0),
		}, Request{Region: "us"}, "a", nil},
		{"cordoned, draining and down take nothing", []Candidate{
			cell("a", "us", cordoned, 0, 0, 0, 0), cell("b", "us", draining, 0, 0, 0, 0), cell("c", "us", down, 0, 0, 0, 0), cell("d", "us", active, 0, 0, 50, 0),
		}, Request{Region: "us"}, "d", nil},
		{"full cells skipped", []Candidate{
			cell("a", "us", active, 10, 0, 10, 0), cell("b", "us", active, 100, 0, 50, 0),
		}, Request{Region: "us"}, "b", nil},
		{"byte capacity counts the request", []Candidate{
			cell("a", "us", active, 0, 100, 0, 95), cell("b", "us", active, 0, 1000, 3, 10),
		}, Request{Region: "us", Bytes: 10}, "b", nil},
		{"no cells in region", []Candidate{cell("a", "eu", active, 0, 0, 0, 0)},
			Request{Region: "us"}, "", cperr.ErrNoCapacity},
		{"no active cell", []Candidate{cell("a", "us", cordoned, 0, 0, 0, 0)},
			Request{Region: "us"}, "", cperr.ErrNoCapacity},
		// A brand-new cell (no member registered yet) is empty, so it
		// would win every new tenant before its nodes exist.
		{"a new empty cell does not win", []Candidate{
			withHealth(cell("new", "us", active, 0, 0, 0, 0), cpv1.CellHealth_CELL_HEALTH_NOT_STARTED), cell("old", "us", active, 0, 0, 50, 0),
		}, Request{Region: "us"}, "old", nil},
		{"degraded and unavailable cells skipped", []Candidate{
			withHealth(cell("a", "us", active, 0, 0, 0, 0), cpv1.CellHealth_CELL_HEALTH_DEGRADED),
			withHealth(cell("b", "us", active, 0, 0, 0, 0), cpv1.CellHealth_CELL_HEALTH_UNAVAILABLE),
			withHealth(cell("c", "us", active, 0, 0, 0, 0), cpv1.CellHealth_CELL_HEALTH_UNSPECIFIED),
			cell("d", "us", active, 0, 0, 99, 0),
		}, Request{Region: "us"}, "d", nil},
		{"no healthy cell", []Candidate{withHealth(cell("a", "us", active, 0, 0, 0, 0), cpv1.CellHealth_CELL_HEALTH_NOT_STARTED)},
			Request{Region: "us"}, "", cperr.ErrNoCapacity},
		{"an explicit cell is not held to health", []Candidate{
			withHealth(cell("new", "us", active, 0, 0, 0, 0), cpv1.CellHealth_CELL_HEALTH_NOT_STARTED), cell("old", "us", active, 0, 0, 0, 0),
		}, Request{Region: "us", Cell: "new"}, "new", nil},
		{"all full", []Candidate{cell("a", "us", active, 1, 0, 1, 0), cell("b", "us", active, 2, 0, 2, 0)},
			Request{Region: "us"}, "", cperr.ErrNoCapacity},
		{"explicit cell", []Candidate{cell("a", "us", active, 0, 0, 0, 0), cell("b", "us", active, 0, 0, 9, 0)},
			Request{Region: "us", Cell: "b"}, "b", nil},
		{"explicit cell missing", []Candidate{cell("a", "us", active, 0, 0, 0, 0)},
			Request{Region: "us", Cell: "zz"}, "", cperr.ErrCellNotFound},
		{"explicit cell in another region", []Candidate{cell("a", "eu", active, 0, 0, 0, 0)},
			Request{Region: "us", Cell: "a"}, "", cperr.ErrInvalidArgument},
		{"explicit cell cordoned", []Candidate{cell("a", "us", cordoned, 0, 0, 0, 0)},
			Request{Region: "us", Cell: "a"}, "", cperr.ErrCellNotActive},
		{"explicit cell full", []Candidate{cell("a", "us", active, 1, 0, 1, 0)},
			Request{Region: "us", Cell: "a"}, "", cperr.ErrNoCapacity},
		{"nil load counts as empty", []Candidate{{Cell: &cpv1.Cell{Id: "a", Region: "us", State: active}, Health: cpv1.CellHealth_CELL_HEALTH_HEALTHY}},
			Request{Region: "us"}, "a", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Pick(tc.cands, tc.req)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("Pick = %q, %v; want error %v", got, err, tc.wantErr)
				}
				if err.Error() == string(tc.wantErr.Reason) {
					t.Fatalf("error %v has no message an operator can act on", err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("Pick = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestStateName(t *testing.T) {
	if got := StateName(cordoned); got != "CORDONED" {
		t.Fatalf("StateName = %q", got)
	}
}
