package tenantmd

import (
	"context"
	"strconv"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
)

// The position of a read in its tenant's change log, set by the cell on
// the response header of ContextService.Read and GetMemory: the tenant's
// tseq at the view the read was served from, and that change's command
// time (decimal Unix nanoseconds). With them a read cache knows which
// changes the answer already reflects (internal/readcache): every change
// with a higher tseq came after it. Together they are a ChangeCursor.
// ExpireTimeKey, when present, is when the answer stops being true by the
// passage of time alone (the context's or memory key's expire_time,
// decimal Unix nanoseconds): the cell reads an expired item as absent
// before any sweep removes it, so a cache must not serve the answer after
// it.
const (
	TseqKey       = "x-cellplane-tseq"
	TseqTimeKey   = "x-cellplane-tseq-time"
	ExpireTimeKey = "x-cellplane-expire-time"
)

// SetReadCursor puts a read's cursor on the response header of the
// incoming call. Outside a gRPC server call (a unit test calling a handler
// directly) there is no header to set, and nothing happens.
// expireUnixNano 0 means the answer does not expire.
func SetReadCursor(ctx context.Context, tseq uint64, timeUnixNano, expireUnixNano int64) {
	md := metadata.Pairs(TseqKey, strconv.FormatUint(tseq, 10), TseqTimeKey, strconv.FormatInt(timeUnixNano, 10))
	if expireUnixNano != 0 {
		md.Set(ExpireTimeKey, strconv.FormatInt(expireUnixNano, 10))
	}
	_ = grpc.SetHeader(ctx, md)
}

// ReadCursor returns the cursor (and expiry, 0: none) of a read from its
// response header; ok is false when the header has none (a cell that
// predates it) or a malformed one.
func ReadCursor(md metadata.MD) (tseq uint64, timeUnixNano, expireUnixNano int64, ok bool) {
	ts, tt := single(md, TseqKey), single(md, TseqTimeKey)
	if ts == "" || tt == "" {
		return 0, 0, 0, false
	}
	tseq, err1 := strconv.ParseUint(ts, 10, 64)
	timeUnixNano, err2 := strconv.ParseInt(tt, 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, 0, false
	}
	if te := single(md, ExpireTimeKey); te != "" {
		e, err := strconv.ParseInt(te, 10, 64)
		if err != nil {
			return 0, 0, 0, false
		}
		expireUnixNano = e
	}
	return tseq, timeUnixNano, expireUnixNano, true
}
