// Package client is the Go client of cellplane: a smart client that
// resolves a tenant once through the router (RouterService.Lookup), then
// calls the tenant's cell directly — the leader for writes and consistent
// reads, any member for STALE reads — caching the route and refreshing it
// when a cell answers NOT_LEADER, WRONG_CELL or STALE_EPOCH. Mutating
// requests get a request id when they have none, so every retry is safe
// (the cell applies a request id once). When the cell cannot be reached
// directly, calls fall back to the router.
//
// # Moves and failovers
//
// While a tenant is cut over to another cell, its old owner is fenced and
// its new one not yet the owner: both answer WRONG_CELL (or STALE_EPOCH),
// and a router whose hold ran out answers TENANT_MOVING. The client then
// looks the tenant up again with a short backoff (RetryBackoff, doubling
// up to MaxRetryBackoff, with full jitter) until the route changes, then
// tries again, for at most MovingWait and never past the call's deadline;
// these tries do not count against MaxAttempts. While the route says the
// tenant is cutting over (LookupResponse.cutting_over), calls go through
// the router, which holds them and forwards them to the new owner at the
// flip. Which failures are retried at all is the policy of internal/retry
// (RATE_LIMITED, for one, is retried after its RetryAfter).
//
// # Leader hints
//
// A NOT_LEADER answer's leader hint (ErrorInfo metadata "leader") is
// followed only when it names a member of the tenant's cell in the last
// Lookup answer. Any other hint is ignored (logged at Warn with the keys
// cell and leader_addr, counted by IgnoredLeaderHints) and the call is
// retried at another known member: a malicious or misconfigured node
// cannot redirect the tenant's writes to an address of its choosing.
//
//	cfg := client.DefaultConfig()
//	cfg.Router, cfg.Tenant, cfg.APIKey = "127.0.0.1:7100", "acme", secret
//	c, err := client.New(cfg)
//	if err != nil { ... }
//	defer c.Close()
//	cs := c.Context() // a contextv1.ContextServiceClient
//	_, err = cs.Append(ctx, &contextv1.AppendRequest{ContextId: "chat-1", Entries: entries})
//
// # The direct path and tenant tokens
//
// Against cells without TLS, direct calls reach cell nodes without the
// router's authentication: they are for clients inside the platform's
// network boundary (the API key is still sent and checked whenever a call
// goes through the router). Cells started with TLS material serve mutual
// TLS and accept a tenant program only with a tenant token: set CellCAs
// (the cluster CA; "cellCA" in the CELLPLANE_CONFIG file) and the client
// calls the tenant's cell over TLS — accepting only a node identity of
// that cell — with the token the router minted in its Lookup answer for
// the tenant its API key authenticates (x-cellplane-token). The client
// looks the tenant up again before the token expires (TokenRefresh) and
// once per call when a cell refuses the token (UNAUTHENTICATED: its key
// was rotated away); a Lookup without a token sends calls through the
// router. Without CellCAs, a Lookup answer that carries a token (the
// cells serve mutual TLS) sends every call through the router too: the
// cells would refuse a plaintext direct call.
//
//	cf, _ := client.LoadConfigFile(os.Getenv(client.EnvConfigFile)) // router, tenant, apiKey, cellCA
//	cfg, _ := cf.ClientConfig()
//	c, err := client.New(cfg)
//
// # TLS
//
// Config.TLS secures the connection to the router (a router started with
// --tls-cert/--tls-key): the API key or JWT and the tenant's data then
// travel encrypted. Without CellCAs a direct call would send the tenant's
// data in clear beside an encrypted router connection (and cells with TLS
// refuse it): with TLS set and no CellCAs, the client calls everything
// through the router, whatever Direct says, unless DirectPlaintext opts
// back in to plaintext direct calls (a network the caller trusts between
// it and the cells).
//
//	cfg.TLS = &tls.Config{RootCAs: pool} // nil RootCAs: the system's CAs
package client

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/internal/tenantmd"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	routerv1 "github.com/cellplane/cellplane/proto/cellplane/router/v1"
)

