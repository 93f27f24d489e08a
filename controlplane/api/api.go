// Package api implements cellplane.controlplane.v1.ControlPlaneService over
// the topo store. Reads go straight to the store; admin writes (regions,
// cells, API keys) are single-record compare-and-set transactions that any
// replica may serve; tenant create and delete record a durable workflow
// (intent.StartCreate / StartDelete) that the controller leader drives,
// and the call waits for it to finish.
//
// Errors follow the error contract: handlers return *cperr.Error; store
// errors are mapped once by UnaryServerInterceptor (an unreachable etcd is
// CONTROLPLANE_UNAVAILABLE with a retry hint).
package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/intent"
	"github.com/cellplane/cellplane/controlplane/placement"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/auth"
	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Config bounds the API.
type Config struct {
	// MaxIDLen bounds region, cell and tenant ids (the rule of package ids).
	MaxIDLen int
	// DefaultPageSize and MaxPageSize bound ListTenants pages.
	DefaultPageSize, MaxPageSize int
	// MaxScanPerPage bounds the tenant records one ListTenants call reads
	// while filtering; a page may come back short with a next token.
	MaxScanPerPage int
	// WorkflowWait bounds how long CreateTenant and DeleteTenant wait for
	// their workflow when the call has no deadline of its own.
	WorkflowWait time.Duration
	// MaxDescriptionLen bounds free-text descriptions.
	MaxDescriptionLen int
	// RegistryEndpoints and RegistryPrefix are what GetRegistry answers
	// (filled in by the replica).
	RegistryEndpoints []string
	RegistryPrefix    string
	// RegistryCaller, when set, runs before GetRegistry answers: the
	// replica provisions the caller's etcd user there. Its error is
	// returned to the caller.
	RegistryCaller func(ctx context.Context) error
	Logger         *slog.Logger
	// Cells reads a standby's replication for GetTenant (nil: never shown);
	// StandbyStatusTimeout bounds that read (see standby.go).
	Cells                CellReader
	StandbyStatusTimeout time.Duration
	// FailoverPolicyDefaults is what GetFailoverPolicy answers while no
	// policy is stored: the controller's flags (filled by the replica;
	// nil: disabled).
	FailoverPolicyDefaults *cpv1.FailoverPolicy
	// Subjects serves ListTenantAudit and EraseSubject (nil: refused);
	// EraseWait is how long EraseSubject waits for the standby's
	// acknowledgement when the request names no wait, MaxEraseWait the
	// most it waits (audit.go).
	Subjects     SubjectCells
	EraseWait    time.Duration
	MaxEraseWait time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		MaxIDLen: ids.MaxLen, DefaultPageSize: 100, MaxPageSize: 1000, MaxScanPerPage: 10000,
		WorkflowWait: 30 * time.Second, MaxDescriptionLen: 256, StandbyStatusTimeout: time.Second,
		EraseWait: 10 * time.Second, MaxEraseWait: 2 * time.Minute,
	}
}

// Validate reports an unusable configuration.
func (c Config) Validate() error {
	if c.MaxIDLen < 1 || c.DefaultPageSize < 1 || c.MaxPageSize < c.DefaultPageSize || c.MaxScanPerPage < c.MaxPageSize || c.WorkflowWait <= 0 || c.MaxDescriptionLen < 0 || c.StandbyStatusTimeout <= 0 ||
		c.EraseWait < 0 || c.MaxEraseWait < c.EraseWait {
		return fmt.Errorf("api: invalid config %+v", c)
	}
	return nil
}

// Server implements ControlPlaneService.
type Server struct {
	cpv1.UnimplementedControlPlaneServiceServer
	st  topo.Store
	cfg Config
	log *slog.Logger
}

// New returns the service over st.
func New(st topo.Store, cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Server{st: st, cfg: cfg, log: log}, nil
}

// Register adds the service to gs.
func (s *Server) Register(gs *grpc.Server) { cpv1.RegisterControlPlaneServiceServer(gs, s) }

