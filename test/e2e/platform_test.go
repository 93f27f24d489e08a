package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/pki"
	"github.com/cellplane/cellplane/internal/testutil"
)

const (
	readyLine    = "cellplane dev is ready"
	readyTimeout = 90 * time.Second
	stopTimeout  = 20 * time.Second
)

// devInfo is <data-dir>/dev.json.
type devInfo struct {
	Controlplane string    `json:"controlplane"`
	RouterGRPC   string    `json:"router_grpc"`
	RouterHTTP   string    `json:"router_http"`
	Etcd         []string  `json:"etcd"`
	Auth         string    `json:"auth"`
	DemoTenant   string    `json:"demo_tenant"`
	DemoAPIKey   string    `json:"demo_api_key"`
	Nodes        []devNode `json:"nodes"`
	ClientConfig string    `json:"client_config"`
}

type devNode struct {
	ID     string `json:"id"`
	Cell   string `json:"cell"`
	Region string `json:"region"`
	Raft   string `json:"raft"`
	GRPC   string `json:"grpc"`
	HTTP   string `json:"http"`
	PID    int    `json:"pid"`
}

func (d *devInfo) node(id string) (devNode, bool) {
	for _, n := range d.Nodes {
		if n.ID == id {
			return n, true
		}
	}
	return devNode{}, false
}

func (d *devInfo) cells() []string {
	var out []string
	seen := map[string]bool{}
	for _, n := range d.Nodes {
		if !seen[n.Cell] {
			seen[n.Cell] = true
			out = append(out, n.Cell)
		}
	}
	return out
}

// ports are the loopback addresses given to `cellplane dev`; they stay the
// same across restarts (the nodes' addresses are in the registry).
type ports struct {
	controlplane, controlplaneHTTP string
	router, routerHTTP             string
	etcdClient, etcdPeer           string
	nodeBase                       int
}

// platform is one `cellplane dev` run after another on one data directory.
type platform struct {
	t       *testing.T
	dataDir string
	logDir  string // the dev process's stdout and stderr, one pair per run
	ports   ports
	args    []string // the flags, without the data dir and ports
	nodes   int      // expected number of nodes

	run  int // how many times started
	proc *devProc
}

// devProc is one running `cellplane dev` process.
type devProc struct {
	cmd            *exec.Cmd
	stdout, stderr string // file paths
	done           chan struct{}
	waitErr        error
	info           *devInfo // dev.json once ready
	started        time.Time
	stopped        bool // stop ran
}

func (p *devProc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// startPlatform starts `cellplane dev` with args on free ports and a fresh
// data directory, and waits until it is ready. Its cleanup stops it and
// checks that no node process is left.
func startPlatform(t *testing.T, nodes int, args ...string) *platform {
	t.Helper()
	p := &platform{t: t, dataDir: t.TempDir(), logDir: t.TempDir(), args: args, nodes: nodes}
	t.Cleanup(func() {
		if t.Failed() {
			p.diagnostics()
		}
		p.stop(t)
	})
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		p.ports, err = freePorts(3 * nodes)
		if err != nil {
			t.Fatal(err)
		}
		if err = p.start(); err == nil {
			return p
		}
		// Another process may have taken one of the ports between the
		// probe and the start: try other ports.
		if p.proc == nil || !p.proc.exited() || !strings.Contains(p.stderrTail(200), "address already in use") {
			break
		}
		t.Logf("start %d: a port was taken (%v); retrying on other ports", attempt, err)
		if rmErr := os.RemoveAll(p.dataDir); rmErr != nil {
			t.Fatal(rmErr)
		}
		if mkErr := os.MkdirAll(p.dataDir, 0o755); mkErr != nil {
			t.Fatal(mkErr)
		}
	}
	t.Fatalf("cellplane dev did not become ready: %v", err)
	return nil
}

