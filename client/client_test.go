package client

import (
	"crypto/tls"
	"strings"
	"testing"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func TestWithRequestID(t *testing.T) {
	in := &contextv1.AppendRequest{ContextId: "c"}
	out := withRequestID(in).(*contextv1.AppendRequest)
	if out.GetRequestId() == "" || len(out.GetRequestId()) != 32 {
		t.Fatalf("request id %q", out.GetRequestId())
	}
	if in.GetRequestId() != "" {
		t.Fatal("the caller's request was changed")
	}
	kept := withRequestID(&contextv1.AppendRequest{RequestId: "mine"}).(*contextv1.AppendRequest)
	if kept.GetRequestId() != "mine" {
		t.Fatalf("an explicit request id was replaced: %q", kept.GetRequestId())
	}
	// Reads have no request_id: untouched, same pointer.
	rd := &contextv1.ReadRequest{ContextId: "c"}
	if withRequestID(rd) != any(rd) {
		t.Fatal("a read was cloned")
	}
	if a, b := NewRequestID(), NewRequestID(); a == b {
		t.Fatal("two equal request ids")
	}
}

func TestStale(t *testing.T) {
	tests := []struct {
		name string
		msg  any
		want bool
	}{
		{"stale read", &contextv1.ReadRequest{ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}}, true},
		{"linearizable read", &contextv1.ReadRequest{ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_LINEARIZABLE}}, false},
		{"no options", &contextv1.ReadRequest{}, false},
		{"stale memory get", &contextv1.GetMemoryRequest{ReadOptions: &contextv1.ReadOptions{Consistency: contextv1.Consistency_CONSISTENCY_STALE}}, true},
		{"write", &contextv1.AppendRequest{}, false},
		{"not proto", "x", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := stale(tc.msg); got != tc.want {
				t.Fatalf("stale = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	good := DefaultConfig()
	good.Router, good.Tenant = "127.0.0.1:7100", "acme"
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mut := range map[string]func(*Config){
		"no router":       func(c *Config) { c.Router = "" },
		"no tenant":       func(c *Config) { c.Tenant = "" },
		"tenant charset":  func(c *Config) { c.Tenant = "acme/prod" },
		"tenant too long": func(c *Config) { c.Tenant = strings.Repeat("t", 129) },
		"no attempts":     func(c *Config) { c.MaxAttempts = 0 },
		"no ttl":          func(c *Config) { c.RouteTTL = 0 },
		"tls below 1.2":   func(c *Config) { c.TLS = &tls.Config{MaxVersion: tls.VersionTLS11} },
		"tls trusting anyone": func(c *Config) {
			c.TLS = &tls.Config{InsecureSkipVerify: true}
		},
	} {
		c := good
		mut(&c)
		if c.Validate() == nil {
			t.Errorf("%s: Validate passed", name)
		}
	}
}

// With TLS to the router, the cells (plaintext) are called directly only
// when DirectPlaintext says so.
func TestDirectWithTLS(t *testing.T) {
	for _, tc := range []struct {
		name                   string
		direct, tls, plaintext bool
		want                   bool
	}{
		{"plaintext, direct", true, false, false, true},
		{"plaintext, via router", false, false, false, false},
		{"tls, direct asked", true, true, false, false},
		{"tls, direct plaintext", true, true, true, true},
		{"tls, via router", false, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.Router, cfg.Tenant, cfg.Direct, cfg.DirectPlaintext = "127.0.0.1:7100", "acme", tc.direct, tc.plaintext
			if tc.tls {
				cfg.TLS = &tls.Config{}
			}
			c, err := New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.direct != tc.want {
				t.Fatalf("direct = %v, want %v", c.direct, tc.want)
			}
		})
	}
}
