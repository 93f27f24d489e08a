package tokens

import (
	"errors"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

func TestText(t *testing.T) {
	for _, tc := range []struct {
		enc, text string
		want      uint32
	}{
		{"", "", 0},
		{"", "hello world", 2},
		{"o200k_base", "hello world", 2},
		{"cl100k_base", "hello world", 2},
		{"cl100k_base", "supercalifragilistic", 7},
		{"r50k_base", "hello world", 2},
	} {
		if got := Text(tc.enc, tc.text); got != tc.want {
			t.Errorf("Text(%q, %q) = %d, want %d", tc.enc, tc.text, got, tc.want)
		}
	}
}

func TestData(t *testing.T) {
	for n, want := range map[int]uint32{0: 0, 1: 1, 4: 1, 5: 2, 400: 100} {
		if got := Data(make([]byte, n)); got != want {
			t.Errorf("Data(%d bytes) = %d, want %d", n, got, want)
		}
	}
}

func TestCheck(t *testing.T) {
	for _, n := range Encodings() {
		if err := Check(n); err != nil {
			t.Errorf("Check(%q) = %v", n, err)
		}
	}
	for _, n := range []string{"", "gpt2", "O200K_BASE", "o200k_base "} {
		if err := Check(n); !errors.Is(err, ErrUnknownEncoding) {
			t.Errorf("Check(%q) = %v, want ErrUnknownEncoding", n, err)
		}
	}
}

func BenchmarkText(b *testing.B) {
	s := "The quick brown fox jumps over the lazy dog; then it writes a 200-byte message to the agent's context, which counts its tokens once."
	for _, enc := range []string{"o200k_base", "cl100k_base"} {
		b.Run(enc, func(b *testing.B) {
			Text(enc, s)
			b.SetBytes(int64(len(s)))
			for b.Loop() {
				Text(enc, s)
			}
		})
	}
}

// TestTextMatchesTokenizer is the property Text's chunking relies on:
// over random texts (words in several scripts, case changes, digits,
// punctuation, contractions, every kind of whitespace, marks), the sum of
// the chunks' counts is the tokenizer's count of the whole text, for
// every encoding.
func TestTextMatchesTokenizer(t *testing.T) {
	for seed := range uint64(3) {
		matchesTokenizer(t, seed)
	}
}

func matchesTokenizer(t *testing.T, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 2))
	parts := []string{"the", "The", "THE", "agent", "Agent's", "don't", "I'll", "we've", "HelloWorld", "naïve", "café", "e\u0301",
		"日本語", "テキスト", "한국어", "Ελληνικά", "русский", "عربى", "हिन्दी", "🙂", "👍🏽", "123", "4567", "3.14", "x", "A", "a",
		" ", " ", "  ", "   ", "\t", "\n", "\r\n", "\n\n", ".", ",", ";", "!?", "--", "/", "'", "\"", "(", ")", "{}", "<|endoftext|>",
		"\u00a0", "\u2003", "\u200b", "ǅ", "ʰ", "\u0301"}
	for _, enc := range Encodings() {
		for range 1500 {
			var b strings.Builder
			for range rng.IntN(30) {
				b.WriteString(parts[rng.IntN(len(parts))])
				if rng.IntN(3) > 0 {
					b.WriteByte(' ')
				}
			}
			s := b.String()
			if got, want := Text(enc, s), textSlow(enc, s); got != want {
				t.Fatalf("%s: Text(%q) = %d, the tokenizer counts %d", enc, s, got, want)
			}
		}
	}
}

// textSlow is the tokenizer's own count of the whole text.
func textSlow(encoding, s string) uint32 {
	n, _ := counterOf(encoding).codec.Count(s)
	return uint32(n)
}

// TestTextConcurrent: the codecs and the chunk cache are shared by
// concurrent appends (run with -race), and the cache starting over when
// full changes no count.
func TestTextConcurrent(t *testing.T) {
	done := make(chan uint32)
	for g := range 4 {
		go func() {
			var sum uint32
			for i := range cacheChunks / 4 {
				sum += Text("cl100k_base", "word"+strconv.Itoa(g*cacheChunks/4+i)+" again and again")
			}
			done <- sum
		}()
	}
	var total uint32
	for range 4 {
		total += <-done
	}
	var want uint32
	for i := range cacheChunks {
		want += textSlow("cl100k_base", "word"+strconv.Itoa(i)+" again and again")
	}
	if total != want {
		t.Fatalf("concurrent counts sum to %d, want %d", total, want)
	}
}
