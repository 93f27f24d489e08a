package tokens

import (
	"errors"
	"fmt"
	"slices"
	"sync"

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

// codecs holds one codec per encoding, built on first use (building one
// loads its vocabulary: tens of milliseconds). A codec is safe for
// concurrent Count calls.
var (
	mu     sync.Mutex
	codecs = map[string]tokenizer.Codec{}
)

func codec(name string) tokenizer.Codec {
	name = Resolve(name)
	mu.Lock()
	defer mu.Unlock()
	c, ok := codecs[name]
	if !ok {
		var err error
		c, err = tokenizer.Get(tokenizer.Encoding(name))
		if err != nil {
			c, _ = tokenizer.Get(tokenizer.Encoding(Default)) // unknown names are refused at the edge
		}
		codecs[name] = c
	}
	return c
}

// Text counts the tokens of s in an encoding ("" = Default; an unknown
// name counts as Default: names are validated where they enter).
func Text(encoding, s string) uint32 {
	if s == "" {
		return 0
	}
	n, err := codec(encoding).Count(s)
	if err != nil {
		// ErrorModeNone never fails; count bytes as a bound if it did.
		return Data([]byte(s))
	}
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
