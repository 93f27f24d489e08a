package main

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cellplane/cellplane/internal/rpcerr"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// askRegistry asks the control plane at addr where etcd is (GetRegistry),
// for components started with --controlplane instead of --etcd-endpoints.
func askRegistry(ctx context.Context, addr string, timeout time.Duration) (endpoints []string, prefix string, err error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
