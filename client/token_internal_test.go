package client

import (
	"testing"
	"time"
)

// TestTokenDue: a route's token is renewed TokenRefresh before it
// expires, or a quarter of its lifetime before when that is shorter; a
// route without a token, or a client without CellCAs, never is.
func TestTokenDue(t *testing.T) {
	c := &Client{cfg: Config{TokenRefresh: 30 * time.Second}, cellTLS: true}
	now := time.Now()
	for _, tc := range []struct {
		name    string
		life    time.Duration // token lifetime
		age     time.Duration // how long ago it was issued
		token   string
		cellTLS bool
		wantDue bool
	}{
		{"fresh 5 min token", 5 * time.Minute, time.Minute, "t", true, false},
		{"5 min token, 20 s left", 5 * time.Minute, 4*time.Minute + 40*time.Second, "t", true, true},
		{"short token, half used", 20 * time.Second, 10 * time.Second, "t", true, false},
		{"short token, 4 s left", 20 * time.Second, 16 * time.Second, "t", true, true},
		{"expired", time.Minute, 2 * time.Minute, "t", true, true},
		{"no token", 0, time.Hour, "", true, false},
		{"no CellCAs", time.Minute, 2 * time.Minute, "t", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.cellTLS = tc.cellTLS
			at := now.Add(-tc.age)
			r := &route{at: at, token: tc.token, tokenExp: at.Add(tc.life)}
			if got := c.tokenDue(r); got != tc.wantDue {
				t.Fatalf("tokenDue = %v, want %v", got, tc.wantDue)
			}
		})
	}
}
