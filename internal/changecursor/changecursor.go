// Package changecursor is the text form of a change cursor
// (contextv1.ChangeCursor): "<tseq>.<time_unix_nano>", as error metadata
// (CURSOR_EXPIRED's oldest_cursor, current_cursor) and MCP notifications'
// _meta carry it. One home for formatting and parsing it.
package changecursor

import (
	"errors"
	"strconv"
	"strings"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// MaxLen bounds a cursor's text (two decimal 64-bit numbers and a dot).
const MaxLen = 41

// Format returns c as "<tseq>.<time_unix_nano>".
func Format(c *contextv1.ChangeCursor) string {
	return strconv.FormatUint(c.GetTseq(), 10) + "." + strconv.FormatInt(c.GetTimeUnixNano(), 10)
}

// ErrMalformed is returned by Parse for a text that is not a cursor.
var ErrMalformed = errors.New(`a change cursor is "<tseq>.<time_unix_nano>"`)

// Parse reads a cursor Format wrote.
func Parse(s string) (*contextv1.ChangeCursor, error) {
	if len(s) > MaxLen {
		return nil, ErrMalformed
	}
	a, b, ok := strings.Cut(s, ".")
	if !ok {
		return nil, ErrMalformed
	}
	tseq, err := strconv.ParseUint(a, 10, 64)
	if err != nil {
		return nil, ErrMalformed
	}
	t, err := strconv.ParseInt(b, 10, 64)
	if err != nil || t < 0 {
		return nil, ErrMalformed
	}
	return &contextv1.ChangeCursor{Tseq: tseq, TimeUnixNano: t}, nil
}
