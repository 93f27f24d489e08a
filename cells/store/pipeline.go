package store

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// safeTransport is raft's NetworkTransport with a pipeline that cannot
// deadlock. In hashicorp/raft v1.8.0, when a follower answers a pipelined
// AppendEntries unsuccessfully (or with a newer term), the leader's
// decoding goroutine (pipelineDecode) returns and nothing reads the
// pipeline's responses any more; the transport's response reader then
// blocks handing over the next response, the in-flight slots fill, and
// the sender blocks for ever inside AppendEntries — so the replication
// goroutine never sees that decoding stopped, and Raft's Shutdown waits on
// it for ever (seen as a hung Store.Close in storetest under load).
//
// safePipeline drains the inner pipeline's responses into a queue of its
// own, so the transport's reader never blocks and the sender always gets
// its slot back; the replication loop then notices that decoding stopped
// and closes the pipeline, which ends the queue.
//
// It also gates raft's heartbeat handler: the transport runs it on its
// connection goroutines, which Raft's Shutdown does not wait for, and it
// writes the stable store (the term). closeHeartbeats waits for the ones
// running and refuses later ones, so that the store can close its log
// without a late heartbeat writing to it (raft panics on that write).
//
// And it refuses answers from the wrong server (H1, see wrongServer).
type safeTransport struct {
	*raft.NetworkTransport

	// onWrongServer is called for each answer refused by checkServer
	// (nil: none).
	onWrongServer func(want, got raft.ServerID, addr raft.ServerAddress)

	mu      sync.RWMutex // held for reading by each running heartbeat
	stopped bool

	// onAck, when set, is told of each successful AppendEntries: the
	// peer, the request's term and when it was sent (lease reads).
	onAck func(id raft.ServerID, term uint64, sent time.Time)
	// guard, with lease reads, refuses votes for a while after a restart
	// and TimeoutNow from any server but the leader (nil: none; lease.go).
	guard *voteGuard
}

// SetHeartbeatHandler implements raft.Transport.
func (t *safeTransport) SetHeartbeatHandler(cb func(rpc raft.RPC)) {
	if cb == nil {
		t.NetworkTransport.SetHeartbeatHandler(nil)
		return
	}
	t.NetworkTransport.SetHeartbeatHandler(func(rpc raft.RPC) {
		t.mu.RLock()
		defer t.mu.RUnlock()
		if t.stopped {
			rpc.Respond(nil, raft.ErrTransportShutdown)
			return
		}
		cb(rpc)
	})
}

// closeHeartbeats waits for running heartbeats and refuses new ones.
func (t *safeTransport) closeHeartbeats() {
	t.mu.Lock()
	t.stopped = true
	t.mu.Unlock()
}

// errWrongServer is returned for an RPC that another server than the one
// addressed answered.
var errWrongServer = errors.New("store: another Raft server answered at the member's address")

// checkServer fails unless the server that answered (the response
// header's ID) is the one addressed. hashicorp/raft counts a vote or an
// acknowledgement as the addressed server's without looking at who sent
// it, so a node that lost its data and came back under a new Raft id at
// its old address would otherwise vote and acknowledge as its old
// incarnation — with an empty log (H1, Raft amnesia).
func (t *safeTransport) checkServer(id raft.ServerID, target raft.ServerAddress, h raft.RPCHeader) error {
	if got := raft.ServerID(h.ID); got != id {
		if t.onWrongServer != nil {
			t.onWrongServer(id, got, target)
		}
		return fmt.Errorf("%w: %s addressed at %s, %q answered", errWrongServer, id, target, got)
	}
	return nil
}

// AppendEntries implements raft.Transport.
func (t *safeTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	var sent time.Time
	if t.onAck != nil {
		sent = time.Now() // before the request can reach the peer
	}
	if err := t.NetworkTransport.AppendEntries(id, target, args, resp); err != nil {
		return err
	}
	if err := t.checkServer(id, target, resp.RPCHeader); err != nil {
		return err
	}
	if t.onAck != nil && resp.Success {
		t.onAck(id, args.Term, sent)
	}
	return nil
}

// RequestVote implements raft.Transport.
func (t *safeTransport) RequestVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestVoteRequest, resp *raft.RequestVoteResponse) error {
	if err := t.NetworkTransport.RequestVote(id, target, args, resp); err != nil {
		return err
	}
	return t.checkServer(id, target, resp.RPCHeader)
}

// RequestPreVote implements raft.WithPreVote.
func (t *safeTransport) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	if err := t.NetworkTransport.RequestPreVote(id, target, args, resp); err != nil {
		return err
	}
	return t.checkServer(id, target, resp.RPCHeader)
}

// InstallSnapshot and TimeoutNow are not checked: hashicorp/raft v1.8.0
// answers them without an RPC header. Neither can make an amnesiac node
// count: a snapshot holds only committed entries, and TimeoutNow makes
// its target campaign, which a server outside the configuration does not.

// AppendEntriesPipeline implements raft.Transport.
func (t *safeTransport) AppendEntriesPipeline(id raft.ServerID, target raft.ServerAddress) (raft.AppendPipeline, error) {
	p, err := t.NetworkTransport.AppendEntriesPipeline(id, target)
	if err != nil {
		return nil, err
	}
	sp := newSafePipeline(p)
	sp.check = func(h raft.RPCHeader) error { return t.checkServer(id, target, h) }
	return sp, nil
}

type safePipeline struct {
	// check refuses a response from the wrong server (nil: none).
	check func(raft.RPCHeader) error
	inner raft.AppendPipeline
	out   chan raft.AppendFuture
	done  chan struct{}
	once  sync.Once
	pump  sync.WaitGroup
}

func newSafePipeline(inner raft.AppendPipeline) *safePipeline {
	p := &safePipeline{inner: inner, out: make(chan raft.AppendFuture), done: make(chan struct{})}
	p.pump.Add(1)
	go p.run()
	return p
}

// run moves responses from the inner pipeline to the consumer, queueing
// them while the consumer is not reading.
func (p *safePipeline) run() {
	defer p.pump.Done()
	in := p.inner.Consumer()
	var queue []raft.AppendFuture
	for {
		var out chan raft.AppendFuture
		var next raft.AppendFuture
		if len(queue) > 0 {
			out, next = p.out, queue[0]
		}
		select {
		case f := <-in:
			if p.check != nil && f.Error() == nil {
				if resp := f.Response(); resp != nil && p.check(resp.RPCHeader) != nil {
					// Refuse it the only way raft's decoder hears: an
					// unsuccessful answer at the request's term, which
					// ends the pipeline (raft then falls back to single
					// AppendEntries, which fail with errWrongServer).
					resp.Success = false
					resp.Term = f.Request().Term
				}
			}
			queue = append(queue, f)
		case out <- next:
			queue[0] = nil
			queue = queue[1:]
		case <-p.done:
			return
		}
	}
}

func (p *safePipeline) AppendEntries(args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	return p.inner.AppendEntries(args, resp)
}

func (p *safePipeline) Consumer() <-chan raft.AppendFuture { return p.out }

func (p *safePipeline) Close() error {
	var err error
	p.once.Do(func() {
		err = p.inner.Close()
		close(p.done)
		p.pump.Wait()
	})
	return err
}
