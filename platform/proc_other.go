//go:build !linux

package platform

import "syscall"

// childAttrs puts a node process in its own process group.
func childAttrs() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
