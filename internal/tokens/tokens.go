package tokens

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"unicode"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"github.com/tiktoken-go/tokenizer"
)

// Default is the encoding of a context that names none.
const Default = "o200k_base"

// ErrUnknownEncoding is returned by Check for a name this package does not
// count with.
var ErrUnknownEncoding = errors.New("tokens: unknown encoding")

// names are the supported encodings, sorted.
var names = []string{"cl100k_base", "o200k_base", "p50k_base", "p50k_edit", "r50k_base"}

// Encodings returns the supported encoding names, sorted.
func Encodings() []string { return slices.Clone(names) }

// Check returns nil when name is a supported encoding.
func Check(name string) error {
	if _, ok := slices.BinarySearch(names, name); ok {
		return nil
	}
	return fmt.Errorf("%w %q (supported: %v)", ErrUnknownEncoding, name, names)
}

// Resolve maps "" to Default.
func Resolve(name string) string {
	if name == "" {
		return Default
	}
	return name
}

// counters holds one counter per encoding, built on first use (building
// one loads its vocabulary: tens of milliseconds).
var (
	mu       sync.Mutex
	counters = map[string]*counter{}
)

// counter counts with one encoding's codec (safe for concurrent Count
// calls) and remembers the counts of short chunks.
type counter struct {
	codec tokenizer.Codec
	mu    sync.RWMutex
	cache map[string]uint32
}

// cacheChunks bounds a counter's cache (it starts over when full);
// cacheChunkBytes is the longest chunk it keeps.
const (
	cacheChunks     = 1 << 16
	cacheChunkBytes = 48
)

func counterOf(name string) *counter {
	name = Resolve(name)
	mu.Lock()
	defer mu.Unlock()
	c, ok := counters[name]
	if !ok {
		codec, err := tokenizer.Get(tokenizer.Encoding(name))
		if err != nil {
			codec, _ = tokenizer.Get(tokenizer.Encoding(Default)) // unknown names are refused at the edge
		}
		c = &counter{codec: codec, cache: make(map[string]uint32)}
		counters[name] = c
	}
	return c
}

// chunk counts one chunk, from the cache when it is short.
func (c *counter) chunk(s string) int {
	if len(s) > cacheChunkBytes {
		n, _ := c.codec.Count(s) // ErrorModeNone never fails
		return n
	}
	c.mu.RLock()
	n, ok := c.cache[s]
	c.mu.RUnlock()
	if ok {
		return int(n)
	}
	m, _ := c.codec.Count(s)
	c.mu.Lock()
	if len(c.cache) >= cacheChunks {
		c.cache = make(map[string]uint32, cacheChunks)
	}
	c.cache[s] = uint32(m)
	c.mu.Unlock()
	return m
}

// Text counts the tokens of s in an encoding ("" = Default; an unknown
// name counts as Default: names are validated where they enter).
//
// The tokenizer's cost is its pre-tokenizing regular expression, so s is
// first cut where every supported encoding's split pattern is known to
// cut too: before a space that follows a letter or a digit (no pattern's
// piece holds a letter or digit followed by a space, matches are
// contiguous, and no pattern looks behind). A chunk ends with that letter
// or digit, so the patterns' greedy runs and whitespace lookaheads see
// inside a chunk what they see in s: each chunk's pieces are the same as
// in s, and the sum of the chunks' counts is s's count. The short chunks
// (mostly " word") repeat, and their counts are cached. TestTextMatchesTokenizer checks
// the sum against the tokenizer's own count of the whole text.
func Text(encoding, s string) uint32 {
	if s == "" {
		return 0
	}
	c := counterOf(encoding)
	var n int
	start, prevWord := 0, false
	for i, r := range s {
		if r == ' ' && prevWord && i > start {
			n += c.chunk(s[start:i])
			start = i
		}
		prevWord = unicode.IsLetter(r) || unicode.IsNumber(r)
	}
	n += c.chunk(s[start:])
	return uint32(min(n, 1<<32-1))
}

// Data is the count of binary content: a quarter of its bytes, rounded up
// (the usual estimate; binary data has no tokens of its own).
func Data(b []byte) uint32 {
	return uint32(min((uint64(len(b))+3)/4, 1<<32-1))
}

// Entry counts an entry's content: its text, or its binary data (Data).
// Role and metadata are not counted.
func Entry(encoding string, e *contextv1.Entry) uint32 {
	if d, ok := e.GetContent().(*contextv1.Entry_Data); ok {
		return Data(d.Data)
	}
	return Text(encoding, e.GetText())
}