// start runs `cellplane dev` once more on the platform's data directory and
// ports, and waits for it to be ready.
func (p *platform) start() error {
	p.run++
	etcdScheme := "https://" // the embedded etcd serves mutual TLS too
	if slices.Contains(p.args, "--insecure") {
		etcdScheme = "http://"
	}
	args := append([]string{"dev",
		"--data-dir", p.dataDir,
		"--controlplane-addr", p.ports.controlplane,
		"--controlplane-http-addr", p.ports.controlplaneHTTP,
		"--router-addr", p.ports.router,
		"--router-http-addr", p.ports.routerHTTP,
		"--etcd-client-url", etcdScheme + p.ports.etcdClient,
		"--etcd-peer-url", etcdScheme + p.ports.etcdPeer,
		"--node-base-port", strconv.Itoa(p.ports.nodeBase),
	}, p.args...)
	proc := &devProc{
		stdout: filepath.Join(p.logDir, fmt.Sprintf("dev-%d.stdout", p.run)),
		stderr: filepath.Join(p.logDir, fmt.Sprintf("dev-%d.stderr", p.run)),
		done:   make(chan struct{}),
	}
	outF, err := os.Create(proc.stdout)
	if err != nil {
		return err
	}
	defer outF.Close()
	errF, err := os.Create(proc.stderr)
	if err != nil {
		return err
	}
	defer errF.Close()
	proc.cmd = exec.Command(bins.cellplane, args...)
	proc.cmd.Stdout, proc.cmd.Stderr = outF, errF
	// If this test process dies, the platform is told to stop (it stops
	// its children).
	proc.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	p.t.Logf("run %d: %s %s", p.run, bins.cellplane, strings.Join(args, " "))
	proc.started = time.Now()
	if err := proc.cmd.Start(); err != nil {
		return err
	}
	p.proc = proc
	go func() {
		proc.waitErr = proc.cmd.Wait()
		close(proc.done)
	}()

	began := time.Now()
	deadline := time.Now().Add(readyTimeout)
	var last error
	for {
		if proc.exited() {
			return fmt.Errorf("cellplane dev exited before it was ready: %v", proc.waitErr)
		}
		if last = p.ready(proc); last == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %s: %w", readyTimeout, last)
		}
		select { // polling the child's files; its exit ends the wait early
		case <-proc.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
	p.t.Logf("run %d: ready in %s (pid %d); %d nodes", p.run, time.Since(began).Round(time.Millisecond), proc.cmd.Process.Pid, len(proc.info.Nodes))
	out, _ := os.ReadFile(proc.stdout)
	if first, _, _ := strings.Cut(string(out), "\n"); first != readyLine {
		// Scripts wait for this exact line; the rest of the suite can
		// still run.
		p.t.Errorf("run %d: stdout's first line is %q, want exactly %q", p.run, first, readyLine)
	}
	return p.checkInfo(proc.info)
}

// ready reports whether proc printed the ready line and wrote dev.json.
func (p *platform) ready(proc *devProc) error {
	out, err := os.ReadFile(proc.stdout)
	if err != nil {
		return err
	}
	if !bytes.Contains(out, []byte(readyLine)) {
		return errors.New("no ready line on stdout yet")
	}
	// The data directory may hold the previous run's dev.json.
	st, err := os.Stat(filepath.Join(p.dataDir, "dev.json"))
	if err != nil {
		return err
	}
	if st.ModTime().Before(proc.started.Add(-time.Second)) {
		return errors.New("dev.json is the previous run's")
	}
	info, err := p.readDevJSON()
	if err != nil {
		return err
	}
	proc.info = info
	return nil
}

// checkInfo checks dev.json against the flags given.
func (p *platform) checkInfo(info *devInfo) error {
	var errs []error
	if info.Controlplane != p.ports.controlplane {
		errs = append(errs, fmt.Errorf("dev.json controlplane %q, want %q", info.Controlplane, p.ports.controlplane))
	}
	if info.RouterGRPC != p.ports.router || info.RouterHTTP != p.ports.routerHTTP {
		errs = append(errs, fmt.Errorf("dev.json router %q/%q, want %q/%q", info.RouterGRPC, info.RouterHTTP, p.ports.router, p.ports.routerHTTP))
	}
	if len(info.Nodes) != p.nodes {
		errs = append(errs, fmt.Errorf("dev.json has %d nodes, want %d", len(info.Nodes), p.nodes))
	}
	for _, n := range info.Nodes {
		if n.ID == "" || n.Cell == "" || n.GRPC == "" || n.HTTP == "" || n.Raft == "" {
			errs = append(errs, fmt.Errorf("dev.json node incomplete: %+v", n))
		}
		if n.PID <= 0 || !alive(n.PID) {
			errs = append(errs, fmt.Errorf("node %s: pid %d is not a live process (--multiprocess)", n.ID, n.PID))
		}
	}
	return errors.Join(errs...)
}

func (p *platform) readDevJSON() (*devInfo, error) {
	b, err := os.ReadFile(filepath.Join(p.dataDir, "dev.json"))
	if err != nil {
		return nil, err
	}
	var info devInfo
	if err := json.Unmarshal(b, &info); err != nil {
		return nil, fmt.Errorf("dev.json: %w", err)
	}
	return &info, nil
}

// info is the current dev.json (rewritten when a node restarts).
func (p *platform) info(t *testing.T) *devInfo {
	t.Helper()
	info, err := p.readDevJSON()
	if err != nil {
		t.Fatal(err)
	}
	return info
}

// stop sends SIGTERM, waits for the exit (SIGKILL after stopTimeout), and
// checks the exit code and that every node process is gone.
func (p *platform) stop(t *testing.T) {
	t.Helper()
	proc := p.proc
	if proc == nil || proc.stopped {
		return
	}
	proc.stopped = true
	info, _ := p.readDevJSON()
	if proc.exited() {
		t.Errorf("cellplane dev (run %d) had exited by itself: %v", p.run, proc.waitErr)
	} else {
		began := time.Now()
		if err := proc.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Errorf("SIGTERM cellplane dev: %v", err)
		}
		select {
		case <-proc.done:
			t.Logf("run %d: stopped in %s", p.run, time.Since(began).Round(time.Millisecond))
			if proc.waitErr != nil {
				t.Errorf("cellplane dev exited with %v after SIGTERM, want exit code 0", proc.waitErr)
			}
		case <-time.After(stopTimeout):
			t.Errorf("cellplane dev did not exit within %s of SIGTERM; killing it", stopTimeout)
			_ = proc.cmd.Process.Kill()
			<-proc.done
		}
	}
	if info == nil || info.Nodes == nil {
		return
	}
	// Every node process must go with it (they are its children).
	var left []devNode
	err := testutil.Poll(context.Background(), 10*time.Second, func() error {
		left = left[:0]
		for _, n := range info.Nodes {
			if n.PID > 0 && alive(n.PID) {
				left = append(left, n)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("%d node processes still running", len(left))
		}
		return nil
	})
	if err != nil {
		for _, n := range left {
			t.Errorf("node %s (pid %d) still running after cellplane dev exited; killing it", n.ID, n.PID)
			_ = syscall.Kill(n.PID, syscall.SIGKILL)
		}
	}
}

// alive reports whether pid is a running process (not a zombie) of this
// build's cellplane binary.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// "pid (comm) S ...": the state follows the last ')'.
	if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
		if s := stat[i+2]; s == 'Z' || s == 'X' {
			return false
		}
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	return bytes.Contains(cmdline, []byte("cellplane"))
}

