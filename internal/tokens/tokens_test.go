package tokens

import (
	"errors"
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
