package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/testutil"
	controlplanev1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// startControlPlane serves a ControlPlaneService on a loopback listener for
// the duration of the test and returns its address for --controlplane.
//
// Today it serves fakeControlPlane, an in-memory stand-in; it is the one
// place to swap for the real control plane (controlplane/...) once that
// exists. The tests only talk to it through cellctl, so they do not depend
// on the fake beyond what the golden files show (fixed timestamps, every
// cell HEALTHY with all its members and a leader).
func startControlPlane(t *testing.T) (addr string) {
	t.Helper()
	lis := testutil.Listen(t)
	// Errors go through rpcerr.UnaryServerInterceptor (rpcerr.ToStatus),
	// as on the real servers, so that cellctl's error path is the real one.
	srv := grpc.NewServer(grpc.ChainUnaryInterceptor(rpcerr.UnaryServerInterceptor()))
	controlplanev1.RegisterControlPlaneServiceServer(srv, newFakeControlPlane())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	t.Cleanup(func() {
		srv.Stop()
		<-done
	})
	return lis.Addr().String()
}

// fakeNow is the fake's clock: every timestamp it sets, so golden output is
// stable.
var fakeNow = timestamppb.New(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC))

// fakeControlPlane is an in-memory ControlPlaneService: enough behaviour
// (validation, placement, pagination, errors with their reasons) for the
// CLI's tests.
type fakeControlPlane struct {
	controlplanev1.UnimplementedControlPlaneServiceServer

	mu      sync.Mutex
	regions map[string]*controlplanev1.Region
	cells   map[string]*controlplanev1.Cell
	tenants map[string]*controlplanev1.Tenant
	keys    map[string][]*controlplanev1.ApiKey // by tenant, in creation order
	nextKey int
}

