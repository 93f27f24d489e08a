package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/retry"
	cellv1 "github.com/cellplane/cellplane/proto/cellplane/cell/v1"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/proto"
)

// SearchOptions configures the keyword search scenario.
type SearchOptions struct {
	// Appends is how many single-entry appends each mode (index on, off)
	// measures per round; Rounds alternates the modes.
	Appends     int
	Rounds      int
	Concurrency int
	// Entries is the corpus the searches run over (one tenant; the
	// measured appends count towards it), prefilled in batches.
	Entries    int
	Queries    int
	EntryWords int
	Vocabulary int
	DataDir    string
	Logger     *slog.Logger
	Progress   io.Writer
}

// DefaultSearchOptions: a run of about a minute on two cores.
func DefaultSearchOptions() SearchOptions {
	return SearchOptions{Appends: 3000, Rounds: 2, Concurrency: 16, Entries: 50_000, Queries: 2000, EntryWords: 40, Vocabulary: 20_000}
}

// SearchResults is the search scenario's results.
type SearchResults struct {
	AppendCPUPerOpOnUs   float64 `json:"append_cpu_per_op_on_us"`
	AppendCPUPerOpOffUs  float64 `json:"append_cpu_per_op_off_us"`
	AppendsPerRound      int     `json:"appends_per_round"`
	Rounds               int     `json:"rounds"`
	Concurrency          int     `json:"concurrency"`
	EntryBytes           float64 `json:"entry_bytes_mean"`
	Entries              int     `json:"entries"`
	Search               Latency `json:"search"`
	SearchOneWord        Latency `json:"search_one_word"`
	SearchTruncated      int     `json:"searches_truncated"`
	Queries              int     `json:"queries"`
	RebuildDocs          uint64  `json:"rebuild_docs"`
	RebuildBytes         int64   `json:"rebuild_text_bytes"`
	RebuildSeconds       float64 `json:"rebuild_seconds"`
	RebuildSecondsPerGiB float64 `json:"rebuild_seconds_per_gib"`
}

// corpus generates deterministic text: words drawn Zipf-distributed from
// a fixed vocabulary (natural text's shape: few very common words, a long
// tail).
type corpus struct {
	words []string
	mu    sync.Mutex
	zipf  *rand.Zipf
}

func newCorpus(n int) *corpus {
	r := rand.New(rand.NewPCG(1, 2))
	c := &corpus{zipf: rand.NewZipf(rand.New(rand.NewPCG(3, 4)), 1.07, 2, uint64(n-1))}
	const letters = "abcdefghijklmnopqrstuvwxyz"
	seen := map[string]bool{}
	for len(c.words) < n {
		b := make([]byte, 3+r.IntN(8))
		for i := range b {
			b[i] = letters[r.IntN(len(letters))]
		}
		if w := string(b); !seen[w] {
			seen[w] = true
			c.words = append(c.words, w)
		}
	}
	return c
}

func (c *corpus) word() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.words[c.zipf.Uint64()]
}

func (c *corpus) text(words int) string {
	var b strings.Builder
	for i := range words {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(c.word())
	}
	b.WriteByte('.')
	return b.String()
}