// freePorts picks loopback ports for a dev platform: one contiguous range
// of 6 + nodePorts ports in 20000-60000 outside the kernel's ephemeral
// range, every one of them free now (bound and closed again). Outside the
// ephemeral range, no outgoing connection (the nodes' own, or a client
// reconnecting to a stopped router) takes one of them between two runs.
// Nothing is held between here and `cellplane dev` binding them;
// startPlatform retries on other ports if one was taken.
func freePorts(nodePorts int) (ports, error) {
	n := 6 + nodePorts
	from, to := portWindow(n)
	for try := 0; try < 50; try++ {
		base := from + rand.IntN(to-from-n)
		if !rangeFree(base, n) {
			continue
		}
		a := func(i int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)) }
		return ports{
			controlplane: a(0), controlplaneHTTP: a(1),
			router: a(2), routerHTTP: a(3),
			etcdClient: a(4), etcdPeer: a(5),
			nodeBase: base + 6,
		}, nil
	}
	return ports{}, errors.New("no free range of loopback ports found")
}

// portWindow is where freePorts picks: the larger part of 20000-60000
// outside /proc/sys/net/ipv4/ip_local_port_range (32768-60999 by default),
// or all of it when that leaves too little room.
func portWindow(n int) (from, to int) {
	from, to = 20000, 60000
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return from, to
	}
	var lo, hi int
	if _, err := fmt.Sscan(string(b), &lo, &hi); err != nil {
		return from, to
	}
	below, above := lo-from, to-(hi+1)
	switch {
	case below >= above && below > 4*n:
		return from, lo
	case above > below && above > 4*n:
		return hi + 1, to
	}
	return from, to
}

