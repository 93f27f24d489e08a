// Package pki is the platform's identities and certificates: who a peer
// is, the cluster CA that vouches for it, and the TLS material every hop
// uses for mutual TLS, reloaded from disk so certificates and CAs rotate
// without a restart.
//
// An Identity is carried as the one URI SAN of a certificate
// (SPIFFE-style, the cluster being the trust domain):
//
//	spiffe://<cluster>/region/<r>/cell/<c>/node/<n>   a cell node
//	spiffe://<cluster>/router/<id>                     a router
//	spiffe://<cluster>/controlplane/<id>               a control plane member
//	spiffe://<cluster>/worker/<id>                     an MCP worker
//	spiffe://<cluster>/operator/<role>/<name>          an operator; role admin or read-only
//	spiffe://<cluster>/client/<tenant>                 a program acting for one tenant
//
// A CA (NewCA, LoadCA, RotateCA, FinishRotation) issues leaf certificates
// (CA.Issue) that WriteLeaf puts in a certs directory as <name>.crt and
// <name>.key; `cellplane cert` is the command-line front end. A Source
// reads a process's certificate, key and trusted CA bundle (one CA, or two
// during a CA rotation) and serves tls.Configs and gRPC credentials whose
// peer verification always uses the material current at the handshake.
//
// A server and a client of a cell node:
//
//	src, err := pki.NewSource(pki.DirConfig("certs", id.FileName()))
//	if err != nil { ... }
//	srv := grpc.NewServer(grpc.Creds(pki.ServerCredentials(src)))
//
//	// in an interceptor:
//	peer, err := pki.PeerIdentity(ctx) // err: cperr UNAUTHENTICATED + pki.ErrNoCertificate, ...
//	if peer.Kind != pki.KindControlPlane { ... PERMISSION_DENIED ... }
//
//	cfg := dial.DefaultConfig()
//	cfg.Credentials = pki.ClientCredentials(src, pki.ExpectKinds(pki.KindNode))
//	conn, err := dial.New("10.0.0.7:7210", cfg)
//
// For HTTP and raw TCP (the Raft stream layer), ServerTLSConfig and
// ClientTLSConfig give the tls.Configs and IdentityFromState the peer.
//
// A public front door (the router's gRPC and HTTPS ports) serves a plain
// server certificate instead, with no identity and no client CA: tenants
// authenticate with API keys or JWTs. ServerCert reads it and reloads it
// the same way; PublicTLSConfig allows TLS 1.2 for external clients:
//
//	sc, err := pki.NewServerCert(pki.ServerCertConfig{CertFile: "front.crt", KeyFile: "front.key", ReloadInterval: pki.DefaultReloadInterval})
//	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(sc.PublicTLSConfig())))
//
// The package stands on the ground floor: it imports the standard
// library's crypto, gRPC's credentials and internal/ids and internal/cperr,
// and no component.
package pki
