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
// Tests use topotest.StartEtcd, which picks free loopback ports.
package etcdserver
