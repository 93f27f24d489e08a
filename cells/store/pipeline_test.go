package store

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

type fakeFuture struct {
	raft.AppendFuture
	n int
}

type fakePipeline struct {
	ch     chan raft.AppendFuture
	closed chan struct{}
}

func (f *fakePipeline) AppendEntries(*raft.AppendEntriesRequest, *raft.AppendEntriesResponse) (raft.AppendFuture, error) {
	return nil, nil
}
func (f *fakePipeline) Consumer() <-chan raft.AppendFuture { return f.ch }
func (f *fakePipeline) Close() error                       { close(f.closed); return nil }

// The transport's response reader never blocks on a consumer that stopped
// reading (raft's pipelineDecode after a failed response): that block is
// what deadlocked raft's pipeline.
func TestSafePipelineNeverBlocksTheReader(t *testing.T) {
	inner := &fakePipeline{ch: make(chan raft.AppendFuture), closed: make(chan struct{})}
	p := newSafePipeline(inner)
	delivered := make(chan struct{})
	go func() {
		defer close(delivered)
		for i := range 100 {
			inner.ch <- fakeFuture{n: i} // blocks for ever if nobody drains
		}
	}()
	select {
	case <-delivered:
	case <-time.After(10 * time.Second):
		t.Fatal("the inner pipeline's reader blocked with no consumer reading")
	}
	// The consumer gets them in order when it reads again.
	for i := range 3 {
		if f := (<-p.Consumer()).(fakeFuture); f.n != i {
			t.Fatalf("future %d out of order: %d", i, f.n)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-inner.closed:
	default:
		t.Fatal("Close did not close the inner pipeline")
	}
	_ = p.Close() // idempotent
}
