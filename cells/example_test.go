package cells_test

import (
	"context"
	"fmt"
	"log"
	"net"
	"os"

	"github.com/cellplane/cellplane/cells"
	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/logging"
)

// A single-node cell on loopback ports chosen by the system.
func ExampleStart() {
	dir, err := os.MkdirTemp("", "cellplane-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	raftLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	cfg := cells.DefaultConfig()
	cfg.NodeID = "n1"
	cfg.DataDir = dir
	cfg.RaftListener = raftLis
	cfg.GRPCAddr, cfg.HTTPAddr = "127.0.0.1:0", "127.0.0.1:0"
	cfg.Bootstrap = []store.Peer{{ID: "n1", Addr: raftLis.Addr().String()}}
	cfg.Logger = logging.Discard()

	node, err := cells.Start(context.Background(), cfg)
	if err != nil {
		log.Fatal(err)
	}
	defer node.Close()
	fmt.Println("serving gRPC on", node.GRPCAddr() != "")
	// Output: serving gRPC on true
}