func newFakeControlPlane() *fakeControlPlane {
	return &fakeControlPlane{
		regions: map[string]*controlplanev1.Region{},
		cells:   map[string]*controlplanev1.Cell{},
		tenants: map[string]*controlplanev1.Tenant{},
		keys:    map[string][]*controlplanev1.ApiKey{},
	}
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func clone[M proto.Message](m M) M { return proto.Clone(m).(M) }

func required(field, value string) error {
	if strings.TrimSpace(value) == "" {
		return cperr.Invalid(cperr.FieldViolation{Field: field, Description: "required"})
	}
	return nil
}

func tenantNotFound(id string) error {
	return cperr.New(cperr.TenantNotFound, "tenant %q not found", id).With(cperr.MetaTenant, id)
}

// cellStatus pretends every member registered and n1 leads. Caller holds mu.
func (f *fakeControlPlane) cellStatus(c *controlplanev1.Cell) *controlplanev1.CellStatus {
	cs := &controlplanev1.CellStatus{
		Cell:   clone(c),
		Health: controlplanev1.CellHealth_CELL_HEALTH_HEALTHY,
		Load:   &controlplanev1.CellLoad{},
	}
	for i := range int(c.GetExpectedMembers()) {
		id := fmt.Sprintf("%s-n%d", c.GetId(), i+1)
		cs.Nodes = append(cs.Nodes, &controlplanev1.Node{
			Id: id, Cell: c.GetId(), Role: controlplanev1.NodeRole_NODE_ROLE_MEMBER,
			RaftAddr:  fmt.Sprintf("10.0.0.%d:7210", i+1),
			GrpcAddr:  fmt.Sprintf("10.0.0.%d:7211", i+1),
			HttpAddr:  fmt.Sprintf("10.0.0.%d:7212", i+1),
			Version:   "v0.1.0",
			StartTime: fakeNow,
		})
	}
	if len(cs.Nodes) > 0 {
		n := cs.Nodes[0]
		cs.Leader = &controlplanev1.CellLeader{NodeId: n.GetId(), GrpcAddr: n.GetGrpcAddr(), HttpAddr: n.GetHttpAddr(), Term: 1, Since: fakeNow}
	}
	for _, t := range f.tenants {
		if t.GetCell() == c.GetId() {
			cs.Load.Tenants++
		}
	}
	return cs
}

func (f *fakeControlPlane) GetStatus(context.Context, *controlplanev1.GetStatusRequest) (*controlplanev1.GetStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &controlplanev1.GetStatusResponse{
		ControllerLeader: &controlplanev1.ControllerLeader{Id: "cp-1", GrpcAddr: "10.0.1.1:7000", Since: fakeNow},
	}
	for _, name := range sortedKeys(f.regions) {
		resp.Regions = append(resp.Regions, clone(f.regions[name]))
	}
	for _, id := range sortedKeys(f.cells) {
		resp.Cells = append(resp.Cells, f.cellStatus(f.cells[id]))
	}
	return resp, nil
}

func (f *fakeControlPlane) CreateRegion(_ context.Context, req *controlplanev1.CreateRegionRequest) (*controlplanev1.CreateRegionResponse, error) {
	if err := required("name", req.GetName()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.regions[req.GetName()]; ok {
		return nil, cperr.New(cperr.AlreadyExists, "region %q already exists", req.GetName())
	}
	r := &controlplanev1.Region{Name: req.GetName(), Description: req.GetDescription(), CreateTime: fakeNow}
	f.regions[r.Name] = r
	return &controlplanev1.CreateRegionResponse{Region: clone(r)}, nil
}

func (f *fakeControlPlane) ListRegions(context.Context, *controlplanev1.ListRegionsRequest) (*controlplanev1.ListRegionsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &controlplanev1.ListRegionsResponse{}
	for _, name := range sortedKeys(f.regions) {
		resp.Regions = append(resp.Regions, clone(f.regions[name]))
	}
	return resp, nil
}

func (f *fakeControlPlane) CreateCell(_ context.Context, req *controlplanev1.CreateCellRequest) (*controlplanev1.CreateCellResponse, error) {
	if err := required("id", req.GetId()); err != nil {
		return nil, err
	}
	members := req.GetExpectedMembers()
	if members == 0 {
		members = 3
	}
	if members != 3 && members != 5 {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "expected_members", Description: "must be 3 or 5"})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.regions[req.GetRegion()]; !ok {
		return nil, cperr.New(cperr.InvalidArgument, "region %q does not exist", req.GetRegion())
	}
	if _, ok := f.cells[req.GetId()]; ok {
		return nil, cperr.New(cperr.AlreadyExists, "cell %q already exists", req.GetId())
	}
	c := &controlplanev1.Cell{
		Id: req.GetId(), Region: req.GetRegion(), ExpectedMembers: members,
		Capacity: req.GetCapacity(), State: controlplanev1.CellState_CELL_STATE_ACTIVE, CreateTime: fakeNow,
	}
	if c.Capacity == nil {
		c.Capacity = &controlplanev1.CellCapacity{}
	}
	f.cells[c.Id] = c
	return &controlplanev1.CreateCellResponse{Cell: clone(c)}, nil
}

// cell returns a cell by id. Caller holds mu.
func (f *fakeControlPlane) cell(id string) (*controlplanev1.Cell, error) {
	c, ok := f.cells[id]
	if !ok {
		return nil, cperr.New(cperr.InvalidArgument, "cell %q not found", id).With(cperr.MetaCell, id)
	}
	return c, nil
}

func (f *fakeControlPlane) GetCell(_ context.Context, req *controlplanev1.GetCellRequest) (*controlplanev1.GetCellResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.cell(req.GetId())
	if err != nil {
		return nil, err
	}
	return &controlplanev1.GetCellResponse{Cell: f.cellStatus(c)}, nil
}

func (f *fakeControlPlane) ListCells(_ context.Context, req *controlplanev1.ListCellsRequest) (*controlplanev1.ListCellsResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &controlplanev1.ListCellsResponse{}
	for _, id := range sortedKeys(f.cells) {
		if c := f.cells[id]; req.GetRegion() == "" || c.GetRegion() == req.GetRegion() {
			resp.Cells = append(resp.Cells, f.cellStatus(c))
		}
	}
	return resp, nil
}

func (f *fakeControlPlane) setCellState(id string, s controlplanev1.CellState) (*controlplanev1.Cell, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, err := f.cell(id)
	if err != nil {
		return nil, err
	}
	c.State = s
	return clone(c), nil
}

func (f *fakeControlPlane) CordonCell(_ context.Context, req *controlplanev1.CordonCellRequest) (*controlplanev1.CordonCellResponse, error) {
	c, err := f.setCellState(req.GetId(), controlplanev1.CellState_CELL_STATE_CORDONED)
	if err != nil {
		return nil, err
	}
	return &controlplanev1.CordonCellResponse{Cell: c}, nil
}

func (f *fakeControlPlane) UncordonCell(_ context.Context, req *controlplanev1.UncordonCellRequest) (*controlplanev1.UncordonCellResponse, error) {
	c, err := f.setCellState(req.GetId(), controlplanev1.CellState_CELL_STATE_ACTIVE)
	if err != nil {
		return nil, err
	}
	return &controlplanev1.UncordonCellResponse{Cell: c}, nil
}

func (f *fakeControlPlane) CreateTenant(_ context.Context, req *controlplanev1.CreateTenantRequest) (*controlplanev1.CreateTenantResponse, error) {
	if err := required("id", req.GetId()); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tenants[req.GetId()]; ok {
		return nil, cperr.New(cperr.AlreadyExists, "tenant %q already exists", req.GetId()).With(cperr.MetaTenant, req.GetId())
	}
	if _, ok := f.regions[req.GetHomeRegion()]; !ok {
		return nil, cperr.New(cperr.InvalidArgument, "region %q does not exist", req.GetHomeRegion())
	}
	var cell string
	if req.GetCell() != "" {
		c, err := f.cell(req.GetCell())
		if err != nil {
			return nil, err
		}
		if c.GetRegion() != req.GetHomeRegion() || c.GetState() != controlplanev1.CellState_CELL_STATE_ACTIVE {
			return nil, cperr.New(cperr.InvalidArgument, "cell %q is not an ACTIVE cell of region %q", c.GetId(), req.GetHomeRegion())
		}
		cell = c.GetId()
	} else {
		best := uint64(0)
		for _, id := range sortedKeys(f.cells) {
			c := f.cells[id]
			if c.GetRegion() != req.GetHomeRegion() || c.GetState() != controlplanev1.CellState_CELL_STATE_ACTIVE {
				continue
			}
			load := f.cellStatus(c).GetLoad().GetTenants()
			if max := c.GetCapacity().GetMaxTenants(); max > 0 && load >= max {
				continue
			}
			if cell == "" || load < best {
				cell, best = id, load
			}
		}
		if cell == "" {
			return nil, cperr.New(cperr.CellUnavailable, "no ACTIVE cell with room in region %q", req.GetHomeRegion())
		}
	}
	t := &controlplanev1.Tenant{
		Id: req.GetId(), HomeRegion: req.GetHomeRegion(), Cell: cell,
		State: controlplanev1.TenantState_TENANT_STATE_ACTIVE, Epoch: 1,
		Limits: req.GetLimits(), CreateTime: fakeNow, UpdateTime: fakeNow,
	}
	if t.Limits == nil {
		t.Limits = &controlplanev1.TenantLimits{}
	}
	f.tenants[t.Id] = t
	return &controlplanev1.CreateTenantResponse{Tenant: clone(t)}, nil
}

func (f *fakeControlPlane) GetTenant(_ context.Context, req *controlplanev1.GetTenantRequest) (*controlplanev1.GetTenantResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	t, ok := f.tenants[req.GetId()]
	if !ok {
		return nil, tenantNotFound(req.GetId())
	}
	return &controlplanev1.GetTenantResponse{Tenant: clone(t)}, nil
}

// ListTenants pages by id; the page token is the last id of the page.
func (f *fakeControlPlane) ListTenants(_ context.Context, req *controlplanev1.ListTenantsRequest) (*controlplanev1.ListTenantsResponse, error) {
	size := int(req.GetPageSize())
	if size == 0 {
		size = 100
	}
	if size > 1000 {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "page_size", Description: "at most 1000"})
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	resp := &controlplanev1.ListTenantsResponse{}
	for _, id := range sortedKeys(f.tenants) {
		t := f.tenants[id]
		if id <= req.GetPageToken() ||
			req.GetCell() != "" && t.GetCell() != req.GetCell() ||
			req.GetRegion() != "" && t.GetHomeRegion() != req.GetRegion() ||
			req.GetState() != 0 && t.GetState() != req.GetState() {
			continue
		}
		if len(resp.Tenants) == size {
			resp.NextPageToken = resp.Tenants[size-1].GetId()
			break
		}
		resp.Tenants = append(resp.Tenants, clone(t))
	}
	return resp, nil
}