// Config configures a Client.
type Config struct {
	// Router is the router's gRPC address (required).
	Router string
	// Tenant every call is made for (required; 1-128 characters of
	// [A-Za-z0-9._-]).
	Tenant string
	// APIKey, if set, is sent to the router as "authorization: Bearer <key>".
	APIKey string
	// Direct: call cells directly (default true via DefaultConfig); false
	// sends everything through the router. With TLS set it is ignored
	// unless DirectPlaintext is set too.
	Direct bool
	// TLS, if set, is the TLS configuration of the connection to the
	// router (RootCAs, ServerName; MinVersion at least TLS 1.2 is
	// enforced). With TLS set, every call goes through the router unless
	// DirectPlaintext is set (cells serving mutual TLS refuse direct
	// calls from clients).
	TLS *tls.Config
	// CellCAs is the cluster's CA bundle (the CA certificates the cells'
	// node certificates chain to; `cellplane cert create-ca`'s ca.crt).
	// With it and Direct, the direct path is authenticated: the client
	// calls the tenant's cell over TLS 1.3, accepting only a node
	// identity of that cell in the CAs' cluster, with the tenant token
	// the router minted in its last Lookup answer (x-cellplane-token;
	// cells serving mutual TLS accept a token caller for the token's
	// tenant only). A Lookup answered without a token (a router without
	// signing keys) sends calls through the router. Independent of TLS
	// (the router's front door).
	CellCAs []*x509.Certificate
	// CellCertificate, optional with CellCAs, is presented to cells: a
	// client/<tenant> certificate of the cluster for this Tenant (cells
	// then also check that the token's tenant is the certificate's).
	CellCertificate *tls.Certificate
	// TokenRefresh: with CellCAs, the tenant is looked up again (a new
	// token) when its token expires within TokenRefresh (or within a
	// quarter of its lifetime, if that is shorter). 0: 30 s.
	TokenRefresh time.Duration
	// DirectPlaintext, with TLS and Direct, still calls cells directly
	// in plaintext: the tenant's data (not the API key) crosses the
	// network between the client and the cells in clear. Only for a
	// network the caller trusts.
	DirectPlaintext bool
	// MaxAttempts bounds the tries of one call (direct and via the router).
	MaxAttempts int
	// RouteTTL: a cached route older than this is looked up again.
	RouteTTL time.Duration
	// MovingWait bounds how long one call waits for the tenant's route to
	// change after WRONG_CELL, STALE_EPOCH or TENANT_MOVING (a move or
	// failover in progress), looking it up again with backoff. 0: 5 s.
	MovingWait time.Duration
	// RetryBackoff is the first delay between those lookups (doubling up
	// to MaxRetryBackoff). 0: 20 ms and 250 ms.
	RetryBackoff, MaxRetryBackoff time.Duration
	// DialOptions are added to every connection (router and cells) after
	// the defaults, so grpc.WithTransportCredentials among them replaces
	// plaintext, and TLS too; prefer TLS for the router.
	DialOptions []grpc.DialOption
	// Logger; nil discards.
	Logger *slog.Logger
}

// Defaults of the moving-tenant waits.
const (
	DefaultMovingWait      = 5 * time.Second
	DefaultRetryBackoff    = 20 * time.Millisecond
	DefaultMaxRetryBackoff = 250 * time.Millisecond
	DefaultTokenRefresh    = 30 * time.Second
)

// DefaultConfig returns the defaults; Router and Tenant must be set.
func DefaultConfig() Config {
	return Config{Direct: true, MaxAttempts: 4, RouteTTL: time.Minute,
		MovingWait: DefaultMovingWait, RetryBackoff: DefaultRetryBackoff, MaxRetryBackoff: DefaultMaxRetryBackoff}
}