// UnaryServerInterceptor maps store errors to the error contract; install
// it inside rpcerr's interceptor.
func UnaryServerInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		return resp, catalog.StoreError(err)
	}
}

func (s *Server) checkID(field, id string) error {
	return ids.Check(field, id, s.cfg.MaxIDLen)
}

func (s *Server) checkDescription(d string) error {
	if len(d) > s.cfg.MaxDescriptionLen {
		return cperr.Invalid(cperr.FieldViolation{Field: "description", Description: fmt.Sprintf("at most %d bytes", s.cfg.MaxDescriptionLen)})
	}
	return nil
}

// GetStatus implements ControlPlaneService.
func (s *Server) GetStatus(ctx context.Context, _ *cpv1.GetStatusRequest) (*cpv1.GetStatusResponse, error) {
	regions, err := catalog.Regions(ctx, s.st)
	if err != nil {
		return nil, err
	}
	cells, err := catalog.Cells(ctx, s.st)
	if err != nil {
		return nil, err
	}
	out := &cpv1.GetStatusResponse{Regions: regions, ControllerLeader: &cpv1.ControllerLeader{}}
	for _, ci := range cells {
		out.Cells = append(out.Cells, ci.Status())
	}
	switch l, err := catalog.ControllerLeader(ctx, s.st); {
	case err == nil:
		out.ControllerLeader = l
	case !errors.Is(err, topo.ErrNotFound) && !errors.Is(err, catalog.ErrCorrupt):
		return nil, err
	}
	if _, err := catalog.Each(ctx, s.st, topo.WorkflowsPrefix, 0, func(kv topo.KV) error {
		out.PendingWorkflows++
		return nil
	}); err != nil {
		return nil, err
	}
	return out, nil
}

// CreateRegion implements ControlPlaneService.
func (s *Server) CreateRegion(ctx context.Context, req *cpv1.CreateRegionRequest) (*cpv1.CreateRegionResponse, error) {
	if err := errors.Join(s.checkID("name", req.GetName()), s.checkDescription(req.GetDescription())); err != nil {
		return nil, firstInvalid(err)
	}
	r := &cpv1.Region{Name: req.GetName(), Description: req.GetDescription(), CreateTime: timestamppb.Now()}
	if _, err := s.st.Create(ctx, topo.RegionKey(r.GetName()), catalog.Encode(r)); err != nil {
		if errors.Is(err, topo.ErrExists) {
			return nil, cperr.New(cperr.AlreadyExists, "region %s already exists", r.GetName())
		}
		return nil, err
	}
	s.log.Info("region created", "region", r.GetName())
	return &cpv1.CreateRegionResponse{Region: r}, nil
}

// ListRegions implements ControlPlaneService.
func (s *Server) ListRegions(ctx context.Context, _ *cpv1.ListRegionsRequest) (*cpv1.ListRegionsResponse, error) {
	regions, err := catalog.Regions(ctx, s.st)
	if err != nil {
		return nil, err
	}
	return &cpv1.ListRegionsResponse{Regions: regions}, nil
}

