package platform

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cellplane/cellplane/internal/pki"
)

// child is a node's process.
type child struct {
	cmd *exec.Cmd
	// done is closed when the process exited.
	done chan struct{}
	// stopping: the platform stops it (Kill, Stop or Close); its exit
	// is not a crash.
	stopping bool
}

// spawn starts the node as a child process, logging to
// <DataDir>/logs/<id>.log, and supervises it.
func (n *Node) spawn() error {
	p := n.p
	bin := p.cfg.Binary
	if bin == "" {
		var err error
		if bin, err = os.Executable(); err != nil {
			return err
		}
	}
	logDir := filepath.Join(p.cfg.DataDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}
	logPath := filepath.Join(logDir, n.info.ID+".log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	info := n.Info()
	args := []string{"cell", "--id", info.ID, "--cell", info.Cell, "--data-dir", filepath.Join(p.cfg.DataDir, "nodes", info.ID),
		"--etcd-endpoints", strings.Join(p.cp.EtcdEndpoints(), ","),
		"--raft-addr", info.Raft, "--grpc-addr", info.GRPC, "--http-addr", info.HTTP,
		"--log-level", orDefault(p.cfg.ChildLogLevel, "info"),
		"--mcp-auth", map[bool]string{true: "apikey", false: "none"}[p.cfg.Auth == AuthAPIKey],
		"--mcp-public-url", p.MCPPublicURL()}
	if p.cfg.ChildArgs != nil {
		args = append(args, p.cfg.ChildArgs(info, n.cell.infos())...)
	}
	if p.certs != nil {
		// Its certificate is its etcd identity too (cellplane cell uses
		// --certs-dir for https etcd endpoints): its user first.
		ectx, cancel := context.WithTimeout(context.Background(), nodeStartTimeout)
		err := p.cp.EnsureEtcdUser(ectx, pki.NodeIdentity(p.cfg.Name, n.cell.region, n.cell.id, info.ID))
		cancel()
		if err != nil {
			logf.Close()
			return fmt.Errorf("node %s: etcd user: %w", info.ID, err)
		}
		args = append(args, "--certs-dir", p.certs.dir, "--cert-name", n.certName)
	} else {
		args = append(args, "--insecure") // the platform said so once, at Start
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if p.cfg.ChildEnv != nil {
		cmd.Env = append(os.Environ(), p.cfg.ChildEnv(info)...)
	}
	// Its own process group: a Ctrl-C in the terminal reaches the parent
	// only, which then stops its children in order.
	cmd.SysProcAttr = childAttrs()
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("start node %s: %w", info.ID, err)
	}
	conn, err := n.p.dialAs(info.GRPC, pki.KindNode)
	if err != nil {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		logf.Close()
		return fmt.Errorf("node %s: dial %s: %w", info.ID, info.GRPC, err)
	}
	ch := &child{cmd: cmd, done: make(chan struct{})}
	n.mu.Lock()
	n.info.PID = cmd.Process.Pid
	n.child, n.conn = ch, conn
	pid := n.info.PID
	n.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		err := cmd.Wait()
		logf.Close()
		n.mu.Lock()
		if n.child == ch {
			n.child = nil
			_ = n.conn.Close()
			n.conn = nil
		}
		stopping := ch.stopping
		n.mu.Unlock()
		close(ch.done)
		p.mu.Lock()
		closing := p.closing
		p.mu.Unlock()
		if closing || stopping {
			return
		}
		p.progress("node %s (pid %d) exited: %v (log: %s)", info.ID, pid, err, logPath)
		if p.cfg.RestartKilled {
			p.progress("restarting node %s", info.ID)
			if err := n.spawn(); err != nil {
				p.progress("restarting node %s failed: %v", info.ID, err)
			}
			p.changed()
		}
	}()
	return nil
}

// stopping marks the node's process as stopped by the platform and returns it;
// nil if none runs.
func (n *Node) stopping() *child {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.child != nil {
		n.child.stopping = true
	}
	return n.child
}

func (n *Node) killChild() (killedAt, downAt time.Time) {
	killedAt = time.Now()
	ch := n.stopping()
	if ch == nil {
		return killedAt, killedAt
	}
	_ = ch.cmd.Process.Kill()
	<-ch.done
	return killedAt, time.Now()
}

func (n *Node) stopChild() {
	ch := n.stopping()
	if ch == nil {
		return
	}
	_ = ch.cmd.Process.Signal(syscall.SIGTERM)
	_ = pauseChild(ch.cmd.Process.Pid, false) // a paused process handles SIGTERM once continued
	grace := time.NewTimer(15 * time.Second)
	defer grace.Stop()
	select {
	case <-ch.done:
	case <-grace.C:
		_ = ch.cmd.Process.Kill()
		<-ch.done
	}
}

// Pause stops a child node's process with SIGSTOP (Linux only), as a long
// GC pause or a stalled VM would: it holds its sockets and answers nothing
// until Resume. Kill still works on a paused node.
func (n *Node) Pause() error { return n.signalPause(true) }

// Resume continues a node paused by Pause (SIGCONT).
func (n *Node) Resume() error { return n.signalPause(false) }

func (n *Node) signalPause(pause bool) error {
	n.mu.Lock()
	ch := n.child
	n.mu.Unlock()
	if ch == nil {
		return fmt.Errorf("node %s: no child process runs (pausing needs Config.MultiProcess)", n.info.ID)
	}
	return pauseChild(ch.cmd.Process.Pid, pause)
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
