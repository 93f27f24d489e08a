package mcpserver_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cellplane/cellplane/cells/mcpauth"
	"github.com/cellplane/cellplane/cells/mcpserver"
	"github.com/cellplane/cellplane/controlplane/cptest"
	"github.com/cellplane/cellplane/internal/dial"
	"github.com/cellplane/cellplane/internal/tenantmd"
	"github.com/cellplane/cellplane/internal/testutil"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

// The child process of TestS26WorkerKilledMidCall: a stand-alone worker
// (what `cellplane worker` runs) on the etcd and cell the parent names,
// printing its address, until it is killed.
const workerChildEnv = "CELLPLANE_TEST_WORKER_CHILD"

func TestWorkerChildProcess(t *testing.T) {
	spec := os.Getenv(workerChildEnv)
	if spec == "" {
		t.Skip("the child process of TestS26WorkerKilledMidCall")
	}
	endpoint, cell, ok := strings.Cut(spec, " ")
	if !ok {
		t.Fatalf("bad %s=%q", workerChildEnv, spec)
	}
	st := (&cptest.Env{Endpoints: []string{endpoint}}).Store(t)
	authn, err := mcpauth.New(mcpauth.Config{Registry: st})
	if err != nil {
		t.Fatal(err)
	}
	cfg := mcpserver.DefaultConfig()
	cfg.ID, cfg.Cell, cfg.Registry, cfg.Auth = fmt.Sprint("pool-", os.Getpid()), cell, st, authn
	cfg.HTTPListener = testutil.Listen(t)
	cfg.RegistryTTL = time.Second
	w, err := mcpserver.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("WORKER %s\n", w.HTTPAddr())
	<-t.Context().Done() // killed before
}

// startWorkerChild starts the worker as a child process (the test binary
// re-run on TestWorkerChildProcess) and returns it with its address.
func startWorkerChild(t *testing.T, endpoint, cell string) (*exec.Cmd, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestWorkerChildProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), workerChildEnv+"="+endpoint+" "+cell, "GOMAXPROCS=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = nil
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string, 1)
	scanned := make(chan struct{})
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		<-scanned // the reader below ends with the pipe
	})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if addr, ok := strings.CutPrefix(sc.Text(), "WORKER "); ok {
				lines <- addr
			}
		}
		close(lines)
	}()
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case addr, ok := <-lines:
		if !ok {
			t.Fatal("the worker child exited before it listened")
		}
		return cmd, addr
	case <-timer.C:
		t.Fatal("the worker child did not start within 30 s")
	}
	return nil, ""
}

