package tokenkeys

import (
	"context"
	"crypto/ed25519"
	"log/slog"
	"sync"
	"time"

	"github.com/cellplane/cellplane/controlplane/catalog"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/logging"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/tenanttoken"
)

// RingConfig configures a Ring.
type RingConfig struct {
	// Private: also follow the private keys (routers mint tokens). Cells
	// and workers leave it off: etcd RBAC does not let them read them.
	Private bool
	// Retry paces relisting after a failed list or a broken watch.
	Retry retry.Policy
	// Logger; nil means slog.Default().
	Logger *slog.Logger
}

// Ring is the set of token keys in etcd, followed by a watch: a
// tenanttoken.KeySet, and with RingConfig.Private a source of the current
// signing key. Safe for concurrent use.
type Ring struct {
	cfg    RingConfig
	log    *slog.Logger
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.RWMutex
	public  map[string]ed25519.PublicKey
	private map[string]signer
	loaded  chan struct{} // closed once the public keys were listed
	once    sync.Once
}

type signer struct {
	key  tenanttoken.SigningKey
	from time.Time
}

// StartRing starts following the keys of st. It returns at once; the keys
// arrive in the background (Loaded). Close stops it.
func StartRing(ctx context.Context, st topo.Store, cfg RingConfig) *Ring {
	if cfg.Retry.Min <= 0 || cfg.Retry.Max < cfg.Retry.Min {
		cfg.Retry = retry.Policy{Min: 100 * time.Millisecond, Max: 5 * time.Second}
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &Ring{cfg: cfg, log: logging.OrDefault(cfg.Logger), cancel: cancel,
		public: map[string]ed25519.PublicKey{}, private: map[string]signer{}, loaded: make(chan struct{})}
	r.wg.Add(1)
	go func() { defer r.wg.Done(); r.follow(ctx, st, topo.TokenPublicKeysPrefix, r.applyPublic) }()
	if cfg.Private {
		r.wg.Add(1)
		go func() { defer r.wg.Done(); r.follow(ctx, st, topo.TokenPrivateKeysPrefix, r.applyPrivate) }()
	}
	return r
}

// Close stops following the keys (the last ones known stay usable).
func (r *Ring) Close() {
	r.cancel()
	r.wg.Wait()
}

// Loaded is closed once the public keys have been listed once.
func (r *Ring) Loaded() <-chan struct{} { return r.loaded }

// PublicKey implements tenanttoken.KeySet.
func (r *Ring) PublicKey(kid string) (ed25519.PublicKey, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	p, ok := r.public[kid]
	return p, ok
}

// PublicKeyIDs returns the ids of the public keys known (any order).
func (r *Ring) PublicKeyIDs() []string {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]string, 0, len(r.public))
	for k := range r.public {
		out = append(out, k)
	}
	return out
}

// Signer returns the key to sign with at now: the private key with the
// latest sign_from not after now, whose public half is known too (a key
// the cells may not have yet is never used). ok is false when there is
// none (no keys yet, or a Ring without Private).
func (r *Ring) Signer(now time.Time) (tenanttoken.SigningKey, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var best signer
	found := false
	for kid, s := range r.private {
		if s.from.After(now) {
			continue
		}
		if _, ok := r.public[kid]; !ok {
			continue
		}
		if !found || s.from.After(best.from) || s.from.Equal(best.from) && kid > best.key.ID {
			best, found = s, true
		}
	}
	return best.key, found
}

// follow lists prefix, replaces the ring's view with it at once, then
// applies the watch's changes; a failed list or a broken watch lists
// again.
func (r *Ring) follow(ctx context.Context, st topo.Store, prefix string, apply func(reset bool, evs []topo.Event)) {
	b := r.cfg.Retry.Backoff()
	for ctx.Err() == nil {
		var listed []topo.Event
		rev, err := catalog.Each(ctx, st, prefix, 0, func(kv topo.KV) error {
			listed = append(listed, topo.Event{Type: topo.EventPut, KV: kv})
			return nil
		})
		if err != nil {
			if ctx.Err() == nil {
				wait := b.Next()
				r.log.Warn("tokenkeys: listing the token keys failed; retrying", "prefix", prefix, "err", err, "retry_in", wait)
				_ = retry.Sleep(ctx, wait)
			}
			continue
		}
		apply(true, listed)
		if prefix == topo.TokenPublicKeysPrefix {
			r.once.Do(func() { close(r.loaded) })
		}
		b.Reset()
		for resp := range st.Watch(ctx, prefix, rev+1) {
			if resp.Err != nil {
				if ctx.Err() == nil {
					r.log.Warn("tokenkeys: watch ended; listing again", "prefix", prefix, "err", resp.Err)
				}
				break
			}
			apply(false, resp.Events)
		}
	}
}

// applyPublic applies public key events; reset replaces every key with
// those of evs (a new listing), swapped in at once.
func (r *Ring) applyPublic(reset bool, evs []topo.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.public
	if reset {
		m = map[string]ed25519.PublicKey{}
	}
	for _, ev := range evs {
		kid := topo.ParseKey(ev.KV.Key).ID
		rec, ok, err := catalog.TokenPublicKeyEvent(ev)
		switch {
		case ev.Type == topo.EventDelete:
			delete(m, kid)
		case !ok:
		case err != nil || len(rec.Value.GetPublicKey()) != ed25519.PublicKeySize || rec.Value.GetKeyId() != kid:
			r.log.Error("tokenkeys: unusable public key record; ignoring it", "key", ev.KV.Key, "err", err)
			delete(m, kid)
		default:
			m[kid] = ed25519.PublicKey(rec.Value.GetPublicKey())
		}
	}
	r.public = m
}

// applyPrivate applies private key events, as applyPublic.
func (r *Ring) applyPrivate(reset bool, evs []topo.Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := r.private
	if reset {
		m = map[string]signer{}
	}
	for _, ev := range evs {
		kid := topo.ParseKey(ev.KV.Key).ID
		rec, ok, err := catalog.TokenPrivateKeyEvent(ev)
		switch {
		case ev.Type == topo.EventDelete:
			delete(m, kid)
		case !ok:
		case err != nil || len(rec.Value.GetSeed()) != ed25519.SeedSize || rec.Value.GetKeyId() != kid || !tenanttoken.ValidKeyID(kid):
			r.log.Error("tokenkeys: unusable private key record; ignoring it", "key", ev.KV.Key, "err", err)
			delete(m, kid)
		default:
			m[kid] = signer{
				key:  tenanttoken.SigningKey{ID: kid, Private: ed25519.NewKeyFromSeed(rec.Value.GetSeed())},
				from: rec.Value.GetSignFrom().AsTime(),
			}
		}
	}
	r.private = m
}
