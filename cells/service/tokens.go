package service

import (
	"context"

	"github.com/cellplane/cellplane/cells/store"
	"github.com/cellplane/cellplane/internal/tokens"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// Token counts are computed here, once, before an append or a compaction
// is proposed, and travel in the command: the state machine stores them
// (every replica, and a standby applying the source's command, keeps the
// same numbers) and counts only when the command's encoding is not the
// context's (a stale cache, or a context this node did not see yet).
// Counting on the proposer costs one node's CPU, not every replica's.

// encodingOf is the token encoding of a context as this node knows it:
// from the cache, else from the local replica (any staleness: a context's
// encoding never changes; a context deleted and created again with another
// encoding is caught by the state machine). "" when unknown.
func (c *core) encodingOf(ctx context.Context, tenant string, epoch uint64, id string) string {
	key := tenant + "\x00" + id
	c.encMu.Lock()
	enc, ok := c.encs[key]
	c.encMu.Unlock()
	if ok {
		return enc
	}
	err := c.st.ReadTenant(ctx, tenant, epoch, localUnbounded, func(v *store.TenantView) error {
		ctx, err := v.Context(id)
		if err == nil {
			enc = tokens.Resolve(ctx.GetTokenEncoding())
		}
		return err
	})
	if err != nil {
		return ""
	}
	c.rememberEncoding(tenant, id, enc)
	return enc
}

func (c *core) rememberEncoding(tenant, id, enc string) {
	c.encMu.Lock()
	defer c.encMu.Unlock()
	if c.encs == nil || len(c.encs) >= c.cfg.TokenEncodingCache {
		c.encs = make(map[string]string) // bounded: start over when full
	}
	c.encs[tenant+"\x00"+id] = enc
}

// countEntries returns copies of the request's entries carrying their
// token counts in enc (none when enc is ""), without the fields the
// server assigns (seq, create_time) and without the caller's own counts.
func countEntries(enc string, in []*contextv1.Entry) []*contextv1.Entry {
	out := make([]*contextv1.Entry, len(in))
	for i, e := range in {
		x := &contextv1.Entry{Role: e.GetRole(), Content: e.GetContent(), Metadata: e.GetMetadata(), Embedding: e.GetEmbedding()}
		if enc != "" {
			x.TokenCount = tokens.Entry(enc, e)
		}
		out[i] = x
	}
	return out
}