// TestS26WorkerKilledMidCall (scenario S26): a stand-alone MCP worker runs
// as a child process; four agents call context_append on it (each call 3
// entries, with a request_id) and it is killed with SIGKILL while calls
// are in flight. Every call ends at the client — a result, or an error
// within its deadline (none hangs); the conversation, read at the cell,
// holds each call's entries whole and contiguous or not at all (no
// half-written entry, no partial call); then a new worker takes the
// retries of every call that did not answer, with the same request_ids,
// and each call's entries are there exactly once.
func TestS26WorkerKilledMidCall(t *testing.T) {
	if testing.Short() {
		t.Skip("starts etcd, a control plane, a cell and worker child processes")
	}
	env := cptest.New(t)
	nodes := env.CreateCell(t, "us-east", "c1", 1)
	ctx := testutil.Context(t, 2*time.Minute)
	cl := env.Client(t)
	if _, err := cl.CreateTenant(ctx, &cpv1.CreateTenantRequest{Id: "acme", HomeRegion: "us-east"}); err != nil {
		t.Fatal(err)
	}
	key, err := cl.CreateApiKey(ctx, &cpv1.CreateApiKeyRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	cmd, addr := startWorkerChild(t, env.Endpoints[0], "c1")
	sess := connect(t, ctx, "http://"+addr+"/t/acme/mcp", key.GetSecret())
	if _, err := call(ctx, sess, "context_create", map[string]any{"context_id": "chat"}); err != nil {
		t.Fatal(err)
	}
	entries := func(id string) []map[string]any {
		var out []map[string]any
		for k := range 3 {
			out = append(out, map[string]any{"role": "user", "content": fmt.Sprintf("%s/%d/%s", id, k, strings.Repeat("x", 2000))})
		}
		return out
	}

	type outcome struct {
		id   string
		err  error
		took time.Duration
	}
	var (
		mu       sync.Mutex
		outcomes []outcome
		wg       sync.WaitGroup
	)
	killed := make(chan struct{})
	const callTimeout = 10 * time.Second
	for a := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				id := fmt.Sprintf("a%d-%d", a, i)
				cctx, cancel := context.WithTimeout(ctx, callTimeout)
				start := time.Now()
				_, err := call(cctx, sess, "context_append", map[string]any{"context_id": "chat", "request_id": id, "entries": entries(id)})
				cancel()
				mu.Lock()
				outcomes = append(outcomes, outcome{id: id, err: err, took: time.Since(start)})
				mu.Unlock()
				select {
				case <-killed:
					return // the call in flight at the kill has ended
				default:
				}
			}
		}()
	}
	testutil.Eventually(t, 30*time.Second, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(outcomes) < 40 {
			return fmt.Errorf("%d calls answered", len(outcomes))
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	close(killed)
	wg.Wait()

	var failed []string
	var example error
	for _, o := range outcomes {
		if o.err == nil {
			continue
		}
		failed = append(failed, o.id)
		example = o.err
		if o.took >= callTimeout {
			t.Errorf("call %s hung until its deadline (%v): %v", o.id, o.took, o.err)
		}
		// The defined ends of a call whose worker died: the connection
		// closed under it (EOF, reset, or closed by the transport while it
		// was still writing the request), or refused.
		if !errors.Is(o.err, io.EOF) && !errors.Is(o.err, io.ErrUnexpectedEOF) && !errors.Is(o.err, syscall.ECONNRESET) &&
			!errors.Is(o.err, syscall.ECONNREFUSED) && !errors.Is(o.err, net.ErrClosed) {
			t.Errorf("call %s ended with %v, want EOF, ECONNRESET, ECONNREFUSED or a closed connection from the transport", o.id, o.err)
		}
	}
	if len(failed) == 0 {
		t.Fatal("no call was in flight at the kill")
	}
	t.Logf("%d calls, %d ended with an error at the kill (e.g. %v)", len(outcomes), len(failed), example)

	// At the cell: each call whole and contiguous, or absent.
	conn, err := dial.New(nodes[0].GRPCAddr(), dial.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	data := contextv1.NewContextServiceClient(conn)
	check := func(wantAll bool) {
		t.Helper()
		var texts []string
		for from := uint64(1); ; {
			resp, err := data.Read(tenantmd.Outgoing(ctx, "acme", 0), &contextv1.ReadRequest{ContextId: "chat", Start: &contextv1.ReadRequest_FromSeq{FromSeq: from}, MaxEntries: 1000})
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range resp.GetEntries() {
				texts = append(texts, e.GetText())
			}
			if len(resp.GetEntries()) == 0 || resp.GetNextSeq() > resp.GetLastSeq() {
				break
			}
			from = resp.GetNextSeq()
		}
		count := map[string]int{}
		for i := 0; i < len(texts); {
			id, _, _ := strings.Cut(texts[i], "/")
			for k := range 3 {
				want := fmt.Sprintf("%s/%d/%s", id, k, strings.Repeat("x", 2000))
				if i+k >= len(texts) || texts[i+k] != want {
					t.Fatalf("entry %d: call %s is not whole and contiguous (entry %d of it)", i+k+1, id, k)
				}
			}
			count[id]++
			i += 3
		}
		for _, o := range outcomes {
			n := count[o.id]
			switch {
			case n > 1:
				t.Errorf("call %s appended %d times", o.id, n)
			case n == 0 && (o.err == nil || wantAll):
				t.Errorf("call %s (error %v) is not in the conversation", o.id, o.err)
			}
		}
	}
	check(false)

	// Retries through a new worker, with the same request ids.
	_, addr2 := startWorkerChild(t, env.Endpoints[0], "c1")
	sess2 := connect(t, ctx, "http://"+addr2+"/t/acme/mcp", key.GetSecret())
	for _, id := range failed {
		if _, err := call(ctx, sess2, "context_append", map[string]any{"context_id": "chat", "request_id": id, "entries": entries(id)}); err != nil {
			t.Fatalf("retry of %s: %v", id, err)
		}
	}
	check(true)
}
