// Package devenv is what `cellplane dev` adds to the platform it runs
// (package platform: embedded etcd and a control plane, regions × cells ×
// nodes, in this process or each node a child process, and one router):
// a versioned data dir (--reset), the demo tenant (--demo) and
// <data-dir>/dev.json, which tells scripts where everything is.
//
// Everything lives under one data dir, with a version file: started again
// on the same dir, the platform comes back with every tenant and all data.
// Addresses are fixed by the configuration (node i uses NodeBasePort+3i,
// +1, +2), because Raft remembers its members by address.
//
//	env, err := devenv.Start(ctx, cfg)
//	...
//	<-ctx.Done()
//	env.Close()
package devenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/rpcerr"
	"github.com/cellplane/cellplane/platform"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// Version is written to the data dir; a dir written by another version is
// refused rather than misread.
const Version = "cellplane-dev/1"

// Config configures the environment: the platform (its Name, topology,
// fixed addresses, Auth, MutualTLS, MultiProcess, RestartKilled, Binary,
// ChildLogLevel, Logger and Progress) and what dev adds.
type Config struct {
	platform.Config
	// Reset deletes the data dir first.
	Reset bool
	// Demo creates tenant "demo" (and, with auth, an API key).
	Demo bool
}

// DefaultConfig is the README's platform: 2 regions × 2 cells × 3 nodes,
// on the fixed ports the README names.
func DefaultConfig() Config {
	pc := platform.DefaultConfig()
	pc.Name = "dev"
	pc.DataDir = ".cellplane-dev"
	pc.ControlPlaneAddr, pc.ControlPlaneHTTPAddr = "127.0.0.1:7000", "127.0.0.1:7001"
	pc.RouterAddr, pc.RouterHTTPAddr = "127.0.0.1:7100", "127.0.0.1:7180"
	pc.NodeBasePort = 7400
	pc.ChildLogLevel = "warn"
	pc.MutualTLS = true // dev proves the model: every internal hop on mutual TLS
	// The embedded etcd serves mutual TLS too (http with --insecure).
	pc.EtcdClientURL, pc.EtcdPeerURL = "https://127.0.0.1:7379", "https://127.0.0.1:7380"
	return Config{Config: pc}
}

// Validate reports an unusable configuration: dev runs at least one cell,
// on fixed ports.
func (c Config) Validate() error {
	var errs []error
	if len(c.Regions) == 0 && c.CellsPerRegion == 0 {
		errs = append(errs, errors.New("at least one region is required"))
	}
	if c.CellsPerRegion == 0 {
		errs = append(errs, fmt.Errorf("cells per region must be 1-26, got %d", c.CellsPerRegion))
	}
	if c.NodeBasePort == 0 {
		errs = append(errs, fmt.Errorf("node base port %d leaves no room for the nodes' ports", c.NodeBasePort))
	}
	return errors.Join(append(errs, c.Config.Validate())...)
}

// State is <data-dir>/dev.json: what a script needs to drive the platform.
type State struct {
	ControlPlane string              `json:"controlplane"`
	RouterGRPC   string              `json:"router_grpc"`
	RouterHTTP   string              `json:"router_http"`
	Etcd         []string            `json:"etcd"`
	Auth         string              `json:"auth"`
	DemoTenant   string              `json:"demo_tenant"`
	DemoAPIKey   string              `json:"demo_api_key"`
	Nodes        []platform.NodeInfo `json:"nodes"`
	// ClientConfig is the client configuration file for cellctl
	// (CELLPLANE_CONFIG) with MutualTLS; absent without.
	ClientConfig string `json:"client_config,omitempty"`
	// RouterTLS: the router's front door serves TLS (--tls); clients
	// trust CA (the dev CA's certificate, present with mutual TLS).
	RouterTLS bool   `json:"router_tls,omitempty"`
	CA        string `json:"ca,omitempty"`
}

// Env is a running environment.
type Env struct {
	cfg Config

	mu         sync.Mutex
	p          *platform.Platform // nil until started
	demoTenant string
	demoAPIKey string
}

func (e *Env) progress(format string, args ...any) {
	if e.cfg.Progress != nil {
		e.cfg.Progress(format, args...)
	}
}

// Start brings the environment up and returns once every cell is healthy
// and the router routes.
func Start(ctx context.Context, cfg Config) (_ *Env, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	e := &Env{cfg: cfg}
	if err := prepareDir(cfg.DataDir, cfg.Reset); err != nil {
		return nil, err
	}
	pc := cfg.Config
	pc.OnNodesChanged = e.writeState // a node restarted (RestartKilled)
	p, err := platform.Start(ctx, pc)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	if cfg.Demo {
		if err := e.demo(ctx, p.Admin()); err != nil {
			return nil, err
		}
		if err := e.waitRouted(ctx, p); err != nil {
			return nil, err
		}
	}
	e.mu.Lock()
	e.p = p
	e.mu.Unlock()
	e.writeState()
	return e, nil
}

