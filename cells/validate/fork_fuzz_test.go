package validate

import (
	"testing"
	"time"

	"github.com/cellplane/cellplane/internal/ids"
	contextv1 "github.com/cellplane/cellplane/proto/cellplane/context/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// FuzzForkAndRetention decodes arbitrary bytes as a ForkRequest (and the
// retention fields of CreateContext and PutMemory) and checks what the
// validators accept: ids within the rule, expire_time and ttl not both, an
// expiry that fits int64 nanoseconds, a positive ttl of at most MaxTTL.
func FuzzForkAndRetention(f *testing.F) {
	seed := func(m proto.Message) {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	seed(&contextv1.ForkRequest{ContextId: "c", AtSeq: 3, NewContextId: "f", RequestId: "r", Labels: map[string]string{"a": "b"}, Ttl: durationpb.New(time.Hour)})
	seed(&contextv1.ForkRequest{ContextId: "c", ExpireTime: timestamppb.New(time.Unix(1<<31, 5))})
	seed(&contextv1.CreateContextRequest{ContextId: "c", Ttl: durationpb.New(-time.Second)})
	seed(&contextv1.PutMemoryRequest{Key: "k", ExpireTime: &timestamppb.Timestamp{Seconds: -1}, Ttl: durationpb.New(time.Second)})
	f.Add([]byte{})
	lim := fuzzLimits()
	okRetention := func(at *timestamppb.Timestamp, ttl *durationpb.Duration) bool {
		if at != nil && ttl != nil {
			return false
		}
		if at != nil && (at.CheckValid() != nil || at.GetSeconds() <= 0 || at.GetSeconds() >= maxExpireSeconds) {
			return false
		}
		if ttl != nil && (ttl.CheckValid() != nil || ttl.AsDuration() <= 0 || ttl.AsDuration() > MaxTTL) {
			return false
		}
		return true
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr contextv1.ForkRequest
		if proto.Unmarshal(b, &fr) == nil {
			err := Fork(lim, &fr)
			checkResult(t, err)
			if err == nil && (!ids.Valid(fr.GetContextId(), lim.MaxIDLen) ||
				(fr.GetNewContextId() != "" && !ids.Valid(fr.GetNewContextId(), lim.MaxIDLen)) ||
				len(fr.GetLabels()) > lim.Labels.MaxPairs || !okRetention(fr.GetExpireTime(), fr.GetTtl())) {
				t.Fatalf("accepted %v", &fr)
			}
			if err == nil && fr.GetExpireTime() != nil && fr.GetExpireTime().AsTime().UnixNano() <= 0 {
				t.Fatalf("accepted an expiry outside int64 nanoseconds: %v", fr.GetExpireTime())
			}
		}
		var cc contextv1.CreateContextRequest
		if proto.Unmarshal(b, &cc) == nil {
			err := CreateContext(lim, &cc)
			checkResult(t, err)
			if err == nil && !okRetention(cc.GetExpireTime(), cc.GetTtl()) {
				t.Fatalf("accepted %v", &cc)
			}
		}
		var put contextv1.PutMemoryRequest
		if proto.Unmarshal(b, &put) == nil {
			err := PutMemory(lim, &put)
			checkResult(t, err)
			if err == nil && !okRetention(put.GetExpireTime(), put.GetTtl()) {
				t.Fatalf("accepted %v", &put)
			}
		}
	})
}