// CreateCell implements ControlPlaneService.
func (s *Server) CreateCell(ctx context.Context, req *cpv1.CreateCellRequest) (*cpv1.CreateCellResponse, error) {
	if err := s.checkID("id", req.GetId()); err != nil {
		return nil, err
	}
	if err := s.checkID("region", req.GetRegion()); err != nil {
		return nil, err
	}
	members := req.GetExpectedMembers()
	if members == 0 {
		members = 3
	}
	if members%2 == 0 || members > 7 {
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "expected_members", Description: "must be 1, 3, 5 or 7 (an odd Raft group)"})
	}
	c := &cpv1.Cell{
		Id: req.GetId(), Region: req.GetRegion(), ExpectedMembers: members, State: cpv1.CellState_CELL_STATE_ACTIVE,
		Capacity: req.GetCapacity(), CreateTime: timestamppb.Now(),
	}
	if c.Capacity == nil {
		c.Capacity = &cpv1.CellCapacity{}
	}
	// The region record is rewritten (unchanged) in the same transaction:
	// its new version makes a concurrent DeleteRegion re-check (manage.go).
	region, rv, err := catalog.GetRegion(ctx, s.st, c.GetRegion())
	if errors.Is(err, topo.ErrNotFound) {
		rv = 0
	} else if err != nil {
		return nil, err
	}
	ops := []topo.Op{topo.Put(topo.CellKey(c.GetId()), catalog.Encode(c)), topo.Put(topo.CellLoadKey(c.GetId()), catalog.Encode(&cpv1.CellLoad{}))}
	if rv != 0 {
		ops = append(ops, topo.Put(topo.RegionKey(c.GetRegion()), catalog.Encode(region)))
	}
	_, err = s.st.Txn(ctx, []topo.Cond{topo.IfAbsent(topo.CellKey(c.GetId())), topo.IfExists(topo.RegionKey(c.GetRegion())), topo.IfVersion(topo.RegionKey(c.GetRegion()), rv)}, ops)
	var ce *topo.CondError
	if errors.As(err, &ce) {
		if ce.Index == 0 {
			return nil, cperr.New(cperr.AlreadyExists, "cell %s already exists", c.GetId())
		}
		if ce.Index == 1 {
			return nil, cperr.New(cperr.RegionNotFound, "region %s does not exist: create it with 'cellctl region create %s'", c.GetRegion(), c.GetRegion())
		}
		return s.CreateCell(ctx, req) // the region changed meanwhile (an update): read it again
	}
	if err != nil {
		return nil, err
	}
	s.log.Info("cell created", "cell", c.GetId(), "region", c.GetRegion(), "members", members)
	return &cpv1.CreateCellResponse{Cell: c}, nil
}

// GetCell implements ControlPlaneService.
func (s *Server) GetCell(ctx context.Context, req *cpv1.GetCellRequest) (*cpv1.GetCellResponse, error) {
	if err := s.checkID("id", req.GetId()); err != nil {
		return nil, err
	}
	ci, err := catalog.Cell(ctx, s.st, req.GetId())
	if err != nil {
		return nil, err
	}
	return &cpv1.GetCellResponse{Cell: ci.Status()}, nil
}

// ListCells implements ControlPlaneService.
func (s *Server) ListCells(ctx context.Context, req *cpv1.ListCellsRequest) (*cpv1.ListCellsResponse, error) {
	cells, err := catalog.Cells(ctx, s.st)
	if err != nil {
		return nil, err
	}
	out := &cpv1.ListCellsResponse{}
	for _, ci := range cells {
		if req.GetRegion() == "" || ci.Cell.GetRegion() == req.GetRegion() {
			out.Cells = append(out.Cells, ci.Status())
		}
	}
	return out, nil
}

// CordonCell implements ControlPlaneService.
func (s *Server) CordonCell(ctx context.Context, req *cpv1.CordonCellRequest) (*cpv1.CordonCellResponse, error) {
	c, err := s.setCellState(ctx, req.GetId(), cpv1.CellState_CELL_STATE_CORDONED)
	if err != nil {
		return nil, err
	}
	return &cpv1.CordonCellResponse{Cell: c}, nil
}

// UncordonCell implements ControlPlaneService.
func (s *Server) UncordonCell(ctx context.Context, req *cpv1.UncordonCellRequest) (*cpv1.UncordonCellResponse, error) {
	c, err := s.setCellState(ctx, req.GetId(), cpv1.CellState_CELL_STATE_ACTIVE)
	if err != nil {
		return nil, err
	}
	return &cpv1.UncordonCellResponse{Cell: c}, nil
}

