package platform

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
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
	// reload is the Sources' ReloadInterval (Config.TLSReloadInterval).
	reload time.Duration
	log    *slog.Logger
	mu     sync.Mutex
	ca     *pki.CA // the CA that signs (the new one during a rotation)
	// srcs are the Sources made for in-process components, by file name.
	srcs map[string]*pki.Source
	// op is the admin operator's source: the platform's own connections
	// to the control plane and the nodes present it.
	op *pki.Source
}

// hosts are the SANs of every component certificate.
var hosts = []string{"127.0.0.1", "localhost"}

// openCerts loads or creates the dev CA of cluster in dir and the admin
// operator's certificate; the Sources it makes re-check their files every
// reload (0: pki.DefaultReloadInterval).
func openCerts(dir, cluster string, reload time.Duration, log *slog.Logger) (*certs, error) {
	if reload == 0 {
		reload = pki.DefaultReloadInterval
	}
	c := &certs{dir: dir, reload: reload, log: log, srcs: map[string]*pki.Source{}}
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
	cfg := pki.DirConfig(c.dir, name)
	cfg.ReloadInterval, cfg.Logger = c.reload, c.log
	src, err := pki.NewSource(cfg)
	if err != nil {
		return nil, fmt.Errorf("certs: %s: %w", name, err)
	}
	c.mu.Lock()
	c.srcs[name] = src
	c.mu.Unlock()
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

// ErrNoMutualTLS is returned by the certificate methods of a platform
// started without MutualTLS.
var ErrNoMutualTLS = errors.New("platform: started without MutualTLS")

// RotateCA starts a rotation of the dev CA (docs/security.md, "Rotation
// without a restart", step 1): a new CA for the same cluster signs from
// now on (ReissueCerts, and the certificates of nodes added later), and
// <DataDir>/certs/ca.crt holds the new CA and the old one. Every component
// trusts both at its next file check (TLSReloadInterval; child processes:
// pki.DefaultReloadInterval); the leaves are still the old CA's. It
// returns the new CA's certificate.
func (p *Platform) RotateCA() (*x509.Certificate, error) {
	if p.certs == nil {
		return nil, ErrNoMutualTLS
	}
	c := p.certs
	c.mu.Lock()
	defer c.mu.Unlock()
	ca, err := pki.RotateCA(c.dir, devCALifetime)
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	c.ca = ca
	return ca.Cert, nil
}

// ReissueCerts replaces every leaf certificate in <DataDir>/certs (each
// component's and each operator's) by one of the same identity and hosts
// signed by the current CA, each pair written atomically (step 2 of a CA
// rotation, or a routine leaf renewal). Every component presents its new
// certificate from its next file check on (TLSReloadInterval; child
// processes: pki.DefaultReloadInterval); connections already established
// keep the certificates they were made with. It returns the names of the
// certificates replaced, sorted.
func (p *Platform) ReissueCerts() ([]string, error) {
	if p.certs == nil {
		return nil, ErrNoMutualTLS
	}
	c := p.certs
	c.mu.Lock()
	defer c.mu.Unlock()
	paths, err := filepath.Glob(filepath.Join(c.dir, "*.crt"))
	if err != nil {
		return nil, fmt.Errorf("certs: %w", err)
	}
	var names []string
	for _, path := range paths {
		name := strings.TrimSuffix(filepath.Base(path), ".crt")
		if filepath.Base(path) == pki.CACertFile {
			continue
		}
		old, err := pki.ReadCerts(path)
		if err != nil {
			return names, fmt.Errorf("certs: %w", err)
		}
		id, err := pki.IdentityOf(old[0])
		if err != nil {
			return names, fmt.Errorf("certs: %s: %w", name, err)
		}
		leaf, err := c.ca.Issue(pki.LeafRequest{Identity: id, Hosts: hosts})
		if err != nil {
			return names, fmt.Errorf("certs: %s: %w", name, err)
		}
		if err := pki.WriteLeaf(c.dir, name, leaf, true); err != nil {
			return names, fmt.Errorf("certs: %w", err)
		}
		names = append(names, name)
	}
	sort.Strings(names)
	return names, nil
}

// FinishCARotation ends a CA rotation (step 3): ca.crt keeps only the
// CA that signs. From each component's next file check on, certificates
// of the old CA are refused at the handshake; call it once every
// component presents a certificate of the new CA (ReissueCerts, then
// TLSStates and the served certificates).
func (p *Platform) FinishCARotation() error {
	if p.certs == nil {
		return ErrNoMutualTLS
	}
	c := p.certs
	c.mu.Lock()
	defer c.mu.Unlock()
	ca, err := pki.FinishRotation(c.dir)
	if err != nil {
		return fmt.Errorf("certs: %w", err)
	}
	c.ca = ca
	return nil
}

// TLSState is what an in-process component's TLS material holds.
type TLSState struct {
	// Leaf is the certificate its next handshake presents.
	Leaf *x509.Certificate
	// CAs are the CAs its next handshake trusts.
	CAs []*x509.Certificate
}

// TLSStates returns, by certificate name (node.<r>.<c>.<n>, router.<id>,
// controlplane.<id>, operator.admin), the TLS material each in-process
// component holds now, after a file check if one is due: what its next
// handshake presents and trusts. Child processes are not included (dial
// their ports). nil without MutualTLS.
func (p *Platform) TLSStates() map[string]TLSState {
	if p.certs == nil {
		return nil
	}
	c := p.certs
	c.mu.Lock()
	srcs := make(map[string]*pki.Source, len(c.srcs))
	for name, src := range c.srcs {
		srcs[name] = src
	}
	c.mu.Unlock()
	out := make(map[string]TLSState, len(srcs))
	for name, src := range srcs {
		out[name] = TLSState{Leaf: src.Certificate(), CAs: src.CAs()}
	}
	return out
}
