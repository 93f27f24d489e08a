package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cellplane/cellplane/cells/mcpserver"
	"github.com/cellplane/cellplane/controlplane/topo"
	"github.com/cellplane/cellplane/internal/retry"
	"github.com/cellplane/cellplane/internal/serve"
)

// mcpBenchWorkerID is the registry id of the worker under test.
const mcpBenchWorkerID = "bench-w1"

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat:
// 100 on every Linux architecture Go supports (the kernel fixes it for
// user space whatever its internal HZ).
const clockTicks = 100

// CPU sources of the mcp scenario's worker figures.
const (
	cpuSourceProc      = "/proc/<pid>/stat utime+stime of the worker process (USER_HZ 100)"
	cpuSourceInProcess = "in-process worker: CPU of the whole bench process (cell, etcd, router and load generator included; an upper bound)"
)

// mcpWorker is the MCP worker under test: a separate process (the
// current binary's `worker` command) or, where that binary is not
// cellplane (tests), an mcpserver in this process.
type mcpWorker struct {
	addr      string
	cpuSource string
	cpu       func() (time.Duration, error)
	stop      func() error
}

// startMCPWorker starts the worker for cell and waits until it is ready
// (its /readyz answers 200: it sees a live member of the cell).
func startMCPWorker(ctx context.Context, st topo.Store, etcdEndpoints []string, cell string, opts MCPOptions, p progress) (*mcpWorker, error) {
	if opts.InProcessWorker {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("bench: listen: %w", err)
		}
		cfg := mcpserver.DefaultConfig()
		cfg.ID, cfg.Cell, cfg.Registry, cfg.HTTPListener = mcpBenchWorkerID, cell, st, lis
		cfg.Logger = opts.Logger
		cfg.ShutdownTimeout = 5 * time.Second
		s, err := mcpserver.Start(ctx, cfg)
		if err != nil {
			lis.Close()
			return nil, fmt.Errorf("bench: start the in-process worker: %w", err)
		}
		w := &mcpWorker{addr: s.HTTPAddr(), cpuSource: cpuSourceInProcess, stop: s.Close,
			cpu: func() (time.Duration, error) { return processCPU(), nil }}
		if err := waitReady(ctx, w.addr, nil); err != nil {
			_ = s.Close()
			return nil, err
		}
		return w, nil
	}

	bin := opts.WorkerBinary
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("bench: the worker binary: %w", err)
		}
		bin = exe
	}
	port, err := serve.FreeLoopbackPorts(1)
	if err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port[0])
	cmd := exec.Command(bin, "worker", "--id", mcpBenchWorkerID, "--cell", cell,
		"--etcd-endpoints", strings.Join(etcdEndpoints, ","), "--http-addr", addr,
		"--auth", "none", "--log-level", "warn",
		"--insecure") // the scenario's cell is plaintext: it measures MCP, not TLS
	var stderr lockedBuffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("bench: start the worker process: %w", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	p.printf("  worker process %d: %s", pid, strings.Join(cmd.Args, " "))

	var once sync.Once
	var stopErr error
	stop := func() error {
		once.Do(func() {
			// SIGTERM: the worker deregisters and drains; killed if slow.
			_ = cmd.Process.Signal(syscall.SIGTERM)
			grace := time.NewTimer(10 * time.Second)
			defer grace.Stop()
			select {
			case err := <-exited:
				var ee *exec.ExitError
				if err != nil && !errors.As(err, &ee) {
					stopErr = err
				}
			case <-grace.C:
				_ = cmd.Process.Kill()
				<-exited
				stopErr = fmt.Errorf("bench: worker process %d killed after 10 s", pid)
			}
			if s := strings.TrimSpace(stderr.String()); s != "" {
				p.printf("  worker process output:\n%s", s)
			}
		})
		return stopErr
	}
	w := &mcpWorker{addr: addr, cpuSource: cpuSourceProc, stop: stop,
		cpu: func() (time.Duration, error) { return procCPU(pid) }}
	if _, err := w.cpu(); err != nil {
		_ = stop()
		return nil, fmt.Errorf("bench: worker CPU is not measurable here (use --in-process-worker): %w", err)
	}
	if err := waitReady(ctx, addr, exited); err != nil {
		_ = stop()
		return nil, fmt.Errorf("%w; output: %s", err, strings.TrimSpace(stderr.String()))
	}
	return w, nil
}

// waitReady polls http://addr/readyz until it answers 200, the process
// exits (exited, may be nil) or 30 s pass.
func waitReady(ctx context.Context, addr string, exited <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hc := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	return poll(ctx, func() error {
		select {
		case err := <-exited:
			return retry.Permanent(fmt.Errorf("bench: the worker process exited: %v", err))
		default:
		}
		resp, err := hc.Get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("worker /readyz: %s", resp.Status)
		}
		return nil
	})
}

// procCPU returns the user + system CPU time of process pid, from
// /proc/<pid>/stat (fields 14 and 15, in clock ticks).
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("bench: malformed /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("bench: short /proc/%d/stat", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	stm, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("bench: /proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+stm) * time.Second / clockTicks, nil
}

// lockedBuffer is a bytes.Buffer safe for concurrent writes (a child's
// stdout and stderr) and reads, keeping the last 16 KiB.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	if over := b.buf.Len() - 16<<10; over > 0 {
		b.buf.Next(over)
	}
	return len(p), nil
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
