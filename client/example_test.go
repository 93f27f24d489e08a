package client_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/client"
	"github.com/cellplane/cellplane/controlplane"
	"github.com/cellplane/cellplane/controlplane/etcdserver"
	"github.com/cellplane/cellplane/controlplane/topo/etcdtopo"
	"github.com/cellplane/cellplane/internal/auth"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
	"github.com/cellplane/cellplane/router"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// The smart client against a real (single-node-cell) platform started in
// this process: the router resolves the tenant once, then appends and
// reads go straight to the cell's leader.
func Example() {
	routerAddr, apiKey, stop, err := startPlatform()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cfg := client.DefaultConfig()
	cfg.Router, cfg.Tenant, cfg.APIKey = routerAddr, "acme", apiKey
	c, err := client.New(cfg)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	cs := c.Context()

	if _, err := cs.CreateContext(ctx, &contextv1.CreateContextRequest{ContextId: "chat-1"}); err != nil {
		fmt.Println(err)
		return
	}
	// No request_id given: the client adds one, so a retry appends once.
	app, err := cs.Append(ctx, &contextv1.AppendRequest{ContextId: "chat-1", Entries: []*contextv1.Entry{
		{Role: "user", Content: &contextv1.Entry_Text{Text: "hello"}},
		{Role: "assistant", Content: &contextv1.Entry_Text{Text: "hi! how can I help?"}},
	}})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("appended seq", app.GetFirstSeq(), "to", app.GetLastSeq())
	rd, err := cs.Read(ctx, &contextv1.ReadRequest{ContextId: "chat-1", Start: &contextv1.ReadRequest_Tail{Tail: 10}})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, e := range rd.GetEntries() {
		fmt.Printf("%d %s: %s\n", e.GetSeq(), e.GetRole(), e.GetText())
	}
	// Output:
	// appended seq 1 to 2
	// 1 user: hello
	// 2 assistant: hi! how can I help?
}

// startPlatform starts etcd, a control plane, a one-node cell that forms
// from the registry, a tenant with an API key, and a router — all on
// loopback — and returns the router's address and the key.
func startPlatform() (routerAddr, apiKey string, stop func(), err error) {
	var stops []func()
	stop = func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	defer func() {
		if err != nil {
			stop()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	quiet := slog.New(slog.DiscardHandler)
	dir, err := os.MkdirTemp("", "cellplane-example-")
	if err != nil {
		return "", "", nil, err
	}
	stops = append(stops, func() { _ = os.RemoveAll(dir) })

	ecfg := etcdserver.DefaultConfig()
	ecfg.DataDir = filepath.Join(dir, "etcd")
	ecfg.ClientURL, ecfg.PeerURL = "http://"+freeAddr(), "http://"+freeAddr()
	ecfg.UnsafeNoFsync = true
	etcd, err := etcdserver.Start(ctx, ecfg)
	if err != nil {
		return "", "", nil, err
	}
	stops = append(stops, func() { _ = etcd.Close() })

	cpcfg := controlplane.DefaultConfig()
	cpcfg.EtcdEndpoints = etcd.Endpoints()
	cpcfg.GRPCAddr, cpcfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cpcfg.Logger = quiet
	cp, err := controlplane.Start(ctx, cpcfg)
	if err != nil {
		return "", "", nil, err
	}
	stops = append(stops, func() { _ = cp.Close() })
	conn, err := grpc.NewClient(cp.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return "", "", nil, err
	}
	stops = append(stops, func() { _ = conn.Close() })
	admin := cpv1.NewControlPlaneServiceClient(conn)
	if _, err := admin.CreateRegion(ctx, &cpv1.CreateRegionRequest{Name: "us-east"}); err != nil {
		return "", "", nil, err
	}
	if _, err := admin.CreateCell(ctx, &cpv1.CreateCellRequest{Id: "c1", Region: "us-east", ExpectedMembers: 1}); err != nil {
		return "", "", nil, err
	}

	tcfg := etcdtopo.DefaultConfig()
	tcfg.Endpoints = etcd.Endpoints()
	registry, err := etcdtopo.Dial(ctx, tcfg)
	if err != nil {
		return "", "", nil, err
	}
	stops = append(stops, func() { _ = registry.Close() })
	ncfg := cells.DefaultConfig()
	ncfg.NodeID, ncfg.CellID, ncfg.DataDir = "n1", "c1", filepath.Join(dir, "n1")
	ncfg.RaftAddr, ncfg.GRPCAddr, ncfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	ncfg.Registry = registry
	ncfg.Logger = quiet
	node, err := cells.Start(ctx, ncfg)
	if err != nil {
		return "", "", nil, err
	}
	stops = append(stops, func() { _ = node.Close() })

	// The cell is named: the placement policy itself only picks cells
	// already HEALTHY, and this one's node may still be starting.
	if _, err := admin.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east", Cell: "c1"}); err != nil {
		return "", "", nil, err
	}
	key, err := admin.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "acme"})
	if err != nil {
		return "", "", nil, err
	}

	rcfg := router.DefaultConfig()
	rcfg.EtcdEndpoints = etcd.Endpoints()
	rcfg.GRPCAddr, rcfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	rcfg.Auth.Mode = auth.ModeAPIKey
	rcfg.Logger = quiet
	r, err := router.Start(ctx, rcfg)
	if err != nil {
		return "", "", nil, err
	}
	stops = append(stops, func() { _ = r.Close() })
	for { // until the router's table has the tenant and its key
		if _, _, ok := r.Table().APIKey(key.GetKey().GetId()); ok {
			if c, ok := r.Table().Cell("c1"); ok && c.LeaderGRPC != "" {
				break
			}
		}
		select {
		case <-ctx.Done():
			return "", "", nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	return r.GRPCAddr(), key.GetSecret(), stop, nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "127.0.0.1:0"
	}
	defer l.Close()
	return l.Addr().String()
}