func rangeFree(base, n int) bool {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(base+i)))
		if err != nil {
			return false
		}
		ls = append(ls, l)
	}
	return true
}

// stderrTail is the end of the current run's stderr.
func (p *platform) stderrTail(lines int) string {
	if p.proc == nil {
		return ""
	}
	return tailFile(p.proc.stderr, lines)
}

func tailFile(path string, lines int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// diagnostics logs what helps understand a failure: the dev process's
// output and the tails of the log files under the data directory.
func (p *platform) diagnostics() {
	t := p.t
	if p.proc != nil {
		t.Logf("--- cellplane dev run %d stdout (%s):\n%s", p.run, p.proc.stdout, tailFile(p.proc.stdout, 40))
		t.Logf("--- cellplane dev run %d stderr (%s), last 80 lines:\n%s", p.run, p.proc.stderr, tailFile(p.proc.stderr, 80))
	}
	if info, err := p.readDevJSON(); err == nil {
		for _, n := range info.Nodes {
			t.Logf("node %s cell %s pid %d alive=%v grpc %s http %s raft %s", n.ID, n.Cell, n.PID, n.PID > 0 && alive(n.PID), n.GRPC, n.HTTP, n.Raft)
		}
	}
	_ = filepath.WalkDir(p.dataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		// The nodes' logs (<data-dir>/logs/<node>.log), not the stores'
		// write-ahead logs.
		if filepath.Base(filepath.Dir(path)) == "logs" {
			t.Logf("--- %s, last 30 lines:\n%s", path, tailFile(path, 30))
		}
		return nil
	})
}

// cellctl runs the admin CLI against the platform's control plane and
// returns its stdout; a non-zero exit is an error carrying stderr.
func (p *platform) cellctl(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bins.cellctl, append([]string{"--controlplane", p.ports.controlplane}, args...)...)
	// With mutual TLS (dev's default) as the admin operator of dev.json's
	// client configuration; --controlplane still names the address.
	cmd.Env = cellctlEnv("")
	if info, err := p.readDevJSON(); err == nil && info.ClientConfig != "" {
		cmd.Env = cellctlEnv(info.ClientConfig)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("cellctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// cellctlEnv is this process's environment without CELLPLANE_ variables,
// plus CELLPLANE_CONFIG=config unless config is "".
func cellctlEnv(config string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CELLPLANE_") {
			env = append(env, kv)
		}
	}
	if config != "" {
		env = append(env, "CELLPLANE_CONFIG="+config)
	}
	return env
}

// nodeHTTP returns an HTTP client of the nodes' HTTP ports and their
// scheme: with mutual TLS (dev.json names a client configuration) https,
// presenting the dev admin operator's certificate; plain http otherwise.
func (p *platform) nodeHTTP(t *testing.T) (*http.Client, string) {
	t.Helper()
	info := p.info(t)
	if info.ClientConfig == "" {
		return http.DefaultClient, "http"
	}
	src, err := pki.NewSource(pki.DirConfig(filepath.Join(p.dataDir, "certs"), "operator.admin"))
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{TLSClientConfig: src.ClientTLSConfig(pki.ExpectKinds(pki.KindNode))}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}, "https"
}

// mustCellctl is cellctl that fails the test on error.
func (p *platform) mustCellctl(t *testing.T, ctx context.Context, args ...string) string {
	t.Helper()
	out, err := p.cellctl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