// Validate reports an unusable configuration.
func (c Config) Validate() error {
	switch {
	case c.Router == "":
		return errors.New("client: Router is required")
	case c.Tenant == "":
		return errors.New("client: Tenant is required")
	case c.MaxAttempts < 1:
		return errors.New("client: MaxAttempts must be at least 1")
	case c.RouteTTL <= 0:
		return errors.New("client: RouteTTL must be positive")
	case c.MovingWait < 0 || c.RetryBackoff < 0 || c.MaxRetryBackoff < 0 || c.TokenRefresh < 0:
		return errors.New("client: MovingWait, RetryBackoff and MaxRetryBackoff must not be negative")
	case c.RetryBackoff > 0 && c.MaxRetryBackoff > 0 && c.MaxRetryBackoff < c.RetryBackoff:
		return errors.New("client: MaxRetryBackoff is below RetryBackoff")
	case c.TLS != nil && c.TLS.MaxVersion != 0 && c.TLS.MaxVersion < tls.VersionTLS12:
		return errors.New("client: TLS.MaxVersion is below TLS 1.2 (the router serves 1.2 and later)")
	case c.TLS != nil && c.TLS.InsecureSkipVerify && c.TLS.VerifyConnection == nil && c.TLS.VerifyPeerCertificate == nil:
		return errors.New("client: TLS.InsecureSkipVerify without a VerifyConnection or VerifyPeerCertificate would trust any server with the API key")
	}
	if err := ids.Check("Tenant", c.Tenant, ids.MaxLen); err != nil {
		return fmt.Errorf("client: %w", err)
	}
	if len(c.CellCAs) > 0 {
		if _, err := pki.ClusterOfCAs(c.CellCAs); err != nil {
			return fmt.Errorf("client: CellCAs: %w", err)
		}
	} else if c.CellCertificate != nil {
		return errors.New("client: CellCertificate needs CellCAs")
	}
	return nil
}

// withDefaults fills the zero moving-wait settings.
func (c Config) withDefaults() Config {
	if c.MovingWait == 0 {
		c.MovingWait = DefaultMovingWait
	}
	if c.RetryBackoff == 0 {
		c.RetryBackoff = DefaultRetryBackoff
	}
	if c.MaxRetryBackoff == 0 {
		c.MaxRetryBackoff = max(DefaultMaxRetryBackoff, c.RetryBackoff)
	}
	if c.TokenRefresh == 0 {
		c.TokenRefresh = DefaultTokenRefresh
	}
	return c
}

// Client is safe for concurrent use.
type Client struct {
	cfg    Config
	log    *slog.Logger
	direct bool // call cells directly (Direct, and CellCAs, no TLS or DirectPlaintext)
	// cellTLS: the direct path uses TLS and tenant tokens (CellCAs);
	// cluster is the CAs' cluster.
	cellTLS bool
	cluster string
	dc      dial.Config
	router  *grpc.ClientConn
	lookup  routerv1.RouterServiceClient

	mu        sync.Mutex
	route     *route
	conns     *dial.Pool            // the cells' nodes (plaintext direct path)
	cellPools map[string]*dial.Pool // with cellTLS: per cell, accepting only that cell's nodes

	ignoredHints atomic.Int64 // NOT_LEADER hints naming no member
}

// IgnoredLeaderHints returns how many NOT_LEADER answers of the direct
// path named a leader address that is not a member of the tenant's cell
// in the last Lookup answer. Such hints are never followed (the call is
// retried at another known member); a non-zero count means a node of the
// cell answers with bogus leader addresses (misconfigured or malicious).
func (c *Client) IgnoredLeaderHints() int64 { return c.ignoredHints.Load() }

type route struct {
	cell        string
	epoch       uint64
	cuttingOver bool
	leader      string
	members     []string
	at          time.Time
	// token is the tenant token of the Lookup answer ("" when none),
	// tokenExp its expiry.
	token    string
	tokenExp time.Time
}

