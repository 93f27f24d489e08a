// Package tokenkeys distributes and rotates the Ed25519 keys of
// router-minted tenant tokens (internal/tenanttoken) through etcd.
//
// The control plane's leader runs Rotate periodically (the controller's
// term does): it keeps one signing key current, publishes the next one
// RotationConfig.Lead before it signs anything (so every cell has it by
// then), and deletes a key's private half once its successor signs and
// its public half once every token it signed has expired
// (RotationConfig.Retain after the successor took over). The keys live at
//
//	tokenkeys/public/<kid>   TokenPublicKey   nodes, workers, routers read
//	tokenkeys/private/<kid>  TokenPrivateKey  the control plane and routers only
//
// Cells and routers follow them with a Ring (list, then watch; relist on
// a broken watch): a Ring is a tenanttoken.KeySet, and one that reads the
// private prefix too (routers) has a Signer — the newest key whose
// sign_from has passed.
//
//	ring, err := tokenkeys.StartRing(ctx, st, tokenkeys.RingConfig{Private: true})
//	defer ring.Close()
//	key, ok := ring.Signer(time.Now())
//	claims, err := tenanttoken.Verify(cfg, ring, tok, cluster, time.Now())
package tokenkeys
