//go:build !linux

package platform

import (
	"errors"
	"syscall"
)

// childAttrs puts a node process in its own process group.
func childAttrs() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// pauseChild is supported on Linux only.
func pauseChild(int, bool) error {
	return errors.New("pausing a node process is supported on linux only")
}
