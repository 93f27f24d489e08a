package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/serve"
)

// child is one member process of a per-process scenario: the current
// binary run with a subcommand. Its CPU is read from /proc/<pid>/stat.
type child struct {
	name   string
	cmd    *exec.Cmd
	out    *lockedBuffer
	exited chan error
	once   sync.Once
	err    error
}

// startChild starts bin with args; its stdout and stderr are kept (the
// last 16 KiB) and printed by stop when non-empty.
func startChild(name, bin string, args ...string) (*child, error) {
	c := &child{name: name, cmd: exec.Command(bin, args...), out: &lockedBuffer{}, exited: make(chan error, 1)}
	c.cmd.Stdout, c.cmd.Stderr = c.out, c.out
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start %s: %w", name, err)
	}
	go func() { c.exited <- c.cmd.Wait() }()
	return c, nil
}

func (c *child) pid() int { return c.cmd.Process.Pid }

// cpu returns the user + system CPU the process has used.
func (c *child) cpu() time.Duration {
	d, err := procCPU(c.pid())
	if err != nil {
		return 0
	}
	return d
}

// alive returns an error once the process has exited.
func (c *child) alive() error {
	select {
	case err := <-c.exited:
		c.exited <- err
		return fmt.Errorf("bench: %s exited (%v): %s", c.name, err, strings.TrimSpace(c.out.String()))
	default:
		return nil
	}
}

// stop sends SIGTERM and waits up to grace, then kills the process.
func (c *child) stop(grace time.Duration) error {
	c.once.Do(func() {
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(grace)
		defer t.Stop()
		select {
		case err := <-c.exited:
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				c.err = err
			}
		case <-t.C:
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	})
	return c.err
}

// children is the member processes of one system under test.
type children []*child

func (cs children) cpu() time.Duration {
	var sum time.Duration
	for _, c := range cs {
		sum += c.cpu()
	}
	return sum
}

func (cs children) alive() error {
	for _, c := range cs {
		if err := c.alive(); err != nil {
			return err
		}
	}
	return nil
}

// stop stops every process at once.
func (cs children) stop() {
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() { _ = c.stop(10 * time.Second) })
	}
	wg.Wait()
}

// benchPKI is the certificates of a per-process run: one CA (cluster
// "bench") and a leaf per member and per client identity, written to Dir
// the way `cellplane cert` writes them, so that members load them with
// --certs-dir as in production.
type benchPKI struct {
	Dir     string
	Cluster string
	// Router and ControlPlane are the bench's own client identities (the
	// router's for data calls, the control plane's for SetTenant and
	// GetStatus), loaded from Dir.
	Router, ControlPlane *pki.Source
}

const (
	benchPKICluster = "bench"
	benchRegion     = "r1"
	benchCellID     = "c1"
)

// newBenchPKI creates the CA and the leaves of nodes n1..n<size> of cell
// c1 in region r1, of etcd members etcd1..etcd<size> (control plane
// identities with 127.0.0.1 in their SANs: etcd's clients check host
// names), and of the bench's router and control plane identities.
func newBenchPKI(dir string, size int) (*benchPKI, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bench: certs dir: %w", err)
	}
	ca, err := pki.NewCA(benchPKICluster, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	if err := pki.WriteCA(dir, ca, false); err != nil {
		return nil, err
	}
	hosts := []string{"127.0.0.1", "localhost"}
	ids := []pki.Identity{pki.RouterIdentity(benchPKICluster, "bench"), pki.ControlPlaneIdentity(benchPKICluster, "bench")}
	for i := range size {
		ids = append(ids, pki.NodeIdentity(benchPKICluster, benchRegion, benchCellID, fmt.Sprintf("n%d", i+1)),
			pki.ControlPlaneIdentity(benchPKICluster, fmt.Sprintf("etcd%d", i+1)))
	}
	for _, id := range ids {
		leaf, err := ca.Issue(pki.LeafRequest{Identity: id, Hosts: hosts})
		if err != nil {
			return nil, err
		}
		if err := pki.WriteLeaf(dir, id.FileName(), leaf, false); err != nil {
			return nil, err
		}
	}
	p := &benchPKI{Dir: dir, Cluster: benchPKICluster}
	if p.Router, err = pki.NewSource(pki.DirConfig(dir, ids[0].FileName())); err != nil {
		return nil, err
	}
	if p.ControlPlane, err = pki.NewSource(pki.DirConfig(dir, ids[1].FileName())); err != nil {
		return nil, err
	}
	return p, nil
}

// leafFiles returns the certificate and key files of a leaf in dir.
func leafFiles(dir string, id pki.Identity) (cert, key string) {
	return filepath.Join(dir, id.FileName()+".crt"), filepath.Join(dir, id.FileName()+".key")
}

// loopbackAddrs returns n loopback addresses that were free a moment ago.
func loopbackAddrs(n int) ([]string, error) {
	ports, err := serve.FreeLoopbackPorts(n)
	if err != nil {
		return nil, err
	}
	out := make([]string, n)
	for i, p := range ports {
		out[i] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	return out, nil
}

// waitChildren polls fn until it succeeds, a child exits or ctx ends.
func waitChildren(ctx context.Context, cs children, fn func() error) error {
	return poll(ctx, func() error {
		if err := cs.alive(); err != nil {
			return retry.Permanent(err)
		}
		return fn()
	})
}
