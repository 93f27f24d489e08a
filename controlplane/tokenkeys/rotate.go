package tokenkeys

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/tenanttoken"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// RotationConfig configures the key rotation the control plane's leader
// runs.
type RotationConfig struct {
	// Period is how long one key signs before the next takes over.
	Period time.Duration
	// Lead is how long before it signs a new key is published: the time
	// every cell and router has to see it through its watch.
	Lead time.Duration
	// Retain is how long a key's public half is kept after its successor
	// took over: the longest a token lives (tenanttoken.Config.MaxTTL)
	// plus the clock skew the cells tolerate (ClockSkew), so no token
	// still valid loses its key.
	Retain time.Duration
	// ClockSkew: a key's private half is deleted this long after its
	// successor took over (a router whose clock lags still signs with it
	// meanwhile).
	ClockSkew time.Duration
	// Interval is how often the leader checks the keys.
	Interval time.Duration
}

// DefaultRotationConfig returns the defaults: a new key every 24 h,
// published 5 min ahead, public keys kept for the default token limits.
func DefaultRotationConfig() RotationConfig {
	tc := tenanttoken.DefaultConfig()
	return RotationConfig{Period: 24 * time.Hour, Lead: 5 * time.Minute, Retain: tc.MaxTTL + tc.ClockSkew,
		ClockSkew: tc.ClockSkew, Interval: 30 * time.Second}
}

// Validate reports a configuration that cannot work.
func (c RotationConfig) Validate() error {
	var errs []error
	if c.Period <= 0 || c.Lead <= 0 || c.Interval <= 0 {
		errs = append(errs, fmt.Errorf("tokenkeys: Period (%v), Lead (%v) and Interval (%v) must be positive", c.Period, c.Lead, c.Interval))
	}
	if c.Lead >= c.Period {
		errs = append(errs, fmt.Errorf("tokenkeys: Lead %v must be below Period %v", c.Lead, c.Period))
	}
	if c.Interval >= c.Lead {
		errs = append(errs, fmt.Errorf("tokenkeys: Interval %v must be below Lead %v (the next key would be published late)", c.Interval, c.Lead))
	}
	if c.Retain < 0 || c.ClockSkew < 0 {
		errs = append(errs, fmt.Errorf("tokenkeys: Retain (%v) and ClockSkew (%v) must not be negative", c.Retain, c.ClockSkew))
	}
	return errors.Join(errs...)
}

// Commit writes ops in one transaction guarded by the caller's
// leadership (the controller's runner.commit).
type Commit func(ctx context.Context, conds []topo.Cond, ops []topo.Op) error

// Changes says what one Rotate did.
type Changes struct {
	Published []string // key ids published
	Deleted   []string // keys (public or private half) deleted, as their etcd keys
}

type keyInfo struct {
	kid  string
	from time.Time
}

// Rotate checks the keys at now and publishes or deletes what the
// rotation needs, in one guarded transaction:
//   - no key signs yet and none is pending: a key signing from now (the
//     first key of a cluster);
//   - the signing key has signed for Period − Lead and no successor is
//     pending: the next key, signing from max(now + Lead, its sign_from +
//     Period);
//   - a private half whose successor signs for ClockSkew, and a public
//     half whose successor signs for Retain: deleted.
func Rotate(ctx context.Context, st topo.Store, cfg RotationConfig, now time.Time, commit Commit) (Changes, error) {
	pubs, _, err := catalog.ListTokenPublicKeys(ctx, st)
	if err != nil {
		return Changes{}, err
	}
	privs, _, err := catalog.ListTokenPrivateKeys(ctx, st)
	if err != nil {
		return Changes{}, err
	}
	var conds []topo.Cond
	var ops []topo.Op
	var ch Changes
	pubInfo := make([]keyInfo, 0, len(pubs))
	for _, p := range pubs {
		pubInfo = append(pubInfo, keyInfo{p.Parsed.ID, p.Value.GetSignFrom().AsTime()})
	}
	privInfo := make([]keyInfo, 0, len(privs))
	for _, p := range privs {
		privInfo = append(privInfo, keyInfo{p.Parsed.ID, p.Value.GetSignFrom().AsTime()})
	}
	byFrom := func(a, b keyInfo) int {
		if c := a.from.Compare(b.from); c != 0 {
			return c
		}
		switch {
		case a.kid < b.kid:
			return -1
		case a.kid > b.kid:
			return 1
		}
		return 0
	}
	slices.SortFunc(pubInfo, byFrom)
	slices.SortFunc(privInfo, byFrom)

	// The signing key and any pending one, among keys published whole.
	var current, pending *keyInfo
	for i := range privInfo {
		k := &privInfo[i]
		if !slices.ContainsFunc(pubInfo, func(p keyInfo) bool { return p.kid == k.kid }) {
			continue
		}
		if k.from.After(now) {
			pending = k
		} else {
			current = k
		}
	}
	var from time.Time
	switch {
	case current == nil && pending == nil:
		from = now
	case pending == nil && !now.Before(current.from.Add(cfg.Period-cfg.Lead)):
		from = current.from.Add(cfg.Period)
		if min := now.Add(cfg.Lead); from.Before(min) {
			from = min
		}
	}
	if !from.IsZero() {
		key, pub, err := tenanttoken.GenerateKey()
		if err != nil {
			return Changes{}, err
		}
		ts, fts := timestamppb.New(now), timestamppb.New(from)
		ops = append(ops, catalog.PublishTokenKeyOps(
			&cpv1.TokenPublicKey{KeyId: key.ID, PublicKey: pub, CreateTime: ts, SignFrom: fts},
			&cpv1.TokenPrivateKey{KeyId: key.ID, Seed: key.Private.Seed(), CreateTime: ts, SignFrom: fts})...)
		conds = append(conds, topo.IfAbsent(topo.TokenPublicKeyKey(key.ID)), topo.IfAbsent(topo.TokenPrivateKeyKey(key.ID)))
		ch.Published = append(ch.Published, key.ID)
	}
	// Retire: a half is deleted once its successor (the next key by
	// sign_from) has signed long enough.
	retire := func(keys []keyInfo, after time.Duration, keyOf func(string) string, recs map[string]topo.Version) {
		for i := 0; i+1 < len(keys); i++ {
			if next := keys[i+1]; !next.from.After(now) && now.Sub(next.from) >= after {
				k := keyOf(keys[i].kid)
				ops = append(ops, topo.Del(k))
				conds = append(conds, topo.IfVersion(k, recs[keys[i].kid]))
				ch.Deleted = append(ch.Deleted, k)
			}
		}
	}
	pubVers, privVers := map[string]topo.Version{}, map[string]topo.Version{}
	for _, p := range pubs {
		pubVers[p.Parsed.ID] = p.Version
	}
	for _, p := range privs {
		privVers[p.Parsed.ID] = p.Version
	}
	retire(privInfo, cfg.ClockSkew, topo.TokenPrivateKeyKey, privVers)
	retire(pubInfo, cfg.Retain, topo.TokenPublicKeyKey, pubVers)
	if len(ops) == 0 {
		return Changes{}, nil
	}
	if err := commit(ctx, conds, ops); err != nil {
		return Changes{}, err
	}
	return ch, nil
}
