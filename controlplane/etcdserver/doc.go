// Package etcdserver runs a single-member etcd inside the process: the
// control plane's store for development, tests and single-node installs.
// It wraps go.etcd.io/etcd/server/v3/embed with a Config in the cellplane
// style (DefaultConfig, Validate), waits until the member is ready, and
// routes etcd's zap logs to slog with component=etcd (etcd's Info lines,
// which are routine, are demoted to Debug).
//
//	cfg := etcdserver.DefaultConfig()
//	cfg.DataDir = "/var/lib/cellplane/etcd"
//	cfg.Logger = logger
//	srv, err := etcdserver.Start(ctx, cfg)
//	if errors.Is(err, etcdserver.ErrAddrInUse) { ... another etcd runs here ... }
//	defer srv.Close()
//	st, err := etcdtopo.Dial(ctx, etcdtopo.Config{Endpoints: srv.Endpoints()})
//
// With Config.TLS the member serves https only on both URLs, TLS 1.3,
// and requires a client certificate of the bundle's CAs (etcd's
// --client-cert-auth and --peer-client-cert-auth): the control plane runs
// it so with its own certificate, then turns etcd authentication on
// (controlplane/etcdauth). etcd re-reads the certificate and key at every
// handshake but the CA bundle only at start: Server.Restart restarts the
// member in place (same data dir, URLs and files) so that a changed
// bundle takes effect, which the control plane does when its CAs change.
// Restart and Close end the clients' streams first (UNAVAILABLE: etcd's
// client resumes watches and keep-alives on the next member) rather than
// waiting for them, so a restart takes well under a second.
//
// The member compacts its history (AutoCompactionMode/Retention: periodic,
// 10 minutes by default), has an explicit quota (QuotaBackendBytes, 2 GiB),
// and defragments itself every DefragInterval when enough of its file is
// free (a defragmentation blocks its reads and writes while it runs).
// Alarms, BackendSize, Revisions and Collectors (cellplane_etcd_alarm
// {type} and the sizes) expose its health; the control plane's /readyz
// reports a raised alarm. docs/reliability.md "etcd health (H2)" has the
// runbook and what to configure on an external cluster.
//
// Tests use topotest.StartEtcd (StartEtcdServerTLS for TLS), which picks
// free loopback ports.
package etcdserver