func (f *fakeControlPlane) DeleteTenant(_ context.Context, req *controlplanev1.DeleteTenantRequest) (*controlplanev1.DeleteTenantResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tenants[req.GetId()]; !ok {
		return nil, tenantNotFound(req.GetId())
	}
	delete(f.tenants, req.GetId())
	delete(f.keys, req.GetId())
	return &controlplanev1.DeleteTenantResponse{}, nil
}

func (f *fakeControlPlane) CreateApiKey(_ context.Context, req *controlplanev1.CreateApiKeyRequest) (*controlplanev1.CreateApiKeyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tenants[req.GetTenant()]; !ok {
		return nil, tenantNotFound(req.GetTenant())
	}
	f.nextKey++
	id := fmt.Sprintf("key-%04d", f.nextKey)
	secret := "cpk_" + id + "_notrandomfortests"
	hash := sha256.Sum256([]byte(secret))
	k := &controlplanev1.ApiKey{Id: id, Tenant: req.GetTenant(), SecretHash: hash[:], Description: req.GetDescription(), CreateTime: fakeNow}
	f.keys[k.Tenant] = append(f.keys[k.Tenant], k)
	return &controlplanev1.CreateApiKeyResponse{Key: clone(k), Secret: secret}, nil
}

func (f *fakeControlPlane) ListApiKeys(_ context.Context, req *controlplanev1.ListApiKeysRequest) (*controlplanev1.ListApiKeysResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tenants[req.GetTenant()]; !ok {
		return nil, tenantNotFound(req.GetTenant())
	}
	resp := &controlplanev1.ListApiKeysResponse{}
	for _, k := range f.keys[req.GetTenant()] {
		resp.Keys = append(resp.Keys, clone(k))
	}
	return resp, nil
}

func (f *fakeControlPlane) RevokeApiKey(_ context.Context, req *controlplanev1.RevokeApiKeyRequest) (*controlplanev1.RevokeApiKeyResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.tenants[req.GetTenant()]; !ok {
		return nil, tenantNotFound(req.GetTenant())
	}
	for _, k := range f.keys[req.GetTenant()] {
		if k.GetId() == req.GetId() {
			if k.RevokeTime == nil {
				k.RevokeTime = fakeNow
			}
			return &controlplanev1.RevokeApiKeyResponse{Key: clone(k)}, nil
		}
	}
	return nil, cperr.New(cperr.KeyNotFound, "API key %q of tenant %q not found", req.GetId(), req.GetTenant()).With(cperr.MetaTenant, req.GetTenant())
}
