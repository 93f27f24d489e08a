package service

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/cperr"
)

// Page tokens are opaque to clients: base64url of a version byte, a kind
// byte (which listing issued it) and the last id or key returned. The
// kind stops a token of one listing from being replayed on another.
const tokenVersion = 1

// Token kinds.
const (
	kindContexts byte = 'c'
	kindMemory   byte = 'm'
	kindTenants  byte = 't'
)

func encodePageToken(kind byte, last string) string {
	b := make([]byte, 0, 2+len(last))
	b = append(b, tokenVersion, kind)
	b = append(b, last...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodePageToken returns the position a token resumes after ("" for an
// empty token). A token this server could not have issued for this
// listing is INVALID_ARGUMENT.
func decodePageToken(kind byte, tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) < 3 || b[0] != tokenVersion || b[1] != kind || !utf8.Valid(b[2:]) {
		return "", invalidPageToken()
	}
	return string(b[2:]), nil
}

// decodeMemoryToken also checks that the key belongs to the listed
// prefix: a token from a listing with another prefix is rejected rather
// than silently skipping keys.
func decodeMemoryToken(tok, prefix string) (string, error) {
	after, err := decodePageToken(kindMemory, tok)
	if err == nil && after != "" && !strings.HasPrefix(after, prefix) {
		return "", invalidPageToken()
	}
	return after, err
}

func invalidPageToken() error {
	return cperr.Invalid(cperr.FieldViolation{Field: "page_token", Description: "is not a token this server issued for this listing"})
}

// Chunk sizes: how many items a listing pulls from the store at a time
// while filling a page, so that the byte budget bounds memory too. Memory
// items with values may be 1 MiB each, hence the small chunk.
const (
	pageChunk      = 64
	pageChunkValue = 8
)

// fillPage pulls items after `after` from list, chunk at a time, until
// limit items or about budget bytes (at least one item), and reports
// whether more items exist.
func fillPage[T any](limit, chunk int, budget uint64, after string, list func(after string, n int) ([]T, bool, error), key func(T) string, size func(T) int) ([]T, bool, error) {
	var out []T
	var used uint64
	for {
		items, more, err := list(after, min(limit-len(out), chunk))
		if err != nil {
			return nil, false, err
		}
		for _, it := range items {
			sz := uint64(size(it))
			if len(out) > 0 && used+sz > budget {
				return out, true, nil
			}
			out = append(out, it)
			used += sz
			after = key(it)
		}
		switch {
		case !more || len(items) == 0:
			return out, false, nil
		case len(out) >= limit:
			return out, true, nil
		}
	}
}

// fillScanPage is fillPage for the filtered listings (ListContexts,
// ListMemory), whose store calls skip items that do not match and report
// the last item they examined: it pulls chunks until limit items, about
// budget bytes (at least one item) or scanBudget stored items examined,
// and returns the position the next page resumes after ("" at the end)
// and whether more items may exist. At the scan bound the page may be
// short or empty; its resume position is then the last item examined,
// so no item is lost or returned twice across pages.
func fillScanPage[T any](limit, chunk int, budget uint64, scanBudget int, after string, list func(after string, n int, f store.ListFilter) (store.ListPage[T], error), f store.ListFilter, key func(T) string, size func(T) int) ([]T, string, bool, error) {
	var out []T
	var used uint64
	scanned := 0
	for {
		f.MaxScan = scanBudget - scanned
		p, err := list(after, min(limit-len(out), chunk), f)
		if err != nil {
			return nil, "", false, err
		}
		for _, it := range p.Items {
			sz := uint64(size(it))
			if len(out) > 0 && used+sz > budget {
				return out, after, true, nil
			}
			out = append(out, it)
			used += sz
			after = key(it)
		}
		scanned += p.Scanned
		if p.Last != "" {
			after = p.Last
		}
		switch {
		case !p.More:
			return out, "", false, nil
		case len(out) >= limit, scanned >= scanBudget:
			return out, after, true, nil
		}
	}
}
