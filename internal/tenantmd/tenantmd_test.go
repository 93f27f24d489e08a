package tenantmd

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/cellplane/cellplane/internal/cperr"
	"google.golang.org/grpc/metadata"
)

func TestFromIncoming(t *testing.T) {
	tests := []struct {
		name       string
		md         metadata.MD
		wantTenant string
		wantEpoch  uint64
		wantFields []string // violations; nil: success
	}{
		{"tenant only", metadata.Pairs(TenantKey, "acme"), "acme", 0, nil},
		{"tenant and epoch", metadata.Pairs(TenantKey, "acme-1.eu_x", EpochKey, "42"), "acme-1.eu_x", 42, nil},
		{"epoch zero", metadata.Pairs(TenantKey, "a", EpochKey, "0"), "a", 0, nil},
		{"max epoch", metadata.Pairs(TenantKey, "a", EpochKey, "18446744073709551615"), "a", 1<<64 - 1, nil},
		{"max tenant", metadata.Pairs(TenantKey, strings.Repeat("t", 128)), strings.Repeat("t", 128), 0, nil},
		{"no metadata", nil, "", 0, []string{TenantKey}},
		{"empty tenant", metadata.Pairs(TenantKey, ""), "", 0, []string{TenantKey}},
		{"long tenant", metadata.Pairs(TenantKey, strings.Repeat("t", 129)), "", 0, []string{TenantKey}},
		{"bad charset", metadata.Pairs(TenantKey, "ac/me"), "", 0, []string{TenantKey}},
		{"two tenants", metadata.Pairs(TenantKey, "a", TenantKey, "b"), "", 0, []string{TenantKey}},
		{"bad epoch", metadata.Pairs(TenantKey, "a", EpochKey, "x"), "", 0, []string{EpochKey}},
		{"signed epoch", metadata.Pairs(TenantKey, "a", EpochKey, "+1"), "", 0, []string{EpochKey}},
		{"negative epoch", metadata.Pairs(TenantKey, "a", EpochKey, "-1"), "", 0, []string{EpochKey}},
		{"empty epoch", metadata.Pairs(TenantKey, "a", EpochKey, ""), "", 0, []string{EpochKey}},
		{"overflow epoch", metadata.Pairs(TenantKey, "a", EpochKey, "18446744073709551616"), "", 0, []string{EpochKey}},
		{"two epochs", metadata.Pairs(TenantKey, "a", EpochKey, "1", EpochKey, "1"), "", 0, []string{EpochKey}},
		{"both wrong", metadata.Pairs(EpochKey, " 1"), "", 0, []string{TenantKey, EpochKey}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := metadata.NewIncomingContext(context.Background(), tt.md)
			tenant, epoch, err := FromIncoming(ctx)
			if tt.wantFields == nil {
				if err != nil || tenant != tt.wantTenant || epoch != tt.wantEpoch {
					t.Fatalf("FromIncoming = %q, %d, %v; want %q, %d, nil", tenant, epoch, err, tt.wantTenant, tt.wantEpoch)
				}
				return
			}
			if !errors.Is(err, cperr.ErrInvalidArgument) {
				t.Fatalf("err = %v, want INVALID_ARGUMENT", err)
			}
			var ce *cperr.Error
			errors.As(err, &ce)
			if len(ce.Violations) != len(tt.wantFields) {
				t.Fatalf("violations %+v, want fields %q", ce.Violations, tt.wantFields)
			}
			for i, f := range tt.wantFields {
				if ce.Violations[i].Field != f {
					t.Errorf("violation %d on %q, want %q", i, ce.Violations[i].Field, f)
				}
			}
			if tenant != "" || epoch != 0 {
				t.Errorf("returned %q, %d alongside an error", tenant, epoch)
			}
		})
	}
}

func TestFromIncomingWithoutMetadata(t *testing.T) {
	if _, _, err := FromIncoming(context.Background()); !errors.Is(err, cperr.ErrInvalidArgument) {
		t.Fatalf("err = %v, want INVALID_ARGUMENT", err)
	}
}

