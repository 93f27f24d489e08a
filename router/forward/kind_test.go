package forward

import (
	"context"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cellplane/cellplane/internal/retry"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
)

// TestKindOf: the forwarder tells reads, writes with a request id and
// writes without one apart, without decoding the request.
func TestKindOf(t *testing.T) {
	f, err := New(DefaultConfig(), newResolver(), func(context.Context) (string, error) { return "t", nil })
	if err != nil {
		t.Fatal(err)
	}
	methods := f.services["cellplane.context.v1.ContextService"]
	tests := []struct {
		method string
		req    proto.Message
		want   retry.Kind
	}{
		{"Read", &contextv1.ReadRequest{ContextId: "c"}, retry.Immutable},
		{"Append", &contextv1.AppendRequest{ContextId: "c", RequestId: "r1", Entries: []*contextv1.Entry{{Role: "user"}}}, retry.Idempotent},
		{"Append", &contextv1.AppendRequest{ContextId: "c", Entries: []*contextv1.Entry{{Role: "user"}}}, retry.Mutating},
		{"PutMemory", &contextv1.PutMemoryRequest{Key: "k", RequestId: "r2"}, retry.Idempotent},
		{"DeleteContext", &contextv1.DeleteContextRequest{ContextId: "c"}, retry.Mutating},
	}
	for _, tc := range tests {
		mi, ok := methods[tc.method]
		if !ok {
			t.Fatalf("method %s not found", tc.method)
		}
		b, err := proto.Marshal(tc.req)
		if err != nil {
			t.Fatal(err)
		}
		if got := mi.kindOf(&Frame{Payload: b}); got != tc.want {
			t.Errorf("%s %v: kind %d, want %d", tc.method, tc.req, got, tc.want)
		}
	}
}