// differs reports a placement change: another cell, epoch or cutover flag.
func (r *route) differs(o *route) bool {
	return o == nil || r.cell != o.cell || r.epoch != o.epoch || r.cuttingOver != o.cuttingOver
}

// New returns a client. It does not contact anything yet: the first call
// resolves the tenant.
func New(cfg Config) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dc := dial.Config{ExtraOptions: cfg.DialOptions}
	cellTLS := len(cfg.CellCAs) > 0
	direct := cfg.Direct && (cellTLS || cfg.TLS == nil || cfg.DirectPlaintext)
	c := &Client{cfg: cfg, log: log, direct: direct, cellTLS: cellTLS, dc: dc, conns: dial.NewPool(dc), cellPools: map[string]*dial.Pool{}}
	if cellTLS {
		c.cluster, _ = pki.ClusterOfCAs(cfg.CellCAs) // Validate checked it
	}
	rc := dc
	if cfg.TLS != nil {
		tc := cfg.TLS.Clone()
		tc.MinVersion = max(tc.MinVersion, tls.VersionTLS12)
		rc.Credentials = credentials.NewTLS(tc)
		if cfg.Direct && !direct {
			log.Info("cellplane client: TLS to the router and no CellCAs for the cells: every call goes through the router (DirectPlaintext calls cells in clear)")
		}
	}
	conn, err := dial.New(cfg.Router, rc)
	if err != nil {
		return nil, fmt.Errorf("client: router %s: %w", cfg.Router, err)
	}
	c.router = conn
	c.lookup = routerv1.NewRouterServiceClient(conn)
	return c, nil
}

// Context returns the ContextService API of the client's tenant.
func (c *Client) Context() contextv1.ContextServiceClient {
	return contextv1.NewContextServiceClient((*conn)(c))
}

// Close closes every connection.
func (c *Client) Close() error {
	errs := []error{c.router.Close(), c.conns.Close()}
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range c.cellPools {
		errs = append(errs, p.Close())
	}
	return errors.Join(errs...)
}

// Lookup resolves the tenant through the router now (and caches it).
func (c *Client) Lookup(ctx context.Context) (*routerv1.LookupResponse, error) {
	resp, err := c.lookup.Lookup(c.routerContext(ctx), &routerv1.LookupRequest{Tenant: c.cfg.Tenant})
	if err != nil {
		return nil, rpcerr.FromStatus(err)
	}
	r := &route{cell: resp.GetCell(), epoch: resp.GetEpoch(), cuttingOver: resp.GetCuttingOver(), at: time.Now(), token: resp.GetToken()}
	if r.token != "" {
		r.tokenExp = resp.GetTokenExpireTime().AsTime()
	}
	for _, m := range resp.GetMembers() {
		if m.GetLeader() {
			r.leader = m.GetGrpcAddr()
		}
		r.members = append(r.members, m.GetGrpcAddr())
	}
	c.mu.Lock()
	c.route = r
	c.mu.Unlock()
	return resp, nil
}

