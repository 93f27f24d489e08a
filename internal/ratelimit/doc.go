// Package ratelimit holds the per-tenant rate limits (docs/design.md §6)
// of the router and of the cells (for calls that did not come through a
// router or worker: docs/reliability.md, H4): one token bucket
// (golang.org/x/time/rate) of requests and one of request bytes per
// tenant, with the rates and bursts of the tenant's placement record, or
// the configured defaults.
//
// Buckets live in a map split into 64 independently locked shards, so
// Allow is cheap under concurrency and does not allocate for a tenant it
// already tracks. The map is bounded: buckets unused for Config.IdleTTL are
// swept when tenants are added, and past Config.MaxTenants random buckets
// are evicted (an evicted tenant starts again with a full bucket, which
// errs on the side of letting requests through).
//
// A refused request fails with RATE_LIMITED and a retry delay, which the
// edges map to RESOURCE_EXHAUSTED + RetryInfo (gRPC) or 429 + Retry-After
// (HTTP):
//
//	lim := ratelimit.New(ratelimit.DefaultConfig())
//	reg.MustRegister(lim.Collectors()...)
//	...
//	if ok, retry := lim.Allow(tenant, placement.Rate, placement.Burst); !ok {
//		return lim.Err(tenant, retry)
//	}
package ratelimit
