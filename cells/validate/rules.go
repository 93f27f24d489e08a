package validate

import (
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/ids"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/proto"
)

// violations collects field violations. Descriptions never echo the
// offending value: it may be large or sensitive.
type violations []cperr.FieldViolation

func (v *violations) add(field, format string, args ...any) {
	*v = append(*v, cperr.FieldViolation{Field: field, Description: fmt.Sprintf(format, args...)})
}

// err returns nil or one INVALID_ARGUMENT error with every violation.
func (v violations) err() error {
	if len(v) == 0 {
		return nil
	}
	return cperr.Invalid(v...)
}

func (v *violations) id(field, s string, maxLen int) {
	if fv, bad := ids.Violation(field, s, maxLen); bad {
		*v = append(*v, fv)
	}
}

// optionalID accepts "" or a valid id.
func (v *violations) optionalID(field, s string, maxLen int) {
	if s != "" {
		v.id(field, s, maxLen)
	}
}

func (v *violations) requestID(lim Limits, s string) {
	v.optionalID("request_id", s, lim.MaxRequestIDLen)
}

// size checks the encoded size of the whole request.
func (v *violations) size(lim Limits, m proto.Message) {
	if n := proto.Size(m); n > lim.MaxRequestBytes {
		v.add("request", "encoded size %d bytes exceeds the limit of %d bytes", n, lim.MaxRequestBytes)
	}
}

// memoryKey checks a key: non-empty, bounded, UTF-8 without NUL.
func (v *violations) memoryKey(lim Limits, field, key string, required bool) {
	if key == "" {
		if required {
			v.add(field, "is required")
		}
		return
	}
	switch {
	case len(key) > lim.MaxMemoryKeyBytes:
		v.add(field, "is %d bytes; the limit is %d bytes", len(key), lim.MaxMemoryKeyBytes)
	case !utf8.ValidString(key):
		v.add(field, "must be valid UTF-8")
	case strings.IndexByte(key, 0) >= 0:
		v.add(field, "must not contain NUL")
	}
}

// stringMap checks a map's size and its keys and values. Violations are
// reported in key order so that errors are deterministic; the keys
// themselves are not echoed.
func (v *violations) stringMap(field string, m map[string]string, ml MapLimits) {
	if len(m) > ml.MaxPairs {
		v.add(field, "has %d keys; the limit is %d", len(m), ml.MaxPairs)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		switch {
		case k == "":
			v.add(field, "has an empty key")
		case len(k) > ml.MaxKeyBytes:
			v.add(field, "has a key of %d bytes; the limit is %d bytes", len(k), ml.MaxKeyBytes)
		case strings.IndexByte(k, 0) >= 0:
			v.add(field, "has a key containing NUL")
		}
		if n := len(m[k]); n > ml.MaxValueBytes {
			v.add(field, "has a value of %d bytes; the limit is %d bytes", n, ml.MaxValueBytes)
		}
	}
}

func (v *violations) readOptions(field string, o *contextv1.ReadOptions) {
	if o == nil {
		return
	}
	if _, ok := contextv1.Consistency_name[int32(o.GetConsistency())]; !ok {
		v.add(field+".consistency", "unknown consistency %d", int32(o.GetConsistency()))
	}
	if d := o.GetMaxStaleness(); d != nil {
		if err := d.CheckValid(); err != nil {
			v.add(field+".max_staleness", "is not a valid duration")
		} else if d.AsDuration() < 0 {
			v.add(field+".max_staleness", "must not be negative")
		}
	}
}

func (v *violations) pageToken(lim Limits, tok string) {
	if len(tok) > lim.MaxPageTokenBytes {
		v.add("page_token", "is not a token this server issued")
	}
}

// addr checks a host:port address; required says whether "" is an error.
func (v *violations) addr(lim Limits, field, a string, required bool) {
	if a == "" {
		if required {
			v.add(field, "is required")
		}
		return
	}
	if len(a) > lim.MaxAddrLen {
		v.add(field, "is %d bytes; the limit is %d bytes", len(a), lim.MaxAddrLen)
		return
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil || host == "" {
		v.add(field, "must be host:port")
		return
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || p == 0 {
		v.add(field, "must have a port in 1-65535")
	}
}
