//go:build !linux

package storetest

import "syscall"

func childAttrs() *syscall.SysProcAttr { return nil }
