package bench

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
)

// EtcdMemberConfig configures one member of the etcd baseline in its own
// process (`cellplane bench etcd-member`, hidden): the embedded etcd the
// in-process scenario uses, fsync on, mutual TLS on its peer and client
// URLs (certificates of the cluster CA required on both).
type EtcdMemberConfig struct {
	Name    string
	DataDir string
	// PeerURL and ClientURL are this member's https URLs; InitialCluster
	// is "name=peerURL,..." of every member.
	PeerURL, ClientURL string
	InitialCluster     string
	// CertFile and KeyFile are this member's certificate (server and
	// client usage, 127.0.0.1 in its SANs); CAFile the cluster CA.
	CertFile, KeyFile, CAFile string
}

// Validate reports a configuration that cannot start.
func (c EtcdMemberConfig) Validate() error {
	if c.Name == "" || c.DataDir == "" || c.PeerURL == "" || c.ClientURL == "" || c.InitialCluster == "" {
		return errors.New("bench: etcd member: name, data dir, peer and client URLs and the initial cluster are required")
	}
	if c.CertFile == "" || c.KeyFile == "" || c.CAFile == "" {
		return errors.New("bench: etcd member: certificate, key and CA files are required (the baseline runs with mutual TLS)")
	}
	return nil
}

// RunEtcdMember runs one etcd member until ctx ends.
func RunEtcdMember(ctx context.Context, c EtcdMemberConfig) error {
	if err := c.Validate(); err != nil {
		return err
	}
	peer, err := url.Parse(c.PeerURL)
	if err != nil {
		return fmt.Errorf("bench: etcd member: peer URL: %w", err)
	}
	client, err := url.Parse(c.ClientURL)
	if err != nil {
		return fmt.Errorf("bench: etcd member: client URL: %w", err)
	}
	tlsInfo := transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile, TrustedCAFile: c.CAFile, ClientCertAuth: true}
	cfg := embed.NewConfig()
	cfg.Name = c.Name
	cfg.Dir = filepath.Clean(c.DataDir)
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*peer}, []url.URL{*peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*client}, []url.URL{*client}
	cfg.InitialCluster = c.InitialCluster
	cfg.InitialClusterToken = "cellplane-bench"
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.UnsafeNoFsync = false // the point of the baseline
	cfg.ClientTLSInfo, cfg.PeerTLSInfo = tlsInfo, tlsInfo
	cfg.Logger = "zap"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return fmt.Errorf("bench: etcd member %s: %w", c.Name, err)
	}
	defer e.Close()
	select {
	case err := <-e.Err():
		return fmt.Errorf("bench: etcd member %s: %w", c.Name, err)
	case <-ctx.Done():
	}
	// A stopping leader hands leadership over first; bound that.
	stopped := make(chan struct{})
	go func() { e.Server.HardStop(); close(stopped) }()
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
	}
	return nil
}

// etcdInitialCluster renders names and peer URLs as etcd's
// --initial-cluster.
func etcdInitialCluster(names, peers []string) string {
	parts := make([]string, len(names))
	for i := range names {
		parts[i] = names[i] + "=" + peers[i]
	}
	return strings.Join(parts, ",")
}
