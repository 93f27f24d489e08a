package main

import (
	"context"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/rpcerr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// etcdEndpoints returns the etcd endpoints a component uses: the ones
// given, or, when none are and cpAddr is set, the ones the control plane
// names (its prefix replaces *prefix unless --etcd-prefix was set). src
// is the component's identity (--certs-dir), presented to a control plane
// serving mutual TLS; nil: plaintext.
func etcdEndpoints(cmd *cobra.Command, given []string, cpAddr string, prefix *string, timeout time.Duration, src *pki.Source) ([]string, error) {
	if len(given) > 0 || cpAddr == "" {
		return given, nil
	}
	eps, p, err := askRegistry(cmd.Context(), cpAddr, timeout, src)
	if err != nil {
		return nil, err
	}
	if !cmd.Flags().Changed("etcd-prefix") {
		*prefix = p
	}
	return eps, nil
}

// askRegistry asks the control plane at addr where etcd is (GetRegistry),
// for components started with --controlplane instead of --etcd-endpoints,
// over mutual TLS with src's identity when src is set (the control plane
// lets nodes, routers and workers call GetRegistry).
func askRegistry(ctx context.Context, addr string, timeout time.Duration, src *pki.Source) (endpoints []string, prefix string, err error) {
	dc := dial.DefaultConfig()
	if src != nil {
		dc.Credentials = pki.ClientCredentials(src, pki.ExpectKinds(pki.KindControlPlane))
	}
	conn, err := dial.New(addr, dc)
	if err != nil {
		return nil, "", fmt.Errorf("--controlplane %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	resp, err := cpv1.NewControlPlaneServiceClient(conn).GetRegistry(ctx, &cpv1.GetRegistryRequest{}, grpc.WaitForReady(true))
	if err != nil {
		return nil, "", fmt.Errorf("--controlplane %s: asking where etcd is: %w", addr, rpcerr.FromStatus(err))
	}
	return resp.GetEtcdEndpoints(), resp.GetPrefix(), nil
}
