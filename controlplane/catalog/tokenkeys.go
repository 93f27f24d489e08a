package catalog

import (
	"context"

	"github.com/cellplane/cellplane/controlplane/topo"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Tenant-token keys (controlplane/tokenkeys, internal/tenanttoken):
// tokenkeys/public/<kid> holds a TokenPublicKey (read by nodes, workers
// and routers), tokenkeys/private/<kid> a TokenPrivateKey (read by the
// control plane and routers only; etcd RBAC is set on the two prefixes).

// NewTokenPublicKey is an empty TokenPublicKey, for the generic helpers.
func NewTokenPublicKey() *cpv1.TokenPublicKey { return &cpv1.TokenPublicKey{} }

// NewTokenPrivateKey is an empty TokenPrivateKey, for the generic helpers.
func NewTokenPrivateKey() *cpv1.TokenPrivateKey { return &cpv1.TokenPrivateKey{} }

// ListTokenPublicKeys lists the public keys, by key id, at one revision;
// a record that does not decode is left out (a reader must not stop
// verifying every token for one bad key).
func ListTokenPublicKeys(ctx context.Context, st topo.Store) ([]Record[*cpv1.TokenPublicKey], topo.Revision, error) {
	return ListDecodable(ctx, st, topo.TokenPublicKeysPrefix, topo.KindTokenPublicKey, NewTokenPublicKey)
}

// ListTokenPrivateKeys lists the private keys, by key id, at one revision
// (undecodable records left out).
func ListTokenPrivateKeys(ctx context.Context, st topo.Store) ([]Record[*cpv1.TokenPrivateKey], topo.Revision, error) {
	return ListDecodable(ctx, st, topo.TokenPrivateKeysPrefix, topo.KindTokenPrivateKey, NewTokenPrivateKey)
}

// TokenPublicKeyEvent decodes a watch event under tokenkeys/public/: ok
// is false for deletes and other keys.
func TokenPublicKeyEvent(ev topo.Event) (Record[*cpv1.TokenPublicKey], bool, error) {
	return DecodePut(ev, topo.KindTokenPublicKey, NewTokenPublicKey)
}

// TokenPrivateKeyEvent decodes a watch event under tokenkeys/private/.
func TokenPrivateKeyEvent(ev topo.Event) (Record[*cpv1.TokenPrivateKey], bool, error) {
	return DecodePut(ev, topo.KindTokenPrivateKey, NewTokenPrivateKey)
}

// PublishTokenKeyOps writes a key pair: both halves in the same
// transaction, so no router can sign with a key the cells cannot find.
func PublishTokenKeyOps(pub *cpv1.TokenPublicKey, priv *cpv1.TokenPrivateKey) []topo.Op {
	return []topo.Op{
		topo.Put(topo.TokenPublicKeyKey(pub.GetKeyId()), Encode(pub)),
		topo.Put(topo.TokenPrivateKeyKey(priv.GetKeyId()), Encode(priv)),
	}
}