// RunSearch measures keyword indexing's append cost (process CPU per
// single-entry append, index on vs off, alternating in rounds, each mode
// its own single-node store in this process), keyword search latency over
// a one-tenant corpus, and the rebuild (reindex_keywords) of text written
// with the index off.
func RunSearch(ctx context.Context, opts SearchOptions) (*Report, error) {
	d := DefaultSearchOptions()
	if opts.Appends <= 0 {
		opts.Appends = d.Appends
	}
	if opts.Rounds <= 0 {
		opts.Rounds = d.Rounds
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = d.Concurrency
	}
	if opts.Entries <= 0 {
		opts.Entries = d.Entries
	}
	if opts.Queries <= 0 {
		opts.Queries = d.Queries
	}
	if opts.EntryWords <= 0 {
		opts.EntryWords = d.EntryWords
	}
	if opts.Vocabulary <= 1 {
		opts.Vocabulary = d.Vocabulary
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	root := opts.DataDir
	if root == "" {
		dir, err := os.MkdirTemp("", "cellplane-bench-search-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(dir)
		root = dir
	}
	machine := DescribeMachine(root)
	c := newCorpus(opts.Vocabulary)
	on, err := openBenchStore(ctx, filepath.Join(root, "on"), false, opts.Logger)
	if err != nil {
		return nil, err
	}
	defer on.Close()
	off, err := openBenchStore(ctx, filepath.Join(root, "off"), true, opts.Logger)
	if err != nil {
		return nil, err
	}
	defer off.Close()

	res := SearchResults{AppendsPerRound: opts.Appends, Rounds: opts.Rounds, Concurrency: opts.Concurrency, Queries: opts.Queries}
	var cpuOn, cpuOff time.Duration
	var offBytes, allBytes, allEntries atomic.Int64
	for round := range opts.Rounds {
		modes := []bool{true, false}
		if round%2 == 1 {
			modes = []bool{false, true}
		}
		for _, indexed := range modes {
			s := off
			if indexed {
				s = on
			}
			fmt.Fprintf(opts.Progress, "search: round %d, index %v: %d appends\n", round+1, indexed, opts.Appends)
			start := processCPU()
			n, err := appendLoop(ctx, s, c, opts.Appends, opts.Concurrency, 1, opts.EntryWords, &allBytes)
			if err != nil {
				return nil, err
			}
			used := processCPU() - start
			if indexed {
				cpuOn += used
			} else {
				cpuOff += used
				offBytes.Add(n)
			}
			allEntries.Add(int64(opts.Appends))
		}
	}
	res.AppendCPUPerOpOnUs = float64(cpuOn.Microseconds()) / float64(opts.Appends*opts.Rounds)
	res.AppendCPUPerOpOffUs = float64(cpuOff.Microseconds()) / float64(opts.Appends*opts.Rounds)
	res.EntryBytes = float64(allBytes.Load()) / float64(allEntries.Load())

	// The corpus: the rest of the entries, in batches of 100.
	have := opts.Appends * opts.Rounds
	if rest := opts.Entries - have; rest > 0 {
		fmt.Fprintf(opts.Progress, "search: prefilling %d entries\n", rest)
		if _, err := appendLoop(ctx, on, c, (rest+99)/100, min(opts.Concurrency, 4), 100, opts.EntryWords, nil); err != nil {
			return nil, err
		}
		have += (rest + 99) / 100 * 100
	}
	res.Entries = have

	fmt.Fprintf(opts.Progress, "search: %d queries\n", opts.Queries)
	two, one := NewHistogram(), NewHistogram()
	for i := range opts.Queries {
		q, h := c.word()+" "+c.word(), two
		if i%2 == 1 {
			q, h = c.word(), one
		}
		t0 := time.Now()
		err := on.ReadTenant(ctx, "bench", 0, store.ReadOptions{}, func(v *store.TenantView) error {
			r, err := v.KeywordEntries(store.KeywordQuery{Text: q, Limit: 10, MaxPostings: store.DefaultKeywordMaxPostings}, nil, nil)
			if r.Truncated {
				res.SearchTruncated++
			}
			return err
		})
		if err != nil {
			return nil, err
		}
		h.Record(time.Since(t0))
	}
	res.Search, res.SearchOneWord = two.Summary(), one.Summary()

	// The rebuild: the off store's text, indexed once the index is on.
	fmt.Fprintf(opts.Progress, "search: rebuilding the off store's index\n")
	if err := setKeywordOff(ctx, off, false); err != nil {
		return nil, err
	}
	t0 := time.Now()
	docs, _, err := off.ReindexKeywords(ctx, "bench", 1024, nil)
	if err != nil {
		return nil, err
	}
	res.RebuildSeconds = time.Since(t0).Seconds()
	res.RebuildDocs, res.RebuildBytes = docs, offBytes.Load()
	if res.RebuildBytes > 0 {
		res.RebuildSecondsPerGiB = res.RebuildSeconds * float64(1<<30) / float64(res.RebuildBytes)
	}

	ratio := math.NaN()
	if res.AppendCPUPerOpOffUs > 0 {
		ratio = res.AppendCPUPerOpOnUs / res.AppendCPUPerOpOffUs
	}
	return &Report{
		Scenario: "search",
		Machine:  machine,
		Results:  res,
		Ratios: map[string]float64{
			"search_append_cpu_on_vs_off": ratio,
			"search_p50_ms":               res.Search.P50,
			"search_p99_ms":               res.Search.P99,
			"search_rebuild_s_per_gib":    res.RebuildSecondsPerGiB,
		},
		Targets: map[string]Target{"search_append_cpu_on_vs_off": {Value: 1.25}},
	}, nil
}

// appendLoop proposes ops appends of batch entries each, concurrency in
// flight, and returns the text bytes appended.
func appendLoop(ctx context.Context, s *store.Store, c *corpus, ops, concurrency, batch, words int, total *atomic.Int64) (int64, error) {
	var next atomic.Int64
	var bytes atomic.Int64
	var wg sync.WaitGroup
	errc := make(chan error, concurrency)
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctxID := fmt.Sprintf("c%d", w)
			for next.Add(1) <= int64(ops) {
				entries := make([]*contextv1.Entry, batch)
				for i := range entries {
					t := c.text(words)
					bytes.Add(int64(len(t)))
					entries[i] = &contextv1.Entry{Role: "user", Content: &contextv1.Entry_Text{Text: t}}
				}
				res, err := s.Propose(ctx, &cellv1.Command{Tenant: "bench", Op: &cellv1.Command_Append{Append: &contextv1.AppendRequest{ContextId: ctxID, Entries: entries}}})
				if err == nil && res.GetError() != nil {
					err = fmt.Errorf("append refused: %s %s", res.GetError().GetReason(), res.GetError().GetMessage())
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if total != nil {
		total.Add(bytes.Load())
	}
	return bytes.Load(), <-errc
}

// openBenchStore opens a single-node store owning tenant "bench" with
// contexts c0..c63, the keyword index on or off.
func openBenchStore(ctx context.Context, dir string, indexOff bool, log *slog.Logger) (*store.Store, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	cfg := store.DefaultConfig()
	cfg.NodeID, cfg.RaftListener, cfg.DataDir = "n1", ln, dir
	cfg.Bootstrap = []store.Peer{{ID: "n1", Addr: ln.Addr().String()}}
	cfg.Raft.HeartbeatTimeout, cfg.Raft.ElectionTimeout, cfg.Raft.LeaderLeaseTimeout = 100*time.Millisecond, 100*time.Millisecond, 100*time.Millisecond
	cfg.TenantQuota = store.TenantQuota{}
	cfg.Keyword.Off = indexOff
	cfg.Logger = log
	s, err := store.Open(cfg)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err = s.Propose(ctx, &cellv1.Command{Tenant: "bench", Op: &cellv1.Command_SetTenant{SetTenant: &cellv1.SetTenantOp{Role: cellv1.Role_ROLE_OWNER, Epoch: 1}}})
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, fmt.Errorf("bench store: %w", err)
		}
		if err := retry.Sleep(ctx, 50*time.Millisecond); err != nil {
			s.Close()
			return nil, err
		}
	}
	// The leader proposes its configured settings once it leads; wait
	// for them, so that the mode is in force from the first append.
	for {
		var st *cellv1.CellSettings
		if err := s.ReadCell(ctx, store.ReadOptions{}, func(v *store.CellView) error {
			var err error
			st, err = v.Settings()
			return err
		}); err != nil {
			s.Close()
			return nil, err
		}
		if st.GetKeywordIndexOff() == indexOff {
			break
		}
		if time.Now().After(deadline) {
			s.Close()
			return nil, errors.New("bench store: the keyword setting was not applied")
		}
		if err := retry.Sleep(ctx, 50*time.Millisecond); err != nil {
			s.Close()
			return nil, err
		}
	}
	for i := range 64 {
		if _, err := s.Propose(ctx, &cellv1.Command{Tenant: "bench", Op: &cellv1.Command_CreateContext{CreateContext: &contextv1.CreateContextRequest{ContextId: fmt.Sprintf("c%d", i)}}}); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// setKeywordOff proposes the cell's settings with the keyword index off
// or on.
func setKeywordOff(ctx context.Context, s *store.Store, off bool) error {
	var st *cellv1.CellSettings
	if err := s.ReadCell(ctx, store.ReadOptions{}, func(v *store.CellView) error {
		var err error
		st, err = v.Settings()
		return err
	}); err != nil {
		return err
	}
	st = proto.Clone(st).(*cellv1.CellSettings)
	st.KeywordIndexOff = off
	_, err := s.Propose(ctx, &cellv1.Command{Op: &cellv1.Command_CellSettings{CellSettings: st}})
	return err
}
