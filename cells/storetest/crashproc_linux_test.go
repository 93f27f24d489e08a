package storetest

import "syscall"

// childAttrs ends a child node with the test process (a killed test run
// leaves no node behind).
func childAttrs() *syscall.SysProcAttr { return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} }