func (s *Server) setCellState(ctx context.Context, id string, to cpv1.CellState) (*cpv1.Cell, error) {
	if err := s.checkID("id", id); err != nil {
		return nil, err
	}
	for {
		c, v, err := catalog.GetCell(ctx, s.st, id)
		if errors.Is(err, topo.ErrNotFound) {
			return nil, cperr.New(cperr.CellNotFound, "cell %s does not exist", id)
		}
		if err != nil {
			return nil, err
		}
		if c.GetState() == to {
			return c, nil
		}
		if c.GetState() == cpv1.CellState_CELL_STATE_DOWN {
			return nil, cperr.New(cperr.CellNotActive, "cell %s is DOWN; its state changes through failover, not cordon/uncordon", id)
		}
		c.State = to
		_, err = s.st.Update(ctx, topo.CellKey(id), catalog.Encode(c), v)
		if errors.Is(err, topo.ErrVersionMismatch) {
			continue // changed meanwhile: re-read and decide again
		}
		if err != nil {
			return nil, err
		}
		s.log.Info("cell state changed", "cell", id, "state", placement.StateName(to))
		return c, nil
	}
}

// CreateTenant implements ControlPlaneService.
func (s *Server) CreateTenant(ctx context.Context, req *cpv1.CreateTenantRequest) (*cpv1.CreateTenantResponse, error) {
	if err := s.checkID("id", req.GetId()); err != nil {
		return nil, err
	}
	if err := s.checkID("home_region", req.GetHomeRegion()); err != nil {
		return nil, err
	}
	if req.GetCell() != "" {
		if err := s.checkID("cell", req.GetCell()); err != nil {
			return nil, err
		}
	}
	if err := checkLimits(req.GetLimits()); err != nil {
		return nil, err
	}
	var rhash []byte
	if rid := req.GetRequestId(); rid != "" {
		if err := s.checkID("request_id", rid); err != nil {
			return nil, err
		}
		rhash = requestHash(req, func(r *cpv1.CreateTenantRequest) { r.RequestId = "" })
		if resp, found, err := s.createRetry(ctx, req, rhash); found {
			return resp, err
		}
	}
	if _, err := s.st.Get(ctx, topo.RegionKey(req.GetHomeRegion())); err != nil {
		if errors.Is(err, topo.ErrNotFound) {
			return nil, cperr.New(cperr.RegionNotFound, "region %s does not exist", req.GetHomeRegion())
		}
		return nil, err
	}
	// Pre-check so that an impossible placement is refused before anything
	// is written; the controller decides for good.
	cells, err := catalog.Cells(ctx, s.st)
	if err != nil {
		return nil, err
	}
	if _, err := placement.Pick(intent.Candidates(cells), placement.Request{Region: req.GetHomeRegion(), Cell: req.GetCell()}); err != nil {
		return nil, err
	}
	standby, err := s.standbyForCreate(ctx, req) // standby.go
	if err != nil {
		return nil, err
	}
	t := &cpv1.Tenant{Id: req.GetId(), HomeRegion: req.GetHomeRegion(), Limits: req.GetLimits(), StandbyCell: standby, DeletionProtection: req.GetDeletionProtection(),
		CreateRequestId: req.GetRequestId(), CreateRequestHash: rhash}
	if t.Limits == nil {
		t.Limits = &cpv1.TenantLimits{}
	}
	if err := intent.StartCreate(ctx, s.st, t, req.GetCell()); err != nil {
		if rhash != nil && (errors.Is(err, cperr.ErrAlreadyExists) || errors.Is(err, cperr.ErrTenantBusy)) {
			// A concurrent call with the same request id got there first?
			if resp, found, rerr := s.createRetry(ctx, req, rhash); found {
				return resp, rerr
			}
		}
		return nil, err
	}
	placed, err := s.waitCreate(ctx, t.GetId())
	if err != nil {
		return nil, err
	}
	return &cpv1.CreateTenantResponse{Tenant: placed}, nil
}

// waitCreate waits (bounded) for tenant id's create workflow to end.
func (s *Server) waitCreate(ctx context.Context, id string) (*cpv1.Tenant, error) {
	wctx, cancel := s.waitContext(ctx)
	defer cancel()
	placed, err := intent.WaitCreate(wctx, s.st, id)
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, cperr.New(cperr.ControlPlaneUnavailable,
			"tenant %s is recorded but not placed yet after %v (is a controller leader running?); 'cellctl tenant get %s' shows when it is", id, s.cfg.WorkflowWait, id).
			WithRetryAfter(time.Second)
	}
	return placed, err
}

