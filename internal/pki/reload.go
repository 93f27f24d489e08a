package pki

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// reloadClock paces the file checks of TLS material that reloads from
// disk (Source, ServerCert): at most one check per interval, made by the
// handshake that finds one due, loads serialised under one lock.
type reloadClock struct {
	interval  time.Duration
	nextCheck atomic.Int64 // unix nanoseconds of the next file check
	mu        sync.Mutex   // serialises loads
}

// due reports whether a file check is due (never with a zero interval).
func (c *reloadClock) due() bool {
	return c.interval > 0 && time.Now().UnixNano() >= c.nextCheck.Load()
}

// check runs fn under the lock if a check is still due (another handshake
// may have made it meanwhile), then schedules the next one.
func (c *reloadClock) check(fn func()) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Now().UnixNano() < c.nextCheck.Load() {
		return
	}
	defer c.schedule()
	fn()
}

// now runs fn under the lock at once (a Reload), then schedules the next
// check.
func (c *reloadClock) now(fn func() error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer c.schedule()
	return fn()
}

func (c *reloadClock) schedule() {
	c.nextCheck.Store(time.Now().Add(c.interval).UnixNano())
}

// stampFiles describes the files' current versions (names, sizes and
// modification times): a changed stamp means something to reload.
func stampFiles(paths ...string) (string, error) {
	var b strings.Builder
	for _, p := range paths {
		fi, err := os.Stat(p)
		if err != nil {
			return "", fmt.Errorf("pki: %w", err)
		}
		fmt.Fprintf(&b, "%s:%d:%d;", p, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), nil
}
