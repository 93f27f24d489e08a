package registry

import "time"

// TestingKnobs are the registry's test hooks (today: the authority
// lease's). The zero value is production.
type TestingKnobs struct {
	// Now replaces the monotonic clock: the time since an arbitrary
	// origin. Renewals and Valid read it.
	Now func() time.Duration
	// AfterRead runs after a publication read the cell's keys and applied
	// its fences, before it grants the new lease (to race a fence in).
	AfterRead func()
}