func (s *Server) waitContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(ctx, s.cfg.WorkflowWait)
}

// GetTenant implements ControlPlaneService.
func (s *Server) GetTenant(ctx context.Context, req *cpv1.GetTenantRequest) (*cpv1.GetTenantResponse, error) {
	if err := s.checkID("id", req.GetId()); err != nil {
		return nil, err
	}
	t, tv, err := catalog.GetTenant(ctx, s.st, req.GetId())
	if errors.Is(err, topo.ErrNotFound) {
		return nil, cperr.New(cperr.TenantNotFound, "tenant %s does not exist", req.GetId())
	}
	if err != nil {
		return nil, err
	}
	return &cpv1.GetTenantResponse{Tenant: t, Replication: s.standbyLag(ctx, t), Version: uint64(tv)}, nil
}

// ListTenants implements ControlPlaneService.
func (s *Server) ListTenants(ctx context.Context, req *cpv1.ListTenantsRequest) (*cpv1.ListTenantsResponse, error) {
	size := int(req.GetPageSize())
	switch {
	case size == 0:
		size = s.cfg.DefaultPageSize
	case size > s.cfg.MaxPageSize:
		return nil, cperr.Invalid(cperr.FieldViolation{Field: "page_size", Description: fmt.Sprintf("at most %d", s.cfg.MaxPageSize)})
	}
	after := ""
	if tok := req.GetPageToken(); tok != "" {
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || !ids.Valid(string(b), s.cfg.MaxIDLen) {
			return nil, cperr.Invalid(cperr.FieldViolation{Field: "page_token", Description: "not a token from a previous page"})
		}
		// Past the tenant and its API keys ("tenants/<id>/...").
		after = topo.TenantKey(string(b)) + "/\xff"
	}
	out := &cpv1.ListTenantsResponse{}
	scanned := 0
	last := ""
	opts := topo.ListOptions{After: after, Limit: min(s.cfg.MaxPageSize, s.cfg.MaxScanPerPage)}
	for {
		page, err := s.st.List(ctx, topo.TenantsPrefix, opts)
		if err != nil {
			return nil, err
		}
		for _, kv := range page.KVs {
			pk := topo.ParseKey(kv.Key)
			if pk.Kind != topo.KindTenant {
				continue
			}
			scanned++
			last = pk.ID
			t := &cpv1.Tenant{}
			if err := catalog.Decode(kv, t); err != nil {
				return nil, err
			}
			if (req.GetCell() == "" || t.GetCell() == req.GetCell()) &&
				(req.GetRegion() == "" || t.GetHomeRegion() == req.GetRegion()) &&
				(req.GetState() == cpv1.TenantState_TENANT_STATE_UNSPECIFIED || t.GetState() == req.GetState()) {
				out.Tenants = append(out.Tenants, t)
			}
			if len(out.Tenants) == size || scanned >= s.cfg.MaxScanPerPage {
				// Is anything left after this one?
				if more, err := s.st.List(ctx, topo.TenantsPrefix, topo.ListOptions{After: topo.TenantKey(last) + "/\xff", Limit: 1, KeysOnly: true}); err != nil {
					return nil, err
				} else if len(more.KVs) > 0 {
					out.NextPageToken = base64.RawURLEncoding.EncodeToString([]byte(last))
				}
				return out, nil
			}
		}
		if !page.More || len(page.KVs) == 0 {
			return out, nil
		}
		opts.After = page.KVs[len(page.KVs)-1].Key
		opts.Revision = page.Revision
	}
}