// prepareDir resets, creates and checks the data dir and its version.
func prepareDir(dir string, reset bool) error {
	if reset {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("--reset: %w", err)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("data dir %s is not usable: %w", dir, err)
	}
	probe := filepath.Join(dir, ".write-test")
	if err := os.WriteFile(probe, nil, 0o644); err != nil {
		return fmt.Errorf("data dir %s is not writable: %w", dir, err)
	}
	_ = os.Remove(probe)
	vf := filepath.Join(dir, "VERSION")
	b, err := os.ReadFile(vf)
	switch {
	case errors.Is(err, os.ErrNotExist):
		entries, _ := os.ReadDir(dir)
		if len(entries) > 0 {
			return fmt.Errorf("data dir %s is not empty and was not made by cellplane dev (no VERSION file): use another --data-dir or --reset", dir)
		}
		return os.WriteFile(vf, []byte(Version+"\n"), 0o644)
	case err != nil:
		return err
	case strings.TrimSpace(string(b)) != Version:
		return fmt.Errorf("data dir %s is from an incompatible version (%q, this is %q): use another --data-dir or --reset", dir, strings.TrimSpace(string(b)), Version)
	}
	return nil
}

func exists(err error) bool { return errors.Is(rpcerr.FromStatus(err), cperr.ErrAlreadyExists) }

// demo creates tenant "demo" (and a key with auth on). With a second
// region, the tenant gets a standby there (also when it existed already:
// a platform started again keeps it).
func (e *Env) demo(ctx context.Context, admin cpv1.ControlPlaneServiceClient) error {
	e.progress("creating the demo tenant")
	standby := ""
	if len(e.cfg.Regions) > 1 {
		standby = e.cfg.Regions[1]
	}
	_, err := admin.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "demo", HomeRegion: e.cfg.Regions[0], StandbyRegion: standby})
	switch {
	case err == nil:
	case exists(err) && standby != "":
		if err := e.demoStandby(ctx, admin, standby); err != nil {
			return err
		}
	case !exists(err):
		return fmt.Errorf("create tenant demo: %w", rpcerr.FromStatus(err))
	}
	e.demoTenant = "demo"
	if e.cfg.Auth == platform.AuthAPIKey {
		k, err := admin.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "demo", Description: "cellplane dev --demo"})
		if err != nil {
			return fmt.Errorf("create the demo API key: %w", rpcerr.FromStatus(err))
		}
		e.demoAPIKey = k.GetSecret()
	}
	return nil
}

// demoStandby gives an existing demo tenant its standby in region unless it
// has one (best effort).
func (e *Env) demoStandby(ctx context.Context, admin cpv1.ControlPlaneServiceClient, region string) error {
	t, err := admin.GetTenant(ctx, &cpv1.GetTenantRequest{Id: "demo"})
	if err != nil {
		return fmt.Errorf("get tenant demo: %w", rpcerr.FromStatus(err))
	}
	if t.GetTenant().GetStandbyCell() != "" {
		return nil
	}
	e.progress("giving the demo tenant a standby in %s", region)
	if _, err := admin.SetStandby(ctx, &cpv1.SetStandbyRequest{Tenant: "demo", Region: region}); err != nil {
		// Not fatal: the tenant may have been failed over to that region,
		// or be busy; the platform works without it.
		e.progress("the demo tenant keeps no standby: %v", rpcerr.FromStatus(err))
	}
	return nil
}

// waitRouted waits until the router's table has the demo tenant (and its
// key: the key is recorded before the tenant is read back).
func (e *Env) waitRouted(ctx context.Context, p *platform.Platform) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, ok := p.Router().Table().Lookup(e.demoTenant); ok {
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("the router did not load its table within 30 s")
		}
		if err := retry.Sleep(ctx, 50*time.Millisecond); err != nil { // poll
			return err
		}
	}
}

// State returns what dev.json holds.
func (e *Env) State() State {
	e.mu.Lock()
	p := e.p
	s := State{Auth: e.cfg.Auth, DemoTenant: e.demoTenant, DemoAPIKey: e.demoAPIKey}
	e.mu.Unlock()
	if p != nil {
		d := p.Describe()
		s.ControlPlane, s.RouterGRPC, s.RouterHTTP, s.Etcd, s.Auth, s.Nodes = d.ControlPlane, d.RouterGRPC, d.RouterHTTP, d.Etcd, d.Auth, d.Nodes
		s.ClientConfig, s.RouterTLS, s.CA = d.ClientConfig, d.RouterTLS, d.CA
	}
	return s
}

// writeState writes <data-dir>/dev.json atomically (once started).
func (e *Env) writeState() {
	e.mu.Lock()
	started := e.p != nil
	e.mu.Unlock()
	if !started {
		return
	}
	b, _ := json.MarshalIndent(e.State(), "", "  ")
	path := filepath.Join(e.cfg.DataDir, "dev.json")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err == nil {
		_ = os.Rename(tmp, path)
	}
}

// Close stops the router, the nodes (children get SIGTERM, then SIGKILL
// after 15 s) and the control plane.
func (e *Env) Close() {
	e.mu.Lock()
	p := e.p
	e.mu.Unlock()
	if p != nil {
		p.Close()
	}
}
