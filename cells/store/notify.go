package store

import "sync"

// notifier wakes goroutines waiting for a tenant to change. A waiter takes
// the tenant's channel first, then checks the state, then waits: a change
// committed after the check closes the channel it holds.
type notifier struct {
	mu sync.Mutex
	ch map[string]chan struct{}
}

func newNotifier() *notifier { return &notifier{ch: map[string]chan struct{}{}} }

// wait returns a channel closed at the tenant's next change.
func (n *notifier) wait(tenant string) <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	c, ok := n.ch[tenant]
	if !ok {
		c = make(chan struct{})
		n.ch[tenant] = c
	}
	return c
}

// notify wakes the tenant's waiters. It costs a map lookup when nobody waits.
func (n *notifier) notify(tenant string) {
	n.mu.Lock()
	if c, ok := n.ch[tenant]; ok {
		close(c)
		delete(n.ch, tenant)
	}
	n.mu.Unlock()
}

// notifyAll wakes every waiter (after a snapshot restore replaced the state).
func (n *notifier) notifyAll() {
	n.mu.Lock()
	for t, c := range n.ch {
		close(c)
		delete(n.ch, t)
	}
	n.mu.Unlock()
}