// DeleteTenant implements ControlPlaneService.
func (s *Server) DeleteTenant(ctx context.Context, req *cpv1.DeleteTenantRequest) (*cpv1.DeleteTenantResponse, error) {
	if err := s.checkID("id", req.GetId()); err != nil {
		return nil, err
	}
	if err := intent.StartDelete(ctx, s.st, req.GetId()); err != nil {
		return nil, err
	}
	wctx, cancel := s.waitContext(ctx)
	defer cancel()
	err := intent.WaitDelete(wctx, s.st, req.GetId())
	if errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
		return nil, cperr.New(cperr.ControlPlaneUnavailable,
			"tenant %s is tombstoned but its data is not removed yet after %v (is a controller leader running? is its cell up?)", req.GetId(), s.cfg.WorkflowWait).
			WithRetryAfter(time.Second)
	}
	if err != nil {
		return nil, err
	}
	return &cpv1.DeleteTenantResponse{}, nil
}

// liveTenant returns the version of tenant's record, or TENANT_NOT_FOUND
// when it does not exist or is being deleted (its keys and revocation
// lists go with it).
func (s *Server) liveTenant(ctx context.Context, tenant string) (topo.Version, error) {
	t, tv, err := catalog.GetTenant(ctx, s.st, tenant)
	if errors.Is(err, topo.ErrNotFound) || (err == nil && t.GetState() == cpv1.TenantState_TENANT_STATE_DELETING) {
		return 0, cperr.New(cperr.TenantNotFound, "tenant %s does not exist", tenant)
	}
	return tv, err
}

