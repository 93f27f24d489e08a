package bench

import (
	"testing"

	"go.uber.org/goleak"
)

// The etcd and cell tests start servers: every goroutine they start must be
// gone when the package's tests end.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
