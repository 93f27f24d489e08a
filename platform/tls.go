package platform

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/pki"
)

// Files of a platform started with MutualTLS, under DataDir.
const (
	// CertsDir holds the dev CA (ca.crt, ca.key) and one certificate per
	// component, as `cellplane cert` lays a certs directory out.
	CertsDir = "certs"
	// ClientConfigFile is the client configuration file (client.ConfigFile,
	// CELLPLANE_CONFIG) of the platform's admin operator.
	ClientConfigFile = "client.yaml"
	// AdminOperator is the name of the admin operator certificate
	// (operator.<AdminOperator>).
	AdminOperator = "admin"
)

// devCALifetime is the dev CA's lifetime (its leaves get their kinds'
// defaults, cut to it).
const devCALifetime = 10 * 365 * 24 * time.Hour

// certs is the dev PKI of a platform started with MutualTLS: the CA in
// <DataDir>/certs, created on the first start and reused on the next ones,
// and the certificates it issued (reused too, issued when missing).
type certs struct {
	dir string
	mu  sync.Mutex
	ca  *pki.CA
	// op is the admin operator's source: the platform's own connections
	// to the control plane and the nodes present it.
	op *pki.Source
}

// hosts are the SANs of every component certificate.
var hosts = []string{"127.0.0.1", "localhost"}

// openCerts loads or creates the dev CA of cluster in dir and the admin
// operator's certificate.
func openCerts(dir, cluster string) (*certs, error) {
	c := &certs{dir: dir}
	ca, err := pki.LoadCA(dir)
	switch {
	case err == nil:
		if ca.Cluster() != cluster {
			return nil, fmt.Errorf("certs: %s holds a CA of cluster %q, the platform is %q", dir, ca.Cluster(), cluster)
		}
	case errors.Is(err, fs.ErrNotExist):
		if ca, err = pki.NewCA(cluster, devCALifetime); err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
		if err := pki.WriteCA(dir, ca, false); err != nil {
			return nil, fmt.Errorf("certs: %w", err)
		}
	default:
		return nil, fmt.Errorf("certs: %w", err)
	}
	c.ca = ca
	if c.op, err = c.source(pki.OperatorIdentity(cluster, pki.RoleAdmin, AdminOperator)); err != nil {
		return nil, err
	}
	return c, nil
}

// source returns a Source of id's certificate, issuing it first when the
// directory does not hold it yet.
func (c *certs) source(id pki.Identity) (*pki.Source, error) {
	name, err := c.ensure(id)
	if err != nil {
		return nil, err
	}
	src, err := pki.NewSource(pki.DirConfig(c.dir, name))
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", name, err)
	}
	return src, nil
}

// ensure issues id's certificate unless the directory holds it, and
// returns its file name.
func (c *certs) ensure(id pki.Identity) (string, error) {
	name := id.FileName()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := os.Stat(filepath.Join(c.dir, name+".crt")); err == nil {
		return name, nil
	}
	leaf, err := c.ca.Issue(pki.LeafRequest{Identity: id, Hosts: hosts})
	if err != nil {
		return "", fmt.Errorf("certs: %s: %w", name, err)
	}
	if err := pki.WriteLeaf(c.dir, name, leaf, true); err != nil {
		return "", fmt.Errorf("certs: %w", err)
	}
	return name, nil
}

// dialAs opens a connection that, with MutualTLS, presents the admin
// operator's certificate and accepts only a server of kind want (unless
// Config.Dial sets credentials); plaintext otherwise.
func (p *Platform) dialAs(target string, want pki.Kind) (*grpc.ClientConn, error) {
	dc := p.cfg.Dial
	if p.certs != nil && dc.Credentials == nil {
		dc.Credentials = pki.ClientCredentials(p.certs.op, pki.ExpectKinds(want))
	}
	return dial.New(target, dc)
}

// writeClientConfig writes <DataDir>/client.yaml (mode 0600): the control
// plane and the router, and the admin operator's TLS material (paths
// relative to the file).
func (p *Platform) writeClientConfig() error {
	name := pki.OperatorIdentity(p.cfg.Name, pki.RoleAdmin, AdminOperator).FileName()
	body := fmt.Sprintf("# cellplane dev: CELLPLANE_CONFIG=%s cellctl status\ncontrolplane: %q\nrouter: %q\nca: %q\ncert: %q\nkey: %q\n",
		p.ClientConfigPath(), p.cp.GRPCAddr(), p.rt.GRPCAddr(),
		filepath.Join(CertsDir, pki.CACertFile), filepath.Join(CertsDir, name+".crt"), filepath.Join(CertsDir, name+".key"))
	path := p.ClientConfigPath()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(body), 0o600); err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("client config: %w", err)
	}
	return nil
}

// ClientConfigPath is the client configuration file of a platform started
// with MutualTLS (<DataDir>/client.yaml, absolute when the working
// directory is known); "" without.
func (p *Platform) ClientConfigPath() string {
	if !p.cfg.MutualTLS {
		return ""
	}
	path := filepath.Join(p.cfg.DataDir, ClientConfigFile)
	if abs, err := filepath.Abs(path); err == nil {
		return abs
	}
	return path
}

// CertsDir is the dev certs directory of a platform started with
// MutualTLS (<DataDir>/certs); "" without.
func (p *Platform) CertsDir() string {
	if !p.cfg.MutualTLS {
		return ""
	}
	return filepath.Join(p.cfg.DataDir, CertsDir)
}