func TestFlags(t *testing.T) {
	tests := []struct {
		name                 string
		md                   metadata.MD
		noForward, forwarded bool
	}{
		{"none", nil, false, false},
		{"no-forward true", metadata.Pairs(NoForwardKey, "true"), true, false},
		{"no-forward 1", metadata.Pairs(NoForwardKey, "1"), true, false},
		{"no-forward TRUE", metadata.Pairs(NoForwardKey, "TRUE"), true, false},
		{"no-forward false", metadata.Pairs(NoForwardKey, "false"), false, false},
		{"no-forward 0", metadata.Pairs(NoForwardKey, "0"), false, false},
		{"no-forward empty", metadata.Pairs(NoForwardKey, ""), false, false},
		{"forwarded", metadata.Pairs(ForwardedKey, "true"), false, true},
		{"both", metadata.Pairs(ForwardedKey, "yes", NoForwardKey, "1"), true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := metadata.NewIncomingContext(context.Background(), tt.md)
			if got := NoForward(ctx); got != tt.noForward {
				t.Errorf("NoForward = %v, want %v", got, tt.noForward)
			}
			if got := Forwarded(ctx); got != tt.forwarded {
				t.Errorf("Forwarded = %v, want %v", got, tt.forwarded)
			}
		})
	}
}

// TestOutgoingRoundTrip checks that what a client sets is what a server
// reads.
func TestOutgoingRoundTrip(t *testing.T) {
	ctx := metadata.AppendToOutgoingContext(context.Background(), TenantKey, "old", EpochKey, "3", "other", "kept")
	ctx = Outgoing(ctx, "acme", 7)
	ctx = WithForwarded(WithNoForward(ctx))
	out, _ := metadata.FromOutgoingContext(ctx)
	in := metadata.NewIncomingContext(context.Background(), out)
	tenant, epoch, err := FromIncoming(in)
	if err != nil || tenant != "acme" || epoch != 7 {
		t.Fatalf("FromIncoming = %q, %d, %v", tenant, epoch, err)
	}
	if !NoForward(in) || !Forwarded(in) {
		t.Fatal("flags lost")
	}
	if got := out.Get("other"); len(got) != 1 || got[0] != "kept" {
		t.Fatalf("other metadata = %q", got)
	}
	out2, _ := metadata.FromOutgoingContext(Outgoing(ctx, "acme", 0))
	if got := out2.Get(EpochKey); len(got) != 0 {
		t.Fatalf("epoch 0 left %q", got)
	}
}

// FuzzParse: any metadata either parses into a valid tenant or fails
// with INVALID_ARGUMENT naming a metadata key; it never panics.
func FuzzParse(f *testing.F) {
	f.Add("acme", "1", true)
	f.Add("", "", false)
	f.Add("a/b", "x", true)
	f.Add(strings.Repeat("a", 200), "99999999999999999999", true)
	f.Fuzz(func(t *testing.T, tenant, epoch string, withEpoch bool) {
		md := metadata.Pairs(TenantKey, tenant)
		if withEpoch {
			md.Set(EpochKey, epoch)
		}
		gotT, gotE, err := Parse(md)
		if err != nil {
			var ce *cperr.Error
			if !errors.As(err, &ce) || ce.Reason != cperr.InvalidArgument || len(ce.Violations) == 0 {
				t.Fatalf("error %v is not INVALID_ARGUMENT with violations", err)
			}
			for _, v := range ce.Violations {
				if v.Field != TenantKey && v.Field != EpochKey {
					t.Fatalf("violation on %q", v.Field)
				}
			}
			return
		}
		if gotT != tenant || len(tenant) == 0 || len(tenant) > MaxTenantLen {
			t.Fatalf("accepted tenant %q as %q", tenant, gotT)
		}
		if !withEpoch && gotE != 0 {
			t.Fatalf("epoch %d without metadata", gotE)
		}
	})
}

func TestCallerRoundTrip(t *testing.T) {
	ctx := WithCaller(context.Background(), "alice", "mcp")
	md, _ := metadata.FromOutgoingContext(ctx)
	in := metadata.NewIncomingContext(context.Background(), md)
	if p, o := Caller(in); p != "alice" || o != "mcp" {
		t.Fatalf("Caller = %q, %q; want alice, mcp", p, o)
	}
	ctx = WithCaller(ctx, "", "")
	md, _ = metadata.FromOutgoingContext(ctx)
	if len(md.Get(PrincipalKey))+len(md.Get(OriginKey)) != 0 {
		t.Fatalf("empty values left keys: %v", md)
	}
	twice := metadata.NewIncomingContext(context.Background(), metadata.Pairs(PrincipalKey, "a", PrincipalKey, "b"))
	if p, _ := Caller(twice); p != "" {
		t.Fatalf("a repeated principal was taken: %q", p)
	}
}
