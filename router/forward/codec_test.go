package forward

import (
	"bytes"
	"testing"
	"time"

	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"

	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

func TestCodec(t *testing.T) {
	msg := &contextv1.ReadRequest{ContextId: "c1", MaxEntries: 3}
	wire, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	t.Run("frames pass through", func(t *testing.T) {
		out, err := Codec{}.Marshal(&Frame{Payload: wire})
		if err != nil || !bytes.Equal(out, wire) {
			t.Fatalf("Marshal(frame) = %x, %v", out, err)
		}
		var fr Frame
		if err := (Codec{}).Unmarshal(wire, &fr); err != nil || !bytes.Equal(fr.Payload, wire) {
			t.Fatalf("Unmarshal(frame) = %x, %v", fr.Payload, err)
		}
		bs, err := codecV2{}.Marshal(&Frame{Payload: wire})
		if err != nil || !bytes.Equal(bs.Materialize(), wire) {
			t.Fatalf("v2 Marshal = %v", err)
		}
		var fr2 Frame
		if err := (codecV2{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &fr2); err != nil || !bytes.Equal(fr2.Payload, wire) {
			t.Fatalf("v2 Unmarshal = %v", err)
		}
	})
	t.Run("proto messages are encoded", func(t *testing.T) {
		out, err := Codec{}.Marshal(msg)
		if err != nil || !bytes.Equal(out, wire) {
			t.Fatalf("Marshal(proto) = %x, %v", out, err)
		}
		var got contextv1.ReadRequest
		if err := (Codec{}).Unmarshal(wire, &got); err != nil || !proto.Equal(&got, msg) {
			t.Fatalf("Unmarshal(proto) = %v, %v", &got, err)
		}
	})
	t.Run("other types are refused", func(t *testing.T) {
		if _, err := (Codec{}).Marshal("nope"); err == nil {
			t.Fatal("Marshal(string) succeeded")
		}
		if err := (Codec{}).Unmarshal(wire, new(string)); err == nil {
			t.Fatal("Unmarshal(string) succeeded")
		}
	})
	if (Codec{}).Name() != "proto" || (codecV2{}).Name() != "proto" {
		t.Fatal("codec name must be proto (the wire content type)")
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	tests := []struct {
		name string
		edit func(*Config)
	}{
		{"no services", func(c *Config) { c.Services = nil }},
		{"bad service", func(c *Config) { c.Services = []string{"/a/b"} }},
		{"zero timeout", func(c *Config) { c.DefaultTimeout = 0 }},
		{"zero moving hold", func(c *Config) { c.MovingHold = 0 }},
		{"negative retries", func(c *Config) { c.MaxRetries = -1 }},
		{"zero message size", func(c *Config) { c.MaxMsgBytes = 0 }},
		{"backoff order", func(c *Config) { c.MaxRetryBackoff = time.Millisecond; c.RetryBackoff = time.Second }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultConfig()
			tc.edit(&cfg)
			if cfg.Validate() == nil {
				t.Fatal("invalid config accepted")
			}
		})
	}
	cfg := DefaultConfig()
	cfg.Services = []string{"cellplane.nope.v1.Nope"}
	if _, err := New(cfg, newResolver(), tenantFromMD); err == nil {
		t.Fatal("New accepted a service whose descriptor is not linked")
	}
}

func TestTenantRoutedServices(t *testing.T) {
	got := TenantRoutedServices()
	if len(got) != 1 || got[0] != contextv1.ContextService_ServiceDesc.ServiceName {
		t.Fatalf("tenant-routed services %v, want only ContextService", got)
	}
	if d := DefaultConfig().Services; len(d) != 1 || d[0] != got[0] {
		t.Fatalf("default Services %v", d)
	}
}
