package storetest

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	runChildIfAsked() // a crash test's child node (crashchild_test.go) never returns
	goleak.VerifyTestMain(m)
}
