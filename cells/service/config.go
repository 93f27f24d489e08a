package service

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cellplane/cellplane/cells/validate"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/ids"
	"github.com/cellplane/cellplane/internal/tokens"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
)

// Config configures the services of one node.
type Config struct {
	// Limits bound every request.
	Limits validate.Limits
	// Node is this node (NodeId required). GetStatus reports it, and
	// forwarding never targets it.
	Node *cellv1.NodeInfo
	// CellID names the cell this node belongs to; when set, WRONG_CELL and
	// STALE_EPOCH errors carry it in their metadata (docs/design.md §9).
	CellID string
	// Logger receives structured logs; nil means slog.Default().
	Logger *slog.Logger
	// RetryAfter is the retry hint sent with CELL_UNAVAILABLE (no known
	// leader, leader unreachable, node shutting down).
	RetryAfter time.Duration
	// Dial configures the connections to the leader when forwarding; the
	// zero value is plaintext.
	Dial dial.Config
	// WatchChangeBatch is how many change-log events Watch reads at once.
	WatchChangeBatch int
	// WatchHeartbeat is how long an idle WatchChanges stream waits before
	// sending a cursor-only response, so an idle client's cursor stays
	// fresh (and a dead connection is noticed).
	WatchHeartbeat time.Duration
	// AllowCrossHostAddrs lets a member register gRPC and HTTP addresses
	// on another host than its Raft address. By default they must share
	// the Raft address's host, so that a registration (or a poisoned
	// record) cannot point a member's traffic at another machine (see
	// registration.go, finding C5).
	AllowCrossHostAddrs bool
	// Replication, when set, reports the standby streams this node runs
	// (CellService.GetTenant answers with the tenant's).
	Replication ReplicationReporter
	// TokenEncoding is the tokenizer encoding of a context created without
	// one (internal/tokens: "o200k_base", "cl100k_base", ...).
	TokenEncoding string
	// TokenEncodingCache is how many contexts' encodings this node keeps
	// to count an append's tokens before proposing it (a miss reads the
	// context's metadata from the local replica).
	TokenEncodingCache int
	// EraseWait is how long ContextService.Erase waits for the standby's
	// acknowledgement of the erase when the request names no wait;
	// MaxEraseWait bounds a request's own wait.
	EraseWait    time.Duration
	MaxEraseWait time.Duration
}

// ReplicationReporter reports the replication stream of a standby tenant
// as this node's sink runs it (nil when it runs none for the tenant).
type ReplicationReporter interface {
	Status(tenant string) *cellv1.ReplicationStatus
	// Notify is told that a tenant's role changed on this node.
	Notify(tenant string)
}

// DefaultConfig returns a Config with the default limits and timings;
// Node still needs to be set.
func DefaultConfig() Config {
	return Config{
		Limits:             validate.DefaultLimits(),
		RetryAfter:         250 * time.Millisecond,
		WatchChangeBatch:   256,
		WatchHeartbeat:     15 * time.Second,
		TokenEncoding:      tokens.Default,
		TokenEncodingCache: 65536,
		EraseWait:          10 * time.Second,
		MaxEraseWait:       2 * time.Minute,
	}
}

// Validate reports every problem with c.
func (c Config) Validate() error {
	var errs []error
	if err := c.Limits.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Node == nil || !ids.Valid(c.Node.GetNodeId(), c.Limits.MaxIDLen) {
		errs = append(errs, errors.New("service: Config.Node.NodeId must be a valid node id"))
	}
	if c.EraseWait < 0 || c.MaxEraseWait < c.EraseWait {
		errs = append(errs, fmt.Errorf("service: Config.EraseWait %v must be ≥ 0 and at most MaxEraseWait %v", c.EraseWait, c.MaxEraseWait))
	}
	if c.RetryAfter <= 0 {
		errs = append(errs, fmt.Errorf("service: Config.RetryAfter must be > 0, got %v", c.RetryAfter))
	}
	if err := tokens.Check(c.TokenEncoding); err != nil {
		errs = append(errs, fmt.Errorf("service: Config.TokenEncoding: %w", err))
	}
	if c.TokenEncodingCache <= 0 {
		errs = append(errs, fmt.Errorf("service: Config.TokenEncodingCache must be > 0, got %d", c.TokenEncodingCache))
	}
	if c.WatchHeartbeat <= 0 {
		errs = append(errs, fmt.Errorf("service: Config.WatchHeartbeat must be > 0, got %v", c.WatchHeartbeat))
	}
	if c.WatchChangeBatch <= 0 {
		errs = append(errs, fmt.Errorf("service: Config.WatchChangeBatch must be > 0, got %d", c.WatchChangeBatch))
	}
	if c.Node != nil && c.Node.GetRaftAddr() != "" && !c.AllowCrossHostAddrs {
		for _, a := range []string{c.Node.GetGrpcAddr(), c.Node.GetHttpAddr()} {
			if a != "" && !sameHost(a, c.Node.GetRaftAddr()) {
				errs = append(errs, fmt.Errorf("service: this node's address %q is not on the host of its Raft address %q: the cell would refuse its registration (advertise addresses on one host, or allow cross-host addresses)", a, c.Node.GetRaftAddr()))
			}
		}
	}
	errs = append(errs, c.Dial.Validate())
	return errors.Join(errs...)
}
