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
		if err := (codecV2{}).Unmarshal(mem.BufferSlice{mem.SliceBuffer(wire)}, &fr2); err != nil || !bytes.Equal(fr2.Bytes(), wire) {
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

// countingPool is a mem.BufferPool that counts the buffers returned to it.
type countingPool struct{ put int }

func (p *countingPool) Get(n int) *[]byte { b := make([]byte, n); return &b }
func (p *countingPool) Put(*[]byte)       { p.put++ }

// TestCodecV2ZeroCopy: a frame received through the v2 codec keeps gRPC's
// buffer (no copy) with a reference of its own; every Marshal hands gRPC
// another reference (a request frame is sent again on a retry), and the
// buffer goes back to its pool only when gRPC's references and the
// frame's (Free) are all released.
func TestCodecV2ZeroCopy(t *testing.T) {
	pool := &countingPool{}
	// Above gRPC's pooling threshold (smaller buffers are plain slices).
	payload, err := proto.Marshal(&contextv1.ReadRequest{ContextId: string(bytes.Repeat([]byte("c"), 4096))})
	if err != nil {
		t.Fatal(err)
	}
	b := pool.Get(len(payload))
	copy(*b, payload)
	buf := mem.NewBuffer(b, pool)
	in := mem.BufferSlice{buf}

	var fr Frame
	if err := (codecV2{}).Unmarshal(in, &fr); err != nil {
		t.Fatal(err)
	}
	in.Free() // gRPC frees its reference when Unmarshal returns
	if pool.put != 0 {
		t.Fatal("the frame's buffer was released while the frame holds it")
	}
	if fr.Len() != len(payload) {
		t.Fatalf("Len = %d", fr.Len())
	}
	for range 2 { // a first attempt and a retry
		out, err := codecV2{}.Marshal(&fr)
		if err != nil {
			t.Fatal(err)
		}
		if len(out) != 1 || &out[0].ReadOnlyData()[0] != &(*b)[0] {
			t.Fatal("Marshal copied the frame's payload")
		}
		out.Free() // gRPC, once written
		if pool.put != 0 {
			t.Fatal("the buffer was released while the frame holds it")
		}
	}
	if !bytes.Equal(fr.Bytes(), payload) {
		t.Fatalf("Bytes = %x", fr.Bytes())
	}
	fr.Free()
	if pool.put != 1 {
		t.Fatalf("buffer returned to the pool %d times after Free, want 1", pool.put)
	}
	fr.Free() // idempotent
	if pool.put != 1 {
		t.Fatal("a second Free released the buffer again")
	}
}