// CreateApiKey implements ControlPlaneService.
func (s *Server) CreateApiKey(ctx context.Context, req *cpv1.CreateApiKeyRequest) (*cpv1.CreateApiKeyResponse, error) {
	if err := errors.Join(s.checkID("tenant", req.GetTenant()), s.checkDescription(req.GetDescription())); err != nil {
		return nil, firstInvalid(err)
	}
	tv, err := s.liveTenant(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	principal, scopes, err := s.keyGrant(ctx, req)
	if err != nil {
		return nil, err
	}
	id, secret, hash, err := auth.NewKey()
	if err != nil {
		return nil, err
	}
	k := &cpv1.ApiKey{Id: id, Tenant: req.GetTenant(), SecretHash: hash, Description: req.GetDescription(), CreateTime: timestamppb.Now(),
		Principal: principal, Scopes: scopes}
	key := topo.APIKeyKey(k.GetTenant(), id)
	if _, err := s.st.Txn(ctx,
		[]topo.Cond{topo.IfVersion(topo.TenantKey(k.GetTenant()), tv), topo.IfAbsent(key)},
		[]topo.Op{topo.Put(key, catalog.Encode(k))}); err != nil {
		if errors.Is(err, topo.ErrConditionFailed) {
			return nil, cperr.New(cperr.TenantBusy, "tenant %s changed while the key was created; try again", k.GetTenant())
		}
		return nil, err
	}
	s.log.Info("api key created", "tenant", k.GetTenant(), "key_id", id, "principal", auth.KeyPrincipal(id, principal), "replaces", req.GetReplaces())
	return &cpv1.CreateApiKeyResponse{Key: public(k), Secret: secret}, nil
}

// keyGrant settles a new key's principal and scopes: as asked, or, for a
// rotation (replaces), the replaced key's.
func (s *Server) keyGrant(ctx context.Context, req *cpv1.CreateApiKeyRequest) (principal string, scopes []string, err error) {
	var vs []cperr.FieldViolation
	if p := req.GetPrincipal(); p != "" {
		if err := auth.CheckPrincipalName(p); err != nil {
			vs = append(vs, cperr.FieldViolation{Field: "principal", Description: err.Error()})
		}
	}
	if _, err := auth.CheckScopeList(req.GetScopes()); err != nil {
		vs = append(vs, cperr.FieldViolation{Field: "scopes", Description: err.Error()})
	}
	if r := req.GetReplaces(); r != "" {
		if err := s.checkID("replaces", r); err != nil {
			return "", nil, err
		}
	}
	if len(vs) > 0 {
		return "", nil, cperr.Invalid(vs...)
	}
	principal, scopes = req.GetPrincipal(), req.GetScopes()
	if req.GetReplaces() == "" {
		return principal, scopes, nil
	}
	old, _, err := catalog.GetAPIKey(ctx, s.st, req.GetTenant(), req.GetReplaces())
	if errors.Is(err, topo.ErrNotFound) {
		return "", nil, cperr.Invalid(cperr.FieldViolation{Field: "replaces", Description: fmt.Sprintf("tenant %s has no key %s", req.GetTenant(), req.GetReplaces())})
	}
	if err != nil {
		return "", nil, err
	}
	inherited := old.GetPrincipal()
	if inherited == "" {
		inherited = old.GetId() // the old key acted as its id: so does the new one
	}
	if principal != "" && principal != inherited {
		return "", nil, cperr.Invalid(cperr.FieldViolation{Field: "principal", Description: fmt.Sprintf("the replaced key's principal is %s; a rotation keeps it", inherited)})
	}
	if len(scopes) == 0 {
		scopes = old.GetScopes()
	}
	return inherited, scopes, nil
}

// ListApiKeys implements ControlPlaneService.
func (s *Server) ListApiKeys(ctx context.Context, req *cpv1.ListApiKeysRequest) (*cpv1.ListApiKeysResponse, error) {
	if err := s.checkID("tenant", req.GetTenant()); err != nil {
		return nil, err
	}
	if _, err := s.st.Get(ctx, topo.TenantKey(req.GetTenant())); errors.Is(err, topo.ErrNotFound) {
		return nil, cperr.New(cperr.TenantNotFound, "tenant %s does not exist", req.GetTenant())
	} else if err != nil {
		return nil, err
	}
	keys, _, err := catalog.ListAPIKeys(ctx, s.st, req.GetTenant())
	if err != nil {
		return nil, err
	}
	out := &cpv1.ListApiKeysResponse{}
	for _, k := range keys {
		out.Keys = append(out.Keys, public(k.Value))
	}
	return out, nil
}

// RevokeApiKey implements ControlPlaneService.
func (s *Server) RevokeApiKey(ctx context.Context, req *cpv1.RevokeApiKeyRequest) (*cpv1.RevokeApiKeyResponse, error) {
	if err := errors.Join(s.checkID("tenant", req.GetTenant()), s.checkID("id", req.GetId())); err != nil {
		return nil, firstInvalid(err)
	}
	key := topo.APIKeyKey(req.GetTenant(), req.GetId())
	for {
		k, v, err := catalog.GetAPIKey(ctx, s.st, req.GetTenant(), req.GetId())
		if errors.Is(err, topo.ErrNotFound) {
			return nil, cperr.New(cperr.APIKeyNotFound, "tenant %s has no API key %s", req.GetTenant(), req.GetId())
		}
		if err != nil {
			return nil, err
		}
		if k.GetRevokeTime() != nil {
			return &cpv1.RevokeApiKeyResponse{Key: public(k)}, nil
		}
		k.RevokeTime = timestamppb.Now()
		if _, err := s.st.Update(ctx, key, catalog.Encode(k), v); errors.Is(err, topo.ErrVersionMismatch) {
			continue
		} else if err != nil {
			return nil, err
		}
		s.log.Info("api key revoked", "tenant", k.GetTenant(), "key_id", k.GetId())
		return &cpv1.RevokeApiKeyResponse{Key: public(k)}, nil
	}
}

// Limits of a RevokeToken request.
const (
	// maxTokenClaimLen bounds a revoked subject or jti (bytes).
	maxTokenClaimLen = 1024
	// maxTokenRevocation bounds how far ahead an entry may expire: longer
	// than any sane JWT lifetime, short enough that the list stays small.
	maxTokenRevocation = 366 * 24 * time.Hour
)

// RevokeToken implements ControlPlaneService: one guarded write of the
// entry (the tenant must exist and not be deleting). Revoking again
// replaces the entry (a later revoke_time, the new expiry).
func (s *Server) RevokeToken(ctx context.Context, req *cpv1.RevokeTokenRequest) (*cpv1.RevokeTokenResponse, error) {
	now := time.Now()
	var errs []error
	errs = append(errs, s.checkID("tenant", req.GetTenant()), s.checkDescription(req.GetReason()))
	sub, jti := req.GetSubject(), req.GetJti()
	switch {
	case (sub == "") == (jti == ""):
		errs = append(errs, cperr.Invalid(cperr.FieldViolation{Field: "subject", Description: "exactly one of subject and jti is required"}))
	case len(sub) > maxTokenClaimLen:
		errs = append(errs, cperr.Invalid(cperr.FieldViolation{Field: "subject", Description: fmt.Sprintf("at most %d bytes", maxTokenClaimLen)}))
	case len(jti) > maxTokenClaimLen:
		errs = append(errs, cperr.Invalid(cperr.FieldViolation{Field: "jti", Description: fmt.Sprintf("at most %d bytes", maxTokenClaimLen)}))
	}
	exp := req.GetExpireTime()
	switch {
	case exp == nil || !exp.IsValid():
		errs = append(errs, cperr.Invalid(cperr.FieldViolation{Field: "expire_time", Description: "is required (until when the tokens concerned may still be presented)"}))
	case !exp.AsTime().After(now):
		errs = append(errs, cperr.Invalid(cperr.FieldViolation{Field: "expire_time", Description: "must be in the future"}))
	case exp.AsTime().Sub(now) > maxTokenRevocation:
		errs = append(errs, cperr.Invalid(cperr.FieldViolation{Field: "expire_time", Description: fmt.Sprintf("at most %s ahead", maxTokenRevocation)}))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, firstInvalid(err)
	}
	tv, err := s.liveTenant(ctx, req.GetTenant())
	if err != nil {
		return nil, err
	}
	rec := &cpv1.RevokedToken{Tenant: req.GetTenant(), Subject: sub, Jti: jti, RevokeTime: timestamppb.New(now), ExpireTime: exp, Reason: req.GetReason()}
	if _, err := s.st.Txn(ctx,
		[]topo.Cond{topo.IfVersion(topo.TenantKey(rec.GetTenant()), tv)},
		[]topo.Op{topo.Put(topo.RevokedTokenKey(rec.GetTenant(), catalog.RevokedTokenID(rec)), catalog.Encode(rec))}); err != nil {
		if errors.Is(err, topo.ErrConditionFailed) {
			return nil, cperr.New(cperr.TenantBusy, "tenant %s changed while the token was revoked; try again", rec.GetTenant())
		}
		return nil, err
	}
	// The subject and jti are not logged: they may be personal data.
	s.log.Info("token revoked", "tenant", rec.GetTenant(), "by_subject", sub != "", "expire_time", exp.AsTime())
	return &cpv1.RevokeTokenResponse{Revoked: rec}, nil
}

// GetRegistry implements ControlPlaneService.
func (s *Server) GetRegistry(ctx context.Context, _ *cpv1.GetRegistryRequest) (*cpv1.GetRegistryResponse, error) {
	if len(s.cfg.RegistryEndpoints) == 0 {
		return nil, cperr.New(cperr.ControlPlaneUnavailable, "this replica does not know its etcd endpoints")
	}
	if s.cfg.RegistryCaller != nil {
		if err := s.cfg.RegistryCaller(ctx); err != nil {
			return nil, err
		}
	}
	return &cpv1.GetRegistryResponse{EtcdEndpoints: s.cfg.RegistryEndpoints, Prefix: s.cfg.RegistryPrefix}, nil
}

// public strips the hash: it never leaves the control plane's API.
func public(k *cpv1.ApiKey) *cpv1.ApiKey {
	k = proto.Clone(k).(*cpv1.ApiKey)
	k.SecretHash = nil
	return k
}

// firstInvalid merges joined INVALID_ARGUMENT errors into one.
func firstInvalid(err error) error {
	var vs []cperr.FieldViolation
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			var ce *cperr.Error
			if errors.As(e, &ce) {
				vs = append(vs, ce.Violations...)
			}
		}
	}
	if len(vs) == 0 {
		return err
	}
	return cperr.Invalid(vs...)
}
