package api

import (
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/cellplane/cellplane/internal/cperr"
	"github.com/cellplane/cellplane/internal/testutil"
	cpv1 "github.com/cellplane/cellplane/proto/cellplane/controlplane/v1"
)

func TestFailoverPolicy(t *testing.T) {
	s, _ := newServer(t)
	def := &cpv1.FailoverPolicy{Enabled: false, UnhealthyFor: durationpb.New(10 * time.Second), MaxConcurrent: 16}
	s.cfg.FailoverPolicyDefaults = def
	ctx := testutil.Context(t, 10*time.Second)

	got, err := s.GetFailoverPolicy(ctx, &cpv1.GetFailoverPolicyRequest{})
	if err != nil || got.GetStored() || got.GetVersion() != 0 || !proto.Equal(got.GetPolicy(), def) {
		t.Fatalf("before any Set: %v, %v; want the flag defaults, not stored", got, err)
	}
	for name, p := range map[string]*cpv1.FailoverPolicy{
		"delay under a second": {Enabled: true, UnhealthyFor: durationpb.New(100 * time.Millisecond)},
		"negative delay":       {Enabled: true, UnhealthyFor: durationpb.New(-time.Second)},
		"bad region":           {Enabled: true, Regions: []string{"a b"}},
	} {
		_, err := s.SetFailoverPolicy(ctx, &cpv1.SetFailoverPolicyRequest{Policy: p})
		wantReason(t, name, err, cperr.InvalidArgument, nil)
	}
	_, err = s.SetFailoverPolicy(ctx, &cpv1.SetFailoverPolicyRequest{})
	wantReason(t, "no policy", err, cperr.InvalidArgument, nil)
	if got, _ := s.GetFailoverPolicy(ctx, &cpv1.GetFailoverPolicyRequest{}); got.GetStored() {
		t.Fatalf("a refused Set stored %v", got)
	}

	want := &cpv1.FailoverPolicy{Enabled: true, UnhealthyFor: durationpb.New(30 * time.Second), Regions: []string{"us", "eu"}}
	set, err := s.SetFailoverPolicy(ctx, &cpv1.SetFailoverPolicyRequest{Policy: want})
	if err != nil || set.GetVersion() == 0 {
		t.Fatalf("set: %v, %v", set, err)
	}
	got, err = s.GetFailoverPolicy(ctx, &cpv1.GetFailoverPolicyRequest{})
	if err != nil || !got.GetStored() || got.GetVersion() != set.GetVersion() || got.GetPolicy().GetUpdateTime() == nil {
		t.Fatalf("after Set: %v, %v", got, err)
	}
	got.GetPolicy().UpdateTime = nil
	if !proto.Equal(got.GetPolicy(), want) {
		t.Fatalf("stored %v, want %v", got.GetPolicy(), want)
	}
	// Optimistic concurrency: a stale version is refused, the current one
	// accepted.
	_, err = s.SetFailoverPolicy(ctx, &cpv1.SetFailoverPolicyRequest{Policy: &cpv1.FailoverPolicy{}, ExpectedVersion: set.GetVersion() - 1})
	wantReason(t, "stale version", err, cperr.RevisionMismatch, nil)
	off, err := s.SetFailoverPolicy(ctx, &cpv1.SetFailoverPolicyRequest{Policy: &cpv1.FailoverPolicy{}, ExpectedVersion: set.GetVersion()})
	if err != nil || off.GetPolicy().GetEnabled() {
		t.Fatalf("turn off: %v, %v", off, err)
	}
}
