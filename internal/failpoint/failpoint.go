package failpoint

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Env is the environment variable EnableFromEnv reads.
const Env = "CELLPLANE_FAILPOINTS"

// ExitCode is the exit status of a process a crash action ended: a test
// tells an injected crash from any other exit by it.
const ExitCode = 86

// ErrInjected is wrapped by the error an "error" action returns.
var ErrInjected = errors.New("failpoint: injected error")

type kind int

const (
	kindOff kind = iota
	kindCrash
	kindError
	kindSleep
)

// point is one enabled point.
type point struct {
	kind  kind
	sleep time.Duration
	from  int64 // first acting hit (1-based)
	count int64 // acting hits (0: unbounded)
	hits  atomic.Int64
}

var (
	enabled atomic.Bool // the fast path: false while no point is enabled
	mu      sync.RWMutex
	points  map[string]*point
)

// Inject evaluates the named point: nil unless a spec enabled it. A crash
// action does not return.
func Inject(name string) error {
	if !enabled.Load() {
		return nil
	}
	mu.RLock()
	p := points[name]
	mu.RUnlock()
	if p == nil || p.kind == kindOff {
		return nil
	}
	hit := p.hits.Add(1)
	if hit < p.from || (p.count > 0 && hit >= p.from+p.count) {
		return nil
	}
	switch p.kind {
	case kindCrash:
		fmt.Fprintf(os.Stderr, "failpoint: crash at %s (hit %d)\n", name, hit)
		os.Exit(ExitCode)
	case kindError:
		return fmt.Errorf("%s: %w", name, ErrInjected)
	case kindSleep:
		t := time.NewTimer(p.sleep)
		<-t.C
	}
	return nil
}

// Enabled reports whether any point is enabled.
func Enabled() bool { return enabled.Load() }

// Enable replaces the enabled points with spec (see the package doc); an
// empty spec disables every point. A spec that does not parse, or names an
// unknown point, changes nothing.
func Enable(spec string) error {
	parsed, err := parse(spec)
	if err != nil {
		return err
	}
	mu.Lock()
	points = parsed
	mu.Unlock()
	enabled.Store(len(parsed) > 0)
	return nil
}

// EnableFromEnv enables the spec in $CELLPLANE_FAILPOINTS (nothing when
// unset). It returns the spec it enabled.
func EnableFromEnv() (string, error) {
	spec := os.Getenv(Env)
	if spec == "" {
		return "", nil
	}
	if err := Enable(spec); err != nil {
		return "", fmt.Errorf("%s: %w", Env, err)
	}
	return spec, nil
}

// Reset disables every point.
func Reset() { _ = Enable("") }

// Hits returns how many times the named point was reached since it was
// enabled (0 when it is not).
func Hits(name string) int64 {
	mu.RLock()
	defer mu.RUnlock()
	if p := points[name]; p != nil {
		return p.hits.Load()
	}
	return 0
}

// parse checks a spec and returns its points.
func parse(spec string) (map[string]*point, error) {
	out := map[string]*point{}
	for entry := range strings.SplitSeq(spec, ";") {
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}
		name, term, ok := strings.Cut(entry, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("failpoint spec %q: want name=action", entry)
		}
		if !slices.Contains(Points, name) {
			return nil, fmt.Errorf("failpoint spec %q: unknown point %q (known: %s)", entry, name, strings.Join(Points, ", "))
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("failpoint spec: point %q named twice", name)
		}
		p, err := parseTerm(strings.TrimSpace(term))
		if err != nil {
			return nil, fmt.Errorf("failpoint spec %q: %w", entry, err)
		}
		out[name] = p
	}
	return out, nil
}

// parseTerm parses action[@from][,count].
func parseTerm(term string) (*point, error) {
	p := &point{from: 1}
	if a, c, ok := strings.Cut(term, ","); ok {
		n, err := strconv.ParseInt(strings.TrimSpace(c), 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("count %q is not a positive integer", c)
		}
		p.count, term = n, strings.TrimSpace(a)
	}
	if a, f, ok := strings.Cut(term, "@"); ok {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("from %q is not a positive integer", f)
		}
		p.from, term = n, strings.TrimSpace(a)
	}
	switch {
	case term == "crash":
		p.kind = kindCrash
	case term == "error":
		p.kind = kindError
	case term == "off":
		p.kind = kindOff
	case strings.HasPrefix(term, "sleep(") && strings.HasSuffix(term, ")"):
		d, err := time.ParseDuration(term[len("sleep(") : len(term)-1])
		if err != nil || d < 0 {
			return nil, fmt.Errorf("sleep duration in %q: not a duration", term)
		}
		p.kind, p.sleep = kindSleep, d
	default:
		return nil, fmt.Errorf("action %q: want crash, error, sleep(d) or off", term)
	}
	return p, nil
}