// cached returns the cached route, looking it up when missing or old.
func (c *Client) cached(ctx context.Context) (*route, error) {
	c.mu.Lock()
	r := c.route
	c.mu.Unlock()
	if r != nil && time.Since(r.at) < c.cfg.RouteTTL && !c.tokenDue(r) {
		return r, nil
	}
	if _, err := c.Lookup(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.route, nil
}

func (c *Client) forget() {
	c.mu.Lock()
	c.route = nil
	c.mu.Unlock()
}

func (c *Client) setLeader(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.route != nil {
		nr := *c.route
		nr.leader = addr
		c.route = &nr
	}
}

// conn returns a connection to addr, a member of r's cell: with cellTLS
// over TLS, from a pool that accepts only a node identity of that cell.
func (c *Client) conn(r *route, addr string) (*grpc.ClientConn, error) {
	if !c.cellTLS {
		return c.conns.Get(addr)
	}
	c.mu.Lock()
	p, ok := c.cellPools[r.cell]
	if !ok {
		cell, cluster := r.cell, c.cluster
		dc := c.dc
		dc.Credentials = credentials.NewTLS(pki.ClientTLSConfigFromCAs(c.cfg.CellCAs, cluster, c.cfg.CellCertificate, func(id pki.Identity) error {
			if id.Kind != pki.KindNode || id.Cell != cell {
				return fmt.Errorf("want a node of cell %s", cell)
			}
			return nil
		}))
		p = dial.NewPool(dc)
		c.cellPools[r.cell] = p
	}
	c.mu.Unlock()
	return p.Get(addr)
}

// tokenDue reports whether r's token expires soon: within TokenRefresh,
// or within a quarter of its lifetime when that is shorter (a router
// minting short tokens).
func (c *Client) tokenDue(r *route) bool {
	if !c.cellTLS || r.token == "" {
		return false
	}
	margin := min(c.cfg.TokenRefresh, r.tokenExp.Sub(r.at)/4)
	return time.Until(r.tokenExp) <= margin
}

// directOK reports whether r can be used on the direct path: with
// cellTLS it needs a token. Without cellTLS, a token in the answer means
// the cells serve mutual TLS (a router mints tokens only with its internal
// identity, which it has exactly when the cells it calls serve mutual
// TLS): a plaintext direct call would be refused, so calls go through the
// router.
func (c *Client) directOK(r *route) bool {
	if !c.cellTLS {
		return r.token == ""
	}
	return r.token != ""
}

// routerContext adds the tenant and the credentials for the router.
func (c *Client) routerContext(ctx context.Context) context.Context {
	kv := []string{tenantmd.TenantKey, c.cfg.Tenant}
	if c.cfg.APIKey != "" {
		kv = append(kv, "authorization", "Bearer "+c.cfg.APIKey)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// cellContext adds the tenant and the epoch the route was resolved at,
// and with cellTLS the route's tenant token.
func (c *Client) cellContext(ctx context.Context, r *route) context.Context {
	kv := []string{tenantmd.TenantKey, c.cfg.Tenant, tenantmd.EpochKey, strconv.FormatUint(r.epoch, 10)}
	if c.cellTLS {
		kv = append(kv, tenantmd.TokenKey, r.token)
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// conn adapts the Client to grpc.ClientConnInterface: each call is routed.
type conn Client

func (cc *conn) Invoke(ctx context.Context, method string, args, reply any, opts ...grpc.CallOption) error {
	c := (*Client)(cc)
	args = withRequestID(args)
	var (
		lastErr  error
		mw       = c.newMovingWait()
		kind     = kindOf(args)
		relooked bool // a refused token was replaced once
	)
	for attempt := 0; attempt < c.cfg.MaxAttempts; attempt++ {
		if ctx.Err() != nil {
			break
		}
		var r *route
		viaRouter := !c.direct || attempt == c.cfg.MaxAttempts-1 && attempt > 0
		if !viaRouter {
			var err error
			if r, err = c.cached(ctx); err != nil {
				if !retry.Allowed(retry.Immutable, err) {
					return err
				}
				lastErr = err
				continue
			}
			// During a cutover neither cell takes the call: the router
			// holds it and forwards it at the flip. Without a token
			// (cellTLS) the cells would refuse it.
			viaRouter = r.cuttingOver || !c.directOK(r)
			if !c.directOK(r) {
				c.log.Debug("cellplane client: the Lookup answer has no tenant token; calling through the router", "cell", r.cell)
			}
		}
		if viaRouter {
			// Last resort, by choice, or during a cutover: through the router.
			err := rpcerr.FromStatus(c.router.Invoke(c.routerContext(ctx), method, args, reply, opts...))
			if err == nil || !retry.Allowed(kind, err) {
				return err
			}
			lastErr = err
			switch {
			case moving(err):
				if !c.awaitMove(ctx, mw, r) {
					return lastErr
				}
				attempt-- // waiting out a move costs time (MovingWait), not attempts
			case retry.ClassOf(err) == retry.RetryLater:
				if !retry.Within(ctx, retry.WaitFor(c.retryPolicy(), attempt, err)) {
					return lastErr
				}
			}
			continue
		}
		addr := r.leader
		if stale(args) || addr == "" {
			addr = pickMember(r, attempt)
		}
		if addr == "" {
			c.forget()
			lastErr = cperr.New(cperr.CellUnavailable, "no member of cell %s known", r.cell)
			continue
		}
		cn, err := c.conn(r, addr)
		if err != nil {
			return err
		}
		err = rpcerr.FromStatus(cn.Invoke(c.cellContext(ctx, r), method, args, reply, opts...))
		if err == nil {
			return nil
		}
		lastErr = err
		var ce *cperr.Error
		switch {
		case c.cellTLS && !relooked && errors.Is(err, cperr.ErrUnauthenticated):
			// The token was refused (expired, its key rotated away, a
			// cell that has not seen the new key yet): look the tenant
			// up again, once per call, for a new one.
			relooked = true
			c.forget()
			attempt--
			c.log.Debug("cellplane client: tenant token refused; looking the tenant up again", "cell", r.cell, "err", err)
			continue
		case errors.As(err, &ce) && ce.Reason == cperr.NotLeader:
			switch l := ce.Metadata[cperr.MetaLeader]; {
			case l == "":
				c.forget()
			case slices.Contains(r.members, l):
				c.setLeader(l)
			default:
				// The hint names no member of the cell as the last Lookup
				// answered it: never follow it (a malicious or confused
				// node must not redirect the tenant's writes, finding
				// C5); try another known member instead.
				c.ignoredHints.Add(1)
				c.log.Warn("cellplane client: ignoring a NOT_LEADER hint that names no member of the cell",
					"cell", r.cell, "leader_addr", l, "from", addr)
				c.setLeader("")
			}
		case moving(err):
			// The tenant moved, its epoch changed, or it is being cut
			// over: wait (briefly) until the router has a new route.
			if !c.awaitMove(ctx, mw, r) {
				return lastErr
			}
			attempt--
		case retry.Allowed(kind, err) && retry.ClassOf(err) == retry.RetryLater:
			// Rate limited (or the like): wait (RetryAfter).
			if !retry.Within(ctx, retry.WaitFor(c.retryPolicy(), attempt, err)) {
				return lastErr
			}
		case retry.Allowed(kind, err):
			c.setLeader("") // that node is gone: try another member
		default:
			return err
		}
		c.log.Debug("cellplane client: retrying", "method", method, "attempt", attempt+1, "err", err)
	}
	if lastErr == nil {
		lastErr = ctx.Err()
	}
	return lastErr
}

// movingWait is one call's budget for waiting on a moving tenant.
type movingWait struct {
	since   time.Time
	backoff *retry.Backoff
}

func (c *Client) newMovingWait() *movingWait { return &movingWait{backoff: c.retryPolicy().Backoff()} }

// retryPolicy is the backoff between a call's waits: RetryBackoff
// doubling up to MaxRetryBackoff, with full jitter. MaxAttempts and
// MovingWait bound the loops.
func (c *Client) retryPolicy() retry.Policy {
	return retry.Policy{Min: c.cfg.RetryBackoff, Max: c.cfg.MaxRetryBackoff}
}

// awaitMove forgets the cached route and looks the tenant up again until
// the route differs from old (nil: any route will do, after a backoff),
// the call's MovingWait runs out or the next backoff would pass ctx's
// deadline. The first lookup is immediate when there is an old route to
// compare with (the router often knows the new route already); later ones
// back off. It reports whether the call may try again. A route that says
// the tenant is cutting over counts as a change: the next try goes
// through the router, which holds the call until the flip.
func (c *Client) awaitMove(ctx context.Context, mw *movingWait, old *route) bool {
	c.forget()
	if mw.since.IsZero() {
		mw.since = time.Now()
	}
	for now := old != nil; ; now = false {
		if !now {
			d := mw.backoff.Next()
			if time.Since(mw.since)+d > c.cfg.MovingWait || !retry.Within(ctx, d) {
				return false
			}
		} else if time.Since(mw.since) >= c.cfg.MovingWait {
			return false
		}
		if _, err := c.Lookup(ctx); err != nil {
			if !retry.Allowed(retry.Immutable, err) {
				return false
			}
			continue
		}
		c.mu.Lock()
		r := c.route
		c.mu.Unlock()
		if r != nil && r.differs(old) {
			c.log.Debug("cellplane client: new route", "cell", r.cell, "epoch", r.epoch, "cutting_over", r.cuttingOver)
			return true
		}
	}
}

// moving reports the answers of a tenant whose placement is changing: a
// stale route (RetryRefresh) or TENANT_MOVING.
func moving(err error) bool {
	return retry.ClassOf(err) == retry.RetryRefresh || errors.Is(err, cperr.ErrTenantMoving)
}

func (cc *conn) NewStream(ctx context.Context, desc *grpc.StreamDesc, method string, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	c := (*Client)(cc)
	if c.direct {
		// A tenant being cut over is served by neither cell: the router
		// holds the stream's start until the flip.
		if r, err := c.cached(ctx); err == nil && !r.cuttingOver && c.directOK(r) {
			// Streams (Watch) are served by any member: no retry once open.
			if addr := pickMember(r, 0); addr != "" {
				if cn, err := c.conn(r, addr); err == nil {
					return cn.NewStream(c.cellContext(ctx, r), desc, method, opts...)
				}
			}
		}
	}
	return c.router.NewStream(c.routerContext(ctx), desc, method, opts...)
}

func pickMember(r *route, attempt int) string {
	if len(r.members) == 0 {
		return ""
	}
	return r.members[attempt%len(r.members)]
}

// kindOf returns the retry kind of a call: a request with a request_id
// field is a write, and withRequestID has given it an id (Idempotent);
// any other request is a read.
func kindOf(args any) retry.Kind {
	if m, ok := args.(proto.Message); ok && m.ProtoReflect().Descriptor().Fields().ByName("request_id") != nil {
		return retry.Idempotent
	}
	return retry.Immutable
}

// withRequestID returns args with a fresh request_id when it has such a
// field left empty (a clone: the caller's message is not changed).
func withRequestID(args any) any {
	m, ok := args.(proto.Message)
	if !ok {
		return args
	}
	fd := m.ProtoReflect().Descriptor().Fields().ByName("request_id")
	if fd == nil || fd.Kind() != protoreflect.StringKind || m.ProtoReflect().Get(fd).String() != "" {
		return args
	}
	m = proto.Clone(m)
	m.ProtoReflect().Set(fd, protoreflect.ValueOfString(NewRequestID()))
	return m
}

// stale reports a read that asked for CONSISTENCY_STALE.
func stale(args any) bool {
	m, ok := args.(proto.Message)
	if !ok {
		return false
	}
	ro := m.ProtoReflect().Descriptor().Fields().ByName("read_options")
	if ro == nil || ro.Kind() != protoreflect.MessageKind || !m.ProtoReflect().Has(ro) {
		return false
	}
	opts := m.ProtoReflect().Get(ro).Message()
	cf := opts.Descriptor().Fields().ByName("consistency")
	return cf != nil && opts.Get(cf).Enum() == protoreflect.EnumNumber(contextv1.Consistency_CONSISTENCY_STALE)
}

// NewRequestID returns a random request id (32 hex characters).
func NewRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
