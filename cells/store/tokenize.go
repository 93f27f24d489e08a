package store

import (
	"unicode"
	"unicode/utf8"
)

// TokenizerVersion names the tokenizer below. Replicas index with it in
// apply, so any change to what it yields for some text is a new version:
// postings written by the old one would no longer be removed or matched
// alike. Changing it needs a migration (drop and rebuild the index, see
// docs/search.md "Rebuild").
const TokenizerVersion = 1

// Keyword index bounds in force when CellSettings leaves them 0.
const (
	DefaultKeywordMaxTerms     = 4096
	DefaultKeywordMaxTermBytes = 64
)

// tokenizer v1: a term is a maximal run of Unicode letters and digits
// (unicode.IsLetter, unicode.IsDigit, and the combining marks that follow
// a letter, unicode.Mn), lower-cased rune by rune with unicode.ToLower
// (Unicode's simple case mapping, fixed by the Go release's tables: the
// build's Unicode version is part of the definition). A term longer than
// maxBytes is cut at the last rune boundary within maxBytes. At most
// maxTerms terms of a text are taken (the rest is not indexed); the
// document's length is the number taken. Invalid UTF-8 bytes separate
// terms like punctuation. No stemming, no stop words.
type tokenizer struct {
	maxTerms, maxBytes int
}

func newTokenizer(maxTerms, maxBytes uint32) tokenizer {
	t := tokenizer{maxTerms: int(maxTerms), maxBytes: int(maxBytes)}
	if t.maxTerms <= 0 {
		t.maxTerms = DefaultKeywordMaxTerms
	}
	if t.maxBytes <= 0 {
		t.maxBytes = DefaultKeywordMaxTermBytes
	}
	return t
}

// each calls fn with the terms of s in order (fn must copy a term it keeps:
// buf is reused) and returns how many it yielded.
func (t tokenizer) each(s string, fn func(term []byte)) int {
	var buf []byte
	n := 0
	full := false // the current term reached maxBytes: the rest of the run is dropped
	flush := func() {
		if len(buf) > 0 {
			fn(buf)
			n++
		}
		buf, full = buf[:0], false
	}
	for i := 0; i < len(s) && n < t.maxTerms; {
		r, w := utf8.DecodeRuneInString(s[i:])
		i += w
		word := r != utf8.RuneError && (unicode.IsLetter(r) || unicode.IsDigit(r) || (len(buf) > 0 && unicode.Is(unicode.Mn, r)))
		if !word {
			flush()
			continue
		}
		if full {
			continue
		}
		l := unicode.ToLower(r)
		if len(buf)+utf8.RuneLen(l) > t.maxBytes {
			full = true
			continue
		}
		buf = utf8.AppendRune(buf, l)
	}
	if n < t.maxTerms {
		flush()
	}
	return n
}

// terms returns the distinct terms of s with their frequencies, in order
// of first occurrence, and the document length (terms counted).
func (t tokenizer) terms(s string) (order []string, tf map[string]uint32, length int) {
	tf = map[string]uint32{}
	length = t.each(s, func(term []byte) {
		if _, ok := tf[string(term)]; !ok {
			order = append(order, string(term))
		}
		tf[string(term)]++
	})
	return order, tf, length
}
